//! The writer thread: owns this server's write connection and
//! group-commits, on any backend (`WriteConn`).
//!
//! It takes the first waiting job, then every job already queued (up to
//! `MAX_BATCH`), runs each in its own savepoint inside one transaction, and
//! commits once: concurrent writers share one fsync. Each caller is answered
//! only after the commit is durable; a failed job rolls back its savepoint
//! alone, a failed commit fails the whole batch. A batch that another
//! server's transaction conflicted with (PostgreSQL, SERIALIZABLE) is rolled
//! back and its jobs run again, each from the start and in a transaction
//! of its own (jobs are `Fn` and have no effect outside the transaction):
//! under contention a job waits for no other job's rows.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Tx;
use crate::error::{Error, Result};

/// A write connection as the writer drives it: one transaction per batch,
/// a savepoint per unit of work.
pub(crate) trait WriteConn: Send + 'static {
    /// The connection as units of work see it.
    fn tx(&self) -> &dyn Tx;
    /// Begins the batch's transaction.
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
    /// Whether a statement of the current transaction failed because
    /// another transaction conflicted with it, so that the whole batch must
    /// run again (clears it). Never, with a single writer.
    fn take_conflict(&mut self) -> bool {
        false
    }
    /// The most units one batch takes.
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
}

const MAX_BATCH: usize = 256;
const QUEUE_DEPTH: usize = 4096;
/// How long a batch keeps being run again before its conflicts are
/// reported as an outage (`UNAVAILABLE`, which clients retry).
const RETRY_BUDGET: Duration = Duration::from_secs(5);
/// How many times a conflicted batch runs again whole before each of its
/// jobs runs in a transaction of its own.
const WHOLE_BATCH_RETRIES: u32 = 2;

/// One caller's unit of work, as the writer holds it until the commit.
trait Unit: Send {
    /// Runs the unit (again, when the batch is retried) and keeps its
    /// result; says whether it succeeded. Given `None`, it does not run
    /// and its result is that storage is unavailable.
    fn run(&mut self, conn: Option<&dyn Tx>) -> bool;
    /// Answers the caller: its result, once the commit's outcome is known.
    fn answer(self: Box<Self>, commit: Result<()>);
}

struct Pending<T, F> {
    f: F,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Unit for Pending<T, F>
where
    T: Send,
    F: Fn(&dyn Tx) -> Result<T> + Send,
{
    fn run(&mut self, conn: Option<&dyn Tx>) -> bool {
        let result = match conn {
            Some(conn) => (self.f)(conn),
            None => Err(Error::Unavailable(
                "storage: cannot begin a transaction".into(),
            )),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, commit: Result<()>) {
        let result = self
            .result
            .unwrap_or_else(|| Err(Error::Unavailable("storage: the write did not run".into())));
        let _ = self.reply.send(result.and_then(|v| commit.map(|()| v)));
    }
}

type TxnJob = Box<dyn Unit>;

enum Job {
    Txn(TxnJob),
    /// Stops the writer thread (tests of what health reports then).
    #[cfg(test)]
    Stop,
}

#[derive(Clone)]
pub(in crate::store) struct Writer {
    tx: mpsc::Sender<Job>,
    /// Units of work handed to the writer since it started.
    submitted: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// How busy the writer is, for background jobs that pace themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteActivity {
    /// Units of work handed to the writer since it started.
    pub submitted: u64,
    /// Units waiting for the writer now (not counting the batch it runs).
    pub queued: usize,
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
        Ok(Writer {
            tx,
            submitted: Default::default(),
        })
    }

    pub(in crate::store) fn activity(&self) -> WriteActivity {
        WriteActivity {
            submitted: self.submitted.load(std::sync::atomic::Ordering::Relaxed),
            queued: self.tx.max_capacity() - self.tx.capacity(),
        }
    }

    pub(in crate::store) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&dyn Tx) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: TxnJob = Box::new(Pending {
            f,
            result: None,
            reply,
        });
        self.submitted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
            if batch.len() < conn.max_batch() {
                next = rx.try_recv().ok();
            }
        }
        run_batch(&mut conn, batch);
    }
}

/// How a job's savepoint ended.
enum Ended {
    /// Released or rolled back: it waits for the commit.
    Done,
    /// It panicked and was rolled back; its caller sees an internal error.
    Panicked,
    /// Its savepoint could not be released or rolled back: its partial
    /// writes may be in the transaction, so the whole batch must go.
    Abort(Error),
}

fn run_batch<C: WriteConn>(conn: &mut C, mut batch: Vec<TxnJob>) {
    let metrics = crate::metrics::get();
    metrics.commit_jobs.observe(batch.len() as f64);
    for attempt in 0..=WHOLE_BATCH_RETRIES {
        if attempt > 0 {
            metrics.commit_retries.inc();
            pause(attempt);
        }
        match run_once(conn, &mut batch) {
            Attempt::Committed => return answer(batch, &Ok(())),
            Attempt::Failed(e) => return answer(batch, &Err(e)),
            Attempt::Conflicted => {}
        }
    }
    // Still contended: each job in a transaction of its own, so that two
    // batches taking the same rows in different orders cannot deadlock
    // each other again and again.
    for job in batch {
        metrics.commit_retries.inc();
        let mut one = vec![job];
        let outcome = until_settled(conn, &mut one);
        answer(one, &outcome);
    }
}

/// A short pause before attempt `n` runs again: growing, jittered.
fn pause(n: u32) {
    let ceiling = 1u64 << n.min(6);
    thread::sleep(Duration::from_micros(rand::random_range(0..=ceiling * 500)));
}

/// Runs `batch` until it commits or fails, after a pause before each run
/// again, on what the conflicting transaction committed; conflicts that go
/// on for `RETRY_BUDGET` are an outage.
fn until_settled<C: WriteConn>(conn: &mut C, batch: &mut Vec<TxnJob>) -> Result<()> {
    let started = std::time::Instant::now();
    for attempt in 1.. {
        pause(attempt);
        match run_once(conn, batch) {
            Attempt::Committed => return Ok(()),
            Attempt::Failed(e) => return Err(e),
            Attempt::Conflicted if started.elapsed() < RETRY_BUDGET => {
                crate::metrics::get().commit_retries.inc();
            }
            Attempt::Conflicted => {
                tracing::warn!(
                    attempts = attempt,
                    "a write kept conflicting with other servers' transactions"
                );
                break;
            }
        }
    }
    Err(Error::Unavailable(
        "storage: concurrent transactions kept conflicting; retry with backoff".into(),
    ))
}

fn answer(batch: Vec<TxnJob>, outcome: &Result<()>) {
    for job in batch {
        job.answer(match outcome {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        });
    }
}

/// How one run of a batch's transaction ended.
enum Attempt {
    Committed,
    Failed(Error),
    /// Rolled back because another transaction conflicted with it: run it
    /// again.
    Conflicted,
}

/// Runs every job of the batch in one transaction and commits it; on any
/// failure the transaction is rolled back. Jobs that panicked are dropped
/// from the batch (their callers see an internal error).
fn run_once<C: WriteConn>(conn: &mut C, batch: &mut Vec<TxnJob>) -> Attempt {
    if let Err(e) = conn.begin() {
        for job in batch.iter_mut() {
            job.run(None);
        }
        return Attempt::Failed(e);
    }
    let mut aborted: Option<Error> = None;
    let mut conflicted = false;
    batch.retain_mut(|job| {
        if conflicted {
            // This attempt is lost anyway; the job runs in the next.
            return true;
        }
        if aborted.is_some() {
            job.run(None);
            return true;
        }
        let kept = match run_job(conn, job) {
            Ended::Done => true,
            Ended::Panicked => false,
            Ended::Abort(e) => {
                aborted = Some(e);
                true
            }
        };
        conflicted = conn.take_conflict();
        kept
    });
    if conflicted {
        conn.rollback();
        return Attempt::Conflicted;
    }
    if let Some(e) = aborted {
        conn.rollback();
        tracing::error!(error = %e, "a savepoint could not be rolled back; the whole batch was rolled back");
        return Attempt::Failed(Error::Unavailable(format!(
            "storage: a job in the same commit could not be rolled back, so none was committed ({e})"
        )));
    }
    match commit(conn, crate::metrics::get()) {
        Ok(()) => Attempt::Committed,
        Err(e) => {
            let conflicted = conn.take_conflict();
            conn.rollback();
            if conflicted {
                Attempt::Conflicted
            } else {
                Attempt::Failed(Error::Unavailable(format!("storage: commit failed: {e}")))
            }
        }
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
fn run_job<C: WriteConn>(conn: &mut C, job: &mut TxnJob) -> Ended {
    if conn.savepoint().is_err() {
        job.run(None);
        return Ended::Done;
    }
    let ran = catch_unwind(AssertUnwindSafe(|| job.run(Some(conn.tx()))));
    let end = if matches!(ran, Ok(true)) {
        conn.release()
    } else {
        rollback_savepoint(conn)
    };
    match (ran, end) {
        (Ok(_), Ok(())) => Ended::Done,
        (Err(_), Ok(())) => Ended::Panicked,
        (_, Err(e)) => Ended::Abort(e),
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
