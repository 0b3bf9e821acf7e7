//! `strongbox restore`: a vault back from a backup file, offline, with
//! everything erased since the backup kept erased.
//!
//! 1. A marker file (`strongbox.restoring`) goes into the data directory
//!    first, synced: from then until the very end `serve` refuses the
//!    directory, so a half-restored vault never serves.
//! 2. The database is copied out of the backup; the root key must open the
//!    key it holds, and the backup's MAC must verify under it (a tampered
//!    file, or one from another vault, is refused and removed).
//! 3. The shred ledger is replayed (`Vault::apply_ledger`), the retention
//!    sweep runs, destroyed ciphertext is purged, and the restore is
//!    audited and anchored as a reset.
//! 4. The marker is removed.
//!
//! A crash at any step leaves the marker; running the same command again
//! starts over from the backup (every step is safe to repeat; the audit
//! anchor is reset to the unpacked backup's head before anything is
//! appended, so points a cut-off run anchored do not refuse the rerun). A directory
//! that already holds a database and no marker is never written.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{lock_data_dir, open_root};
use crate::blocking;
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::keyring::{self, Keyring};
use crate::store::{DB_FILE, Store};
use crate::vault::{AuditAnchor, RestoreApplied, Vault, backup};

/// Present in a data directory while a restore is under way.
pub const RESTORE_MARKER: &str = "strongbox.restoring";

/// What to do about erasures made after the backup.
#[derive(Clone, Debug)]
pub enum Ledger {
    /// Replay the shred ledger at this path.
    Apply(PathBuf),
    /// Restore without one: erased subjects and tenants may come back.
    Without,
}

/// A finished restore.
#[derive(Clone, Debug)]
pub struct Restored {
    /// When the backup's snapshot was taken (Unix ms).
    pub backup_time: i64,
    /// Whether an interrupted restore was found and started over.
    pub restarted: bool,
    /// What the ledger destroyed (none without one).
    pub applied: Option<RestoreApplied>,
}

/// Refuses a data directory a restore has not finished with.
pub fn refuse_if_restoring(data_dir: &Path) -> Result<()> {
    if data_dir.join(RESTORE_MARKER).exists() {
        return Err(Error::FailedPrecondition(format!(
            "data_dir: {} is in the middle of a restore (it holds {RESTORE_MARKER}): nothing is served until the shred ledger has been applied; run the same `strongbox restore` command again to finish it (docs/runbooks/backup-and-restore.md)",
            data_dir.display()
        )));
    }
    Ok(())
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Unavailable(format!("{}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Removes the database and its WAL and shared-memory files, if present.
fn remove_database(db: &Path) -> Result<()> {
    for path in [db.to_owned(), wal_of(db, "-wal"), wal_of(db, "-shm")] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(())
}

fn wal_of(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Restores backup `from` into `cfg.data_dir` (see the module docs).
pub async fn restore(cfg: &ServerConfig, from: &Path, ledger: Ledger) -> Result<Restored> {
    let dir = cfg.data_dir.clone();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io(&dir))?;
    let _lock = lock_data_dir(&dir)?;
    let db = dir.join(DB_FILE);
    let marker = dir.join(RESTORE_MARKER);
    let restarted = marker.exists();
    if !restarted && (db.exists() || wal_of(&db, "-wal").exists()) {
        return Err(Error::FailedPrecondition(format!(
            "data_dir: {} already holds a vault ({DB_FILE}); restore never overwrites a database: restore into an empty directory, or move the old database away first",
            dir.display()
        )));
    }
    if let Ledger::Apply(path) = &ledger
        && !path.exists()
    {
        return Err(Error::invalid(
            "ledger",
            format!(
                "{} does not exist: give the shred ledger the vault's server wrote (serve --shred-ledger)",
                path.display()
            ),
        ));
    }
    // 1. The marker, before any database is in place.
    let mut m = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&marker)
        .map_err(io(&marker))?;
    writeln!(m, "restoring from {}", from.display())
        .and_then(|()| m.sync_all())
        .map_err(io(&marker))?;
    sync_dir(&dir)?;

    // 2. The database out of the backup, checked.
    remove_database(&db)?;
    let (src, dest) = (from.to_owned(), db.clone());
    let backup_time = match blocking(move || backup::unpack(&src, &dest)).await {
        Ok(t) => t,
        Err(e) => {
            remove_database(&db)?;
            return Err(e);
        }
    };
    let path = db.clone();
    let store = blocking(move || Store::open(&path, 1)).await?;
    let checked = check_backup(cfg, &store, from).await;
    let root = match checked {
        Ok(root) => root,
        Err(e) => {
            drop(store);
            remove_database(&db)?;
            std::fs::remove_file(&marker).map_err(io(&marker))?;
            return Err(e);
        }
    };

    // 3. The ledger, the sweep, the audit entry.
    let keys = Arc::new(Keyring::new(root));
    let anchor = AuditAnchor::Accept(cfg.audit_anchor_path());
    let vault = Vault::open(store, keys, cfg.limits.clone(), anchor).await?;
    vault.anchor_unpacked_backup().await?;
    // A backup older than the erasure window cannot be opened: refused,
    // and nothing left behind.
    if let Err(e) = vault.open_erasure(cfg.erasure()?, Some(backup_time)).await {
        vault.stop_background();
        drop(vault);
        remove_database(&db)?;
        std::fs::remove_file(&marker).map_err(io(&marker))?;
        return Err(e);
    }
    let call = Arc::new(crate::audit::Call::system("backup.restore"));
    call.set_principal("offline: strongbox restore");
    let mut resource = format!("backup:{}", crate::vault::fmt_time(backup_time));
    let applied = match &ledger {
        Ledger::Apply(path) => {
            let a = vault.apply_ledger(path).await?;
            resource.push_str(&format!(
                " ledger:{} subjects:{} tenants:{} data-keys:{} keks:{} expired:{}",
                a.entries, a.subjects, a.tenants, a.data_keys, a.keks, a.expired
            ));
            Some(a)
        }
        Ledger::Without => {
            resource.push_str(" without-ledger");
            None
        }
    };
    call.set_resource(resource);
    vault.record_restore(&call).await?;
    vault.stop_background();
    drop(vault);

    // 4. Done: the directory serves again.
    std::fs::remove_file(&marker).map_err(io(&marker))?;
    sync_dir(&dir)?;
    Ok(Restored {
        backup_time,
        restarted,
        applied,
    })
}

/// The root key that opens the restored database, once the backup file's
/// MAC has verified under the key the database holds.
async fn check_backup(
    cfg: &ServerConfig,
    store: &Store,
    from: &Path,
) -> Result<Arc<dyn crate::rootkey::RootKeyProvider>> {
    if !store.read(keyring::has_root_check).await? {
        return Err(Error::Corrupt(
            "backup: the database in it has no root key check: it is not a Strongbox vault's backup"
                .into(),
        ));
    }
    let root = open_root(cfg, store).await?;
    let keys = Keyring::new(root.clone());
    let r = root.clone();
    if !store.read(move |c| keyring::root_matches(c, &*r)).await? {
        return Err(Error::FailedPrecondition(format!(
            "backup: the root key from {} does not open this backup: it was made by a vault with another root key",
            root.describe()
        )));
    }
    let audit = store.read(move |c| keys.audit_key(c)).await?;
    let key = backup::backup_key(&audit)?;
    let path = from.to_owned();
    blocking(move || backup::verify_file(&path, &key)).await?;
    Ok(root)
}
