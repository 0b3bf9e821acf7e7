//! Limits under load: per-principal rate limits and shedding past the
//! in-flight cap answer RESOURCE_EXHAUSTED, and deadlines are honoured.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use strongbox::api::limits::LoadLimits;
use strongbox::api::pb;
use tonic::Code;

async fn server_with(load: LoadLimits) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&dir);
    config.load = load;
    TestServer::start_with(dir, config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_principal_over_its_rate_is_refused_and_others_are_not() {
    let s = server_with(LoadLimits {
        rate_per_principal: 5,
        burst: 5,
        max_in_flight: 1024,
        ..LoadLimits::default()
    })
    .await;
    let admin = s.tenant("t").await;
    let a = s.principal(&admin, "t", "a", &["reader"]).await;
    let b = s.principal(&admin, "t", "b", &["reader"]).await;
    let mut refused = 0;
    for _ in 0..10 {
        match get_value(&a, "t", "s", "c", "k").await {
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(e.message().starts_with("rate limit:"), "{}", e.message());
                refused += 1;
            }
            Err(e) => assert_eq!(e.code(), Code::NotFound, "{}", e.message()),
            Ok(_) => panic!("no record was stored"),
        }
    }
    assert!(refused >= 4, "only {refused} of 10 calls refused at 5/s");
    // Another principal has its own budget.
    assert_status(
        get_value(&b, "t", "s", "c", "k").await,
        Code::NotFound,
        "record not found",
    );
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_status(
        get_value(&a, "t", "s", "c", "k").await,
        Code::NotFound,
        "record not found",
    );
}

/// `n` puts of 512 KiB at once through `u`: how many succeeded and how
/// many were shed (RESOURCE_EXHAUSTED, with `needle` in the message).
async fn concurrent_puts(u: &strongbox::client::Client, n: usize, needle: &str) -> (i64, i64) {
    let value = vec![7u8; 512 * 1024];
    let mut tasks = Vec::new();
    for i in 0..n {
        let (u, value) = (u.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            u.records()
                .put_record(put("t", "s", "c", &format!("k{i}"), &value))
                .await
        }));
    }
    let (mut ok, mut shed) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
                assert!(e.message().contains(needle), "{}", e.message());
                shed += 1;
            }
        }
    }
    (ok, shed)
}

#[tokio::test(flavor = "multi_thread")]
async fn overload_is_shed_not_queued() {
    let s = server_with(LoadLimits {
        rate_per_principal: 0,
        burst: 0,
        max_in_flight: 2,
        ..LoadLimits::default()
    })
    .await;
    let (_, u) = s.tenant_with_user("t").await;
    let (ok, shed) = concurrent_puts(&u, 32, "").await;
    assert!(ok >= 1 && shed >= 1, "ok {ok}, shed {shed}");
    // The server is fine afterwards.
    put_ok(&u, "t", "s", "c", "after", b"v").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_connection_is_shed_past_its_cap_audited_and_others_are_served() {
    let mut s = server_with(LoadLimits {
        rate_per_principal: 0,
        burst: 0,
        max_in_flight: 1024,
        max_in_flight_per_connection: 1,
        ..LoadLimits::default()
    })
    .await;
    let (admin, key) = s.tenant_with_user_key("t").await;
    let u = admin.as_key(&key).unwrap();
    // Eight at once on one connection (one client is one HTTP/2
    // connection), with room for one; another connection is served
    // meanwhile.
    let other = s.client(&key).await;
    let ((ok, shed), _) = tokio::join!(
        concurrent_puts(&u, 8, "on this connection"),
        put_ok(&other, "t", "s", "c", "other", b"v")
    );
    assert!(ok >= 1 && shed >= 1, "ok {ok}, shed {shed}");
    put_ok(&u, "t", "s", "c", "after", b"v").await;
    s.stop().await;
    // Each shed call has its entry (fewer than the per-peer burst of 20,
    // so none is coalesced).
    let audited = s.stored().count(
        "SELECT count(*) FROM audit_log WHERE action = 'rpc.refused' \
         AND resource LIKE '%shed (per connection)%'",
        &[],
    );
    assert_eq!(audited, shed, "ok {ok}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_deadline_fails_the_call_and_nothing_breaks() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    let mut req = tonic::Request::new(put("t", "s", "c", "k", &vec![1u8; 1 << 20]));
    req.set_timeout(Duration::from_micros(1));
    let e = u.records().put_record(req).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{:?}: {}",
        e.code(),
        e.message()
    );
    put_ok(&u, "t", "s", "c", "k2", b"v").await;
    assert!(verify_audit(&s.operator().await).await.ok);
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_hold_their_slot_and_a_bounded_buffer_for_their_life() {
    const OPEN: usize = 6;
    let s = server_with(LoadLimits {
        max_in_flight: OPEN,
        ..LoadLimits::default()
    })
    .await;
    let (_, key) = s.tenant_with_user_key("t").await;
    let u = s.client(&key).await;
    let big = vec![0x5a; 1 << 20];
    for i in 0..40 {
        put_ok(&u, "t", "big", "blob", &format!("k{i}"), &big).await;
    }
    let before = rss_kib();
    // Exports whose client reads only the header: the server must neither
    // buffer the subject's 40 MiB per stream nor forget the streams are open.
    let mut open = Vec::new();
    for _ in 0..OPEN {
        // A connection each: unread streams on one connection would use up
        // its HTTP/2 flow-control window for the others.
        let mut stream = s
            .client(&key)
            .await
            .subjects()
            .export_subject(pb::ExportSubjectRequest {
                tenant: "t".into(),
                subject: "big".into(),
            })
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().unwrap();
        open.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    // Each stream may hold a 4 MiB page being read and 4 queued values.
    assert!(
        grown_mib < 100,
        "RSS grew by {grown_mib} MiB for {OPEN} stalled exports"
    );
    // Every slot is held by an open stream: the next call is shed.
    let r = get_value(&u, "t", "big", "blob", "k0").await;
    assert_eq!(r.unwrap_err().code(), Code::ResourceExhausted);
    // Streams read to the end, or dropped, give their slots back.
    let mut first = open.remove(0);
    let mut n = 0;
    while let Some(m) = first.message().await.unwrap() {
        if matches!(m.item, Some(pb::export_subject_response::Item::Record(_))) {
            n += 1;
        }
    }
    assert_eq!(n, 40, "every record, then the access history");
    drop(first);
    drop(open);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get_value(&u, "t", "big", "blob", "k0").await.unwrap(), big);
}
