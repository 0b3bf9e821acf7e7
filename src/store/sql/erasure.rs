//! Erasure epochs: which epoch key each tenant key is wrapped under.

use super::{Db, OptionalExtension, params};

use crate::error::Result;
use crate::store::seam::*;

impl ErasureRows for Db {
    fn tenant_keys_outside_epoch(&self, epoch: u64, limit: usize) -> Result<Vec<TenantKeyWrap>> {
        let mut out: Vec<TenantKeyWrap> = self
            .prepare_cached(
                "SELECT tenant_id, version, wrapped, epoch FROM tenant_keks
                 WHERE retired_at IS NULL AND (epoch IS NULL OR epoch != ?1) LIMIT ?2",
            )?
            .query_map(params![epoch as i64, limit as i64], |r| {
                Ok(TenantKeyWrap {
                    tenant: r.get(0)?,
                    kek_version: Some(r.get(1)?),
                    wrapped: r.get(2)?,
                    epoch: r.get::<_, Option<i64>>(3)?.map(|e| e as u64),
                })
            })?
            .collect::<Result<_>>()?;
        let left = limit.saturating_sub(out.len());
        if left > 0 {
            let more = self
                .prepare_cached(
                    "SELECT id, wrapped_index_key, index_epoch FROM tenants
                     WHERE wrapped_index_key IS NOT NULL AND (index_epoch IS NULL OR index_epoch != ?1) LIMIT ?2",
                )?
                .query_map(params![epoch as i64, left as i64], |r| {
                    Ok(TenantKeyWrap {
                        tenant: r.get(0)?,
                        kek_version: None,
                        wrapped: r.get(1)?,
                        epoch: r.get::<_, Option<i64>>(2)?.map(|e| e as u64),
                    })
                })?
                .collect::<Result<Vec<_>>>()?;
            out.extend(more);
        }
        Ok(out)
    }

    fn set_tenant_key_wrap(
        &self,
        tenant: &str,
        kek_version: Option<u32>,
        wrapped: &[u8],
        epoch: Option<u64>,
    ) -> Result<()> {
        let epoch = epoch.map(|e| e as i64);
        match kek_version {
            Some(v) => self
                .prepare_cached(
                    "UPDATE tenant_keks SET wrapped = ?3, epoch = ?4 WHERE tenant_id = ?1 AND version = ?2 AND retired_at IS NULL",
                )?
                .execute(params![tenant, v, wrapped, epoch])?,
            None => self
                .prepare_cached(
                    "UPDATE tenants SET wrapped_index_key = ?2, index_epoch = ?3 WHERE id = ?1 AND wrapped_index_key IS NOT NULL",
                )?
                .execute(params![tenant, wrapped, epoch])?,
        };
        Ok(())
    }

    fn index_epoch(&self, tenant: &str) -> Result<Option<u64>> {
        Ok(self
            .prepare_cached("SELECT index_epoch FROM tenants WHERE id = ?1")?
            .query_row([tenant], |r| r.get::<_, Option<i64>>(0))
            .optional()?
            .flatten()
            .map(|e| e as u64))
    }

    fn epochs_in_use(&self) -> Result<Vec<u64>> {
        self
            .prepare_cached(
                "SELECT epoch FROM tenant_keks WHERE retired_at IS NULL AND epoch IS NOT NULL
                 UNION
                 SELECT index_epoch FROM tenants WHERE wrapped_index_key IS NOT NULL AND index_epoch IS NOT NULL
                 ORDER BY 1",
            )?
            .query_map((), |r| r.get::<_, i64>(0).map(|e| e as u64))?
            .collect::<Result<_>>()
    }
}
