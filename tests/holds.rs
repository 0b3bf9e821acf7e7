//! Legal holds over real gRPC: while a hold applies, subject shred, tenant
//! shred (scheduling and execution) and the destruction of a re-encrypted
//! data key refuse or wait, naming the hold; reads and writes go on; each
//! hold, release and refusal is audited; and a hold deleted in the
//! database is detected, not obeyed.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use strongbox::api::pb;
use strongbox::client::Client;
use tonic::Code;

async fn hold_subject(c: &Client, subject: &str, reason: &str) -> pb::Hold {
    c.subjects()
        .place_subject_hold(pb::PlaceSubjectHoldRequest {
            tenant: "t".into(),
            subject: subject.into(),
            reason: reason.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn shred(c: &Client, subject: &str) -> Result<pb::DeletionReceipt, tonic::Status> {
    c.subjects()
        .shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: subject.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn schedule_shred(c: &Client, grace: u64) -> Result<pb::Tenant, tonic::Status> {
    c.tenants()
        .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
            tenant: "t".into(),
            grace_seconds: Some(grace),
        })
        .await
        .map(|r| r.into_inner())
}

async fn tenant_state(c: &Client) -> i32 {
    c.tenants()
        .get_tenant(pb::GetTenantRequest { tenant: "t".into() })
        .await
        .unwrap()
        .into_inner()
        .state
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subject_hold_refuses_destruction_and_lets_reads_and_writes_go_on() {
    let s = TestServer::start().await;
    let (_, user) = s.tenant_with_user("t").await;
    let op = s.operator().await;
    put_ok(&user, "t", "alice", "billing", "invoice-1", b"EUR 12").await;
    put_ok(&user, "t", "bob", "billing", "invoice-2", b"EUR 7").await;
    let hold = hold_subject(&user, "alice", "LIT-2026-114").await;
    assert!(hold.id.starts_with("hold-"));
    assert_eq!(hold.subject_blind_id.len(), 64);

    let refused = shred(&user, "alice").await;
    assert_status(refused, Code::FailedPrecondition, &hold.id);
    let refused = shred(&user, "alice").await.unwrap_err();
    assert!(
        refused.message().contains("LIT-2026-114"),
        "{}",
        refused.message()
    );
    // Any hold in the tenant holds the tenant's own shred.
    assert_status(
        schedule_shred(&op, 3600).await,
        Code::FailedPrecondition,
        &hold.id,
    );
    // Reads and writes go on; other subjects are not held.
    put_ok(&user, "t", "alice", "billing", "invoice-3", b"EUR 1").await;
    assert_eq!(
        get_value(&user, "t", "alice", "billing", "invoice-1")
            .await
            .unwrap(),
        b"EUR 12"
    );
    shred(&user, "bob").await.unwrap();

    // Stacked holds: releasing one leaves the other in force.
    let second = hold_subject(&user, "alice", "REG-7").await;
    let released = user
        .subjects()
        .release_subject_hold(pb::ReleaseSubjectHoldRequest {
            tenant: "t".into(),
            subject: "alice".into(),
            hold_id: hold.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .released;
    assert_eq!(released, vec![hold.id.clone()]);
    assert_status(
        shred(&user, "alice").await,
        Code::FailedPrecondition,
        &second.id,
    );
    // Without an id: every hold on the subject.
    let released = user
        .subjects()
        .release_subject_hold(pb::ReleaseSubjectHoldRequest {
            tenant: "t".into(),
            subject: "alice".into(),
            hold_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .released;
    assert_eq!(released, vec![second.id.clone()]);
    shred(&user, "alice").await.unwrap();

    let trail = audit_trail(&op, "t").await;
    let count = |action: &str, outcome: &str, needle: &str| {
        trail
            .iter()
            .filter(|(a, o, r)| a == action && o == outcome && r.contains(needle))
            .count()
    };
    assert_eq!(count("subject.hold", "ok", "hold:hold-"), 2, "{trail:?}");
    assert_eq!(count("subject.release", "ok", ""), 2);
    assert_eq!(
        count("subject.shred", "failed", &format!("held-by:{}", hold.id)),
        2
    );
    assert_eq!(
        count("subject.shred", "failed", &format!("held-by:{}", second.id)),
        1
    );
    assert_eq!(count("tenant.shred", "failed", "held-by:"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_hold_holds_every_subject_and_a_scheduled_shred() {
    let s = TestServer::start().await;
    let (admin, user) = s.tenant_with_user("t").await;
    let op = s.operator().await;
    put_ok(&user, "t", "carol", "c", "k", b"v").await;
    // The shred is scheduled first; the hold comes during the grace period.
    schedule_shred(&op, 1).await.unwrap();
    let hold = op
        .tenants()
        .place_tenant_hold(pb::PlaceTenantHoldRequest {
            tenant: "t".into(),
            reason: "LIT-9 preservation order".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hold.subject_blind_id.is_empty());
    // Several housekeeping passes (200 ms) after the grace period: held.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        tenant_state(&op).await,
        pb::TenantState::ShredScheduled as i32
    );
    let trail = audit_trail(&op, "t").await;
    let skipped: Vec<_> = trail
        .iter()
        .filter(|(a, _, r)| a == "tenant.shred.execute" && r.contains(&hold.id))
        .collect();
    assert_eq!(skipped.len(), 1, "audited once, not every pass: {trail:?}");
    assert_eq!(skipped[0].1, "failed");

    let listed = admin
        .tenants()
        .list_holds(pb::ListHoldsRequest { tenant: "t".into() })
        .await
        .unwrap()
        .into_inner()
        .holds;
    assert_eq!(listed, vec![hold.clone()]);

    // Released: the next pass shreds.
    op.tenants()
        .release_tenant_hold(pb::ReleaseTenantHoldRequest {
            tenant: "t".into(),
            hold_id: hold.id.clone(),
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tenant_state(&op).await != pb::TenantState::Shredded as i32 {
        assert!(std::time::Instant::now() < deadline, "the shred ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reencrypted_key_is_destroyed_only_after_release() {
    let s = TestServer::start().await;
    let (admin, user) = s.tenant_with_user("t").await;
    put_ok(&user, "t", "dave", "c", "k", b"kept").await;
    let hold = hold_subject(&user, "dave", "AUDIT-3").await;
    admin
        .keys()
        .reencrypt_data_keys(pb::ReencryptDataKeysRequest {
            tenant: "t".into(),
            subject: "dave".into(),
        })
        .await
        .unwrap();
    let destroyed = || {
        s.stored().count(
            "SELECT count(*) FROM data_keys WHERE destroyed_at IS NOT NULL",
            &[],
        )
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(destroyed(), 0, "the old key waits for the hold");
    assert_eq!(
        get_value(&user, "t", "dave", "c", "k").await.unwrap(),
        b"kept"
    );
    user.subjects()
        .release_subject_hold(pb::ReleaseSubjectHoldRequest {
            tenant: "t".into(),
            subject: "dave".into(),
            hold_id: hold.id,
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while destroyed() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the old key was destroyed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        get_value(&user, "t", "dave", "c", "k").await.unwrap(),
        b"kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_bad_hold_arguments() {
    let s = TestServer::start().await;
    let (_, user) = s.tenant_with_user("t").await;
    let place = |reason: &str| pb::PlaceSubjectHoldRequest {
        tenant: "t".into(),
        subject: "erin".into(),
        reason: reason.into(),
    };
    for (reason, needle) in [
        ("", "reason: is required"),
        ("a\nb", "reason: must be printable"),
        (&"x".repeat(257), "reason: is 257 bytes"),
    ] {
        assert_status(
            user.subjects().place_subject_hold(place(reason)).await,
            Code::InvalidArgument,
            needle,
        );
    }
    let release = |id: &str| pb::ReleaseSubjectHoldRequest {
        tenant: "t".into(),
        subject: "erin".into(),
        hold_id: id.into(),
    };
    assert_status(
        user.subjects().release_subject_hold(release("h1")).await,
        Code::InvalidArgument,
        "hold_id: must be a hold id",
    );
    assert_status(
        user.subjects()
            .release_subject_hold(release(&format!("hold-{}", "0".repeat(32))))
            .await,
        Code::NotFound,
        "hold_id: no hold",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_a_hold_deleted_in_the_database() {
    let mut s = TestServer::start().await;
    let (_, key) = s.tenant_with_user_key("t").await;
    let user = s.client(&key).await;
    put_ok(&user, "t", "frank", "c", "k", b"v").await;
    hold_subject(&user, "frank", "LIT-1").await;
    s.stop().await;
    assert_eq!(s.stored().execute("DELETE FROM legal_holds", &[]), 1);
    s.restart().await;
    let user = s.client(&key).await;
    assert_status(shred(&user, "frank").await, Code::DataLoss, "legal holds");
    assert_status(
        user.tenants()
            .list_holds(pb::ListHoldsRequest { tenant: "t".into() })
            .await,
        Code::DataLoss,
        "removed, added or edited outside Strongbox",
    );
}
