//! The audit chain on PostgreSQL with several servers: each server run
//! appends to a lane of its own (no row every server's commits wait on),
//! the lanes verify as one chain, and a lane whose tail was cut off, with
//! its head row put back from an older copy, is caught by another lane's
//! witness entry even where the anchor file cannot see it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::postgres::{connect, off_runtime, pg_config, second_config};
use common::*;
use strongbox::client::Client;

/// Two servers on one fresh database, sharing keys and the anchor file,
/// whose own anchoring and witnessing run only when the test asks (the
/// housekeeping interval is an hour: its first pass runs at start).
async fn two_quiet_servers() -> (TestServer, strongbox::server::RunningServer, String) {
    let url = common::postgres::database();
    let dir = tempfile::tempdir().unwrap();
    let config = strongbox::config::ServerConfig {
        housekeeping_interval: Duration::from_secs(3600),
        ..pg_config(&dir, &url)
    };
    let a = TestServer::start_with(dir, config).await;
    let dir_b = tempfile::tempdir().unwrap();
    let b = strongbox::server::start(second_config(&a, &dir_b, &url))
        .await
        .expect("the second server starts");
    // The second server's directory lives as long as the test process.
    std::mem::forget(dir_b);
    (a, b, url)
}

/// The lanes that hold record writes.
fn lanes_with_puts(url: &str) -> Vec<i64> {
    let url = url.to_owned();
    off_runtime(move || {
        connect(&url)
            .query(
                "SELECT DISTINCT lane FROM audit_log WHERE action = 'record.put' ORDER BY lane",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_append_to_lanes_of_their_own_that_verify_as_one_chain() {
    let (mut a, b, url) = two_quiet_servers().await;
    let (_admin, key) = a.tenant_with_user_key("acme").await;
    let on_a = a.client(&key).await;
    let on_b = Client::connect(&format!("http://{}", b.addr), Some(&key))
        .await
        .unwrap();
    let mut writes = Vec::new();
    for (i, c) in [on_a.clone(), on_b.clone()].into_iter().enumerate() {
        writes.push(tokio::spawn(async move {
            for n in 0..30 {
                put_ok(&c, "acme", &format!("s{i}-{n}"), "c", "k", b"v").await;
            }
        }));
    }
    for w in writes {
        w.await.unwrap();
    }
    assert_eq!(lanes_with_puts(&url).len(), 2, "one lane per server");
    a.vault().anchor_audit().await.unwrap();
    b.vault.anchor_audit().await.unwrap();
    let op_b = Client::connect(&format!("http://{}", b.addr), Some(&a.operator_key))
        .await
        .unwrap();
    for op in [a.operator().await, op_b] {
        let report = verify_audit(&op).await;
        assert!(report.ok, "{}", report.problem);
        assert!(report.entries > 60, "{}", report.entries);
    }
    // A restarted server opens the anchor file both servers appended to
    // (their lines chain onto each other's) and a third lane.
    a.restart().await;
    put_ok(&a.client(&key).await, "acme", "after", "c", "k", b"v").await;
    assert_eq!(lanes_with_puts(&url).len(), 3);
    let report = verify_audit(&a.operator().await).await;
    assert!(report.ok, "{}", report.problem);
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lane_cut_back_to_an_old_head_row_is_caught_by_another_lanes_witness() {
    let (a, b, url) = two_quiet_servers().await;
    let (_admin, key) = a.tenant_with_user_key("acme").await;
    let on_a = a.client(&key).await;
    for n in 0..10 {
        put_ok(&on_a, "acme", &format!("s{n}"), "c", "k", b"v").await;
    }
    // The anchor file records lane A here; the attacker keeps a copy of
    // the head row as it is now (from a backup, or the WAL).
    a.vault().anchor_audit().await.unwrap();
    let [lane_a] = lanes_with_puts(&url)[..] else {
        panic!("only the first server has written records")
    };
    let (old_head, anchored_seq) = {
        let url = url.clone();
        off_runtime(move || {
            let mut db = connect(&url);
            let head: Vec<u8> = db
                .query_one("SELECT head FROM audit_lanes WHERE lane = $1", &[&lane_a])
                .unwrap()
                .get(0);
            let last: i64 = db
                .query_one("SELECT max(seq) FROM audit_log WHERE lane = $1", &[&lane_a])
                .unwrap()
                .get(0);
            (head, last)
        })
    };
    for n in 10..20 {
        put_ok(&on_a, "acme", &format!("s{n}"), "c", "k", b"v").await;
    }
    // Server B witnesses how far lane A has come (not yet anchored).
    b.vault.anchor_audit().await.unwrap();
    let op_b = Client::connect(&format!("http://{}", b.addr), Some(&a.operator_key))
        .await
        .unwrap();
    let report = verify_audit(&op_b).await;
    assert!(report.ok, "{}", report.problem);

    // The attack: lane A's tail since the anchored point is deleted and
    // its head row put back, so lane A on its own is consistent and
    // reaches the anchor.
    let (cut, reached) = {
        let url = url.clone();
        off_runtime(move || {
            let mut db = connect(&url);
            let reached: i64 = db
                .query_one("SELECT max(seq) FROM audit_log WHERE lane = $1", &[&lane_a])
                .unwrap()
                .get(0);
            let cut = db
                .execute(
                    "DELETE FROM audit_log WHERE lane = $1 AND seq > $2",
                    &[&lane_a, &anchored_seq],
                )
                .unwrap();
            db.execute(
                "UPDATE audit_lanes SET head = $1 WHERE lane = $2",
                &[&old_head, &lane_a],
            )
            .unwrap();
            (cut, reached)
        })
    };
    assert!(cut >= 10, "lane A's last {cut} entries were cut");
    // Server A goes on, chaining onto the head put back: its new entries
    // come after the witness and do not hide the cut.
    put_ok(&on_a, "acme", "later", "c", "k", b"v").await;
    let report = verify_audit(&op_b).await;
    assert!(!report.ok, "a cut lane verified");
    let expected = format!("witnessed lane {lane_a} reach entry {reached}");
    assert!(report.problem.contains(&expected), "{}", report.problem);
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pruning_empties_a_stopped_servers_lane_and_the_chain_still_verifies() {
    let (mut a, b, url) = two_quiet_servers().await;
    let (_admin, key) = a.tenant_with_user_key("acme").await;
    let on_a = a.client(&key).await;
    for n in 0..5 {
        put_ok(&on_a, "acme", &format!("s{n}"), "c", "k", b"v").await;
    }
    let [lane_a] = lanes_with_puts(&url)[..] else {
        panic!("only the first server has written records")
    };
    // A's run ends: its lane will never reach a checkpoint, and pruning
    // must still be able to empty it once all of it is old enough.
    a.stop().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = strongbox::now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let on_b = Client::connect(&format!("http://{}", b.addr), Some(&key))
        .await
        .unwrap();
    put_ok(&on_b, "acme", "after-cutoff", "c", "k", b"v").await;
    let deleted = b.vault.prune_audit(cutoff).await.unwrap();
    assert!(deleted >= 5, "{deleted} entries pruned");
    let left: i64 = {
        let url = url.clone();
        off_runtime(move || {
            connect(&url)
                .query_one("SELECT count(*) FROM audit_log WHERE lane = $1", &[&lane_a])
                .unwrap()
                .get(0)
        })
    };
    assert_eq!(left, 0, "the stopped server's lane was emptied");
    // B's own lane, with an entry newer than the cutoff, is not cut at
    // its head; the chain verifies, and B goes on appending.
    let op_b = Client::connect(&format!("http://{}", b.addr), Some(&a.operator_key))
        .await
        .unwrap();
    let report = verify_audit(&op_b).await;
    assert!(report.ok, "{}", report.problem);
    put_ok(&on_b, "acme", "later", "c", "k", b"v").await;
    let report = verify_audit(&op_b).await;
    assert!(report.ok, "{}", report.problem);
    b.shutdown().await.unwrap();
}
