//! What replaying the shred ledger on restore asks of storage.

use super::{Db, OptionalExtension, params};

use crate::error::Result;
use crate::store::seam::*;

impl ReplayRows for Db {
    fn subject_of_dek(&self, tenant: &str, dek: &str) -> Result<Option<Vec<u8>>> {
        self.prepare_cached("SELECT blind_id FROM subjects WHERE tenant_id = ?1 AND dek_id = ?2")?
            .query_row(params![tenant, dek], |r| r.get(0))
            .optional()
    }

    fn reencrypt_target(&self, old_dek: &str) -> Result<Option<String>> {
        self.prepare_cached("SELECT new_dek FROM reencrypt_jobs WHERE old_dek = ?1")?
            .query_row([old_dek], |r| r.get(0))
            .optional()
    }

    fn deks_under_kek(&self, tenant: &str, version: u32) -> Result<Vec<DekRow>> {
        let mut stmt = self.prepare_cached(
            "SELECT id, tenant_id, owner, kek_version, wrapped FROM data_keys
             WHERE tenant_id = ?1 AND kek_version = ?2 AND wrapped IS NOT NULL",
        )?;
        let rows = stmt.query_map(params![tenant, version], |r| {
            Ok(DekRow {
                id: r.get(0)?,
                tenant_id: r.get(1)?,
                owner: r.get(2)?,
                kek_version: r.get(3)?,
                wrapped: r.get(4)?,
            })
        })?;
        rows.collect::<Result<_>>()
    }

    fn kek_live(&self, tenant: &str, version: u32) -> Result<bool> {
        Ok(self
            .prepare_cached(
                "SELECT 1 FROM tenant_keks WHERE tenant_id = ?1 AND version = ?2 AND retired_at IS NULL",
            )?
            .query_row(params![tenant, version], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn destroyed_since(&self, since: i64) -> Result<DestroyedSince> {
        let deks = self
            .prepare_cached(
                "SELECT d.tenant_id, d.id FROM data_keys d JOIN tenants t ON t.id = d.tenant_id
                 WHERE d.destroyed_at >= ?1 AND t.state != 'shredded' ORDER BY d.destroyed_at",
            )?
            .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_>>()?;
        let tenants = self
            .prepare_cached("SELECT id FROM tenants WHERE state = 'shredded' AND shred_at >= ?1")?
            .query_map([since], |r| r.get(0))?
            .collect::<Result<_>>()?;
        let keks = self
            .prepare_cached("SELECT tenant_id, version FROM tenant_keks WHERE retired_at >= ?1")?
            .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_>>()?;
        Ok(DestroyedSince {
            deks,
            tenants,
            keks,
        })
    }
}
