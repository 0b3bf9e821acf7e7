//! Durability: a write acknowledged to the client survives SIGKILL of the
//! server process. Runs the real `strongbox` binary.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use strongbox::client::Client;

fn spawn_server(data_dir: &std::path::Path) -> (std::process::Child, String) {
    spawn_binary(
        &["--data-dir".as_ref(), data_dir.as_os_str()],
        std::path::Path::new("."),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, endpoint) = spawn_server(&data);
    let op_key = std::fs::read_to_string(data.join("operator.key")).unwrap();
    let op = Client::connect(&endpoint, Some(op_key.trim()))
        .await
        .unwrap();
    let admin_key = tenant_with_admin(&op, "t").await;
    let key = new_principal(
        &op.as_key(&admin_key).unwrap(),
        "t",
        "rw",
        &["writer", "reader"],
    )
    .await;
    let c = op.as_key(&key).unwrap();

    // Writers keep writing; the server is killed mid-stream. Every write
    // that was acknowledged must be there after the restart.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..16 {
        let (c, acked) = (c.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("w{w}-{i}");
                match c
                    .records()
                    .put_record(put("t", &format!("s{w}"), "c", &key, key.as_bytes()))
                    .await
                {
                    Ok(_) => acked.lock().unwrap().push((w, key)),
                    Err(_) => return,
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let (mut child, endpoint) = spawn_server(&data);
    let c = Client::connect(&endpoint, Some(&key)).await.unwrap();
    for (w, key) in &acked {
        let v = get_value(&c, "t", &format!("s{w}"), "c", key).await;
        assert_eq!(v.unwrap(), key.as_bytes(), "acknowledged write {key} lost");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// WAL syncs in an strace log of the server.
fn wal_syncs(trace: &std::path::Path) -> usize {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("sync(") && l.contains("strongbox.db-wal>"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_waited_for_a_wal_sync() {
    // SIGKILL keeps the page cache, so the test above passes even with
    // `synchronous=OFF`. This one watches the syscalls instead: K puts made
    // one after another are K commits, and each must have synced the WAL
    // before it was acknowledged. With `synchronous=NORMAL` or `OFF` a WAL
    // commit syncs nothing and this fails. (`scripts/test` installs strace.)
    const K: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let trace = dir.path().join("strace.log");
    let mut child = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_strongbox"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("strace runs (scripts/test installs it)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let endpoint = format!(
        "http://{}",
        line.trim().strip_prefix("listening on ").unwrap()
    );
    let op_key = std::fs::read_to_string(data.join("operator.key")).unwrap();
    let op = Client::connect(&endpoint, Some(op_key.trim()))
        .await
        .unwrap();
    let admin_key = tenant_with_admin(&op, "t").await;
    let key = new_principal(&op.as_key(&admin_key).unwrap(), "t", "rw", &["writer"]).await;
    let c = op.as_key(&key).unwrap();
    // Each put is acknowledged before the next is sent: K separate commits.
    for i in 0..K {
        put_ok(&c, "t", "s", "c", &format!("k{i}"), b"v").await;
    }
    // A clean stop, so strace writes out everything it saw.
    let pid = std::fs::read_to_string(data.join("strongbox.lock")).unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status()
        .unwrap();
    child.wait().unwrap();
    let syncs = wal_syncs(&trace);
    assert!(
        syncs >= K,
        "{K} acknowledged commits but {syncs} syncs of the WAL: a commit was acknowledged before it was on disk"
    );
}

/// The writer does not checkpoint; the checkpoint thread does. Without it
/// every frame would stay in the WAL and the database file would stay as
/// created.
#[tokio::test(flavor = "multi_thread")]
async fn the_wal_is_checkpointed_into_the_database_file_and_stays_bounded() {
    let s = TestServer::start().await;
    let (_, user) = s.tenant_with_user("t").await;
    let value = vec![0x42u8; 4096];
    let mut lanes = Vec::new();
    for lane in 0..16 {
        let (user, value) = (user.clone(), value.clone());
        lanes.push(tokio::spawn(async move {
            for i in 0..200 {
                put_ok(&user, "t", "s", "c", &format!("k{lane}-{i}"), &value).await;
            }
        }));
    }
    for lane in lanes {
        lane.await.unwrap();
    }
    // A few checkpoint intervals.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let db = s.db_path();
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let (file, wal) = (size(&db), size(&db.with_extension("db-wal")));
    let written = 16 * 200 * 4096;
    assert!(
        file >= written,
        "the database file holds {file} bytes of {written} written (WAL {wal})"
    );
    assert!(
        wal < file / 2,
        "the WAL ({wal} bytes) is not checkpointed (database file {file})"
    );
}
