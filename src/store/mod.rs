//! SQLite storage: one writer thread that group-commits, a pool of read
//! connections, and the schema. rusqlite is synchronous, so no SQLite call
//! runs on the async executor's threads: writes go to the writer thread over
//! a channel, reads run under `spawn_blocking`.
//!
//! Every connection runs WAL with `synchronous=FULL` (a commit is on disk
//! when acknowledged) and `secure_delete=ON` (deleted bytes are overwritten,
//! which crypto-shredding depends on).

pub mod seam;
mod sqlite;
#[cfg(test)]
pub(crate) use sqlite::faults;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
pub use seam::*;

/// What use cases import to call storage: the seam's traits.
pub mod prelude {
    pub use super::seam::{
        AuditRows, ErasureRows, GaugeRows, HoldRows, KeyRows, PrincipalRows, RecordRows,
        ReencryptRows, ReplayRows, RetentionRows, Savepoints, SubjectRows, TenantRows, Tx,
    };
}
use sqlite::{schema, writer::Writer};

/// The file name of the database inside the data directory.
pub const DB_FILE: &str = "strongbox.db";

/// How long a WAL checkpoint may wait for readers and the writer. A
/// TRUNCATE checkpoint that waits blocks new writers meanwhile, so it gets
/// a small budget and is retried later rather than waited out.
const CHECKPOINT_BUDGET: Duration = Duration::from_millis(25);

/// Handle to the database: cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: Writer,
    readers: Arc<ReadPool>,
    checkpointer: Arc<Checkpointer>,
    /// The database file (snapshots are made beside it).
    path: Arc<std::path::PathBuf>,
}

/// Its own connection for TRUNCATE checkpoints, off the writer thread, and
/// whether one is still owed (a shred's destroyed bytes may be in the WAL).
struct Checkpointer {
    conn: Mutex<Connection>,
    pending: std::sync::atomic::AtomicBool,
}

struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    slots: Arc<Semaphore>,
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA secure_delete = ON;
         PRAGMA foreign_keys = ON;",
    )?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if mode != "wal" {
        return Err(Error::Unavailable(format!(
            "storage: {} does not support WAL (journal_mode is {mode})",
            path.display()
        )));
    }
    Ok(conn)
}

/// Creates the database file readable by its owner only; SQLite gives the
/// WAL and shared-memory files the same mode.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Unavailable(format!(
            "storage: {}: {e}",
            path.display()
        ))),
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, migrates it, and
    /// starts the writer thread and `readers` read connections.
    pub fn open(path: &Path, readers: usize) -> Result<Self> {
        create_private(path)?;
        let mut conn = open_connection(path)?;
        schema::migrate(&mut conn)?;
        let readers = readers.max(1);
        let idle = (0..readers)
            .map(|_| open_connection(path))
            .collect::<Result<Vec<_>>>()?;
        let checkpoint_conn = open_connection(path)?;
        checkpoint_conn.busy_timeout(CHECKPOINT_BUDGET)?;
        Ok(Store {
            writer: Writer::spawn(conn)?,
            readers: Arc::new(ReadPool {
                idle: Mutex::new(idle),
                slots: Arc::new(Semaphore::new(readers)),
            }),
            checkpointer: Arc::new(Checkpointer {
                conn: Mutex::new(checkpoint_conn),
                pending: std::sync::atomic::AtomicBool::new(false),
            }),
            path: Arc::new(path.to_owned()),
        })
    }

    /// Stops the writer thread, as a crash of it would (tests only).
    #[cfg(test)]
    pub async fn stop_writer(&self) {
        self.writer.stop().await
    }

    /// Whether the writer thread is running (health).
    pub fn writer_alive(&self) -> bool {
        self.writer.is_alive()
    }

    /// Runs `f` in the writer's current transaction (inside its own
    /// savepoint) and resolves once the transaction is durably committed.
    /// If `f` fails, its changes are rolled back and the others' kept.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&dyn Tx) -> Result<T> + Send + 'static,
    {
        self.writer.write(move |conn| f(conn)).await
    }

    /// Truncates the WAL so that bytes overwritten by a shred are gone from
    /// it too, on its own connection (never on the writer thread), waiting
    /// at most `CHECKPOINT_BUDGET` for readers. If a reader still holds an
    /// older snapshot it gives up, logs that the WAL still holds destroyed
    /// bytes, and leaves the checkpoint owed: [`Store::checkpoint_owed`]
    /// (housekeeping) retries it. Returns whether the WAL was truncated.
    pub async fn checkpoint(&self) -> Result<bool> {
        self.checkpointer
            .pending
            .store(true, std::sync::atomic::Ordering::Release);
        self.try_checkpoint().await
    }

    /// Retries an owed checkpoint, if any; returns whether none is owed now.
    pub async fn checkpoint_owed(&self) -> Result<bool> {
        if !self
            .checkpointer
            .pending
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(true);
        }
        self.try_checkpoint().await
    }

    async fn try_checkpoint(&self) -> Result<bool> {
        let cp = self.checkpointer.clone();
        let done = tokio::task::spawn_blocking(move || -> Result<bool> {
            let conn = cp
                .conn
                .lock()
                .map_err(|_| Error::Internal("checkpoint connection lock poisoned".into()))?;
            let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            let done = busy == 0;
            if done {
                cp.pending
                    .store(false, std::sync::atomic::Ordering::Release);
            }
            Ok(done)
        })
        .await
        .map_err(|e| Error::Internal(format!("checkpoint task failed: {e}")))?;
        let done = match done {
            Err(Error::Unavailable(_)) => false,
            other => other?,
        };
        if !done {
            tracing::warn!(
                "a reader holds an older snapshot: the WAL still holds destroyed bytes until the next checkpoint (housekeeping retries it)"
            );
        }
        Ok(done)
    }

    /// A new, empty, private (0600) file beside the database, for a
    /// snapshot.
    pub fn scratch_file(&self) -> Result<std::path::PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        let dest = self.path.with_extension(format!(
            "snapshot-{}.tmp",
            hex::encode(crate::crypto::random_bytes::<8>())
        ));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .map_err(|e| Error::Unavailable(format!("snapshot file {}: {e}", dest.display())))?;
        Ok(dest)
    }

    /// Writes a consistent copy of the database into `dest` (`VACUUM INTO`,
    /// on a read connection: one read snapshot, so writers go on; it only
    /// keeps the WAL from being checkpointed past that snapshot meanwhile).
    /// `dest` must be empty.
    pub async fn snapshot_to(&self, dest: std::path::PathBuf) -> Result<()> {
        self.on_reader(move |conn| {
            let dest = dest
                .to_str()
                .ok_or_else(|| Error::Internal("the snapshot's path is not UTF-8".into()))?;
            // The copy is a scratch file, streamed and removed: syncing it
            // to disk would only make the writer's fsyncs queue behind a
            // whole database's worth of writes. This connection only reads
            // otherwise; it gets its setting back either way.
            conn.execute_batch("PRAGMA synchronous = OFF")?;
            let copied = conn.execute("VACUUM INTO ?1", [dest]);
            conn.execute_batch("PRAGMA synchronous = FULL")?;
            copied?;
            Ok(())
        })
        .await
    }

    /// Runs `f` on a read connection inside one read transaction (a
    /// consistent snapshot), off the async executor.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Tx) -> Result<T> + Send + 'static,
    {
        self.on_reader(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let snapshot: &Connection = &tx;
            let out = f(snapshot);
            tx.finish()?;
            out
        })
        .await
    }

    /// Runs `f` on an idle read connection, off the async executor; the
    /// connection goes back to the pool whatever `f` does (a panic too).
    async fn on_reader<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let waited = std::time::Instant::now();
        let slot = self
            .readers
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("storage: read pool closed".into()))?;
        crate::metrics::get()
            .read_wait_seconds
            .observe(waited.elapsed().as_secs_f64());
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let conn = pool
                .idle
                .lock()
                .map_err(|_| Error::Internal("read pool lock poisoned".into()))?
                .pop()
                .ok_or_else(|| Error::Internal("read pool: a slot without a connection".into()))?;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&conn)))
                .unwrap_or_else(|_| Err(Error::Internal("a read panicked".into())));
            if let Ok(mut idle) = pool.idle.lock() {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")))?
    }
}
