//! The use-case layer: every operation Strongbox offers, joining `authz`
//! (each takes the [`Permit`] for its action), `keyring`, `crypto` and
//! `store`. Each mutation is one `Store::write` unit of work, so its checks,
//! its changes and its audit entry commit atomically. Nothing here knows
//! about gRPC, SQL or a storage driver: storage is the seam of
//! `crate::store::seam`.
//!
//! One module per concept: `tenants`, `principals` (and their API keys),
//! `auth` (verifying API keys), `records`, `subjects` (export, access
//! history, shredding one person), `receipts`, `keys` (rotation),
//! `holds`, `retention`, `backup` and `restore`, `audit_trail`. Background
//! work the housekeeping loop drives is in `jobs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::audit::{self};
use crate::error::{Error, Result};
use crate::integrity;
use crate::keyring::{self, Keyring};
use crate::now_ms;
use crate::store::Store;
use crate::store::prelude::*;

mod admin_recovery;
mod audit_trail;
mod auth;
pub mod backup;
mod erasure;
mod gauges;
mod holds;
mod jobs;
mod keys;
mod principals;
mod receipts;
mod record_check;
mod records;
mod restore;
mod retention;
mod shred_ledger;
mod subjects;
mod tenants;

use auth::*;
pub use erasure::{EpochRoll, ErasureSettings};
pub use holds::{HoldInfo, parse_reason as parse_hold_reason};
pub use jobs::{SWEEP_BATCH, SWEEP_PAUSE};
pub use keys::*;
pub use principals::*;
pub use receipts::*;
pub use record_check::RecordCheck;
pub use records::*;
pub use restore::Applied as RestoreApplied;
pub use retention::{Preview as RetentionPreview, Retention};
pub use subjects::*;
pub use tenants::*;

/// Limits and defaults the use cases enforce.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest record value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Grace period of a tenant shred when the caller names none.
    pub default_shred_grace: Duration,
    /// A tenant KEK older than this is rotated automatically (unless the
    /// tenant's own policy says otherwise).
    pub rotation_max_age: Duration,
    /// ...or once it has made this many encryptions (well below 2^32).
    pub rotation_max_encryptions: u64,
    /// How long after an operator asks for a break-glass admin recovery
    /// it takes effect (the tenant's admins can call it off meanwhile).
    pub admin_recovery_delay: Duration,
    /// Refuse an operator-created admin unless its key comes from an
    /// enrolment (`strongbox enrol`), so the operator never holds one.
    pub require_admin_enrolment: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_bytes: 1 << 20,
            default_shred_grace: Duration::from_secs(7 * 24 * 3600),
            rotation_max_age: Duration::from_secs(90 * 24 * 3600),
            rotation_max_encryptions: 1 << 30,
            admin_recovery_delay: Duration::from_secs(24 * 3600),
            require_admin_enrolment: false,
        }
    }
}

pub use crate::api_key::ApiKey;

/// The vault: storage, keys and limits.
pub struct Vault {
    store: Store,
    keys: Arc<Keyring>,
    limits: Limits,
    purge_wanted: Notify,
    auth_cache: std::sync::Mutex<AuthCache>,
    root_rotation: tokio::sync::Mutex<()>,
    /// Held while key-use notes move from memory to the database, and
    /// while `key status` reads both.
    key_notes_flush: tokio::sync::Mutex<()>,
    /// The audit chain's anchor outside the database (none: not anchored,
    /// for library use such as the benches).
    anchor: Option<Arc<audit::anchor::Anchor>>,
    anchor_wanted: Notify,
    /// The audit lane this server appends to (0 on SQLite; a new one per
    /// run on PostgreSQL).
    lane: audit::Lane,
    /// The other lanes' last entries this server's last witness named.
    witnessed: std::sync::Mutex<std::collections::HashMap<audit::Lane, u64>>,
    /// Set when the server shuts down: background passes stop between
    /// batches (their progress is in the rows) instead of holding it up.
    stopping: std::sync::atomic::AtomicBool,
    /// Background jobs already reported as blocked by a legal hold.
    held_reported: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The shred ledger, once opened (the server opens it; library use
    /// may run without).
    ledger: std::sync::OnceLock<Arc<crate::ledger::Ledger>>,
    /// Erasure epochs, once opened (the server opens them).
    erasure: std::sync::OnceLock<ErasureSettings>,
    /// Which server runs the background jobs, and this server's presence
    /// on shared storage.
    jobs: Arc<jobs::lease::JobLease>,
}

/// Where a vault anchors its audit chain, and how strictly it opens it.
#[derive(Clone, Debug)]
pub enum AuditAnchor {
    /// No anchor (library use: benches, unit tests).
    None,
    /// The anchor file; the chain must match it, or the vault does not open.
    Check(std::path::PathBuf),
    /// The anchor file, for `strongbox audit accept-loss`: the chain is
    /// known to be broken; an anchor file that is itself broken is moved
    /// aside and started afresh.
    Accept(std::path::PathBuf),
}

pub fn fmt_time(unix_ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!("{}: {e}", path.display()))
}

/// Writes a secret to a new file readable by its owner only.
fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

impl Vault {
    /// Opens the vault over `store` with keys under `keys`: checks the root
    /// key against the database and makes the vault-wide keys on first start.
    pub async fn open(
        store: Store,
        keys: Arc<Keyring>,
        limits: Limits,
        anchor: AuditAnchor,
    ) -> Result<Arc<Self>> {
        let shared = store.is_postgres();
        keys.set_shared(shared);
        let k = keys.clone();
        let jobs = Arc::new(jobs::lease::JobLease::new());
        let j = jobs.clone();
        let lane = store
            .write(move |conn| {
                k.check_root(conn)?;
                if shared {
                    j.register(conn, k.root_generation())?;
                }
                k.ensure_vault_keys(conn)?;
                integrity::seal_unsealed(conn, &k)?;
                conn.audit_open_lane(now_ms())
            })
            .await?;
        let anchor = match anchor {
            AuditAnchor::None => Ok(None),
            AuditAnchor::Check(path) => audit_trail::open_anchor(&store, &keys, path, lane)
                .await
                .map(Some),
            AuditAnchor::Accept(path) => {
                let k = keys.clone();
                match store.read(move |c| k.audit_key(c)).await {
                    Ok(key) => {
                        crate::blocking(move || audit_trail::open_anchor_for_repair(&key, &path))
                            .await
                            .map(Some)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let anchor = match anchor {
            Ok(anchor) => anchor,
            Err(e) => {
                // A start refused here is not a live server.
                if shared {
                    let (j, generation) = (jobs.clone(), keys.root_generation());
                    let _ = store.write(move |c| j.unregister(c, generation)).await;
                }
                return Err(e);
            }
        };
        Ok(Arc::new(Vault {
            store,
            keys,
            limits,
            purge_wanted: Notify::new(),
            auth_cache: std::sync::Mutex::new(AuthCache::default()),
            root_rotation: tokio::sync::Mutex::new(()),
            key_notes_flush: tokio::sync::Mutex::new(()),
            anchor: anchor.map(Arc::new),
            anchor_wanted: Notify::new(),
            lane,
            witnessed: std::sync::Mutex::new(std::collections::HashMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            held_reported: std::sync::Mutex::new(std::collections::HashSet::new()),
            ledger: std::sync::OnceLock::new(),
            erasure: std::sync::OnceLock::new(),
            jobs,
        }))
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keys
    }

    // ----- housekeeping --------------------------------------------------

    /// Asks background passes to stop between batches (shutdown).
    pub fn stop_background(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the vault can serve: the writer thread runs, storage commits
    /// (a durable write), and the root key answers.
    pub async fn health(&self) -> Result<()> {
        if !self.store.writer_alive() {
            return Err(Error::Unavailable("storage: the writer has stopped".into()));
        }
        let probe = self
            .store
            .write(|c| c.meta_put("health_probe", &now_ms().to_be_bytes()));
        tokio::time::timeout(Duration::from_secs(5), probe)
            .await
            .map_err(|_| Error::Unavailable("storage: a commit took over 5 s".into()))??;
        let keys = self.keys.clone();
        match self
            .store
            .read(move |c| {
                keys.follow_root(c)?;
                keyring::root_matches(c, &*keys.root())
            })
            .await?
        {
            true => Ok(()),
            false => Err(Error::Corrupt(
                "the root key does not open this vault".into(),
            )),
        }
    }

    /// Stops the writer thread, as a crash of it would (tests only).
    #[cfg(test)]
    pub async fn stop_writer(&self) {
        self.store.stop_writer().await
    }

    /// Retries a WAL checkpoint a reader held off; returns whether the WAL
    /// is free of destroyed bytes now (none owed).
    pub async fn checkpoint_owed(&self) -> Result<bool> {
        self.store.checkpoint_owed().await
    }
}
