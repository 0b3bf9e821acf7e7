//! Tenants: creation, listing, and scheduling or cancelling a tenant shred
//! (the shred itself is `jobs::tenant_shred`).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit::Call;
use crate::authz::{self, Action, Permit};
use crate::crypto::{self};
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::integrity;
use crate::keyring::Keyring;
use crate::now_ms;
use crate::store::{TenantRow, TenantState};

/// A tenant as callers see it.
#[derive(Clone, Debug)]
pub struct TenantInfo {
    pub id: String,
    pub name: String,
    pub state: TenantState,
    pub created_at: i64,
    pub shred_at: Option<i64>,
    pub kek_version: u32,
    /// When a pending break-glass admin recovery takes effect.
    pub admin_recovery_at: Option<i64>,
}

/// The tenant row, if the tenant exists and is active.
pub(super) fn active_tenant(conn: &dyn Tx, keys: &Keyring, tenant: &TenantId) -> Result<TenantRow> {
    let row = integrity::tenant(conn, keys, tenant.as_str())?
        .ok_or_else(|| authz::tenant_not_found(tenant))?;
    match row.state {
        TenantState::Active => Ok(row),
        TenantState::ShredScheduled => Err(Error::FailedPrecondition(format!(
            "tenant '{tenant}' is suspended: its shred is scheduled for {}; an operator can run `strongbox tenant cancel-shred {tenant}`",
            fmt_time(row.shred_at.unwrap_or_default())
        ))),
        TenantState::Shredded => Err(Error::FailedPrecondition(format!(
            "tenant '{tenant}' has been shredded; its keys are destroyed"
        ))),
    }
}

/// A `ListTenants` page token: the last tenant id of the page, tagged, so
/// that a tenant-shaped string the server never issued is refused.
pub(super) fn encode_tenant_cursor(last: &str) -> String {
    hex::encode(crypto::encode_fields(&[b"tenants", last.as_bytes()]))
}

/// The tenant id a `ListTenants` page token continues after ("" for none).
pub(super) fn decode_tenant_cursor(token: &str) -> Result<String> {
    if token.is_empty() {
        return Ok(String::new());
    }
    let bad = || Error::invalid("page_token", "is not a token this server issued");
    let bytes = hex::decode(token).map_err(|_| bad())?;
    match crypto::decode_fields(&bytes).as_deref() {
        Some([tag, id]) if tag == b"tenants" => {
            let id = String::from_utf8(id.clone()).map_err(|_| bad())?;
            TenantId::parse(&id).map_err(|_| bad())?;
            Ok(id)
        }
        _ => Err(bad()),
    }
}

impl From<TenantRow> for TenantInfo {
    fn from(t: TenantRow) -> Self {
        TenantInfo {
            id: t.id,
            name: t.name,
            state: t.state,
            created_at: t.created_at,
            shred_at: t.shred_at,
            kek_version: t.kek_version,
            admin_recovery_at: t.admin_recovery_at,
        }
    }
}

impl Vault {
    /// Creates a tenant with its index key, KEK v1 and tenant-level data key.
    pub async fn create_tenant(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        tenant: TenantId,
        name: String,
    ) -> Result<TenantInfo> {
        permit.require(Action::TenantCreate)?;
        if name.len() > 256 || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "name",
                "must be at most 256 bytes without control characters",
            ));
        }
        // Keys are made inside the job: serialized with a root rotation.
        let keyring = self.keys.clone();
        self.mutate(call, move |conn| {
            let t = tenant.as_str();
            if conn.tenant_get(t)?.is_some() {
                return Err(Error::AlreadyExists(format!("tenant '{t}' already exists")));
            }
            let keys = keyring.new_tenant_keys(conn, &tenant)?;
            let now = now_ms();
            let mut row = TenantRow {
                id: t.to_owned(),
                name: name.clone(),
                state: TenantState::Active,
                created_at: now,
                shred_at: None,
                kek_version: keys.kek_version,
                wrapped_index_key: Some(keys.wrapped_index_key.clone()),
                dek_id: Some(keys.dek.id.clone()),
                min_decrypt_version: 0,
                rotate_after_ms: None,
                rotate_after_wraps: None,
                admin_recovery_at: None,
                holds_digest: None,
                mac: None,
            };
            row.mac = Some(integrity::tenant_mac(&*keyring.state_key(conn)?, &row).to_vec());
            conn.tenant_insert(&row)?;
            conn.kek_insert(t, keys.kek_version, (&keys.wrapped_kek, keys.epoch), now)?;
            conn.set_tenant_key_wrap(t, None, &keys.wrapped_index_key, keys.epoch)?;
            conn.dek_insert(&keys.dek, now)?;
            // The tenant data key's wrap: the tenant's own new row.
            conn.kek_count_wraps(t, keys.kek_version, 1)?;
            Ok(row.into())
        })
        .await
    }

    pub async fn get_tenant(&self, permit: &Permit) -> Result<TenantInfo> {
        let tenant = permit.tenant_for(Action::TenantGet)?.clone();
        self.tenant_info(tenant).await
    }

    /// Tenant `tenant` as stored (after a use case that checked its permit).
    pub(super) async fn tenant_info(&self, tenant: TenantId) -> Result<TenantInfo> {
        let keys = self.keys.clone();
        self.store
            .read(move |c| {
                integrity::tenant(c, &keys, tenant.as_str())?
                    .map(TenantInfo::from)
                    .ok_or_else(|| authz::tenant_not_found(&tenant))
            })
            .await
    }

    /// A page of tenants in id order, and the token of the next page.
    pub async fn list_tenants(
        &self,
        permit: &Permit,
        page_size: usize,
        token: String,
    ) -> Result<(Vec<TenantInfo>, String)> {
        permit.require(Action::TenantList)?;
        let token = decode_tenant_cursor(&token)?;
        let keys = self.keys.clone();
        let mut rows = self
            .store
            .read(move |c| {
                let rows = c.tenant_list(&token, page_size + 1)?;
                let key = keys.state_key(c)?;
                for r in &rows {
                    integrity::check_tenant(&key, r)?;
                }
                Ok(rows)
            })
            .await?;
        let next = if rows.len() > page_size {
            rows.truncate(page_size);
            rows.last()
                .map(|t| encode_tenant_cursor(&t.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows.into_iter().map(TenantInfo::from).collect(), next))
    }

    /// Suspends the tenant and schedules the destruction of its keys after
    /// `grace` (the default if `None`); a zero grace shreds at once.
    pub async fn schedule_tenant_shred(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        grace: Option<Duration>,
    ) -> Result<TenantInfo> {
        let tenant = permit.tenant_for(Action::TenantShred)?.clone();
        let grace = grace.unwrap_or(self.limits.default_shred_grace);
        let grace_ms = i64::try_from(grace.as_millis())
            .map_err(|_| Error::invalid("grace_seconds", "is too large"))?;
        let t = tenant.clone();
        let keys = self.keys.clone();
        let c = call.clone();
        let info = self
            .mutate(call, move |conn| {
                let row = integrity::tenant(conn, &keys, t.as_str())?
                    .ok_or_else(|| authz::tenant_not_found(&t))?;
                // A retried request (a queue, a runbook after a timeout):
                // the schedule already made, or the shred already done,
                // answers it unchanged; the entry says it was a repeat.
                if row.state != TenantState::Active {
                    c.note_resource(&format!("repeat-of:{}", row.state.as_str()));
                    return Ok((row.into(), true));
                }
                holds::refuse_if_held(
                    conn,
                    &c,
                    &row,
                    holds::Held::Tenant,
                    &format!("tenant '{t}'"),
                )?;
                let at = now_ms().saturating_add(grace_ms);
                conn.tenant_set_state(t.as_str(), TenantState::ShredScheduled, Some(at))?;
                integrity::seal_tenant(conn, &keys, t.as_str())?;
                Ok((
                    TenantInfo {
                        state: TenantState::ShredScheduled,
                        shred_at: Some(at),
                        ..row.into()
                    },
                    false,
                ))
            })
            .await?;
        let (info, repeat) = info;
        if grace.is_zero() && !repeat {
            self.execute_tenant_shred(&tenant).await?;
            return self.tenant_info(tenant).await;
        }
        Ok(info)
    }

    pub async fn cancel_tenant_shred(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
    ) -> Result<TenantInfo> {
        let tenant = permit.tenant_for(Action::TenantCancelShred)?.clone();
        let keys = self.keys.clone();
        self.mutate(call, move |conn| {
            let row = integrity::tenant(conn, &keys, tenant.as_str())?
                .ok_or_else(|| authz::tenant_not_found(&tenant))?;
            if row.state != TenantState::ShredScheduled {
                return Err(Error::FailedPrecondition(format!(
                    "tenant '{tenant}' has no shred scheduled (it is {})",
                    match row.state {
                        TenantState::Shredded => "already shredded",
                        _ => "active",
                    }
                )));
            }
            conn.tenant_set_state(tenant.as_str(), TenantState::Active, None)?;
            integrity::seal_tenant(conn, &keys, tenant.as_str())?;
            Ok(TenantInfo {
                state: TenantState::Active,
                shred_at: None,
                ..row.into()
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RecordCursor;

    #[test]
    fn fail_tenant_page_tokens_the_server_never_issued() {
        let t = encode_tenant_cursor("acme");
        assert_eq!(decode_tenant_cursor(&t).unwrap(), "acme");
        assert_eq!(decode_tenant_cursor("").unwrap(), "");
        for bad in [
            "acme",
            "zz",
            &hex::encode(b"acme"),
            &encode_cursor(&RecordCursor {
                owner: vec![],
                category: "c".into(),
                key: "k".into(),
            }),
        ] {
            assert!(decode_tenant_cursor(bad).is_err(), "{bad}");
        }
    }
}
