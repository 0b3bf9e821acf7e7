//! The shred ledger: every destruction of a key (subject shred, tenant
//! shred, retention, re-encryption, KEK retirement) is in the ledger file
//! before the call returns, MAC-chained; a ledger edited outside Strongbox
//! stops the server from starting.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use strongbox::api::pb;

/// (kind, tenant, id) of every ledger line.
fn ledger(path: &std::path::Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[1].to_owned(), f[3].to_owned(), f[4].to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_destruction_is_in_the_ledger_before_the_call_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&dir);
    let path = dir.path().join("elsewhere").join("shred.ledger");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    config.shred_ledger = Some(path.clone());
    let mut s = TestServer::start_with(dir, config).await;
    let (admin, user) = s.tenant_with_user("t").await;
    put_ok(&user, "t", "alice", "c", "k", b"v").await;
    let receipt = user
        .subjects()
        .shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let lines = ledger(&path);
    for id in &receipt.destroyed_key_ids {
        assert!(
            lines.contains(&("dek".into(), "t".into(), id.clone())),
            "{id} in {lines:?}"
        );
    }

    // Retention erases a subject: its key is recorded too.
    admin
        .retention()
        .set_retention_policy(pb::SetRetentionPolicyRequest {
            tenant: "t".into(),
            category: "session".into(),
            keep_seconds: 1,
            after: "write".into(),
        })
        .await
        .unwrap();
    put_ok(&user, "t", "bob", "session", "k", b"v").await;
    let before = ledger(&path).len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ledger(&path).len() == before {
        assert!(
            Instant::now() < deadline,
            "retention's destruction recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A KEK rotation retires v1 once every data key is rewrapped.
    admin
        .keys()
        .rotate_tenant_key(pb::RotateTenantKeyRequest { tenant: "t".into() })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ledger(&path).contains(&("kek".into(), "t".into(), "1".into())) {
        assert!(Instant::now() < deadline, "KEK v1's retirement recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A tenant shred with no grace: recorded before the call returns.
    s.tenant("u").await;
    s.operator()
        .await
        .tenants()
        .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
            tenant: "u".into(),
            grace_seconds: Some(0),
        })
        .await
        .unwrap();
    assert!(ledger(&path).contains(&("tenant".into(), "u".into(), "-".into())));

    // It reopens across a restart; an edited line stops the start.
    s.restart().await;
    s.stop().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let first_id = &receipt.destroyed_key_ids[0];
    std::fs::write(&path, text.replacen(first_id.as_str(), "dek-forged", 1)).unwrap();
    let e = strongbox::server::start(s.config.clone())
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("shred ledger") && e.to_string().contains("tampered"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destruction_the_ledger_missed_in_a_crash_is_recorded_at_the_next_start() {
    let mut s = TestServer::start().await;
    let (_, user) = s.tenant_with_user("t").await;
    put_ok(&user, "t", "alice", "c", "k", b"v").await;
    put_ok(&user, "t", "bob", "c", "k", b"v").await;
    let alice = shred_ok(&user, "t", "alice").await;
    let path = s.config.shred_ledger_path();
    let kept = std::fs::read_to_string(&path).unwrap();
    let bob = shred_ok(&user, "t", "bob").await;
    s.stop().await;
    // As if the server died after bob's shred committed and before its
    // ledger lines were appended.
    std::fs::write(&path, &kept).unwrap();
    let lines = ledger(&path);
    assert!(
        !lines
            .iter()
            .any(|(_, _, id)| bob.destroyed_key_ids.contains(id))
    );
    s.restart().await;
    let lines = ledger(&path);
    for id in bob.destroyed_key_ids.iter().chain(&alice.destroyed_key_ids) {
        assert_eq!(
            lines
                .iter()
                .filter(|(kind, _, i)| kind == "dek" && i == id)
                .count(),
            1,
            "{id} once in {lines:?}"
        );
    }
}
