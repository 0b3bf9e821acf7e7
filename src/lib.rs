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
//! - [`rootkey`]: root-key providers (key file, environment, PKCS#11 HSM).
//! - [`integrity`]: MACs over security state (tenants, principals, API keys).
//! - [`erasure`]: erasure epoch keys, between the root key and the tenant keys.
//! - [`keyring`]: the key hierarchy below the root, AAD layouts, key caches.
//! - [`authz`]: roles, the permission table, and the `Permit`.
//! - [`audit`]: the MAC-chained audit trail: append, verify, query, prune.
//! - [`tombstones`]: bounded, expiring sets of ended keys that caches must not take back.
//! - [`store`]: storage. `store::seam`: the domain operations use cases may
//!   ask for, one trait per concept, seen as `&dyn Tx`; (private)
//!   `store::sql`: their one implementation for both backends;
//!   `store::sqlite` and `store::postgres`: connections and schemas;
//!   `store::writer`: the group-committing writer. The only module that
//!   names a driver or SQL.
//! - [`vault`]: the use cases, one module per concept (tenants, principals,
//!   auth, records, subjects, keys, holds, retention, backup, restore),
//!   and `vault::jobs`: the background passes housekeeping drives (rewrap,
//!   re-encryption, purge, retention sweep, tenant-shred executor). No
//!   gRPC, SQL or driver type here.
//! - [`api`]: the gRPC services, TLS identity and load limits; the only
//!   module that knows protobuf.
//! - [`server`]: starts and stops a server; housekeeping; the metrics listener.
//! - [`metrics`]: Prometheus instruments, process-wide.
//! - [`config`]: server configuration.
//! - [`client`]: a gRPC client, used by the CLI, the benchmark and tests.
//! - [`cli`]: the `strongbox` command line.

pub mod api;
pub mod api_key;
pub(crate) mod appendfile;
pub mod audit;
pub mod authz;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod erasure;
pub mod error;
pub mod ids;
pub mod integrity;
pub mod keyring;
pub mod ledger;
pub mod metrics;
pub mod rootkey;
pub mod server;
pub mod store;
pub(crate) mod tombstones;
pub mod vault;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs blocking work (files, an HSM, opening the store) off the async
/// threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> error::Result<T> + Send + 'static,
) -> error::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| error::Error::Internal(format!("blocking task: {e}")))?
}

/// The environment variable that names a crash point for the kill tests.
pub const CRASH_POINT_ENV: &str = "STRONGBOX_CRASH_POINT";

/// A named point in a multi-step operation (root rotation, moving the root
/// key, rewrap) where the kill tests stop the process. When
/// `$STRONGBOX_CRASH_POINT` names this point, the process says so on stderr
/// and then stalls, so the test can SIGKILL it exactly there. Otherwise it
/// does nothing; it never runs in normal operation.
pub fn crash_point(name: &str) {
    if std::env::var_os(CRASH_POINT_ENV).is_some_and(|v| v == name) {
        eprintln!("crash point reached: {name}");
        loop {
            std::thread::park();
        }
    }
}
