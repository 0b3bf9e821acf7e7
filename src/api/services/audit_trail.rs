//! AuditService: verify and read the audit trail.

use tonic::{Request, Status};

use super::convert;
use super::pb::{self, audit_service_server::AuditService};
use super::*;
use crate::audit::{self};
use crate::authz::Action;
use crate::error::Error;
use crate::ids::{self, TenantId};

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
