//! The `strongbox.v1` services. Every handler runs inside [`Api::handle`],
//! the one place every call passes through: it opens the call's audit
//! record, runs the handler (authenticate, parse, authorize, call the
//! vault, translate), makes sure the call's audit entry is durable before
//! any answer leaves (fail closed), and returns the request id in
//! `x-request-id`.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::convert;
use super::limits::{Limiter, LoadLimits};
use super::pb::{self};
use crate::audit::{self, Call};
use crate::authz::{self, Action, Permit, Principal};
use crate::crypto;
use crate::error::Error;
use crate::ids::TenantId;
use crate::vault::Vault;

mod audit_trail;
mod backup;
mod keys;
mod principals;
mod records;
mod retention;
mod subjects;
mod tenants;

/// Implements every `strongbox.v1` service over one vault.
#[derive(Clone)]
pub struct Api {
    vault: Arc<Vault>,
    limiter: Arc<Limiter>,
    /// Failed authentications per peer address.
    failed_auth: Arc<super::flood::FailedAuth>,
    /// Count calls per tenant in the metrics (`metrics_tenant_labels`).
    tenant_labels: bool,
}

type GrpcResult<T> = Result<Response<T>, Status>;

/// A call's place under the in-flight cap.
type Slot = tokio::sync::OwnedSemaphorePermit;

/// Metadata naming why the caller acts; recorded in the audit log.
const PURPOSE_HEADER: &str = "x-strongbox-purpose";
const PURPOSE_MAX: usize = 256;

impl Api {
    pub fn new(vault: Arc<Vault>, limits: LoadLimits, tenant_labels: bool) -> Self {
        Api {
            vault,
            failed_auth: Arc::new(super::flood::FailedAuth::new(limits.auth_failure_burst)),
            limiter: Arc::new(Limiter::new(limits)),
            tenant_labels,
        }
    }

    /// Opens the audit record of a call. The peer is its address, and the
    /// client certificate's common name under mTLS.
    fn open_call<T>(req: &Request<T>, action: Action) -> (Call, Result<(), Error>) {
        let mut peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        if let Some(cn) = client_cert_cn(req) {
            peer.push_str(&format!(" cn={cn}"));
        }
        let (purpose, valid) = match req.metadata().get(PURPOSE_HEADER).map(|v| v.to_str()) {
            None => (String::new(), Ok(())),
            Some(Ok(p)) if p.len() <= PURPOSE_MAX && !p.chars().any(char::is_control) => {
                (p.to_owned(), Ok(()))
            }
            Some(_) => (
                "<invalid>".to_owned(),
                Err(Error::invalid(
                    "x-strongbox-purpose",
                    format!("must be printable ASCII of at most {PURPOSE_MAX} bytes"),
                )),
            ),
        };
        let request_id = hex::encode(crypto::random_bytes::<8>());
        (Call::new(request_id, action.as_str(), purpose, peer), valid)
    }

    /// Runs one call: `f` does the work; the audit entry is made durable
    /// before the answer (success or error) is returned.
    async fn handle<Req, Resp>(
        &self,
        req: Request<Req>,
        action: Action,
        f: impl AsyncFnOnce(Arc<Call>, Request<Req>) -> Result<Resp, Error>,
    ) -> GrpcResult<Resp> {
        self.handle_holding(req, action, async move |call, req, _slot| {
            f(call, req).await
        })
        .await
    }

    /// [`Api::handle`], handing `f` the call's in-flight slot: a streaming
    /// answer keeps it for the life of the stream, so streams count
    /// against the in-flight cap until the client has them whole.
    async fn handle_holding<Req, Resp>(
        &self,
        req: Request<Req>,
        action: Action,
        f: impl AsyncFnOnce(Arc<Call>, Request<Req>, Slot) -> Result<Resp, Error>,
    ) -> GrpcResult<Resp> {
        let (call, purpose_ok) = Self::open_call(&req, action);
        let call = Arc::new(call);
        let peer_ip = req.remote_addr().map(|a| a.ip());
        // Shed at once when full, rather than queue and grow memory; the
        // shed call is still recorded.
        let result = match (purpose_ok, self.limiter.admit()) {
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(slot)) => f(call.clone(), req, slot).await,
        };
        // Fail closed: no answer, not even data already read, without its entry.
        // A failed authentication past the peer's burst is refused at once
        // and counted into the peer's coalesced entry, not audited alone.
        if let (Err(Error::Unauthenticated(why)), Some(ip)) = (&result, peer_ip)
            && self
                .failed_auth
                .failed(ip, failure_reason(why), crate::now_ms())
                == super::flood::Verdict::Coalesced
        {
            let mut status = Status::resource_exhausted(format!(
                "too many failed authentications from {ip}: at most {} a minute are served; retry later with a valid API key",
                self.limiter.auth_failure_burst()
            ));
            // Counted already: the transport's audit must not count it again.
            if let Ok(id) = MetadataValue::try_from(call.request_id.as_str()) {
                status.metadata_mut().insert("x-request-id", id);
            }
            return Err(status);
        }
        let outcome = audit::Outcome::of(&result);
        if self.tenant_labels {
            let tenant = call.tenant();
            if !tenant.is_empty() {
                crate::metrics::get()
                    .tenant_calls
                    .get_or_create(&crate::metrics::TenantLabels {
                        tenant,
                        rpc_method: action.as_str().to_owned(),
                        outcome: outcome.0.as_str().to_owned(),
                    })
                    .inc();
            }
        }
        let result = match self.vault.record(&call, outcome).await {
            Ok(()) => result,
            Err(e) => Err(e),
        };
        let id = MetadataValue::try_from(call.request_id.as_str()).ok();
        match result {
            Ok(v) => {
                let mut resp = Response::new(v);
                if let Some(id) = id {
                    resp.metadata_mut().insert("x-request-id", id);
                }
                Ok(resp)
            }
            Err(e) => {
                let mut status = Status::from(e);
                if let Some(id) = id {
                    status.metadata_mut().insert("x-request-id", id);
                }
                Err(status)
            }
        }
    }

    /// The per-peer count of failed calls, shared with the transport's
    /// audit of the calls it refuses.
    pub fn failed_calls(&self) -> Arc<super::flood::FailedAuth> {
        self.failed_auth.clone()
    }

    /// Writes one audit entry per peer whose failed authentications were
    /// coalesced since the last flush (see `api::flood`).
    pub async fn flush_failed_auth(&self) -> Result<usize, Error> {
        let pending = self.failed_auth.take(crate::now_ms());
        for c in &pending {
            let call = Arc::new(Call::new(
                hex::encode(crypto::random_bytes::<8>()),
                "calls.failures-coalesced",
                String::new(),
                c.peer.to_string(),
            ));
            call.set_resource(c.resource());
            self.vault
                .record(
                    &call,
                    (audit::Outcome::Denied, tonic::Code::Unauthenticated as i32),
                )
                .await?;
        }
        Ok(pending.len())
    }

    /// Authenticates the caller from `authorization: Bearer <api key>`.
    async fn caller<T>(&self, call: &Call, req: &Request<T>) -> Result<Principal, Error> {
        let value = req
            .metadata()
            .get("authorization")
            .ok_or(Error::Unauthenticated(
                "missing authorization metadata: expected 'Bearer sbk_…'",
            ))?;
        let bearer = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Error::Unauthenticated(
                "authorization metadata must be 'Bearer sbk_…'",
            ))?;
        let principal = self.vault.authenticate(bearer.trim()).await?;
        call.set_principal(&principal.id);
        if let Some(pinned) = &principal.cert_cn
            && client_cert_cn(req).as_deref() != Some(pinned.as_str())
        {
            return Err(Error::Unauthenticated(
                "this principal's keys are valid only with its client certificate (mTLS)",
            ));
        }
        if let Some(home) = &principal.tenant {
            call.set_tenant(home.as_str());
        }
        self.limiter.charge(&principal.id)?;
        Ok(principal)
    }

    /// Authenticates and authorizes: the permit for `action` on `tenant`
    /// (the request's field of that name, parsed here).
    async fn begin<T>(
        &self,
        call: &Call,
        req: &Request<T>,
        action: Action,
        tenant: Option<&str>,
    ) -> Result<Permit, Error> {
        let principal = self.caller(call, req).await?;
        let tenant = tenant.map(TenantId::parse).transpose()?;
        if let Some(t) = &tenant {
            call.set_tenant(t.as_str());
        }
        Self::authorize(call, &principal, action, tenant.as_ref())
    }

    /// The one way a handler gets a permit: the call's audit entry then
    /// names the action authorized, whatever the RPC was.
    fn authorize(
        call: &Call,
        principal: &Principal,
        action: Action,
        tenant: Option<&TenantId>,
    ) -> Result<Permit, Error> {
        let permit = authz::authorize(principal, action, tenant)?;
        call.set_action(permit.action().as_str());
        Ok(permit)
    }
}

/// The common name of the client certificate the call came with, if any.
fn client_cert_cn<T>(req: &Request<T>) -> Option<String> {
    let certs = req.peer_certs()?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    // Printable only: it goes into the audit log.
    (!cn.is_empty() && cn.len() <= 256 && !cn.chars().any(char::is_control)).then_some(cn)
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportSubjectResponse, Status>> + Send>>;

type AuditStream = Pin<Box<dyn Stream<Item = Result<pb::AuditEntry, Status>> + Send>>;

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A failed authentication's reason, for the coalesced entry: the fixed
/// phrase before any detail (never a key).
fn failure_reason(why: &str) -> &str {
    let phrase = why.split([':', '(']).next().unwrap_or(why).trim();
    phrase
        .char_indices()
        .nth(64)
        .map_or(phrase, |(i, _)| &phrase[..i])
}
