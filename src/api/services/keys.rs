//! KeyService: key status, rotation, re-encryption and root rotation.

use tonic::Request;

use super::convert;
use super::pb::key_service_server::KeyService;
use super::pb::{self};
use super::*;
use crate::authz::Action;
use crate::ids::{self};

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
