//! The tenant-shred executor: destroys the keys of tenants whose scheduled
//! shred is due.

use std::sync::Arc;

use super::super::*;
use crate::audit::Call;
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::integrity;
use crate::now_ms;
use crate::store::TenantState;

impl Vault {
    /// Destroys every key of a tenant whose shred is due. Returns whether it
    /// ran (false if cancelled or not yet due).
    pub(in crate::vault) async fn execute_tenant_shred(&self, tenant: &TenantId) -> Result<bool> {
        let call = Arc::new(Call::system("tenant.shred.execute"));
        call.set_tenant(tenant.as_str());
        call.set_resource(format!("tenant:{tenant}"));
        let t = tenant.clone();
        let keys = self.keys.clone();
        let destroyed = self
            .mutate(&call, move |conn| {
                let now = now_ms();
                match integrity::tenant(conn, &keys, t.as_str())? {
                    Some(row)
                        if row.state == TenantState::ShredScheduled
                            && row.shred_at.is_some_and(|at| at <= now) =>
                    {
                        // A hold placed since the pre-check: skip this pass.
                        if holds::blocking(conn, &row, holds::Held::Tenant)?.is_some() {
                            return Ok(None);
                        }
                        let destroyed = conn.tenant_destroy(t.as_str(), now)?;
                        conn.holds_delete_tenant(t.as_str())?;
                        integrity::seal_tenant(conn, &keys, t.as_str())?;
                        Ok(Some(destroyed))
                    }
                    _ => Ok(None),
                }
            })
            .await?;
        let Some(destroyed) = destroyed else {
            return Ok(false);
        };
        self.keys.forget_tenant(tenant);
        self.auth_cache().forget_tenant(tenant);
        self.ledger_record(vec![crate::ledger::Destroyed::Tenant {
            tenant: tenant.as_str().to_owned(),
        }])
        .await?;
        tracing::info!(
            tenant = %tenant,
            kek_versions = ?destroyed.kek_versions,
            data_keys = destroyed.data_keys,
            "tenant shredded: every key destroyed"
        );
        self.after_shred().await;
        Ok(true)
    }

    /// Runs every tenant shred whose grace period has ended.
    pub async fn run_due_tenant_shreds(&self) -> Result<usize> {
        let due = self
            .store
            .read(|c| c.tenants_due_for_shred(now_ms()))
            .await?;
        let mut ran = 0;
        for id in due {
            let tenant = TenantId::parse(&id)
                .map_err(|_| Error::Internal("stored tenant id is invalid".into()))?;
            let resource = format!("tenant:{tenant}");
            if self
                .held_for_job("tenant.shred.execute", &id, None, resource)
                .await?
                .is_some()
            {
                continue;
            }
            if self.execute_tenant_shred(&tenant).await? {
                ran += 1;
            }
        }
        Ok(ran)
    }
}
