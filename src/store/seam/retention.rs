//! Retention policies, the sweep's queries, and its history.

use crate::error::Result;

/// What a retention window counts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// The record's last write.
    Write,
    /// The subject's last activity: any write to its records, or a touch.
    LastActivity,
}

impl After {
    pub fn as_str(self) -> &'static str {
        match self {
            After::Write => "write",
            After::LastActivity => "last-activity",
        }
    }

    pub fn parse(s: &str) -> Option<After> {
        match s {
            "write" => Some(After::Write),
            "last-activity" => Some(After::LastActivity),
            _ => None,
        }
    }
}

/// A tenant's own policy for a category.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRow {
    pub category: String,
    pub keep_ms: i64,
    pub after: After,
}

/// The platform's default and cap for a category.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultRow {
    pub category: String,
    pub keep_ms: Option<i64>,
    pub max_ms: Option<i64>,
}

/// Retention policies, the sweep's queries, and its history.
pub trait RetentionRows {
    fn retention_set(&self, tenant: &str, p: &PolicyRow, now: i64) -> Result<()>;

    fn retention_policies(&self, tenant: &str) -> Result<Vec<PolicyRow>>;

    fn retention_default_set(&self, d: &DefaultRow, now: i64) -> Result<()>;

    fn retention_defaults(&self) -> Result<Vec<DefaultRow>>;

    fn retention_default(&self, category: &str) -> Result<Option<DefaultRow>>;

    /// The live records of `tenant`'s `category` whose window ended at `cutoff`
    /// (last write, or their subject's last activity, at or before it), not
    /// held: (rowid, owner), at most `limit`. Tenant-level records count from
    /// their last write whatever the basis.
    fn retention_due(
        &self,
        tenant: &str,
        category: &str,
        after: After,
        cutoff: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>>;

    /// How many live records of the category expire by `cutoff`, per Unix day
    /// of expiry (`keep_ms` after their basis), not held.
    fn retention_due_by_day(
        &self,
        tenant: &str,
        category: &str,
        after: After,
        keep_ms: i64,
        cutoff: i64,
    ) -> Result<Vec<(i64, u64)>>;

    /// Turns a record into an expired tombstone: no value, the version kept.
    fn record_expire(&self, rowid: i64, now: i64) -> Result<()>;

    /// Whether an owner still has a live record.
    fn owner_has_live_records(&self, tenant: &str, owner: &[u8]) -> Result<bool>;

    fn retention_history_add(
        &self,
        tenant: &str,
        category: &str,
        day: i64,
        expired: u64,
    ) -> Result<()>;

    /// The tenant's expiry history, newest day first, at most `limit` rows:
    /// (category, day, expired).
    fn retention_history(&self, tenant: &str, limit: usize) -> Result<Vec<(String, i64, u64)>>;

    /// Sets the subject's last activity to `now`; whether it is a live subject.
    fn subject_touch(&self, tenant: &str, blind: &[u8], now: i64) -> Result<bool>;

    /// Active tenants' ids.
    fn active_tenant_ids(&self) -> Result<Vec<String>>;

    /// Whether `owner` has a live record of `category` past `cutoff` (by its
    /// basis): what a hold on it keeps from expiring.
    fn owner_has_due(
        &self,
        tenant: &str,
        owner: &[u8],
        category: &str,
        after: After,
        cutoff: i64,
    ) -> Result<bool>;
}
