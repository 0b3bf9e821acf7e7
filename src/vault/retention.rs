//! Retention: "we retain data for 12 months from the date of last
//! activity", "deleted according to your retention settings, with a
//! maximum of 90 days".
//!
//! A tenant admin sets a policy per category: keep records a duration after
//! their last write, or after the subject's last activity (any write to the
//! subject's records, or `TouchSubject`). The operator sets a platform
//! default and a cap per category. The effective window of a (tenant,
//! category) is the tenant's policy, else the default (by last write), else
//! the cap alone, and never more than the cap; with none of them the data
//! is kept until deleted.
//!
//! The housekeeping sweep (`jobs::retention_sweep`) turns every record past its window into an
//! expired tombstone (no value; the version kept so an old ciphertext can
//! never be replayed into it) and, when a subject's last live record goes,
//! destroys the subject's keys like a shred, with a receipt whose reason is
//! `retention`. Lookups use the indexes on (tenant, category, last write)
//! and (tenant, last activity); the sweep works in batches with a pause
//! between them, and writes one audit entry per batch per tenant and
//! category (`retention.expire`, with the count in its resource). Held
//! subjects and held tenants are skipped.

use std::sync::Arc;
use std::time::Duration;

use super::holds::{self, Held};
use super::{Vault, active_tenant, subject_not_found};
use crate::audit::Call;
use crate::authz::{Action, Permit};
use crate::error::{Error, Result};
use crate::ids::{Category, SubjectId};
use crate::integrity;
use crate::now_ms;
use crate::store::prelude::*;
use crate::store::{After, DefaultRow, PolicyRow};

pub(super) const DAY_MS: i64 = 86_400_000;

/// A category's retention in a tenant, as in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    pub category: String,
    /// The tenant's own policy.
    pub policy: Option<(i64, After)>,
    /// The platform's default (by last write) and cap.
    pub default_ms: Option<i64>,
    pub max_ms: Option<i64>,
}

impl Retention {
    /// The window in force and what it counts from; `None`: kept until
    /// deleted.
    pub fn effective(&self) -> Option<(i64, After)> {
        let (keep, after) = match (self.policy, self.default_ms, self.max_ms) {
            (Some(p), _, _) => p,
            (None, Some(d), _) => (d, After::Write),
            (None, None, Some(m)) => (m, After::Write),
            (None, None, None) => return None,
        };
        Some((self.max_ms.map_or(keep, |m| keep.min(m)), after))
    }
}

/// What `retention preview` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preview {
    /// Records that would expire by the horizon: (category, Unix day of
    /// expiry, count). Held records are left out.
    pub due: Vec<(String, i64, u64)>,
    /// Records expired so far: (category, Unix day, count), newest first.
    pub history: Vec<(String, i64, u64)>,
}

fn duration_ms(field: &'static str, d: Duration) -> Result<i64> {
    let ms = i64::try_from(d.as_millis()).map_err(|_| Error::invalid(field, "is too large"))?;
    if ms < 1000 {
        return Err(Error::invalid(field, "must be at least 1s"));
    }
    Ok(ms)
}

fn human(ms: i64) -> String {
    crate::ids::fmt_duration(Duration::from_millis(ms.max(0) as u64))
}

/// Every category with a policy or a default in the tenant.
pub(super) fn retentions(conn: &dyn Tx, tenant: &str) -> Result<Vec<Retention>> {
    let mut out: std::collections::BTreeMap<String, Retention> = Default::default();
    let blank = |c: &str| Retention {
        category: c.to_owned(),
        policy: None,
        default_ms: None,
        max_ms: None,
    };
    for d in conn.retention_defaults()? {
        let r = out
            .entry(d.category.clone())
            .or_insert_with(|| blank(&d.category));
        r.default_ms = d.keep_ms;
        r.max_ms = d.max_ms;
    }
    for p in conn.retention_policies(tenant)? {
        let r = out
            .entry(p.category.clone())
            .or_insert_with(|| blank(&p.category));
        r.policy = Some((p.keep_ms, p.after));
    }
    Ok(out.into_values().collect())
}

impl Vault {
    /// Sets the permit's tenant's policy for a category, up to the cap.
    pub async fn set_retention(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        category: Category,
        keep: Duration,
        after: After,
    ) -> Result<Retention> {
        let tenant = permit.tenant_for(Action::RetentionSet)?.clone();
        let keep_ms = duration_ms("keep", keep)?;
        let keys = self.keys.clone();
        let c = call.clone();
        self.mutate(call, move |conn| {
            active_tenant(conn, &keys, &tenant)?;
            let cat = category.as_str();
            c.set_resource(format!("retention:{cat}"));
            if let Some(max) = conn.retention_default(cat)?.and_then(|d| d.max_ms)
                && keep_ms > max
            {
                return Err(Error::invalid(
                    "keep",
                    format!(
                        "{} exceeds the platform cap of {} for category '{cat}'",
                        human(keep_ms),
                        human(max)
                    ),
                ));
            }
            let policy = PolicyRow {
                category: cat.to_owned(),
                keep_ms,
                after,
            };
            conn.retention_set(tenant.as_str(), &policy, now_ms())?;
            retentions(conn, tenant.as_str())?
                .into_iter()
                .find(|r| r.category == cat)
                .ok_or_else(|| Error::Internal("a policy just set is missing".into()))
        })
        .await
    }

    /// Sets the platform's default and/or cap for a category (a field not
    /// given keeps its value).
    pub async fn set_retention_default(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        category: Category,
        keep: Option<Duration>,
        max: Option<Duration>,
    ) -> Result<DefaultRow> {
        permit.require(Action::RetentionDefault)?;
        self.write_retention_default(call, category, keep, max)
            .await
    }

    async fn write_retention_default(
        &self,
        call: &Arc<Call>,
        category: Category,
        keep: Option<Duration>,
        max: Option<Duration>,
    ) -> Result<DefaultRow> {
        let keep_ms = keep.map(|d| duration_ms("keep", d)).transpose()?;
        let max_ms = max.map(|d| duration_ms("max", d)).transpose()?;
        if keep_ms.is_none() && max_ms.is_none() {
            return Err(Error::invalid("keep", "give keep, max or both"));
        }
        let c = call.clone();
        self.mutate(call, move |conn| {
            let cat = category.as_str();
            c.set_resource(format!("retention-default:{cat}"));
            let old = conn.retention_default(cat)?;
            let row = DefaultRow {
                category: cat.to_owned(),
                keep_ms: keep_ms.or(old.as_ref().and_then(|o| o.keep_ms)),
                max_ms: max_ms.or(old.as_ref().and_then(|o| o.max_ms)),
            };
            if let (Some(k), Some(m)) = (row.keep_ms, row.max_ms)
                && k > m
            {
                return Err(Error::invalid(
                    "keep",
                    format!("the default {} exceeds the cap {}", human(k), human(m)),
                ));
            }
            conn.retention_default_set(&row, now_ms())?;
            Ok(row)
        })
        .await
    }

    /// Applies the server configuration's defaults and caps (trusted: it
    /// comes from the operator's config file), audited as the platform's.
    pub async fn apply_retention_defaults(
        &self,
        defaults: &[crate::config::RetentionDefaultConfig],
    ) -> Result<()> {
        for d in defaults {
            let category = Category::parse(&d.category)?;
            let call = Arc::new(Call::system("retention.default"));
            self.write_retention_default(&call, category, d.keep, d.max)
                .await?;
        }
        Ok(())
    }

    /// The retention in force for each category of the permit's tenant.
    pub async fn list_retention(&self, permit: &Permit) -> Result<Vec<Retention>> {
        let tenant = permit.tenant_for(Action::RetentionList)?.clone();
        let keys = self.keys.clone();
        self.store
            .read(move |conn| {
                integrity::tenant(conn, &keys, tenant.as_str())?
                    .ok_or_else(|| crate::authz::tenant_not_found(&tenant))?;
                retentions(conn, tenant.as_str())
            })
            .await
    }

    /// A dry run: what would expire within `within` from now, and what
    /// has expired.
    pub async fn preview_retention(&self, permit: &Permit, within: Duration) -> Result<Preview> {
        let tenant = permit.tenant_for(Action::RetentionPreview)?.clone();
        let within = i64::try_from(within.as_millis())
            .map_err(|_| Error::invalid("within", "is too large"))?;
        let keys = self.keys.clone();
        self.store
            .read(move |conn| {
                let row = integrity::tenant(conn, &keys, tenant.as_str())?
                    .ok_or_else(|| crate::authz::tenant_not_found(&tenant))?;
                let mut due = Vec::new();
                // A tenant-wide hold holds everything.
                if holds::blocking(conn, &row, Held::Owner(&[]))?.is_none() {
                    let horizon = now_ms().saturating_add(within);
                    for r in retentions(conn, tenant.as_str())? {
                        let Some((keep, after)) = r.effective() else {
                            continue;
                        };
                        let cutoff = horizon.saturating_sub(keep);
                        for (day, n) in conn.retention_due_by_day(
                            tenant.as_str(),
                            &r.category,
                            after,
                            keep,
                            cutoff,
                        )? {
                            due.push((r.category.clone(), day, n));
                        }
                    }
                }
                let history = conn.retention_history(tenant.as_str(), 1000)?;
                Ok(Preview { due, history })
            })
            .await
    }

    /// Records that the subject was active now (its records kept by last
    /// activity live on).
    pub async fn touch_subject(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        subject: SubjectId,
    ) -> Result<()> {
        let tenant = permit.tenant_for(Action::SubjectTouch)?.clone();
        let keys = self.keys.clone();
        let c = call.clone();
        self.mutate(call, move |conn| {
            active_tenant(conn, &keys, &tenant)?;
            let blind = keys.blind_id(conn, &tenant, &subject)?;
            c.set_resource(format!("subject:{}", hex::encode(blind)));
            if !conn.subject_touch(tenant.as_str(), &blind, now_ms())? {
                return Err(subject_not_found());
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_bounds_whatever_is_in_force() {
        let r = |policy, default_ms, max_ms| Retention {
            category: "c".into(),
            policy,
            default_ms,
            max_ms,
        };
        assert_eq!(r(None, None, None).effective(), None);
        assert_eq!(r(None, Some(5), None).effective(), Some((5, After::Write)));
        assert_eq!(r(None, None, Some(9)).effective(), Some((9, After::Write)));
        assert_eq!(
            r(Some((20, After::LastActivity)), Some(5), Some(9)).effective(),
            Some((9, After::LastActivity))
        );
        assert_eq!(
            r(Some((3, After::Write)), Some(5), Some(9)).effective(),
            Some((3, After::Write))
        );
    }
}
