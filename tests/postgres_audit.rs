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

/// Two servers, and lane A cut back to an anchored point: its tail
/// deleted and its head row put back from an older copy (a backup, the
/// WAL), after server B witnessed how far it had come.
struct CutLane {
    a: TestServer,
    b: strongbox::server::RunningServer,
    url: String,
    key: String,
    lane_a: i64,
    /// The newest entry of lane A left in the database.
    anchored_seq: i64,
    /// The newest entry lane A had reached, which B's witness names.
    reached: i64,
}

async fn a_cut_lane() -> CutLane {
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
    let report = verify_audit(&operator_on(&a, &b).await).await;
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
    CutLane {
        a,
        b,
        url,
        key,
        lane_a,
        anchored_seq,
        reached,
    }
}

/// The operator's client on server B.
async fn operator_on(a: &TestServer, b: &strongbox::server::RunningServer) -> Client {
    Client::connect(&format!("http://{}", b.addr), Some(&a.operator_key))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lane_cut_back_to_an_old_head_row_is_caught_by_another_lanes_witness() {
    let CutLane {
        a,
        b,
        key,
        lane_a,
        reached,
        ..
    } = a_cut_lane().await;
    // Server A goes on, chaining onto the head put back: its new entries
    // come after the witness and do not hide the cut.
    put_ok(&a.client(&key).await, "acme", "later", "c", "k", b"v").await;
    let report = verify_audit(&operator_on(&a, &b).await).await;
    assert!(!report.ok, "a cut lane verified");
    let expected = format!("witnessed lane {lane_a} reach entry {reached}");
    assert!(report.problem.contains(&expected), "{}", report.problem);
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_loss_on_postgresql_keeps_every_lanes_verified_stretch_and_excuses_only_the_loss() {
    let CutLane {
        mut a,
        b,
        url,
        lane_a,
        anchored_seq,
        reached,
        ..
    } = a_cut_lane().await;
    // Besides the cut, an entry in the middle of lane A is edited.
    let edited = {
        let url = url.clone();
        off_runtime(move || {
            let mut db = connect(&url);
            let seqs: Vec<i64> = db
                .query(
                    "SELECT seq FROM audit_log WHERE lane = $1 ORDER BY seq",
                    &[&lane_a],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let edited = seqs[seqs.len() / 2];
            db.execute(
                "UPDATE audit_log SET resource = resource || 'x' WHERE seq = $1",
                &[&edited],
            )
            .unwrap();
            edited
        })
    };
    assert!(edited < anchored_seq);
    a.stop().await;
    // Refused while a server is live on the database.
    match strongbox::server::accept_audit_loss(&a.config, "INC-9".into()).await {
        Err(e @ strongbox::error::Error::FailedPrecondition(_)) => {
            assert!(e.to_string().contains("live on this database"), "{e}")
        }
        other => panic!("accept-loss ran beside a live server: {other:?}"),
    }
    b.shutdown().await.unwrap();
    let done = strongbox::server::accept_audit_loss(&a.config, "INC-9".into())
        .await
        .unwrap();
    let lane = done
        .lanes
        .iter()
        .find(|l| l.lane == lane_a)
        .unwrap_or_else(|| panic!("lane A is not among the damaged: {done:?}"));
    assert!(lane.kept_through < edited as u64, "{lane:?}");
    assert!(lane.lost_through >= reached as u64, "{lane:?}");
    assert!(lane.quarantined >= 1, "{lane:?}");
    assert_eq!(done.lanes.len(), 1, "only lane A was damaged: {done:?}");

    // The vault serves again and verifies, B's witness of the lost tail
    // excused by the acceptance; the loss entry says what was lost.
    a.restart().await;
    let op = a.operator().await;
    let report = verify_audit(&op).await;
    assert!(report.ok, "{}", report.problem);
    let (resource, quarantined, loss_rows) = {
        let url = url.clone();
        off_runtime(move || {
            let mut db = connect(&url);
            let resource: String = db
                .query_one(
                    "SELECT resource FROM audit_log WHERE action = 'audit.accept-loss'",
                    &[],
                )
                .unwrap()
                .get(0);
            let quarantined: i64 = db
                .query_one(
                    "SELECT count(*) FROM audit_quarantine WHERE lane = $1",
                    &[&lane_a],
                )
                .unwrap()
                .get(0);
            let rows: i64 = db
                .query_one("SELECT count(*) FROM audit_losses", &[])
                .unwrap()
                .get(0);
            (resource, quarantined, rows)
        })
    };
    assert!(
        resource.contains(&format!(
            "lane {lane_a} entries {}..",
            lane.kept_through + 1
        )),
        "{resource}"
    );
    assert_eq!(quarantined as u64, lane.quarantined);
    assert_eq!(loss_rows, 1);

    // The loss row is MAC'd: widening it to excuse more is caught.
    {
        let url = url.clone();
        off_runtime(move || {
            connect(&url)
                .execute(
                    "UPDATE audit_losses SET lost_through = lost_through + 1000",
                    &[],
                )
                .unwrap();
        });
    }
    let report = verify_audit(&op).await;
    assert!(!report.ok, "a forged loss row verified");
    assert!(
        report.problem.contains("accepted-loss row"),
        "{}",
        report.problem
    );
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
