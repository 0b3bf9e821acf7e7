//! PostgreSQL restarted under load: while it is down the vault's calls
//! answer `UNAVAILABLE`; afterwards they are served again without
//! restarting Strongbox, and every acknowledged write reads back. The
//! test restarts its own throwaway cluster, so it runs in a binary of its
//! own (a cluster per test process).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use strongbox::config::{DatabaseUrl, ServerConfig};
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_under_load_answers_unavailable_then_recovers() {
    let url = common::postgres::database();
    if !common::postgres::can_restart() {
        eprintln!(
            "skipped: STRONGBOX_TEST_DATABASE_URL names a PostgreSQL server this test may not restart"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        database_url: Some(DatabaseUrl::parse(url).unwrap()),
        ..config_for(&dir)
    };
    let s = TestServer::start_with(dir, config).await;
    let (_, u) = s.tenant_with_user("t").await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let refused = Arc::new(Mutex::new(Vec::<tonic::Status>::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (u, stop, acked, refused) =
                (u.clone(), stop.clone(), acked.clone(), refused.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let subject = format!("w{w}-{i}");
                    i += 1;
                    let req = put("t", &subject, "c", "k", subject.as_bytes());
                    match u.records().put_record(req).await {
                        Ok(_) => acked.lock().unwrap().push((subject, Instant::now())),
                        Err(e) => {
                            refused.lock().unwrap().push(e);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = acked.lock().unwrap().len();
    assert!(before > 0, "no write was served before the restart");
    // Fast shutdown (every session ended), 2 s down, started again on the
    // same port and data directory.
    tokio::task::spawn_blocking(|| common::postgres::restart_server(Duration::from_secs(2)))
        .await
        .unwrap();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(30);
    while !acked.lock().unwrap().iter().any(|(_, at)| *at > back) {
        assert!(
            Instant::now() < deadline,
            "no write was served after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    // Meanwhile calls were refused as UNAVAILABLE, and nothing else.
    let refused = refused.lock().unwrap().clone();
    assert!(!refused.is_empty(), "no call saw PostgreSQL down");
    for e in &refused {
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    }
    // Every acknowledged write is there, before and after the restart.
    let acked = acked.lock().unwrap().clone();
    for (subject, _) in &acked {
        assert_eq!(
            get_value(&u, "t", subject, "c", "k").await.unwrap(),
            subject.as_bytes(),
            "{subject} was acknowledged"
        );
    }
    let report = verify_audit(&s.operator().await).await;
    assert!(report.ok, "{report:?}");
}
