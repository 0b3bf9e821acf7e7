//! PrincipalService: principals and their API keys.

use tonic::Request;

use super::convert;
use super::pb::principal_service_server::PrincipalService;
use super::pb::{self};
use super::*;
use crate::api_key::Enrolment;
use crate::authz::{Action, Role};
use crate::error::Error;
use crate::ids::{self, PrincipalName, TenantId};
use crate::vault::PrincipalSpec;

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
