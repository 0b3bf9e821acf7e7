//! The PostgreSQL backend: its connections (`conn::Pg`; the concept
//! traits are implemented once for both backends in `store::sql`), the
//! schema, the writer's connection and the read pool. Any number of servers share one
//! database, all active.
//!
//! Writes: each server's writer batches units of work into one
//! transaction, as on SQLite, and every batch first takes one advisory
//! transaction lock (`WRITE_LOCK`), held until it commits. Batches of all
//! servers therefore run one after another, in READ COMMITTED: a batch
//! sees everything committed before it, so the use cases' check-then-act
//! steps (tenant create, KEK version + 1, record compare-and-set,
//! bootstrap admin, the audit head) hold across servers exactly as under
//! SQLite's single writer, with no retry. Each batch still commits with
//! one fsync for all its units (`synchronous_commit = on`). Reads run in
//! REPEATABLE READ, read only: one snapshot per unit.

mod conn;
mod schema;
mod tls;

pub(crate) use tls::Target;

use std::sync::Arc;

pub(crate) use conn::Pg;

use super::pool::Pool;
use super::seam::Tx;
use super::sql::Db;
use super::writer::WriteConn;
use super::{Backend, Store};
use crate::error::{Error, Result};

/// The advisory lock every write transaction takes first ("sbwriter").
const WRITE_LOCK: i64 = 0x7362_7772_6974_6572;

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

/// The writer's connection.
struct Writing(Db);

impl WriteConn for Writing {
    fn tx(&self) -> &dyn Tx {
        &self.0
    }

    fn begin(&mut self) -> Result<()> {
        if let Db::Postgres(pg) = &self.0 {
            pg.ensure_open()?;
        }
        self.0
            .execute_batch("BEGIN ISOLATION LEVEL READ COMMITTED")?;
        if let Err(e) = self
            .0
            .execute("SELECT pg_advisory_xact_lock($1)", [WRITE_LOCK])
        {
            self.rollback();
            return Err(e);
        }
        Ok(())
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

    fn take_conflict(&mut self) -> bool {
        matches!(&self.0, Db::Postgres(pg) if pg.take_conflict())
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
                if let Db::Postgres(pg) = &*db {
                    pg.ensure_open()?;
                }
                db.in_transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", f)
            })
            .await
    }
}

/// Backups of a PostgreSQL-backed vault are the database's own.
pub(crate) fn no_snapshots() -> Error {
    Error::FailedPrecondition(
        "backup: this vault's storage is PostgreSQL; back it up with pg_basebackup or pg_dump and keep the shred ledger beside it (docs/runbooks/backup-and-restore.md)".into(),
    )
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
            .map(|_| Pg::connect(&target).map(Db::Postgres))
            .collect::<Result<Vec<_>>>()?;
        Store::with(
            Writing(Db::Postgres(writing)),
            Backend::Postgres(Readers(Pool::new(idle))),
        )
    }
}
