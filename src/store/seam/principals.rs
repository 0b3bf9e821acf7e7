//! Principals and their API keys (secrets only as hashes).

use crate::error::Result;

#[derive(Clone, Debug)]
pub struct PrincipalRow {
    pub id: String,
    pub tenant_id: Option<String>,
    pub name: String,
    /// Role names, comma-separated.
    pub roles: String,
    pub created_at: i64,
    /// The client-certificate common name the principal is pinned to.
    pub cert_cn: Option<String>,
    /// MAC over the row (`integrity`); `None` until sealed.
    pub mac: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
pub struct ApiKeyRow {
    pub key_id: String,
    pub principal_id: String,
    pub secret_hash: Vec<u8>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// MAC over the row but `last_used_at` (`integrity`); `None` until sealed.
    pub mac: Option<Vec<u8>>,
}

/// Principals and their API keys (secrets only as hashes).
pub trait PrincipalRows {
    fn principal_insert(&self, p: &PrincipalRow) -> Result<()>;

    /// Every principal, for sealing rows written before rows had MACs.
    fn principals_all(&self) -> Result<Vec<PrincipalRow>>;

    fn principal_set_mac(&self, id: &str, mac: &[u8]) -> Result<()>;

    /// Every API key, for sealing rows written before rows had MACs.
    fn api_keys_all(&self) -> Result<Vec<ApiKeyRow>>;

    fn api_key_set_mac(&self, key_id: &str, mac: &[u8]) -> Result<()>;

    fn principal_count(&self) -> Result<u64>;

    /// A tenant's principals, by name.
    fn principals_of_tenant(&self, tenant: &str) -> Result<Vec<PrincipalRow>>;

    /// The keys of a tenant's principals (hashes included; callers drop them).
    fn api_keys_of_tenant(&self, tenant: &str) -> Result<Vec<ApiKeyRow>>;

    fn principal_get(&self, id: &str) -> Result<Option<PrincipalRow>>;

    fn api_key_revoke(&self, key_id: &str, now: i64) -> Result<()>;

    fn api_key_touch(&self, key_id: &str, now: i64) -> Result<()>;

    fn api_key_insert(&self, k: &ApiKeyRow) -> Result<()>;

    /// An API key and the principal holding it.
    fn api_key_lookup(&self, key_id: &str) -> Result<Option<(ApiKeyRow, PrincipalRow)>>;
}
