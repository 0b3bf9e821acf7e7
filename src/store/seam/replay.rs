//! What replaying the shred ledger on restore asks of storage.

use crate::error::Result;

/// Keys destroyed at or after `since` (Unix ms): data keys (of tenants not
/// shredded), shredded tenants, retired KEK versions. For reconciling the
/// shred ledger with the database at start.
pub struct DestroyedSince {
    pub deks: Vec<(String, String)>,
    pub tenants: Vec<String>,
    pub keks: Vec<(String, u32)>,
}

/// What replaying the shred ledger on restore asks of storage.
pub trait ReplayRows {
    /// The subject (blind id) whose current data key is `dek`, if any.
    fn subject_of_dek(&self, tenant: &str, dek: &str) -> Result<Option<Vec<u8>>>;

    /// The data key a re-encryption job moves `old_dek`'s records to.
    fn reencrypt_target(&self, old_dek: &str) -> Result<Option<String>>;

    /// Live data keys wrapped under a tenant's KEK `version`.
    fn deks_under_kek(&self, tenant: &str, version: u32) -> Result<Vec<super::DekRow>>;

    /// Whether KEK `version` of `tenant` still has its material.
    fn kek_live(&self, tenant: &str, version: u32) -> Result<bool>;

    fn destroyed_since(&self, since: i64) -> Result<DestroyedSince>;
}
