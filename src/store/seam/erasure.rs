//! Erasure epochs: which epoch key each tenant key is wrapped under.

use crate::error::Result;

/// A live tenant key and the epoch it is wrapped under (`None`: the root
/// key).
#[derive(Clone, Debug)]
pub struct TenantKeyWrap {
    pub tenant: String,
    /// The KEK version; `None` for the index key.
    pub kek_version: Option<u32>,
    pub wrapped: Vec<u8>,
    pub epoch: Option<u64>,
}

/// Erasure epochs: which epoch key each tenant key is wrapped under.
pub trait ErasureRows {
    /// Up to `limit` live tenant keys not wrapped under `epoch`.
    fn tenant_keys_outside_epoch(&self, epoch: u64, limit: usize) -> Result<Vec<TenantKeyWrap>>;

    /// Stores a tenant key's new wrapping and the epoch it is under.
    fn set_tenant_key_wrap(
        &self,
        tenant: &str,
        kek_version: Option<u32>,
        wrapped: &[u8],
        epoch: Option<u64>,
    ) -> Result<()>;

    /// The epoch a tenant's index key is wrapped under (`None`: the root key).
    fn index_epoch(&self, tenant: &str) -> Result<Option<u64>>;

    /// The epochs live tenant keys are wrapped under, oldest first.
    fn epochs_in_use(&self) -> Result<Vec<u64>>;
}
