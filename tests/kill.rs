//! The server killed (SIGKILL) in the middle of key jobs: a root rotation
//! at each of its crash points, and a tenant rewrap at several moments.
//! After a restart the job finishes and every record decrypts.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use strongbox::api::pb;
use strongbox::client::Client;
use strongbox::rootkey::KeyFileProvider;

fn data(dir: &Path) -> std::path::PathBuf {
    dir.join("strongbox-data")
}

#[tokio::test(flavor = "multi_thread")]
async fn root_rotation_killed_at_each_crash_point() {
    for point in ROOT_CRASH_POINTS {
        let dir = tempfile::tempdir().unwrap();
        let crash = format!("root-rotation:{point}");
        let serve = Serve::start(&[], dir.path(), &[(strongbox::CRASH_POINT_ENV, &crash)]).unwrap();
        let op = serve.operator(&data(dir.path())).await;
        let p = populate(&op).await;
        let root_file = data(dir.path()).join("root.key");
        let before = std::fs::read(&root_file).unwrap();
        rotate_root_killed_at(serve, &op, &crash).await;

        let serve = Serve::start(&[], dir.path(), &[]).unwrap();
        let op = serve.operator(&data(dir.path())).await;
        check_populated(&op, &p).await;
        assert!(
            !KeyFileProvider::successor_path(&root_file).exists(),
            "{point}: no staged key is left"
        );
        let after = std::fs::read(&root_file).unwrap();
        if point == "staged" {
            assert_eq!(
                after, before,
                "killed before the commit: the old root stays"
            );
        } else {
            assert_ne!(
                after, before,
                "killed after the commit: the new root is in use"
            );
        }
        // And the vault rotates again cleanly.
        rotate_root(&op).await;
        check_populated(&op, &p).await;
        serve.kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_rewrap_killed_three_times_then_finishes() {
    const SUBJECTS: usize = 6000;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&[], dir.path(), &[]).unwrap();
    let op = serve.operator(&data(dir.path())).await;
    let admin_key = tenant_with_admin(&op, "t").await;
    let admin = op.as_key(&admin_key).unwrap();
    let key = new_principal(&admin, "t", "rw", &["writer", "reader"]).await;
    let u = op.as_key(&key).unwrap();
    put_numbered(std::slice::from_ref(&u), "t", SUBJECTS).await;
    admin
        .keys()
        .rotate_tenant_key(pb::RotateTenantKeyRequest { tenant: "t".into() })
        .await
        .unwrap();

    // Kill while the job is part-way, three times, each later than the last.
    let mut serve = serve;
    let mut admin = admin;
    let mut last_left = SUBJECTS as u64 + 1;
    for _ in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let left = loop {
            let left = key_status(&admin, "t").await.data_keys_to_rewrap;
            if left < last_left && left > 0 {
                break left;
            }
            assert!(
                left > 0,
                "the rewrap finished before the kill: make it longer"
            );
            assert!(Instant::now() < deadline, "the rewrap made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        serve.kill();
        serve = Serve::start(&[], dir.path(), &[]).unwrap();
        admin = Client::connect(&serve.endpoint, Some(&admin_key))
            .await
            .unwrap();
        let resumed = key_status(&admin, "t").await.data_keys_to_rewrap;
        assert!(resumed <= left, "progress was kept: {resumed} > {left}");
        last_left = resumed;
    }

    wait_rewrap_done(
        &admin,
        "t",
        Duration::from_secs(120),
        "the rewrap never finished",
    )
    .await;
    let u = admin.as_key(&key).unwrap();
    for i in 0..SUBJECTS {
        assert_eq!(
            get_value(&u, "t", &format!("s{i}"), "c", "k")
                .await
                .unwrap(),
            format!("v{i}").into_bytes(),
            "subject s{i} after three kills"
        );
    }
    serve.kill();
}
