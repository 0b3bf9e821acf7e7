//! Records: the sealed values, by (tenant, owner, category, key).

use crate::error::Result;

/// A stored record. `owner` is the subject's blind id, empty for
/// tenant-level records.
#[derive(Clone, Debug)]
pub struct RecordRow {
    pub owner: Vec<u8>,
    pub category: String,
    pub key: String,
    pub version: u64,
    pub dek_id: String,
    pub content_type: String,
    pub ciphertext: Vec<u8>,
    pub size: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Where a record lives: tenant, owner, category, key.
#[derive(Clone, Copy, Debug)]
pub struct RecordAddr<'a> {
    pub tenant: &'a str,
    pub owner: &'a [u8],
    pub category: &'a str,
    pub key: &'a str,
}

/// A record's version and state, without its ciphertext.
#[derive(Clone, Debug)]
pub struct RecordHead {
    pub version: u64,
    pub dek_id: String,
    pub created_at: i64,
    /// A tombstone left by a delete.
    pub deleted: bool,
}

/// A position in (owner, category, key) order, for keyset pagination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordCursor {
    pub owner: Vec<u8>,
    pub category: String,
    pub key: String,
}

/// Records: the sealed values, by (tenant, owner, category, key).
pub trait RecordRows {
    /// A live record (not a tombstone).
    fn record_get(&self, a: RecordAddr<'_>) -> Result<Option<RecordRow>>;

    fn record_head(&self, a: RecordAddr<'_>) -> Result<Option<RecordHead>>;

    fn record_upsert(&self, tenant: &str, r: &RecordRow) -> Result<()>;

    /// Deletes a record's value, leaving a tombstone that keeps its version
    /// (secure_delete overwrites the old ciphertext bytes).
    fn record_delete(&self, a: RecordAddr<'_>, now: i64) -> Result<()>;

    /// Records of a tenant in (owner, category, key) order after `after`,
    /// optionally only one owner's and one category's. Only records whose data
    /// key is alive are listed.
    /// Live records in key order after `after`: at most `limit`, and no more
    /// once their ciphertext reaches `max_bytes` (at least one is returned), so
    /// a page of large values stays bounded in memory.
    fn record_list(
        &self,
        tenant: &str,
        owner: Option<&[u8]>,
        category: Option<&str>,
        after: Option<&RecordCursor>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<RecordRow>>;

    fn records_count_for_dek(&self, dek_id: &str) -> Result<u64>;

    /// Deletes up to `limit` record rows whose data key is destroyed, and
    /// marks each destroyed key whose rows are all gone as purged. Returns
    /// (rows deleted, keys marked); (0, 0) means nothing is left to purge.
    fn records_purge_destroyed(&self, limit: usize) -> Result<(usize, usize)>;
}
