//! The writer thread: owns this server's write connection and
//! group-commits, on any backend (`WriteConn`).
//!
//! It takes the first waiting job, then every job already queued (up to
//! `MAX_BATCH`), runs each in its own savepoint inside one transaction, and
//! commits once: concurrent writers share one fsync. Each caller is answered
//! only after the commit is durable; a failed job rolls back its savepoint
//! alone, a failed commit fails the whole batch.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread;

use tokio::sync::{mpsc, oneshot};

use super::Tx;
use crate::error::{Error, Result};

/// A write connection as the writer drives it: one transaction per batch,
/// a savepoint per unit of work.
pub(crate) trait WriteConn: Send + 'static {
    /// The connection as units of work see it.
    fn tx(&self) -> &dyn Tx;
    /// Begins the batch's transaction (on a shared database, after every
    /// other server's batch that holds the write lock).
    fn begin(&mut self) -> Result<()>;
    /// Commits the batch durably.
    fn commit(&mut self) -> Result<()>;
    /// Abandons the batch's transaction.
    fn rollback(&mut self);
    /// Opens the savepoint of one unit of work.
    fn savepoint(&mut self) -> Result<()>;
    /// Keeps the unit's writes.
    fn release(&mut self) -> Result<()>;
    /// Undoes the unit's writes; the transaction goes on.
    fn rollback_to(&mut self) -> Result<()>;
}

const MAX_BATCH: usize = 256;
const QUEUE_DEPTH: usize = 4096;

/// Delivers a job's result once the batch's commit outcome is known.
type Completion = Box<dyn FnOnce(Result<()>) + Send>;
/// Runs a job against the connection and says whether it succeeded; given
/// `None`, it does not run and reports that storage is unavailable.
type TxnJob = Box<dyn FnOnce(Option<&dyn Tx>) -> (bool, Completion) + Send>;

enum Job {
    Txn(TxnJob),
    /// Stops the writer thread (tests of what health reports then).
    #[cfg(test)]
    Stop,
}

#[derive(Clone)]
pub(in crate::store) struct Writer {
    tx: mpsc::Sender<Job>,
}

fn stopped() -> Error {
    Error::Unavailable("storage: the writer has stopped".into())
}

impl Writer {
    pub(in crate::store) fn spawn<C: WriteConn>(conn: C) -> Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        thread::Builder::new()
            .name("strongbox-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| Error::Unavailable(format!("storage: cannot start writer thread: {e}")))?;
        Ok(Writer { tx })
    }

    pub(in crate::store) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Tx) -> Result<T> + Send + 'static,
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
        let queued = &crate::metrics::get().writer_queue;
        queued.inc();
        if self.tx.send(Job::Txn(job)).await.is_err() {
            queued.dec();
            return Err(stopped());
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Error::Internal("a storage write panicked".into())))
    }

    /// Stops the writer thread (tests only).
    #[cfg(test)]
    pub(in crate::store) async fn stop(&self) {
        let _ = self.tx.send(Job::Stop).await;
        while !self.tx.is_closed() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Whether the writer thread is still running.
    pub(in crate::store) fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }
}

fn run<C: WriteConn>(mut conn: C, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Txn(job) => {
                    crate::metrics::get().writer_queue.dec();
                    batch.push(job)
                }
                #[cfg(test)]
                Job::Stop => return,
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        run_batch(&mut conn, batch);
    }
}

/// How a job's savepoint ended.
enum Ended {
    /// Released or rolled back: its completion waits for the commit.
    Done(Completion),
    /// It panicked and was rolled back; its caller sees an internal error.
    Panicked,
    /// Its savepoint could not be released or rolled back: its partial
    /// writes may be in the transaction, so the whole batch must go.
    Abort(Completion, Error),
}

fn run_batch<C: WriteConn>(conn: &mut C, batch: Vec<TxnJob>) {
    let metrics = crate::metrics::get();
    metrics.commit_jobs.observe(batch.len() as f64);
    let mut completions = Vec::with_capacity(batch.len());
    let begun = conn.begin();
    let mut aborted: Option<Error> = None;
    for job in batch {
        if begun.is_err() || aborted.is_some() {
            completions.push(job(None).1);
            continue;
        }
        match run_job(conn, job) {
            Ended::Done(complete) => completions.push(complete),
            Ended::Panicked => {}
            Ended::Abort(complete, e) => {
                completions.push(complete);
                aborted = Some(e);
            }
        }
    }
    let outcome = match (begun, aborted) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => {
            conn.rollback();
            tracing::error!(error = %e, "a savepoint could not be rolled back; the whole batch was rolled back");
            Err(Error::Unavailable(format!(
                "storage: a job in the same commit could not be rolled back, so none was committed ({e})"
            )))
        }
        (Ok(()), None) => match commit(conn, metrics) {
            Ok(()) => Ok(()),
            Err(e) => {
                conn.rollback();
                Err(Error::Unavailable(format!("storage: commit failed: {e}")))
            }
        },
    };
    for complete in completions {
        complete(match &outcome {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        });
    }
}

/// Commits the batch, timing it: with synchronous=FULL the time is the
/// WAL fsync's.
fn commit<C: WriteConn>(conn: &mut C, metrics: &crate::metrics::Metrics) -> Result<()> {
    let started = std::time::Instant::now();
    let committed = conn.commit();
    metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    committed
}

/// Runs one job in its own savepoint. A job that panics is rolled back and
/// its caller sees an internal error (its reply channel is dropped).
fn run_job<C: WriteConn>(conn: &mut C, job: TxnJob) -> Ended {
    if conn.savepoint().is_err() {
        return Ended::Done(job(None).1);
    }
    let ran = catch_unwind(AssertUnwindSafe(|| job(Some(conn.tx()))));
    let keep = matches!(ran, Ok((true, _)));
    let end = if keep {
        conn.release()
    } else {
        rollback_savepoint(conn)
    };
    match (ran, end) {
        (Ok((_, complete)), Ok(())) => Ended::Done(complete),
        (Err(_), Ok(())) => Ended::Panicked,
        (Ok((_, complete)), Err(e)) => Ended::Abort(complete, e),
        (Err(_), Err(e)) => {
            let noop: Completion = Box::new(|_| {});
            Ended::Abort(noop, e)
        }
    }
}

fn rollback_savepoint<C: WriteConn>(conn: &mut C) -> Result<()> {
    #[cfg(test)]
    if tests::FAIL_NEXT_ROLLBACK.with(|f| f.replace(false)) {
        return Err(Error::Unavailable("injected rollback failure".into()));
    }
    conn.rollback_to()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Set by a job (jobs run on the writer thread): the rollback of
        /// its savepoint fails.
        pub(in crate::store) static FAIL_NEXT_ROLLBACK: Cell<bool> = const { Cell::new(false) };
    }

    fn count(path: &std::path::Path) -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM meta", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn fail_a_batch_whose_rollback_fails_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = Writer::spawn(crate::store::sqlite::write_conn(&path).unwrap()).unwrap();
        // Three jobs in one batch: one that succeeds, one that fails after
        // writing and whose rollback then fails, one after it.
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let w = writer.clone();
        let gate = tokio::spawn(async move {
            w.write(move |_| {
                held.recv().unwrap();
                Ok(())
            })
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let insert = |x: i64| {
            let w = writer.clone();
            tokio::spawn(async move { w.write(move |c| c.meta_put(&format!("t{x}"), b"x")).await })
        };
        let good = insert(1);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let w = writer.clone();
        let bad = tokio::spawn(async move {
            w.write(|c| {
                c.meta_put("t2", b"x")?;
                FAIL_NEXT_ROLLBACK.with(|f| f.set(true));
                Err::<(), _>(Error::Internal("the job failed".into()))
            })
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let after = insert(3);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        hold.send(()).unwrap();
        gate.await.unwrap().unwrap();
        for job in [good, after] {
            assert!(matches!(job.await.unwrap(), Err(Error::Unavailable(_))));
        }
        assert!(bad.await.unwrap().is_err());
        assert_eq!(count(&path), 0, "nothing of the batch was committed");
        // The writer goes on.
        writer.write(|c| c.meta_put("t4", b"x")).await.unwrap();
        assert_eq!(count(&path), 1);
    }
}
