//! Schema migrations, applied in order at open; `schema_version` records how
//! far a database has come, so a newer binary upgrades an older file and an
//! older binary refuses a newer one.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// Each entry migrates from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE tenants (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('active', 'shred_scheduled', 'shredded')),
    created_at          INTEGER NOT NULL,
    shred_at            INTEGER,
    kek_version         INTEGER NOT NULL,
    -- Blind-index key wrapped by the root key; NULL once shredded.
    wrapped_index_key   BLOB,
    -- Data key of tenant-level records (no subject).
    dek_id              TEXT
);

-- Tenant key-encryption keys, wrapped by the root key; rows deleted on shred.
CREATE TABLE tenant_keks (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    version     INTEGER NOT NULL,
    wrapped     BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

-- Data keys, wrapped by a tenant KEK. `owner` is the subject's blind id, or
-- empty for the tenant-level key. `wrapped` is NULL once destroyed.
CREATE TABLE data_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    owner         BLOB NOT NULL,
    kek_version   INTEGER NOT NULL,
    wrapped       BLOB,
    created_at    INTEGER NOT NULL,
    destroyed_at  INTEGER
);
CREATE INDEX data_keys_by_owner ON data_keys (tenant_id, owner);
CREATE INDEX data_keys_destroyed ON data_keys (destroyed_at) WHERE destroyed_at IS NOT NULL;

-- Subjects by blind id; the plaintext id exists only sealed under the DEK.
CREATE TABLE subjects (
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    blind_id        BLOB NOT NULL,
    dek_id          TEXT,
    sealed_subject  BLOB,
    created_at      INTEGER NOT NULL,
    erased_at       INTEGER,
    PRIMARY KEY (tenant_id, blind_id)
);

CREATE TABLE records (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    owner         BLOB NOT NULL,
    category      TEXT NOT NULL,
    key           TEXT NOT NULL,
    version       INTEGER NOT NULL,
    dek_id        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    ciphertext    BLOB NOT NULL,
    size          INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    -- Set when deleted: the row stays as a tombstone with no value so the
    -- next put continues the version sequence (no ciphertext replay).
    deleted_at    INTEGER,
    PRIMARY KEY (tenant_id, owner, category, key)
);
CREATE INDEX records_by_dek ON records (dek_id);

-- Principals: tenant_id NULL for platform principals (operators).
CREATE TABLE principals (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT,
    name        TEXT NOT NULL,
    roles       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX principals_by_name ON principals (ifnull(tenant_id, ''), name);

-- API keys: only the SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    key_id        TEXT PRIMARY KEY,
    principal_id  TEXT NOT NULL REFERENCES principals(id),
    secret_hash   BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER
);

-- Deletion receipts as issued (blind ids only).
CREATE TABLE receipts (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    body        BLOB NOT NULL,
    mac         BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
"#,
    r#"
-- The audit trail (see src/audit.rs): a MAC chain, one row per call.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    time        INTEGER NOT NULL,
    request_id  TEXT NOT NULL,
    principal   TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    code        INTEGER NOT NULL,
    purpose     TEXT NOT NULL,
    peer        TEXT NOT NULL,
    mac         BLOB NOT NULL
);
CREATE INDEX audit_by_tenant ON audit_log (tenant, seq);
CREATE INDEX audit_by_time ON audit_log (time);

-- Every 1000th entry's (seq, MAC), MAC'd: pruning cuts only here.
CREATE TABLE audit_checkpoints (
    seq   INTEGER PRIMARY KEY,
    head  BLOB NOT NULL,
    time  INTEGER NOT NULL,
    mac   BLOB NOT NULL
);

ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
"#,
    r#"
-- A principal may be pinned to a client certificate's common name (mTLS).
ALTER TABLE principals ADD COLUMN cert_cn TEXT;
"#,
    r#"
-- Key lifecycle: wraps counted per KEK version, retirement (the wrapped
-- bytes are overwritten with an empty blob), and the rewrap job's index.
ALTER TABLE tenant_keks ADD COLUMN wraps INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenant_keks ADD COLUMN retired_at INTEGER;
UPDATE tenant_keks SET wraps = (
    SELECT count(*) FROM data_keys d WHERE d.tenant_id = tenant_keks.tenant_id AND d.kek_version = tenant_keks.version);
CREATE INDEX data_keys_by_kek ON data_keys (tenant_id, kek_version) WHERE wrapped IS NOT NULL;

-- Purge bookkeeping: a destroyed data key is marked once its ciphertext
-- rows are all gone, so each purge batch looks only at keys still to purge.
ALTER TABLE data_keys ADD COLUMN purged_at INTEGER;
CREATE INDEX data_keys_to_purge ON data_keys (destroyed_at) WHERE destroyed_at IS NOT NULL AND purged_at IS NULL;
"#,
    r#"
-- Automatic KEK rotation: a tenant's own policy (NULL: the server's).
ALTER TABLE tenants ADD COLUMN rotate_after_ms INTEGER;
ALTER TABLE tenants ADD COLUMN rotate_after_wraps INTEGER;

-- Data-key re-encryption jobs: records of `owner` move from `old_dek` to
-- `new_dek`; the row goes when the old key is destroyed.
CREATE TABLE reencrypt_jobs (
    old_dek     TEXT PRIMARY KEY,
    new_dek     TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    owner       BLOB NOT NULL,
    started_at  INTEGER NOT NULL
);
"#,
    r#"
-- A tenant's minimum decryption version: data keys wrapped under an older
-- KEK version are refused to every call (the rewrap job still moves them).
-- 0: none. And when each KEK version last protected a call's data.
ALTER TABLE tenants ADD COLUMN min_decrypt_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenant_keks ADD COLUMN last_used_at INTEGER;
"#,
    r#"
-- Audit entries moved aside by `strongbox audit accept-loss`: the part of a
-- broken chain after its last verified entry, kept for forensics.
CREATE TABLE audit_quarantine (
    id              INTEGER PRIMARY KEY,
    quarantined_at  INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    time            INTEGER NOT NULL,
    request_id      TEXT NOT NULL,
    principal       TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    action          TEXT NOT NULL,
    resource        TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    code            INTEGER NOT NULL,
    purpose         TEXT NOT NULL,
    peer            TEXT NOT NULL,
    mac             BLOB NOT NULL
);
"#,
    r#"
-- Security state carries a MAC under the root-held state key (see
-- src/integrity.rs), so an edit of the file cannot grant access or lift a
-- restriction. NULL only until the vault seals rows written before this.
ALTER TABLE tenants ADD COLUMN mac BLOB;
ALTER TABLE principals ADD COLUMN mac BLOB;
ALTER TABLE api_keys ADD COLUMN mac BLOB;
"#,
    r#"
-- Records a job found failing authentication: skipped, not retried.
ALTER TABLE records ADD COLUMN corrupt_at INTEGER;
"#,
    r#"
-- Break-glass admin recovery: when an operator's requested recovery takes
-- effect (NULL: none pending). Part of the tenant's MAC'd state.
ALTER TABLE tenants ADD COLUMN admin_recovery_at INTEGER;
"#,
    r#"
-- Legal holds: on a subject (owner = its blind id) or a whole tenant
-- (owner NULL). Released by deleting the row. The tenant row carries a
-- digest of all its holds under its MAC, so a hold deleted (or added)
-- outside Strongbox is detected.
CREATE TABLE legal_holds (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    owner       BLOB,
    reason      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE INDEX legal_holds_by_tenant ON legal_holds (tenant_id, owner);
ALTER TABLE tenants ADD COLUMN holds_digest BLOB;
"#,
    r#"
-- Retention: a tenant's policy per category (keep records this long after
-- their last write, or after the subject's last activity), and the
-- platform's default and cap per category.
CREATE TABLE retention_policies (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    category    TEXT NOT NULL,
    keep_ms     INTEGER NOT NULL,
    after       TEXT NOT NULL CHECK (after IN ('write', 'last-activity')),
    set_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, category)
);
CREATE TABLE retention_defaults (
    category    TEXT PRIMARY KEY,
    keep_ms     INTEGER,
    max_ms      INTEGER,
    set_at      INTEGER NOT NULL
);
-- Records expired per tenant, category and day (Unix day number).
CREATE TABLE retention_history (
    tenant_id   TEXT NOT NULL,
    category    TEXT NOT NULL,
    day         INTEGER NOT NULL,
    expired     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, category, day)
);
-- The subject's last write or TouchSubject; records expired by retention
-- are tombstones with expired_at set.
ALTER TABLE subjects ADD COLUMN last_activity_at INTEGER;
UPDATE subjects SET last_activity_at = COALESCE(
    (SELECT max(r.updated_at) FROM records r WHERE r.tenant_id = subjects.tenant_id AND r.owner = subjects.blind_id),
    created_at);
ALTER TABLE records ADD COLUMN expired_at INTEGER;
-- What the sweep looks up: live records by age within a category, and
-- subjects by last activity. No full scans.
CREATE INDEX records_by_age ON records (tenant_id, category, updated_at) WHERE deleted_at IS NULL;
CREATE INDEX subjects_by_activity ON subjects (tenant_id, last_activity_at) WHERE dek_id IS NOT NULL;
"#,
    r#"
-- A receipt's subject (blind id), so a repeated shred answers with the
-- original receipt. NULL for receipts issued before this.
ALTER TABLE receipts ADD COLUMN subject BLOB;
CREATE INDEX receipts_by_subject ON receipts (tenant_id, subject, created_at) WHERE subject IS NOT NULL;
"#,
    r#"
-- The erasure epoch a tenant key is wrapped under (its key in the erasure
-- keys file); NULL: wrapped by the root key directly (before epochs).
ALTER TABLE tenant_keks ADD COLUMN epoch INTEGER;
ALTER TABLE tenants ADD COLUMN index_epoch INTEGER;
"#,
    r#"
-- Which server runs the background jobs (one at a time, on any backend).
CREATE TABLE job_leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
"#,
    r#"
-- Audit lanes: one chain per writer. SQLite has one writer, so one lane
-- (0); the table lists the lanes PostgreSQL servers open.
ALTER TABLE audit_log ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit_checkpoints ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit_quarantine ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
CREATE INDEX audit_by_lane ON audit_log (lane, seq);
CREATE TABLE audit_lanes (
    lane        INTEGER PRIMARY KEY,
    opened_at   INTEGER NOT NULL,
    head        BLOB,
    base        BLOB
);
"#,
    r#"
-- Losses an operator accepted (`strongbox audit accept-loss`): lane
-- `lane`'s entries up to `lost_through` may be missing, so witness
-- entries older than `accepted_seq` that name it further are not a cut.
-- MAC'd under the audit key.
CREATE TABLE audit_losses (
    lane          INTEGER NOT NULL,
    accepted_seq  INTEGER NOT NULL,
    lost_through  INTEGER NOT NULL,
    mac           BLOB NOT NULL,
    PRIMARY KEY (lane, accepted_seq)
);
"#,
];

/// Brings the database up to the latest schema version in one transaction.
pub(in crate::store) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current: Option<i64> =
        tx.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))?;
    let current = current.unwrap_or(0) as usize;
    if current > MIGRATIONS.len() {
        return Err(Error::FailedPrecondition(format!(
            "storage: database schema version {current} is newer than this binary supports ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [i as i64 + 1],
        )?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("db")).unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n as usize, MIGRATIONS.len());
        conn.execute("INSERT INTO schema_version VALUES (999)", [])
            .unwrap();
        assert!(migrate(&mut conn).is_err());
    }
}
