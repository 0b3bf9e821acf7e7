//! A fixed pool of read connections, any backend: a caller waits for a
//! free slot (timed into `read_wait_seconds`), then runs its closure on an
//! idle connection off the async executor. The connection goes back to
//! the pool whatever the closure does, a panic included.

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

pub(crate) struct Pool<C> {
    idle: Mutex<Vec<C>>,
    slots: Arc<Semaphore>,
}

impl<C: Send + 'static> Pool<C> {
    pub(crate) fn new(conns: Vec<C>) -> Arc<Self> {
        let n = conns.len();
        Arc::new(Pool {
            idle: Mutex::new(conns),
            slots: Arc::new(Semaphore::new(n)),
        })
    }

    /// Runs `f` on an idle connection under `spawn_blocking`.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut C) -> Result<T> + Send + 'static,
    {
        let waited = std::time::Instant::now();
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("storage: read pool closed".into()))?;
        crate::metrics::get()
            .read_wait_seconds
            .observe(waited.elapsed().as_secs_f64());
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut conn = pool
                .idle
                .lock()
                .map_err(|_| Error::Internal("read pool lock poisoned".into()))?
                .pop()
                .ok_or_else(|| Error::Internal("read pool: a slot without a connection".into()))?;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut conn)))
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
