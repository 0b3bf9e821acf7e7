//! The two scans `audit verify --records` compares: the record writes the
//! audit chain says happened, and the records as stored.

use rusqlite::Connection;

use crate::error::Result;

/// An audited call that fixes a record's state: (tenant, action, resource),
/// in chain order, successful calls only.
pub fn audited_record_writes(
    conn: &Connection,
    tenant: Option<&str>,
    mut each: impl FnMut(&str, &str, &str),
) -> Result<()> {
    let mut stmt = conn.prepare(
        "SELECT tenant, action, resource FROM audit_log
         WHERE outcome = 'ok' AND action IN ('record.put', 'record.delete', 'subject.shred')
           AND (?1 IS NULL OR tenant = ?1)
         ORDER BY seq",
    )?;
    let mut rows = stmt.query([tenant])?;
    while let Some(r) = rows.next()? {
        each(
            &r.get::<_, String>(0)?,
            &r.get::<_, String>(1)?,
            &r.get::<_, String>(2)?,
        );
    }
    Ok(())
}

/// A stored record under a live data key: (tenant, owner, category, key,
/// version, deleted).
pub struct StoredRecord {
    pub tenant: String,
    pub owner: Vec<u8>,
    pub category: String,
    pub key: String,
    pub version: u64,
    pub deleted: bool,
    /// Deleted by the retention sweep (audited per batch, not per record).
    pub expired: bool,
}

/// Every record whose data key is not destroyed (rows under destroyed keys
/// are unreadable and only wait for their purge).
pub fn live_key_records(
    conn: &Connection,
    tenant: Option<&str>,
    mut each: impl FnMut(StoredRecord),
) -> Result<()> {
    let mut stmt = conn.prepare(
        "SELECT r.tenant_id, r.owner, r.category, r.key, r.version, r.deleted_at IS NOT NULL, r.expired_at IS NOT NULL
         FROM records r JOIN data_keys d ON d.id = r.dek_id
         WHERE d.wrapped IS NOT NULL AND (?1 IS NULL OR r.tenant_id = ?1)",
    )?;
    let mut rows = stmt.query([tenant])?;
    while let Some(r) = rows.next()? {
        each(StoredRecord {
            tenant: r.get(0)?,
            owner: r.get(1)?,
            category: r.get(2)?,
            key: r.get(3)?,
            version: r.get::<_, i64>(4)? as u64,
            deleted: r.get(5)?,
            expired: r.get(6)?,
        });
    }
    Ok(())
}

/// An audit entry that touched a subject, for its access history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRow {
    pub seq: u64,
    pub time: i64,
    pub principal: String,
    pub action: String,
    pub outcome: String,
    pub purpose: String,
}

/// The newest entry's sequence number (0: none).
pub fn audit_last_seq(conn: &Connection) -> Result<u64> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT max(seq) FROM audit_log")?
        .query_row([], |r| r.get(0))?;
    Ok(seq.unwrap_or(0) as u64)
}

/// Up to `limit` entries of `tenant` in (`after`, `until`] whose resource
/// names `blind_hex` (the subject's blind id), in chain order. Walks the
/// tenant's entries by (tenant, seq).
pub fn audit_touching(
    conn: &Connection,
    tenant: &str,
    blind_hex: &str,
    (after, until): (u64, u64),
    limit: usize,
) -> Result<Vec<AccessRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, time, principal, action, outcome, purpose FROM audit_log
         WHERE tenant = ?1 AND seq > ?2 AND seq <= ?5 AND instr(resource, ?3) > 0
         ORDER BY seq LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![tenant, after as i64, blind_hex, limit as i64, until as i64],
        |r| {
            Ok(AccessRow {
                seq: r.get::<_, i64>(0)? as u64,
                time: r.get(1)?,
                principal: r.get(2)?,
                action: r.get(3)?,
                outcome: r.get(4)?,
                purpose: r.get(5)?,
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
