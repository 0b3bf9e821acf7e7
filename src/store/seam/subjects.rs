//! Data subjects: their blind ids, data keys and deletion receipts.

use crate::error::Result;

#[derive(Clone, Debug)]
pub struct SubjectRow {
    /// `None` once the subject was erased.
    pub dek_id: Option<String>,
    pub sealed_subject: Option<Vec<u8>>,
    pub created_at: i64,
    /// The subject's last write or touch (retention by last activity).
    pub last_activity_at: Option<i64>,
}

/// Data subjects: their blind ids, data keys and deletion receipts.
pub trait SubjectRows {
    fn subject_get(&self, tenant: &str, blind: &[u8]) -> Result<Option<SubjectRow>>;

    /// Creates the subject, or brings an erased one back with a new data key.
    fn subject_activate(
        &self,
        tenant: &str,
        blind: &[u8],
        dek_id: &str,
        sealed: &[u8],
        now: i64,
    ) -> Result<()>;

    /// Marks a subject erased and overwrites its sealed id. The row stays as a
    /// tombstone so later writes for the subject are refused by default.
    fn subject_erase(&self, tenant: &str, blind: &[u8], now: i64) -> Result<()>;

    fn receipt_insert(
        &self,
        id: &str,
        tenant: &str,
        subject: &[u8],
        receipt: (&[u8], &[u8]),
        now: i64,
    ) -> Result<()>;

    /// The newest receipt issued for a subject: (body, mac).
    fn receipt_latest(&self, tenant: &str, subject: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>>;

    /// Every live data key of an owner: the current one, and during a
    /// re-encryption the old one too.
    fn live_deks_of_owner(&self, tenant: &str, owner: &[u8]) -> Result<Vec<String>>;

    /// Every owner (subject blind id, or empty for tenant-level) of a tenant
    /// that has a live data key, with that key.
    fn owners_of_tenant(&self, tenant: &str) -> Result<Vec<(Vec<u8>, String)>>;

    fn set_subject_dek(
        &self,
        tenant: &str,
        blind: &[u8],
        dek: &str,
        sealed_subject: &[u8],
    ) -> Result<()>;
}
