//! TenantService: tenants, their shred schedule, admin recovery and legal
//! holds.

use tonic::Request;

use super::convert;
use super::pb::tenant_service_server::TenantService;
use super::pb::{self};
use super::*;
use crate::authz::Action;
use crate::ids::{self, TenantId};

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
