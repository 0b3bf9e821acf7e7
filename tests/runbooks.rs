//! The operator runbooks in docs/runbooks, run against a live server: every
//! `sh` block (but those marked `runbook-test: skip`) runs in order in one
//! bash session with `-euo pipefail`, so a runbook that drifts from the CLI
//! fails CI.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{new_principal, spawn_binary};
use strongbox::api::pb;
use strongbox::client::Client;

/// The runnable shell of a runbook, split at `runbook-test: restart`
/// markers (where the test restarts the server as the runbook says): its
/// `sh` blocks not marked skip.
fn runnable_parts(runbook: &str) -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/runbooks")
            .join(runbook),
    )
    .unwrap();
    let mut parts = vec![String::new()];
    let mut skip_next = false;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("<!-- runbook-test: skip") {
            skip_next = true;
        } else if line.starts_with("<!-- runbook-test: restart") {
            parts.push(String::new());
        } else if line.trim() == "```sh" {
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            if !skip_next {
                let script = parts.last_mut().unwrap();
                script.push_str(&block.join("\n"));
                script.push('\n');
            }
            skip_next = false;
        }
    }
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !part.trim().is_empty(),
            "{runbook} part {i} has no runnable block"
        );
    }
    parts
}

fn run(runbook: &str, dir: &Path, endpoint: &str, key: &str) -> String {
    let script = runnable_parts(runbook).concat();
    run_script(runbook, &script, dir, endpoint, key, &[])
}

fn run_script(
    runbook: &str,
    script: &str,
    dir: &Path,
    endpoint: &str,
    key: &str,
    envs: &[(&str, &str)],
) -> String {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_strongbox")).parent().unwrap();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("STRONGBOX_ENDPOINT", endpoint)
        .env("STRONGBOX_API_KEY", key)
        .env("TENANT", "acme")
        .env("SUBJECT", "alice@example.com")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{runbook} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A server binary in `dir` with tenant `acme` and its admin.
struct Acme {
    server: std::process::Child,
    endpoint: String,
    operator: String,
    op: Client,
    admin_key: String,
    admin: Client,
}

async fn acme(dir: &Path) -> Acme {
    let (server, endpoint) = spawn_binary(&[], dir);
    let operator = std::fs::read_to_string(dir.join("strongbox-data/operator.key"))
        .unwrap()
        .trim()
        .to_owned();
    let op = Client::connect(&endpoint, Some(&operator)).await.unwrap();
    op.tenants()
        .create_tenant(pb::CreateTenantRequest {
            tenant: "acme".into(),
            name: "Acme Corp".into(),
        })
        .await
        .unwrap();
    let admin_key = new_principal(&op, "acme", "admin", &["admin"]).await;
    let admin = op.as_key(&admin_key).unwrap();
    Acme {
        server,
        endpoint,
        operator,
        op,
        admin_key,
        admin,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runbooks_run_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let Acme {
        mut server,
        endpoint,
        operator,
        op,
        admin_key,
        admin,
    } = acme(dir.path()).await;
    let dpo = new_principal(&admin, "acme", "dpo", &["privacy-officer"]).await;
    let app = op
        .as_key(&new_principal(&admin, "acme", "app", &["writer", "reader"]).await)
        .unwrap();
    for (subject, key) in [
        ("alice@example.com", "email"),
        ("alice@example.com", "phone"),
        ("bob@example.com", "email"),
    ] {
        common::put_ok(&app, "acme", subject, "contact", key, b"value").await;
    }

    let out = run(
        "suspected-key-compromise.md",
        dir.path(),
        &endpoint,
        &admin_key,
    );
    assert!(out.contains("0 re-encryption jobs running"), "{out}");
    assert!(
        out.contains("minimum decryption version v2") && out.contains("retired"),
        "{out}"
    );
    assert_eq!(
        common::get_value(&app, "acme", "bob@example.com", "contact", "email")
            .await
            .unwrap(),
        b"value"
    );

    let out = run("subject-deletion-request.md", dir.path(), &endpoint, &dpo);
    assert!(out.contains("valid"), "{out}");
    assert!(
        common::get_value(&app, "acme", "alice@example.com", "contact", "email")
            .await
            .is_err()
    );

    let out = run("tenant-key-rotation.md", dir.path(), &endpoint, &admin_key);
    assert!(out.contains("current KEK v2"), "{out}");
    assert!(out.contains("retired"), "{out}");

    let out = run("root-key-rotation.md", dir.path(), &endpoint, &operator);
    assert!(out.contains("root key rotated"), "{out}");
    assert_eq!(
        common::get_value(&app, "acme", "bob@example.com", "contact", "email")
            .await
            .unwrap(),
        b"value"
    );

    let out = run("audit-verification.md", dir.path(), &endpoint, &operator);
    assert!(out.starts_with("ok: "), "{out}");

    let out = run("tenant-offboarding.md", dir.path(), &endpoint, &operator);
    assert!(
        out.contains("shred_scheduled") && out.contains("shredded"),
        "{out}"
    );

    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_move_into_an_hsm_runs_as_written() {
    let hsm = common::SoftHsm::new("strongbox");
    let dir = tempfile::tempdir().unwrap();
    let (mut server, endpoint) = spawn_binary(&[], dir.path());
    let data = dir.path().join("strongbox-data");
    let operator = std::fs::read_to_string(data.join("operator.key"))
        .unwrap()
        .trim()
        .to_owned();
    let op = Client::connect(&endpoint, Some(&operator)).await.unwrap();
    let p = common::populate(&op).await;

    let mut env: Vec<(&str, String)> = hsm.env();
    env.push(("PKCS11_MODULE", hsm.module.display().to_string()));
    env.push(("PKCS11_TOKEN", hsm.token.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let parts = runnable_parts("root-key-to-hsm.md");
    assert_eq!(parts.len(), 2);
    let out = run_script(
        "root-key-to-hsm.md",
        &parts[0],
        dir.path(),
        &endpoint,
        &operator,
        &env,
    );
    assert!(
        out.contains("root key moved: 5 keys rewrapped from key-file:strongbox-data/root.key to pkcs11:token=strongbox;object=strongbox-root"),
        "{out}"
    );
    assert!(
        out.contains("ok: the root key cannot leave the HSM"),
        "{out}"
    );
    // The runbook stopped the server.
    assert!(
        server.wait().unwrap().code().is_some(),
        "stopped by SIGTERM, gracefully"
    );

    // Step 5, as the runbook's config says.
    let args = hsm.args("strongbox-root");
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let serve = common::Serve::start(&args, dir.path(), &env).unwrap();
    let out = run_script(
        "root-key-to-hsm.md",
        &parts[1],
        dir.path(),
        &serve.endpoint,
        &operator,
        &env,
    );
    assert!(out.starts_with("ok: "), "{out}");
    assert!(out.contains("offline: strongbox key move-root"), "{out}");
    assert!(
        !data.join("root.key").exists(),
        "the key file was destroyed"
    );
    common::check_populated(&serve.operator(&data).await, &p).await;
    serve.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn legal_hold_runbook_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let Acme {
        mut server,
        endpoint,
        op,
        admin,
        ..
    } = acme(dir.path()).await;
    let dpo = new_principal(&admin, "acme", "dpo", &["privacy-officer", "auditor"]).await;
    let app = op
        .as_key(&new_principal(&admin, "acme", "app", &["writer", "reader"]).await)
        .unwrap();
    common::put_ok(&app, "acme", "alice@example.com", "contact", "email", b"v").await;

    let out = run("legal-hold.md", dir.path(), &endpoint, &dpo);
    assert!(out.contains("refused: held"), "{out}");
    assert!(out.contains("released hold-"), "{out}");
    assert!(out.contains("subject.hold"), "{out}");
    assert!(
        common::get_value(&app, "acme", "alice@example.com", "contact", "email")
            .await
            .is_err(),
        "shredded after the release"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_runbook_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let Acme {
        mut server,
        endpoint,
        operator,
        op,
        admin,
        ..
    } = acme(dir.path()).await;
    let app_key = new_principal(
        &admin,
        "acme",
        "app",
        &["writer", "reader", "privacy-officer"],
    )
    .await;
    let app = op.as_key(&app_key).unwrap();
    common::put_ok(&app, "acme", "alice@example.com", "contact", "email", b"a").await;
    common::put_ok(&app, "acme", "bob@example.com", "contact", "email", b"b").await;
    let parts = runnable_parts("backup-and-restore.md");
    assert_eq!(parts.len(), 3);

    let out = run_script(
        "backup-and-restore.md",
        &parts[0],
        dir.path(),
        &endpoint,
        &operator,
        &[],
    );
    assert!(out.contains("backup written to backups/vault-"), "{out}");
    // After the backup, alice asks to be erased.
    common::shred_ok(&app, "acme", "alice@example.com").await;
    server.kill().unwrap();
    server.wait().unwrap();

    let out = run_script(
        "backup-and-restore.md",
        &parts[1],
        dir.path(),
        &endpoint,
        &operator,
        &[],
    );
    assert!(
        out.contains("shred ledger applied") && out.contains("1 subjects erased"),
        "{out}"
    );

    let (mut restored, endpoint) = spawn_binary(
        &["--data-dir".as_ref(), "restored-data".as_ref()],
        dir.path(),
    );
    let out = run_script(
        "backup-and-restore.md",
        &parts[2],
        dir.path(),
        &endpoint,
        &operator,
        &[],
    );
    assert!(
        out.starts_with("ok: ") && out.contains("backup.restore"),
        "{out}"
    );
    let app = Client::connect(&endpoint, Some(&app_key)).await.unwrap();
    assert!(
        common::get_value(&app, "acme", "alice@example.com", "contact", "email")
            .await
            .is_err(),
        "erased after the backup: stays erased"
    );
    assert_eq!(
        common::get_value(&app, "acme", "bob@example.com", "contact", "email")
            .await
            .unwrap(),
        b"b"
    );
    restored.kill().unwrap();
    restored.wait().unwrap();
}
