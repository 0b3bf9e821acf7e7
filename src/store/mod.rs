//! Storage, behind one seam (`seam`): SQLite in the data directory (the
//! default), or PostgreSQL shared by any number of servers. Each backend
//! gives the writer thread (`writer`: one transaction per batch of units
//! of work, one durable commit) a write connection, and a pool of read
//! connections (`pool`). No storage call runs on the async executor's
//! threads: writes go to the writer thread over a channel, reads run
//! under `spawn_blocking`.
//!
//! SQLite runs WAL with `synchronous=FULL` (a commit is on disk when
//! acknowledged) and `secure_delete=ON` (deleted bytes are overwritten,
//! which crypto-shredding depends on). PostgreSQL runs with
//! `synchronous_commit=on`; what a shred guarantees there is in
//! ARCHITECTURE.md.

mod pool;
mod postgres;
pub mod seam;
mod sql;
mod sqlite;
mod writer;

#[cfg(test)]
pub(crate) use sqlite::faults;

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;
pub use seam::*;
pub use writer::WriteActivity;
use writer::{WriteConn, Writer};

/// What use cases import to call storage: the seam's traits.
pub mod prelude {
    pub use super::seam::{
        AuditRows, ErasureRows, GaugeRows, HoldRows, KeyRows, LeaseRows, PrincipalRows, RecordRows,
        ReencryptRows, ReplayRows, RetentionRows, Savepoints, SubjectRows, TenantRows, Tx,
    };
}

/// A connection of its own to a SQLite vault database, outside any
/// `Store` (no writer thread, no pool): for tools, benches and tests that
/// drive the library directly. Each statement commits on its own unless
/// [`Direct::begin`] and [`Direct::commit`] bracket them.
pub struct Direct(sql::Db);

impl Direct {
    /// Opens the database at `path` (made by [`Store::open`]).
    pub fn open(path: &std::path::Path) -> Result<Self> {
        Ok(Direct(sql::Db::new(sql::Conn::Sqlite(
            rusqlite::Connection::open(path)?,
        ))))
    }

    /// The connection as the library's functions take it.
    pub fn tx(&self) -> &dyn Tx {
        &self.0
    }

    /// The SQLite connection itself: tests that edit rows as an attacker
    /// would, in the same transaction the library then reads in.
    pub fn sqlite(&self) -> &rusqlite::Connection {
        match self.0.conn() {
            sql::Conn::Sqlite(c) => c,
            sql::Conn::Postgres(_) => unreachable!("Direct opens SQLite only"),
        }
    }

    pub fn begin(&self) -> Result<()> {
        self.0.execute_batch("BEGIN")
    }

    pub fn commit(&self) -> Result<()> {
        self.0.execute_batch("COMMIT")
    }
}

/// The file name of the database inside the data directory.
pub const DB_FILE: &str = "strongbox.db";

/// Handle to the database: cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: Writer,
    backend: Arc<Backend>,
}

enum Backend {
    Sqlite(sqlite::Files),
    Postgres(postgres::Readers),
}

impl Store {
    fn with<C: WriteConn>(writing: C, backend: Backend) -> Result<Self> {
        Ok(Store {
            writer: Writer::spawn(writing)?,
            backend: Arc::new(backend),
        })
    }

    /// Whether the database is PostgreSQL, shared with other servers.
    pub fn is_postgres(&self) -> bool {
        matches!(*self.backend, Backend::Postgres(_))
    }

    /// Whether a read whose call must then commit an audit entry is best
    /// run in the writer's transaction, beside that entry: on SQLite the
    /// writer's connection has the pages at hand (a read connection's
    /// cache is dropped whenever the file changed, which every entry
    /// does), there is no hop to a blocking thread and no read transaction
    /// of its own, and the read's entry joins the group commit of every
    /// other call's. Not on PostgreSQL: each statement is a round trip,
    /// and the writer runs its batches' statements one after another.
    pub fn reads_join_the_writer(&self) -> bool {
        matches!(*self.backend, Backend::Sqlite(_))
    }

    /// How busy this server's writer is: background jobs pace their
    /// batches by it.
    pub fn write_activity(&self) -> WriteActivity {
        self.writer.activity()
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
    /// `f` may be run again if a backend must retry the transaction, so
    /// it has no effect outside it.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&dyn Tx) -> Result<T> + Send + 'static,
    {
        self.writer.write(f).await
    }

    /// Runs `f` on a read connection inside one read transaction (a
    /// consistent snapshot), off the async executor.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Tx) -> Result<T> + Send + 'static,
    {
        match &*self.backend {
            Backend::Sqlite(files) => files.read(f).await,
            Backend::Postgres(readers) => readers.read(f).await,
        }
    }

    /// Truncates the WAL so that bytes overwritten by a shred are gone from
    /// it too, on its own connection (never on the writer thread), waiting
    /// at most a short budget for readers. If a reader still holds an
    /// older snapshot it gives up, logs that the WAL still holds destroyed
    /// bytes, and leaves the checkpoint owed: [`Store::checkpoint_owed`]
    /// (housekeeping) retries it. Returns whether the WAL was truncated.
    /// On PostgreSQL there is no such step (see ARCHITECTURE.md): `true`.
    pub async fn checkpoint(&self) -> Result<bool> {
        match &*self.backend {
            Backend::Sqlite(files) => files.checkpoint().await,
            Backend::Postgres(_) => Ok(true),
        }
    }

    /// Retries an owed checkpoint, if any; returns whether none is owed now.
    pub async fn checkpoint_owed(&self) -> Result<bool> {
        match &*self.backend {
            Backend::Sqlite(files) => files.checkpoint_owed().await,
            Backend::Postgres(_) => Ok(true),
        }
    }

    /// A new, empty, private (0600) file beside the database, for a
    /// snapshot.
    pub fn scratch_file(&self) -> Result<PathBuf> {
        match &*self.backend {
            Backend::Sqlite(files) => files.scratch_file(),
            Backend::Postgres(_) => postgres::scratch_file(),
        }
    }

    /// Writes a consistent copy of the database into `dest` (`VACUUM INTO`,
    /// on a read connection: one read snapshot, so writers go on; it only
    /// keeps the WAL from being checkpointed past that snapshot meanwhile).
    /// `dest` must be empty.
    pub async fn snapshot_to(&self, dest: PathBuf) -> Result<()> {
        match &*self.backend {
            Backend::Sqlite(files) => files.snapshot_to(dest).await,
            Backend::Postgres(readers) => readers.dump(dest).await,
        }
    }

    /// PostgreSQL: replaces everything in the database by the SQLite
    /// snapshot at `src` (a backup's), in one transaction that also sets
    /// the restore marker ([`Store::holds_vault`]). SQLite restores copy
    /// the file instead.
    pub async fn load_snapshot(&self, src: PathBuf) -> Result<()> {
        match &*self.backend {
            Backend::Sqlite(_) => Err(crate::error::Error::Internal(
                "a SQLite vault is restored by its file".into(),
            )),
            Backend::Postgres(readers) => readers.load(src).await,
        }
    }

    /// PostgreSQL: clears the restore marker [`Store::load_snapshot`] set,
    /// once the restore has finished: the database may serve.
    pub async fn restore_finished(&self) -> Result<()> {
        self.write(|c| c.meta_put(postgres::RESTORING, b"")).await
    }

    /// PostgreSQL: whether the database holds a vault (`Some(false)`), one
    /// a restore has not finished with (`Some(true)`), or none yet.
    pub async fn holds_vault(&self) -> Result<Option<bool>> {
        match &*self.backend {
            Backend::Sqlite(_) => Err(crate::error::Error::Internal(
                "a SQLite vault is its file".into(),
            )),
            Backend::Postgres(readers) => readers.holds_vault().await,
        }
    }
}
