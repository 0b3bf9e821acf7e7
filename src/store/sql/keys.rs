//! Key rows: tenant key-encryption keys, data keys, index keys,
//! rotation state and the vault's own keys in `meta`.

use super::{Db, OptionalExtension, Row, params};

use crate::error::Result;
use crate::store::seam::*;

/// A data key from columns `id, tenant_id, owner, kek_version, wrapped`.
fn dek_row(r: &Row<'_>) -> Result<DekRow> {
    Ok(DekRow {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        owner: r.get(2)?,
        kek_version: r.get(3)?,
        wrapped: r.get(4)?,
    })
}

fn rotation_row(r: &Row<'_>) -> Result<RotationState> {
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

impl KeyRows for Db {
    fn kek_insert(
        &self,
        tenant: &str,
        version: u32,
        (wrapped, epoch): (&[u8], Option<u64>),
        now: i64,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO tenant_keks (tenant_id, version, wrapped, created_at, epoch) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![tenant, version, wrapped, now, epoch.map(|e| e as i64)],
        )?;
        Ok(())
    }

    fn kek_get(&self, tenant: &str, version: u32) -> Result<Option<(Vec<u8>, Option<u64>)>> {
        self
            .prepare_cached("SELECT wrapped, epoch FROM tenant_keks WHERE tenant_id = ?1 AND version = ?2 AND retired_at IS NULL")?
            .query_row(params![tenant, version], |r| {
                Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.map(|e| e as u64)))
            })
            .optional()
    }

    fn keks_of_tenant(&self, tenant: &str) -> Result<Vec<KekRow>> {
        let mut stmt = self.prepare_cached(
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
        rows.collect::<Result<_>>()
    }

    fn kek_note_use(&self, tenant: &str, version: u32, at: i64) -> Result<()> {
        self.prepare_cached(
            "UPDATE tenant_keks SET last_used_at = CASE WHEN coalesce(last_used_at, 0) > ?3 THEN last_used_at ELSE ?3 END
             WHERE tenant_id = ?1 AND version = ?2",
        )?
        .execute(params![tenant, version, at])?;
        Ok(())
    }

    fn set_min_decrypt_version(&self, tenant: &str, version: u32) -> Result<()> {
        self.prepare_cached("UPDATE tenants SET min_decrypt_version = ?2 WHERE id = ?1")?
            .execute(params![tenant, version])?;
        Ok(())
    }

    fn kek_count_wraps(&self, tenant: &str, version: u32, n: u64) -> Result<()> {
        self.prepare_cached(
            "UPDATE tenant_keks SET wraps = wraps + ?3 WHERE tenant_id = ?1 AND version = ?2",
        )?
        .execute(params![tenant, version, n as i64])?;
        Ok(())
    }

    fn tenant_set_kek_version(&self, tenant: &str, version: u32) -> Result<()> {
        self.execute(
            "UPDATE tenants SET kek_version = ?2 WHERE id = ?1",
            params![tenant, version],
        )?;
        Ok(())
    }

    fn deks_to_rewrap(&self, after: i64, limit: usize) -> Result<Vec<(DekRow, u32, i64)>> {
        let mut stmt = self.prepare_cached(
            "SELECT d.id, d.tenant_id, d.owner, d.kek_version, d.wrapped, t.kek_version, d.rowid
             FROM tenants t JOIN data_keys d ON d.tenant_id = t.id
             WHERE t.state = 'active' AND d.wrapped IS NOT NULL AND d.kek_version < t.kek_version AND d.rowid > ?1
             ORDER BY d.rowid LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok((dek_row(r)?, r.get(5)?, r.get(6)?))
        })?;
        rows.collect::<Result<_>>()
    }

    fn dek_rewrapped(&self, id: &str, kek_version: u32, wrapped: &[u8]) -> Result<()> {
        self.prepare_cached(
            "UPDATE data_keys SET wrapped = ?3, kek_version = ?2 WHERE id = ?1 AND wrapped IS NOT NULL",
        )?
        .execute(params![id, kek_version, wrapped])?;
        Ok(())
    }

    fn keks_to_retire(&self) -> Result<Vec<(String, u32)>> {
        let mut stmt = self.prepare_cached(
            "SELECT k.tenant_id, k.version FROM tenant_keks k JOIN tenants t ON t.id = k.tenant_id
             WHERE k.retired_at IS NULL AND k.version < t.kek_version
               AND NOT EXISTS (SELECT 1 FROM data_keys d
                               WHERE d.tenant_id = k.tenant_id AND d.kek_version = k.version AND d.wrapped IS NOT NULL)",
        )?;
        let rows = stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_>>()
    }

    fn kek_retire(&self, tenant: &str, version: u32, now: i64) -> Result<()> {
        self.execute(
            "UPDATE tenant_keks SET wrapped = X'', retired_at = ?3 WHERE tenant_id = ?1 AND version = ?2",
            params![tenant, version, now],
        )?;
        Ok(())
    }

    fn dek_insert(&self, d: &DekRow, now: i64) -> Result<()> {
        self.execute(
            "INSERT INTO data_keys (id, tenant_id, owner, kek_version, wrapped, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![d.id, d.tenant_id, d.owner, d.kek_version, d.wrapped, now],
        )?;
        Ok(())
    }

    fn dek_get(&self, id: &str) -> Result<Option<DekRow>> {
        self.prepare_cached(
            "SELECT id, tenant_id, owner, kek_version, wrapped FROM data_keys WHERE id = ?1",
        )?
        .query_row([id], dek_row)
        .optional()
    }

    fn dek_destroy(&self, id: &str, now: i64) -> Result<()> {
        self.execute(
            "UPDATE data_keys SET wrapped = NULL, destroyed_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.prepare_cached("SELECT value FROM meta WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()
    }

    fn meta_put(&self, name: &str, value: &[u8]) -> Result<()> {
        self.execute(
            "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
            params![name, value],
        )?;
        Ok(())
    }

    fn index_keys(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut stmt = self
            .prepare("SELECT id, wrapped_index_key FROM tenants WHERE wrapped_index_key IS NOT NULL AND index_epoch IS NULL")?;
        let rows = stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_>>()
    }

    fn set_index_key(&self, tenant: &str, wrapped: &[u8]) -> Result<()> {
        self.execute(
            "UPDATE tenants SET wrapped_index_key = ?2 WHERE id = ?1",
            params![tenant, wrapped],
        )?;
        Ok(())
    }

    fn live_keks(&self) -> Result<Vec<(String, u32, Vec<u8>)>> {
        let mut stmt = self
            .prepare("SELECT tenant_id, version, wrapped FROM tenant_keks WHERE retired_at IS NULL AND epoch IS NULL")?;
        let rows = stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_>>()
    }

    fn set_kek(&self, tenant: &str, version: u32, wrapped: &[u8]) -> Result<()> {
        self.execute(
            "UPDATE tenant_keks SET wrapped = ?3 WHERE tenant_id = ?1 AND version = ?2",
            params![tenant, version, wrapped],
        )?;
        Ok(())
    }

    fn rotation_states(&self) -> Result<Vec<RotationState>> {
        let mut stmt = self.prepare_cached(ROTATION_SQL)?;
        let rows = stmt.query_map((), rotation_row)?;
        rows.collect::<Result<_>>()
    }

    fn rotation_state(&self, tenant: &str) -> Result<Option<RotationState>> {
        self.prepare_cached(&format!("{ROTATION_SQL} AND t.id = ?1"))?
            .query_row([tenant], rotation_row)
            .optional()
    }

    fn set_rotation_policy(
        &self,
        tenant: &str,
        max_age_ms: Option<i64>,
        max_wraps: Option<u64>,
    ) -> Result<()> {
        self.execute(
            "UPDATE tenants SET rotate_after_ms = ?2, rotate_after_wraps = ?3 WHERE id = ?1",
            params![tenant, max_age_ms, max_wraps.map(|n| n as i64)],
        )?;
        Ok(())
    }
}
