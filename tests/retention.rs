//! Retention over a real server and real files: records past their window
//! (by last write, or by the subject's last activity) become NOT_FOUND
//! within a housekeeping interval and their bytes leave the database file
//! and WAL; a subject whose last record expires is erased; the platform cap
//! bounds tenant policies; holds stop expiry; the preview predicts what the
//! sweep then does.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use strongbox::api::pb;
use strongbox::client::Client;
use tonic::Code;

async fn set_policy(admin: &Client, category: &str, keep: u64, after: &str) {
    admin
        .retention()
        .set_retention_policy(pb::SetRetentionPolicyRequest {
            tenant: "t".into(),
            category: category.into(),
            keep_seconds: keep,
            after: after.into(),
        })
        .await
        .unwrap();
}

async fn preview(c: &Client, within: u64) -> pb::PreviewRetentionResponse {
    c.retention()
        .preview_retention(pb::PreviewRetentionRequest {
            tenant: "t".into(),
            within_seconds: within,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Total per category.
fn per_category(counts: &[pb::RetentionCount]) -> Vec<(String, u64)> {
    let mut m = std::collections::BTreeMap::new();
    for c in counts {
        *m.entry(c.category.clone()).or_insert(0) += c.records;
    }
    m.into_iter().collect()
}

/// Waits until `subject`'s record reads NOT_FOUND; panics after `within`.
async fn wait_gone(c: &Client, subject: &str, category: &str, key: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match get_value(c, "t", subject, category, key).await {
            Err(s) if s.code() == Code::NotFound => return,
            Ok(_) => assert!(Instant::now() < deadline, "{category}/{key} did not expire"),
            Err(s) => panic!("{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The SQLite file and its WAL; nothing on PostgreSQL, whose files are
/// the database server's.
fn file_bytes(s: &TestServer) -> Vec<u8> {
    let Some(db) = s.stored().file().map(|f| f.to_path_buf()) else {
        return Vec::new();
    };
    let mut all = std::fs::read(&db).unwrap();
    if let Ok(w) = std::fs::read(db.with_extension("db-wal")) {
        all.extend(w);
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn records_expire_by_write_time_and_leave_no_trace() {
    let s = TestServer::start().await;
    let (admin, user) = s.tenant_with_user("t").await;
    let op = s.operator().await;
    set_policy(&admin, "session", 2, "write").await;
    let canary = format!("CANARY-{}", random_hex(16));
    put_ok(&user, "t", "alice", "session", "token", canary.as_bytes()).await;
    put_ok(&user, "t", "alice", "contact", "email", b"kept: no policy").await;

    let due = preview(&user, 60).await;
    assert_eq!(per_category(&due.due), vec![("session".into(), 1)]);
    assert!(preview(&user, 0).await.due.is_empty(), "nothing due yet");

    wait_gone(&user, "alice", "session", "token", Duration::from_secs(10)).await;
    assert_eq!(
        get_value(&user, "t", "alice", "contact", "email")
            .await
            .unwrap(),
        b"kept: no policy"
    );
    // The ciphertext leaves the row, and on SQLite the bytes leave the
    // file and the WAL (secure delete, checkpoint).
    let sealed = s.stored().count(
        "SELECT count(*) FROM records WHERE category = 'session' AND length(ciphertext) > 0",
        &[],
    );
    assert_eq!(sealed, 0, "the expired record's ciphertext is still stored");
    let deadline = Instant::now() + Duration::from_secs(10);
    while file_bytes(&s)
        .windows(canary.len())
        .any(|w| w == canary.as_bytes())
    {
        assert!(Instant::now() < deadline, "the canary is still on disk");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let history = preview(&user, 0).await;
    assert_eq!(per_category(&history.expired), vec![("session".into(), 1)]);

    let trail = audit_trail(&op, "t").await;
    assert!(
        trail.iter().any(|(a, o, r)| a == "retention.expire"
            && o == "ok"
            && r.starts_with("retention:session expired:1 subjects-erased:0")),
        "{trail:?}"
    );
    // The tombstone is an expiry, not a deletion outside Strongbox.
    let v = op
        .audit()
        .verify_audit(pb::VerifyAuditRequest { records: true })
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{:?}", v.record_problems);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_record_expiring_erases_the_subject() {
    let s = TestServer::start().await;
    let (admin, user) = s.tenant_with_user("t").await;
    let op = s.operator().await;
    set_policy(&admin, "session", 1, "write").await;
    put_ok(&user, "t", "bob", "session", "token", b"x").await;
    wait_gone(&user, "bob", "session", "token", Duration::from_secs(10)).await;
    // Erased like a shred: new data needs the explicit reinstatement.
    assert_status(
        user.records()
            .put_record(put("t", "bob", "session", "token", b"again"))
            .await,
        Code::FailedPrecondition,
        "erased",
    );
    let trail = audit_trail(&op, "t").await;
    assert!(
        trail
            .iter()
            .any(|(a, _, r)| a == "retention.expire" && r.ends_with("subjects-erased:1")),
        "{trail:?}"
    );
    let reasons: Vec<Vec<u8>> = s
        .stored()
        .column("SELECT body FROM receipts", &[])
        .iter()
        .map(|c| c.bytes())
        .collect();
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].windows(9).any(|w| w == b"retention"),
        "the receipt's reason is retention"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn activity_postpones_expiry_by_last_activity() {
    let s = TestServer::start().await;
    let (admin, user) = s.tenant_with_user("t").await;
    set_policy(&admin, "profile", 3, "last-activity").await;
    let start = Instant::now();
    put_ok(&user, "t", "carol", "profile", "name", b"Carol").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    user.subjects()
        .touch_subject(pb::TouchSubjectRequest {
            tenant: "t".into(),
            subject: "carol".into(),
        })
        .await
        .unwrap();
    // Past 3 s from the write, within 3 s of the touch: still here.
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(start.elapsed())).await;
    assert_eq!(
        get_value(&user, "t", "carol", "profile", "name")
            .await
            .unwrap(),
        b"Carol"
    );
    wait_gone(&user, "carol", "profile", "name", Duration::from_secs(10)).await;
    assert!(
        start.elapsed() >= Duration::from_millis(4400),
        "expired {:?} after the write, before 3 s after the touch",
        start.elapsed()
    );
    // Touching an unknown (or erased) subject is NOT_FOUND.
    assert_status(
        user.subjects()
            .touch_subject(pb::TouchSubjectRequest {
                tenant: "t".into(),
                subject: "nobody".into(),
            })
            .await,
        Code::NotFound,
        "subject not found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_platform_cap_refuses_longer_policies_and_bounds_what_is_in_force() {
    let s = TestServer::start().await;
    let (admin, _) = s.tenant_with_user("t").await;
    let op = s.operator().await;
    op.retention()
        .set_retention_default(pb::SetRetentionDefaultRequest {
            category: "billing".into(),
            keep_seconds: Some(7 * 86_400),
            max_seconds: Some(30 * 86_400),
        })
        .await
        .unwrap();
    assert_status(
        admin
            .retention()
            .set_retention_policy(pb::SetRetentionPolicyRequest {
                tenant: "t".into(),
                category: "billing".into(),
                keep_seconds: 40 * 86_400,
                after: "write".into(),
            })
            .await,
        Code::InvalidArgument,
        "keep: 40d exceeds the platform cap of 30d for category 'billing'",
    );
    let list = |c: Client| async move {
        c.retention()
            .list_retention(pb::ListRetentionRequest { tenant: "t".into() })
            .await
            .unwrap()
            .into_inner()
            .retention
    };
    let before = list(admin.clone()).await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].effective_keep_seconds, 7 * 86_400, "the default");
    set_policy(&admin, "billing", 20 * 86_400, "last-activity").await;
    let after = list(admin.clone()).await;
    assert_eq!(after[0].effective_keep_seconds, 20 * 86_400);
    assert_eq!(after[0].effective_after, "last-activity");
    // A cap lowered later bounds the policy already set.
    op.retention()
        .set_retention_default(pb::SetRetentionDefaultRequest {
            category: "billing".into(),
            keep_seconds: Some(5 * 86_400),
            max_seconds: Some(10 * 86_400),
        })
        .await
        .unwrap();
    assert_eq!(list(admin).await[0].effective_keep_seconds, 10 * 86_400);
    assert_status(
        op.retention()
            .set_retention_default(pb::SetRetentionDefaultRequest {
                category: "billing".into(),
                keep_seconds: Some(20 * 86_400),
                max_seconds: None,
            })
            .await,
        Code::InvalidArgument,
        "keep: the default 20d exceeds the cap 10d",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_subject_expires_only_after_release() {
    let s = TestServer::start().await;
    let (admin, user) = s.tenant_with_user("t").await;
    let op = s.operator().await;
    set_policy(&admin, "session", 1, "write").await;
    put_ok(&user, "t", "dave", "session", "token", b"evidence").await;
    put_ok(&user, "t", "erin", "session", "token", b"not held").await;
    let hold = user
        .subjects()
        .place_subject_hold(pb::PlaceSubjectHoldRequest {
            tenant: "t".into(),
            subject: "dave".into(),
            reason: "LIT-5".into(),
        })
        .await
        .unwrap()
        .into_inner();
    wait_gone(&user, "erin", "session", "token", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        get_value(&user, "t", "dave", "session", "token")
            .await
            .unwrap(),
        b"evidence"
    );
    assert!(
        preview(&user, 0).await.due.is_empty(),
        "held records are not due"
    );
    let trail = audit_trail(&op, "t").await;
    let refusals = trail
        .iter()
        .filter(|(a, o, r)| a == "retention.expire" && o == "failed" && r.contains(&hold.id))
        .count();
    assert_eq!(refusals, 1, "audited once: {trail:?}");
    user.subjects()
        .release_subject_hold(pb::ReleaseSubjectHoldRequest {
            tenant: "t".into(),
            subject: "dave".into(),
            hold_id: hold.id,
        })
        .await
        .unwrap();
    wait_gone(&user, "dave", "session", "token", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_preview_predicts_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&dir);
    // Slow housekeeping, so the preview is read before the sweep runs.
    config.housekeeping_interval = Duration::from_secs(3);
    let s = TestServer::start_with(dir, config).await;
    let (admin, user) = s.tenant_with_user("t").await;
    set_policy(&admin, "a", 1, "write").await;
    set_policy(&admin, "b", 1, "last-activity").await;
    for i in 0..30 {
        put_ok(
            &user,
            "t",
            &format!("s{}", i % 4),
            "a",
            &format!("k{i}"),
            b"v",
        )
        .await;
    }
    for i in 0..20 {
        put_ok(
            &user,
            "t",
            &format!("s{}", i % 4),
            "b",
            &format!("k{i}"),
            b"v",
        )
        .await;
    }
    put_ok(&user, "t", "", "a", "tenant-level", b"v").await;
    let predicted = per_category(&preview(&user, 5).await.due);
    assert_eq!(predicted, vec![("a".into(), 31), ("b".into(), 20)]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = preview(&user, 0).await;
        if per_category(&p.expired) == predicted {
            break;
        }
        assert!(Instant::now() < deadline, "swept {:?}", p.expired);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
