//! The `strongbox.v1` services. Every handler runs inside [`Api::handle`],
//! the one place every call passes through: it opens the call's audit
//! record, runs the handler (authenticate, parse, authorize, call the
//! vault, translate), makes sure the call's audit entry is durable before
//! any answer leaves (fail closed), and returns the request id in
//! `x-request-id`.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::convert;
use super::limits::{Limiter, LoadLimits};
use super::pb::{self, audit_service_server::AuditService, record_service_server::RecordService};
use super::pb::{key_service_server::KeyService, tenant_service_server::TenantService};
use super::pb::{
    principal_service_server::PrincipalService, subject_service_server::SubjectService,
};
use crate::api_key::Enrolment;
use crate::audit::{self, Call};
use crate::authz::{self, Action, Permit, Principal, Role};
use crate::crypto;
use crate::error::Error;
use crate::ids::{self, Category, ContentType, PrincipalName, RecordKey, TenantId};
use crate::vault::{ExportItem, PrincipalSpec, PutRecord, RecordRef, Vault};

mod backup;
mod retention;

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

#[tonic::async_trait]
impl TenantService for Api {
    async fn create_tenant(&self, req: Request<pb::CreateTenantRequest>) -> GrpcResult<pb::Tenant> {
        self.handle(req, Action::TenantCreate, async |call, req| {
            let permit = self.begin(&call, &req, Action::TenantCreate, None).await?;
            let r = req.into_inner();
            let tenant = TenantId::parse(&r.tenant)?;
            call.set_resource(format!("tenant:{tenant}"));
            let info = self
                .vault
                .create_tenant(&permit, &call, tenant, r.name)
                .await?;
            Ok(convert::tenant(info))
        })
        .await
    }

    async fn get_tenant(&self, req: Request<pb::GetTenantRequest>) -> GrpcResult<pb::Tenant> {
        self.handle(req, Action::TenantGet, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("tenant:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::TenantGet, Some(&tenant))
                .await?;
            Ok(convert::tenant(self.vault.get_tenant(&permit).await?))
        })
        .await
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> GrpcResult<pb::ListTenantsResponse> {
        self.handle(req, Action::TenantList, async |call, req| {
            let permit = self.begin(&call, &req, Action::TenantList, None).await?;
            call.set_resource("tenants".into());
            let r = req.into_inner();
            let size = ids::page_size(r.page_size)?;
            let (tenants, next) = self.vault.list_tenants(&permit, size, r.page_token).await?;
            Ok(pb::ListTenantsResponse {
                tenants: tenants.into_iter().map(convert::tenant).collect(),
                next_page_token: next,
            })
        })
        .await
    }

    async fn schedule_tenant_shred(
        &self,
        req: Request<pb::ScheduleTenantShredRequest>,
    ) -> GrpcResult<pb::Tenant> {
        self.handle(req, Action::TenantShred, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("tenant:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::TenantShred, Some(&tenant))
                .await?;
            let grace = req
                .get_ref()
                .grace_seconds
                .map(|s| ids::seconds("grace_seconds", s, 0))
                .transpose()?;
            Ok(convert::tenant(
                self.vault
                    .schedule_tenant_shred(&permit, &call, grace)
                    .await?,
            ))
        })
        .await
    }

    async fn cancel_tenant_shred(
        &self,
        req: Request<pb::CancelTenantShredRequest>,
    ) -> GrpcResult<pb::Tenant> {
        self.handle(req, Action::TenantCancelShred, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("tenant:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::TenantCancelShred, Some(&tenant))
                .await?;
            Ok(convert::tenant(
                self.vault.cancel_tenant_shred(&permit, &call).await?,
            ))
        })
        .await
    }

    async fn request_admin_recovery(
        &self,
        req: Request<pb::AdminRecoveryRequest>,
    ) -> GrpcResult<pb::Tenant> {
        self.handle(req, Action::TenantAdminRecovery, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("tenant:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::TenantAdminRecovery, Some(&tenant))
                .await?;
            Ok(convert::tenant(
                self.vault.request_admin_recovery(&permit, &call).await?,
            ))
        })
        .await
    }

    async fn place_tenant_hold(
        &self,
        req: Request<pb::PlaceTenantHoldRequest>,
    ) -> GrpcResult<pb::Hold> {
        self.handle(req, Action::TenantHold, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("tenant:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::TenantHold, Some(&tenant))
                .await?;
            let reason = crate::vault::parse_hold_reason(&req.get_ref().reason)?;
            Ok(convert::hold(
                self.vault.place_tenant_hold(&permit, &call, reason).await?,
            ))
        })
        .await
    }

    async fn release_tenant_hold(
        &self,
        req: Request<pb::ReleaseTenantHoldRequest>,
    ) -> GrpcResult<pb::ReleaseHoldsResponse> {
        self.handle(req, Action::TenantRelease, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("tenant:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::TenantRelease, Some(&tenant))
                .await?;
            let id = non_empty(&req.get_ref().hold_id);
            Ok(pb::ReleaseHoldsResponse {
                released: self.vault.release_tenant_hold(&permit, &call, id).await?,
            })
        })
        .await
    }

    async fn list_holds(
        &self,
        req: Request<pb::ListHoldsRequest>,
    ) -> GrpcResult<pb::ListHoldsResponse> {
        self.handle(req, Action::HoldList, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("holds:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::HoldList, Some(&tenant))
                .await?;
            let holds = self.vault.list_holds(&permit).await?;
            Ok(pb::ListHoldsResponse {
                holds: holds.into_iter().map(convert::hold).collect(),
            })
        })
        .await
    }

    async fn cancel_admin_recovery(
        &self,
        req: Request<pb::AdminRecoveryRequest>,
    ) -> GrpcResult<pb::Tenant> {
        self.handle(req, Action::TenantAdminRecoveryCancel, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("tenant:{tenant}"));
            let permit = self
                .begin(
                    &call,
                    &req,
                    Action::TenantAdminRecoveryCancel,
                    Some(&tenant),
                )
                .await?;
            Ok(convert::tenant(
                self.vault.cancel_admin_recovery(&permit, &call).await?,
            ))
        })
        .await
    }
}

#[tonic::async_trait]
impl PrincipalService for Api {
    async fn create_principal(
        &self,
        req: Request<pb::CreatePrincipalRequest>,
    ) -> GrpcResult<pb::CreatePrincipalResponse> {
        self.handle(req, Action::PrincipalCreate, async |call, req| {
            let principal = self.caller(&call, &req).await?;
            let r = req.into_inner();
            let tenant = TenantId::parse(&r.tenant)?;
            call.set_tenant(tenant.as_str());
            let name = PrincipalName::parse(&r.name)?;
            call.set_resource(format!("principal:{}", name.as_str()));
            let roles = r
                .roles
                .iter()
                .map(|s| Role::parse(s))
                .collect::<Result<Vec<_>, _>>()?;
            // Platform principals come in through the bootstrap-admin action;
            // tenant principals through their admin role.
            let action = if principal.tenant.is_none() {
                Action::TenantBootstrapAdmin
            } else {
                Action::PrincipalCreate
            };
            let permit = Self::authorize(&call, &principal, action, Some(&tenant))?;
            let created = self
                .vault
                .create_principal(
                    &permit,
                    &call,
                    PrincipalSpec {
                        name,
                        roles,
                        expires_in_seconds: r
                            .expires_in_seconds
                            .map(|s| ids::seconds("expires_in_seconds", s, 1).map(|d| d.as_secs()))
                            .transpose()?,
                        cert_cn: (!r.client_cert_cn.is_empty()).then_some(r.client_cert_cn),
                        enrolment: (!r.enrolment.is_empty())
                            .then(|| Enrolment::parse("enrolment", &r.enrolment))
                            .transpose()?,
                    },
                )
                .await?;
            Ok(pb::CreatePrincipalResponse {
                principal_id: created.principal_id,
                key_id: created.key_id,
                api_key: created
                    .api_key
                    .map(|k| k.expose().to_owned())
                    .unwrap_or_default(),
            })
        })
        .await
    }

    async fn list_principals(
        &self,
        req: Request<pb::ListPrincipalsRequest>,
    ) -> GrpcResult<pb::ListPrincipalsResponse> {
        self.handle(req, Action::PrincipalList, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource("principals".into());
            let permit = self
                .begin(&call, &req, Action::PrincipalList, Some(&tenant))
                .await?;
            let principals = self.vault.list_principals(&permit).await?;
            Ok(pb::ListPrincipalsResponse {
                principals: principals.into_iter().map(convert::principal).collect(),
            })
        })
        .await
    }

    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> GrpcResult<pb::CreateApiKeyResponse> {
        self.handle(req, Action::ApiKeyCreate, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            let permit = self
                .begin(&call, &req, Action::ApiKeyCreate, Some(&tenant))
                .await?;
            let r = req.into_inner();
            if r.principal_id.is_empty() {
                return Err(Error::invalid("principal_id", "is required"));
            }
            call.set_resource(format!("principal:{}", r.principal_id));
            let (key_id, api_key) = self
                .vault
                .create_api_key(
                    &permit,
                    &call,
                    r.principal_id,
                    r.expires_in_seconds
                        .map(|s| ids::seconds("expires_in_seconds", s, 1).map(|d| d.as_secs()))
                        .transpose()?,
                )
                .await?;
            Ok(pb::CreateApiKeyResponse {
                key_id,
                api_key: api_key.expose().to_owned(),
            })
        })
        .await
    }

    async fn revoke_api_key(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> GrpcResult<pb::ApiKeyInfo> {
        self.handle(req, Action::ApiKeyRevoke, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            let permit = self
                .begin(&call, &req, Action::ApiKeyRevoke, Some(&tenant))
                .await?;
            let key_id = req.into_inner().key_id;
            if key_id.is_empty() {
                return Err(Error::invalid("key_id", "is required"));
            }
            call.set_resource(format!("api-key:{key_id}"));
            let info = self.vault.revoke_api_key(&permit, &call, key_id).await?;
            Ok(convert::api_key(info))
        })
        .await
    }
}

#[tonic::async_trait]
impl RecordService for Api {
    async fn put_record(
        &self,
        req: Request<pb::PutRecordRequest>,
    ) -> GrpcResult<pb::PutRecordResponse> {
        self.handle(req, Action::RecordPut, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            let permit = self
                .begin(&call, &req, Action::RecordPut, Some(&tenant))
                .await?;
            let r = req.into_inner();
            let put = PutRecord {
                subject: convert::opt_subject(&r.subject)?,
                category: Category::parse(&r.category)?,
                key: RecordKey::parse(&r.key)?,
                content_type: ContentType::parse(&r.content_type)?,
                value: Zeroizing::new(r.value),
                expected_version: r
                    .expected_version
                    .map(|v| ids::stored_u64("expected_version", v))
                    .transpose()?,
                reinstate_erased_subject: r.reinstate_erased_subject,
            };
            let version = self.vault.put_record(&permit, &call, put).await?;
            Ok(pb::PutRecordResponse { version })
        })
        .await
    }

    async fn get_record(&self, req: Request<pb::GetRecordRequest>) -> GrpcResult<pb::Record> {
        self.handle(req, Action::RecordGet, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            let permit = self
                .begin(&call, &req, Action::RecordGet, Some(&tenant))
                .await?;
            let r = req.into_inner();
            let rref = RecordRef {
                subject: convert::opt_subject(&r.subject)?,
                category: Category::parse(&r.category)?,
                key: RecordKey::parse(&r.key)?,
            };
            let value = self.vault.get_record(&permit, &call, rref).await?;
            Ok(convert::record(&r.tenant, &r.subject, value))
        })
        .await
    }

    async fn delete_record(
        &self,
        req: Request<pb::DeleteRecordRequest>,
    ) -> GrpcResult<pb::DeleteRecordResponse> {
        self.handle(req, Action::RecordDelete, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            let permit = self
                .begin(&call, &req, Action::RecordDelete, Some(&tenant))
                .await?;
            let r = req.into_inner();
            let rref = RecordRef {
                subject: convert::opt_subject(&r.subject)?,
                category: Category::parse(&r.category)?,
                key: RecordKey::parse(&r.key)?,
            };
            let deleted_version = self
                .vault
                .delete_record(
                    &permit,
                    &call,
                    rref,
                    r.expected_version
                        .map(|v| ids::stored_u64("expected_version", v))
                        .transpose()?,
                )
                .await?;
            Ok(pb::DeleteRecordResponse { deleted_version })
        })
        .await
    }

    async fn list_records(
        &self,
        req: Request<pb::ListRecordsRequest>,
    ) -> GrpcResult<pb::ListRecordsResponse> {
        self.handle(req, Action::RecordList, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            let permit = self
                .begin(&call, &req, Action::RecordList, Some(&tenant))
                .await?;
            let r = req.into_inner();
            let subject = convert::opt_subject(&r.subject)?;
            let category = (!r.category.is_empty())
                .then(|| Category::parse(&r.category))
                .transpose()?;
            let size = ids::page_size(r.page_size)?;
            let (records, next) = self
                .vault
                .list_records(&permit, &call, subject, category, size, &r.page_token)
                .await?;
            Ok(pb::ListRecordsResponse {
                records: records
                    .into_iter()
                    .map(|i| pb::RecordInfo {
                        subject_blind_id: hex::encode(i.subject_blind_id),
                        category: i.category,
                        key: i.key,
                        version: i.version,
                        content_type: i.content_type,
                        size_bytes: i.size,
                        updated_at_unix_ms: i.updated_at,
                    })
                    .collect(),
                next_page_token: next,
            })
        })
        .await
    }
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportSubjectResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SubjectService for Api {
    type ExportSubjectStream = ExportStream;

    async fn export_subject(
        &self,
        req: Request<pb::ExportSubjectRequest>,
    ) -> GrpcResult<ExportStream> {
        self.handle_holding(req, Action::SubjectExport, async |call, req, slot| {
            let tenant = req.get_ref().tenant.clone();
            let permit = self
                .begin(&call, &req, Action::SubjectExport, Some(&tenant))
                .await?;
            let r = req.into_inner();
            let subject = convert::subject(&r.subject)?;
            let (header, records) = self.vault.export_subject(&permit, &call, subject).await?;
            use pb::export_subject_response::Item;
            let subject_id = header.subject.to_string();
            let head = pb::ExportSubjectResponse {
                item: Some(Item::Header(pb::SubjectHeader {
                    tenant: r.tenant.clone(),
                    subject: subject_id.clone(),
                    subject_blind_id: hex::encode(header.subject_blind_id),
                    created_at_unix_ms: header.created_at,
                })),
            };
            let tenant = r.tenant;
            // The stream outlives this handler: it keeps the call's
            // in-flight slot until the client has it all or goes away.
            let rest = ReceiverStream::new(records).map(move |item| {
                let _held = &slot;
                item.map(|item| pb::ExportSubjectResponse {
                    item: Some(match item {
                        ExportItem::Record(v) => {
                            Item::Record(convert::record(&tenant, &subject_id, v))
                        }
                        ExportItem::Access(a) => Item::Access(pb::AccessEntry {
                            seq: a.seq,
                            time_unix_ms: a.time,
                            principal_id: a.principal_id,
                            principal_name: a.principal_name,
                            action: a.action,
                            outcome: a.outcome,
                            purpose: a.purpose,
                        }),
                    }),
                })
                .map_err(Status::from)
            });
            Ok(Box::pin(tokio_stream::once(Ok(head)).chain(rest)) as ExportStream)
        })
        .await
    }

    async fn shred_subject(
        &self,
        req: Request<pb::ShredSubjectRequest>,
    ) -> GrpcResult<pb::DeletionReceipt> {
        self.handle(req, Action::SubjectShred, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            let permit = self
                .begin(&call, &req, Action::SubjectShred, Some(&tenant))
                .await?;
            let subject = convert::subject(&req.get_ref().subject)?;
            let receipt = self.vault.shred_subject(&permit, &call, subject).await?;
            Ok(pb::DeletionReceipt {
                erasure: self.vault.erasure_promise(),
                ..convert::receipt_to_pb(receipt)
            })
        })
        .await
    }

    async fn place_subject_hold(
        &self,
        req: Request<pb::PlaceSubjectHoldRequest>,
    ) -> GrpcResult<pb::Hold> {
        self.handle(req, Action::SubjectHold, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            let permit = self
                .begin(&call, &req, Action::SubjectHold, Some(&tenant))
                .await?;
            let subject = convert::subject(&req.get_ref().subject)?;
            let reason = crate::vault::parse_hold_reason(&req.get_ref().reason)?;
            Ok(convert::hold(
                self.vault
                    .place_subject_hold(&permit, &call, subject, reason)
                    .await?,
            ))
        })
        .await
    }

    async fn release_subject_hold(
        &self,
        req: Request<pb::ReleaseSubjectHoldRequest>,
    ) -> GrpcResult<pb::ReleaseHoldsResponse> {
        self.handle(req, Action::SubjectRelease, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            let permit = self
                .begin(&call, &req, Action::SubjectRelease, Some(&tenant))
                .await?;
            let subject = convert::subject(&req.get_ref().subject)?;
            let id = non_empty(&req.get_ref().hold_id);
            Ok(pb::ReleaseHoldsResponse {
                released: self
                    .vault
                    .release_subject_hold(&permit, &call, subject, id)
                    .await?,
            })
        })
        .await
    }

    async fn touch_subject(
        &self,
        req: Request<pb::TouchSubjectRequest>,
    ) -> GrpcResult<pb::TouchSubjectResponse> {
        self.handle(req, Action::SubjectTouch, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            let permit = self
                .begin(&call, &req, Action::SubjectTouch, Some(&tenant))
                .await?;
            let subject = convert::subject(&req.get_ref().subject)?;
            self.vault.touch_subject(&permit, &call, subject).await?;
            Ok(pb::TouchSubjectResponse {})
        })
        .await
    }

    async fn verify_receipt(
        &self,
        req: Request<pb::VerifyReceiptRequest>,
    ) -> GrpcResult<pb::VerifyReceiptResponse> {
        self.handle(req, Action::ReceiptVerify, async |call, req| {
            let receipt = req
                .get_ref()
                .receipt
                .clone()
                .ok_or_else(|| Error::invalid("receipt", "is required"))?;
            call.set_resource(format!("receipt:{}", receipt.receipt_id));
            let permit = self
                .begin(&call, &req, Action::ReceiptVerify, Some(&receipt.tenant))
                .await?;
            let valid = self
                .vault
                .verify_receipt(&permit, convert::receipt_from_pb(receipt)?)
                .await?;
            Ok(pb::VerifyReceiptResponse { valid })
        })
        .await
    }
}

type AuditStream = Pin<Box<dyn Stream<Item = Result<pb::AuditEntry, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for Api {
    type ListAuditEntriesStream = AuditStream;

    async fn list_audit_entries(
        &self,
        req: Request<pb::ListAuditEntriesRequest>,
    ) -> GrpcResult<AuditStream> {
        self.handle(req, Action::AuditList, async |call, req| {
            let r = req.get_ref().clone();
            let tenant = (!r.tenant.is_empty()).then_some(r.tenant.as_str());
            let principal = self.caller(&call, &req).await?;
            let tenant = tenant.map(TenantId::parse).transpose()?;
            // An auditor's query is about its own tenant; naming another is
            // answered as for a tenant that does not exist.
            let permit = Self::authorize(&call, &principal, Action::AuditList, tenant.as_ref())?;
            call.set_resource("audit".into());
            let limit = match r.limit {
                0 => 1000,
                n if n <= 10_000 => n as usize,
                n => {
                    return Err(Error::invalid(
                        "limit",
                        format!("must be at most 10000, got {n}"),
                    ));
                }
            };
            let outcome = (!r.outcome.is_empty()).then_some(r.outcome);
            if let Some(o) = &outcome
                && !["ok", "denied", "failed"].contains(&o.as_str())
            {
                return Err(Error::invalid("outcome", "must be ok, denied or failed"));
            }
            let filter = audit::Filter {
                tenant: tenant.map(|t| t.as_str().to_owned()),
                since: (r.since_unix_ms != 0).then_some(r.since_unix_ms),
                until: (r.until_unix_ms != 0).then_some(r.until_unix_ms),
                principal: (!r.principal.is_empty()).then_some(r.principal),
                action: (!r.action.is_empty()).then_some(r.action),
                outcome,
            };
            let entries = self
                .vault
                .audit_entries(
                    &permit,
                    filter,
                    ids::stored_u64("after_seq", r.after_seq)?,
                    limit,
                )
                .await?;
            let items: Vec<Result<pb::AuditEntry, Status>> = entries
                .into_iter()
                .map(|e| Ok(convert::audit_entry(e)))
                .collect();
            Ok(Box::pin(tokio_stream::iter(items)) as AuditStream)
        })
        .await
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> GrpcResult<pb::VerifyAuditResponse> {
        self.handle(req, Action::AuditVerify, async |call, req| {
            let permit = self.begin(&call, &req, Action::AuditVerify, None).await?;
            call.set_resource("audit".into());
            let (report, records) = if req.get_ref().records {
                let (report, check) = self.vault.verify_records(&permit).await?;
                (report, Some(check))
            } else {
                (self.vault.verify_audit(&permit).await?, None)
            };
            let (first_bad_seq, problem) = report.problem.unwrap_or_default();
            let records = records.unwrap_or_default();
            Ok(pb::VerifyAuditResponse {
                ok: problem.is_empty() && records.problem_count == 0,
                entries: report.entries,
                head_seq: report.head_seq,
                head: hex::encode(report.head),
                first_bad_seq,
                problem,
                records_checked: records.checked,
                records_unaudited: records.unaudited,
                record_problem_count: records.problem_count,
                record_problems: records.problems,
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl KeyService for Api {
    async fn rotate_tenant_key(
        &self,
        req: Request<pb::RotateTenantKeyRequest>,
    ) -> GrpcResult<pb::TenantKeyStatus> {
        self.handle(req, Action::KeyRotate, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("tenant-kek:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::KeyRotate, Some(&tenant))
                .await?;
            let status = self.vault.rotate_tenant_key(&permit, &call).await?;
            Ok(convert::key_status(&tenant, status))
        })
        .await
    }

    async fn rotate_root_key(
        &self,
        req: Request<pb::RotateRootKeyRequest>,
    ) -> GrpcResult<pb::RotateRootKeyResponse> {
        self.handle(req, Action::KeyRotateRoot, async |call, req| {
            call.set_resource("root-key".into());
            let permit = self.begin(&call, &req, Action::KeyRotateRoot, None).await?;
            let n = self.vault.rotate_root(&permit, &call).await?;
            Ok(pb::RotateRootKeyResponse {
                keys_rewrapped: n as u64,
                root: self.vault.keyring().root_description(),
            })
        })
        .await
    }

    async fn set_rotation_policy(
        &self,
        req: Request<pb::SetRotationPolicyRequest>,
    ) -> GrpcResult<pb::TenantKeyStatus> {
        self.handle(req, Action::KeyPolicy, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("tenant-kek:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::KeyPolicy, Some(&tenant))
                .await?;
            let r = req.into_inner();
            let status = self
                .vault
                .set_rotation_policy(
                    &permit,
                    &call,
                    r.max_age_seconds
                        .map(|s| ids::seconds("max_age_seconds", s, 1))
                        .transpose()?,
                    r.max_encryptions,
                    r.min_decryption_version,
                )
                .await?;
            Ok(convert::key_status(&tenant, status))
        })
        .await
    }

    async fn reencrypt_data_keys(
        &self,
        req: Request<pb::ReencryptDataKeysRequest>,
    ) -> GrpcResult<pb::ReencryptDataKeysResponse> {
        self.handle(req, Action::KeyReencrypt, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("tenant-deks:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::KeyReencrypt, Some(&tenant))
                .await?;
            let subject = convert::opt_subject(&req.get_ref().subject)?;
            let started = self.vault.start_reencrypt(&permit, &call, subject).await?;
            Ok(pb::ReencryptDataKeysResponse {
                jobs_started: started as u64,
            })
        })
        .await
    }

    async fn get_tenant_key_status(
        &self,
        req: Request<pb::GetTenantKeyStatusRequest>,
    ) -> GrpcResult<pb::TenantKeyStatus> {
        self.handle(req, Action::KeyStatus, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("tenant-kek:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::KeyStatus, Some(&tenant))
                .await?;
            let status = self.vault.key_status(&permit).await?;
            Ok(convert::key_status(&tenant, status))
        })
        .await
    }
}

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
