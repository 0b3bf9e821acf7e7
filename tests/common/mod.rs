//! Test harness: a real Strongbox server on 127.0.0.1:0 over a temporary
//! data directory, and helpers to make tenants and principals through the
//! real gRPC API.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod attacker;
pub mod postgres;
pub mod rpcs;
pub mod stored;

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

/// A server's configuration in `dir`: SQLite in it, or with
/// `STRONGBOX_TEST_BACKEND=postgres` (scripts/test's second pass) a
/// fresh database of its own on the test PostgreSQL server.
pub fn config_for(dir: &TempDir) -> ServerConfig {
    ServerConfig {
        data_dir: dir.path().join("data"),
        database_url: on_postgres()
            .then(|| strongbox::config::DatabaseUrl::parse(postgres::database()).unwrap()),
        listen: "127.0.0.1:0".parse().unwrap(),
        housekeeping_interval: Duration::from_millis(200),
        ..ServerConfig::default()
    }
}

/// Whether this run's servers keep their vaults in PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("STRONGBOX_TEST_BACKEND").is_ok_and(|b| b == "postgres")
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

    /// Where this server's rows are: its SQLite file or its PostgreSQL
    /// database.
    pub fn stored(&self) -> stored::Stored {
        match &self.config.database_url {
            Some(url) => stored::Stored::Postgres(url.expose().to_owned()),
            None => stored::Stored::Sqlite(self.db_path()),
        }
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
        new_principal(admin, tenant, name, roles).await
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
    let (header, records, _) = export_all(c, tenant, subject).await;
    (header, records)
}

/// As [`export`], with the access history after the records.
pub async fn export_all(
    c: &Client,
    tenant: &str,
    subject: &str,
) -> (pb::SubjectHeader, Vec<pb::Record>, Vec<pb::AccessEntry>) {
    let mut stream = c
        .subjects()
        .export_subject(pb::ExportSubjectRequest {
            tenant: tenant.into(),
            subject: subject.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let (mut header, mut records, mut history) = (None, Vec::new(), Vec::new());
    while let Some(m) = stream.message().await.unwrap() {
        match m.item.unwrap() {
            pb::export_subject_response::Item::Header(h) => header = Some(h),
            pb::export_subject_response::Item::Record(r) => {
                assert!(history.is_empty(), "records come before the history");
                records.push(r)
            }
            pb::export_subject_response::Item::Access(a) => history.push(a),
        }
    }
    (
        header.expect("an export starts with a header"),
        records,
        history,
    )
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
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// A `strongbox serve` child process whose stderr is watched line by line
/// (for crash points and log checks).
pub struct Serve {
    pub child: std::process::Child,
    pub endpoint: String,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Serve {
    /// Starts `strongbox serve --listen 127.0.0.1:0 ARGS` in `cwd`; `Err`
    /// with its stderr if it exits instead of listening.
    pub fn start(
        args: &[&std::ffi::OsStr],
        cwd: &std::path::Path,
        envs: &[(&str, &str)],
    ) -> Result<Serve, String> {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(cwd)
            .envs(envs.iter().copied());
        Self::spawn(cmd)
    }

    /// As [`Serve::start`], with the server's open-file limit (soft and
    /// hard) set to `nofile` by the shell that starts it.
    pub fn start_with_fd_limit(
        args: &[&std::ffi::OsStr],
        cwd: &std::path::Path,
        nofile: u64,
    ) -> Result<Serve, String> {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_strongbox"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(cwd);
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: std::process::Command) -> Result<Serve, String> {
        use std::io::{BufRead, BufReader};
        if cmd.get_envs().all(|(k, _)| k != "RUST_LOG") {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // `listening on ADDR`, or in JSON mode an object with `addr`.
        let json_addr = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("addr")?.as_str().map(str::to_owned));
        let addr =
            json_addr.or_else(|| line.trim().strip_prefix("listening on ").map(str::to_owned));
        match addr {
            Some(addr) => Ok(Serve {
                child,
                endpoint: format!("http://{addr}"),
                lines,
                seen: Vec::new(),
            }),
            None => {
                child.wait().unwrap();
                Err(lines.iter().collect::<Vec<_>>().join("\n"))
            }
        }
    }

    /// The stderr lines read so far (by [`Serve::wait_for`]).
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Waits up to `timeout` for a stderr line containing `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        if self.seen.iter().any(|l| l.contains(needle)) {
            return true;
        }
        let deadline = std::time::Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// SIGTERM (a clean stop, as a deploy does), then reap.
    pub fn terminate(mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap();
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The operator's client (the bootstrap key in `data_dir`).
    pub async fn operator(&self, data_dir: &std::path::Path) -> Client {
        let key = std::fs::read_to_string(data_dir.join("operator.key")).unwrap();
        Client::connect(&self.endpoint, Some(key.trim()))
            .await
            .unwrap()
    }
}

impl Drop for Serve {
    /// A test that fails part-way must not leave its server running (it
    /// would go on with its housekeeping against a shared database).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A SoftHSM2 token in a temporary directory (its own config, so tests
/// never share tokens). Processes see it through `SOFTHSM2_CONF`.
pub struct SoftHsm {
    pub dir: TempDir,
    pub conf: PathBuf,
    pub module: PathBuf,
    pub token: String,
}

/// The test token's user PIN.
pub const HSM_PIN: &str = "4711-test";

impl SoftHsm {
    /// Initializes a fresh token labelled `token`.
    pub fn new(token: &str) -> SoftHsm {
        let module = softhsm_module();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", token])
            .args(["--so-pin", "so-4711", "--pin", HSM_PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util: install SoftHSM2 (scripts/test does)");
        assert!(out.status.success(), "{out:?}");
        SoftHsm {
            dir,
            conf,
            module,
            token: token.to_owned(),
        }
    }

    /// `SOFTHSM2_CONF` and the PIN variable, for a child process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SOFTHSM2_CONF", self.conf.display().to_string()),
            ("STRONGBOX_PKCS11_PIN", HSM_PIN.to_owned()),
        ]
    }

    /// The `--pkcs11-*` flags naming this token and `label`.
    pub fn args(&self, label: &str) -> Vec<std::ffi::OsString> {
        vec![
            "--pkcs11-module".into(),
            self.module.clone().into(),
            "--pkcs11-token".into(),
            self.token.clone().into(),
            "--pkcs11-key-label".into(),
            label.into(),
        ]
    }
}

/// The SoftHSM2 module: `$STRONGBOX_TEST_PKCS11_MODULE`, or where distributions put it.
pub fn softhsm_module() -> PathBuf {
    if let Some(m) = std::env::var_os("STRONGBOX_TEST_PKCS11_MODULE") {
        return m.into();
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
        "/usr/lib64/softhsm/libsofthsm2.so",
        "/opt/homebrew/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("SoftHSM2 is not installed: run scripts/test, which installs it")
}

/// Runs the `strongbox` client binary in `cwd`; returns (success, stdout, stderr).
pub fn run_cli(
    args: &[&std::ffi::OsStr],
    cwd: &std::path::Path,
    envs: &[(&str, &str)],
) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .args(args)
        .current_dir(cwd)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What [`populate`] wrote: the reader-writer's key and a receipt.
pub struct Populated {
    pub key: String,
    pub receipt: pb::DeletionReceipt,
}

/// Tenant `t` with 20 subjects' records, a tenant-level record, and a
/// shredded subject's receipt, made through `op` (an operator client).
pub async fn populate(op: &Client) -> Populated {
    let admin = op.as_key(&tenant_with_admin(op, "t").await).unwrap();
    let key = new_principal(&admin, "t", "rw", &["writer", "reader", "privacy-officer"]).await;
    let u = op.as_key(&key).unwrap();
    for i in 0..20 {
        let v = format!("v{i}");
        put_ok(
            &u,
            "t",
            &format!("person-{i}@example.com"),
            "contact",
            "email",
            v.as_bytes(),
        )
        .await;
    }
    put_ok(&u, "t", "", "infra", "cfg", b"tenant-level").await;
    put_ok(&u, "t", "gone", "c", "k", b"x").await;
    let receipt = u
        .subjects()
        .shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: "gone".into(),
        })
        .await
        .unwrap()
        .into_inner();
    Populated { key, receipt }
}

/// Everything [`populate`] wrote reads back through `op`'s server: records
/// found by subject (blind index), the receipt verifies, the audit chain holds.
pub async fn check_populated(op: &Client, p: &Populated) {
    let u = op.as_key(&p.key).unwrap();
    for i in 0..20 {
        let v = get_value(
            &u,
            "t",
            &format!("person-{i}@example.com"),
            "contact",
            "email",
        )
        .await
        .unwrap();
        assert_eq!(v, format!("v{i}").into_bytes());
    }
    assert_eq!(
        get_value(&u, "t", "", "infra", "cfg").await.unwrap(),
        b"tenant-level"
    );
    assert!(
        receipt_valid(&u, &p.receipt).await,
        "a receipt issued earlier verifies"
    );
    let audit = verify_audit(op).await;
    assert!(audit.ok, "{}", audit.problem);
}

/// Asks `op`'s server to rotate the root key, waits until the server
/// reports `crash_point`, and SIGKILLs it there.
pub async fn rotate_root_killed_at(mut serve: Serve, op: &Client, crash_point: &str) {
    let keys = op.keys();
    let call = tokio::spawn(async move {
        let mut keys = keys;
        keys.rotate_root_key(pb::RotateRootKeyRequest {}).await
    });
    let marker = format!("crash point reached: {crash_point}");
    let reached = tokio::task::block_in_place(|| serve.wait_for(&marker, Duration::from_secs(30)));
    assert!(reached, "the server never reached {crash_point}");
    serve.kill();
    assert!(
        call.await.unwrap().is_err(),
        "the call cannot have succeeded: the server died at {crash_point}"
    );
}

/// The crash points of a root-key replacement, in order.
pub const ROOT_CRASH_POINTS: [&str; 3] = ["staged", "committed", "promoted"];

/// `old` (a replaced root key) unwraps none of tenant `t`'s keys nor the
/// audit key stored in `db`.
pub fn old_root_opens_nothing(db: &stored::Stored, old: &dyn strongbox::rootkey::RootKeyProvider) {
    use strongbox::crypto::label;
    use strongbox::keyring::aad;
    let kek = db.rows(
        "SELECT version, wrapped FROM tenant_keks WHERE tenant_id = 't'",
        &[],
    );
    let (version, kek) = (kek[0][0].int() as u32, kek[0][1].bytes());
    let index = db
        .one("SELECT wrapped_index_key FROM tenants WHERE id = 't'", &[])
        .bytes();
    let meta = |name: &str| {
        db.one("SELECT value FROM meta WHERE name = $1", &[name])
            .bytes()
    };
    let audit_key = meta("audit_key");
    assert!(
        old.unwrap(label::WRAP_KEK, &aad::kek("t", version), &kek)
            .is_err()
    );
    assert!(
        old.unwrap(label::WRAP_INDEX_KEY, &aad::index_key("t"), &index)
            .is_err()
    );
    assert!(
        old.unwrap(label::WRAP_AUDIT_KEY, &aad::audit_key(), &audit_key)
            .is_err()
    );
    // Nor the key that opens the erasure epoch keys, above the tenant keys.
    let erasure_key = meta("erasure_wrap_key");
    assert!(
        old.unwrap(
            label::WRAP_ERASURE_KEY,
            &aad::erasure_wrap_key(),
            &erasure_key
        )
        .is_err()
    );
}

/// Puts record `c/k` = `v{i}` for subjects `s0` to `s{n-1}` of `tenant`,
/// 16 calls at a time, spread over `clients` (one server or several).
pub async fn put_numbered(clients: &[Client], tenant: &str, n: usize) {
    const WRITERS: usize = 16;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let u = clients[w % clients.len()].clone();
            let tenant = tenant.to_owned();
            tokio::spawn(async move {
                for i in (w..n).step_by(WRITERS) {
                    let value = format!("v{i}");
                    put_ok(&u, &tenant, &format!("s{i}"), "c", "k", value.as_bytes()).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
}

/// Tenant `tenant`'s key status, as its admin sees it.
pub async fn key_status(admin: &Client, tenant: &str) -> pb::TenantKeyStatus {
    admin
        .keys()
        .get_tenant_key_status(pb::GetTenantKeyStatusRequest {
            tenant: tenant.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits up to `within` for tenant `tenant`'s rewrap to finish (KEK v1
/// retired, no data key left to rewrap); panics with `what` and the last
/// status otherwise.
pub async fn wait_rewrap_done(admin: &Client, tenant: &str, within: Duration, what: &str) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let st = key_status(admin, tenant).await;
        let v1 = st.versions.iter().find(|v| v.version == 1).unwrap();
        if v1.state == "retired" {
            assert_eq!(st.data_keys_to_rewrap, 0);
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rotates the root key through `op` (an operator client); panics on failure.
pub async fn rotate_root(op: &Client) -> pb::RotateRootKeyResponse {
    op.keys()
        .rotate_root_key(pb::RotateRootKeyRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Tenant `tenant`'s audit entries as (action, outcome, resource), oldest
/// first, as `c` may list them.
pub async fn audit_trail(c: &Client, tenant: &str) -> Vec<(String, String, String)> {
    let mut stream = c
        .audit()
        .list_audit_entries(pb::ListAuditEntriesRequest {
            tenant: tenant.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(e) = stream.message().await.unwrap() {
        out.push((e.action, e.outcome, e.resource));
    }
    out
}

/// Shreds `subject` of `tenant` through `c`; its receipt.
pub async fn shred_ok(c: &Client, tenant: &str, subject: &str) -> pb::DeletionReceipt {
    c.subjects()
        .shred_subject(pb::ShredSubjectRequest {
            tenant: tenant.into(),
            subject: subject.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// `strongbox backup --out OUT` against `s`, as its operator.
pub fn cli_backup(s: &TestServer, out: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .args(["--endpoint", &s.endpoint, "--api-key", &s.operator_key])
        .arg("backup")
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// `strongbox --json restore --data-dir DATA EXTRA...`, run in DATA's
/// parent; returns (success, stdout, stderr).
pub fn cli_restore(data: &std::path::Path, extra: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec!["--json".as_ref(), "restore".as_ref()];
    args.extend([std::ffi::OsStr::new("--data-dir"), data.as_os_str()]);
    args.extend(extra);
    run_cli(&args, data.parent().unwrap(), &[])
}

/// A new directory with `data/` holding the root key, erasure keys and
/// operator key of data directory `from`: what an operator restoring onto
/// a new machine (or a thief) copies.
pub fn dir_with_keys(from: &std::path::Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for file in ["root.key", "erasure.keys", "operator.key"] {
        std::fs::copy(from.join(file), data.join(file)).unwrap();
    }
    dir
}

/// The Python of `target/pyenv` (made by scripts/test), or `None`, said
/// on stderr, where this machine has no Python 3 at all. Python present
/// without the venv is a failure: the test would skip where it must run.
pub fn pyenv_python(what: &str) -> Option<PathBuf> {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    if python.exists() {
        return Some(python);
    }
    let have_python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        !have_python,
        "Python 3 is here but target/pyenv is not: run scripts/test, which makes it"
    );
    eprintln!("skipped: no Python 3 on this machine for {what}");
    None
}
