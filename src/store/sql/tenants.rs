//! Tenants: their rows, states and destruction.

use super::{Db, OptionalExtension, Row, params};

use crate::error::Result;
use crate::store::seam::*;

fn state_of(s: &str) -> Result<TenantState> {
    match s {
        "active" => Ok(TenantState::Active),
        "shred_scheduled" => Ok(TenantState::ShredScheduled),
        "shredded" => Ok(TenantState::Shredded),
        other => Err(crate::error::Error::Corrupt(format!(
            "storage: unknown tenant state '{other}': the stored rows are damaged"
        ))),
    }
}

const TENANT_COLS: &str = "id, name, state, created_at, shred_at, kek_version, wrapped_index_key, dek_id, min_decrypt_version, rotate_after_ms, rotate_after_wraps, mac, admin_recovery_at, holds_digest";

fn tenant_row(r: &Row<'_>) -> Result<TenantRow> {
    Ok(TenantRow {
        id: r.get(0)?,
        name: r.get(1)?,
        state: state_of(&r.get::<_, String>(2)?)?,
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

impl TenantRows for Db {
    fn tenant_get(&self, id: &str) -> Result<Option<TenantRow>> {
        self.prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1"))?
            .query_row([id], tenant_row)
            .optional()
    }

    fn tenant_insert(&self, t: &TenantRow) -> Result<()> {
        self.execute(
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

    fn tenant_set_mac(&self, id: &str, mac: &[u8]) -> Result<()> {
        self.prepare_cached("UPDATE tenants SET mac = ?2 WHERE id = ?1")?
            .execute(params![id, mac])?;
        Ok(())
    }

    fn tenant_ids(&self) -> Result<Vec<String>> {
        let mut stmt = self.prepare_cached("SELECT id FROM tenants")?;
        let rows = stmt.query_map((), |r| r.get(0))?;
        rows.collect::<Result<_>>()
    }

    fn tenant_list(&self, after: &str, limit: usize) -> Result<Vec<TenantRow>> {
        let mut stmt = self.prepare_cached(&format!(
            "SELECT {TENANT_COLS} FROM tenants WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![after, limit as i64], tenant_row)?;
        rows.collect::<Result<_>>()
    }

    fn tenant_set_state(&self, id: &str, state: TenantState, shred_at: Option<i64>) -> Result<()> {
        self.execute(
            "UPDATE tenants SET state = ?2, shred_at = ?3 WHERE id = ?1",
            params![id, state.as_str(), shred_at],
        )?;
        Ok(())
    }

    fn tenant_set_admin_recovery(&self, id: &str, at: Option<i64>) -> Result<()> {
        self.execute(
            "UPDATE tenants SET admin_recovery_at = ?2 WHERE id = ?1",
            params![id, at],
        )?;
        Ok(())
    }

    fn tenant_has_principals(&self, tenant: &str) -> Result<bool> {
        self.prepare_cached("SELECT 1 FROM principals WHERE tenant_id = ?1 LIMIT 1")?
            .exists([tenant])
    }

    fn tenants_due_for_shred(&self, now: i64) -> Result<Vec<String>> {
        let mut stmt = self.prepare_cached(
            "SELECT id FROM tenants WHERE state = 'shred_scheduled' AND shred_at <= ?1",
        )?;
        let rows = stmt.query_map([now], |r| r.get(0))?;
        rows.collect::<Result<_>>()
    }

    fn tenant_destroy(&self, id: &str, now: i64) -> Result<TenantDestroyed> {
        let mut stmt = self.prepare_cached(
            "SELECT version FROM tenant_keks WHERE tenant_id = ?1 ORDER BY version",
        )?;
        let kek_versions = stmt
            .query_map([id], |r| r.get(0))?
            .collect::<Result<Vec<u32>>>()?;
        self.execute("DELETE FROM tenant_keks WHERE tenant_id = ?1", [id])?;
        let data_keys = self.execute(
            "UPDATE data_keys SET wrapped = NULL, destroyed_at = ?2 WHERE tenant_id = ?1 AND wrapped IS NOT NULL",
            params![id, now],
        )?;
        self.execute("DELETE FROM subjects WHERE tenant_id = ?1", [id])?;
        self.execute("DELETE FROM reencrypt_jobs WHERE tenant_id = ?1", [id])?;
        self.execute(
            "DELETE FROM api_keys WHERE principal_id IN (SELECT id FROM principals WHERE tenant_id = ?1)",
            [id],
        )?;
        self.execute("DELETE FROM principals WHERE tenant_id = ?1", [id])?;
        self.execute(
            "UPDATE tenants SET state = 'shredded', shred_at = ?2, wrapped_index_key = NULL, kek_version = 0 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(TenantDestroyed {
            kek_versions,
            data_keys,
        })
    }

    fn set_tenant_dek(&self, tenant: &str, dek: &str) -> Result<()> {
        self.execute(
            "UPDATE tenants SET dek_id = ?2 WHERE id = ?1",
            params![tenant, dek],
        )?;
        Ok(())
    }
}
