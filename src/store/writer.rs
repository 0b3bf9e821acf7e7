//! The writer thread: owns the only write connection and group-commits.
//!
//! It takes the first waiting job, then every job already queued (up to
//! `MAX_BATCH`), runs each in its own savepoint inside one transaction, and
//! commits once: concurrent writers share one fsync. Each caller is answered
//! only after the commit is durable; a failed job rolls back its savepoint
//! alone, a failed commit fails the whole batch.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

const MAX_BATCH: usize = 256;
const QUEUE_DEPTH: usize = 4096;

/// Delivers a job's result once the batch's commit outcome is known.
type Completion = Box<dyn FnOnce(Result<()>) + Send>;
/// Runs a job against the connection and says whether it succeeded; given
/// `None`, it does not run and reports that storage is unavailable.
type TxnJob = Box<dyn FnOnce(Option<&Connection>) -> (bool, Completion) + Send>;

enum Job {
    Txn(TxnJob),
    Checkpoint(oneshot::Sender<Result<()>>),
}

#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Job>,
}

fn stopped() -> Error {
    Error::Unavailable("storage: the writer has stopped".into())
}

impl Writer {
    pub(super) fn spawn(conn: Connection) -> Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        thread::Builder::new()
            .name("strongbox-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| Error::Unavailable(format!("storage: cannot start writer thread: {e}")))?;
        Ok(Writer { tx })
    }

    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: TxnJob = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => f(conn),
                None => Err(Error::Unavailable(
                    "storage: cannot begin a transaction".into(),
                )),
            };
            let ok = result.is_ok();
            let complete: Completion = Box::new(move |commit| {
                let _ = reply.send(result.and_then(|v| commit.map(|()| v)));
            });
            (ok, complete)
        });
        self.tx.send(Job::Txn(job)).await.map_err(|_| stopped())?;
        answer
            .await
            .unwrap_or_else(|_| Err(Error::Internal("a storage write panicked".into())))
    }

    pub(super) async fn checkpoint(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Checkpoint(reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch);
    }
}

fn run_batch(conn: &Connection, batch: Vec<Job>) {
    let mut completions = Vec::with_capacity(batch.len());
    let mut checkpoints = Vec::new();
    let begun = conn.execute_batch("BEGIN IMMEDIATE").map_err(Error::from);
    for job in batch {
        match job {
            Job::Txn(job) => match &begun {
                Ok(()) => completions.extend(run_job(conn, job)),
                Err(_) => completions.push(job(None).1),
            },
            Job::Checkpoint(reply) => checkpoints.push(reply),
        }
    }
    let outcome = match begun {
        Ok(()) => match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(Error::Unavailable(format!("storage: commit failed: {e}")))
            }
        },
        Err(e) => Err(e),
    };
    for complete in completions {
        complete(match &outcome {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        });
    }
    for reply in checkpoints {
        let _ = reply.send(checkpoint(conn));
    }
}

/// Runs one job in its own savepoint. A job that panics is rolled back and
/// its caller sees an internal error (its reply channel is dropped).
fn run_job(conn: &Connection, job: TxnJob) -> Option<Completion> {
    if conn.execute_batch("SAVEPOINT job").is_err() {
        return Some(job(None).1);
    }
    let ran = catch_unwind(AssertUnwindSafe(|| job(Some(conn))));
    let keep = matches!(ran, Ok((true, _)));
    let end = if keep {
        conn.execute_batch("RELEASE job")
    } else {
        conn.execute_batch("ROLLBACK TO job; RELEASE job")
    };
    match (ran, end) {
        (Ok((_, complete)), Ok(())) => Some(complete),
        (Ok((_, complete)), Err(e)) => {
            let err = Error::from(e);
            Some(Box::new(move |_| complete(Err(err))))
        }
        (Err(_), _) => None,
    }
}

fn checkpoint(conn: &Connection) -> Result<()> {
    for _ in 0..50 {
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy == 0 {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(Error::Unavailable(
        "storage: WAL checkpoint stayed busy; it will be retried".into(),
    ))
}
