//! RecordService: put, get, delete and list records.

use tonic::Request;

use super::convert;
use super::pb::{self, record_service_server::RecordService};
use super::*;
use crate::authz::Action;
use crate::ids::{self, Category, ContentType, RecordKey};
use crate::vault::{PutRecord, RecordRef};

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
                value: crate::crypto::Plaintext::new(r.value),
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
