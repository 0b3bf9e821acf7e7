//! The lookups that replay the shred ledger onto a restored database.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// The subject (blind id) whose current data key is `dek`, if any.
pub fn subject_of_dek(conn: &Connection, tenant: &str, dek: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT blind_id FROM subjects WHERE tenant_id = ?1 AND dek_id = ?2")?
        .query_row(params![tenant, dek], |r| r.get(0))
        .optional()?)
}

/// The data key a re-encryption job moves `old_dek`'s records to.
pub fn reencrypt_target(conn: &Connection, old_dek: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT new_dek FROM reencrypt_jobs WHERE old_dek = ?1")?
        .query_row([old_dek], |r| r.get(0))
        .optional()?)
}

/// Live data keys wrapped under a tenant's KEK `version`.
pub fn deks_under_kek(conn: &Connection, tenant: &str, version: u32) -> Result<Vec<super::DekRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, tenant_id, owner, kek_version, wrapped FROM data_keys
         WHERE tenant_id = ?1 AND kek_version = ?2 AND wrapped IS NOT NULL",
    )?;
    let rows = stmt.query_map(params![tenant, version], |r| {
        Ok(super::DekRow {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            owner: r.get(2)?,
            kek_version: r.get(3)?,
            wrapped: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether KEK `version` of `tenant` still has its material.
pub fn kek_live(conn: &Connection, tenant: &str, version: u32) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM tenant_keks WHERE tenant_id = ?1 AND version = ?2 AND retired_at IS NULL",
        )?
        .query_row(params![tenant, version], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Keys destroyed at or after `since` (Unix ms): data keys (of tenants not
/// shredded), shredded tenants, retired KEK versions. For reconciling the
/// shred ledger with the database at start.
pub struct DestroyedSince {
    pub deks: Vec<(String, String)>,
    pub tenants: Vec<String>,
    pub keks: Vec<(String, u32)>,
}

pub fn destroyed_since(conn: &Connection, since: i64) -> Result<DestroyedSince> {
    let deks = conn
        .prepare_cached(
            "SELECT d.tenant_id, d.id FROM data_keys d JOIN tenants t ON t.id = d.tenant_id
             WHERE d.destroyed_at >= ?1 AND t.state != 'shredded' ORDER BY d.destroyed_at",
        )?
        .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let tenants = conn
        .prepare_cached("SELECT id FROM tenants WHERE state = 'shredded' AND shred_at >= ?1")?
        .query_map([since], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let keks = conn
        .prepare_cached("SELECT tenant_id, version FROM tenant_keks WHERE retired_at >= ?1")?
        .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(DestroyedSince {
        deks,
        tenants,
        keks,
    })
}
