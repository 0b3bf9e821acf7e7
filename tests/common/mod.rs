//! Test harness: a real Strongbox server on 127.0.0.1:0 over a temporary
//! data directory, and helpers to make tenants and principals through the
//! real gRPC API.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod rpcs;

use std::path::PathBuf;
use std::time::Duration;

use strongbox::api::pb;
use strongbox::client::Client;
use strongbox::config::ServerConfig;
use strongbox::server::{self, RunningServer};
use tempfile::TempDir;
use tonic::Code;

pub struct TestServer {
    pub dir: TempDir,
    pub server: Option<RunningServer>,
    pub endpoint: String,
    pub operator_key: String,
    pub config: ServerConfig,
}

pub fn config_for(dir: &TempDir) -> ServerConfig {
    ServerConfig {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        housekeeping_interval: Duration::from_millis(200),
        ..ServerConfig::default()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(&dir);
        Self::start_with(dir, config).await
    }

    pub async fn start_with(dir: TempDir, config: ServerConfig) -> Self {
        let server = server::start(config.clone()).await.expect("server starts");
        let endpoint = format!("http://{}", server.addr);
        let operator_key = std::fs::read_to_string(config.operator_key_path())
            .unwrap()
            .trim()
            .to_owned();
        TestServer {
            dir,
            server: Some(server),
            endpoint,
            operator_key,
            config,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    pub fn db_path(&self) -> PathBuf {
        self.config.data_dir.join(strongbox::store::DB_FILE)
    }

    /// Stops the server (the data directory stays).
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }

    /// Starts a new server process-equivalent on the same data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        let server = server::start(self.config.clone())
            .await
            .expect("server restarts");
        self.endpoint = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    pub fn vault(&self) -> &std::sync::Arc<strongbox::vault::Vault> {
        &self.server.as_ref().unwrap().vault
    }

    pub async fn client(&self, key: &str) -> Client {
        Client::connect(&self.endpoint, Some(key)).await.unwrap()
    }

    pub async fn anonymous(&self) -> Client {
        Client::connect(&self.endpoint, None).await.unwrap()
    }

    pub async fn operator(&self) -> Client {
        self.client(&self.operator_key.clone()).await
    }

    /// Creates `tenant` and its first admin; returns the admin's client.
    pub async fn tenant(&self, tenant: &str) -> Client {
        let op = self.operator().await;
        op.tenants()
            .create_tenant(pb::CreateTenantRequest {
                tenant: tenant.into(),
                name: format!("{tenant} inc"),
            })
            .await
            .unwrap();
        let key = op
            .principals()
            .create_principal(pb::CreatePrincipalRequest {
                tenant: tenant.into(),
                name: "admin".into(),
                roles: vec!["admin".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .api_key;
        op.as_key(&key).unwrap()
    }

    /// A principal of `tenant` (made by `admin`) holding `roles`.
    pub async fn principal(
        &self,
        admin: &Client,
        tenant: &str,
        name: &str,
        roles: &[&str],
    ) -> Client {
        let key = self.principal_key(admin, tenant, name, roles).await;
        admin.as_key(&key).unwrap()
    }

    /// The API key of a new principal of `tenant` holding `roles`.
    pub async fn principal_key(
        &self,
        admin: &Client,
        tenant: &str,
        name: &str,
        roles: &[&str],
    ) -> String {
        admin
            .principals()
            .create_principal(pb::CreatePrincipalRequest {
                tenant: tenant.into(),
                name: name.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .api_key
    }

    /// A tenant with one principal holding every tenant role but admin.
    pub async fn tenant_with_user(&self, tenant: &str) -> (Client, Client) {
        let (admin, key) = self.tenant_with_user_key(tenant).await;
        let user = admin.as_key(&key).unwrap();
        (admin, user)
    }

    /// As [`TestServer::tenant_with_user`], returning the user's API key.
    pub async fn tenant_with_user_key(&self, tenant: &str) -> (Client, String) {
        let admin = self.tenant(tenant).await;
        let key = self
            .principal_key(
                &admin,
                tenant,
                "user",
                &["writer", "reader", "privacy-officer", "auditor"],
            )
            .await;
        (admin, key)
    }
}

pub fn put(
    tenant: &str,
    subject: &str,
    category: &str,
    key: &str,
    value: &[u8],
) -> pb::PutRecordRequest {
    pb::PutRecordRequest {
        tenant: tenant.into(),
        subject: subject.into(),
        category: category.into(),
        key: key.into(),
        value: value.to_vec(),
        ..Default::default()
    }
}

pub fn get(tenant: &str, subject: &str, category: &str, key: &str) -> pb::GetRecordRequest {
    pb::GetRecordRequest {
        tenant: tenant.into(),
        subject: subject.into(),
        category: category.into(),
        key: key.into(),
    }
}

pub async fn put_ok(
    c: &Client,
    tenant: &str,
    subject: &str,
    category: &str,
    key: &str,
    value: &[u8],
) -> u64 {
    c.records()
        .put_record(put(tenant, subject, category, key, value))
        .await
        .unwrap()
        .into_inner()
        .version
}

pub async fn get_value(
    c: &Client,
    tenant: &str,
    subject: &str,
    category: &str,
    key: &str,
) -> Result<Vec<u8>, tonic::Status> {
    c.records()
        .get_record(get(tenant, subject, category, key))
        .await
        .map(|r| r.into_inner().value)
}

/// Asserts `r` failed with `code` and a message containing `needle`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} ({needle}), got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "message: {}", s.message());
            assert!(
                s.message().contains(needle),
                "expected message containing {needle:?}, got {:?}",
                s.message()
            );
        }
    }
}

/// Every file in the data directory, read whole.
pub fn data_dir_bytes(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn random_hex(n: usize) -> String {
    hex::encode(strongbox::crypto::random_bytes::<16>())[..n].to_owned()
}

/// Creates a principal through `by` and returns its API key.
pub async fn new_principal(by: &Client, tenant: &str, name: &str, roles: &[&str]) -> String {
    by.principals()
        .create_principal(pb::CreatePrincipalRequest {
            tenant: tenant.into(),
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .api_key
}

/// Runs a subject export to the end: the header and every record.
pub async fn export(
    c: &Client,
    tenant: &str,
    subject: &str,
) -> (pb::SubjectHeader, Vec<pb::Record>) {
    let mut stream = c
        .subjects()
        .export_subject(pb::ExportSubjectRequest {
            tenant: tenant.into(),
            subject: subject.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let (mut header, mut records) = (None, Vec::new());
    while let Some(m) = stream.message().await.unwrap() {
        match m.item.unwrap() {
            pb::export_subject_response::Item::Header(h) => header = Some(h),
            pb::export_subject_response::Item::Record(r) => records.push(r),
        }
    }
    (header.expect("an export starts with a header"), records)
}

/// Starts the real `strongbox serve` binary on port 0 with `args`, in
/// `cwd`; returns the process and its endpoint.
pub fn spawn_binary(
    args: &[&std::ffi::OsStr],
    cwd: &std::path::Path,
) -> (std::process::Child, String) {
    spawn_binary_logging(args, cwd, "warn", None)
}

/// As [`spawn_binary`], with `RUST_LOG=rust_log` and stderr written to `log`.
pub fn spawn_binary_logging(
    args: &[&std::ffi::OsStr],
    cwd: &std::path::Path,
    rust_log: &str,
    log: Option<&std::path::Path>,
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let stderr = match log {
        Some(path) => std::process::Stdio::from(std::fs::File::create(path).unwrap()),
        None => std::process::Stdio::null(),
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", rust_log)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    (child, format!("http://{addr}"))
}

/// As [`spawn_binary`], with extra environment variables; `Err` with the
/// server's stderr if it exits instead of listening.
pub fn try_spawn_binary_env(
    args: &[&std::ffi::OsStr],
    cwd: &std::path::Path,
    envs: &[(&str, &str)],
) -> Result<(std::process::Child, String), String> {
    use std::io::{BufRead, BufReader, Read};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    match line.trim().strip_prefix("listening on ") {
        Some(addr) => Ok((child, format!("http://{addr}"))),
        None => {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            child.wait().unwrap();
            Err(err)
        }
    }
}

/// Creates `tenant` through an operator client and its first admin;
/// returns the admin's API key.
pub async fn tenant_with_admin(op: &Client, tenant: &str) -> String {
    op.tenants()
        .create_tenant(pb::CreateTenantRequest {
            tenant: tenant.into(),
            name: String::new(),
        })
        .await
        .unwrap();
    new_principal(op, tenant, "admin", &["admin"]).await
}

/// Whether the server says `receipt` is genuine and unaltered.
pub async fn receipt_valid(c: &Client, receipt: &pb::DeletionReceipt) -> bool {
    c.subjects()
        .verify_receipt(pb::VerifyReceiptRequest {
            receipt: Some(receipt.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .valid
}

/// The server's verdict on the whole audit chain.
pub async fn verify_audit(c: &Client) -> pb::VerifyAuditResponse {
    c.audit()
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner()
}
