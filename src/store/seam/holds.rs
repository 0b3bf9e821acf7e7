//! Legal holds.

use crate::error::Result;

/// A legal hold on a subject (`owner`: its blind id) or a whole tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRow {
    pub id: String,
    pub tenant_id: String,
    /// `None`: the whole tenant.
    pub owner: Option<Vec<u8>>,
    pub reason: String,
    pub created_at: i64,
    /// The principal that placed it.
    pub created_by: String,
}

/// Legal holds.
pub trait HoldRows {
    fn hold_insert(&self, h: &HoldRow) -> Result<()>;

    /// Every hold of a tenant (subject and tenant-wide), in id order.
    fn holds_of_tenant(&self, tenant: &str) -> Result<Vec<HoldRow>>;

    /// Deletes hold `id` of `tenant`; whether it existed.
    fn hold_delete(&self, tenant: &str, id: &str) -> Result<bool>;

    /// Deletes a tenant's holds (all of them, at tenant shred).
    fn holds_delete_tenant(&self, tenant: &str) -> Result<()>;

    fn tenant_set_holds_digest(&self, id: &str, digest: Option<&[u8]>) -> Result<()>;
}
