//! The metrics side of the server: a tower layer that counts and times
//! every gRPC call (by service, method and status), and the plain-HTTP
//! listener that serves `GET /metrics` (`serve --metrics-listen`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use tokio::sync::watch;
use tonic::codegen::http;

use crate::error::{Error, Result};
use crate::metrics;

/// Counts and times each call; the status is the `grpc-status` of the
/// response headers (an error answered at once), else OK. An error that
/// ends a stream after its first message is counted as OK.
#[derive(Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

/// Lowers the in-flight gauge when a call ends, however it ends.
struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::get().in_flight.dec();
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let started = Instant::now();
        metrics::get().in_flight.inc();
        let guard = InFlight;
        let answer = self.inner.call(req);
        Box::pin(async move {
            let _guard = guard;
            let r = answer.await;
            let code = match &r {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                // The transport failed the call: UNKNOWN.
                Err(_) => 2,
            };
            metrics::get().rpc_done(&path, code, started.elapsed());
            r
        })
    }
}

/// Binds `addr` and serves `GET /metrics` until `stop`.
pub async fn serve(
    addr: SocketAddr,
    tenant_labels: bool,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Unavailable(format!("metrics_listen {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Unavailable(format!("metrics_listen {addr}: {e}")))?;
    let task = tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok((stream, _)) = conn else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| async move {
                    Ok::<_, Infallible>(answer(&req, tenant_labels))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

fn answer<B>(req: &hyper::Request<B>, tenant_labels: bool) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) =
        if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
            (
                hyper::StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics::get().render(tenant_labels),
            )
        } else {
            (
                hyper::StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found: the metrics are at GET /metrics\n".to_owned(),
            )
        };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}
