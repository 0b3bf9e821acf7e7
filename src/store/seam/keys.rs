//! Key rows: tenant key-encryption keys, data keys, index keys, rotation
//! state and the vault's own keys in `meta`.

use crate::error::Result;

/// One KEK version, for `key status`.
#[derive(Clone, Debug)]
pub struct KekRow {
    pub version: u32,
    pub created_at: i64,
    pub wraps: u64,
    pub retired_at: Option<i64>,
    /// Data keys still wrapped under it.
    pub data_keys: u64,
    /// When a call last used data under it (as last recorded).
    pub last_used_at: Option<i64>,
}

/// A data key row; `wrapped` is `None` once destroyed.
#[derive(Clone, Debug)]
pub struct DekRow {
    pub id: String,
    pub tenant_id: String,
    pub owner: Vec<u8>,
    pub kek_version: u32,
    pub wrapped: Option<Vec<u8>>,
}

/// A tenant's current KEK and its rotation policy, for the scheduler.
#[derive(Clone, Debug)]
pub struct RotationState {
    pub tenant: String,
    pub version: u32,
    pub created_at: i64,
    pub wraps: u64,
    /// The tenant's own policy; `None`: the server's default.
    pub max_age_ms: Option<i64>,
    pub max_wraps: Option<u64>,
}

/// Key rows: tenant key-encryption keys, data keys, index keys, rotation state and the vault's own keys in `meta`.
pub trait KeyRows {
    fn kek_insert(
        &self,
        tenant: &str,
        version: u32,
        wrapping: (&[u8], Option<u64>),
        now: i64,
    ) -> Result<()>;

    /// A KEK version's wrapped bytes; `None` if it does not exist or was
    /// retired (its bytes overwritten).
    fn kek_get(&self, tenant: &str, version: u32) -> Result<Option<(Vec<u8>, Option<u64>)>>;

    fn keks_of_tenant(&self, tenant: &str) -> Result<Vec<KekRow>>;

    /// Records that a call used data under a KEK version at `at` (keeps the latest).
    fn kek_note_use(&self, tenant: &str, version: u32, at: i64) -> Result<()>;

    fn set_min_decrypt_version(&self, tenant: &str, version: u32) -> Result<()>;

    /// Counts `n` more encryptions under a KEK version.
    fn kek_count_wraps(&self, tenant: &str, version: u32, n: u64) -> Result<()>;

    /// Makes `version` the tenant's current KEK.
    fn tenant_set_kek_version(&self, tenant: &str, version: u32) -> Result<()>;

    /// Up to `limit` live data keys of active tenants wrapped under a KEK
    /// version older than their tenant's current one, after row `after` in
    /// the order they were made (oldest first): the rewrap job's work, with
    /// each key's target version and row number (the next page's cursor).
    fn deks_to_rewrap(&self, after: i64, limit: usize) -> Result<Vec<(DekRow, u32, i64)>>;

    fn dek_rewrapped(&self, id: &str, kek_version: u32, wrapped: &[u8]) -> Result<()>;

    /// Old KEK versions no live data key uses any more: (tenant, version).
    fn keks_to_retire(&self) -> Result<Vec<(String, u32)>>;

    /// Destroys a KEK version's material: the wrapped bytes are overwritten
    /// (secure_delete) by an empty blob; the row stays for `key status`.
    fn kek_retire(&self, tenant: &str, version: u32, now: i64) -> Result<()>;

    /// Stores a new data key (its wrap is counted by the keyring, and
    /// written by housekeeping: `kek_count_wraps`).
    fn dek_insert(&self, d: &DekRow, now: i64) -> Result<()>;

    fn dek_get(&self, id: &str) -> Result<Option<DekRow>>;

    /// Overwrites a data key's wrapped bytes (secure_delete zeroes the old cell).
    fn dek_destroy(&self, id: &str, now: i64) -> Result<()>;

    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>>;

    fn meta_put(&self, name: &str, value: &[u8]) -> Result<()>;

    /// Every tenant's index key wrapped by the root key directly (shredded
    /// tenants have none; the rest are under an erasure epoch).
    fn index_keys(&self) -> Result<Vec<(String, Vec<u8>)>>;

    fn set_index_key(&self, tenant: &str, wrapped: &[u8]) -> Result<()>;

    /// Every KEK version not retired and wrapped by the root key directly
    /// (not under an erasure epoch): (tenant, version, wrapped).
    fn live_keks(&self) -> Result<Vec<(String, u32, Vec<u8>)>>;

    fn set_kek(&self, tenant: &str, version: u32, wrapped: &[u8]) -> Result<()>;

    /// Every active tenant's rotation state.
    fn rotation_states(&self) -> Result<Vec<RotationState>>;

    /// One tenant's rotation state.
    fn rotation_state(&self, tenant: &str) -> Result<Option<RotationState>>;

    fn set_rotation_policy(
        &self,
        tenant: &str,
        max_age_ms: Option<i64>,
        max_wraps: Option<u64>,
    ) -> Result<()>;
}
