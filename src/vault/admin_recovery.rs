//! Break-glass admin recovery: the one way an operator gets an admin into
//! a tenant that already has principals.
//!
//! An operator creates a tenant's first admin directly (ideally from the
//! admin's own enrolment, so it never holds the key). After that, a tenant
//! whose admins lost their keys is recovered like this: the operator asks
//! (`tenant.admin-recovery`), the request is stored in the tenant's MAC'd
//! state and shown by `tenant get`, and only `admin_recovery_delay` later
//! (24 h by default) may the operator create one admin. Any admin of the
//! tenant with a live key, or an operator, can call it off meanwhile
//! (`tenant.admin-recovery.cancel`). Every step is audited. So an operator
//! cannot quietly give itself a tenant's plaintext: it must announce the
//! attempt a full delay ahead, in the tenant's own audit trail.

use std::sync::Arc;

use crate::store::prelude::*;

use super::{TenantInfo, Vault, active_tenant, fmt_time};
use crate::audit::Call;
use crate::authz::{self, Action, Permit};
use crate::error::{Error, Result};
use crate::integrity;
use crate::keyring::Keyring;
use crate::now_ms;
use crate::store::TenantRow;

/// Whether the operator may create an admin in `tenant` now: always for a
/// tenant that never had a principal (its first admin); otherwise only
/// once a requested recovery has taken effect, which this consumes.
pub(super) fn admit_operator_admin(
    conn: &dyn Tx,
    keys: &Keyring,
    tenant: &TenantRow,
    now: i64,
) -> Result<()> {
    let id = tenant.id.as_str();
    if !conn.tenant_has_principals(id)? {
        return Ok(());
    }
    match tenant.admin_recovery_at {
        Some(at) if at <= now => {
            conn.tenant_set_admin_recovery(id, None)?;
            integrity::seal_tenant(conn, keys, id)?;
            tracing::warn!(
                tenant = id,
                "break-glass admin recovery used: the operator created an admin"
            );
            Ok(())
        }
        Some(at) => Err(Error::FailedPrecondition(format!(
            "tenant '{id}': the admin recovery takes effect at {}; until then its admins can call it off",
            fmt_time(at)
        ))),
        None => Err(Error::FailedPrecondition(format!(
            "tenant '{id}' already has principals, so its admins create further ones; if no admin can act, request a break-glass recovery (`strongbox tenant recover-admin {id}`), which takes effect after the admin recovery delay"
        ))),
    }
}

impl Vault {
    /// Asks for a break-glass admin recovery of the permit's tenant; it
    /// takes effect `admin_recovery_delay` from now. Asking again while one
    /// is pending keeps the first one's time.
    pub async fn request_admin_recovery(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
    ) -> Result<TenantInfo> {
        let tenant = permit.tenant_for(Action::TenantAdminRecovery)?.clone();
        let delay = i64::try_from(self.limits.admin_recovery_delay.as_millis())
            .map_err(|_| Error::invalid("admin_recovery_delay", "is too large"))?;
        let keys = self.keys.clone();
        let row = self
            .mutate(call, move |conn| {
                let row = active_tenant(conn, &keys, &tenant)?;
                if !conn.tenant_has_principals(tenant.as_str())? {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant '{tenant}' has no principals yet: create its first admin instead"
                    )));
                }
                if row.admin_recovery_at.is_some() {
                    return Ok(row);
                }
                let at = now_ms().saturating_add(delay);
                conn.tenant_set_admin_recovery(tenant.as_str(), Some(at))?;
                integrity::seal_tenant(conn, &keys, tenant.as_str())?;
                Ok(TenantRow {
                    admin_recovery_at: Some(at),
                    ..row
                })
            })
            .await?;
        tracing::warn!(
            tenant = %row.id,
            effective_at = %fmt_time(row.admin_recovery_at.unwrap_or_default()),
            "break-glass admin recovery requested"
        );
        Ok(row.into())
    }

    /// Calls off a pending admin recovery of the permit's tenant (nothing
    /// to do if none is pending).
    pub async fn cancel_admin_recovery(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
    ) -> Result<TenantInfo> {
        let tenant = permit
            .tenant_for(Action::TenantAdminRecoveryCancel)?
            .clone();
        let keys = self.keys.clone();
        let row = self
            .mutate(call, move |conn| {
                let row = integrity::tenant(conn, &keys, tenant.as_str())?
                    .ok_or_else(|| authz::tenant_not_found(&tenant))?;
                if row.admin_recovery_at.is_none() {
                    return Ok(row);
                }
                conn.tenant_set_admin_recovery(tenant.as_str(), None)?;
                integrity::seal_tenant(conn, &keys, tenant.as_str())?;
                Ok(TenantRow {
                    admin_recovery_at: None,
                    ..row
                })
            })
            .await?;
        Ok(row.into())
    }
}
