//! The privacy lifecycle's figures, on a real server over real files:
//!
//! 1. an erasure epoch roll with N tenants (`LIFECYCLE_TENANTS`, default
//!    10,000): its time, and put p99 during it against put p99 just before;
//! 2. a backup of a database of M MiB (`LIFECYCLE_DB_MIB`, default 1024):
//!    its time, and put p99 during it against just before;
//! 3. a restore that applies a shred ledger of L entries
//!    (`LIFECYCLE_LEDGER`, default 10,000 subject shreds made after the
//!    backup): its time.
//!
//! Puts: 1 KiB values, 64 concurrent clients. Run:
//! `cargo bench --bench lifecycle` (set smaller sizes with the variables).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strongbox::api::pb;
use strongbox::client::Client;
use strongbox::config::ServerConfig;
use strongbox::server;

const CONCURRENCY: usize = 64;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Put latencies (µs) of `CONCURRENCY` writers until `stop` is raised.
async fn puts_until(user: &Client, tenant: &str, stop: Arc<AtomicBool>) -> (usize, f64, f64) {
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (mut records, tenant, stop) = (user.records(), tenant.to_owned(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                records
                    .put_record(pb::PutRecordRequest {
                        tenant: tenant.clone(),
                        subject: format!("writer-{}", (w * 1_000_003 + i) % 1000),
                        category: "load".into(),
                        key: format!("w{w}-{i}"),
                        value: vec![7u8; 1024],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                lat.push(t0.elapsed().as_micros() as u32);
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    (all.len(), pct(0.5), pct(0.99))
}

/// Puts for `secs` seconds alone: the baseline.
async fn baseline(user: &Client, tenant: &str, secs: u64) -> (usize, f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (user, tenant, stop) = (user.clone(), tenant.to_owned(), stop.clone());
        async move { puts_until(&user, &tenant, stop).await }
    });
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap()
}

async fn tenant_with_user(op: &Client, tenant: &str) -> Client {
    op.tenants()
        .create_tenant(pb::CreateTenantRequest {
            tenant: tenant.into(),
            name: tenant.into(),
        })
        .await
        .unwrap();
    let principal = |by: Client, name: &'static str, roles: &[&str]| {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        async move {
            let key = by
                .principals()
                .create_principal(pb::CreatePrincipalRequest {
                    tenant: tenant.into(),
                    name: name.into(),
                    roles,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .api_key;
            by.as_key(&key).unwrap()
        }
    };
    // The operator makes the first admin; the admin makes the user.
    let admin = principal(op.clone(), "admin", &["admin"]).await;
    principal(admin, "bench", &["writer", "reader", "privacy-officer"]).await
}

/// Runs `n` calls of `f(i)` with `CONCURRENCY` at a time.
async fn fan_out<F, Fut>(n: usize, f: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (f, next) = (f.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                f(i).await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

async fn backup_to(op: &Client, out: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut stream = op
        .backup()
        .backup(pb::BackupRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut file = std::fs::File::create(out).unwrap();
    let mut bytes = 0;
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes += chunk.data.len() as u64;
        file.write_all(&chunk.data).unwrap();
    }
    file.sync_all().unwrap();
    bytes
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let tenants = env("LIFECYCLE_TENANTS", 10_000);
    let db_mib = env("LIFECYCLE_DB_MIB", 1024);
    let ledger_entries = env("LIFECYCLE_LEDGER", 10_000);
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        // Rolls and sweeps run when this bench says, not on a timer.
        housekeeping_interval: Duration::from_secs(3600),
        erasure_epoch: Duration::from_secs(1),
        erasure_window: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let running = server::start(config.clone()).await.unwrap();
    let endpoint = format!("http://{}", running.addr);
    let operator = std::fs::read_to_string(config.operator_key_path()).unwrap();
    let op = Client::connect(&endpoint, Some(operator.trim()))
        .await
        .unwrap();
    let user = tenant_with_user(&op, "load").await;

    // 1. An epoch roll with N tenants.
    let t0 = Instant::now();
    fan_out(tenants, {
        let op = op.clone();
        move |i| {
            let op = op.clone();
            async move {
                op.tenants()
                    .create_tenant(pb::CreateTenantRequest {
                        tenant: format!("t{i:05}"),
                        name: String::new(),
                    })
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    println!(
        "made {tenants} tenants in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let (n, p50, p99) = baseline(&user, "load", 5).await;
    println!("puts alone: {n} in 5 s, p50 {p50:.2} ms, p99 {p99:.2} ms");
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (user, stop) = (user.clone(), stop.clone());
        async move { puts_until(&user, "load", stop).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let roll = running.vault.roll_erasure_epoch().await.unwrap();
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (n, p50, p99) = load.await.unwrap();
    println!(
        "epoch roll: {} tenant keys rewrapped in {:.2} s; puts meanwhile (and 0.5 s before): {n}, p50 {p50:.2} ms, p99 {p99:.2} ms",
        roll.rewrapped,
        took.as_secs_f64()
    );

    // 2. A backup of an M MiB database.
    let big = tenant_with_user(&op, "big").await;
    let t0 = Instant::now();
    let values = db_mib * 16;
    fan_out(values, {
        let big = big.clone();
        move |i| {
            let big = big.clone();
            async move {
                big.records()
                    .put_record(pb::PutRecordRequest {
                        tenant: "big".into(),
                        subject: format!("s{}", i % 1000),
                        category: "blob".into(),
                        key: format!("b{i}"),
                        value: vec![(i % 251) as u8; 64 * 1024],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    let db_bytes = std::fs::metadata(config.data_dir.join(strongbox::store::DB_FILE))
        .unwrap()
        .len();
    println!(
        "filled the database to {} MiB in {:.1} s",
        db_bytes >> 20,
        t0.elapsed().as_secs_f64()
    );
    let (n, p50, p99) = baseline(&user, "load", 5).await;
    println!("puts alone: {n} in 5 s, p50 {p50:.2} ms, p99 {p99:.2} ms");
    let backup = dir.path().join("vault.sbxbak");
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (user, stop) = (user.clone(), stop.clone());
        async move { puts_until(&user, "load", stop).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let bytes = backup_to(&op, &backup).await;
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (n, p50, p99) = load.await.unwrap();
    println!(
        "backup: {} MiB in {:.1} s ({:.0} MiB/s); puts meanwhile: {n}, p50 {p50:.2} ms, p99 {p99:.2} ms",
        bytes >> 20,
        took.as_secs_f64(),
        (bytes >> 20) as f64 / took.as_secs_f64()
    );

    // 3. A restore applying a ledger of L shreds made after the backup.
    let people = tenant_with_user(&op, "people").await;
    fan_out(ledger_entries, {
        let people = people.clone();
        move |i| {
            let people = people.clone();
            async move {
                people
                    .records()
                    .put_record(pb::PutRecordRequest {
                        tenant: "people".into(),
                        subject: format!("person-{i}"),
                        category: "contact".into(),
                        key: "email".into(),
                        value: b"someone@example.com".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    std::fs::remove_file(&backup).unwrap();
    backup_to(&op, &backup).await;
    fan_out(ledger_entries, {
        let people = people.clone();
        move |i| {
            let people = people.clone();
            async move {
                people
                    .subjects()
                    .shred_subject(pb::ShredSubjectRequest {
                        tenant: "people".into(),
                        subject: format!("person-{i}"),
                    })
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    running.shutdown().await.unwrap();
    let target = dir.path().join("restored");
    std::fs::create_dir_all(&target).unwrap();
    for f in ["root.key", "erasure.keys"] {
        std::fs::copy(config.data_dir.join(f), target.join(f)).unwrap();
    }
    let restore_config = ServerConfig {
        data_dir: target,
        ..config.clone()
    };
    let t0 = Instant::now();
    let done = server::restore::restore(
        &restore_config,
        &backup,
        server::restore::Ledger::Apply(config.shred_ledger_path()),
    )
    .await
    .unwrap();
    let applied = done.applied.unwrap();
    println!(
        "restore: {} MiB backup, ledger of {} entries ({} subjects erased, {} rows purged) in {:.1} s",
        std::fs::metadata(&backup).unwrap().len() >> 20,
        applied.entries,
        applied.subjects,
        applied.purged,
        t0.elapsed().as_secs_f64()
    );
}
