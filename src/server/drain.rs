//! Graceful shutdown's first phase: once draining, every new call is
//! answered `UNAVAILABLE` at once (on its existing connection, so clients
//! see a clean status and retry elsewhere), while the calls already in
//! flight run to their end; the server closes its connections only when
//! none is left (or `shutdown_grace` runs out).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::codegen::http;

/// Shared between the layer and the shutdown.
#[derive(Clone, Default)]
pub struct Drain {
    draining: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
}

impl Drain {
    /// Refuses new calls from now on.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Resolves when no call admitted before draining is still running.
    pub async fn idle(&self) {
        while self.in_flight.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl<S> tower::Layer<S> for Drain {
    type Service = Draining<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Draining {
            inner,
            drain: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Draining<S> {
    inner: S,
    drain: Drain,
}

/// Counts a call until it ends.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for Draining<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Count first, then look: a call counted before `begin` is waited
        // for; one that sees the flag is refused.
        self.drain.in_flight.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(self.drain.in_flight.clone());
        if self.drain.draining.load(Ordering::Acquire) {
            drop(admitted);
            return Box::pin(async { Ok(unavailable()) });
        }
        let answer = self.inner.call(req);
        Box::pin(async move {
            let _admitted = admitted;
            answer.await
        })
    }
}

/// A trailers-only gRPC answer: UNAVAILABLE, shutting down.
fn unavailable<RB: Default>() -> http::Response<RB> {
    let mut resp = http::Response::new(RB::default());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", http::HeaderValue::from_static("14"));
    h.insert(
        "grpc-message",
        http::HeaderValue::from_static("server%20shutting%20down:%20retry%20on%20another%20server"),
    );
    resp
}
