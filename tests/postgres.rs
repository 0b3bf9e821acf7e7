//! The vault on PostgreSQL: a real server (`common::postgres`), real
//! gRPC servers on it. One server's whole lifecycle; at-rest checks on the
//! tables; tampering; two servers on one database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::postgres::{pg_config, pg_server, second_server};
use common::*;
use strongbox::api::pb;
use strongbox::config::ServerConfig;
use strongbox::server;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn records_live_shred_and_survive_a_restart_on_postgres() {
    let (mut s, _url) = pg_server().await;
    let (_admin, key) = s.tenant_with_user_key("acme").await;
    let user = s.client(&key).await;
    assert_eq!(
        put_ok(&user, "acme", "alice", "contact", "email", b"a@x").await,
        1
    );
    assert_eq!(
        put_ok(&user, "acme", "alice", "contact", "email", b"a@y").await,
        2
    );
    put_ok(&user, "acme", "bob", "contact", "email", b"b@x").await;
    assert_eq!(
        get_value(&user, "acme", "alice", "contact", "email")
            .await
            .unwrap(),
        b"a@y"
    );
    // Compare-and-set refuses a stale version.
    let mut stale = common::put("acme", "alice", "contact", "email", b"late");
    stale.expected_version = Some(1);
    assert_status(
        user.records().put_record(stale).await,
        Code::FailedPrecondition,
        "version",
    );
    let receipt = shred_ok(&user, "acme", "alice").await;
    assert!(!receipt.destroyed_key_ids.is_empty());
    assert_status(
        get_value(&user, "acme", "alice", "contact", "email").await,
        Code::NotFound,
        "",
    );
    s.restart().await;
    let user = s.client(&key).await;
    assert_eq!(
        get_value(&user, "acme", "bob", "contact", "email")
            .await
            .unwrap(),
        b"b@x"
    );
    assert_status(
        get_value(&user, "acme", "alice", "contact", "email").await,
        Code::NotFound,
        "",
    );
    let report = verify_audit(&s.client(&s.operator_key.clone()).await).await;
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_plaintext_in_any_table_and_tampered_ciphertext_is_data_loss() {
    let (s, url) = pg_server().await;
    let (_admin, user) = s.tenant_with_user("acme").await;
    let canary = b"canary-7f3a9e-value";
    put_ok(
        &user,
        "acme",
        "subject-canary-41b2@example.com",
        "notes",
        "k",
        canary,
    )
    .await;
    common::postgres::off_runtime(|| {
        let mut db = common::postgres::connect(&url);
        // Every text and bytea column of every table.
        let columns = db
            .query(
                "SELECT table_name, column_name FROM information_schema.columns
                 WHERE table_schema = 'public' AND data_type IN ('text', 'bytea')",
                &[],
            )
            .unwrap();
        assert!(columns.len() > 20, "the schema's columns are listed");
        for c in &columns {
            let (table, column): (String, String) = (c.get(0), c.get(1));
            let hits: i64 = db
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {table} WHERE strpos({column}::bytea::text, $1) > 0
                            OR strpos(encode({column}::bytea, 'escape'), $2) > 0"
                    ),
                    &[&hex::encode(canary), &"subject-canary-41b2".to_owned()],
                )
                .unwrap()
                .get(0);
            assert_eq!(hits, 0, "{table}.{column} holds plaintext");
        }
        // Flip a byte of the record's ciphertext: DATA_LOSS, never the value.
        let n = db
            .execute(
                "UPDATE records SET ciphertext = set_byte(ciphertext, 20, get_byte(ciphertext, 20) # 1)
                 WHERE category = 'notes'",
                &[],
            )
            .unwrap();
        assert_eq!(n, 1);
    });
    assert_status(
        get_value(
            &user,
            "acme",
            "subject-canary-41b2@example.com",
            "notes",
            "k",
        )
        .await,
        Code::DataLoss,
        "",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_one_database_every_acknowledged_write_reads_back_everywhere() {
    let (a, url) = pg_server().await;
    let (_dir_b, b) = second_server(&a, &url).await;
    let (_admin, key) = a.tenant_with_user_key("acme").await;
    let on_a = a.client(&key).await;
    let on_b = strongbox::client::Client::connect(&format!("http://{}", b.addr), Some(&key))
        .await
        .unwrap();
    // Written on A, read on B.
    put_ok(&on_a, "acme", "alice", "contact", "email", b"from-a").await;
    assert_eq!(
        get_value(&on_b, "acme", "alice", "contact", "email")
            .await
            .unwrap(),
        b"from-a"
    );
    // Concurrent puts through both servers, the same records too: every
    // acknowledged version is distinct and the last one reads back.
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let c = if i % 2 == 0 {
            on_a.clone()
        } else {
            on_b.clone()
        };
        tasks.push(tokio::spawn(async move {
            let subject = format!("s{}", i % 5);
            put_ok(&c, "acme", &subject, "n", "k", format!("v{i}").as_bytes()).await
        }));
    }
    let mut versions = std::collections::HashMap::<u64, u32>::new();
    for t in tasks {
        *versions.entry(t.await.unwrap()).or_default() += 1;
    }
    // 5 subjects × 8 puts each: versions 1..=8, each acknowledged 5 times.
    assert_eq!(versions.len(), 8, "{versions:?}");
    assert!(versions.values().all(|n| *n == 5), "{versions:?}");
    for s in 0..5 {
        let from_a = get_value(&on_a, "acme", &format!("s{s}"), "n", "k")
            .await
            .unwrap();
        let from_b = get_value(&on_b, "acme", &format!("s{s}"), "n", "k")
            .await
            .unwrap();
        assert_eq!(from_a, from_b);
    }
    // Shred on B: the very next read on A is refused.
    shred_ok(&on_b, "acme", "alice").await;
    assert_status(
        get_value(&on_a, "acme", "alice", "contact", "email").await,
        Code::NotFound,
        "",
    );
    let report = verify_audit(&a.client(&a.operator_key.clone()).await).await;
    assert!(report.ok, "{report:?}");
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_or_suspension_on_one_server_holds_on_the_other_at_once() {
    let (a, url) = pg_server().await;
    let (_dir_b, b) = second_server(&a, &url).await;
    let b_endpoint = format!("http://{}", b.addr);
    let admin = a.tenant("acme").await;
    let created = admin
        .principals()
        .create_principal(pb::CreatePrincipalRequest {
            tenant: "acme".into(),
            name: "billing".into(),
            roles: vec!["writer".into(), "reader".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let on_b = strongbox::client::Client::connect(&b_endpoint, Some(&created.api_key))
        .await
        .unwrap();
    // B has verified (and, on SQLite, would have cached) the key.
    put_ok(&on_b, "acme", "alice", "c", "k", b"v").await;
    admin
        .principals()
        .revoke_api_key(pb::RevokeApiKeyRequest {
            tenant: "acme".into(),
            key_id: created.key_id.clone(),
        })
        .await
        .unwrap();
    assert_status(
        get_value(&on_b, "acme", "alice", "c", "k").await,
        Code::Unauthenticated,
        "invalid API key",
    );
    // A second key; the tenant suspended (its shred scheduled) on A: B
    // refuses the tenant's calls at once.
    let key = new_principal(&admin, "acme", "reader2", &["reader"]).await;
    let on_b = strongbox::client::Client::connect(&b_endpoint, Some(&key))
        .await
        .unwrap();
    assert_eq!(
        get_value(&on_b, "acme", "alice", "c", "k").await.unwrap(),
        b"v"
    );
    a.operator()
        .await
        .tenants()
        .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
            tenant: "acme".into(),
            grace_seconds: Some(3600),
        })
        .await
        .unwrap();
    assert_status(
        get_value(&on_b, "acme", "alice", "c", "k").await,
        Code::FailedPrecondition,
        "",
    );
    b.shutdown().await.unwrap();
}

/// Epoch numbers in an erasure keys file, in file order.
fn epochs_in(path: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_roll_erasure_epochs_on_one_file_without_losing_a_key() {
    let url = common::postgres::database();
    let dir_a = tempfile::tempdir().unwrap();
    let fast = |dir: &tempfile::TempDir| ServerConfig {
        erasure_epoch: std::time::Duration::from_secs(1),
        erasure_window: std::time::Duration::from_secs(3600),
        ..pg_config(dir, &url)
    };
    let config_a = fast(&dir_a);
    let a = TestServer::start_with(dir_a, config_a).await;
    let keys_file = a.config.erasure().unwrap().keys_file;
    let dir_b = tempfile::tempdir().unwrap();
    let b = server::start(ServerConfig {
        root_key_file: Some(a.config.root_key_path()),
        erasure_keys: Some(keys_file.clone()),
        audit_anchor: Some(a.config.audit_anchor_path()),
        shred_ledger: Some(a.config.shred_ledger_path()),
        ..fast(&dir_b)
    })
    .await
    .unwrap();
    // A tenant only A serves: B has cached none of its keys.
    let (_admin, key) = a.tenant_with_user_key("acme").await;
    let on_a = a.client(&key).await;
    put_ok(&on_a, "acme", "alice", "c", "k", b"v").await;
    // Both servers' housekeeping (every 200 ms) rolls a new epoch every
    // second, competing for it, and rewraps the tenant's keys each time.
    let first = *epochs_in(&keys_file).last().unwrap();
    let started = std::time::Instant::now();
    while *epochs_in(&keys_file).last().unwrap() < first + 3 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no rolls"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Every epoch once, in order, none lost (two servers each writing
    // epoch N would leave one N whose key half the tenant keys need).
    let epochs = epochs_in(&keys_file);
    assert!(epochs.windows(2).all(|w| w[1] == w[0] + 1), "{epochs:?}");
    // B opens the tenant's keys, wrapped under epochs it may never have
    // made itself, and A still does.
    let on_b = strongbox::client::Client::connect(&format!("http://{}", b.addr), Some(&key))
        .await
        .unwrap();
    assert_eq!(
        get_value(&on_b, "acme", "alice", "c", "k").await.unwrap(),
        b"v"
    );
    put_ok(&on_b, "acme", "bob", "c", "k", b"w").await;
    assert_eq!(
        get_value(&on_a, "acme", "bob", "c", "k").await.unwrap(),
        b"w"
    );
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_to_the_database_is_verified_against_its_ca() {
    let (port, ca) = common::postgres::tls_cluster().clone();
    let db = common::postgres::tls_database();
    let url = format!("postgres://strongbox@127.0.0.1:{port}/{db}?sslmode=require");
    let refused = |config: ServerConfig| async move {
        match server::start(config).await {
            Ok(_) => panic!("the server started"),
            Err(e) => e.to_string(),
        }
    };

    // sslmode=require with no CA to verify the server: refused at start.
    let dir = tempfile::tempdir().unwrap();
    let e = refused(pg_config(&dir, &url)).await;
    assert!(
        e.contains("database_ca") && e.contains("sslmode=require"),
        "{e}"
    );
    // Plaintext: this database server takes TLS only.
    let plain = url.replace("sslmode=require", "sslmode=disable");
    refused(pg_config(&dir, &plain)).await;
    // A CA that did not sign the server's certificate: no connection.
    let rogue = dir.path().join("rogue.pem");
    let rogue_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&rogue, params.self_signed(&rogue_key).unwrap().pem()).unwrap();
    refused(ServerConfig {
        database_ca: Some(rogue),
        ..pg_config(&dir, &url)
    })
    .await;

    // The right CA: served, over TLS on every connection.
    let config = ServerConfig {
        database_ca: Some(ca.clone()),
        ..pg_config(&dir, &url)
    };
    let s = TestServer::start_with(dir, config).await;
    let (_, u) = s.tenant_with_user("acme").await;
    put_ok(&u, "acme", "alice", "contact", "email", b"over-tls").await;
    assert_eq!(
        get_value(&u, "acme", "alice", "contact", "email")
            .await
            .unwrap(),
        b"over-tls"
    );
    let socket = ca.parent().unwrap().to_owned();
    let ssl: Vec<bool> = common::postgres::off_runtime(move || {
        common::postgres::socket_client(&socket, port)
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.datname = $1 AND a.client_addr IS NOT NULL",
                &[&db],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    assert!(!ssl.is_empty() && ssl.iter().all(|s| *s), "{ssl:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bench_drives_two_servers_and_times_a_shred_seen_on_the_other() {
    let (a, url) = pg_server().await;
    let (_dir_b, b) = second_server(&a, &url).await;
    let b_endpoint = format!("http://{}", b.addr);
    // The servers, named either way the bench takes them.
    let also = ["--also-endpoint".to_owned(), b_endpoint.clone()];
    let listed = [
        "--endpoints".to_owned(),
        format!("{},{b_endpoint}", a.endpoint),
    ];
    let bench = |op: &'static str, servers: [String; 2]| {
        let (a_endpoint, key) = (a.endpoint.clone(), a.operator_key.clone());
        let dir = a.dir.path().to_owned();
        let pid = std::process::id().to_string();
        tokio::task::spawn_blocking(move || {
            let args = [
                "--json",
                "--endpoint",
                &a_endpoint,
                "--api-key",
                &key,
                "bench",
                "--op",
                op,
                "--duration",
                "1s",
                "--concurrency",
                "16",
                "--records",
                "20",
                &servers[0],
                &servers[1],
                // This process serves A.
                "--server-pid",
                &pid,
            ];
            let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
            let (ok, out, err) = run_cli(&args, &dir, &[]);
            assert!(ok, "{err}");
            serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
        })
    };
    let put = bench("put", also).await.unwrap();
    assert_eq!(put["servers"], 2, "{put}");
    assert_eq!(put["errors"], 0, "{put}");
    assert!(put["ops"].as_u64().unwrap() > 0, "{put}");
    assert!(put["server_cpu_us_per_op"].as_f64().unwrap() > 0.0, "{put}");
    assert!(put["database_cpu_us_per_op"].is_null(), "{put}");
    let shred = bench("shred", listed).await.unwrap();
    assert_eq!(shred["servers"], 2, "{shred}");
    let refused = shred["refused_on_other_server_median_ms"].as_f64().unwrap();
    let took = shred["shred_one_record_median_ms"].as_f64().unwrap();
    assert!(refused >= took && refused > 0.0, "{shred}");
    b.shutdown().await.unwrap();
}

/// The names of the root-generation acknowledgements live in `url`'s
/// `job_leases` for generation `n`.
fn root_acks(url: &str, n: u64) -> usize {
    let url = url.to_owned();
    common::postgres::off_runtime(move || {
        common::postgres::connect(&url)
            .query(
                "SELECT name FROM job_leases WHERE name LIKE $1",
                &[&format!("root-generation/{n}/%")],
            )
            .unwrap()
            .len()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_rotation_on_one_server_reaches_the_others_at_their_next_call() {
    let (a, url) = pg_server().await;
    let (_dir_b, b) = second_server(&a, &url).await;
    let op = a.operator().await;
    let (_, key) = a.tenant_with_user_key("acme").await;
    put_ok(&a.client(&key).await, "acme", "alice", "c", "k", b"v").await;
    put_ok(&a.client(&key).await, "acme", "bob", "c", "k", b"w").await;
    let on_b = strongbox::client::Client::connect(&format!("http://{}", b.addr), Some(&key))
        .await
        .unwrap();
    assert_eq!(
        get_value(&on_b, "acme", "alice", "c", "k").await.unwrap(),
        b"v"
    );
    let rotated = rotate_root(&op).await;
    assert!(rotated.keys_rewrapped > 0, "{rotated:?}");
    // B's very next call that unwraps under the root (a shred's receipt
    // key) finds the new root generation and moves to the new key; with
    // the old one it would answer DATA_LOSS.
    let receipt = shred_ok(&on_b, "acme", "alice").await;
    assert!(!receipt.destroyed_key_ids.is_empty(), "{receipt:?}");
    assert_eq!(
        get_value(&on_b, "acme", "bob", "c", "k").await.unwrap(),
        b"w"
    );
    // A tenant made on B: its keys, and the tenant row's seal, under the
    // vault's keys as moved; A reads what B writes.
    let op_b =
        strongbox::client::Client::connect(&format!("http://{}", b.addr), Some(&a.operator_key))
            .await
            .unwrap();
    op_b.tenants()
        .create_tenant(pb::CreateTenantRequest {
            tenant: "globex".into(),
            name: "Globex".into(),
        })
        .await
        .unwrap();
    // Both servers acknowledge generation 1 at their next housekeeping
    // pass, which lets A retire the old root.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while root_acks(&url, 1) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "both servers acknowledge root generation 1 (acks: {})",
            root_acks(&url, 1)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    verify_audit(&op).await;
    b.shutdown().await.unwrap();
    // A server started afterwards opens the vault under the new root.
    let (_dir_c, c) = second_server(&a, &url).await;
    let on_c = strongbox::client::Client::connect(&format!("http://{}", c.addr), Some(&key))
        .await
        .unwrap();
    assert_eq!(
        get_value(&on_c, "acme", "bob", "c", "k").await.unwrap(),
        b"w"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_left_with_the_old_root_key_fails_closed_and_says_why() {
    let (a, url) = pg_server().await;
    // B has its own copy of the root key file, which the rotation on A
    // does not reach.
    let dir_b = tempfile::tempdir().unwrap();
    let copy = dir_b.path().join("root.key.copy");
    std::fs::copy(a.config.root_key_path(), &copy).unwrap();
    let config = ServerConfig {
        root_key_file: Some(copy),
        ..common::postgres::second_config(&a, &dir_b, &url)
    };
    let b = server::start(config).await.unwrap();
    let op = a.operator().await;
    let (_, key) = a.tenant_with_user_key("acme").await;
    put_ok(&a.client(&key).await, "acme", "alice", "c", "k", b"v").await;
    rotate_root(&op).await;
    let on_b = strongbox::client::Client::connect(&format!("http://{}", b.addr), Some(&key))
        .await
        .unwrap();
    assert_status(
        on_b.subjects()
            .shred_subject(pb::ShredSubjectRequest {
                tenant: "acme".into(),
                subject: "alice".into(),
            })
            .await,
        Code::Unavailable,
        "does not hold the new root key",
    );
    // Nothing was erased: A still reads alice's record, and B never
    // acknowledges the new generation.
    assert_eq!(
        get_value(&a.client(&key).await, "acme", "alice", "c", "k")
            .await
            .unwrap(),
        b"v"
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(root_acks(&url, 1), 1, "only A has moved to generation 1");
    b.shutdown().await.unwrap();
}
