//! The retention sweep: every record past its window becomes an expired
//! tombstone, in batches with a pause between them, one audit entry per
//! batch per tenant and category; a subject whose last live record goes
//! is erased like a shred, with a `retention` receipt. Held subjects and
//! held tenants are skipped. The rules are in `vault::retention`.

use std::sync::Arc;
use std::time::Duration;

use super::super::holds::{self, Held};
use super::super::retention::{DAY_MS, retentions};
use super::super::*;
use crate::audit::Call;
use crate::ids::TenantId;
use crate::store::After;
use crate::vault::shred_ledger::ledger_deks;

/// Records expired per transaction, and the pause between transactions
/// that leaves the writer to live traffic.
pub const SWEEP_BATCH: usize = 128;
pub const SWEEP_PAUSE: Duration = Duration::from_millis(20);

impl Vault {
    /// One sweep over every active tenant: expires what is past its
    /// window. Returns the records expired.
    pub async fn retention_sweep(&self, batch: usize, pause: Duration) -> Result<u64> {
        let tenants = self.store.read(|tx| tx.active_tenant_ids()).await?;
        let mut expired = 0;
        'tenants: for t in tenants {
            let tenant = TenantId::parse(&t)
                .map_err(|_| Error::Internal("stored tenant id is invalid".into()))?;
            let keys = self.keys.clone();
            let tid = tenant.clone();
            let plan = self
                .store
                .read(move |conn| {
                    let row = integrity::tenant(conn, &keys, tid.as_str())?;
                    let held = match &row {
                        Some(row) => holds::blocking(conn, row, Held::Owner(&[]))?
                            .filter(|h| h.owner.is_none()),
                        None => None,
                    };
                    Ok((retentions(conn, tid.as_str())?, held.is_some()))
                })
                .await?;
            let (retentions, tenant_held) = plan;
            let due: Vec<_> = retentions
                .iter()
                .filter_map(|r| r.effective().map(|e| (r.category.clone(), e)))
                .collect();
            if due.is_empty() {
                continue;
            }
            if tenant_held {
                let _ = self
                    .held_for_job(
                        "retention.expire",
                        &t,
                        None,
                        format!("retention:tenant:{t}"),
                    )
                    .await?;
                continue;
            }
            self.report_held_subjects(&tenant, &due).await?;
            for (category, (keep, after)) in due {
                loop {
                    let n = self
                        .expire_batch(&tenant, &category, keep, after, batch)
                        .await?;
                    expired += n as u64;
                    if n < batch {
                        break;
                    }
                    if !self.keep_working().await? {
                        break 'tenants;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
        if expired > 0 {
            // The expired values' pages leave the WAL too.
            self.after_shred().await;
        }
        Ok(expired)
    }

    /// Audits (once per hold) that a held subject's due records were not
    /// expired.
    pub(in crate::vault) async fn report_held_subjects(
        &self,
        tenant: &TenantId,
        due: &[(String, (i64, After))],
    ) -> Result<()> {
        let keys = self.keys.clone();
        let (t, due_v) = (tenant.clone(), due.to_vec());
        let held: Vec<Vec<u8>> = self
            .store
            .read(move |conn| {
                let Some(row) = integrity::tenant(conn, &keys, t.as_str())? else {
                    return Ok(Vec::new());
                };
                if row.holds_digest.is_none() {
                    return Ok(Vec::new());
                }
                let now = now_ms();
                let mut held = Vec::new();
                for h in holds::checked_holds(conn, &row)? {
                    let Some(owner) = h.owner else { continue };
                    for (cat, (keep, after)) in &due_v {
                        if conn.owner_has_due(t.as_str(), &owner, cat, *after, now - keep)? {
                            held.push(owner.clone());
                            break;
                        }
                    }
                }
                Ok(held)
            })
            .await?;
        for owner in held {
            let resource = format!("retention:subject:{}", hex::encode(&owner));
            self.held_for_job("retention.expire", tenant.as_str(), Some(owner), resource)
                .await?;
        }
        Ok(())
    }

    /// Expires up to `batch` records of one (tenant, category) in one
    /// transaction with its audit entry; erases subjects left with none.
    pub(in crate::vault) async fn expire_batch(
        &self,
        tenant: &TenantId,
        category: &str,
        keep: i64,
        after: After,
        batch: usize,
    ) -> Result<usize> {
        let call = Arc::new(Call::system("retention.expire"));
        call.set_tenant(tenant.as_str());
        let (keys, t, cat, c) = (
            self.keys.clone(),
            tenant.clone(),
            category.to_owned(),
            call.clone(),
        );
        let (n, erased, destroyed) = self
            .mutate(&call, move |conn| {
                let now = now_ms();
                let row = active_tenant(conn, &keys, &t)?;
                // Checks the holds digest; a tenant-wide hold (placed since
                // the plan) stops the batch, held subjects are left out below.
                if holds::blocking(conn, &row, Held::Owner(&[]))?.is_some() {
                    return Ok((0, 0, Vec::new()));
                }
                let rows = conn.retention_due(t.as_str(), &cat, after, now - keep, batch)?;
                let mut owners: Vec<Vec<u8>> = Vec::new();
                for (rowid, owner) in &rows {
                    conn.record_expire(*rowid, now)?;
                    if !owner.is_empty() && !owners.contains(owner) {
                        owners.push(owner.clone());
                    }
                }
                let mut destroyed = Vec::new();
                let mut erased = 0;
                for owner in &owners {
                    if !conn.owner_has_live_records(t.as_str(), owner)? {
                        let receipt =
                            erase_subject(conn, &keys, t.as_str(), owner, ShredReason::Retention)?;
                        destroyed.extend(receipt.destroyed_key_ids);
                        erased += 1;
                    }
                }
                if !rows.is_empty() {
                    conn.retention_history_add(t.as_str(), &cat, now / DAY_MS, rows.len() as u64)?;
                }
                c.set_resource(format!(
                    "retention:{cat} expired:{} subjects-erased:{erased}",
                    rows.len()
                ));
                Ok((rows.len(), erased, destroyed))
            })
            .await?;
        for id in &destroyed {
            self.keys.forget_dek(id);
        }
        self.ledger_record(ledger_deks(tenant.as_str(), &destroyed))
            .await?;
        if n > 0 {
            tracing::info!(tenant = %tenant, category, records = n, subjects_erased = erased, "retention: records expired");
        }
        Ok(n)
    }
}
