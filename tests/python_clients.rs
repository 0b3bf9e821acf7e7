//! The stock Python gRPC clients against a real server: grpcio's health
//! checker, grpcio-reflection (v1alpha only), and stubs generated from
//! proto/ by grpc_tools.protoc running the quickstart flow
//! (tests/python/smoke.py). scripts/test installs them into target/pyenv;
//! the test skips, saying why, only where Python is absent.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn grpcio_health_reflection_and_generated_stubs_work() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(python) = pyenv_python("the grpcio clients") else {
        return;
    };
    let s = TestServer::start().await;
    let out_dir = tempfile::tempdir().unwrap();
    let target = s.endpoint.trim_start_matches("http://").to_owned();
    let (python, script, proto, out, key) = (
        python.clone(),
        root.join("tests/python/smoke.py"),
        root.join("proto"),
        out_dir.path().to_owned(),
        s.operator_key.clone(),
    );
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(target)
            .arg(key)
            .arg(proto)
            .arg(out)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for line in ["health: SERVING", "reflection:", "quickstart: ok"] {
        assert!(stdout.contains(line), "{stdout}");
    }
    // The Python client's purpose reached the audit trail.
    let trail = audit_trail(&s.operator().await, "acme").await;
    assert!(trail.iter().any(|(a, _, _)| a == "record.put"), "{trail:?}");
}
