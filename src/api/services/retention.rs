//! The retention RPCs, and the subject's touch.

use tonic::Request;

use super::{Api, GrpcResult};
use crate::api::pb::{self, retention_service_server::RetentionService};
use crate::authz::Action;
use crate::error::Error;
use crate::ids::{self, Category};
use crate::store::After;
use crate::vault::Retention;

fn day(unix_day: i64) -> String {
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(unix_day).unwrap_or(0) * 86_400);
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned()
}

fn secs(ms: Option<i64>) -> u64 {
    ms.map_or(0, |ms| u64::try_from(ms / 1000).unwrap_or(0))
}

fn retention(r: Retention) -> pb::Retention {
    let effective = r.effective();
    pb::Retention {
        policy_keep_seconds: secs(r.policy.map(|p| p.0)),
        policy_after: r
            .policy
            .map(|p| p.1.as_str().to_owned())
            .unwrap_or_default(),
        default_keep_seconds: secs(r.default_ms),
        max_seconds: secs(r.max_ms),
        effective_keep_seconds: secs(effective.map(|e| e.0)),
        effective_after: effective
            .map(|e| e.1.as_str().to_owned())
            .unwrap_or_default(),
        category: r.category,
    }
}

fn after(s: &str) -> Result<After, Error> {
    match s {
        "" => Ok(After::Write),
        s => {
            After::parse(s).ok_or_else(|| Error::invalid("after", "must be write or last-activity"))
        }
    }
}

#[tonic::async_trait]
impl RetentionService for Api {
    async fn set_retention_policy(
        &self,
        req: Request<pb::SetRetentionPolicyRequest>,
    ) -> GrpcResult<pb::Retention> {
        self.handle(req, Action::RetentionSet, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            let permit = self
                .begin(&call, &req, Action::RetentionSet, Some(&tenant))
                .await?;
            let r = req.into_inner();
            let category = Category::parse(&r.category)?;
            let keep = ids::seconds("keep_seconds", r.keep_seconds, 1)?;
            let after = after(&r.after)?;
            let set = self
                .vault
                .set_retention(&permit, &call, category, keep, after)
                .await?;
            Ok(retention(set))
        })
        .await
    }

    async fn set_retention_default(
        &self,
        req: Request<pb::SetRetentionDefaultRequest>,
    ) -> GrpcResult<pb::RetentionDefault> {
        self.handle(req, Action::RetentionDefault, async |call, req| {
            let permit = self
                .begin(&call, &req, Action::RetentionDefault, None)
                .await?;
            let r = req.into_inner();
            let category = Category::parse(&r.category)?;
            let keep = r
                .keep_seconds
                .map(|s| ids::seconds("keep_seconds", s, 1))
                .transpose()?;
            let max = r
                .max_seconds
                .map(|s| ids::seconds("max_seconds", s, 1))
                .transpose()?;
            let d = self
                .vault
                .set_retention_default(&permit, &call, category, keep, max)
                .await?;
            Ok(pb::RetentionDefault {
                category: d.category,
                keep_seconds: secs(d.keep_ms),
                max_seconds: secs(d.max_ms),
            })
        })
        .await
    }

    async fn list_retention(
        &self,
        req: Request<pb::ListRetentionRequest>,
    ) -> GrpcResult<pb::ListRetentionResponse> {
        self.handle(req, Action::RetentionList, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("retention:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::RetentionList, Some(&tenant))
                .await?;
            let list = self.vault.list_retention(&permit).await?;
            Ok(pb::ListRetentionResponse {
                retention: list.into_iter().map(retention).collect(),
            })
        })
        .await
    }

    async fn preview_retention(
        &self,
        req: Request<pb::PreviewRetentionRequest>,
    ) -> GrpcResult<pb::PreviewRetentionResponse> {
        self.handle(req, Action::RetentionPreview, async |call, req| {
            let tenant = req.get_ref().tenant.clone();
            call.set_resource(format!("retention:{tenant}"));
            let permit = self
                .begin(&call, &req, Action::RetentionPreview, Some(&tenant))
                .await?;
            let within = ids::seconds("within_seconds", req.get_ref().within_seconds, 0)?;
            let p = self.vault.preview_retention(&permit, within).await?;
            let count = |(category, d, records): (String, i64, u64)| pb::RetentionCount {
                category,
                day: day(d),
                records,
            };
            Ok(pb::PreviewRetentionResponse {
                due: p.due.into_iter().map(count).collect(),
                expired: p.history.into_iter().map(count).collect(),
            })
        })
        .await
    }
}
