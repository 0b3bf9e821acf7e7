//! Strongbox: a multi-tenant encrypted data vault served over gRPC.
//!
//! Records are sealed with AES-256-GCM under per-subject data keys, wrapped
//! by per-tenant key-encryption keys, wrapped by a root key. Erasure is
//! crypto-shredding: destroying a key makes everything under it unreadable.
//!
//! # Layout
//!
//! - [`ids`]: identifiers parsed once at the edge (`TenantId`, `SubjectId`, ...).
//! - [`error`]: the error enum, named by meaning.
//! - [`crypto`]: the secret key type and the one seal construction.
//! - [`rootkey`]: root-key providers (key file; HSM later).
//! - [`keyring`]: the key hierarchy below the root, AAD layouts, key caches.
//! - [`authz`]: roles, the permission table, and the `Permit`.
//! - [`audit`]: the MAC-chained audit trail: append, verify, query, prune.
//! - [`store`]: SQLite: the group-committing writer, read pool, schema.
//! - [`vault`]: the use cases; joins the modules above. No gRPC here.
//! - [`api`]: the gRPC services, TLS identity and load limits; the only
//!   module that knows protobuf.
//! - [`server`]: starts and stops a server; housekeeping.
//! - [`config`]: server configuration.
//! - [`client`]: a gRPC client, used by the CLI, the benchmark and tests.
//! - [`cli`]: the `strongbox` command line.

pub mod api;
pub mod audit;
pub mod authz;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod error;
pub mod ids;
pub mod keyring;
pub mod rootkey;
pub mod server;
pub mod store;
pub mod vault;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
