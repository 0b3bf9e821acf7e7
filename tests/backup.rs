//! Online backup over real gRPC and the real CLI: taken while writes go
//! on, it holds every write acknowledged before it began; it is a
//! consistent SQLite database behind a header and a MAC; it never holds
//! the root key or a plaintext value; and the CLI never overwrites a file.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;
use strongbox::vault::backup::MAGIC;

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_under_writes_holds_every_acknowledged_write() {
    let s = TestServer::start().await;
    let (_, user) = s.tenant_with_user("t").await;
    let canary = format!("CANARY-{}", random_hex(16));
    put_ok(&user, "t", "alice", "c", "canary", canary.as_bytes()).await;

    // A writer that keeps going through the backup.
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (user, acked, stop) = (user.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                put_ok(&user, "t", "bob", "c", &format!("k{i}"), b"v").await;
                i += 1;
                acked.store(i, Ordering::SeqCst);
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before = acked.load(Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vault.sbxbak");
    let run = tokio::task::spawn_blocking({
        let (endpoint, key, out) = (s.endpoint.clone(), s.operator_key.clone(), out.clone());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
                .args(["--endpoint", &endpoint, "--api-key", &key])
                .arg("backup")
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let file = std::fs::read(&out).unwrap();
    assert_eq!(&file[..8], MAGIC);
    // The database between the 16-byte header and the 32-byte MAC.
    let db_path = dir.path().join("restored.db");
    std::fs::write(&db_path, &file[16..file.len() - 32]).unwrap();
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    for i in 0..before {
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM records WHERE key = ?1",
                [format!("k{i}")],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "k{i} was acknowledged before the backup began");
    }

    // Wrapped keys and ciphertext only.
    let root_hex = std::fs::read_to_string(s.config.root_key_path()).unwrap();
    let root = hex::decode(root_hex.trim()).unwrap();
    let contains = |needle: &[u8]| file.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(&root), "the root key is not in the backup");
    assert!(!contains(root_hex.trim().as_bytes()));
    assert!(!contains(canary.as_bytes()), "no plaintext value");

    // The server's snapshot file is gone once streamed.
    let left: Vec<_> = std::fs::read_dir(&s.config.data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("snapshot"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Never over an existing file.
    let again = cli_backup(&s, &out);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Only the operator backs up.
    assert_status(
        user.backup()
            .backup(strongbox::api::pb::BackupRequest {})
            .await,
        tonic::Code::PermissionDenied,
        "",
    );
}
