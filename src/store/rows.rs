//! Typed rows and the SQL that reads and writes them. Every function takes
//! the connection of the transaction it runs in (from `Store::write` or
//! `Store::read`), so a use case composes them into one atomic unit.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::{Error, Result};

/// Lifecycle of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantState {
    Active,
    ShredScheduled,
    Shredded,
}

impl TenantState {
    /// The name stored (and MAC'd) for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Active => "active",
            TenantState::ShredScheduled => "shred_scheduled",
            TenantState::Shredded => "shredded",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<Self> {
        match s {
            "active" => Ok(TenantState::Active),
            "shred_scheduled" => Ok(TenantState::ShredScheduled),
            "shredded" => Ok(TenantState::Shredded),
            other => Err(rusqlite::Error::InvalidColumnType(
                0,
                format!("tenant state {other}"),
                rusqlite::types::Type::Text,
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TenantRow {
    pub id: String,
    pub name: String,
    pub state: TenantState,
    pub created_at: i64,
    pub shred_at: Option<i64>,
    pub kek_version: u32,
    pub wrapped_index_key: Option<Vec<u8>>,
    pub dek_id: Option<String>,
    /// 0: none.
    pub min_decrypt_version: u32,
    /// The tenant's own rotation policy; `None`: the server's.
    pub rotate_after_ms: Option<i64>,
    pub rotate_after_wraps: Option<i64>,
    /// When a pending break-glass admin recovery takes effect.
    pub admin_recovery_at: Option<i64>,
    /// Digest of the tenant's legal holds (`None`: none).
    pub holds_digest: Option<Vec<u8>>,
    /// MAC over the row's security state (`integrity`); `None` until sealed.
    pub mac: Option<Vec<u8>>,
}

const TENANT_COLS: &str = "id, name, state, created_at, shred_at, kek_version, wrapped_index_key, dek_id, min_decrypt_version, rotate_after_ms, rotate_after_wraps, mac, admin_recovery_at, holds_digest";

fn tenant_row(r: &Row<'_>) -> rusqlite::Result<TenantRow> {
    Ok(TenantRow {
        id: r.get(0)?,
        name: r.get(1)?,
        state: TenantState::parse(&r.get::<_, String>(2)?)?,
        created_at: r.get(3)?,
        shred_at: r.get(4)?,
        kek_version: r.get(5)?,
        wrapped_index_key: r.get(6)?,
        dek_id: r.get(7)?,
        min_decrypt_version: r.get(8)?,
        rotate_after_ms: r.get(9)?,
        rotate_after_wraps: r.get(10)?,
        mac: r.get(11)?,
        admin_recovery_at: r.get(12)?,
        holds_digest: r.get(13)?,
    })
}

pub fn tenant_get(conn: &Connection, id: &str) -> Result<Option<TenantRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1"))?
        .query_row([id], tenant_row)
        .optional()?)
}

pub fn tenant_insert(conn: &Connection, t: &TenantRow) -> Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO tenants ({TENANT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        params![
            t.id,
            t.name,
            t.state.as_str(),
            t.created_at,
            t.shred_at,
            t.kek_version,
            t.wrapped_index_key,
            t.dek_id,
            t.min_decrypt_version,
            t.rotate_after_ms,
            t.rotate_after_wraps,
            t.mac,
            t.admin_recovery_at,
            t.holds_digest
        ],
    )?;
    Ok(())
}

/// Stores a tenant row's MAC (after any change to its security state).
pub fn tenant_set_mac(conn: &Connection, id: &str, mac: &[u8]) -> Result<()> {
    conn.prepare_cached("UPDATE tenants SET mac = ?2 WHERE id = ?1")?
        .execute(params![id, mac])?;
    Ok(())
}

/// Every tenant id.
pub fn tenant_ids(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM tenants")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn tenant_list(conn: &Connection, after: &str, limit: usize) -> Result<Vec<TenantRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TENANT_COLS} FROM tenants WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![after, limit as i64], tenant_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn tenant_set_state(
    conn: &Connection,
    id: &str,
    state: TenantState,
    shred_at: Option<i64>,
) -> Result<()> {
    conn.execute(
        "UPDATE tenants SET state = ?2, shred_at = ?3 WHERE id = ?1",
        params![id, state.as_str(), shred_at],
    )?;
    Ok(())
}

/// Sets or clears a tenant's pending admin recovery.
pub fn tenant_set_admin_recovery(conn: &Connection, id: &str, at: Option<i64>) -> Result<()> {
    conn.execute(
        "UPDATE tenants SET admin_recovery_at = ?2 WHERE id = ?1",
        params![id, at],
    )?;
    Ok(())
}

/// Whether the tenant has ever had a principal (revoked or not).
pub fn tenant_has_principals(conn: &Connection, tenant: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM principals WHERE tenant_id = ?1 LIMIT 1")?
        .exists([tenant])?)
}

/// Tenants whose scheduled shred is due at `now`.
pub fn tenants_due_for_shred(conn: &Connection, now: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM tenants WHERE state = 'shred_scheduled' AND shred_at <= ?1",
    )?;
    let rows = stmt.query_map([now], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What a tenant shred destroyed.
#[derive(Debug, Default)]
pub struct TenantDestroyed {
    pub kek_versions: Vec<u32>,
    pub data_keys: usize,
}

/// Destroys every key of a tenant: KEK rows deleted, index key and data keys
/// overwritten, subjects, principals and API keys removed. Record rows go
/// later with [`records_purge_destroyed`]: without keys they are noise.
pub fn tenant_destroy(conn: &Connection, id: &str, now: i64) -> Result<TenantDestroyed> {
    let mut stmt = conn
        .prepare_cached("SELECT version FROM tenant_keks WHERE tenant_id = ?1 ORDER BY version")?;
    let kek_versions = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<u32>>>()?;
    conn.execute("DELETE FROM tenant_keks WHERE tenant_id = ?1", [id])?;
    let data_keys = conn.execute(
        "UPDATE data_keys SET wrapped = NULL, destroyed_at = ?2 WHERE tenant_id = ?1 AND wrapped IS NOT NULL",
        params![id, now],
    )?;
    conn.execute("DELETE FROM subjects WHERE tenant_id = ?1", [id])?;
    conn.execute("DELETE FROM reencrypt_jobs WHERE tenant_id = ?1", [id])?;
    conn.execute(
        "DELETE FROM api_keys WHERE principal_id IN (SELECT id FROM principals WHERE tenant_id = ?1)",
        [id],
    )?;
    conn.execute("DELETE FROM principals WHERE tenant_id = ?1", [id])?;
    conn.execute(
        "UPDATE tenants SET state = 'shredded', shred_at = ?2, wrapped_index_key = NULL, kek_version = 0 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(TenantDestroyed {
        kek_versions,
        data_keys,
    })
}

pub fn kek_insert(
    conn: &Connection,
    tenant: &str,
    version: u32,
    (wrapped, epoch): (&[u8], Option<u64>),
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO tenant_keks (tenant_id, version, wrapped, created_at, epoch) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![tenant, version, wrapped, now, epoch.map(|e| e as i64)],
    )?;
    Ok(())
}

/// A KEK version's wrapped bytes; `None` if it does not exist or was
/// retired (its bytes overwritten).
pub fn kek_get(
    conn: &Connection,
    tenant: &str,
    version: u32,
) -> Result<Option<(Vec<u8>, Option<u64>)>> {
    Ok(conn
        .prepare_cached("SELECT wrapped, epoch FROM tenant_keks WHERE tenant_id = ?1 AND version = ?2 AND retired_at IS NULL")?
        .query_row(params![tenant, version], |r| {
            Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.map(|e| e as u64)))
        })
        .optional()?)
}

/// One KEK version, for `key status`.
#[derive(Clone, Debug)]
pub struct KekRow {
    pub version: u32,
    pub created_at: i64,
    pub wraps: u64,
    pub retired_at: Option<i64>,
    /// Data keys still wrapped under it.
    pub data_keys: u64,
    /// When a call last used data under it (as last recorded).
    pub last_used_at: Option<i64>,
}

pub fn keks_of_tenant(conn: &Connection, tenant: &str) -> Result<Vec<KekRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT k.version, k.created_at, k.wraps, k.retired_at,
                (SELECT count(*) FROM data_keys d WHERE d.tenant_id = k.tenant_id AND d.kek_version = k.version AND d.wrapped IS NOT NULL),
                k.last_used_at
         FROM tenant_keks k WHERE k.tenant_id = ?1 ORDER BY k.version",
    )?;
    let rows = stmt.query_map([tenant], |r| {
        Ok(KekRow {
            version: r.get(0)?,
            created_at: r.get(1)?,
            wraps: r.get::<_, i64>(2)? as u64,
            retired_at: r.get(3)?,
            data_keys: r.get::<_, i64>(4)? as u64,
            last_used_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records that a call used data under a KEK version at `at` (keeps the latest).
pub fn kek_note_use(conn: &Connection, tenant: &str, version: u32, at: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE tenant_keks SET last_used_at = max(coalesce(last_used_at, 0), ?3)
         WHERE tenant_id = ?1 AND version = ?2",
    )?
    .execute(params![tenant, version, at])?;
    Ok(())
}

pub fn set_min_decrypt_version(conn: &Connection, tenant: &str, version: u32) -> Result<()> {
    conn.prepare_cached("UPDATE tenants SET min_decrypt_version = ?2 WHERE id = ?1")?
        .execute(params![tenant, version])?;
    Ok(())
}

/// Counts one more encryption (a data key wrapped) under a KEK version.
pub fn kek_count_wrap(conn: &Connection, tenant: &str, version: u32) -> Result<()> {
    kek_count_wraps(conn, tenant, version, 1)
}

/// Counts `n` more encryptions under a KEK version.
pub fn kek_count_wraps(conn: &Connection, tenant: &str, version: u32, n: u64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE tenant_keks SET wraps = wraps + ?3 WHERE tenant_id = ?1 AND version = ?2",
    )?
    .execute(params![tenant, version, n as i64])?;
    Ok(())
}

/// Makes `version` the tenant's current KEK.
pub fn tenant_set_kek_version(conn: &Connection, tenant: &str, version: u32) -> Result<()> {
    conn.execute(
        "UPDATE tenants SET kek_version = ?2 WHERE id = ?1",
        params![tenant, version],
    )?;
    Ok(())
}

/// Up to `limit` live data keys of active tenants wrapped under a KEK
/// version older than their tenant's current one, after row `after` in
/// the order they were made (oldest first): the rewrap job's work, with
/// each key's target version and row number (the next page's cursor).
pub fn deks_to_rewrap(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<(DekRow, u32, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.tenant_id, d.owner, d.kek_version, d.wrapped, t.kek_version, d.rowid
         FROM tenants t JOIN data_keys d ON d.tenant_id = t.id
         WHERE t.state = 'active' AND d.wrapped IS NOT NULL AND d.kek_version < t.kek_version AND d.rowid > ?1
         ORDER BY d.rowid LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit as i64], |r| {
        Ok((dek_row(r)?, r.get(5)?, r.get(6)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn dek_rewrapped(conn: &Connection, id: &str, kek_version: u32, wrapped: &[u8]) -> Result<()> {
    conn.prepare_cached(
        "UPDATE data_keys SET wrapped = ?3, kek_version = ?2 WHERE id = ?1 AND wrapped IS NOT NULL",
    )?
    .execute(params![id, kek_version, wrapped])?;
    Ok(())
}

/// Old KEK versions no live data key uses any more: (tenant, version).
pub fn keks_to_retire(conn: &Connection) -> Result<Vec<(String, u32)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT k.tenant_id, k.version FROM tenant_keks k JOIN tenants t ON t.id = k.tenant_id
         WHERE k.retired_at IS NULL AND k.version < t.kek_version
           AND NOT EXISTS (SELECT 1 FROM data_keys d
                           WHERE d.tenant_id = k.tenant_id AND d.kek_version = k.version AND d.wrapped IS NOT NULL)",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Destroys a KEK version's material: the wrapped bytes are overwritten
/// (secure_delete) by an empty blob; the row stays for `key status`.
pub fn kek_retire(conn: &Connection, tenant: &str, version: u32, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE tenant_keks SET wrapped = X'', retired_at = ?3 WHERE tenant_id = ?1 AND version = ?2",
        params![tenant, version, now],
    )?;
    Ok(())
}

/// A data key row; `wrapped` is `None` once destroyed.
#[derive(Clone, Debug)]
pub struct DekRow {
    pub id: String,
    pub tenant_id: String,
    pub owner: Vec<u8>,
    pub kek_version: u32,
    pub wrapped: Option<Vec<u8>>,
}

/// Stores a new data key and counts its wrap under its KEK version.
pub fn dek_insert(conn: &Connection, d: &DekRow, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO data_keys (id, tenant_id, owner, kek_version, wrapped, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![d.id, d.tenant_id, d.owner, d.kek_version, d.wrapped, now],
    )?;
    kek_count_wrap(conn, &d.tenant_id, d.kek_version)
}

/// A data key from columns `id, tenant_id, owner, kek_version, wrapped`.
fn dek_row(r: &Row<'_>) -> rusqlite::Result<DekRow> {
    Ok(DekRow {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        owner: r.get(2)?,
        kek_version: r.get(3)?,
        wrapped: r.get(4)?,
    })
}

pub fn dek_get(conn: &Connection, id: &str) -> Result<Option<DekRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, tenant_id, owner, kek_version, wrapped FROM data_keys WHERE id = ?1",
        )?
        .query_row([id], dek_row)
        .optional()?)
}

/// Overwrites a data key's wrapped bytes (secure_delete zeroes the old cell).
pub fn dek_destroy(conn: &Connection, id: &str, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE data_keys SET wrapped = NULL, destroyed_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

#[derive(Clone, Debug)]
pub struct SubjectRow {
    /// `None` once the subject was erased.
    pub dek_id: Option<String>,
    pub sealed_subject: Option<Vec<u8>>,
    pub created_at: i64,
    /// The subject's last write or touch (retention by last activity).
    pub last_activity_at: Option<i64>,
}

pub fn subject_get(conn: &Connection, tenant: &str, blind: &[u8]) -> Result<Option<SubjectRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT dek_id, sealed_subject, created_at, last_activity_at FROM subjects WHERE tenant_id = ?1 AND blind_id = ?2",
        )?
        .query_row(params![tenant, blind], |r| {
            Ok(SubjectRow {
                dek_id: r.get(0)?,
                sealed_subject: r.get(1)?,
                created_at: r.get(2)?,
                last_activity_at: r.get(3)?,
            })
        })
        .optional()?)
}

/// Creates the subject, or brings an erased one back with a new data key.
pub fn subject_activate(
    conn: &Connection,
    tenant: &str,
    blind: &[u8],
    dek_id: &str,
    sealed: &[u8],
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO subjects (tenant_id, blind_id, dek_id, sealed_subject, created_at, last_activity_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
         ON CONFLICT (tenant_id, blind_id) DO UPDATE SET dek_id = ?3, sealed_subject = ?4, created_at = ?5, erased_at = NULL, last_activity_at = ?5",
        params![tenant, blind, dek_id, sealed, now],
    )?;
    Ok(())
}

/// Marks a subject erased and overwrites its sealed id. The row stays as a
/// tombstone so later writes for the subject are refused by default.
pub fn subject_erase(conn: &Connection, tenant: &str, blind: &[u8], now: i64) -> Result<()> {
    conn.execute(
        "UPDATE subjects SET dek_id = NULL, sealed_subject = NULL, erased_at = ?3 WHERE tenant_id = ?1 AND blind_id = ?2",
        params![tenant, blind, now],
    )?;
    Ok(())
}

/// A stored record. `owner` is the subject's blind id, empty for
/// tenant-level records.
#[derive(Clone, Debug)]
pub struct RecordRow {
    pub owner: Vec<u8>,
    pub category: String,
    pub key: String,
    pub version: u64,
    pub dek_id: String,
    pub content_type: String,
    pub ciphertext: Vec<u8>,
    pub size: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

const RECORD_COLS: &str =
    "owner, category, key, version, dek_id, content_type, ciphertext, size, created_at, updated_at";

fn record_row(r: &Row<'_>) -> rusqlite::Result<RecordRow> {
    Ok(RecordRow {
        owner: r.get(0)?,
        category: r.get(1)?,
        key: r.get(2)?,
        version: r.get::<_, i64>(3)? as u64,
        dek_id: r.get(4)?,
        content_type: r.get(5)?,
        ciphertext: r.get(6)?,
        size: r.get::<_, i64>(7)? as u64,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

/// Where a record lives: tenant, owner, category, key.
#[derive(Clone, Copy, Debug)]
pub struct RecordAddr<'a> {
    pub tenant: &'a str,
    pub owner: &'a [u8],
    pub category: &'a str,
    pub key: &'a str,
}

/// A live record (not a tombstone).
pub fn record_get(conn: &Connection, a: RecordAddr<'_>) -> Result<Option<RecordRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {RECORD_COLS} FROM records
             WHERE tenant_id = ?1 AND owner = ?2 AND category = ?3 AND key = ?4 AND deleted_at IS NULL"
        ))?
        .query_row(params![a.tenant, a.owner, a.category, a.key], record_row)
        .optional()?)
}

/// A record's version and state, without its ciphertext.
#[derive(Clone, Debug)]
pub struct RecordHead {
    pub version: u64,
    pub dek_id: String,
    pub created_at: i64,
    /// A tombstone left by a delete.
    pub deleted: bool,
}

pub fn record_head(conn: &Connection, a: RecordAddr<'_>) -> Result<Option<RecordHead>> {
    Ok(conn
        .prepare_cached(
            "SELECT version, dek_id, created_at, deleted_at IS NOT NULL FROM records
             WHERE tenant_id = ?1 AND owner = ?2 AND category = ?3 AND key = ?4",
        )?
        .query_row(params![a.tenant, a.owner, a.category, a.key], |r| {
            Ok(RecordHead {
                version: r.get::<_, i64>(0)? as u64,
                dek_id: r.get(1)?,
                created_at: r.get(2)?,
                deleted: r.get(3)?,
            })
        })
        .optional()?)
}

pub fn record_upsert(conn: &Connection, tenant: &str, r: &RecordRow) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO records (tenant_id, {RECORD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (tenant_id, owner, category, key) DO UPDATE SET
           version = ?5, dek_id = ?6, content_type = ?7, ciphertext = ?8, size = ?9, created_at = ?10,
           updated_at = ?11, deleted_at = NULL"
    ))?
    .execute(params![
        tenant,
        r.owner,
        r.category,
        r.key,
        r.version as i64,
        r.dek_id,
        r.content_type,
        r.ciphertext,
        r.size as i64,
        r.created_at,
        r.updated_at
    ])?;
    Ok(())
}

/// Deletes a record's value, leaving a tombstone that keeps its version
/// (secure_delete overwrites the old ciphertext bytes).
pub fn record_delete(conn: &Connection, a: RecordAddr<'_>, now: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE records SET ciphertext = X'', size = 0, deleted_at = ?5, updated_at = ?5
         WHERE tenant_id = ?1 AND owner = ?2 AND category = ?3 AND key = ?4",
    )?
    .execute(params![a.tenant, a.owner, a.category, a.key, now])?;
    Ok(())
}

/// A position in (owner, category, key) order, for keyset pagination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordCursor {
    pub owner: Vec<u8>,
    pub category: String,
    pub key: String,
}

/// Records of a tenant in (owner, category, key) order after `after`,
/// optionally only one owner's and one category's. Only records whose data
/// key is alive are listed.
/// Live records in key order after `after`: at most `limit`, and no more
/// once their ciphertext reaches `max_bytes` (at least one is returned), so
/// a page of large values stays bounded in memory.
pub fn record_list(
    conn: &Connection,
    tenant: &str,
    owner: Option<&[u8]>,
    category: Option<&str>,
    after: Option<&RecordCursor>,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<RecordRow>> {
    let (a_owner, a_cat, a_key, started) = match after {
        Some(c) => (c.owner.as_slice(), c.category.as_str(), c.key.as_str(), 1),
        None => (&[][..], "", "", 0),
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM records r JOIN data_keys d ON d.id = r.dek_id
         WHERE r.tenant_id = ?1 AND d.wrapped IS NOT NULL AND r.deleted_at IS NULL
           AND (?2 IS NULL OR r.owner = ?2) AND (?3 IS NULL OR r.category = ?3)
           AND (?7 = 0 OR (r.owner, r.category, r.key) > (?4, ?5, ?6))
         ORDER BY r.owner, r.category, r.key LIMIT ?8",
        RECORD_COLS
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    let rows = stmt.query_map(
        params![
            tenant,
            owner,
            category,
            a_owner,
            a_cat,
            a_key,
            started,
            limit as i64
        ],
        record_row,
    )?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for row in rows {
        let row = row?;
        bytes = bytes.saturating_add(row.ciphertext.len());
        out.push(row);
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(out)
}

pub fn records_count_for_dek(conn: &Connection, dek_id: &str) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM records WHERE dek_id = ?1 AND deleted_at IS NULL")?
        .query_row([dek_id], |r| r.get(0))?;
    Ok(n as u64)
}

/// Deletes up to `limit` record rows whose data key is destroyed, and
/// marks each destroyed key whose rows are all gone as purged. Returns
/// (rows deleted, keys marked); (0, 0) means nothing is left to purge.
pub fn records_purge_destroyed(conn: &Connection, limit: usize) -> Result<(usize, usize)> {
    let deks: Vec<String> = conn
        .prepare_cached("SELECT id FROM data_keys WHERE destroyed_at IS NOT NULL AND purged_at IS NULL LIMIT 64")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let (mut deleted, mut marked) = (0, 0);
    for id in deks {
        let want = limit - deleted;
        let n = conn
            .prepare_cached("DELETE FROM records WHERE rowid IN (SELECT rowid FROM records WHERE dek_id = ?1 LIMIT ?2)")?
            .execute(params![id, want as i64])?;
        deleted += n;
        if n < want {
            conn.prepare_cached("UPDATE data_keys SET purged_at = ?2 WHERE id = ?1")?
                .execute(params![id, crate::now_ms()])?;
            marked += 1;
        }
        if deleted >= limit {
            break;
        }
    }
    Ok((deleted, marked))
}

#[derive(Clone, Debug)]
pub struct PrincipalRow {
    pub id: String,
    pub tenant_id: Option<String>,
    pub name: String,
    /// Role names, comma-separated.
    pub roles: String,
    pub created_at: i64,
    /// The client-certificate common name the principal is pinned to.
    pub cert_cn: Option<String>,
    /// MAC over the row (`integrity`); `None` until sealed.
    pub mac: Option<Vec<u8>>,
}

const PRINCIPAL_COLS: &str = "id, tenant_id, name, roles, created_at, cert_cn, mac";

/// A principal from columns `PRINCIPAL_COLS` starting at `at`.
fn principal_row(r: &Row<'_>, at: usize) -> rusqlite::Result<PrincipalRow> {
    Ok(PrincipalRow {
        id: r.get(at)?,
        tenant_id: r.get(at + 1)?,
        name: r.get(at + 2)?,
        roles: r.get(at + 3)?,
        created_at: r.get(at + 4)?,
        cert_cn: r.get(at + 5)?,
        mac: r.get(at + 6)?,
    })
}

pub fn principal_insert(conn: &Connection, p: &PrincipalRow) -> Result<()> {
    conn.execute(
        "INSERT INTO principals (id, tenant_id, name, roles, created_at, cert_cn, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![p.id, p.tenant_id, p.name, p.roles, p.created_at, p.cert_cn, p.mac],
    )
    .map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => {
            Error::AlreadyExists(format!("name: a principal named '{}' already exists", p.name))
        }
        _ => e.into(),
    })?;
    Ok(())
}

/// Every principal, for sealing rows written before rows had MACs.
pub fn principals_all(conn: &Connection) -> Result<Vec<PrincipalRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {PRINCIPAL_COLS} FROM principals"))?;
    let rows = stmt.query_map([], |r| principal_row(r, 0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn principal_set_mac(conn: &Connection, id: &str, mac: &[u8]) -> Result<()> {
    conn.prepare_cached("UPDATE principals SET mac = ?2 WHERE id = ?1")?
        .execute(params![id, mac])?;
    Ok(())
}

/// Every API key, for sealing rows written before rows had MACs.
pub fn api_keys_all(conn: &Connection) -> Result<Vec<ApiKeyRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {API_KEY_COLS} FROM api_keys k"))?;
    let rows = stmt.query_map([], api_key_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn api_key_set_mac(conn: &Connection, key_id: &str, mac: &[u8]) -> Result<()> {
    conn.prepare_cached("UPDATE api_keys SET mac = ?2 WHERE key_id = ?1")?
        .execute(params![key_id, mac])?;
    Ok(())
}

pub fn principal_count(conn: &Connection) -> Result<u64> {
    let n: i64 = conn.query_row("SELECT count(*) FROM principals", [], |r| r.get(0))?;
    Ok(n as u64)
}

/// A tenant's principals, by name.
pub fn principals_of_tenant(conn: &Connection, tenant: &str) -> Result<Vec<PrincipalRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PRINCIPAL_COLS} FROM principals WHERE tenant_id = ?1 ORDER BY name"
    ))?;
    let rows = stmt.query_map([tenant], |r| principal_row(r, 0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The keys of a tenant's principals (hashes included; callers drop them).
pub fn api_keys_of_tenant(conn: &Connection, tenant: &str) -> Result<Vec<ApiKeyRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {API_KEY_COLS} FROM api_keys k JOIN principals p ON p.id = k.principal_id
         WHERE p.tenant_id = ?1 ORDER BY k.created_at"
    ))?;
    let rows = stmt.query_map([tenant], api_key_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn principal_get(conn: &Connection, id: &str) -> Result<Option<PrincipalRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {PRINCIPAL_COLS} FROM principals WHERE id = ?1"
        ))?
        .query_row([id], |r| principal_row(r, 0))
        .optional()?)
}

pub fn api_key_revoke(conn: &Connection, key_id: &str, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
        params![key_id, now],
    )?;
    Ok(())
}

pub fn api_key_touch(conn: &Connection, key_id: &str, now: i64) -> Result<()> {
    conn.prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE key_id = ?1")?
        .execute(params![key_id, now])?;
    Ok(())
}

#[derive(Clone, Debug)]
pub struct ApiKeyRow {
    pub key_id: String,
    pub principal_id: String,
    pub secret_hash: Vec<u8>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// MAC over the row but `last_used_at` (`integrity`); `None` until sealed.
    pub mac: Option<Vec<u8>>,
}

const API_KEY_COLS: &str = "k.key_id, k.principal_id, k.secret_hash, k.created_at, k.expires_at, k.revoked_at, k.last_used_at, k.mac";

/// An API key from columns `API_KEY_COLS` (the first eight).
fn api_key_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        key_id: r.get(0)?,
        principal_id: r.get(1)?,
        secret_hash: r.get(2)?,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
        revoked_at: r.get(5)?,
        last_used_at: r.get(6)?,
        mac: r.get(7)?,
    })
}

pub fn api_key_insert(conn: &Connection, k: &ApiKeyRow) -> Result<()> {
    conn.execute(
        "INSERT INTO api_keys (key_id, principal_id, secret_hash, created_at, expires_at, revoked_at, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![k.key_id, k.principal_id, k.secret_hash, k.created_at, k.expires_at, k.revoked_at, k.mac],
    )?;
    Ok(())
}

/// An API key and the principal holding it.
pub fn api_key_lookup(
    conn: &Connection,
    key_id: &str,
) -> Result<Option<(ApiKeyRow, PrincipalRow)>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {API_KEY_COLS}, p.id, p.tenant_id, p.name, p.roles, p.created_at, p.cert_cn, p.mac
             FROM api_keys k JOIN principals p ON p.id = k.principal_id WHERE k.key_id = ?1"
        ))?
        .query_row([key_id], |r| Ok((api_key_row(r)?, principal_row(r, 8)?)))
        .optional()?)
}

pub fn meta_get(conn: &Connection, name: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

pub fn meta_put(conn: &Connection, name: &str, value: &[u8]) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
        params![name, value],
    )?;
    Ok(())
}

pub fn receipt_insert(
    conn: &Connection,
    id: &str,
    tenant: &str,
    subject: &[u8],
    (body, mac): (&[u8], &[u8]),
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO receipts (id, tenant_id, subject, body, mac, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, tenant, subject, body, mac, now],
    )?;
    Ok(())
}

/// The newest receipt issued for a subject: (body, mac).
pub fn receipt_latest(
    conn: &Connection,
    tenant: &str,
    subject: &[u8],
) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    Ok(conn
        .prepare_cached(
            "SELECT body, mac FROM receipts WHERE tenant_id = ?1 AND subject = ?2
             ORDER BY created_at DESC, rowid DESC LIMIT 1",
        )?
        .query_row(params![tenant, subject], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Every tenant's index key wrapped by the root key directly (shredded
/// tenants have none; the rest are under an erasure epoch).
pub fn index_keys(conn: &Connection) -> Result<Vec<(String, Vec<u8>)>> {
    let mut stmt = conn
        .prepare("SELECT id, wrapped_index_key FROM tenants WHERE wrapped_index_key IS NOT NULL AND index_epoch IS NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn set_index_key(conn: &Connection, tenant: &str, wrapped: &[u8]) -> Result<()> {
    conn.execute(
        "UPDATE tenants SET wrapped_index_key = ?2 WHERE id = ?1",
        params![tenant, wrapped],
    )?;
    Ok(())
}

/// Every KEK version not retired and wrapped by the root key directly
/// (not under an erasure epoch): (tenant, version, wrapped).
pub fn live_keks(conn: &Connection) -> Result<Vec<(String, u32, Vec<u8>)>> {
    let mut stmt = conn
        .prepare("SELECT tenant_id, version, wrapped FROM tenant_keks WHERE retired_at IS NULL AND epoch IS NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn set_kek(conn: &Connection, tenant: &str, version: u32, wrapped: &[u8]) -> Result<()> {
    conn.execute(
        "UPDATE tenant_keks SET wrapped = ?3 WHERE tenant_id = ?1 AND version = ?2",
        params![tenant, version, wrapped],
    )?;
    Ok(())
}

/// A tenant's current KEK and its rotation policy, for the scheduler.
#[derive(Clone, Debug)]
pub struct RotationState {
    pub tenant: String,
    pub version: u32,
    pub created_at: i64,
    pub wraps: u64,
    /// The tenant's own policy; `None`: the server's default.
    pub max_age_ms: Option<i64>,
    pub max_wraps: Option<u64>,
}

fn rotation_row(r: &Row<'_>) -> rusqlite::Result<RotationState> {
    Ok(RotationState {
        tenant: r.get(0)?,
        version: r.get(1)?,
        created_at: r.get(2)?,
        wraps: r.get::<_, i64>(3)? as u64,
        max_age_ms: r.get(4)?,
        max_wraps: r.get::<_, Option<i64>>(5)?.map(|n| n as u64),
    })
}

const ROTATION_SQL: &str =
    "SELECT t.id, t.kek_version, k.created_at, k.wraps, t.rotate_after_ms, t.rotate_after_wraps
     FROM tenants t JOIN tenant_keks k ON k.tenant_id = t.id AND k.version = t.kek_version
     WHERE t.state = 'active'";

/// Every active tenant's rotation state.
pub fn rotation_states(conn: &Connection) -> Result<Vec<RotationState>> {
    let mut stmt = conn.prepare_cached(ROTATION_SQL)?;
    let rows = stmt.query_map([], rotation_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One tenant's rotation state.
pub fn rotation_state(conn: &Connection, tenant: &str) -> Result<Option<RotationState>> {
    Ok(conn
        .prepare_cached(&format!("{ROTATION_SQL} AND t.id = ?1"))?
        .query_row([tenant], rotation_row)
        .optional()?)
}

pub fn set_rotation_policy(
    conn: &Connection,
    tenant: &str,
    max_age_ms: Option<i64>,
    max_wraps: Option<u64>,
) -> Result<()> {
    conn.execute(
        "UPDATE tenants SET rotate_after_ms = ?2, rotate_after_wraps = ?3 WHERE id = ?1",
        params![tenant, max_age_ms, max_wraps.map(|n| n as i64)],
    )?;
    Ok(())
}

/// A data-key re-encryption in progress.
#[derive(Clone, Debug)]
pub struct ReencryptJob {
    pub old_dek: String,
    pub new_dek: String,
    pub tenant_id: String,
    pub owner: Vec<u8>,
}

pub fn reencrypt_insert(conn: &Connection, j: &ReencryptJob, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO reencrypt_jobs (old_dek, new_dek, tenant_id, owner, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![j.old_dek, j.new_dek, j.tenant_id, j.owner, now],
    )?;
    Ok(())
}

pub fn reencrypt_jobs(conn: &Connection) -> Result<Vec<ReencryptJob>> {
    let mut stmt = conn.prepare_cached(
        "SELECT old_dek, new_dek, tenant_id, owner FROM reencrypt_jobs ORDER BY started_at",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ReencryptJob {
            old_dek: r.get(0)?,
            new_dek: r.get(1)?,
            tenant_id: r.get(2)?,
            owner: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn reencrypt_delete(conn: &Connection, old_dek: &str) -> Result<()> {
    conn.execute("DELETE FROM reencrypt_jobs WHERE old_dek = ?1", [old_dek])?;
    Ok(())
}

/// Jobs of a tenant: (old, new) pairs, for status and shredding.
pub fn reencrypt_jobs_of(conn: &Connection, tenant: &str) -> Result<Vec<(String, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT old_dek, new_dek FROM reencrypt_jobs WHERE tenant_id = ?1")?;
    let rows = stmt.query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Up to `limit` live records sealed under data key `dek`, with rowids.
/// Live records under data key `dek` that are not known to be corrupt.
pub fn records_under(conn: &Connection, dek: &str, limit: usize) -> Result<Vec<(i64, RecordRow)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLS}, rowid FROM records WHERE dek_id = ?1 AND deleted_at IS NULL AND corrupt_at IS NULL LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![dek, limit as i64], |r| {
        Ok((r.get(10)?, record_row(r)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Marks a record that fails authentication, so jobs skip it.
pub fn record_mark_corrupt(conn: &Connection, rowid: i64, now: i64) -> Result<()> {
    conn.prepare_cached("UPDATE records SET corrupt_at = ?2 WHERE rowid = ?1")?
        .execute(params![rowid, now])?;
    Ok(())
}

/// How many of a tenant's records a job found corrupt (until purged).
pub fn corrupt_records(conn: &Connection, tenant: &str) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM records WHERE tenant_id = ?1 AND corrupt_at IS NOT NULL",
        )?
        .query_row([tenant], |r| r.get(0))?;
    Ok(n as u64)
}

pub fn record_reseal(conn: &Connection, rowid: i64, dek: &str, ciphertext: &[u8]) -> Result<()> {
    conn.prepare_cached("UPDATE records SET dek_id = ?2, ciphertext = ?3 WHERE rowid = ?1")?
        .execute(params![rowid, dek, ciphertext])?;
    Ok(())
}

/// Tombstones (deleted records) under `dek` follow it to `new` so the
/// version sequence survives the old key's destruction.
pub fn tombstones_follow(conn: &Connection, dek: &str, new: &str) -> Result<()> {
    conn.prepare_cached(
        "UPDATE records SET dek_id = ?2 WHERE dek_id = ?1 AND deleted_at IS NOT NULL",
    )?
    .execute(params![dek, new])?;
    Ok(())
}

/// Every live data key of an owner: the current one, and during a
/// re-encryption the old one too.
pub fn live_deks_of_owner(conn: &Connection, tenant: &str, owner: &[u8]) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM data_keys WHERE tenant_id = ?1 AND owner = ?2 AND wrapped IS NOT NULL",
    )?;
    let rows = stmt.query_map(params![tenant, owner], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every owner (subject blind id, or empty for tenant-level) of a tenant
/// that has a live data key, with that key.
pub fn owners_of_tenant(conn: &Connection, tenant: &str) -> Result<Vec<(Vec<u8>, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT blind_id, dek_id FROM subjects WHERE tenant_id = ?1 AND dek_id IS NOT NULL
         UNION ALL SELECT X'', dek_id FROM tenants WHERE id = ?1 AND dek_id IS NOT NULL",
    )?;
    let rows = stmt.query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn set_subject_dek(
    conn: &Connection,
    tenant: &str,
    blind: &[u8],
    dek: &str,
    sealed_subject: &[u8],
) -> Result<()> {
    conn.execute(
        "UPDATE subjects SET dek_id = ?3, sealed_subject = ?4 WHERE tenant_id = ?1 AND blind_id = ?2",
        params![tenant, blind, dek, sealed_subject],
    )?;
    Ok(())
}

pub fn set_tenant_dek(conn: &Connection, tenant: &str, dek: &str) -> Result<()> {
    conn.execute(
        "UPDATE tenants SET dek_id = ?2 WHERE id = ?1",
        params![tenant, dek],
    )?;
    Ok(())
}
