//! Principals and their API keys: creation, listing, revocation.

use super::*;
use crate::api_key;

pub use crate::api_key::ApiKey;
use crate::audit::Call;
use crate::authz::{Action, Permit, Role};
use crate::error::{Error, Result};
use crate::ids::{PrincipalName, TenantId};
use crate::integrity;
use crate::keyring::{self, Keyring};
use crate::now_ms;
use crate::store::{self};
use std::collections::HashMap;
use std::sync::Arc;

/// What a new principal is to be.
pub struct PrincipalSpec {
    pub name: PrincipalName,
    pub roles: Vec<Role>,
    pub expires_in_seconds: Option<u64>,
    /// Pin its keys to a client certificate with this common name (mTLS).
    pub cert_cn: Option<String>,
    /// Register this key (made by its holder) instead of issuing one.
    pub enrolment: Option<api_key::Enrolment>,
}

/// A principal just created, with its one-time API key.
pub struct NewPrincipal {
    pub principal_id: String,
    pub key_id: String,
    /// `None` when the key came from an enrolment: its holder has it.
    pub api_key: Option<ApiKey>,
}

/// Who a new principal is.
pub(super) struct NewPrincipalRow<'a> {
    pub(super) tenant: Option<&'a TenantId>,
    pub(super) name: &'a str,
    pub(super) roles: &'a [Role],
    pub(super) cert_cn: Option<&'a str>,
}

pub(super) fn insert_principal(
    conn: &dyn Tx,
    keys: &Keyring,
    p: NewPrincipalRow<'_>,
    now: i64,
) -> Result<String> {
    let NewPrincipalRow {
        tenant,
        name,
        roles,
        cert_cn,
    } = p;
    let principal_id = keyring::new_id("prn");
    let mut row = store::PrincipalRow {
        id: principal_id.clone(),
        tenant_id: tenant.map(|t| t.as_str().to_owned()),
        name: name.to_owned(),
        roles: roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(","),
        created_at: now,
        cert_cn: cert_cn.map(str::to_owned),
        mac: None,
    };
    row.mac = Some(integrity::principal_mac(&*keys.state_key(conn)?, &row).to_vec());
    conn.principal_insert(&row)?;
    Ok(principal_id)
}

/// Stores an issued key's hash for `principal_id`.
pub(super) fn insert_api_key(
    conn: &dyn Tx,
    keys: &Keyring,
    principal_id: &str,
    key_id: &str,
    hash: &[u8; 32],
    now: i64,
    expires_at: Option<i64>,
) -> Result<()> {
    let mut row = store::ApiKeyRow {
        key_id: key_id.to_owned(),
        principal_id: principal_id.to_owned(),
        secret_hash: hash.to_vec(),
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        mac: None,
    };
    row.mac = Some(integrity::api_key_mac(&*keys.state_key(conn)?, &row).to_vec());
    conn.api_key_insert(&row)
}

/// A tenant's principals and their API keys, every row's MAC checked.
pub(super) fn tenant_principals(
    conn: &dyn Tx,
    keys: &Keyring,
    tenant: &TenantId,
) -> Result<(Vec<store::PrincipalRow>, Vec<store::ApiKeyRow>)> {
    let key = keys.state_key(conn)?;
    let principals = conn.principals_of_tenant(tenant.as_str())?;
    for p in &principals {
        integrity::check_principal(&key, p)?;
    }
    let api_keys = conn.api_keys_of_tenant(tenant.as_str())?;
    for k in &api_keys {
        integrity::check_api_key(&key, k)?;
    }
    Ok((principals, api_keys))
}

/// An expiry `secs` from now, if given.
pub(super) fn expiry(secs: Option<u64>) -> Result<Option<i64>> {
    secs.map(|s| {
        i64::try_from(s)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .and_then(|ms| now_ms().checked_add(ms))
            .ok_or_else(|| Error::invalid("expires_in_seconds", "is too large"))
    })
    .transpose()
}

/// An API key's metadata (never its secret or hash).
#[derive(Clone, Debug)]
pub struct ApiKeyInfo {
    pub key_id: String,
    pub principal_id: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A principal and its keys.
#[derive(Clone, Debug)]
pub struct PrincipalInfo {
    pub principal_id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: i64,
    pub keys: Vec<ApiKeyInfo>,
}

pub(super) fn key_not_found(key_id: &str) -> Error {
    Error::NotFound(format!("API key '{key_id}' not found"))
}

impl From<store::ApiKeyRow> for ApiKeyInfo {
    fn from(k: store::ApiKeyRow) -> Self {
        ApiKeyInfo {
            key_id: k.key_id,
            principal_id: k.principal_id,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        }
    }
}

impl Vault {
    /// Creates a principal in the permit's tenant and issues its API key.
    /// With the operator's bootstrap permit, only a first admin.
    pub async fn create_principal(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        spec: PrincipalSpec,
    ) -> Result<NewPrincipal> {
        let PrincipalSpec {
            name,
            roles,
            expires_in_seconds,
            cert_cn,
            enrolment,
        } = spec;
        permit.require_any(&[Action::PrincipalCreate, Action::TenantBootstrapAdmin])?;
        let tenant = permit.tenant_for(permit.action())?.clone();
        if roles.is_empty() {
            return Err(Error::invalid("roles", "at least one role is required"));
        }
        if roles.iter().any(|r| r.is_platform()) {
            return Err(Error::invalid(
                "roles",
                "operator is a platform role; tenant principals cannot hold it",
            ));
        }
        let bootstrap = permit.action() == Action::TenantBootstrapAdmin;
        if bootstrap && roles != [Role::Admin] {
            return Err(Error::PermissionDenied(
                "an operator may create only a tenant's first admin (roles: admin)".into(),
            ));
        }
        if bootstrap && enrolment.is_none() && self.limits.require_admin_enrolment {
            return Err(Error::invalid(
                "enrolment",
                "this server never hands an operator a tenant admin's key: the tenant's admin runs `strongbox enrol`, keeps the key and gives you the enrolment it prints",
            ));
        }
        let expires_at = expiry(expires_in_seconds)?;
        let (key_id, api_key, hash) = match enrolment {
            Some(e) => (e.key_id, None, e.secret_hash),
            None => {
                let (id, key, hash) = api_key::issue();
                (id, Some(key), hash)
            }
        };
        let kid = key_id.clone();
        let keys = self.keys.clone();
        let principal_id = self
            .mutate(call, move |conn| {
                let row = active_tenant(conn, &keys, &tenant)?;
                let now = now_ms();
                if bootstrap {
                    admin_recovery::admit_operator_admin(conn, &keys, &row, now)?;
                }
                let who = NewPrincipalRow {
                    tenant: Some(&tenant),
                    name: name.as_str(),
                    roles: &roles,
                    cert_cn: cert_cn.as_deref(),
                };
                let id = insert_principal(conn, &keys, who, now)?;
                insert_api_key(conn, &keys, &id, &kid, &hash, now, expires_at)?;
                Ok(id)
            })
            .await?;
        self.auth_cache().key_made();
        Ok(NewPrincipal {
            principal_id,
            key_id,
            api_key,
        })
    }

    /// The permit's tenant's principals and their keys.
    pub async fn list_principals(&self, permit: &Permit) -> Result<Vec<PrincipalInfo>> {
        let tenant = permit.tenant_for(Action::PrincipalList)?.clone();
        let keyring = self.keys.clone();
        self.store
            .read(move |conn| {
                active_tenant(conn, &keyring, &tenant)?;
                let (principals, api_keys) = tenant_principals(conn, &keyring, &tenant)?;
                let mut keys: HashMap<String, Vec<ApiKeyInfo>> = HashMap::new();
                for k in api_keys {
                    keys.entry(k.principal_id.clone())
                        .or_default()
                        .push(k.into());
                }
                Ok(principals
                    .into_iter()
                    .map(|p| PrincipalInfo {
                        keys: keys.remove(&p.id).unwrap_or_default(),
                        roles: p.roles.split(',').map(str::to_owned).collect(),
                        principal_id: p.id,
                        name: p.name,
                        created_at: p.created_at,
                    })
                    .collect())
            })
            .await
    }

    /// Issues another key for a principal of the permit's tenant.
    pub async fn create_api_key(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        principal_id: String,
        expires_in_seconds: Option<u64>,
    ) -> Result<(String, ApiKey)> {
        let tenant = permit.tenant_for(Action::ApiKeyCreate)?.clone();
        let expires_at = expiry(expires_in_seconds)?;
        let (key_id, api_key, hash) = api_key::issue();
        let kid = key_id.clone();
        let keys = self.keys.clone();
        self.mutate(call, move |conn| {
            active_tenant(conn, &keys, &tenant)?;
            let p = integrity::principal(conn, &keys, &principal_id)?
                .filter(|p| p.tenant_id.as_deref() == Some(tenant.as_str()))
                .ok_or_else(|| Error::NotFound(format!("principal '{principal_id}' not found")))?;
            insert_api_key(conn, &keys, &p.id, &kid, &hash, now_ms(), expires_at)
        })
        .await?;
        self.auth_cache().key_made();
        Ok((key_id, api_key))
    }

    /// Revokes a key of the permit's tenant; the next call with it fails.
    pub async fn revoke_api_key(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        key_id: String,
    ) -> Result<ApiKeyInfo> {
        let tenant = permit.tenant_for(Action::ApiKeyRevoke)?.clone();
        let kid = key_id.clone();
        let keys = self.keys.clone();
        let info = self
            .mutate(call, move |conn| {
                active_tenant(conn, &keys, &tenant)?;
                let (key, _) = integrity::api_key(conn, &keys, &kid)?
                    .filter(|(_, p)| p.tenant_id.as_deref() == Some(tenant.as_str()))
                    .ok_or_else(|| key_not_found(&kid))?;
                let now = now_ms();
                conn.api_key_revoke(&key.key_id, now)?;
                integrity::seal_api_key(conn, &keys, &key.key_id)?;
                Ok(ApiKeyInfo {
                    revoked_at: key.revoked_at.or(Some(now)),
                    ..key.into()
                })
            })
            .await?;
        // Committed: drop it from the cache so the very next call is refused.
        self.auth_cache().revoke(&key_id);
        Ok(info)
    }
}
