//! Root-key providers other than the default key file.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use strongbox::api::pb;
use strongbox::client::Client;

#[tokio::test(flavor = "multi_thread")]
async fn root_key_from_an_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let key = hex::encode(strongbox::crypto::random_bytes::<32>());
    let args = ["--root-key-env".as_ref(), "SB_TEST_ROOT_KEY".as_ref()];
    let server = Serve::start(&args, dir.path(), &[("SB_TEST_ROOT_KEY", &key)]).unwrap();
    let endpoint = server.endpoint.clone();
    let op_key = std::fs::read_to_string(dir.path().join("strongbox-data/operator.key")).unwrap();
    let op = Client::connect(&endpoint, Some(op_key.trim()))
        .await
        .unwrap();
    let admin = op.as_key(&tenant_with_admin(&op, "t").await).unwrap();
    let rw_key = new_principal(&admin, "t", "rw", &["writer", "reader"]).await;
    put_ok(&op.as_key(&rw_key).unwrap(), "t", "s", "c", "k", b"secret").await;
    // Rotation needs a provider the server can rewrite: refused, clearly.
    assert_status(
        op.keys().rotate_root_key(pb::RotateRootKeyRequest {}).await,
        tonic::Code::FailedPrecondition,
        "SB_TEST_ROOT_KEY",
    );
    server.kill();
    assert!(
        !dir.path().join("strongbox-data/root.key").exists(),
        "no key file is written"
    );

    // The same key serves the same data after a restart.
    let server = Serve::start(&args, dir.path(), &[("SB_TEST_ROOT_KEY", &key)]).unwrap();
    let endpoint = server.endpoint.clone();
    let rw = Client::connect(&endpoint, Some(&rw_key)).await.unwrap();
    assert_eq!(get_value(&rw, "t", "s", "c", "k").await.unwrap(), b"secret");
    server.kill();

    // Another key, or none, is refused with a message that says why.
    let other = hex::encode(strongbox::crypto::random_bytes::<32>());
    let err = Serve::start(&args, dir.path(), &[("SB_TEST_ROOT_KEY", &other)])
        .err()
        .unwrap();
    assert!(
        err.contains("not the one this vault's data is wrapped under"),
        "{err}"
    );
    let err = Serve::start(&args, dir.path(), &[]).err().unwrap();
    assert!(
        err.contains("SB_TEST_ROOT_KEY") && err.contains("not set"),
        "{err}"
    );
    assert!(
        !err.contains(&key) && !err.contains(&other),
        "a key reached stderr"
    );
}
