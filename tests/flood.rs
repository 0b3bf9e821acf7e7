//! A keyless flood from one address: after `auth_failure_burst` failed
//! authentications a minute, that peer's failing calls are refused at once
//! with RESOURCE_EXHAUSTED and audited as one coalesced entry per peer per
//! flush, so the audit trail grows by a bounded number of rows however
//! long the flood, every failure is still counted, and authenticated
//! callers go on.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_bad_keys_adds_a_bounded_number_of_audit_rows() {
    let mut s = TestServer::start().await;
    let (_, user) = s.tenant_with_user("t").await;
    put_ok(&user, "t", "ann", "c", "k", b"v").await;
    let bad = s
        .anonymous()
        .await
        .as_key("sbk_0123456789abcdef_notarealsecretnotarealsecret")
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, exhausted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flooders = Vec::new();
    for _ in 0..8 {
        let (bad, stop, sent, exhausted) =
            (bad.clone(), stop.clone(), sent.clone(), exhausted.clone());
        flooders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = bad.records().get_record(get("t", "ann", "c", "k")).await;
                sent.fetch_add(1, Ordering::Relaxed);
                match r.unwrap_err().code() {
                    Code::ResourceExhausted => {
                        exhausted.fetch_add(1, Ordering::Relaxed);
                    }
                    Code::Unauthenticated => {}
                    other => panic!("{other:?}"),
                }
            }
        }));
    }
    // An authenticated caller from the same machine keeps working.
    let mut served = 0;
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        assert_eq!(get_value(&user, "t", "ann", "c", "k").await.unwrap(), b"v");
        served += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.await.unwrap();
    }
    let (sent, exhausted) = (
        sent.load(Ordering::Relaxed),
        exhausted.load(Ordering::Relaxed),
    );
    assert!(sent > 500, "the flood sent only {sent} calls");
    assert_eq!(exhausted, sent - 20, "all but the burst refused at once");
    // Shutdown writes the pending coalesced entry.
    s.stop().await;
    let c = s.stored();
    let denied = c.count(
        "SELECT count(*) FROM audit_log WHERE outcome = 'denied'",
        &[],
    );
    // The burst, one at a time, plus one coalesced entry per flush (every
    // 10 s, and at shutdown): at most 20 + 2 for a 3 s flood.
    assert!(denied <= 22, "{denied} denied rows for {sent} failed calls");
    let coalesced: Vec<String> = c
        .column(
            "SELECT resource FROM audit_log WHERE action = 'calls.failures-coalesced'",
            &[],
        )
        .iter()
        .map(|r| r.text())
        .collect();
    let counted: u64 = coalesced
        .iter()
        .map(|r| {
            r.split(' ')
                .find_map(|f| f.strip_prefix("count:"))
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        counted, exhausted,
        "every refused failure is counted: {coalesced:?}"
    );
    assert!(
        coalesced.iter().all(|r| r.starts_with("peer:127.0.0.1 ")),
        "{coalesced:?}"
    );
    assert!(served > 50, "the authenticated caller made {served} calls");
}
