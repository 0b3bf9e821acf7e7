//! Re-encryption jobs: records moving from one data key to another.

use crate::error::Result;
use crate::store::seam::*;

/// A data-key re-encryption in progress.
#[derive(Clone, Debug)]
pub struct ReencryptJob {
    pub old_dek: String,
    pub new_dek: String,
    pub tenant_id: String,
    pub owner: Vec<u8>,
}

/// Re-encryption jobs: records moving from one data key to another.
pub trait ReencryptRows {
    fn reencrypt_insert(&self, j: &ReencryptJob, now: i64) -> Result<()>;

    fn reencrypt_jobs(&self) -> Result<Vec<ReencryptJob>>;

    fn reencrypt_delete(&self, old_dek: &str) -> Result<()>;

    /// Jobs of a tenant: (old, new) pairs, for status and shredding.
    fn reencrypt_jobs_of(&self, tenant: &str) -> Result<Vec<(String, String)>>;

    /// Up to `limit` live records sealed under data key `dek`, with rowids.
    /// Live records under data key `dek` that are not known to be corrupt.
    fn records_under(&self, dek: &str, limit: usize) -> Result<Vec<(i64, RecordRow)>>;

    /// Marks a record that fails authentication, so jobs skip it.
    fn record_mark_corrupt(&self, rowid: i64, now: i64) -> Result<()>;

    /// How many of a tenant's records a job found corrupt (until purged).
    fn corrupt_records(&self, tenant: &str) -> Result<u64>;

    fn record_reseal(&self, rowid: i64, dek: &str, ciphertext: &[u8]) -> Result<()>;

    /// Tombstones (deleted records) under `dek` follow it to `new` so the
    /// version sequence survives the old key's destruction.
    fn tombstones_follow(&self, dek: &str, new: &str) -> Result<()>;
}
