//! Starting and stopping a server: data directory, root key, storage,
//! vault, bootstrap operator key, the gRPC services with health and
//! reflection, and the housekeeping task (due tenant shreds, purges).

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::api::{Api, pb};
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::keyring::{self, Keyring};
use crate::rootkey::{EnvProvider, KeyFileProvider, RootKeyProvider};
use crate::store::{DB_FILE, Store};
use crate::vault::Vault;

/// Data keys rewrapped per transaction, and the pause between batches that
/// leaves the writer to live traffic.
const REWRAP_BATCH: usize = 64;
const REWRAP_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Calls one connection may have in flight before it is shed.
const PER_CONNECTION_IN_FLIGHT: usize = 256;

/// Room a request needs beyond its value (ids, metadata, framing).
const REQUEST_OVERHEAD: usize = 64 * 1024;

/// A running server.
pub struct RunningServer {
    /// The address it listens on (the real port when started on port 0).
    pub addr: SocketAddr,
    pub vault: Arc<Vault>,
    stop: watch::Sender<bool>,
    serving: JoinHandle<Result<(), tonic::transport::Error>>,
    housekeeping: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting calls, lets in-flight ones finish, and stops
    /// housekeeping.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        let _ = self.housekeeping.await;
        self.serving
            .await
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
    let db = cfg.data_dir.join(DB_FILE);
    let store = tokio::task::spawn_blocking(move || Store::open(&db, cfg.read_connections))
        .await
        .map_err(|e| Error::Internal(format!("open task: {e}")))??;
    let root: Arc<dyn RootKeyProvider> = match &cfg.root_key_env {
        Some(var) => Arc::new(EnvProvider::from_env(var)?),
        None => open_root(&cfg.root_key_path(), &store).await?,
    };
    let keys = Arc::new(Keyring::new(root));
    let vault = Vault::open(store, keys, cfg.limits.clone()).await?;
    let key_file = cfg.operator_key_path();
    if vault.bootstrap_operator(&key_file).await? {
        // The key itself is never logged: only where it was written.
        tracing::info!(path = %key_file.display(), "bootstrap operator API key written (mode 0600)");
    }

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::Unavailable(format!("listen {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Unavailable(format!("listen {}: {e}", cfg.listen)))?;

    let api = Api::new(vault.clone(), cfg.load);
    let max_message = cfg.limits.max_value_bytes + REQUEST_OVERHEAD;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::tenant_service_server::TenantServiceServer<Api>>()
        .await;
    health
        .set_serving::<pb::principal_service_server::PrincipalServiceServer<Api>>()
        .await;
    health
        .set_serving::<pb::record_service_server::RecordServiceServer<Api>>()
        .await;
    health
        .set_serving::<pb::subject_service_server::SubjectServiceServer<Api>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;

    let (stop, stopped) = watch::channel(false);
    let mut on_stop = stopped.clone();
    let mut builder = Server::builder();
    if let Some(tls) = &cfg.tls {
        builder = builder
            .tls_config(tls_config(tls)?)
            .map_err(|e| Error::invalid("tls_cert", format!("TLS setup failed: {e}")))?;
    }
    let router = builder
        .timeout(cfg.request_timeout)
        // Per connection too: one client cannot take every slot.
        .concurrency_limit_per_connection(PER_CONNECTION_IN_FLIGHT)
        .load_shed(true)
        .layer(tower::util::MapResponseLayer::new(
            crate::api::size_limit::relabel(cfg.limits.max_value_bytes),
        ))
        .add_service(health_service)
        .add_service(reflection)
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
        .add_service(pb::key_service_server::KeyServiceServer::new(api));
    // TCP_NODELAY: without it a response written as several small frames
    // waits on the peer's delayed ACK (~40 ms a call).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let serving = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = on_stop.wait_for(|s| *s).await;
    }));
    let housekeeping = tokio::spawn(housekeeping(
        vault.clone(),
        cfg.audit_retention,
        cfg.housekeeping_interval,
        stopped,
    ));
    tracing::info!(%addr, root_key = %vault.keyring().root_description(), "strongbox serving");
    Ok(RunningServer {
        addr,
        vault,
        stop,
        serving,
        housekeeping,
    })
}

/// Opens the root key, finishing a root rotation that a crash cut short:
/// whichever of the key file and its staged successor opens the database's
/// check value is the root key; a successor that does not is discarded.
async fn open_root(path: &std::path::Path, store: &Store) -> Result<Arc<dyn RootKeyProvider>> {
    let current = Arc::new(KeyFileProvider::open_or_create(path)?);
    let staged = KeyFileProvider::successor_path(path);
    let c = current.clone();
    if store
        .read(move |conn| keyring::root_matches(conn, &*c))
        .await?
    {
        if staged.exists() {
            current.discard_successor()?;
            tracing::warn!("discarded a root key staged by a rotation that did not commit");
        }
        return Ok(current);
    }
    if staged.exists() {
        let next = Arc::new(KeyFileProvider::open(&staged)?);
        if store
            .read(move |conn| keyring::root_matches(conn, &*next))
            .await?
        {
            current.promote_successor()?;
            tracing::warn!("finished a root rotation cut short: the staged root key is now in use");
            return Ok(Arc::new(KeyFileProvider::open(path)?));
        }
    }
    // Neither matches: `Vault::open` refuses with a clear message.
    Ok(current)
}

/// Runs due tenant shreds and purges rows of destroyed keys: on a timer,
/// and at once when a shred asks.
async fn housekeeping(
    vault: Arc<Vault>,
    audit_retention: Option<std::time::Duration>,
    every: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = vault.purge_requested() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = vault.run_due_tenant_shreds().await {
            tracing::warn!(error = %e, "running due tenant shreds failed");
        }
        match vault.purge_destroyed().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "purged ciphertext rows of destroyed keys"),
            Err(e) => tracing::warn!(error = %e, "purge failed; will retry"),
        }
        match vault.rotate_due_keys().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tenants = n, "key-encryption keys rotated by policy"),
            Err(e) => tracing::warn!(error = %e, "automatic rotation failed; will retry"),
        }
        match vault.reencrypt_pass(REWRAP_BATCH, REWRAP_PAUSE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                records = n,
                "data-key re-encryption: records moved to fresh keys"
            ),
            Err(e) => tracing::warn!(error = %e, "data-key re-encryption failed; will retry"),
        }
        match vault.rewrap_pass(REWRAP_BATCH, REWRAP_PAUSE).await {
            Ok((0, 0)) => {}
            Ok((rewrapped, retired)) => tracing::info!(
                rewrapped,
                retired,
                "key rotation: data keys rewrapped, old versions retired"
            ),
            Err(e) => tracing::warn!(error = %e, "rewrap failed; will retry"),
        }
        if let Some(keep) = audit_retention {
            let before = crate::now_ms() - keep.as_millis() as i64;
            match vault.prune_audit(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    entries = n,
                    "pruned audit entries past retention (at a checkpoint)"
                ),
                Err(e) => tracing::warn!(error = %e, "audit prune failed; will retry"),
            }
        }
    }
}

fn read_pem(field: &'static str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::invalid(field, format!("cannot read {}: {e}", path.display())))
}

/// The listener's TLS: its identity, and with a client CA, mandatory mTLS.
fn tls_config(tls: &crate::config::TlsFiles) -> Result<tonic::transport::ServerTlsConfig> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let identity = Identity::from_pem(
        read_pem("tls_cert", &tls.cert)?,
        read_pem("tls_key", &tls.key)?,
    );
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read_pem("client_ca", ca)?));
    }
    Ok(config)
}
