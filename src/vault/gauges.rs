//! The metrics' gauges of background work, refreshed after each
//! housekeeping pass.

use super::Vault;
use crate::error::Result;
use crate::metrics;

impl Vault {
    /// Sets the gauges of work left: data keys to rewrap, re-encryption
    /// jobs, tenant shreds pending, the current erasure epoch.
    pub async fn refresh_job_gauges(&self) -> Result<()> {
        let counts = self.store.read(|tx| tx.job_counts()).await?;
        let m = metrics::get();
        m.rewrap_remaining.set(counts.rewrap_remaining);
        m.reencrypt_remaining.set(counts.reencrypt_jobs);
        m.tenant_shreds_pending.set(counts.tenant_shreds_pending);
        if let Some((epoch, _)) = self.keys.epochs().last() {
            m.erasure_epoch.set(*epoch as i64);
        }
        Ok(())
    }
}
