//! Durability: a write acknowledged to the client survives SIGKILL of the
//! server process. Runs the real `strongbox` binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;
use strongbox::api::pb;
use strongbox::client::Client;

/// Starts `strongbox serve` on port 0; returns the child and its endpoint.
fn spawn_server(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected: {line:?}"));
    (child, format!("http://{addr}"))
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
    op.tenants()
        .create_tenant(pb::CreateTenantRequest {
            tenant: "t".into(),
            name: String::new(),
        })
        .await
        .unwrap();
    let admin_key = op
        .principals()
        .create_principal(pb::CreatePrincipalRequest {
            tenant: "t".into(),
            name: "admin".into(),
            roles: vec!["admin".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .api_key;
    let key = op
        .as_key(&admin_key)
        .unwrap()
        .principals()
        .create_principal(pb::CreatePrincipalRequest {
            tenant: "t".into(),
            name: "rw".into(),
            roles: vec!["writer".into(), "reader".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .api_key;
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
