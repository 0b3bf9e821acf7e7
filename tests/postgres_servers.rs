//! Three `strongbox serve` processes on one PostgreSQL database, as a
//! deployment runs them behind a load balancer: one root key (from the
//! environment), and the erasure keys, audit anchor and shred ledger on a
//! volume they share. They start at once on an empty database; check-then-
//! act calls race through all three; the server running the background
//! jobs is killed (SIGKILL) in the middle of a rewrap, under load, and
//! another takes its work over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use strongbox::api::pb;
use strongbox::client::Client;
use tonic::Code;

const ROOT_ENV: &str = "SB_TEST_ROOT_KEY";

/// One deployment: the database, the root key and the shared volume.
struct Deployment {
    url: String,
    root_hex: String,
    shared: tempfile::TempDir,
}

/// One server of it, with its own data directory.
struct Node {
    serve: Serve,
    dir: tempfile::TempDir,
}

impl Node {
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn client(&self, key: &str) -> Client {
        Client::connect(&self.serve.endpoint, Some(key))
            .await
            .unwrap()
    }

    fn pid(&self) -> u32 {
        self.serve.child.id()
    }
}

impl Deployment {
    fn new() -> Deployment {
        Deployment {
            url: common::postgres::database(),
            root_hex: hex::encode(rand::random::<[u8; 32]>()),
            shared: tempfile::tempdir().unwrap(),
        }
    }

    fn shared(&self, name: &str) -> PathBuf {
        self.shared.path().join(name)
    }

    /// Starts one more server (housekeeping every 300 ms).
    fn start(&self) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("strongbox.toml");
        std::fs::write(
            &config,
            format!(
                "housekeeping_interval = \"300ms\"\n\
                 root_key_env = \"{ROOT_ENV}\"\n\
                 database_url = \"{}\"\n\
                 erasure_keys = \"{}\"\n\
                 audit_anchor = \"{}\"\n\
                 shred_ledger = \"{}\"\n",
                self.url,
                self.shared("erasure.keys").display(),
                self.shared("audit.anchor").display(),
                self.shared("shred.ledger").display(),
            ),
        )
        .unwrap();
        let data = dir.path().join("data");
        let serve = Serve::start(
            &[
                "--config".as_ref(),
                config.as_os_str(),
                "--data-dir".as_ref(),
                data.as_os_str(),
            ],
            dir.path(),
            &[(ROOT_ENV, &self.root_hex), ("RUST_LOG", "warn")],
        )
        .unwrap();
        Node { serve, dir }
    }

    /// The holder of the background jobs' lease, and until when.
    fn lease(&self) -> Option<(String, i64)> {
        let url = self.url.clone();
        common::postgres::off_runtime(move || {
            common::postgres::connect(&url)
                .query_opt(
                    "SELECT holder, expires_at FROM job_leases WHERE name = 'background-jobs'",
                    &[],
                )
                .unwrap()
                .map(|r| (r.get(0), r.get(1)))
        })
    }

    /// Waits until a server whose pid is one of `pids` holds the lease.
    async fn lease_held_by(&self, pids: &[u32], within: Duration) -> u32 {
        let deadline = Instant::now() + within;
        loop {
            let holder = self.lease().map(|(h, _)| holder_pid(&h));
            if let Some(pid) = holder.filter(|h| pids.contains(h)) {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "no server of {pids:?} took the lease: {:?}",
                self.lease()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The process id in a lease holder (`host/pid/random`).
fn holder_pid(holder: &str) -> u32 {
    holder.split('/').nth(1).unwrap().parse().unwrap()
}

fn operator_key(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join("operator.key"))
        .ok()
        .map(|k| k.trim().to_owned())
}

/// Three servers started at once on an empty database.
fn three(d: &Deployment) -> Vec<Node> {
    std::thread::scope(|s| {
        let started: Vec<_> = (0..3).map(|_| s.spawn(|| d.start())).collect();
        started.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn three_servers_race_every_check_then_act_and_each_happens_once() {
    let d = Deployment::new();
    let nodes = three(&d);

    // Bootstrap: the database was initialized once, by one of them, so
    // one operator key exists, and it works on every server.
    let keys: Vec<String> = nodes
        .iter()
        .filter_map(|n| operator_key(&n.data_dir()))
        .collect();
    assert_eq!(keys.len(), 1, "exactly one server made the operator key");
    let mut ops = Vec::new();
    for n in &nodes {
        ops.push(n.client(&keys[0]).await);
    }
    for op in &ops {
        op.tenants()
            .list_tenants(pb::ListTenantsRequest::default())
            .await
            .expect("the bootstrap key works on every server");
    }

    // Tenant create: the same id through all three, 4 times each.
    let mut calls = Vec::new();
    for i in 0..12 {
        let op = ops[i % 3].clone();
        calls.push(tokio::spawn(async move {
            op.tenants()
                .create_tenant(pb::CreateTenantRequest {
                    tenant: "acme".into(),
                    name: String::new(),
                })
                .await
        }));
    }
    let mut created = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => created += 1,
            Err(s) => assert_eq!(s.code(), Code::AlreadyExists, "{s:?}"),
        }
    }
    assert_eq!(created, 1, "one create wins, the others see it");

    // KEK version +1: 9 rotations through three servers make 9 distinct
    // versions (a response is the status after its call: another call's
    // rotation may be in it).
    let admin_key = tenant_admin_key(&ops[0], "acme").await;
    let admins: Vec<Client> = ops.iter().map(|o| o.as_key(&admin_key).unwrap()).collect();
    let mut calls = Vec::new();
    for i in 0..9 {
        let a = admins[i % 3].clone();
        calls.push(tokio::spawn(async move {
            a.keys()
                .rotate_tenant_key(pb::RotateTenantKeyRequest {
                    tenant: "acme".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .current_version
        }));
    }
    for c in calls {
        assert!(c.await.unwrap() >= 2);
    }
    let st = key_status(&admins[2], "acme").await;
    let mut versions: Vec<u32> = st.versions.iter().map(|v| v.version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=10).collect::<Vec<_>>(), "one version each");
    assert_eq!(st.current_version, 10);
    let active = st.versions.iter().filter(|v| v.state == "active").count();
    assert_eq!(active, 1, "one active version: {st:?}");

    // Record compare-and-set: 12 writers through three servers each
    // expect version 1; exactly one succeeds.
    let user_key = new_principal(&admins[0], "acme", "rw", &["writer", "reader"]).await;
    let users: Vec<Client> = ops.iter().map(|o| o.as_key(&user_key).unwrap()).collect();
    put_ok(&users[0], "acme", "alice", "c", "k", b"v1").await;
    let mut calls = Vec::new();
    for i in 0..12 {
        let u = users[i % 3].clone();
        calls.push(tokio::spawn(async move {
            let mut req = put("acme", "alice", "c", "k", format!("w{i}").as_bytes());
            req.expected_version = Some(1);
            u.records().put_record(req).await
        }));
    }
    let mut won = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.into_inner().version, 2);
                won += 1;
            }
            Err(s) => assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}"),
        }
    }
    assert_eq!(won, 1, "one compare-and-set wins");

    // The audit head: every call above, through three servers, is one
    // unbroken chain.
    let report = verify_audit(&ops[1]).await;
    assert!(report.ok, "{report:?}");
    for n in nodes {
        n.serve.kill();
    }
}

/// Creates an admin principal in `tenant`; its key.
async fn tenant_admin_key(op: &Client, tenant: &str) -> String {
    new_principal(op, tenant, "admin", &["admin"]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_server_killed_mid_rewrap_under_load_and_another_finishes_its_work() {
    const SUBJECTS: usize = 3000;
    let d = Deployment::new();
    let a = d.start();
    let op_key = operator_key(&a.data_dir()).unwrap();
    // The first server takes the lease at its first pass; the others,
    // started after, leave it to it.
    d.lease_held_by(&[a.pid()], Duration::from_secs(10)).await;
    let b = d.start();
    let c = d.start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        holder_pid(&d.lease().unwrap().0),
        a.pid(),
        "one holder while it renews"
    );

    let op_a = a.client(&op_key).await;
    let admin_key = tenant_with_admin(&op_a, "t").await;
    let user_key = new_principal(
        &op_a.as_key(&admin_key).unwrap(),
        "t",
        "rw",
        &["writer", "reader"],
    )
    .await;
    let (ua, ub, uc) = (
        a.client(&user_key).await,
        b.client(&user_key).await,
        c.client(&user_key).await,
    );
    put_numbered(&[ua.clone(), ub.clone(), uc.clone()], "t", SUBJECTS).await;

    // Load through B and C for the rest of the test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = [ub.clone(), uc.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, u)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let subject = format!("load{n}-{i}");
                    put_ok(&u, "t", &subject, "c", "k", subject.as_bytes()).await;
                    acked.push(subject);
                    i += 1;
                }
                acked
            })
        })
        .collect();

    // Rotate on B; A, holding the lease, starts the rewrap; kill A once
    // it has made progress and before it is done.
    let admin_b = b.client(&admin_key).await;
    admin_b
        .keys()
        .rotate_tenant_key(pb::RotateTenantKeyRequest { tenant: "t".into() })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = key_status(&admin_b, "t").await.data_keys_to_rewrap;
        assert!(
            left > 0,
            "the rewrap finished before the kill: make it longer"
        );
        if left < SUBJECTS as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "the rewrap never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let a_pid = a.pid();
    a.serve.kill();
    let left_at_kill = key_status(&admin_b, "t").await.data_keys_to_rewrap;

    // B or C takes the lease once A's claim expires (twice the interval
    // and a second), and finishes the rewrap A left.
    let taker = d
        .lease_held_by(&[b.pid(), c.pid()], Duration::from_secs(15))
        .await;
    assert_ne!(taker, a_pid);
    wait_rewrap_done(
        &admin_b,
        "t",
        Duration::from_secs(60),
        &format!("the rewrap was not resumed ({left_at_kill} left at the kill)"),
    )
    .await;

    // The load went on through B and C the whole time, every put
    // acknowledged (put_ok fails the test otherwise); each reads back
    // from both, as does every record written before.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for l in load {
        acked.extend(l.await.unwrap());
    }
    assert!(!acked.is_empty());
    for subject in &acked {
        for u in [&ub, &uc] {
            assert_eq!(
                get_value(u, "t", subject, "c", "k").await.unwrap(),
                subject.as_bytes()
            );
        }
    }
    for i in (0..SUBJECTS).step_by(7) {
        assert_eq!(
            get_value(&uc, "t", &format!("s{i}"), "c", "k")
                .await
                .unwrap(),
            format!("v{i}").as_bytes()
        );
    }
    let report = verify_audit(&b.client(&op_key).await).await;
    assert!(report.ok, "{report:?}");

    // A clean shutdown gives the lease up: once the holder has exited,
    // the lease is free or already the other server's, not left to expire.
    let (mut holder, other) = if taker == b.pid() { (b, c) } else { (c, b) };
    sigterm(holder.pid());
    let exited = holder.serve.child.wait().unwrap();
    assert!(exited.success(), "a clean shutdown: {exited:?}");
    match d.lease() {
        None => {}
        Some((h, _)) => assert_eq!(holder_pid(&h), other.pid(), "released, not left to expire"),
    }
    d.lease_held_by(&[other.pid()], Duration::from_secs(10))
        .await;
    other.serve.kill();
}

/// Asks a server to shut down cleanly (SIGTERM), as a deploy does.
fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
