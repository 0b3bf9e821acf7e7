//! The vault stays available: a long read snapshot does not stall writes
//! through the checkpoint a shred asks for, and the WAL is truncated once
//! the reader lets go.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use strongbox::api::pb;

/// A liveness bound, not a performance figure: a stalled write would wait
/// minutes (the old checkpoint retried 50 times with a 10 s busy timeout).
const STALLED: Duration = Duration::from_secs(5);

fn wal_len(s: &TestServer) -> u64 {
    std::fs::metadata(s.data_dir().join("strongbox.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_read_during_a_shred_stalls_no_write() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    for i in 0..20 {
        put_ok(&u, "t", "gone", "c", &format!("k{i}"), b"to be shredded").await;
    }
    let wrapped_keys = |c: &rusqlite::Connection| -> Vec<(String, Option<Vec<u8>>)> {
        c.prepare("SELECT id, wrapped FROM data_keys")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let before = wrapped_keys(&rusqlite::Connection::open(s.db_path()).unwrap());
    // A reader holding an old snapshot, as a long `audit verify` does.
    let reader = rusqlite::Connection::open(s.db_path()).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap();

    let mut subjects = u.subjects();
    let shred = subjects.shred_subject(pb::ShredSubjectRequest {
        tenant: "t".into(),
        subject: "gone".into(),
    });
    tokio::time::timeout(STALLED, shred)
        .await
        .expect("the shred returns while a reader holds a snapshot")
        .unwrap();
    for i in 0..20 {
        let key = format!("k{i}");
        let put = put_ok(&u, "t", "stays", "c", &key, b"v");
        tokio::time::timeout(STALLED, put)
            .await
            .expect("a put is not stalled behind the checkpoint");
    }
    let held = wal_len(&s);
    assert!(held > 0, "the reader kept the WAL from being truncated");

    // Once the reader lets go, housekeeping truncates the WAL (later
    // housekeeping writes start it anew, small).
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    let mut truncated = false;
    for _ in 0..100 {
        if wal_len(&s) < held / 2 {
            truncated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(truncated, "the owed checkpoint ran after the reader ended");
    // The destroyed key's wrapped bytes are in no file of the data dir.
    let after = wrapped_keys(&rusqlite::Connection::open(s.db_path()).unwrap());
    let destroyed: Vec<Vec<u8>> = before
        .into_iter()
        .filter(|(id, _)| after.iter().any(|(a, w)| a == id && w.is_none()))
        .filter_map(|(_, w)| w)
        .collect();
    assert_eq!(destroyed.len(), 1, "the subject's data key was destroyed");
    for (path, bytes) in data_dir_bytes(&s.data_dir()) {
        assert!(
            !contains(&bytes, &destroyed[0]),
            "{} still holds the destroyed key",
            path.display()
        );
    }
}
