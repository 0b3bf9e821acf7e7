//! SubjectService: export, access history, shred and receipts of one data
//! subject.

use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use super::convert;
use super::pb::subject_service_server::SubjectService;
use super::pb::{self};
use super::*;
use crate::authz::Action;
use crate::error::Error;
use crate::vault::ExportItem;

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
