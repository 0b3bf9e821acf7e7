//! Backup and restore of a vault on PostgreSQL: `strongbox backup` takes a
//! logical snapshot (one REPEATABLE READ transaction), and `strongbox
//! restore --database-url` loads it into a new, empty database and replays
//! the shred ledger, so a subject erased after the backup stays erased.
//! A database that holds a vault is never overwritten, a tampered backup
//! is refused, and a database a restore has not finished is not served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::postgres::{connect, off_runtime, pg_server, second_config};
use common::*;
use strongbox::client::Client;
use strongbox::error::Error;
use strongbox::server::restore::{Ledger, restore};
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_vault_restores_onto_a_new_database_and_keeps_its_erasures() {
    let (mut a, _url) = pg_server().await;
    let (_admin, key) = a.tenant_with_user_key("acme").await;
    let user = a.client(&key).await;
    let canary = format!("CANARY-{}", random_hex(16));
    put_ok(&user, "acme", "alice", "c", "k", canary.as_bytes()).await;
    put_ok(&user, "acme", "bob", "c", "k", b"bob's").await;
    let backup = a.dir.path().join("vault.sbxbak");
    let out = cli_backup(&a, &backup);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // After the backup: alice is erased, carol written.
    shred_ok(&user, "acme", "alice").await;
    put_ok(&user, "acme", "carol", "c", "k", b"carol's").await;
    a.stop().await;

    // Onto a new database, sharing the old servers' keys, anchor and
    // ledger, as the operator would.
    let url = common::postgres::database();
    let dir = tempfile::tempdir().unwrap();
    let cfg = second_config(&a, &dir, &url);
    let ledger = Ledger::Apply(cfg.shred_ledger_path());
    let done = restore(&cfg, &backup, ledger.clone()).await.unwrap();
    let applied = done.applied.expect("the ledger was applied");
    assert_eq!(applied.subjects, 1, "{applied:?}");

    let b = strongbox::server::start(cfg.clone())
        .await
        .expect("the restored vault serves");
    let on_b = Client::connect(&format!("http://{}", b.addr), Some(&key))
        .await
        .unwrap();
    assert_eq!(
        get_value(&on_b, "acme", "bob", "c", "k").await.unwrap(),
        b"bob's"
    );
    assert_status(
        get_value(&on_b, "acme", "alice", "c", "k").await,
        Code::NotFound,
        "",
    );
    assert_status(
        get_value(&on_b, "acme", "carol", "c", "k").await,
        Code::NotFound,
        "",
    );
    let op = Client::connect(&format!("http://{}", b.addr), Some(&a.operator_key))
        .await
        .unwrap();
    let report = verify_audit(&op).await;
    assert!(report.ok, "{}", report.problem);
    // Alice's canary is in no table of the restored database.
    let hits: i64 = {
        let (url, canary) = (url.clone(), canary.clone());
        off_runtime(move || {
            connect(&url)
                .query_one(
                    "SELECT count(*) FROM records WHERE strpos(encode(ciphertext, 'escape'), $1) > 0",
                    &[&canary],
                )
                .unwrap()
                .get(0)
        })
    };
    assert_eq!(hits, 0);
    b.shutdown().await.unwrap();

    // A database that holds a vault is never overwritten.
    match restore(&cfg, &backup, ledger.clone()).await {
        Err(e @ Error::FailedPrecondition(_)) => {
            assert!(e.to_string().contains("already holds a vault"), "{e}")
        }
        other => panic!("restored over a vault: {other:?}"),
    }
    // A tampered backup is refused, and the new database stays empty.
    let tampered = dir.path().join("tampered.sbxbak");
    let mut bytes = std::fs::read(&backup).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&tampered, bytes).unwrap();
    let empty = common::postgres::database();
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = second_config(&a, &dir2, &empty);
    match restore(&cfg2, &tampered, ledger.clone()).await {
        Err(Error::Corrupt(_)) => {}
        other => panic!("a tampered backup was restored: {other:?}"),
    }
    // A database a restore has not finished with is not served, and the
    // same restore command finishes it.
    off_runtime({
        let empty = empty.clone();
        move || {
            connect(&empty)
                .execute(
                    "INSERT INTO meta (name, value) VALUES ('restoring', '\\x01')",
                    &[],
                )
                .unwrap();
        }
    });
    match strongbox::server::start(cfg2.clone()).await {
        Err(e @ Error::FailedPrecondition(_)) => {
            assert!(e.to_string().contains("middle of a restore"), "{e}")
        }
        Ok(_) => panic!("a half-restored database was served"),
        Err(e) => panic!("{e}"),
    }
    let done = restore(&cfg2, &backup, ledger).await.unwrap();
    assert!(done.restarted);
    let c = strongbox::server::start(cfg2)
        .await
        .expect("served once restored");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_point_in_time_recovery_the_ledger_is_replayed_before_serving() {
    let (mut a, url) = pg_server().await;
    let (_admin, key) = a.tenant_with_user_key("acme").await;
    let user = a.client(&key).await;
    put_ok(&user, "acme", "alice", "c", "k", b"alice's").await;
    put_ok(&user, "acme", "bob", "c", "k", b"bob's").await;
    // The database as a base backup (or a recovery to this point) has it.
    a.stop().await;
    let recovered = common::postgres::copy_database(&url);
    a.restart().await;
    shred_ok(&a.client(&key).await, "acme", "alice").await;
    a.stop().await;

    // The recovered database still holds alice's keys. Served as it is,
    // the shared anchor sees its audit trail rolled back, and refuses.
    let dir = tempfile::tempdir().unwrap();
    let cfg = second_config(&a, &dir, &recovered);
    match strongbox::server::start(cfg.clone()).await {
        Err(e @ Error::Corrupt(_)) => assert!(e.to_string().contains("rolled back"), "{e}"),
        Ok(_) => panic!("a rolled-back database was served without the ledger"),
        Err(e) => panic!("{e}"),
    }
    // `strongbox restore --apply-ledger` replays the erasures made since.
    let applied = strongbox::server::restore::apply_ledger_in_place(&cfg, &cfg.shred_ledger_path())
        .await
        .unwrap();
    assert_eq!(applied.subjects, 1, "{applied:?}");
    let b = strongbox::server::start(cfg)
        .await
        .expect("served after the replay");
    let on_b = Client::connect(&format!("http://{}", b.addr), Some(&key))
        .await
        .unwrap();
    assert_status(
        get_value(&on_b, "acme", "alice", "c", "k").await,
        Code::NotFound,
        "",
    );
    assert_eq!(
        get_value(&on_b, "acme", "bob", "c", "k").await.unwrap(),
        b"bob's"
    );
    let op = Client::connect(&format!("http://{}", b.addr), Some(&a.operator_key))
        .await
        .unwrap();
    let report = verify_audit(&op).await;
    assert!(report.ok, "{}", report.problem);
    b.shutdown().await.unwrap();
}
