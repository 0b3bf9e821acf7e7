//! The PKCS#11 root-key provider against SoftHSM2: the root key is made
//! inside the token and never leaves it; the vault serves, restarts and
//! rotates its root with it; a key-file vault moves into it; and a kill at
//! any point of a rotation or of the move leaves a vault that opens.
//! Every server and CLI here is a child process given its own token
//! through `SOFTHSM2_CONF`.
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use strongbox::api::pb;
use strongbox::rootkey::KeyFileProvider;

const LABEL: &str = "vault-root";

fn data(dir: &Path) -> PathBuf {
    dir.join("strongbox-data")
}

fn os(v: &[OsString]) -> Vec<&OsStr> {
    v.iter().map(|s| s.as_os_str()).collect()
}

fn envs(hsm: &SoftHsm) -> Vec<(&'static str, String)> {
    hsm.env()
}

fn env_refs<'a>(e: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    e.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn serve_hsm(hsm: &SoftHsm, dir: &Path, extra: &[(&'static str, &str)]) -> Result<Serve, String> {
    let args = hsm.args(LABEL);
    let env = envs(hsm);
    let mut env = env_refs(&env);
    env.extend_from_slice(extra);
    Serve::start(&os(&args), dir, &env)
}

/// `strongbox key hsm-check` on `label`: (success, stdout, stderr).
fn hsm_check(hsm: &SoftHsm, dir: &Path, label: &str) -> (bool, String, String) {
    let mut args: Vec<OsString> = vec!["key".into(), "hsm-check".into()];
    args.extend(hsm.args(label));
    let env = envs(hsm);
    run_cli(&os(&args), dir, &env_refs(&env))
}

/// `strongbox key move-root` on the vault in `dir`.
fn move_root(hsm: &SoftHsm, dir: &Path, extra: &[(&'static str, &str)]) -> (bool, String, String) {
    move_root_with(hsm, dir, &[], extra)
}

/// [`move_root`] with more flags.
fn move_root_with(
    hsm: &SoftHsm,
    dir: &Path,
    flags: &[OsString],
    extra: &[(&'static str, &str)],
) -> (bool, String, String) {
    let mut args: Vec<OsString> = vec!["key".into(), "move-root".into()];
    args.extend_from_slice(flags);
    args.extend(hsm.args(LABEL));
    let env = envs(hsm);
    let mut env = env_refs(&env);
    env.extend_from_slice(extra);
    run_cli(&os(&args), dir, &env)
}

/// Waits until the token holds no key labelled `label`.
fn until_gone(hsm: &SoftHsm, dir: &Path, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, _, err) = hsm_check(hsm, dir, label);
        if !ok {
            assert!(err.contains("NOT_FOUND"), "{err}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{label} is still in the token ({})",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_root_key_lives_and_stays_in_the_hsm() {
    let hsm = SoftHsm::new("strongbox");
    let dir = tempfile::tempdir().unwrap();
    let serve = serve_hsm(&hsm, dir.path(), &[]).unwrap();
    let op = serve.operator(&data(dir.path())).await;
    let p = populate(&op).await;
    assert!(
        !data(dir.path()).join("root.key").exists(),
        "no key file is written"
    );
    serve.kill();

    // The key was generated in the token, sensitive and never extractable:
    // the token refuses to give out its value.
    let (ok, out, err) = hsm_check(&hsm, dir.path(), LABEL);
    assert!(ok, "{out}{err}");
    for line in [
        "bits                256",
        "sensitive           yes",
        "extractable         no",
        "never extractable   yes",
        "generated in token  yes",
        "value readable      no",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }

    // Restart, then rotate the root inside the HSM.
    let serve = serve_hsm(&hsm, dir.path(), &[]).unwrap();
    let op = serve.operator(&data(dir.path())).await;
    check_populated(&op, &p).await;
    let r = rotate_root(&op).await;
    assert_eq!(r.keys_rewrapped, 5);
    assert_eq!(r.root, format!("pkcs11:token=strongbox;object={LABEL}"));
    check_populated(&op, &p).await;
    // The replaced key is destroyed once no reader can need it.
    until_gone(&hsm, dir.path(), &format!("{LABEL}.old"));
    until_gone(&hsm, dir.path(), &format!("{LABEL}.next"));
    serve.kill();
    let serve = serve_hsm(&hsm, dir.path(), &[]).unwrap();
    check_populated(&serve.operator(&data(dir.path())).await, &p).await;
    serve.kill();

    // A wrong PIN, or no HSM at all, is refused with a message that says
    // why (and never echoes the PIN).
    let err = serve_hsm(&hsm, dir.path(), &[("STRONGBOX_PKCS11_PIN", "9999-wrong")])
        .err()
        .unwrap();
    assert!(
        err.contains("not the user PIN of token 'strongbox'"),
        "{err}"
    );
    assert!(!err.contains("9999-wrong"), "{err}");
    let err = Serve::start(&[], dir.path(), &[]).err().unwrap();
    assert!(
        err.contains("does not exist") && err.contains("pkcs11:token=strongbox;object=vault-root"),
        "{err}"
    );
    assert!(!data(dir.path()).join("root.key").exists());
}

/// A vault made with a key file, populated, and stopped.
async fn key_file_vault(dir: &Path) -> Populated {
    let serve = Serve::start(&[], dir, &[]).unwrap();
    let p = populate(&serve.operator(&data(dir)).await).await;
    serve.kill();
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_file_vault_moves_into_the_hsm() {
    let hsm = SoftHsm::new("strongbox");
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&[], dir.path(), &[]).unwrap();
    let p = populate(&serve.operator(&data(dir.path())).await).await;

    // Refused while a server runs on the vault.
    let (ok, _, err) = move_root(&hsm, dir.path(), &[]);
    assert!(!ok && err.contains("in use by a running server"), "{err}");
    serve.kill();

    let key_file = data(dir.path()).join("root.key");
    let old_copy = tempfile::tempdir().unwrap();
    let old_root = old_copy.path().join("root.key");
    std::fs::copy(&key_file, &old_root).unwrap();

    let (ok, out, err) = move_root(&hsm, dir.path(), &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("root key moved: 5 keys rewrapped from key-file:")
            && out.contains("to pkcs11:token=strongbox;object=vault-root"),
        "{out}"
    );
    let (ok, out, _) = move_root(&hsm, dir.path(), &[]);
    assert!(ok && out.contains("nothing to do"), "a second run: {out}");

    // The key file no longer opens the vault, and says where the key went.
    let err = Serve::start(&[], dir.path(), &[]).err().unwrap();
    assert!(
        err.contains("not the one") && err.contains("pkcs11:token=strongbox;object=vault-root"),
        "{err}"
    );
    // Nothing stored opens under the old key.
    let old = KeyFileProvider::open(&old_root).unwrap();
    let db = common::stored::Stored::Sqlite(data(dir.path()).join("strongbox.db"));
    old_root_opens_nothing(&db, &old);

    // The runbook's last step: destroy the key file; the HSM serves alone.
    std::fs::remove_file(&key_file).unwrap();
    let serve = serve_hsm(&hsm, dir.path(), &[]).unwrap();
    let op = serve.operator(&data(dir.path())).await;
    check_populated(&op, &p).await;
    let mut moved = op
        .audit()
        .list_audit_entries(pb::ListAuditEntriesRequest {
            action: "key.move-root".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(e) = moved.message().await.unwrap() {
        assert_eq!(e.principal, "offline: strongbox key move-root");
        n += 1;
    }
    assert_eq!(n, 1, "the move is in the audit trail");
    serve.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_vault_moves_into_the_hsm() {
    let hsm = SoftHsm::new("strongbox");
    let url = common::postgres::database();
    let dir = tempfile::tempdir().unwrap();
    let db: Vec<OsString> = vec!["--database-url".into(), url.clone().into()];
    let serve = Serve::start(&os(&db), dir.path(), &[]).unwrap();
    let p = populate(&serve.operator(&data(dir.path())).await).await;

    // Run from another host (its own data directory), with the servers'
    // key file and anchor: refused while a server is live on the database.
    let other = tempfile::tempdir().unwrap();
    let key_file = data(dir.path()).join("root.key");
    let mut flags = db.clone();
    flags.extend([
        "--root-key-file".into(),
        key_file.clone().into(),
        "--audit-anchor".into(),
        data(dir.path()).join("audit.anchor").into(),
    ]);
    let (ok, _, err) = move_root_with(&hsm, other.path(), &flags, &[]);
    assert!(!ok && err.contains("live on this database"), "{err}");
    serve.terminate();

    let old = KeyFileProvider::open(&key_file).unwrap();
    let (ok, out, err) = move_root_with(&hsm, other.path(), &flags, &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("root key moved: 5 keys rewrapped from key-file:")
            && out.contains("to pkcs11:token=strongbox;object=vault-root"),
        "{out}"
    );
    // The key file no longer opens the vault; nothing stored opens under it.
    let err = Serve::start(&os(&db), dir.path(), &[]).err().unwrap();
    assert!(err.contains("not the one"), "{err}");
    old_root_opens_nothing(&common::stored::Stored::Postgres(url), &old);

    // The servers start with the HSM and read everything back.
    std::fs::remove_file(&key_file).unwrap();
    let mut args = db.clone();
    args.extend(hsm.args(LABEL));
    let env = envs(&hsm);
    let serve = Serve::start(&os(&args), dir.path(), &env_refs(&env)).unwrap();
    check_populated(&serve.operator(&data(dir.path())).await, &p).await;
    serve.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_move_killed_at_each_crash_point_finishes_or_restarts() {
    for point in ROOT_CRASH_POINTS {
        let hsm = SoftHsm::new("strongbox");
        let dir = tempfile::tempdir().unwrap();
        let p = key_file_vault(dir.path()).await;

        // Run the move and SIGKILL it at the crash point.
        let crash = format!("move-root:{point}");
        let mut args: Vec<OsString> = vec!["key".into(), "move-root".into()];
        args.extend(hsm.args(LABEL));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
            .args(&args)
            .current_dir(dir.path())
            .envs(hsm.env())
            .env(strongbox::CRASH_POINT_ENV, &crash)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(line.contains(&crash), "{point}: {line}");
        child.kill().unwrap();
        child.wait().unwrap();

        if point == "staged" {
            // Nothing committed: the key file still opens the vault.
            let serve = Serve::start(&[], dir.path(), &[]).unwrap();
            check_populated(&serve.operator(&data(dir.path())).await, &p).await;
            serve.kill();
        }
        // Running the move again finishes it, whatever the point.
        let (ok, out, err) = move_root(&hsm, dir.path(), &[]);
        assert!(ok, "{point}: {err}");
        let expected = match point {
            "staged" => "root key moved",
            "committed" => "root key move finished",
            _ => "nothing to do",
        };
        assert!(out.contains(expected), "{point}: {out}");
        until_gone(&hsm, dir.path(), &format!("{LABEL}.next"));
        let serve = serve_hsm(&hsm, dir.path(), &[]).unwrap();
        check_populated(&serve.operator(&data(dir.path())).await, &p).await;
        serve.kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hsm_root_rotation_killed_at_each_crash_point() {
    for point in ROOT_CRASH_POINTS {
        let hsm = SoftHsm::new("strongbox");
        let dir = tempfile::tempdir().unwrap();
        let crash = format!("root-rotation:{point}");
        let serve = serve_hsm(&hsm, dir.path(), &[(strongbox::CRASH_POINT_ENV, &crash)]).unwrap();
        let op = serve.operator(&data(dir.path())).await;
        let p = populate(&op).await;
        rotate_root_killed_at(serve, &op, &crash).await;

        // Start-up finishes or discards the rotation and cleans the token.
        let serve = serve_hsm(&hsm, dir.path(), &[]).unwrap();
        let op = serve.operator(&data(dir.path())).await;
        check_populated(&op, &p).await;
        until_gone(&hsm, dir.path(), &format!("{LABEL}.next"));
        until_gone(&hsm, dir.path(), &format!("{LABEL}.old"));
        rotate_root(&op).await;
        check_populated(&op, &p).await;
        serve.kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hsm_that_stops_answering_is_unavailable_not_data_loss() {
    let hsm = SoftHsm::new("strongbox");
    let dir = tempfile::tempdir().unwrap();
    let serve = serve_hsm(&hsm, dir.path(), &[]).unwrap();
    let op = serve.operator(&data(dir.path())).await;
    let p = populate(&op).await;
    serve.kill();
    // A fresh start: no key-encryption key is cached yet.
    let serve = serve_hsm(&hsm, dir.path(), &[]).unwrap();
    let op = serve.operator(&data(dir.path())).await;
    // The token's storage goes away under the running server.
    std::fs::remove_dir_all(hsm.dir.path().join("tokens")).unwrap();
    let u = op.as_key(&p.key).unwrap();
    let r = u
        .records()
        .get_record(get("t", "person-1@example.com", "contact", "email"))
        .await;
    let status = r.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("root key provider"), "{status:?}");
    // Health follows: with the root key unavailable, every service is
    // NOT_SERVING within a few probes.
    let mut health = tonic_health::pb::health_client::HealthClient::new(op.channel());
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let mut reported = false;
    for _ in 0..100 {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "strongbox.v1.RecordService".into(),
            })
            .await
            .unwrap();
        if r.into_inner().status == not_serving {
            reported = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reported, "health reported SERVING without a root key");
    serve.kill();
}
