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
