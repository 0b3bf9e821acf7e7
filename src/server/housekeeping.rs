//! Housekeeping: the background jobs, one pass on a timer (and at once
//! when a shred asks for its purge). Each step's failure is logged and
//! retried at the next pass; a pass with no failure is recorded in the
//! metrics (`strongbox_housekeeping_last_success_timestamp_seconds`), so
//! an operator can alert on housekeeping that stopped succeeding.
//!
//! With several servers on one database, every server runs the steps
//! about itself (its owed WAL checkpoint, its key-use notes, its gauges),
//! and the one holding the background jobs' lease runs the jobs
//! (`vault::jobs::lease`); the others take the lease over when its holder
//! stops renewing it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Result;
use crate::metrics;
use crate::vault::Vault;

/// Records re-encrypted per transaction, and the pause between batches
/// that leaves the writer to live traffic (the rewrap paces itself:
/// `vault::jobs::pace`).
const REENCRYPT_BATCH: usize = 64;
const REENCRYPT_PAUSE: Duration = Duration::from_millis(10);

/// Runs passes every `every` until `stop`.
pub(super) async fn housekeeping(
    vault: Arc<Vault>,
    audit_retention: Option<Duration>,
    every: Duration,
    gauges: bool,
    mut stop: watch::Receiver<bool>,
) {
    // A claim outlives the gap between two passes, with a margin.
    vault.set_job_lease_ttl(every * 2 + Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = vault.purge_requested() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            if let Err(e) = vault.flush_kek_use().await {
                tracing::warn!(error = %e, "recording key-encryption key use failed");
            }
            if let Err(e) = vault.release_job_lease().await {
                tracing::warn!(error = %e, "giving up the background jobs lease failed; it expires");
            }
            return;
        }
        if pass(&vault, audit_retention, gauges).await {
            metrics::get().housekeeping_ok();
        }
    }
}

/// Logs a failed step; whether it succeeded.
fn step<T>(r: Result<T>, what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "{what} failed; will retry");
            None
        }
    }
}

/// One pass; whether every step succeeded.
/// With `gauges` (metrics served), the job gauges are counted too: a scan
/// of the data keys, so only when someone scrapes them.
async fn pass(vault: &Vault, audit_retention: Option<Duration>, gauges: bool) -> bool {
    let mut ok = step(vault.checkpoint_owed().await, "the owed WAL checkpoint").is_some();
    ok &= step(
        vault.flush_kek_use().await,
        "recording key-encryption key use",
    )
    .is_some();
    match step(
        vault.hold_job_lease().await,
        "renewing the background jobs lease",
    ) {
        Some(true) => ok &= jobs(vault, audit_retention).await,
        Some(false) => {}
        None => ok = false,
    }
    if gauges {
        ok &= step(
            vault.refresh_job_gauges().await,
            "refreshing the job gauges",
        )
        .is_some();
    }
    ok
}

/// The background jobs, on the server holding their lease; whether every
/// step succeeded.
async fn jobs(vault: &Vault, audit_retention: Option<Duration>) -> bool {
    let m = metrics::get();
    let mut ok = step(
        vault.run_due_tenant_shreds().await,
        "running due tenant shreds",
    )
    .is_some();
    match step(vault.purge_destroyed().await, "purge") {
        Some(0) => {}
        Some(n) => tracing::info!(rows = n, "purged ciphertext rows of destroyed keys"),
        None => ok = false,
    }
    match step(vault.rotate_due_keys().await, "automatic rotation") {
        Some(0) => {}
        Some(n) => tracing::info!(tenants = n, "key-encryption keys rotated by policy"),
        None => ok = false,
    }
    match step(
        vault
            .retention_sweep(crate::vault::SWEEP_BATCH, crate::vault::SWEEP_PAUSE)
            .await,
        "retention sweep",
    ) {
        Some(n) => {
            m.retention_expired.inc_by(n);
            m.retention_last_sweep.set(crate::now_ms() as f64 / 1000.0);
            if n > 0 {
                tracing::info!(records = n, "retention sweep: records expired");
            }
        }
        None => ok = false,
    }
    match step(vault.roll_erasure_epoch().await, "erasure epoch roll") {
        Some(roll) => {
            m.erasure_epochs_destroyed
                .inc_by(roll.destroyed.len() as u64);
        }
        None => ok = false,
    }
    match step(
        vault.reencrypt_pass(REENCRYPT_BATCH, REENCRYPT_PAUSE).await,
        "data-key re-encryption",
    ) {
        Some(0) => {}
        Some(n) => {
            m.reencrypted.inc_by(n as u64);
            tracing::info!(
                records = n,
                "data-key re-encryption: records moved to fresh keys"
            );
        }
        None => ok = false,
    }
    match step(vault.rewrap_pass().await, "rewrap") {
        Some((0, 0)) => {}
        Some((rewrapped, retired)) => {
            m.rewrapped.inc_by(rewrapped as u64);
            tracing::info!(
                rewrapped,
                retired,
                "key rotation: data keys rewrapped, old versions retired"
            );
        }
        None => ok = false,
    }
    if let Some(keep) = audit_retention {
        let before = crate::now_ms() - keep.as_millis() as i64;
        match step(vault.prune_audit(before).await, "audit prune") {
            Some(0) => {}
            Some(n) => tracing::info!(
                entries = n,
                "pruned audit entries past retention (at a checkpoint)"
            ),
            None => ok = false,
        }
    }
    ok
}
