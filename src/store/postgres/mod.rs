//! The PostgreSQL backend: its connections (`conn::Pg`; the concept
//! traits are implemented once for both backends in `store::sql`), the
//! schema, the writer's connection and the read pool. Any number of servers share one
//! database, all active.
//!
//! Writes: each server's writer batches units of work into one
//! SERIALIZABLE transaction, as on SQLite into one transaction, and
//! commits it with one fsync for all its units (`synchronous_commit =
//! on`). Nothing serializes the batches of different servers; PostgreSQL's
//! serializable snapshot isolation makes them behave as if they ran one
//! after another, so the use cases' check-then-act steps (tenant create,
//! KEK version + 1, record compare-and-set, bootstrap admin) hold across
//! servers as under SQLite's single writer. A batch that loses a conflict
//! (40001, or a deadlock, 40P01) is rolled back and run again whole by the
//! writer (`store::writer`). The audit trail has a lane per server, so
//! appends do not conflict. Reads run in REPEATABLE READ, read only: one
//! snapshot per unit.

mod conn;
mod schema;
mod snapshot;
mod tls;

pub(crate) use snapshot::RESTORING;
pub(crate) use tls::Target;

use std::sync::Arc;

pub(crate) use conn::Pg;

use super::pool::Pool;
use super::seam::Tx;
use super::sql::{Conn, Db};
use super::writer::WriteConn;
use super::{Backend, Store};
use crate::error::{Error, Result};

impl From<postgres::Error> for Error {
    /// Failures by meaning; PostgreSQL's own words stay in the server log.
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        let Some(code) = e.code() else {
            tracing::warn!(error = %e, "storage unavailable");
            return Error::Unavailable("storage unavailable; retry with backoff".into());
        };
        if *code == SqlState::UNIQUE_VIOLATION {
            tracing::warn!(error = %e, "storage constraint refused a write");
            return Error::AlreadyExists("it already exists".into());
        }
        let class = &code.code()[..2];
        match class {
            // Connection, resources, shutdown, lock timeouts, serialization.
            "08" | "53" | "57" | "55" | "40" | "58" => {
                tracing::warn!(error = %e, "storage unavailable");
                Error::Unavailable("storage unavailable; retry with backoff".into())
            }
            "22" | "XX" => {
                tracing::error!(error = %e, "storage is damaged");
                Error::Corrupt("storage: a stored value is damaged".into())
            }
            _ => {
                tracing::error!(error = %e, "storage failed");
                Error::Internal("storage failed; see the server log".into())
            }
        }
    }
}

/// The most units in one batch. Serializable isolation tracks what each
/// transaction read, by index page; the more units a batch holds, the more
/// pages, and the likelier that another server's batch conflicts with it
/// and one of the two runs again. Measured with two servers (put, 64
/// concurrent calls, docs/performance.md): 32 keeps retries rare.
const MAX_BATCH: usize = 32;

/// The writer's connection.
struct Writing(Db);

impl WriteConn for Writing {
    fn tx(&self) -> &dyn Tx {
        &self.0
    }

    fn begin(&mut self) -> Result<()> {
        if let Conn::Postgres(pg) = self.0.conn() {
            pg.ensure_open()?;
        }
        self.0.execute_batch("BEGIN ISOLATION LEVEL SERIALIZABLE")
    }

    fn commit(&mut self) -> Result<()> {
        self.0.execute_batch("COMMIT")
    }

    fn rollback(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }

    fn savepoint(&mut self) -> Result<()> {
        self.0.execute_batch("SAVEPOINT job")
    }

    fn release(&mut self) -> Result<()> {
        self.0.execute_batch("RELEASE job")
    }

    fn rollback_to(&mut self) -> Result<()> {
        self.0.execute_batch("ROLLBACK TO job; RELEASE job")
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn take_conflict(&mut self) -> bool {
        matches!(self.0.conn(), Conn::Postgres(pg) if pg.take_conflict())
    }
}

/// The read connections.
pub(crate) struct Readers(Arc<Pool<Db>>);

impl Readers {
    /// See [`Store::read`].
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Tx) -> Result<T> + Send + 'static,
    {
        self.0
            .run(move |db| {
                if let Conn::Postgres(pg) = db.conn() {
                    pg.ensure_open()?;
                }
                db.in_transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", f)
            })
            .await
    }
}

impl Readers {
    /// Runs `f` on a read connection's `Pg`, outside any transaction of
    /// the read path (snapshots take their own).
    async fn on_pg<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Pg) -> Result<T> + Send + 'static,
    {
        self.0
            .run(move |db| match db.conn() {
                Conn::Postgres(pg) => {
                    pg.ensure_open()?;
                    f(pg)
                }
                Conn::Sqlite(_) => Err(Error::Internal("a PostgreSQL step on SQLite".into())),
            })
            .await
    }

    /// See [`Store::snapshot_to`].
    pub(crate) async fn dump(&self, dest: std::path::PathBuf) -> Result<()> {
        self.on_pg(move |pg| snapshot::dump(pg, &dest)).await
    }

    /// See [`Store::load_snapshot`].
    pub(crate) async fn load(&self, src: std::path::PathBuf) -> Result<()> {
        self.on_pg(move |pg| snapshot::load(pg, &src)).await
    }

    /// See [`Store::holds_vault`].
    pub(crate) async fn holds_vault(&self) -> Result<Option<bool>> {
        self.on_pg(snapshot::restoring).await
    }
}

/// A new, empty, private (0600) file for a snapshot of a PostgreSQL vault,
/// in the system's temporary directory.
pub(crate) fn scratch_file() -> Result<std::path::PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::temp_dir().join(format!(
        "strongbox-snapshot-{}.db",
        hex::encode(crate::crypto::random_bytes::<8>())
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::Unavailable(format!("snapshot {}: {e}", path.display())))?;
    Ok(path)
}

impl Store {
    /// Connects to the PostgreSQL database at `url`, migrates it (once,
    /// whichever server starts first), and starts the writer thread and
    /// `readers` read connections.
    /// With `ca` (PEM), or when the URL says `sslmode=require`, every
    /// connection is TLS, the server's certificate verified against `ca`.
    pub fn open_postgres(url: &str, ca: Option<&std::path::Path>, readers: usize) -> Result<Self> {
        let target = Target::new(url, ca)?;
        let writing = Pg::connect(&target)?;
        schema::migrate(&writing)?;
        let idle = (0..readers.max(1))
            .map(|_| Pg::connect(&target).map(|pg| Db::new(Conn::Postgres(pg))))
            .collect::<Result<Vec<_>>>()?;
        Store::with(
            Writing(Db::new(Conn::Postgres(writing))),
            Backend::Postgres(Readers(Pool::new(idle))),
        )
    }
}
