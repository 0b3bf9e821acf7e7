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

/// The data directory, made (0700) if missing, and its lock.
fn made_and_locked(dir: &Path) -> Result<std::fs::File> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    lock_data_dir(dir)
}

fn check_ledger(ledger: &Ledger) -> Result<()> {
    if let Ledger::Apply(path) = ledger
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
    Ok(())
}

/// Restores backup `from` into `cfg.data_dir`, or with `database_url`
/// into that PostgreSQL database (see the module docs).
pub async fn restore(cfg: &ServerConfig, from: &Path, ledger: Ledger) -> Result<Restored> {
    if cfg.database_url.is_some() {
        return restore_postgres(cfg, from, ledger).await;
    }
    let dir = cfg.data_dir.clone();
    let _lock = made_and_locked(&dir)?;
    let db = dir.join(DB_FILE);
    let marker = dir.join(RESTORE_MARKER);
    let restarted = marker.exists();
    if !restarted && (db.exists() || wal_of(&db, "-wal").exists()) {
        return Err(Error::FailedPrecondition(format!(
            "data_dir: {} already holds a vault ({DB_FILE}); restore never overwrites a database: restore into an empty directory, or move the old database away first",
            dir.display()
        )));
    }
    check_ledger(&ledger)?;
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
    let applied = finish(&vault, backup_label(backup_time), &ledger).await?;
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

fn backup_label(time: i64) -> String {
    format!("backup:{}", crate::vault::fmt_time(time))
}

/// `strongbox restore --apply-ledger`: the database was brought back by
/// other means (a PostgreSQL point-in-time recovery or base backup, a
/// file-system snapshot of the data directory), so keys destroyed since
/// that point are back in it. Replays the shred ledger on the database as
/// it is, resets the audit anchor to its trail, and records the replay
/// in the audit trail. Run it before any server serves the database.
pub async fn apply_ledger_in_place(cfg: &ServerConfig, ledger: &Path) -> Result<RestoreApplied> {
    let ledger = Ledger::Apply(ledger.to_owned());
    check_ledger(&ledger)?;
    let _lock = lock_data_dir(&cfg.data_dir)?;
    refuse_if_restoring(&cfg.data_dir)?;
    let database = cfg
        .database_url
        .clone()
        .map(|u| (u, cfg.database_ca.clone()));
    let store =
        super::offline::open_existing(&cfg.data_dir, database, "to replay the ledger on").await?;
    let root = open_root(cfg, &store).await?;
    let keys = Arc::new(Keyring::new(root));
    let anchor = AuditAnchor::Accept(cfg.audit_anchor_path());
    let vault = Vault::open(store, keys, cfg.limits.clone(), anchor).await?;
    let applied = async {
        vault
            .refuse_while_servers_live("restore --apply-ledger")
            .await?;
        vault.anchor_unpacked_backup().await?;
        vault.open_erasure(cfg.erasure()?, None).await?;
        finish(&vault, "in-place".into(), &ledger).await
    }
    .await;
    vault.release_job_lease().await?;
    applied?.ok_or_else(|| Error::Internal("the ledger was not applied".into()))
}

/// The last steps on the restored vault: the ledger replayed, the
/// restore audited and anchored as a reset, background work stopped.
async fn finish(vault: &Vault, from: String, ledger: &Ledger) -> Result<Option<RestoreApplied>> {
    let call = Arc::new(crate::audit::Call::system("backup.restore"));
    call.set_principal("offline: strongbox restore");
    let mut resource = from;
    let applied = match ledger {
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
    Ok(applied)
}

/// Restores backup `from` into the PostgreSQL database of
/// `cfg.database_url`, which must be empty (a new database) or hold a
/// restore cut short: restore never overwrites a vault. The backup's
/// SQLite snapshot is unpacked beside the data directory's lock and
/// checked as on SQLite, then loaded in one transaction that sets the
/// database's restore marker (no server serves it meanwhile); the ledger
/// and the audit entry follow, and the marker is cleared last. A crash
/// anywhere leaves the marker: the same command starts over.
async fn restore_postgres(cfg: &ServerConfig, from: &Path, ledger: Ledger) -> Result<Restored> {
    let dir = cfg.data_dir.clone();
    let _lock = made_and_locked(&dir)?;
    check_ledger(&ledger)?;
    let url = cfg
        .database_url
        .clone()
        .ok_or_else(|| Error::Internal("no database".into()))?;
    let ca = cfg.database_ca.clone();
    let store = blocking(move || Store::open_postgres(url.expose(), ca.as_deref(), 1)).await?;
    let restarted = match store.holds_vault().await? {
        Some(false) => {
            return Err(Error::FailedPrecondition(
                "database_url: the database already holds a vault; restore never overwrites one: restore into a new, empty database (createdb), then point the servers at it".into(),
            ));
        }
        Some(true) => true,
        None => false,
    };
    let snap = dir.join("restore-snapshot.db");
    remove_database(&snap)?;
    let loaded = async {
        let (src, dest) = (from.to_owned(), snap.clone());
        let time = blocking(move || backup::unpack(&src, &dest)).await?;
        let path = snap.clone();
        let unpacked = blocking(move || Store::open(&path, 1)).await?;
        let root = check_backup(cfg, &unpacked, from).await?;
        drop(unpacked);
        store.load_snapshot(snap.clone()).await?;
        Ok::<_, Error>((time, root))
    }
    .await;
    remove_database(&snap)?;
    let (backup_time, root) = loaded?;

    let keys = Arc::new(Keyring::new(root));
    let anchor = AuditAnchor::Accept(cfg.audit_anchor_path());
    let vault = Vault::open(store.clone(), keys, cfg.limits.clone(), anchor).await?;
    vault.anchor_unpacked_backup().await?;
    vault
        .open_erasure(cfg.erasure()?, Some(backup_time))
        .await?;
    let applied = finish(&vault, backup_label(backup_time), &ledger).await?;
    drop(vault);
    store.restore_finished().await?;
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
