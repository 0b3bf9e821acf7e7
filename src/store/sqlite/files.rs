//! The SQLite database file: its connections (WAL, `synchronous=FULL`,
//! `secure_delete=ON`), the writer's connection, the read pool, the
//! checkpointer, and snapshots for backups.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::schema;
use crate::error::{Error, Result};
use crate::store::pool::Pool;
use crate::store::sql::{Conn, Db};
use crate::store::writer::WriteConn;
use crate::store::{Backend, Store, Tx};

/// How long a WAL checkpoint may wait for readers and the writer. A
/// TRUNCATE checkpoint that waits blocks new writers meanwhile, so it gets
/// a small budget and is retried later rather than waited out.
const CHECKPOINT_BUDGET: Duration = Duration::from_millis(25);

/// The file's read connections, checkpointer and path.
pub(crate) struct Files {
    readers: Arc<Pool<Db>>,
    checkpointer: Arc<Checkpointer>,
    /// The database file (snapshots are made beside it).
    path: PathBuf,
}

/// Its own connection for TRUNCATE checkpoints, off the writer thread, and
/// whether one is still owed (a shred's destroyed bytes may be in the WAL).
struct Checkpointer {
    conn: Mutex<Connection>,
    pending: AtomicBool,
}

/// Prepared statements kept per connection (the server runs about 150
/// distinct ones).
const STATEMENT_CACHE: usize = 256;

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Every statement the server runs stays prepared: rusqlite's default
    // of 16 is fewer than a put and its audit entry use, and an evicted
    // statement is parsed and planned again on its next use.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Savepoints journal each page they change before changing it; every
    // unit of work runs in one, so with the default temp store that is a
    // write(2) to a temporary file per page per unit (15% of a put's CPU).
    // In memory it is a copy, and no page of ciphertext reaches a
    // temporary file.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA secure_delete = ON;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
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

/// The writer's connection: `BEGIN IMMEDIATE` per batch.
pub(crate) struct Writing(Db);

/// Opens (creating and migrating if needed) the database at `path` for
/// writing.
pub(crate) fn write_conn(path: &Path) -> Result<Writing> {
    create_private(path)?;
    let mut conn = open_connection(path)?;
    schema::migrate(&mut conn)?;
    Ok(Writing(Db::new(Conn::Sqlite(conn))))
}

impl WriteConn for Writing {
    fn tx(&self) -> &dyn Tx {
        &self.0
    }

    fn begin(&mut self) -> Result<()> {
        self.0.control("BEGIN IMMEDIATE")
    }

    fn commit(&mut self) -> Result<()> {
        self.0.control("COMMIT")
    }

    fn rollback(&mut self) {
        let _ = self.0.control("ROLLBACK");
    }

    fn savepoint(&mut self) -> Result<()> {
        self.0.control("SAVEPOINT job")
    }

    fn release(&mut self) -> Result<()> {
        self.0.control("RELEASE job")
    }

    fn rollback_to(&mut self) -> Result<()> {
        self.0.control("ROLLBACK TO job")?;
        self.0.control("RELEASE job")
    }
}

impl Files {
    /// Opens the file's writer connection, `readers` read connections and
    /// the checkpointer.
    pub(crate) fn open(path: &Path, readers: usize) -> Result<(Writing, Files)> {
        let writing = write_conn(path)?;
        let idle = (0..readers.max(1))
            .map(|_| open_connection(path).map(|c| Db::new(Conn::Sqlite(c))))
            .collect::<Result<Vec<_>>>()?;
        let checkpoint_conn = open_connection(path)?;
        checkpoint_conn.busy_timeout(CHECKPOINT_BUDGET)?;
        Ok((
            writing,
            Files {
                readers: Pool::new(idle),
                checkpointer: Arc::new(Checkpointer {
                    conn: Mutex::new(checkpoint_conn),
                    pending: AtomicBool::new(false),
                }),
                path: path.to_owned(),
            },
        ))
    }

    /// See [`Store::checkpoint`].
    pub(crate) async fn checkpoint(&self) -> Result<bool> {
        self.checkpointer.pending.store(true, Ordering::Release);
        self.try_checkpoint().await
    }

    /// See [`Store::checkpoint_owed`].
    pub(crate) async fn checkpoint_owed(&self) -> Result<bool> {
        if !self.checkpointer.pending.load(Ordering::Acquire) {
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
                cp.pending.store(false, Ordering::Release);
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

    /// See [`Store::scratch_file`].
    pub(crate) fn scratch_file(&self) -> Result<PathBuf> {
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

    /// See [`Store::snapshot_to`].
    pub(crate) async fn snapshot_to(&self, dest: PathBuf) -> Result<()> {
        self.readers
            .run(move |db| {
                let Conn::Sqlite(conn) = db.conn() else {
                    return Err(Error::Internal(
                        "a SQLite pool holds another backend".into(),
                    ));
                };
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

    /// See [`Store::read`].
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Tx) -> Result<T> + Send + 'static,
    {
        self.readers
            .run(move |db| db.in_transaction("BEGIN", f))
            .await
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`, migrates
    /// it, and starts the writer thread and `readers` read connections.
    pub fn open(path: &Path, readers: usize) -> Result<Self> {
        let (writing, files) = Files::open(path, readers)?;
        Store::with(writing, Backend::Sqlite(files))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::store::Store;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_read_that_panics_leaves_its_connection_usable() {
        let dir = tempfile::tempdir().unwrap();
        // One read connection: the next read gets the one that panicked.
        let store = Store::open(&dir.path().join("db"), 1).unwrap();
        let panicked = store
            .read(|tx| -> crate::error::Result<()> {
                tx.meta_get("anything")?;
                panic!("a bug in a read")
            })
            .await;
        assert!(panicked.is_err());
        store.write(|tx| tx.meta_put("k", b"v")).await.unwrap();
        let read = store.read(|tx| tx.meta_get("k")).await.unwrap();
        assert_eq!(read.as_deref(), Some(&b"v"[..]));
    }
}
