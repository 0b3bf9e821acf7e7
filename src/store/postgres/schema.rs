//! The PostgreSQL schema: the same tables as SQLite's, every integer
//! `BIGINT`, every blob `BYTEA`, and the rows without a natural key given
//! an explicit `rid` where SQLite has its implicit `rowid`. Migrations run
//! under an advisory lock, so several servers starting at once migrate
//! once; `schema_version` records how far the database has come, and a
//! server refuses a database newer than it knows.

use super::conn::Pg;
use crate::error::{Error, Result};
use crate::store::sql::Val;

/// The advisory lock key migrations hold ("sbmigrat").
const MIGRATION_LOCK: i64 = 0x7362_6d69_6772_6174;

/// Each entry migrates from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE tenants (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('active', 'shred_scheduled', 'shredded')),
    created_at          BIGINT NOT NULL,
    shred_at            BIGINT,
    kek_version         BIGINT NOT NULL,
    wrapped_index_key   BYTEA,
    dek_id              TEXT,
    rotate_after_ms     BIGINT,
    rotate_after_wraps  BIGINT,
    min_decrypt_version BIGINT NOT NULL DEFAULT 0,
    mac                 BYTEA,
    admin_recovery_at   BIGINT,
    holds_digest        BYTEA,
    index_epoch         BIGINT
);
CREATE TABLE tenant_keks (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    version       BIGINT NOT NULL,
    wrapped       BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    wraps         BIGINT NOT NULL DEFAULT 0,
    retired_at    BIGINT,
    last_used_at  BIGINT,
    epoch         BIGINT,
    PRIMARY KEY (tenant_id, version)
);
CREATE TABLE data_keys (
    rid           BIGSERIAL UNIQUE,
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    owner         BYTEA NOT NULL,
    kek_version   BIGINT NOT NULL,
    wrapped       BYTEA,
    created_at    BIGINT NOT NULL,
    destroyed_at  BIGINT,
    purged_at     BIGINT
);
CREATE INDEX data_keys_by_owner ON data_keys (tenant_id, owner);
CREATE INDEX data_keys_destroyed ON data_keys (destroyed_at) WHERE destroyed_at IS NOT NULL;
CREATE INDEX data_keys_by_kek ON data_keys (tenant_id, kek_version) WHERE wrapped IS NOT NULL;
CREATE INDEX data_keys_to_purge ON data_keys (destroyed_at) WHERE destroyed_at IS NOT NULL AND purged_at IS NULL;
CREATE TABLE subjects (
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    blind_id          BYTEA NOT NULL,
    dek_id            TEXT,
    sealed_subject    BYTEA,
    created_at        BIGINT NOT NULL,
    erased_at         BIGINT,
    last_activity_at  BIGINT,
    PRIMARY KEY (tenant_id, blind_id)
);
CREATE INDEX subjects_by_activity ON subjects (tenant_id, last_activity_at) WHERE dek_id IS NOT NULL;
CREATE TABLE records (
    rid           BIGSERIAL UNIQUE,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    owner         BYTEA NOT NULL,
    category      TEXT NOT NULL,
    key           TEXT NOT NULL,
    version       BIGINT NOT NULL,
    dek_id        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    ciphertext    BYTEA NOT NULL,
    size          BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    deleted_at    BIGINT,
    corrupt_at    BIGINT,
    expired_at    BIGINT,
    PRIMARY KEY (tenant_id, owner, category, key)
);
CREATE INDEX records_by_dek ON records (dek_id);
CREATE INDEX records_by_age ON records (tenant_id, category, updated_at) WHERE deleted_at IS NULL;
CREATE TABLE principals (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT,
    name        TEXT NOT NULL,
    roles       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    cert_cn     TEXT,
    mac         BYTEA
);
CREATE UNIQUE INDEX principals_by_name ON principals ((coalesce(tenant_id, '')), name);
CREATE TABLE api_keys (
    key_id        TEXT PRIMARY KEY,
    principal_id  TEXT NOT NULL REFERENCES principals(id),
    secret_hash   BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT,
    mac           BYTEA
);
CREATE TABLE receipts (
    rid         BIGSERIAL UNIQUE,
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    body        BYTEA NOT NULL,
    mac         BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    subject     BYTEA
);
CREATE INDEX receipts_by_subject ON receipts (tenant_id, subject, created_at) WHERE subject IS NOT NULL;
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    time        BIGINT NOT NULL,
    request_id  TEXT NOT NULL,
    principal   TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    code        BIGINT NOT NULL,
    purpose     TEXT NOT NULL,
    peer        TEXT NOT NULL,
    mac         BYTEA NOT NULL
);
CREATE INDEX audit_by_tenant ON audit_log (tenant, seq);
CREATE INDEX audit_by_time ON audit_log (time);
CREATE TABLE audit_checkpoints (
    seq   BIGINT PRIMARY KEY,
    head  BYTEA NOT NULL,
    time  BIGINT NOT NULL,
    mac   BYTEA NOT NULL
);
CREATE TABLE reencrypt_jobs (
    old_dek     TEXT PRIMARY KEY,
    new_dek     TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    owner       BYTEA NOT NULL,
    started_at  BIGINT NOT NULL
);
CREATE TABLE audit_quarantine (
    id              BIGSERIAL PRIMARY KEY,
    quarantined_at  BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    time            BIGINT NOT NULL,
    request_id      TEXT NOT NULL,
    principal       TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    action          TEXT NOT NULL,
    resource        TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    code            BIGINT NOT NULL,
    purpose         TEXT NOT NULL,
    peer            TEXT NOT NULL,
    mac             BYTEA NOT NULL
);
CREATE TABLE legal_holds (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    owner       BYTEA,
    reason      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE INDEX legal_holds_by_tenant ON legal_holds (tenant_id, owner);
CREATE TABLE retention_policies (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    category    TEXT NOT NULL,
    keep_ms     BIGINT NOT NULL,
    after       TEXT NOT NULL CHECK (after IN ('write', 'last-activity')),
    set_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, category)
);
CREATE TABLE retention_defaults (
    category    TEXT PRIMARY KEY,
    keep_ms     BIGINT,
    max_ms      BIGINT,
    set_at      BIGINT NOT NULL
);
CREATE TABLE retention_history (
    tenant_id   TEXT NOT NULL,
    category    TEXT NOT NULL,
    day         BIGINT NOT NULL,
    expired     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, category, day)
);
"#,
    r#"
CREATE TABLE job_leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
"#,
    r#"
-- Audit lanes: one chain per server run, so that servers append without
-- waiting for each other; sequence numbers from one sequence (gaps
-- allowed), ordering entries across lanes.
ALTER TABLE audit_log ADD COLUMN lane BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_checkpoints ADD COLUMN lane BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_quarantine ADD COLUMN lane BIGINT NOT NULL DEFAULT 0;
CREATE INDEX audit_by_lane ON audit_log (lane, seq);
-- A lane's MAC'd head and base pointers live in its row: each server
-- updates only its own, in place (HOT: no indexed column changes, room
-- left on the page), so no server's append reads a page another writes.
CREATE TABLE audit_lanes (
    lane        BIGINT PRIMARY KEY,
    opened_at   BIGINT NOT NULL,
    head        BYTEA,
    base        BYTEA
) WITH (fillfactor = 50);
CREATE SEQUENCE audit_lane_ids START 1;
CREATE SEQUENCE audit_seq START 1;
SELECT setval('audit_seq', (SELECT coalesce(max(seq), 0) + 1 FROM audit_log), false);
"#,
    r#"
-- Losses an operator accepted (`strongbox audit accept-loss`): lane
-- `lane`'s entries up to `lost_through` may be missing, so witness
-- entries older than `accepted_seq` that name it further are not a cut.
-- MAC'd under the audit key.
CREATE TABLE audit_losses (
    lane          BIGINT NOT NULL,
    accepted_seq  BIGINT NOT NULL,
    lost_through  BIGINT NOT NULL,
    mac           BYTEA NOT NULL,
    PRIMARY KEY (lane, accepted_seq)
);
"#,
];

/// Brings the database to the newest schema, once, whichever server
/// starts first.
pub(super) fn migrate(pg: &Pg) -> Result<()> {
    pg.execute_batch("BEGIN")?;
    let done = (|| {
        pg.run(
            "SELECT pg_advisory_xact_lock($1)",
            &[Val::Int(MIGRATION_LOCK)],
        )?;
        pg.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
        let rows = pg.query(
            &pg.statement("SELECT max(version) FROM schema_version")?,
            &[],
        )?;
        let version: Option<i64> = rows.first().and_then(|r| r.get(0));
        let version = version.unwrap_or(0) as usize;
        if version > MIGRATIONS.len() {
            return Err(Error::FailedPrecondition(format!(
                "storage: the database is at schema version {version}, newer than this server knows ({}); upgrade the server",
                MIGRATIONS.len()
            )));
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
            pg.execute_batch(step)?;
            pg.run(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[Val::Int(i as i64 + 1)],
            )?;
        }
        Ok(())
    })();
    match done {
        Ok(()) => pg.execute_batch("COMMIT"),
        Err(e) => {
            let _ = pg.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
