//! Starting and stopping a server: data directory, root key, storage,
//! vault, bootstrap operator key, the gRPC services with health and
//! reflection, and the housekeeping task (due tenant shreds, purges).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;

use crate::api::{Api, pb};

pub mod connections;
mod drain;
mod edge_audit;
pub mod health;
mod housekeeping;
pub(crate) mod tls;
use housekeeping::housekeeping;
pub mod metrics_http;
mod offline;
pub mod restore;
use crate::blocking;
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::keyring::{self, Keyring};
use crate::rootkey::pkcs11::{Hsm, HsmProvider, Pkcs11Config};
use crate::rootkey::{EnvProvider, KeyFileProvider, RootKeyProvider};
use crate::store::{DB_FILE, Store};
use crate::vault::{AuditAnchor, Vault};
pub use offline::{MoveOutcome, accept_audit_loss, move_root_to_hsm};

/// The request metadata (gRPC headers) a call may carry, in bytes as
/// HTTP/2 counts a header list. Past it the call is answered
/// `RESOURCE_EXHAUSTED` by `edge_audit`, and audited.
const MAX_METADATA: usize = 16 * 1024;

/// HTTP/2's own header-list limit, well above `MAX_METADATA` so that the
/// calls between the two get a gRPC status rather than HTTP/2's answer:
/// past this one the call is refused with HTTP 431 (clients report
/// `UNKNOWN`) and the connection stays up; a header block far past it
/// (more than HPACK will buffer) closes the connection. It bounds the
/// memory one header block can take.
const MAX_HEADER_LIST: u32 = 256 * 1024;

/// Room a request needs beyond its value (ids, metadata, framing).
const REQUEST_OVERHEAD: usize = 64 * 1024;

/// A running server.
pub struct RunningServer {
    /// The address it listens on (the real port when started on port 0).
    pub addr: SocketAddr,
    pub vault: Arc<Vault>,
    /// The connections open now, under the caps.
    pub connections: connections::OpenConnections,
    /// Where `/metrics` is served, if it is.
    pub metrics_addr: Option<SocketAddr>,
    metrics: Option<JoinHandle<()>>,
    flusher: JoinHandle<()>,
    drain: drain::Drain,
    stop: watch::Sender<bool>,
    serving: JoinHandle<Result<(), tonic::transport::Error>>,
    housekeeping: JoinHandle<()>,
    anchoring: JoinHandle<()>,
    health: JoinHandle<()>,
    /// The data directory's lock, held while the server runs.
    _lock: std::fs::File,
}

impl RunningServer {
    /// Stops accepting calls, lets in-flight ones finish, and stops
    /// housekeeping.
    pub async fn shutdown(self) -> Result<()> {
        // New calls get UNAVAILABLE on their connection; those in flight
        // finish; only then are connections closed.
        self.drain.begin();
        self.drain.idle().await;
        // A moment more of clean refusals, so clients with calls on the way
        // hear UNAVAILABLE rather than a closed connection.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let _ = self.stop.send(true);
        self.vault.stop_background();
        let _ = self.housekeeping.await;
        let _ = self.health.await;
        let served = self.serving.await;
        let _ = self.anchoring.await;
        if let Some(m) = self.metrics {
            let _ = m.await;
        }
        let _ = self.flusher.await;
        // After the last call: the final head is anchored.
        if let Err(e) = self.vault.anchor_audit().await {
            tracing::warn!(error = %e, "anchoring the audit chain at shutdown failed");
        }
        served
            .map_err(|e| Error::Internal(format!("server task: {e}")))?
            .map_err(|e| Error::Unavailable(format!("server: {e}")))
    }
}

/// Opens the vault in `cfg.data_dir` and starts serving on `cfg.listen`.
pub async fn start(cfg: ServerConfig) -> Result<RunningServer> {
    if !cfg.listen.ip().is_loopback() && cfg.tls.is_none() {
        if !cfg.insecure_plaintext {
            return Err(Error::FailedPrecondition(format!(
                "listen: refusing to serve {} without TLS: API keys and personal data would cross the network in clear text; give --tls-cert and --tls-key, or --insecure-plaintext if a TLS proxy in front terminates TLS",
                cfg.listen
            )));
        }
        tracing::warn!(listen = %cfg.listen, "serving beyond loopback WITHOUT TLS (--insecure-plaintext)");
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.data_dir)
        .map_err(|e| Error::Unavailable(format!("data dir {}: {e}", cfg.data_dir.display())))?;
    let lock = lock_data_dir(&cfg.data_dir)?;
    restore::refuse_if_restoring(&cfg.data_dir)?;
    let readers = cfg.read_connections;
    if cfg.database_ca.is_some() && cfg.database_url.is_none() {
        return Err(Error::invalid(
            "database_ca",
            "is set without database_url (it is the PostgreSQL server's CA)",
        ));
    }
    let store = match cfg.database_url.clone() {
        Some(url) => {
            let ca = cfg.database_ca.clone();
            tracing::info!(database = %url.describe(), tls = ca.is_some(), "storage: PostgreSQL");
            let store =
                blocking(move || Store::open_postgres(url.expose(), ca.as_deref(), readers))
                    .await?;
            if store.holds_vault().await? == Some(true) {
                return Err(Error::FailedPrecondition(
                    "database_url: this database is in the middle of a restore: nothing is served until the shred ledger has been applied; run the same `strongbox restore` command again to finish it (docs/runbooks/backup-and-restore.md)".into(),
                ));
            }
            store
        }
        None => {
            let db = cfg.data_dir.join(DB_FILE);
            blocking(move || Store::open(&db, readers)).await?
        }
    };
    let root = open_root(&cfg, &store).await?;
    let keys = Arc::new(Keyring::new(root));
    let anchor = AuditAnchor::Check(cfg.audit_anchor_path());
    let vault = Vault::open(store, keys, cfg.limits.clone(), anchor).await?;
    vault
        .apply_retention_defaults(&cfg.retention_defaults)
        .await?;
    let ledger = cfg.shred_ledger_path();
    let entries = vault.open_ledger(&ledger).await?.len();
    tracing::info!(path = %ledger.display(), entries, "shred ledger open");
    vault.open_erasure(cfg.erasure()?, None).await?;
    vault.roll_erasure_epoch().await?;
    let key_file = cfg.operator_key_path();
    if vault.bootstrap_operator(&key_file).await? {
        // The key itself is never logged: only where it was written.
        tracing::info!(path = %key_file.display(), "bootstrap operator API key written (mode 0600)");
    }

    let fd_limit = connections::raise_fd_limit();
    let max_connections = cfg.connections.effective_max(fd_limit);
    if cfg
        .connections
        .max_connections
        .is_some_and(|n| n > max_connections)
    {
        tracing::warn!(
            max_connections,
            fd_limit,
            "max_connections lowered to stay below the open-file limit"
        );
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::Unavailable(format!("listen {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Unavailable(format!("listen {}: {e}", cfg.listen)))?;

    let api = Api::new(vault.clone(), cfg.load, cfg.metrics_tenant_labels);
    let flood_api = api.clone();
    let max_message = cfg.limits.max_value_bytes + REQUEST_OVERHEAD;
    let (health, health_service) = tonic_health::server::health_reporter();
    // Every service is registered, with the first probe's outcome, before
    // the listener answers.
    let was_serving = health::probe(&vault, &health, None).await;
    // Reflection in both versions: grpc.reflection.v1, and v1alpha, which
    // is all that grpcio-reflection, many GUI clients and older grpcurl
    // builds speak.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;

    let (stop, stopped) = watch::channel(false);
    let drain = drain::Drain::default();
    let metrics = match cfg.metrics_listen {
        Some(at) => {
            let (bound, task) =
                metrics_http::serve(at, cfg.metrics_tenant_labels, stopped.clone()).await?;
            tracing::info!(addr = %bound, "metrics served at /metrics");
            Some((bound, task))
        }
        None => None,
    };
    let mut on_stop = stopped.clone();
    // TLS is done by `server::tls` on the accepted connections, so refused
    // handshakes are logged and counted.
    let acceptor = cfg.tls.as_ref().map(tls::acceptor).transpose()?;
    let builder = Server::builder();
    let router = builder
        .timeout(cfg.request_timeout)
        .http2_max_header_list_size(MAX_HEADER_LIST)
        .http2_keepalive_interval(Some(cfg.connections.keepalive_interval()))
        .http2_keepalive_timeout(Some(cfg.connections.keepalive_timeout()))
        // Outermost first: the metrics see the status as relabelled.
        .layer(
            tower::ServiceBuilder::new()
                // Per-call timing and labels cost a little: only when scraped.
                .option_layer(cfg.metrics_listen.map(|_| metrics_http::RpcMetricsLayer))
                .layer(drain.clone())
                .layer(edge_audit::EdgeAudit {
                    vault: vault.clone(),
                    flood: api.failed_calls(),
                    max_metadata: MAX_METADATA,
                    per_connection: edge_audit::PerConnection::new(
                        cfg.load.max_in_flight_per_connection,
                    ),
                })
                .layer(tower::util::MapResponseLayer::new(
                    crate::api::size_limit::relabel(cfg.limits.max_value_bytes),
                )),
        )
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(pb::tenant_service_server::TenantServiceServer::new(
            api.clone(),
        ))
        .add_service(pb::principal_service_server::PrincipalServiceServer::new(
            api.clone(),
        ))
        .add_service(
            pb::record_service_server::RecordServiceServer::new(api.clone())
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        )
        .add_service(
            pb::subject_service_server::SubjectServiceServer::new(api.clone())
                .max_encoding_message_size(max_message),
        )
        .add_service(pb::audit_service_server::AuditServiceServer::new(
            api.clone(),
        ))
        .add_service(pb::retention_service_server::RetentionServiceServer::new(
            api.clone(),
        ))
        .add_service(pb::backup_service_server::BackupServiceServer::new(
            api.clone(),
        ))
        .add_service(pb::key_service_server::KeyServiceServer::new(api));
    let (incoming, connections) =
        connections::incoming(listener, cfg.connections, max_connections, stopped.clone());
    let shutting = async move {
        let _ = on_stop.wait_for(|s| *s).await;
    };
    let serving = match acceptor {
        Some(acceptor) => tokio::spawn(router.serve_with_incoming_shutdown(
            tls::accept(incoming, acceptor, cfg.connections.handshake_timeout),
            shutting,
        )),
        None => tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutting)),
    };
    let health = tokio::spawn(health::watch(
        vault.clone(),
        health,
        health::PROBE_EVERY,
        was_serving,
        stopped.clone(),
    ));
    let anchoring = tokio::spawn(anchoring(
        vault.clone(),
        cfg.housekeeping_interval,
        stopped.clone(),
    ));
    let flusher = tokio::spawn(flush_failed_auth(flood_api, stopped.clone()));
    let housekeeping = tokio::spawn(housekeeping(
        vault.clone(),
        cfg.audit_retention,
        cfg.housekeeping_interval,
        cfg.metrics_listen.is_some(),
        stopped,
    ));
    tracing::info!(%addr, root_key = %vault.keyring().root_description(), "strongbox serving");
    let (metrics_addr, metrics) = metrics.unzip();
    Ok(RunningServer {
        addr,
        vault,
        connections,
        metrics_addr,
        metrics,
        flusher,
        drain,
        stop,
        serving,
        housekeeping,
        anchoring,
        health,
        _lock: lock,
    })
}

/// Writes the coalesced entries of failed authentications every 10 s, and
/// once more at shutdown.
async fn flush_failed_auth(api: Api, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if let Err(e) = api.flush_failed_auth().await {
            tracing::warn!(error = %e, "writing the coalesced failed-authentication entries failed; will retry");
        }
        if stopping {
            return;
        }
    }
}

/// The lock file a server holds on its data directory while it runs.
pub const LOCK_FILE: &str = "strongbox.lock";

/// Takes the data directory's lock, so two servers never share one vault
/// (each would cache keys the other shreds) and the offline move of the
/// root key never runs under a live server. Held until the file is dropped;
/// the file holds the holder's process id.
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::Unavailable(format!("data dir lock {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {
            // The holder's pid, for `kill "$(cat strongbox.lock)"` and for
            // finding which process holds the vault.
            let mut f = &file;
            f.set_len(0)
                .and_then(|_| writeln!(f, "{}", std::process::id()))
                .map_err(|e| {
                    Error::Unavailable(format!("data dir lock {}: {e}", path.display()))
                })?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::FailedPrecondition(format!(
            "data dir {} is in use by a running server (it holds {LOCK_FILE}); stop it first",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Unavailable(format!(
            "data dir lock {}: {e}",
            path.display()
        ))),
    }
}

type Provider = Arc<dyn RootKeyProvider>;

/// Opens the configured root-key provider: the environment variable, the
/// PKCS#11 token, or the key file (created for a new vault).
async fn open_root(cfg: &ServerConfig, store: &Store) -> Result<Provider> {
    if let Some(var) = &cfg.root_key_env {
        return Ok(Arc::new(EnvProvider::from_env(var)?));
    }
    let fresh = !store.read(keyring::has_root_check).await?;
    let (current, staged) = match &cfg.pkcs11 {
        Some(p11) => {
            let p11 = p11.clone();
            blocking(move || {
                let hsm = Hsm::connect(&p11)?;
                let label = &p11.key_label;
                let staged = HsmProvider::find_staged(&hsm, label)?;
                let current = match HsmProvider::find(&hsm, label)? {
                    Some(k) => Some(k),
                    // A new vault gets its root key generated in the token.
                    None if fresh && staged.is_none() => {
                        tracing::info!(key = %p11.uri(), "generated the root key inside the HSM");
                        Some(HsmProvider::create(&hsm, label)?)
                    }
                    None => None,
                };
                Ok((
                    current.map(|k| Arc::new(k) as Provider),
                    staged.map(|k| Arc::new(k) as Provider),
                ))
            })
            .await?
        }
        None => {
            let path = cfg.root_key_path();
            if !fresh && !path.exists() {
                let recorded = store
                    .read(keyring::recorded_root_provider)
                    .await?
                    .map(|d| format!("; the vault records its root key as held by {d}"))
                    .unwrap_or_default();
                return Err(Error::FailedPrecondition(format!(
                    "root key file {} does not exist and this vault is not new{recorded}",
                    path.display()
                )));
            }
            let current: Provider = Arc::new(KeyFileProvider::open_or_create(&path)?);
            let staged = KeyFileProvider::open_staged(&path)?.map(|k| Arc::new(k) as Provider);
            (Some(current), staged)
        }
    };
    match recover_root(store, current, staged).await? {
        Some(root) => Ok(root),
        None => {
            let recorded = store
                .read(keyring::recorded_root_provider)
                .await?
                .map(|d| format!(" (the vault records its root key as held by {d})"))
                .unwrap_or_default();
            let uri = cfg.pkcs11.as_ref().map(|p| p.uri()).unwrap_or_default();
            Err(Error::FailedPrecondition(format!(
                "pkcs11_key_label: {uri} does not exist and this vault is not new{recorded}; to move a vault's root key into the HSM, run `strongbox key move-root` first (docs/runbooks/root-key-to-hsm.md)"
            )))
        }
    }
}

/// Picks the root key, finishing a root rotation that a crash cut short:
/// whichever of the current key and a staged successor opens the
/// database's check value is the root key. A successor that does not is
/// discarded; one that does is promoted. With neither matching, the
/// current key is returned for `Vault::open` to refuse with its message.
async fn recover_root(
    store: &Store,
    current: Option<Provider>,
    staged: Option<Provider>,
) -> Result<Option<Provider>> {
    let matches = |root: Provider| store.read(move |conn| keyring::root_matches(conn, &*root));
    if let Some(c) = &current
        && matches(c.clone()).await?
    {
        let c2 = c.clone();
        blocking(move || c2.discard_successor()).await?;
        if staged.is_some() {
            tracing::warn!("discarded a root key staged by a rotation that did not commit");
        }
        return Ok(current);
    }
    if let Some(s) = staged
        && matches(s.clone()).await?
    {
        let s2 = s.clone();
        // Promote, then destroy what the promotion replaced: no reader of
        // the old root key exists yet.
        blocking(move || {
            s2.promote_successor()?;
            s2.discard_successor()
        })
        .await?;
        tracing::warn!("finished a root rotation cut short: the staged root key is now in use");
        return Ok(Some(s));
    }
    Ok(current)
}

/// Writes the audit chain's head to the anchor file: at every checkpoint
/// (when an append asks) and at least every `every` (at most a minute)
/// while entries are written.
async fn anchoring(vault: Arc<Vault>, every: std::time::Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every.min(std::time::Duration::from_secs(60)));
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = vault.anchor_requested() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        // Shutdown anchors the final head itself, after the last call.
        if stopping {
            return;
        }
        if let Err(e) = vault.anchor_audit().await {
            tracing::warn!(error = %e, "anchoring the audit chain failed; will retry");
        }
    }
}
