//! Legal holds as stored: one row per hold, deleted on release.

use rusqlite::{Connection, Row, params};

use crate::error::Result;

/// A legal hold on a subject (`owner`: its blind id) or a whole tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRow {
    pub id: String,
    pub tenant_id: String,
    /// `None`: the whole tenant.
    pub owner: Option<Vec<u8>>,
    pub reason: String,
    pub created_at: i64,
    /// The principal that placed it.
    pub created_by: String,
}

fn hold_row(r: &Row<'_>) -> rusqlite::Result<HoldRow> {
    Ok(HoldRow {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        owner: r.get(2)?,
        reason: r.get(3)?,
        created_at: r.get(4)?,
        created_by: r.get(5)?,
    })
}

pub fn hold_insert(conn: &Connection, h: &HoldRow) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO legal_holds (id, tenant_id, owner, reason, created_at, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        h.id,
        h.tenant_id,
        h.owner,
        h.reason,
        h.created_at,
        h.created_by
    ])?;
    Ok(())
}

/// Every hold of a tenant (subject and tenant-wide), in id order.
pub fn holds_of_tenant(conn: &Connection, tenant: &str) -> Result<Vec<HoldRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, tenant_id, owner, reason, created_at, created_by
         FROM legal_holds WHERE tenant_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([tenant], hold_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes hold `id` of `tenant`; whether it existed.
pub fn hold_delete(conn: &Connection, tenant: &str, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM legal_holds WHERE tenant_id = ?1 AND id = ?2")?
        .execute([tenant, id])?
        > 0)
}

/// Deletes a tenant's holds (all of them, at tenant shred).
pub fn holds_delete_tenant(conn: &Connection, tenant: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM legal_holds WHERE tenant_id = ?1")?
        .execute([tenant])?;
    Ok(())
}

pub fn tenant_set_holds_digest(conn: &Connection, id: &str, digest: Option<&[u8]>) -> Result<()> {
    conn.execute(
        "UPDATE tenants SET holds_digest = ?2 WHERE id = ?1",
        params![id, digest],
    )?;
    Ok(())
}
