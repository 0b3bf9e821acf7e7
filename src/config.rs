//! Server configuration: defaults that work on a fresh machine, an optional
//! TOML file (`--config`), and flags that override both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::api::limits::LoadLimits;
use crate::error::{Error, Result};
use crate::rootkey::pkcs11::{DEFAULT_KEY_LABEL, DEFAULT_PIN_ENV, Pkcs11Config};
use crate::server::connections::ConnectionLimits;
use crate::vault::Limits;

/// The default data directory, relative to where the server starts.
pub const DEFAULT_DATA_DIR: &str = "strongbox-data";
/// The root key file's name inside the data directory, by default.
pub const ROOT_KEY_FILE: &str = "root.key";
/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// TLS on the listener: PEM files.
mod database_url;
pub use database_url::DatabaseUrl;

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With a client CA, every client must present a certificate it signed (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// How the server writes its log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object a line, for log pipelines.
    Json,
}

/// Everything `strongbox serve` needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// PostgreSQL instead of SQLite in `data_dir` (`database_url`); shared
    /// by every server that names it.
    pub database_url: Option<DatabaseUrl>,
    /// The CA (PEM) that signed the database server's certificate: with
    /// it, connections to PostgreSQL are TLS, the server verified.
    pub database_ca: Option<PathBuf>,
    pub listen: SocketAddr,
    /// The root key file; `<data_dir>/root.key` if unset.
    pub root_key_file: Option<PathBuf>,
    /// Take the root key from this environment variable instead of a file.
    pub root_key_env: Option<String>,
    /// Keep the root key in a PKCS#11 token instead of a file.
    pub pkcs11: Option<Pkcs11Config>,
    pub limits: Limits,
    pub read_connections: usize,
    /// How often due tenant shreds and row purges are looked for.
    pub housekeeping_interval: Duration,
    /// Audit entries older than this are pruned (at a checkpoint); `None`
    /// keeps them forever.
    pub audit_retention: Option<Duration>,
    /// Rate and in-flight limits.
    pub load: LoadLimits,
    /// A call still running after this long is cancelled (a client's
    /// shorter `grpc-timeout` wins).
    pub request_timeout: Duration,
    /// TLS for the listener; required beyond loopback.
    pub tls: Option<TlsFiles>,
    /// Serve plaintext beyond loopback anyway (a TLS proxy in front).
    pub insecure_plaintext: bool,
    /// The audit chain's anchor file; `<data_dir>/audit.anchor` if unset.
    /// Put it on another volume than the database.
    pub audit_anchor: Option<PathBuf>,
    /// The shred ledger; `<data_dir>/shred.ledger` if unset. Put it on
    /// another volume than the database.
    pub shred_ledger: Option<PathBuf>,
    /// Connection caps and timeouts.
    pub connections: ConnectionLimits,
    /// Platform retention defaults and caps per category, applied at start
    /// (the config file wins over `retention default` for these categories).
    pub retention_defaults: Vec<RetentionDefaultConfig>,
    /// The erasure epoch keys file; `<data_dir>/erasure.keys` if unset.
    /// Keep it with the root key, never in the backups.
    pub erasure_keys: Option<PathBuf>,
    /// How long an erasure epoch lasts.
    pub erasure_epoch: Duration,
    /// How long after an epoch ends its key is destroyed: the longest any
    /// copy of the database stays openable. At least `erasure_epoch`; at
    /// least the backup retention you keep.
    pub erasure_window: Duration,
    /// Serve Prometheus metrics on `GET /metrics` here (off if unset).
    pub metrics_listen: Option<SocketAddr>,
    /// Count calls per tenant in the metrics (tenant ids as labels: as
    /// many series as tenants).
    pub metrics_tenant_labels: bool,
    /// How the log is written (`serve --log-format` wins).
    pub log_format: LogFormat,
    /// On SIGTERM, how long calls in flight may take to finish before the
    /// process exits anyway.
    pub shutdown_grace: Duration,
}

/// `[retention.CATEGORY]` in the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionDefaultConfig {
    pub category: String,
    pub keep: Option<Duration>,
    pub max: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    keep: Option<String>,
    max: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            database_ca: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            root_key_file: None,
            root_key_env: None,
            pkcs11: None,
            limits: Limits::default(),
            read_connections: 4,
            housekeeping_interval: Duration::from_secs(30),
            audit_retention: None,
            load: LoadLimits::default(),
            request_timeout: Duration::from_secs(30),
            tls: None,
            insecure_plaintext: false,
            audit_anchor: None,
            shred_ledger: None,
            connections: ConnectionLimits::default(),
            retention_defaults: Vec::new(),
            erasure_keys: None,
            erasure_epoch: Duration::from_secs(86_400),
            erasure_window: Duration::from_secs(30 * 86_400),
            metrics_listen: None,
            metrics_tenant_labels: false,
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The TOML file's shape; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    database_ca: Option<PathBuf>,
    listen: Option<String>,
    root_key_file: Option<PathBuf>,
    root_key_env: Option<String>,
    pkcs11_module: Option<PathBuf>,
    pkcs11_token: Option<String>,
    pkcs11_key_label: Option<String>,
    pkcs11_pin_env: Option<String>,
    max_value_bytes: Option<usize>,
    tenant_shred_grace: Option<String>,
    read_connections: Option<usize>,
    housekeeping_interval: Option<String>,
    audit_retention: Option<String>,
    key_rotation_age: Option<String>,
    key_rotation_encryptions: Option<u64>,
    rate_limit_per_principal: Option<u32>,
    rate_limit_burst: Option<u32>,
    auth_failure_burst: Option<u32>,
    max_in_flight: Option<usize>,
    max_in_flight_per_connection: Option<usize>,
    request_timeout: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    insecure_plaintext: Option<bool>,
    audit_anchor: Option<PathBuf>,
    shred_ledger: Option<PathBuf>,
    retention: Option<std::collections::BTreeMap<String, RetentionFile>>,
    admin_recovery_delay: Option<String>,
    require_admin_enrolment: Option<bool>,
    max_connections: Option<usize>,
    max_connections_per_peer: Option<usize>,
    handshake_timeout: Option<String>,
    idle_timeout: Option<String>,
    erasure_keys: Option<PathBuf>,
    erasure_epoch: Option<String>,
    erasure_window: Option<String>,
    metrics_listen: Option<String>,
    metrics_tenant_labels: Option<bool>,
    log_format: Option<LogFormat>,
    shutdown_grace: Option<String>,
}

fn duration(field: &'static str, s: &str) -> Result<Duration> {
    humantime::parse_duration(s)
        .map_err(|e| Error::invalid(field, format!("'{s}' is not a duration: {e}")))
}

fn nonzero(field: &'static str, s: &str) -> Result<Duration> {
    let d = duration(field, s)?;
    if d < Duration::from_millis(100) {
        return Err(Error::invalid(
            field,
            format!("'{s}' is too short: at least 100ms"),
        ));
    }
    Ok(d)
}

fn positive(field: &'static str, n: usize) -> Result<usize> {
    if n == 0 {
        return Err(Error::invalid(field, "must be at least 1"));
    }
    Ok(n)
}

/// TLS settings from the cert/key/client-CA options: cert and key go
/// together; a client CA needs them.
pub fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<TlsFiles>> {
    match (cert, key, client_ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), client_ca) => Ok(Some(TlsFiles {
            cert,
            key,
            client_ca,
        })),
        (None, None, Some(_)) => Err(Error::invalid("client_ca", "needs tls_cert and tls_key")),
        _ => Err(Error::invalid(
            "tls_cert",
            "tls_cert and tls_key go together",
        )),
    }
}

/// PKCS#11 settings: module and token go together; the key label and the
/// PIN's environment variable have defaults.
pub fn pkcs11_config(
    module: Option<PathBuf>,
    token: Option<String>,
    key_label: Option<String>,
    pin_env: Option<String>,
) -> Result<Option<Pkcs11Config>> {
    match (module, token) {
        (Some(module), Some(token)) => {
            let key_label = key_label.unwrap_or_else(|| DEFAULT_KEY_LABEL.to_owned());
            if key_label.is_empty() || key_label.ends_with(".next") || key_label.ends_with(".old") {
                return Err(Error::invalid(
                    "pkcs11_key_label",
                    "must be non-empty and not end in .next or .old (those name staged and replaced root keys)",
                ));
            }
            Ok(Some(Pkcs11Config {
                module,
                token,
                key_label,
                pin_env: pin_env.unwrap_or_else(|| DEFAULT_PIN_ENV.to_owned()),
            }))
        }
        (None, None) if key_label.is_none() && pin_env.is_none() => Ok(None),
        (None, _) => Err(Error::invalid(
            "pkcs11_module",
            "the PKCS#11 settings need the module (the token library's path) and the token label",
        )),
        (Some(_), None) => Err(Error::invalid(
            "pkcs11_token",
            "the PKCS#11 settings need the token label as well as the module",
        )),
    }
}

/// The file name of the shred ledger inside the data directory, by default.
pub const SHRED_LEDGER_FILE: &str = "shred.ledger";

/// The file name of the audit anchor inside the data directory, by default.
pub const AUDIT_ANCHOR_FILE: &str = "audit.anchor";

/// The audit anchor file: `configured`, or `<data_dir>/audit.anchor`.
pub fn audit_anchor_path(configured: Option<PathBuf>, data_dir: &Path) -> PathBuf {
    configured.unwrap_or_else(|| data_dir.join(AUDIT_ANCHOR_FILE))
}

pub fn parse_listen(s: &str) -> Result<SocketAddr> {
    parse_addr("listen", s)
}

/// A socket address for `field`.
pub fn parse_addr(field: &'static str, s: &str) -> Result<SocketAddr> {
    s.parse().map_err(|_| {
        Error::invalid(
            field,
            format!("'{s}' is not an address like 127.0.0.1:50051"),
        )
    })
}

impl ServerConfig {
    /// Defaults, then `file` if given, then the flags that were given.
    pub fn load(
        file: Option<&Path>,
        data_dir: Option<PathBuf>,
        listen: Option<&str>,
    ) -> Result<Self> {
        let mut cfg = ServerConfig::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::invalid("config", format!("cannot read {}: {e}", path.display()))
            })?;
            let f: FileConfig = toml::from_str(&text)
                .map_err(|e| Error::invalid("config", format!("{}: {e}", path.display())))?;
            if let Some(d) = f.data_dir {
                cfg.data_dir = d;
            }
            cfg.database_url = f.database_url.map(DatabaseUrl::parse).transpose()?;
            cfg.database_ca = f.database_ca;
            if let Some(l) = f.listen {
                cfg.listen = parse_listen(&l)?;
            }
            cfg.root_key_file = f.root_key_file.or(cfg.root_key_file);
            cfg.root_key_env = f.root_key_env.or(cfg.root_key_env);
            cfg.pkcs11 = pkcs11_config(
                f.pkcs11_module,
                f.pkcs11_token,
                f.pkcs11_key_label,
                f.pkcs11_pin_env,
            )?;
            if let Some(n) = f.max_value_bytes {
                cfg.limits.max_value_bytes = n;
            }
            if let Some(g) = f.tenant_shred_grace {
                cfg.limits.default_shred_grace = duration("tenant_shred_grace", &g)?;
            }
            if let Some(n) = f.read_connections {
                cfg.read_connections = n.max(1);
            }
            if let Some(i) = f.housekeeping_interval {
                cfg.housekeeping_interval = duration("housekeeping_interval", &i)?;
            }
            if let Some(r) = f.audit_retention {
                cfg.audit_retention = Some(duration("audit_retention", &r)?);
            }
            if let Some(a) = f.key_rotation_age {
                cfg.limits.rotation_max_age = duration("key_rotation_age", &a)?;
            }
            if let Some(n) = f.key_rotation_encryptions {
                cfg.limits.rotation_max_encryptions = n;
            }
            if let Some(r) = f.rate_limit_per_principal {
                cfg.load.rate_per_principal = r;
            }
            if let Some(b) = f.auth_failure_burst {
                cfg.load.auth_failure_burst = b.max(1);
            }
            if let Some(b) = f.rate_limit_burst {
                cfg.load.burst = b;
            }
            if let Some(n) = f.max_in_flight {
                cfg.load.max_in_flight = n.max(1);
            }
            if let Some(n) = f.max_in_flight_per_connection {
                cfg.load.max_in_flight_per_connection = n.max(1);
            }
            if let Some(t) = f.request_timeout {
                cfg.request_timeout = duration("request_timeout", &t)?;
            }
            cfg.tls = tls_files(f.tls_cert, f.tls_key, f.client_ca)?;
            cfg.insecure_plaintext = f.insecure_plaintext.unwrap_or(false);
            cfg.audit_anchor = f.audit_anchor;
            cfg.shred_ledger = f.shred_ledger;
            for (category, r) in f.retention.unwrap_or_default() {
                cfg.retention_defaults.push(RetentionDefaultConfig {
                    keep: r.keep.map(|k| duration("retention.keep", &k)).transpose()?,
                    max: r.max.map(|m| duration("retention.max", &m)).transpose()?,
                    category,
                });
            }
            if let Some(d) = f.admin_recovery_delay {
                cfg.limits.admin_recovery_delay = duration("admin_recovery_delay", &d)?;
            }
            if let Some(r) = f.require_admin_enrolment {
                cfg.limits.require_admin_enrolment = r;
            }
            if let Some(n) = f.max_connections {
                cfg.connections.max_connections = Some(positive("max_connections", n)?);
            }
            if let Some(n) = f.max_connections_per_peer {
                cfg.connections.max_per_peer = positive("max_connections_per_peer", n)?;
            }
            if let Some(t) = f.handshake_timeout {
                cfg.connections.handshake_timeout = nonzero("handshake_timeout", &t)?;
            }
            if let Some(t) = f.idle_timeout {
                cfg.connections.idle_timeout = nonzero("idle_timeout", &t)?;
            }
            cfg.erasure_keys = f.erasure_keys;
            if let Some(d) = f.erasure_epoch {
                cfg.erasure_epoch = duration("erasure_epoch", &d)?;
            }
            if let Some(d) = f.erasure_window {
                cfg.erasure_window = duration("erasure_window", &d)?;
            }
            cfg.erasure()?;
            if let Some(a) = f.metrics_listen {
                cfg.metrics_listen = Some(parse_addr("metrics_listen", &a)?);
            }
            cfg.metrics_tenant_labels = f.metrics_tenant_labels.unwrap_or(false);
            cfg.log_format = f.log_format.unwrap_or_default();
            if let Some(d) = f.shutdown_grace {
                cfg.shutdown_grace = duration("shutdown_grace", &d)?;
            }
        }
        if let Some(d) = data_dir {
            cfg.data_dir = d;
        }
        if let Some(l) = listen {
            cfg.listen = parse_listen(l)?;
        }
        Ok(cfg)
    }

    pub fn root_key_path(&self) -> PathBuf {
        self.root_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(ROOT_KEY_FILE))
    }

    /// The audit anchor file: configured, or beside the database.
    pub fn audit_anchor_path(&self) -> PathBuf {
        audit_anchor_path(self.audit_anchor.clone(), &self.data_dir)
    }

    /// The shred ledger file: configured, or beside the database.
    pub fn shred_ledger_path(&self) -> PathBuf {
        self.shred_ledger
            .clone()
            .unwrap_or_else(|| self.data_dir.join(SHRED_LEDGER_FILE))
    }

    pub fn operator_key_path(&self) -> PathBuf {
        self.data_dir.join("operator.key")
    }

    /// The erasure epoch settings, checked: an epoch of at least a second,
    /// a window of at least one epoch.
    pub fn erasure(&self) -> Result<crate::vault::ErasureSettings> {
        if self.erasure_epoch < Duration::from_secs(1) {
            return Err(Error::invalid("erasure_epoch", "must be at least 1s"));
        }
        if self.erasure_window < self.erasure_epoch {
            return Err(Error::invalid(
                "erasure_window",
                format!(
                    "must be at least erasure_epoch ({})",
                    fmt_duration(self.erasure_epoch)
                ),
            ));
        }
        Ok(crate::vault::ErasureSettings {
            keys_file: self
                .erasure_keys
                .clone()
                .unwrap_or_else(|| self.data_dir.join(ERASURE_KEYS_FILE)),
            epoch: self.erasure_epoch,
            window: self.erasure_window,
        })
    }
}

/// The erasure epoch keys file's name in the data directory (default).
pub const ERASURE_KEYS_FILE: &str = "erasure.keys";

/// A duration as the config takes it (`30d`, `1h 30m`).
pub fn fmt_duration(d: Duration) -> String {
    crate::ids::fmt_duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_a_database_password_in_debug_output_or_logs() {
        for url in [
            "postgres://strongbox:hunter2-secret@db.internal:5432/vault",
            "postgresql://strongbox:p@ss@hunter2-secret@db.internal/vault?sslmode=disable",
            "postgres://db.internal/vault?user=strongbox&password=hunter2-secret",
        ] {
            let u = DatabaseUrl::parse(url.to_owned()).unwrap();
            let cfg = ServerConfig {
                database_url: Some(u.clone()),
                ..ServerConfig::default()
            };
            for shown in [u.describe(), format!("{u:?}"), format!("{cfg:?}")] {
                assert!(!shown.contains("hunter2"), "{shown}");
                assert!(shown.contains("db.internal"), "{shown}");
            }
            assert_eq!(u.expose(), url);
        }
        assert!(DatabaseUrl::parse("mysql://x/y".into()).is_err());
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\nmax_value_bytes = 10\ntenant_shred_grace = \"1h\"\n",
        )
        .unwrap();
        let cfg = ServerConfig::load(Some(&path), Some("d".into()), None).unwrap();
        assert_eq!(cfg.listen.port(), 7000);
        assert_eq!(cfg.limits.max_value_bytes, 10);
        assert_eq!(cfg.limits.default_shred_grace, Duration::from_secs(3600));
        assert_eq!(cfg.data_dir, PathBuf::from("d"));
    }

    #[test]
    fn retention_defaults_per_category() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[retention.billing]\nkeep = \"7d\"\nmax = \"30d\"\n[retention.logs]\nmax = \"90d\"\n",
        )
        .unwrap();
        let cfg = ServerConfig::load(Some(&path), None, None).unwrap();
        let day = Duration::from_secs(86_400);
        assert_eq!(
            cfg.retention_defaults,
            vec![
                RetentionDefaultConfig {
                    category: "billing".into(),
                    keep: Some(7 * day),
                    max: Some(30 * day)
                },
                RetentionDefaultConfig {
                    category: "logs".into(),
                    keep: None,
                    max: Some(90 * day)
                },
            ]
        );
        std::fs::write(&path, "[retention.billing]\nkeep = \"soon\"\n").unwrap();
        let e = ServerConfig::load(Some(&path), None, None).unwrap_err();
        assert!(e.to_string().starts_with("retention.keep:"), "{e}");
    }

    #[test]
    fn fail_unknown_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let e = ServerConfig::load(Some(&path), None, None).unwrap_err();
        assert!(e.to_string().starts_with("config:"), "{e}");
    }
}
