//! Tenants: their rows, states and destruction.

use crate::error::Result;

/// Lifecycle of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantState {
    Active,
    ShredScheduled,
    Shredded,
}

impl TenantState {
    /// The name stored (and MAC'd) for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Active => "active",
            TenantState::ShredScheduled => "shred_scheduled",
            TenantState::Shredded => "shredded",
        }
    }
}

#[derive(Clone, Debug)]
pub struct TenantRow {
    pub id: String,
    pub name: String,
    pub state: TenantState,
    pub created_at: i64,
    pub shred_at: Option<i64>,
    pub kek_version: u32,
    pub wrapped_index_key: Option<Vec<u8>>,
    pub dek_id: Option<String>,
    /// 0: none.
    pub min_decrypt_version: u32,
    /// The tenant's own rotation policy; `None`: the server's.
    pub rotate_after_ms: Option<i64>,
    pub rotate_after_wraps: Option<i64>,
    /// When a pending break-glass admin recovery takes effect.
    pub admin_recovery_at: Option<i64>,
    /// Digest of the tenant's legal holds (`None`: none).
    pub holds_digest: Option<Vec<u8>>,
    /// MAC over the row's security state (`integrity`); `None` until sealed.
    pub mac: Option<Vec<u8>>,
}

/// What a tenant shred destroyed.
#[derive(Debug, Default)]
pub struct TenantDestroyed {
    pub kek_versions: Vec<u32>,
    pub data_keys: usize,
}

/// Tenants: their rows, states and destruction.
pub trait TenantRows {
    fn tenant_get(&self, id: &str) -> Result<Option<TenantRow>>;

    fn tenant_insert(&self, t: &TenantRow) -> Result<()>;

    /// Stores a tenant row's MAC (after any change to its security state).
    fn tenant_set_mac(&self, id: &str, mac: &[u8]) -> Result<()>;

    /// Every tenant id.
    fn tenant_ids(&self) -> Result<Vec<String>>;

    fn tenant_list(&self, after: &str, limit: usize) -> Result<Vec<TenantRow>>;

    fn tenant_set_state(&self, id: &str, state: TenantState, shred_at: Option<i64>) -> Result<()>;

    /// Sets or clears a tenant's pending admin recovery.
    fn tenant_set_admin_recovery(&self, id: &str, at: Option<i64>) -> Result<()>;

    /// Whether the tenant has ever had a principal (revoked or not).
    fn tenant_has_principals(&self, tenant: &str) -> Result<bool>;

    /// Tenants whose scheduled shred is due at `now`.
    fn tenants_due_for_shred(&self, now: i64) -> Result<Vec<String>>;

    /// Destroys every key of a tenant: KEK rows deleted, index key and data keys
    /// overwritten, subjects, principals and API keys removed. Record rows go
    /// later with [`records_purge_destroyed`]: without keys they are noise.
    fn tenant_destroy(&self, id: &str, now: i64) -> Result<TenantDestroyed>;

    fn set_tenant_dek(&self, tenant: &str, dek: &str) -> Result<()>;
}
