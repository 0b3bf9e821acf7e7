//! The four `strongbox.v1` services. Every handler follows the same steps:
//! authenticate, parse, authorize, call the vault, translate. `Api::begin`
//! is the one place every call passes through (the audit entry of a later
//! issue is written there and in the vault's write job).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::convert;
use super::pb::{
    self, record_service_server::RecordService, subject_service_server::SubjectService,
};
use super::pb::{principal_service_server::PrincipalService, tenant_service_server::TenantService};
use crate::authz::{self, Action, Permit, Principal, Role};
use crate::error::Error;
use crate::ids::{self, Category, ContentType, PrincipalName, RecordKey, TenantId};
use crate::vault::{PutRecord, RecordRef, Vault};

/// Implements every `strongbox.v1` service over one vault.
#[derive(Clone)]
pub struct Api {
    vault: Arc<Vault>,
}

type GrpcResult<T> = Result<Response<T>, Status>;

impl Api {
    pub fn new(vault: Arc<Vault>) -> Self {
        Api { vault }
    }

    /// Authenticates the caller from `authorization: Bearer <api key>`.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Principal, Error> {
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
        self.vault.authenticate(bearer.trim()).await
    }

    /// Authenticates and authorizes one call: the permit for `action` on
    /// `tenant` (parsed from the request field of that name).
    async fn begin<T>(
        &self,
        req: &Request<T>,
        action: Action,
        tenant: Option<&str>,
    ) -> Result<Permit, Error> {
        let principal = self.caller(req).await?;
        let tenant = tenant.map(TenantId::parse).transpose()?;
        authz::authorize(&principal, action, tenant.as_ref())
    }
}

#[tonic::async_trait]
impl TenantService for Api {
    async fn create_tenant(&self, req: Request<pb::CreateTenantRequest>) -> GrpcResult<pb::Tenant> {
        let permit = self.begin(&req, Action::TenantCreate, None).await?;
        let r = req.into_inner();
        let tenant = TenantId::parse(&r.tenant)?;
        let info = self.vault.create_tenant(&permit, tenant, r.name).await?;
        Ok(Response::new(convert::tenant(info)))
    }

    async fn get_tenant(&self, req: Request<pb::GetTenantRequest>) -> GrpcResult<pb::Tenant> {
        let tenant = req.get_ref().tenant.clone();
        let permit = self.begin(&req, Action::TenantGet, Some(&tenant)).await?;
        Ok(Response::new(convert::tenant(
            self.vault.get_tenant(&permit).await?,
        )))
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> GrpcResult<pb::ListTenantsResponse> {
        let permit = self.begin(&req, Action::TenantList, None).await?;
        let r = req.into_inner();
        let size = ids::page_size(r.page_size)?;
        let (tenants, next) = self.vault.list_tenants(&permit, size, r.page_token).await?;
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: tenants.into_iter().map(convert::tenant).collect(),
            next_page_token: next,
        }))
    }

    async fn schedule_tenant_shred(
        &self,
        req: Request<pb::ScheduleTenantShredRequest>,
    ) -> GrpcResult<pb::Tenant> {
        let tenant = req.get_ref().tenant.clone();
        let permit = self.begin(&req, Action::TenantShred, Some(&tenant)).await?;
        let grace = req.get_ref().grace_seconds.map(Duration::from_secs);
        Ok(Response::new(convert::tenant(
            self.vault.schedule_tenant_shred(&permit, grace).await?,
        )))
    }

    async fn cancel_tenant_shred(
        &self,
        req: Request<pb::CancelTenantShredRequest>,
    ) -> GrpcResult<pb::Tenant> {
        let tenant = req.get_ref().tenant.clone();
        let permit = self
            .begin(&req, Action::TenantCancelShred, Some(&tenant))
            .await?;
        Ok(Response::new(convert::tenant(
            self.vault.cancel_tenant_shred(&permit).await?,
        )))
    }
}

#[tonic::async_trait]
impl PrincipalService for Api {
    async fn create_principal(
        &self,
        req: Request<pb::CreatePrincipalRequest>,
    ) -> GrpcResult<pb::CreatePrincipalResponse> {
        let principal = self.caller(&req).await?;
        let r = req.into_inner();
        let tenant = TenantId::parse(&r.tenant)?;
        let name = PrincipalName::parse(&r.name)?;
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
        let permit = authz::authorize(&principal, action, Some(&tenant))?;
        let created = self.vault.create_principal(&permit, name, roles).await?;
        Ok(Response::new(pb::CreatePrincipalResponse {
            principal_id: created.principal_id,
            key_id: created.key_id,
            api_key: created.api_key.expose().to_owned(),
        }))
    }
}

#[tonic::async_trait]
impl RecordService for Api {
    async fn put_record(
        &self,
        req: Request<pb::PutRecordRequest>,
    ) -> GrpcResult<pb::PutRecordResponse> {
        let tenant = req.get_ref().tenant.clone();
        let permit = self.begin(&req, Action::RecordPut, Some(&tenant)).await?;
        let r = req.into_inner();
        let put = PutRecord {
            subject: convert::opt_subject(&r.subject)?,
            category: Category::parse(&r.category)?,
            key: RecordKey::parse(&r.key)?,
            content_type: ContentType::parse(&r.content_type)?,
            value: Zeroizing::new(r.value),
            expected_version: r.expected_version,
            reinstate_erased_subject: r.reinstate_erased_subject,
        };
        let version = self.vault.put_record(&permit, put).await?;
        Ok(Response::new(pb::PutRecordResponse { version }))
    }

    async fn get_record(&self, req: Request<pb::GetRecordRequest>) -> GrpcResult<pb::Record> {
        let tenant = req.get_ref().tenant.clone();
        let permit = self.begin(&req, Action::RecordGet, Some(&tenant)).await?;
        let r = req.into_inner();
        let rref = RecordRef {
            subject: convert::opt_subject(&r.subject)?,
            category: Category::parse(&r.category)?,
            key: RecordKey::parse(&r.key)?,
        };
        let value = self.vault.get_record(&permit, rref).await?;
        Ok(Response::new(convert::record(&r.tenant, &r.subject, value)))
    }

    async fn delete_record(
        &self,
        req: Request<pb::DeleteRecordRequest>,
    ) -> GrpcResult<pb::DeleteRecordResponse> {
        let tenant = req.get_ref().tenant.clone();
        let permit = self
            .begin(&req, Action::RecordDelete, Some(&tenant))
            .await?;
        let r = req.into_inner();
        let rref = RecordRef {
            subject: convert::opt_subject(&r.subject)?,
            category: Category::parse(&r.category)?,
            key: RecordKey::parse(&r.key)?,
        };
        let deleted_version = self
            .vault
            .delete_record(&permit, rref, r.expected_version)
            .await?;
        Ok(Response::new(pb::DeleteRecordResponse { deleted_version }))
    }

    async fn list_records(
        &self,
        req: Request<pb::ListRecordsRequest>,
    ) -> GrpcResult<pb::ListRecordsResponse> {
        let tenant = req.get_ref().tenant.clone();
        let permit = self.begin(&req, Action::RecordList, Some(&tenant)).await?;
        let r = req.into_inner();
        let subject = convert::opt_subject(&r.subject)?;
        let category = (!r.category.is_empty())
            .then(|| Category::parse(&r.category))
            .transpose()?;
        let size = ids::page_size(r.page_size)?;
        let (records, next) = self
            .vault
            .list_records(&permit, subject, category, size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListRecordsResponse {
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
        }))
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
        let tenant = req.get_ref().tenant.clone();
        let permit = self
            .begin(&req, Action::SubjectExport, Some(&tenant))
            .await?;
        let r = req.into_inner();
        let subject = convert::subject(&r.subject)?;
        let (header, records) = self.vault.export_subject(&permit, subject).await?;
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
        let rest = ReceiverStream::new(records).map(move |item| {
            item.map(|v| pb::ExportSubjectResponse {
                item: Some(Item::Record(convert::record(&tenant, &subject_id, v))),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(
            tokio_stream::once(Ok(head)).chain(rest),
        )))
    }

    async fn shred_subject(
        &self,
        req: Request<pb::ShredSubjectRequest>,
    ) -> GrpcResult<pb::DeletionReceipt> {
        let tenant = req.get_ref().tenant.clone();
        let permit = self
            .begin(&req, Action::SubjectShred, Some(&tenant))
            .await?;
        let subject = convert::subject(&req.get_ref().subject)?;
        let receipt = self.vault.shred_subject(&permit, subject).await?;
        Ok(Response::new(convert::receipt_to_pb(receipt)))
    }

    async fn verify_receipt(
        &self,
        req: Request<pb::VerifyReceiptRequest>,
    ) -> GrpcResult<pb::VerifyReceiptResponse> {
        let tenant = req
            .get_ref()
            .receipt
            .as_ref()
            .map(|r| r.tenant.clone())
            .ok_or_else(|| Error::invalid("receipt", "is required"))?;
        let permit = self
            .begin(&req, Action::ReceiptVerify, Some(&tenant))
            .await?;
        let receipt = convert::receipt_from_pb(req.into_inner().receipt.unwrap_or_default())?;
        let valid = self.vault.verify_receipt(&permit, receipt).await?;
        Ok(Response::new(pb::VerifyReceiptResponse { valid }))
    }
}
