//! `strongbox restore`, on the real binary and real files: a backup taken
//! before a subject shred, a tenant shred and a retention expiry comes back
//! with none of them readable (by the API, or in the database file with the
//! root key) and everything else intact; it is refused without a ledger,
//! when tampered with, from another vault, or over an existing database;
//! and a restore killed part-way leaves a directory `serve` refuses until
//! the same command finishes it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use strongbox::api::pb;
use strongbox::server;
use tonic::Code;

/// A vault with a backup taken, then erasures made after it.
struct Fixture {
    /// The old vault (stopped).
    old: TestServer,
    backup: PathBuf,
    ledger: PathBuf,
    /// Alice's shred receipt (made after the backup).
    receipt: pb::DeletionReceipt,
    user_key: String,
    canary: String,
}

async fn fixture() -> Fixture {
    let mut s = TestServer::start().await;
    let (admin, user_key) = s.tenant_with_user_key("t").await;
    let user = admin.as_key(&user_key).unwrap();
    let (_, other) = s.tenant_with_user("u").await;
    let canary = format!("CANARY-{}", random_hex(16));
    put_ok(&user, "t", "alice", "c", "k", canary.as_bytes()).await;
    put_ok(&user, "t", "bob", "c", "k", b"bob's").await;
    put_ok(&user, "t", "dave", "c", "k", b"dave's").await;
    put_ok(&other, "u", "erin", "c", "k", b"erin's").await;
    admin
        .retention()
        .set_retention_policy(pb::SetRetentionPolicyRequest {
            tenant: "t".into(),
            category: "session".into(),
            keep_seconds: 3,
            after: "write".into(),
        })
        .await
        .unwrap();
    let session_written = Instant::now();
    put_ok(&user, "t", "dave", "session", "s", b"short-lived").await;

    let backup = s.dir.path().join("vault.sbxbak");
    let out = cli_backup(&s, &backup);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // After the backup: a subject shred, a tenant shred, a new write, and
    // dave's session record past its window.
    let receipt = shred_ok(&user, "t", "alice").await;
    s.operator()
        .await
        .tenants()
        .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
            tenant: "u".into(),
            grace_seconds: Some(0),
        })
        .await
        .unwrap();
    let ledger = s.config.shred_ledger_path();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&ledger)
        .unwrap_or_default()
        .contains(" tenant ")
    {
        assert!(Instant::now() < deadline, "the tenant shred never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    put_ok(&user, "t", "bob", "c", "after-backup", b"later").await;
    let window = Duration::from_secs(3) + Duration::from_millis(300);
    tokio::time::sleep(window.saturating_sub(session_written.elapsed())).await;
    s.stop().await;
    Fixture {
        old: s,
        backup,
        ledger,
        receipt,
        user_key,
        canary,
    }
}

fn count(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_with_the_ledger_keeps_every_erasure_and_everything_else() {
    let f = fixture().await;
    let dir = dir_with_keys(&f.old.data_dir());
    let data = dir.path().join("data");
    let (ok, out, err) = cli_restore(
        &data,
        &[
            "--from".as_ref(),
            f.backup.as_os_str(),
            "--ledger".as_ref(),
            f.ledger.as_os_str(),
        ],
    );
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["ledger_applied"], true, "{report}");
    assert_eq!(report["subjects_erased"], 1, "{report}");
    assert_eq!(report["tenants_shredded"], 1, "{report}");
    assert!(report["records_expired"].as_u64().unwrap() >= 1, "{report}");
    assert!(!data.join(server::restore::RESTORE_MARKER).exists());

    // In the file, with the root key at hand: alice's keys and tenant u's
    // are gone, and so are the rows they sealed.
    let db = data.join(strongbox::store::DB_FILE);
    let ids = f
        .receipt
        .destroyed_key_ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM data_keys WHERE id IN ({ids}) AND wrapped IS NOT NULL")
        ),
        0
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM records WHERE dek_id IN ({ids})")
        ),
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM tenant_keks WHERE tenant_id = 'u'"
        ),
        0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM records WHERE tenant_id = 'u'"),
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM data_keys WHERE tenant_id = 'u' AND wrapped IS NOT NULL"
        ),
        0
    );
    for (path, bytes) in data_dir_bytes(&data) {
        assert!(!contains(&bytes, f.canary.as_bytes()), "{}", path.display());
    }

    // Served: the erased stay erased, the rest reads back.
    let config = config_for(&dir);
    let s = TestServer::start_with(dir, config).await;
    let op = s.operator().await;
    let user = op.as_key(&f.user_key).unwrap();
    assert_status(
        get_value(&user, "t", "alice", "c", "k").await,
        Code::NotFound,
        "",
    );
    assert_status(
        get_value(&user, "t", "dave", "session", "s").await,
        Code::NotFound,
        "",
    );
    assert_eq!(
        get_value(&user, "t", "bob", "c", "k").await.unwrap(),
        b"bob's"
    );
    assert_eq!(
        get_value(&user, "t", "dave", "c", "k").await.unwrap(),
        b"dave's"
    );
    // Written after the backup: not in it.
    assert_status(
        get_value(&user, "t", "bob", "c", "after-backup").await,
        Code::NotFound,
        "",
    );
    let u = op
        .tenants()
        .get_tenant(pb::GetTenantRequest { tenant: "u".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.state, pb::TenantState::Shredded as i32);
    assert!(
        receipt_valid(&user, &f.receipt).await,
        "the live vault's receipt verifies"
    );
    let audit = verify_audit(&op).await;
    assert!(audit.ok, "{}", audit.problem);
    let trail = audit_trail(&op, "").await;
    assert!(
        trail
            .iter()
            .any(|(action, _, _)| action == "backup.restore"),
        "{trail:?}"
    );
    // A retried shred of the restored-erased subject is not an error.
    let again = user
        .subjects()
        .shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: "alice".into(),
        })
        .await;
    assert!(
        again.is_ok() || again.as_ref().unwrap_err().code() == Code::NotFound,
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_without_a_ledger_tampered_foreign_or_over_a_database() {
    let f = fixture().await;

    // No ledger and no --without-ledger: refused before anything is written.
    let dir = dir_with_keys(&f.old.data_dir());
    let data = dir.path().join("data");
    let (ok, _, err) = cli_restore(&data, &["--from".as_ref(), f.backup.as_os_str()]);
    assert!(!ok);
    assert!(err.contains("--ledger"), "{err}");
    assert!(!data.join(strongbox::store::DB_FILE).exists());

    // A flipped byte in the middle of the file.
    let mut bytes = std::fs::read(&f.backup).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let tampered = dir.path().join("tampered.sbxbak");
    std::fs::write(&tampered, &bytes).unwrap();
    let (ok, _, err) = cli_restore(
        &data,
        &[
            "--from".as_ref(),
            tampered.as_os_str(),
            "--ledger".as_ref(),
            f.ledger.as_os_str(),
        ],
    );
    assert!(!ok);
    assert!(err.contains("tampered"), "{err}");
    assert!(!data.join(strongbox::store::DB_FILE).exists());
    assert!(!data.join(server::restore::RESTORE_MARKER).exists());

    // Another vault's root key.
    let foreign = tempfile::tempdir().unwrap();
    let fdata = foreign.path().join("data");
    std::fs::create_dir_all(&fdata).unwrap();
    std::fs::write(
        fdata.join("root.key"),
        format!("{}{}\n", random_hex(32), random_hex(32)),
    )
    .unwrap();
    let mut perms = std::fs::metadata(fdata.join("root.key"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(fdata.join("root.key"), perms).unwrap();
    let (ok, _, err) = cli_restore(
        &fdata,
        &[
            "--from".as_ref(),
            f.backup.as_os_str(),
            "--ledger".as_ref(),
            f.ledger.as_os_str(),
        ],
    );
    assert!(!ok);
    assert!(err.contains("does not open this backup"), "{err}");
    assert!(!fdata.join(strongbox::store::DB_FILE).exists());

    // Over the old vault's own database.
    let (ok, _, err) = cli_restore(
        &f.old.data_dir(),
        &[
            "--from".as_ref(),
            f.backup.as_os_str(),
            "--ledger".as_ref(),
            f.ledger.as_os_str(),
        ],
    );
    assert!(!ok);
    assert!(err.contains("already holds a vault"), "{err}");

    // --without-ledger restores, says what it risks, and shows why the
    // ledger matters: alice is back.
    let (ok, _, err) = cli_restore(
        &data,
        &[
            "--from".as_ref(),
            f.backup.as_os_str(),
            "--without-ledger".as_ref(),
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("may be readable again"), "{err}");
    let config = config_for(&dir);
    let s = TestServer::start_with(dir, config).await;
    let user = s.operator().await.as_key(&f.user_key).unwrap();
    assert_eq!(
        get_value(&user, "t", "alice", "c", "k").await.unwrap(),
        f.canary.as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_killed_part_way_is_refused_by_serve_and_finished_by_a_rerun() {
    let f = fixture().await;
    let args = |data: &Path| {
        vec![
            "restore".into(),
            "--data-dir".into(),
            data.as_os_str().to_owned(),
            "--from".into(),
            f.backup.as_os_str().to_owned(),
            "--ledger".into(),
            f.ledger.as_os_str().to_owned(),
        ]
    };
    // A crash right after the database was copied in (marker and an
    // unapplied database in place); a crash after the restore anchored its
    // audit chain but before the marker went (the anchor then records
    // entries of a database the rerun replaces: on the previous code the
    // rerun refused it as audit tampering); then SIGKILLs at several
    // moments.
    let mut cases: Vec<Option<u64>> = vec![None, Some(u64::MAX)];
    cases.extend([0, 15, 40, 90].map(Some));
    for kill_after in cases {
        let dir = dir_with_keys(&f.old.data_dir());
        let data = dir.path().join("data");
        match kill_after {
            None => {
                std::fs::write(data.join(server::restore::RESTORE_MARKER), "restoring\n").unwrap();
                std::fs::copy(&f.backup, data.join(strongbox::store::DB_FILE)).unwrap();
            }
            Some(u64::MAX) => {
                let (ok, _, err) = run_cli(
                    &args(&data)
                        .iter()
                        .map(|a| a.as_os_str())
                        .collect::<Vec<_>>(),
                    dir.path(),
                    &[],
                );
                assert!(ok, "{err}");
                std::fs::write(data.join(server::restore::RESTORE_MARKER), "restoring\n").unwrap();
            }
            Some(ms) => {
                let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
                    .args(args(&data))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_millis(ms));
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let marker = data.join(server::restore::RESTORE_MARKER).exists();
        if marker {
            let refused = server::start(config_for(&dir)).await.err().unwrap();
            assert!(
                refused.to_string().contains("in the middle of a restore"),
                "{refused}"
            );
        }
        // Killed before the marker was written: nothing to refuse, and the
        // same command does the whole restore.
        if marker || !data.join(strongbox::store::DB_FILE).exists() {
            let (ok, _, err) = run_cli(
                &args(&data)
                    .iter()
                    .map(|a| a.as_os_str())
                    .collect::<Vec<_>>(),
                dir.path(),
                &[],
            );
            assert!(ok, "kill after {kill_after:?}: {err}");
        }
        let config = config_for(&dir);
        let s = TestServer::start_with(dir, config).await;
        let user = s.operator().await.as_key(&f.user_key).unwrap();
        assert_status(
            get_value(&user, "t", "alice", "c", "k").await,
            Code::NotFound,
            "",
        );
        assert_eq!(
            get_value(&user, "t", "bob", "c", "k").await.unwrap(),
            b"bob's"
        );
        let audit = verify_audit(&s.operator().await).await;
        assert!(audit.ok, "kill after {kill_after:?}: {}", audit.problem);
    }
}
