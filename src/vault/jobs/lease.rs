//! The background jobs' lease: with several servers on one database, one
//! of them at a time runs the background jobs (tenant shreds, purges,
//! rotation by policy, the retention sweep, erasure epoch rolls,
//! re-encryption, rewrap, audit pruning).
//!
//! The lease is a row (`job_leases`), taken or renewed in one statement
//! inside a write unit, so two servers never both hold it. Its holder
//! renews it at every housekeeping pass and, while a pass runs, between
//! batches once half its life is gone; a holder that finds it lost stops
//! at the next batch. A holder that dies leaves the lease to expire: the
//! first server whose pass comes after that takes it and resumes the
//! work, whose progress is in the rows. A clean shutdown gives it up at
//! once. On SQLite, where one process has the database, no row is
//! written: that process runs the jobs.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::super::Vault;
use crate::error::Result;
use crate::now_ms;
use crate::store::Tx;

/// The lease's name in `job_leases`.
const JOBS: &str = "background-jobs";

/// Each server's presence on shared storage: a lease of its own,
/// `server/<holder>`, written when it opens the vault and renewed with the
/// jobs lease, so a root rotation can see which servers are live.
const PRESENCE: &str = "server/";

/// Each server's acknowledgement of the root generation it wraps and
/// unwraps under: a lease `root-generation/<n>/<holder>`, renewed with its
/// presence. A root rotation retires the replaced root key only once every
/// live server acknowledges the new generation.
const ROOT_ACK: &str = "root-generation/";

/// How long a presence written at open lasts before the first renewal.
const PRESENCE_AT_OPEN_MS: i64 = 60_000;

/// How long a server keeps the root key it replaced by following another
/// server's rotation, for reads whose snapshot predates it.
const FOLLOWED_ROOT_KEPT: Duration = Duration::from_secs(5);

/// Before the first claim: the vault runs its passes without a lease
/// (library use, as in the benches and unit tests).
const UNCLAIMED: i64 = 0;
/// Claimed, and another server holds it.
const NOT_HELD: i64 = -1;

/// This server's side of the lease.
pub(in crate::vault) struct JobLease {
    /// Who this server is in `job_leases` (host, process id, and a random
    /// part so a restarted process with the same id is a new holder).
    holder: String,
    /// How long a claim lasts, in ms.
    ttl_ms: AtomicI64,
    /// Until when this server holds it (ms), or `UNCLAIMED`/`NOT_HELD`.
    held_until: AtomicI64,
}

impl JobLease {
    pub(in crate::vault) fn new() -> JobLease {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        let random: [u8; 4] = crate::crypto::random_bytes();
        let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
        JobLease {
            holder: format!("{host}/{}/{random}", std::process::id()),
            ttl_ms: AtomicI64::new(60_000),
            held_until: AtomicI64::new(UNCLAIMED),
        }
    }
}

impl JobLease {
    /// Registers this server as live on shared storage, in the unit of
    /// work that opens the vault (before it serves).
    pub(in crate::vault) fn register(&self, conn: &dyn Tx, generation: u64) -> Result<()> {
        self.renew_presence(conn, generation, now_ms(), now_ms() + PRESENCE_AT_OPEN_MS)
    }

    /// Withdraws this server's presence and acknowledgement (a start that
    /// failed after `register`, a clean stop).
    pub(in crate::vault) fn unregister(&self, conn: &dyn Tx, generation: u64) -> Result<()> {
        conn.lease_release(&format!("{PRESENCE}{}", self.holder), &self.holder)?;
        conn.lease_release(&ack_name(generation, &self.holder), &self.holder)?;
        Ok(())
    }

    /// Claims this server's presence, and its acknowledgement of the root
    /// generation it has moved to, until `until`.
    fn renew_presence(&self, conn: &dyn Tx, generation: u64, now: i64, until: i64) -> Result<()> {
        let presence = format!("{PRESENCE}{}", self.holder);
        conn.lease_claim(&presence, &self.holder, now, until)?;
        conn.lease_claim(
            &ack_name(generation, &self.holder),
            &self.holder,
            now,
            until,
        )?;
        Ok(())
    }

    /// The other servers live on shared storage now (their holder ids).
    pub(in crate::vault) fn others_live(&self, conn: &dyn Tx) -> Result<Vec<String>> {
        Ok(conn
            .leases_live(PRESENCE, now_ms())?
            .into_iter()
            .filter(|h| *h != self.holder)
            .collect())
    }

    /// The other live servers that have not acknowledged root generation
    /// `generation` yet.
    pub(in crate::vault) fn behind_root(
        &self,
        conn: &dyn Tx,
        generation: u64,
    ) -> Result<Vec<String>> {
        let moved = conn.leases_live(&format!("{ROOT_ACK}{generation}/"), now_ms())?;
        Ok(self
            .others_live(conn)?
            .into_iter()
            .filter(|h| !moved.contains(h))
            .collect())
    }
}

fn ack_name(generation: u64, holder: &str) -> String {
    format!("{ROOT_ACK}{generation}/{holder}")
}

impl Vault {
    /// Who this server is as a holder of the background jobs' lease.
    pub fn job_lease_holder(&self) -> &str {
        &self.jobs.holder
    }

    /// Sets how long a claim on the jobs lease lasts: it must outlive the
    /// gap between two housekeeping passes (the server sets twice its
    /// interval and a second).
    pub fn set_job_lease_ttl(&self, ttl: Duration) {
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.jobs.ttl_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// For an offline command on shared storage (`command`: `audit
    /// accept-loss`, `key move-root`, `restore --apply-ledger`): refused
    /// while another server's presence on the database is live. A server
    /// killed without a clean stop counts until its presence expires.
    pub async fn refuse_while_servers_live(&self, command: &str) -> Result<()> {
        if !self.store.is_postgres() {
            return Ok(()); // the data directory's lock keeps servers out
        }
        let jobs = self.jobs.clone();
        let live = self.store.read(move |c| jobs.others_live(c)).await?;
        if live.is_empty() {
            return Ok(());
        }
        Err(crate::error::Error::FailedPrecondition(format!(
            "database_url: {} server(s) are live on this database ({}); stop every server before `strongbox {command}` (a server killed without a clean stop counts until its presence lease expires, at most two housekeeping intervals)",
            live.len(),
            live.join(", ")
        )))
    }

    /// Takes or renews the background jobs' lease; whether this server
    /// holds it. Logged when it changes hands.
    pub async fn hold_job_lease(&self) -> Result<bool> {
        if !self.store.is_postgres() {
            // SQLite: one process has the database (the data directory's
            // lock), so it runs the jobs; a server restarted after a crash
            // must not wait for its former self's claim to expire.
            self.jobs.held_until.store(UNCLAIMED, Ordering::Release);
            crate::metrics::get().job_lease_held.set(1);
            return Ok(true);
        }
        let now = now_ms();
        let until = now.saturating_add(self.jobs.ttl_ms.load(Ordering::Relaxed));
        let (jobs, keys) = (self.jobs.clone(), self.keys.clone());
        keys.forget_followed_root(FOLLOWED_ROOT_KEPT);
        let held = self
            .store
            .write(move |c| {
                // A root rotation on another server: move to it, and say
                // so. A server that cannot goes on being live but does not
                // acknowledge, so the old root is kept.
                let followed = keys.follow_root(c).err().map(|e| e.to_string());
                jobs.renew_presence(c, keys.root_generation(), now, until)?;
                Ok((c.lease_claim(JOBS, &jobs.holder, now, until)?, followed))
            })
            .await;
        let held = match held {
            Ok((held, followed)) => {
                if let Some(e) = followed {
                    tracing::warn!(error = %e, "cannot move to the vault's new root key");
                }
                held
            }
            Err(e) => {
                // Unknown whether the renewal landed: stop as if lost.
                self.jobs.held_until.store(NOT_HELD, Ordering::Release);
                return Err(e);
            }
        };
        let before = self
            .jobs
            .held_until
            .swap(if held { until } else { NOT_HELD }, Ordering::AcqRel);
        let had = before > 0;
        if held && !had {
            tracing::info!(holder = %self.jobs.holder, "took the background jobs lease: this server runs them");
        } else if !held && had {
            tracing::warn!(holder = %self.jobs.holder, "lost the background jobs lease: another server runs them");
        }
        crate::metrics::get().job_lease_held.set(i64::from(held));
        Ok(held)
    }

    /// Gives the lease up, if this server holds it, and its presence on
    /// shared storage (shutdown).
    pub async fn release_job_lease(&self) -> Result<()> {
        let held = self.jobs.held_until.swap(NOT_HELD, Ordering::AcqRel) > 0;
        if !self.store.is_postgres() {
            return Ok(());
        }
        let (jobs, holder) = (self.jobs.clone(), self.jobs.holder.clone());
        let generation = self.keys.root_generation();
        self.store
            .write(move |c| {
                jobs.unregister(c, generation)?;
                if held {
                    c.lease_release(JOBS, &holder)?;
                }
                Ok(())
            })
            .await?;
        crate::metrics::get().job_lease_held.set(0);
        Ok(())
    }

    /// Between two batches of a background pass: whether to go on. Not
    /// when the server is stopping, nor when the lease is lost; the lease
    /// is renewed here once half its life is gone.
    pub(in crate::vault) async fn keep_working(&self) -> Result<bool> {
        if self.is_stopping() {
            return Ok(false);
        }
        let until = self.jobs.held_until.load(Ordering::Acquire);
        if until == UNCLAIMED {
            return Ok(true);
        }
        let half = self.jobs.ttl_ms.load(Ordering::Relaxed) / 2;
        if until > 0 && now_ms() < until - half {
            return Ok(true);
        }
        self.hold_job_lease().await
    }
}
