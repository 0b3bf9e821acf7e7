//! Calls refused before they reach a use case are audited too: a request
//! body that does not decode (INVALID_ARGUMENT), one over the size limit,
//! an unknown method, request metadata over its limit. The layer sees
//! every answer; one without the
//! `x-request-id` a handler always sets, and with an error status, was
//! made by the transport, so the layer writes its entry (action
//! `rpc.refused`, resource the method path and why) before the answer
//! leaves. A flood of them from one address is coalesced like failed
//! authentications (`api::flood`): at most the burst a minute one by one,
//! the rest counted into one entry per peer.
//!
//! Request metadata is limited here rather than by HTTP/2 alone: past
//! HTTP/2's header-list limit a call gets HTTP 431, which gRPC clients
//! report as `UNKNOWN`, so that limit is set well above this one
//! (`server::MAX_HEADER_LIST`) and a call between the two is answered
//! `RESOURCE_EXHAUSTED`, naming the size and the limit, before any
//! handler runs.
//!
//! Calls one connection has in flight are capped here too (a slot per
//! call, held until its answer's headers leave, keyed by the peer's
//! address and port), so a call shed for it is audited like the others;
//! tonic's own per-connection limit sheds outside every layer of ours.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::api::flood::{FailedAuth, Verdict};
use crate::audit::{Call, Outcome};
use crate::vault::Vault;

#[derive(Clone)]
pub struct EdgeAudit {
    pub vault: Arc<Vault>,
    pub flood: Arc<FailedAuth>,
    /// The request metadata a call may carry, in bytes as HTTP/2 counts
    /// them (each entry's name and value, and 32 bytes).
    pub max_metadata: usize,
    pub per_connection: PerConnection,
}

/// Calls in flight per connection (a connection is its peer's address
/// and port), under a cap.
#[derive(Clone)]
pub struct PerConnection {
    max: usize,
    open: Arc<Mutex<HashMap<SocketAddr, usize>>>,
}

/// One call's slot on its connection, given back when dropped.
struct Slot {
    open: Arc<Mutex<HashMap<SocketAddr, usize>>>,
    peer: SocketAddr,
}

impl PerConnection {
    pub fn new(max: usize) -> Self {
        PerConnection {
            max: max.max(1),
            open: Arc::default(),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, usize>> {
        // Every update is one insert or remove: a poisoned map is whole.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a call from `peer`, or None when its connection has
    /// every slot taken.
    fn take(&self, peer: SocketAddr) -> Option<Slot> {
        let mut open = self.open();
        let n = open.entry(peer).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            open: self.open.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}
/// The size of a request's metadata as HTTP/2 counts a header list.
fn metadata_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

impl<S> tower::Layer<S> for EdgeAudit {
    type Service = Audited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audited {
            inner,
            edge: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Audited<S> {
    inner: S,
    edge: EdgeAudit,
}

fn remote_addr<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// The method path as a bounded, printable resource (the client chose it).
fn bounded_path(path: &str) -> String {
    path.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128)
        .collect()
}

fn why(code: i32) -> &'static str {
    match code {
        3 => "undecodable",
        8 => "too large",
        12 => "unimplemented",
        _ => "refused by the transport",
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for Audited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = bounded_path(req.uri().path());
        let peer = remote_addr(&req);
        let edge = self.edge.clone();
        let metadata = metadata_bytes(req.headers());
        if metadata > edge.max_metadata {
            return Box::pin(async move {
                let status = tonic::Status::resource_exhausted(format!(
                    "request metadata: {metadata} bytes, over the limit of {} \
                     (each entry's name and value, plus 32 bytes, as HTTP/2 counts them)",
                    edge.max_metadata
                ));
                edge.record(&path, peer, "metadata too large", status.code() as i32)
                    .await;
                Ok(status.into_http())
            });
        }
        let slot = match peer.map(|p| edge.per_connection.take(p)) {
            Some(None) => {
                return Box::pin(async move {
                    crate::metrics::get().shed.inc();
                    let status = tonic::Status::resource_exhausted(format!(
                        "connection overloaded: {} calls in flight on this connection; \
                         retry with backoff, or spread calls over more connections",
                        edge.per_connection.max
                    ));
                    edge.record(&path, peer, "shed (per connection)", status.code() as i32)
                        .await;
                    Ok(status.into_http())
                });
            }
            Some(Some(slot)) => Some(slot),
            None => None,
        };
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            drop(slot);
            let code = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<i32>().ok())
                .unwrap_or(0);
            if code != 0 && resp.headers().get("x-request-id").is_none() {
                edge.record(&path, peer, why(code), code).await;
            }
            Ok(resp)
        })
    }
}

impl EdgeAudit {
    async fn record(&self, path: &str, peer: Option<SocketAddr>, reason: &'static str, code: i32) {
        if let Some(addr) = peer
            && self.flood.failed(addr.ip(), reason, crate::now_ms()) == Verdict::Coalesced
        {
            return;
        }
        let call = Arc::new(Call::new(
            hex::encode(crate::crypto::random_bytes::<8>()),
            "rpc.refused",
            String::new(),
            peer.map(|a| a.to_string()).unwrap_or_default(),
        ));
        call.set_resource(format!("rpc:{path} {reason}"));
        if let Err(e) = self.vault.record(&call, (Outcome::Failed, code)).await {
            tracing::warn!(error = %e, "auditing a call refused by the transport failed");
        }
    }
}
