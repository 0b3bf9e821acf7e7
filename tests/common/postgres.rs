//! A real PostgreSQL server for the tests: `STRONGBOX_TEST_DATABASE_URL`
//! if it names one (a maintenance URL: each test creates its own database
//! there), else a throwaway cluster of this test process's own: `initdb`
//! into a temp dir (as `nobody` when the tests run as root: PostgreSQL
//! refuses root), started on a free port, killed when the process exits
//! (the postmaster's parent-death signal). `scripts/test` installs Debian's
//! `postgresql` where `initdb` is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The maintenance URL (`postgres://USER@HOST:PORT`), without a database.
fn server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("STRONGBOX_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url.trim_end_matches('/').to_owned(),
        _ => start_cluster(),
    })
}

/// Runs `f` on a thread of its own: the `postgres` client blocks on a
/// runtime of its own, which it may not do on the test's async threads.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("a PostgreSQL helper panicked"))
}

/// A fresh, empty database on the test server: its URL.
pub fn database() -> String {
    off_runtime(create_database)
}

fn create_database() -> String {
    let name = format!("sb_{}", hex::encode(rand::random::<[u8; 6]>()));
    let mut admin = postgres::Client::connect(&format!("{}/postgres", server()), postgres::NoTls)
        .expect("connect to the test PostgreSQL server");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create a test database");
    format!("{}/{name}", server())
}

/// A copy of the database at `url` (no one may be connected to it), as a
/// base backup or a point-in-time recovery would bring it back: its URL.
pub fn copy_database(url: &str) -> String {
    let (server, source) = url.rsplit_once('/').expect("a database URL");
    let (server, source) = (server.to_owned(), source.to_owned());
    off_runtime(move || {
        let name = format!("sb_{}", hex::encode(rand::random::<[u8; 6]>()));
        let mut admin = postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls)
            .expect("connect to the test PostgreSQL server");
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {source}"))
            .expect("copy a test database");
        format!("{server}/{name}")
    })
}

/// A connection to `url`, for looking at what the vault stored.
pub fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect to the test database")
}

fn pg_bin(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            let mut v: Vec<PathBuf> = d
                .flatten()
                .map(|e| e.path().join("bin").join(name))
                .collect();
            v.sort();
            v.reverse();
            v
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(debian)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} not found: install PostgreSQL (scripts/test installs Debian's postgresql) or set STRONGBOX_TEST_DATABASE_URL")
        })
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `program` as the unprivileged user when running as root, with the
/// parent-death signal set so it dies with this process.
fn unprivileged(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    if is_root() {
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]);
    }
    c.arg("--pdeathsig=KILL").arg(program);
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Removes the clusters of test processes that have exited (their
/// postmasters died with them; only the directories stay).
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("strongbox-pg-")
            && let Some(pid) = rest.split('-').next()
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A restart of the throwaway cluster: down for `down_for`, then started
/// again; `done` when it is started (not yet ready).
struct Restart {
    down_for: Duration,
    done: std::sync::mpsc::Sender<()>,
}

/// How to restart this process's own throwaway cluster (none when
/// `STRONGBOX_TEST_DATABASE_URL` names a server).
static RESTART: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Restart>>> = OnceLock::new();

fn start_cluster() -> String {
    let (port, _, restart) = start_cluster_in("", |_| {}, &[]);
    let _ = RESTART.set(std::sync::Mutex::new(restart));
    format!("postgres://strongbox@127.0.0.1:{port}")
}

/// Whether this process runs its own cluster, which [`restart_server`]
/// may restart.
pub fn can_restart() -> bool {
    server();
    RESTART.get().is_some()
}

/// Restarts this process's cluster: a fast shutdown (every session is
/// ended), `down_for` with no server, then the same data directory on the
/// same port; returns once it accepts connections again.
pub fn restart_server(down_for: Duration) {
    let (done, started) = std::sync::mpsc::channel();
    RESTART
        .get()
        .expect("a cluster of this process's own")
        .lock()
        .unwrap()
        .send(Restart { down_for, done })
        .unwrap();
    started.recv().unwrap();
    let url = format!("{}/postgres", server());
    let deadline = Instant::now() + Duration::from_secs(30);
    while postgres::Client::connect(&url, postgres::NoTls).is_err() {
        assert!(
            Instant::now() < deadline,
            "the test PostgreSQL server did not come back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A throwaway cluster of its own that takes TLS connections only over
/// TCP (`hostssl`; a plaintext TCP connection is rejected), with a
/// certificate for 127.0.0.1 signed by a CA made here: `(port, CA file)`.
/// Databases are made on it with [`tls_database`].
pub fn tls_cluster() -> &'static (u16, PathBuf) {
    static TLS: OnceLock<(u16, PathBuf)> = OnceLock::new();
    TLS.get_or_init(|| off_runtime(start_tls_cluster))
}

fn start_tls_cluster() -> (u16, PathBuf) {
    let (ca_pem, cert_pem, key_pem) = tls_files();
    let (port, dir, _) = start_cluster_in(
        "-tls",
        move |data| {
            for (name, text) in [("server.crt", &cert_pem), ("server.key", &key_pem)] {
                let path = data.join(name);
                std::fs::write(&path, text).unwrap();
                give_to_postgres(&path, 0o600);
            }
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 host all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
        },
        &["-c", "ssl=on"],
    );
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    (port, ca)
}

/// A fresh database on [`tls_cluster`], made over its local socket: the
/// database's name.
pub fn tls_database() -> String {
    let (port, ca) = tls_cluster();
    let socket = ca.parent().unwrap().to_owned();
    let port = *port;
    off_runtime(move || {
        let name = format!("sb_{}", hex::encode(rand::random::<[u8; 6]>()));
        socket_client(&socket, port)
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        name
    })
}

/// A plaintext connection over the cluster's local socket.
pub fn socket_client(socket_dir: &Path, port: u16) -> postgres::Client {
    postgres::Config::new()
        .host_path(socket_dir)
        .port(port)
        .user("strongbox")
        .dbname("postgres")
        .connect(postgres::NoTls)
        .expect("connect over the local socket")
}

/// A CA, and a server certificate and key for 127.0.0.1 it signed (PEM).
fn tls_files() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Strongbox test database CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Makes `path` the PostgreSQL server's (it runs as `nobody` under root).
fn give_to_postgres(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    }
}

/// Starts a cluster in `strongbox-pg-<pid><suffix>` under the temp dir,
/// `setup` run on its data directory after `initdb`, `args` given to the
/// postmaster: its port, its directory (the local socket's too), and how
/// to restart it.
fn start_cluster_in(
    suffix: &str,
    setup: impl FnOnce(&Path),
    args: &[&str],
) -> (u16, PathBuf, std::sync::mpsc::Sender<Restart>) {
    remove_stale_clusters();
    let dir = std::env::temp_dir().join(format!("strongbox-pg-{}{suffix}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    }
    let data = dir.join("data");
    let out = unprivileged(&pg_bin("initdb"))
        .args([
            "-A",
            "trust",
            "-U",
            "strongbox",
            "--no-sync",
            "-E",
            "UTF8",
            "-D",
        ])
        .arg(&data)
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    setup(&data);
    let port = free_port();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    // The postmaster is started from a thread that never ends, so its
    // parent-death signal fires only when this process exits; the same
    // thread restarts it when asked.
    let (program, dir2) = (pg_bin("postgres"), dir.clone());
    let (restart, restarts) = std::sync::mpsc::channel::<Restart>();
    std::thread::spawn(move || {
        loop {
            let mut child = unprivileged(&program)
                .arg("-D")
                .arg(dir2.join("data"))
                .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "fsync=on", "-c", "max_connections=300"])
                .args(&args)
                .arg("-k")
                .arg(&dir2)
                .stdout(Stdio::null())
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(dir2.join("log"))
                        .unwrap(),
                )
                .spawn()
                .expect("start postgres");
            let Ok(Restart { down_for, done }) = restarts.recv() else {
                let _ = child.wait();
                loop {
                    std::thread::park();
                }
            };
            // SIGINT: PostgreSQL's fast shutdown.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
            std::thread::sleep(down_for);
            let _ = done.send(());
        }
    });
    let started = Instant::now();
    let ready = || {
        postgres::Config::new()
            .host_path(&dir)
            .port(port)
            .user("strongbox")
            .dbname("postgres")
            .connect(postgres::NoTls)
            .is_ok()
    };
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the test PostgreSQL server did not start; its log is in {}",
            dir.join("log").display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (port, dir, restart)
}

/// A server's configuration in `dir`, on the database at `url`.
pub fn pg_config(dir: &tempfile::TempDir, url: &str) -> strongbox::config::ServerConfig {
    strongbox::config::ServerConfig {
        database_url: Some(strongbox::config::DatabaseUrl::parse(url.to_owned()).unwrap()),
        ..super::config_for(dir)
    }
}

/// A test server on a fresh database; and the database's URL.
pub async fn pg_server() -> (super::TestServer, String) {
    let url = database();
    let dir = tempfile::tempdir().unwrap();
    let config = pg_config(&dir, &url);
    (super::TestServer::start_with(dir, config).await, url)
}

/// A second server on the same database, sharing the first's root key,
/// erasure keys, audit anchor and shred ledger, as servers of one
/// deployment share them (a secret store and a shared volume).
pub async fn second_server(
    first: &super::TestServer,
    url: &str,
) -> (tempfile::TempDir, strongbox::server::RunningServer) {
    let dir = tempfile::tempdir().unwrap();
    let config = second_config(first, &dir, url);
    let server = strongbox::server::start(config)
        .await
        .expect("the second server starts");
    (dir, server)
}

/// [`second_server`]'s configuration, in `dir`.
pub fn second_config(
    first: &super::TestServer,
    dir: &tempfile::TempDir,
    url: &str,
) -> strongbox::config::ServerConfig {
    strongbox::config::ServerConfig {
        root_key_file: Some(first.config.root_key_path()),
        erasure_keys: Some(first.config.erasure().unwrap().keys_file),
        audit_anchor: Some(first.config.audit_anchor_path()),
        shred_ledger: Some(first.config.shred_ledger_path()),
        housekeeping_interval: first.config.housekeeping_interval,
        ..pg_config(dir, url)
    }
}
