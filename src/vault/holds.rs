//! Legal holds: "deletion subject to legal obligations".
//!
//! A hold is placed on a subject (privacy officer or admin) or on a whole
//! tenant (admin or operator), with a reason and an id; holds stack, and
//! each is released by its id. While one applies, everything that would
//! destroy the held data refuses (calls: `FAILED_PRECONDITION` naming the
//! hold and its reason) or skips (background jobs): subject shred, tenant
//! shred (scheduling and execution), the destruction of a data key after
//! re-encryption, and retention expiry. Reads and writes go on.
//!
//! A tenant-wide hold holds every subject of the tenant; any hold in a
//! tenant holds the tenant's own shred (it would destroy the held subject).
//!
//! Integrity: the tenant row carries a digest of all the tenant's holds
//! under its MAC, recomputed whenever a hold is placed or released, and
//! checked whenever holds are read. A hold deleted (or added, or edited)
//! outside Strongbox is `DATA_LOSS`, so a removed hold cannot be forged.

use std::sync::Arc;

use crate::store::prelude::*;

use super::Vault;
use crate::audit::Call;
use crate::authz::{self, Action, Permit};
use crate::crypto::{self, encode_fields};
use crate::error::{Error, Result};
use crate::ids::SubjectId;
use crate::integrity;
use crate::keyring::{self, Keyring};
use crate::now_ms;
use crate::store::{HoldRow, TenantRow, TenantState};

/// (job, hold) pairs already reported, kept at most; past it the set
/// starts over (a job may then be reported once more).
const HELD_REPORTS_KEPT: usize = 10_000;

/// Longest hold reason, in bytes.
pub const MAX_REASON: usize = 256;

/// A hold's reason: required, at most 256 printable ASCII bytes. It is a
/// case reference, never personal data.
pub fn parse_reason(reason: &str) -> Result<String> {
    if reason.is_empty() {
        return Err(Error::invalid(
            "reason",
            "is required: say why the data is held (a case or ticket reference, never personal data)",
        ));
    }
    if reason.len() > MAX_REASON {
        return Err(Error::invalid(
            "reason",
            format!("is {} bytes; at most {MAX_REASON}", reason.len()),
        ));
    }
    if !reason.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Error::invalid(
            "reason",
            "must be printable ASCII (no control characters)",
        ));
    }
    Ok(reason.to_owned())
}

/// A hold id as callers give it.
fn parse_hold_id(id: &str) -> Result<String> {
    let ok = id
        .strip_prefix("hold-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(Error::invalid(
            "hold_id",
            "must be a hold id as `hold list` shows it (hold-<32 hex>)",
        ));
    }
    Ok(id.to_owned())
}

/// The digest the tenant row seals: every hold, in id order.
fn digest(holds: &[HoldRow]) -> Option<Vec<u8>> {
    if holds.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    for h in holds {
        parts.push(encode_fields(&[
            h.id.as_bytes(),
            h.tenant_id.as_bytes(),
            if h.owner.is_some() { b"s" } else { b"t" },
            h.owner.as_deref().unwrap_or_default(),
            h.reason.as_bytes(),
            &h.created_at.to_be_bytes(),
            h.created_by.as_bytes(),
        ]));
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Some(crypto::sha256(&encode_fields(&refs)).to_vec())
}

/// The tenant's holds, checked against the digest its MAC'd row carries.
pub(super) fn checked_holds(conn: &dyn Tx, tenant: &TenantRow) -> Result<Vec<HoldRow>> {
    let holds = conn.holds_of_tenant(&tenant.id)?;
    let found = digest(&holds);
    let same = match (&found, &tenant.holds_digest) {
        (None, None) => true,
        (Some(a), Some(b)) => crypto::ct_eq(a, b),
        _ => false,
    };
    if !same {
        let e = Error::Corrupt(format!(
            "tenant '{}': its legal holds do not match their sealed digest: a hold was removed, added or edited outside Strongbox",
            tenant.id
        ));
        tracing::error!(target: "strongbox::tamper", error = %e, "SECURITY STATE TAMPERING DETECTED");
        return Err(e);
    }
    Ok(holds)
}

/// Recomputes the tenant's holds digest after a change, and reseals it.
fn reseal(conn: &dyn Tx, keys: &Keyring, tenant: &str) -> Result<()> {
    let holds = conn.holds_of_tenant(tenant)?;
    conn.tenant_set_holds_digest(tenant, digest(&holds).as_deref())?;
    integrity::seal_tenant(conn, keys, tenant)
}

/// What a hold blocks.
#[derive(Clone, Copy)]
pub(super) enum Held<'a> {
    /// One subject's data (its shred, expiry, key destruction): held by
    /// its own holds and the tenant's.
    Owner(&'a [u8]),
    /// The whole tenant (its shred): held by any hold in it.
    Tenant,
}

/// The first hold that blocks `what`, if any.
pub(super) fn blocking(
    conn: &dyn Tx,
    tenant: &TenantRow,
    what: Held<'_>,
) -> Result<Option<HoldRow>> {
    if tenant.holds_digest.is_none() {
        // The digest is sealed: no digest, no holds (checked_holds would
        // find any row added behind its back when holds are next read).
        return Ok(None);
    }
    let holds = checked_holds(conn, tenant)?;
    Ok(holds.into_iter().find(|h| match (what, &h.owner) {
        (Held::Tenant, _) | (_, None) => true,
        (Held::Owner(owner), Some(o)) => o.as_slice() == owner,
    }))
}

/// The refusal for an operation `what` that `hold` blocks.
pub(super) fn refusal(what: &str, hold: &HoldRow) -> Error {
    Error::FailedPrecondition(format!(
        "{what} is under legal hold {} ({}); it must be released first",
        hold.id, hold.reason
    ))
}

/// Refuses the call if a hold blocks `what`, noting the hold in its audit
/// entry.
pub(super) fn refuse_if_held(
    conn: &dyn Tx,
    call: &Call,
    tenant: &TenantRow,
    what: Held<'_>,
    describe: &str,
) -> Result<()> {
    match blocking(conn, tenant, what)? {
        Some(hold) => {
            call.note_resource(&format!("held-by:{}", hold.id));
            Err(refusal(describe, &hold))
        }
        None => Ok(()),
    }
}

/// A hold as callers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldInfo {
    pub id: String,
    pub tenant: String,
    /// The held subject's blind id; `None` for a tenant-wide hold.
    pub subject_blind_id: Option<Vec<u8>>,
    pub reason: String,
    pub created_at: i64,
    pub created_by: String,
}

impl From<HoldRow> for HoldInfo {
    fn from(h: HoldRow) -> Self {
        HoldInfo {
            id: h.id,
            tenant: h.tenant_id,
            subject_blind_id: h.owner,
            reason: h.reason,
            created_at: h.created_at,
            created_by: h.created_by,
        }
    }
}

impl Vault {
    /// For a background job about to destroy data of `tenant` (`owner`'s,
    /// or the whole tenant's with `None`): the hold that blocks it, if
    /// any. The first time a given hold blocks a given job it is audited
    /// (`action` refused with FAILED_PRECONDITION, the hold in the
    /// resource) and logged; later passes skip quietly.
    pub(super) async fn held_for_job(
        &self,
        action: &'static str,
        tenant: &str,
        owner: Option<Vec<u8>>,
        resource: String,
    ) -> Result<Option<HoldRow>> {
        let keys = self.keys.clone();
        let t = tenant.to_owned();
        let o = owner.clone();
        let hold = self
            .store
            .read(move |conn| {
                let Some(row) = integrity::tenant(conn, &keys, &t)? else {
                    return Ok(None);
                };
                let what = match &o {
                    Some(o) => Held::Owner(o),
                    None => Held::Tenant,
                };
                blocking(conn, &row, what)
            })
            .await?;
        let Some(hold) = hold else {
            return Ok(None);
        };
        let first = {
            let mut seen = self.held_reported.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= HELD_REPORTS_KEPT {
                seen.clear();
            }
            seen.insert(format!("{action} {resource} {}", hold.id))
        };
        if first {
            tracing::warn!(tenant, %resource, hold = %hold.id, "{action} skipped: under legal hold");
            let call = Arc::new(Call::system(action));
            call.set_tenant(tenant);
            call.set_resource(format!("{resource} held-by:{}", hold.id));
            let code = refusal("", &hold).grpc_code();
            self.record(&call, (crate::audit::Outcome::Failed, code))
                .await?;
        }
        Ok(Some(hold))
    }

    /// Places a hold on a subject of the permit's tenant.
    pub async fn place_subject_hold(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        subject: SubjectId,
        reason: String,
    ) -> Result<HoldInfo> {
        let tenant = permit.tenant_for(Action::SubjectHold)?.clone();
        self.place_hold(call, tenant, Some(subject), reason).await
    }

    /// Places a hold on the whole of the permit's tenant.
    pub async fn place_tenant_hold(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        reason: String,
    ) -> Result<HoldInfo> {
        let tenant = permit.tenant_for(Action::TenantHold)?.clone();
        self.place_hold(call, tenant, None, reason).await
    }

    async fn place_hold(
        &self,
        call: &Arc<Call>,
        tenant: crate::ids::TenantId,
        subject: Option<SubjectId>,
        reason: String,
    ) -> Result<HoldInfo> {
        let keys = self.keys.clone();
        let c = call.clone();
        self.mutate(call, move |conn| {
            // A tenant whose shred is scheduled can still be held: that is
            // when litigation most needs to stop it.
            let row = integrity::tenant(conn, &keys, tenant.as_str())?
                .ok_or_else(|| authz::tenant_not_found(&tenant))?;
            if row.state == TenantState::Shredded {
                return Err(Error::FailedPrecondition(format!(
                    "tenant '{tenant}' has been shredded; there is nothing left to hold"
                )));
            }
            checked_holds(conn, &row)?;
            let owner = match &subject {
                Some(s) => Some(keys.blind_id(conn, &tenant, s)?.to_vec()),
                None => None,
            };
            let hold = HoldRow {
                id: keyring::new_id("hold"),
                tenant_id: tenant.as_str().to_owned(),
                owner,
                reason: reason.clone(),
                created_at: now_ms(),
                created_by: c.principal(),
            };
            c.set_resource(hold_resource(&hold));
            conn.hold_insert(&hold)?;
            reseal(conn, &keys, tenant.as_str())?;
            Ok(hold.into())
        })
        .await
    }

    /// Releases hold `id` of a subject, or every hold on the subject.
    /// Returns the released ids.
    pub async fn release_subject_hold(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        subject: SubjectId,
        id: Option<String>,
    ) -> Result<Vec<String>> {
        let tenant = permit.tenant_for(Action::SubjectRelease)?.clone();
        self.release(call, tenant, Some(subject), id).await
    }

    /// Releases tenant-wide hold `id`, or every tenant-wide hold.
    pub async fn release_tenant_hold(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        id: Option<String>,
    ) -> Result<Vec<String>> {
        let tenant = permit.tenant_for(Action::TenantRelease)?.clone();
        self.release(call, tenant, None, id).await
    }

    async fn release(
        &self,
        call: &Arc<Call>,
        tenant: crate::ids::TenantId,
        subject: Option<SubjectId>,
        id: Option<String>,
    ) -> Result<Vec<String>> {
        let id = id.as_deref().map(parse_hold_id).transpose()?;
        let keys = self.keys.clone();
        let c = call.clone();
        self.mutate(call, move |conn| {
            let row = integrity::tenant(conn, &keys, tenant.as_str())?
                .ok_or_else(|| authz::tenant_not_found(&tenant))?;
            let owner = match &subject {
                Some(s) => Some(keys.blind_id(conn, &tenant, s)?.to_vec()),
                None => None,
            };
            c.set_resource(match &owner {
                Some(o) => format!("holds:subject:{}", hex::encode(o)),
                None => format!("holds:tenant:{tenant}"),
            });
            let mine: Vec<HoldRow> = checked_holds(conn, &row)?
                .into_iter()
                .filter(|h| h.owner == owner)
                .filter(|h| id.as_ref().is_none_or(|want| &h.id == want))
                .collect();
            if let Some(want) = &id
                && mine.is_empty()
            {
                return Err(Error::NotFound(format!(
                    "hold_id: no hold {want} on this {}",
                    if owner.is_some() { "subject" } else { "tenant" }
                )));
            }
            for h in &mine {
                conn.hold_delete(tenant.as_str(), &h.id)?;
            }
            if let [one] = mine.as_slice() {
                c.set_resource(hold_resource(one));
            }
            reseal(conn, &keys, tenant.as_str())?;
            Ok(mine.into_iter().map(|h| h.id).collect())
        })
        .await
    }

    /// Every hold of the permit's tenant.
    pub async fn list_holds(&self, permit: &Permit) -> Result<Vec<HoldInfo>> {
        let tenant = permit.tenant_for(Action::HoldList)?.clone();
        let keys = self.keys.clone();
        self.store
            .read(move |conn| {
                let row = integrity::tenant(conn, &keys, tenant.as_str())?
                    .ok_or_else(|| authz::tenant_not_found(&tenant))?;
                Ok(checked_holds(conn, &row)?
                    .into_iter()
                    .map(HoldInfo::from)
                    .collect())
            })
            .await
    }
}

/// How the audit log names a hold.
fn hold_resource(h: &HoldRow) -> String {
    match &h.owner {
        Some(o) => format!("hold:{} subject:{}", h.id, hex::encode(o)),
        None => format!("hold:{} tenant:{}", h.id, h.tenant_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_required_short_and_printable() {
        assert!(parse_reason("LIT-2026-114 (Smith v. Acme)").is_ok());
        for bad in ["", "tab\there", "new\nline", &"x".repeat(257)] {
            let e = parse_reason(bad).unwrap_err();
            assert!(e.to_string().starts_with("reason:"), "{e}");
        }
        assert!(parse_reason(&"x".repeat(256)).is_ok());
    }

    #[test]
    fn the_digest_covers_every_field() {
        let h = HoldRow {
            id: "hold-1".into(),
            tenant_id: "t".into(),
            owner: Some(vec![1; 32]),
            reason: "r".into(),
            created_at: 5,
            created_by: "prn".into(),
        };
        let d = digest(std::slice::from_ref(&h));
        assert_eq!(digest(&[]), None);
        for changed in [
            HoldRow {
                id: "hold-2".into(),
                ..h.clone()
            },
            HoldRow {
                owner: None,
                ..h.clone()
            },
            HoldRow {
                owner: Some(vec![2; 32]),
                ..h.clone()
            },
            HoldRow {
                reason: "s".into(),
                ..h.clone()
            },
            HoldRow {
                created_at: 6,
                ..h.clone()
            },
            HoldRow {
                created_by: "x".into(),
                ..h.clone()
            },
        ] {
            assert_ne!(digest(&[changed]), d);
        }
    }
}
