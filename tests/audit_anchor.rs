//! Attacks on the audit trail's pointers, which the chain's MACs alone do
//! not catch: a tail cut with the head row rewound (the next call must not
//! launder it), a wipe of the whole trail, and a rollback to an older,
//! genuinely MAC'd head. The anchor outside the database catches the last
//! two; `strongbox audit accept-loss` is the operator's way back.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use rusqlite::Connection;
use strongbox::api::pb;
use strongbox::error::Error;
use strongbox::server;
use tonic::Code;

fn db(s: &TestServer) -> Connection {
    let c = Connection::open(s.db_path()).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c
}

fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn head_row(c: &Connection) -> Vec<u8> {
    c.query_row(
        "SELECT value FROM meta WHERE name = 'audit_head'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// A server with some audited traffic whose head has been anchored.
async fn busy_server() -> TestServer {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    for i in 0..20 {
        put_ok(&u, "t", "zed", "c", &format!("k{i}"), b"v").await;
    }
    s.vault().anchor_audit().await.unwrap();
    s
}

/// Starting on the data directory must fail with DATA_LOSS naming `needle`.
async fn start_refused(s: &TestServer, needle: &str) {
    match server::start(s.config.clone()).await {
        Ok(_) => panic!("a server started on a tampered audit trail"),
        Err(e @ Error::Corrupt(_)) => assert!(e.to_string().contains(needle), "{e}"),
        Err(e) => panic!("expected DATA_LOSS ({needle}), got {e}"),
    }
}

/// The attack of the review, exactly: with the server stopped, delete the
/// last 5 entries and rewind the head row's sequence number and MAC to the
/// last remaining entry, leaving the row's own MAC as it was.
fn cut_tail_and_rewind_head(c: &Connection) -> i64 {
    let last = count(c, "SELECT max(seq) FROM audit_log");
    let keep = last - 5;
    c.execute("DELETE FROM audit_log WHERE seq > ?1", [keep])
        .unwrap();
    let mac: Vec<u8> = c
        .query_row("SELECT mac FROM audit_log WHERE seq = ?1", [keep], |r| {
            r.get(0)
        })
        .unwrap();
    let mut head = head_row(c);
    head[..8].copy_from_slice(&(keep as u64).to_be_bytes());
    head[8..40].copy_from_slice(&mac);
    c.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'audit_head'",
        [&head],
    )
    .unwrap();
    keep
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_truncation_is_not_laundered_by_the_next_call() {
    let mut s = busy_server().await;
    s.stop().await;
    let keep = cut_tail_and_rewind_head(&db(&s));
    // The server does not start on it...
    start_refused(&s, "head row's MAC does not match").await;
    let c = db(&s);
    assert_eq!(count(&c, "SELECT max(seq) FROM audit_log"), keep);

    // ...and a server that was running when it happened refuses every call,
    // the verify included, and keeps refusing: nothing is chained onto the
    // forged head, so the next verify still sees it.
    let mut s = busy_server().await;
    let op = s.operator().await;
    let keep = cut_tail_and_rewind_head(&db(&s));
    for _ in 0..3 {
        let r = op
            .audit()
            .verify_audit(pb::VerifyAuditRequest::default())
            .await;
        assert_status(r, Code::DataLoss, "tampered");
        let r = op
            .tenants()
            .list_tenants(pb::ListTenantsRequest::default())
            .await;
        assert_status(r, Code::DataLoss, "accept-loss");
    }
    assert_eq!(count(&db(&s), "SELECT max(seq) FROM audit_log"), keep);
    s.stop().await;
    start_refused(&s, "head row's MAC does not match").await;

    // The operator acknowledges the loss: the verified stretch stays, the
    // acknowledgement is chained on top, and the vault serves again.
    let done = server::accept_audit_loss(&s.config, "INC-4711".into())
        .await
        .unwrap();
    assert_eq!(done.kept_through, keep as u64);
    assert_eq!(done.head_seq, keep as u64 + 1);
    s.restart().await;
    let op = s.operator().await;
    let r = verify_audit(&op).await;
    assert!(r.ok, "{}", r.problem);
    let (action, purpose, resource): (String, String, String) = db(&s)
        .query_row(
            "SELECT action, purpose, resource FROM audit_log WHERE seq = ?1",
            [keep + 1],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (action.as_str(), purpose.as_str()),
        ("audit.accept-loss", "INC-4711")
    );
    assert!(
        resource.contains(&format!("entries {}..", keep + 1)),
        "{resource}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_a_wiped_trail() {
    let wipe = "DELETE FROM audit_log; DELETE FROM audit_checkpoints;
                DELETE FROM meta WHERE name IN ('audit_head', 'audit_base');";
    // Wiped under a running server: verify (and every other call) is refused.
    let mut s = busy_server().await;
    let op = s.operator().await;
    db(&s).execute_batch(wipe).unwrap();
    let r = op
        .audit()
        .verify_audit(pb::VerifyAuditRequest::default())
        .await;
    assert_status(r, Code::DataLoss, "anchor outside the database");
    assert_eq!(count(&db(&s), "SELECT count(*) FROM audit_log"), 0);
    // Wiped while stopped: the server does not start.
    s.stop().await;
    start_refused(&s, "wiped or rolled back").await;
    // Deleting the anchor file as well does not help.
    std::fs::remove_file(s.data_dir().join("audit.anchor")).unwrap();
    start_refused(&s, "which is missing").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_a_rollback_to_an_older_genuine_head() {
    let mut s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    put_ok(&u, "t", "zed", "c", "k0", b"v").await;
    // An old, validly MAC'd head row (as recovered from the WAL's bytes).
    let c = db(&s);
    let old_head = head_row(&c);
    let old_seq = u64::from_be_bytes(old_head[..8].try_into().unwrap()) as i64;
    for i in 1..20 {
        put_ok(&u, "t", "zed", "c", &format!("k{i}"), b"v").await;
    }
    s.vault().anchor_audit().await.unwrap();
    let rollback = |c: &Connection| {
        c.execute("DELETE FROM audit_log WHERE seq > ?1", [old_seq])
            .unwrap();
        c.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'audit_head'",
            [&old_head],
        )
        .unwrap();
    };
    rollback(&c);
    // Every row left is consistent, so only the anchor can tell.
    let op = s.operator().await;
    let r = op
        .audit()
        .verify_audit(pb::VerifyAuditRequest::default())
        .await;
    assert_status(
        r,
        Code::DataLoss,
        "anchor outside the database records entry",
    );
    s.stop().await;
    start_refused(&s, "wiped or rolled back").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_anchor_moves_with_the_chain_and_survives_restarts() {
    let mut s = busy_server().await;
    let c = db(&s);
    let last = count(&c, "SELECT max(seq) FROM audit_log") as u64;
    assert!(s.vault().anchor_audit().await.unwrap() >= last);
    s.restart().await;
    let op = s.operator().await;
    assert!(verify_audit(&op).await.ok);
    let text = std::fs::read_to_string(s.data_dir().join("audit.anchor")).unwrap();
    let newest: u64 = text
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(newest >= last, "{text}");
}
