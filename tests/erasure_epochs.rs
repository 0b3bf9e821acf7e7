//! Erasure epochs, with `erasure_epoch` and `erasure_window` in seconds: a
//! backup stolen together with the root key and the erasure keys file opens
//! within the window (and a restore with the ledger still keeps the erased
//! erased), and opens nothing after it, even with no ledger applied; data
//! written many epochs ago still reads; a roll killed at any step leaves a
//! vault that serves.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::attacker::*;
use common::*;
use strongbox::config::ServerConfig;
use tonic::Code;

const EPOCH: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(3);

fn epoch_config(dir: &tempfile::TempDir) -> ServerConfig {
    ServerConfig {
        erasure_epoch: EPOCH,
        erasure_window: WINDOW,
        ..config_for(dir)
    }
}

/// The epochs the tenant keys in database `db` are wrapped under.
fn kek_epochs(db: &Path) -> Vec<i64> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut stmt = c
        .prepare(
            "SELECT DISTINCT epoch FROM tenant_keks WHERE retired_at IS NULL AND epoch IS NOT NULL",
        )
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// How many of tenant `t`'s records in database `db` an attacker with the
/// root key and `erasure_keys` decrypts.
fn decryptable(db: &Path, root_key: &Path, erasure_keys: &Path) -> usize {
    let db = common::stored::Stored::Sqlite(db.to_path_buf());
    let keys = recover_data_keys(&db, root_key, erasure_keys, "t");
    steal_records(&db, "t")
        .iter()
        .filter(|r| try_decrypt("t", r, &keys).is_some())
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stolen_backup_opens_within_the_window_and_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = epoch_config(&dir);
    let s = TestServer::start_with(dir, config).await;
    let (admin, user_key) = s.tenant_with_user_key("t").await;
    let user = admin.as_key(&user_key).unwrap();
    put_ok(&user, "t", "alice", "c", "k", b"alice's").await;
    put_ok(&user, "t", "bob", "c", "k", b"bob's").await;

    let backup = s.dir.path().join("vault.sbxbak");
    let out = cli_backup(&s, &backup);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let taken = Instant::now();
    let receipt = shred_ok(&user, "t", "alice").await;
    assert!(
        receipt
            .erasure
            .contains("every copy of the database after at most 3s (erasure_window)"),
        "{}",
        receipt.erasure
    );

    // The thief's copy of the backup's database.
    let loot = tempfile::tempdir().unwrap();
    let db = loot.path().join("stolen.db");
    strongbox::vault::backup::unpack(&backup, &db).unwrap();
    let backup_epochs = kek_epochs(&db);
    assert_eq!(backup_epochs.len(), 1, "{backup_epochs:?}");
    let data = s.data_dir();
    let (root_key, erasure_keys) = (data.join("root.key"), data.join("erasure.keys"));

    // Within the window the backup opens, alice included...
    assert_eq!(decryptable(&db, &root_key, &erasure_keys), 2);
    // ...but a restore with the ledger keeps her erased.
    let within = dir_with_keys(&data);
    let (ok, _, err) = cli_restore(
        &within.path().join("data"),
        &[
            "--from".as_ref(),
            backup.as_os_str(),
            "--ledger".as_ref(),
            s.config.shred_ledger_path().as_os_str(),
        ],
    );
    assert!(ok, "{err}");
    {
        let config = epoch_config(&within);
        let restored = TestServer::start_with(within, config).await;
        let u = restored.operator().await.as_key(&user_key).unwrap();
        assert_status(
            get_value(&u, "t", "alice", "c", "k").await,
            Code::NotFound,
            "",
        );
        assert_eq!(get_value(&u, "t", "bob", "c", "k").await.unwrap(), b"bob's");
    }

    // Past the window: the epoch the backup's keys are under is destroyed,
    // and the ledger says so.
    let destroyed = format!(" - {}", backup_epochs[0]);
    let deadline = taken + EPOCH + WINDOW + Duration::from_secs(10);
    while !std::fs::read_to_string(s.config.shred_ledger_path())
        .unwrap()
        .lines()
        .any(|l| l.contains(" epoch ") && l.contains(&destroyed))
    {
        assert!(
            Instant::now() < deadline,
            "epoch {} never destroyed",
            backup_epochs[0]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Records written before many epochs still read.
    assert!(kek_epochs(&s.db_path())[0] > backup_epochs[0] + 1);
    assert_eq!(
        get_value(&user, "t", "bob", "c", "k").await.unwrap(),
        b"bob's"
    );
    // The thief, with today's erasure keys file and the root key, opens
    // nothing: not alice, not bob, with no ledger in the way.
    assert_eq!(decryptable(&db, &root_key, &erasure_keys), 0);
    let held = std::fs::read_to_string(&erasure_keys)
        .unwrap()
        .lines()
        .count();
    assert!(
        held <= 6,
        "{held} epoch keys kept for a 3s window of 1s epochs"
    );
    // And restore says why.
    let after = dir_with_keys(&data);
    std::fs::write(
        after.path().join("strongbox.toml"),
        "erasure_epoch = \"1s\"\nerasure_window = \"3s\"\n",
    )
    .unwrap();
    let (ok, _, err) = cli_restore(
        &after.path().join("data"),
        &[
            "--config".as_ref(),
            "strongbox.toml".as_ref(),
            "--from".as_ref(),
            backup.as_os_str(),
            "--without-ledger".as_ref(),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("longer ago than erasure_window (3s)")
            && err.contains("Restore a newer backup"),
        "{err}"
    );
    assert!(
        !after
            .path()
            .join("data")
            .join(strongbox::store::DB_FILE)
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_a_restore_without_the_erasure_keys_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = epoch_config(&dir);
    let s = TestServer::start_with(dir, config).await;
    let (_, user) = s.tenant_with_user("t").await;
    put_ok(&user, "t", "bob", "c", "k", b"bob's").await;
    let backup = s.dir.path().join("vault.sbxbak");
    assert!(cli_backup(&s, &backup).status.success());
    let target = dir_with_keys(&s.data_dir());
    let data = target.path().join("data");
    std::fs::remove_file(data.join("erasure.keys")).unwrap();
    let (ok, _, err) = cli_restore(
        &data,
        &[
            "--from".as_ref(),
            backup.as_os_str(),
            "--without-ledger".as_ref(),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("erasure_keys") && err.contains("holds no epoch keys"),
        "{err}"
    );
}

/// Starts the binary on `dir` (config file `strongbox.toml` there), with
/// a crash point if given.
fn serve(dir: &Path, crash_point: Option<&str>) -> Serve {
    let env: Vec<(&str, &str)> = crash_point
        .map(|p| vec![("STRONGBOX_CRASH_POINT", p)])
        .unwrap_or_default();
    Serve::start(&["--config".as_ref(), "strongbox.toml".as_ref()], dir, &env).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roll_killed_at_any_step_leaves_a_vault_that_serves() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("strongbox.toml"),
        "data_dir = \"data\"\nerasure_epoch = \"1s\"\nerasure_window = \"1s\"\nhousekeeping_interval = \"100ms\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let serve1 = serve(dir.path(), None);
    let op = serve1.operator(&data).await;
    let p = populate(&op).await;
    serve1.kill();
    for point in ["epoch-key-made", "epoch-rewrapped", "epoch-ledgered"] {
        let mut crashing = serve(dir.path(), Some(point));
        let reached = tokio::task::block_in_place(|| {
            crashing.wait_for(
                &format!("crash point reached: {point}"),
                Duration::from_secs(20),
            )
        });
        assert!(reached, "never reached {point}");
        crashing.kill();
        let after = serve(dir.path(), None);
        check_populated(&after.operator(&data).await, &p).await;
        // Every live tenant key is under an epoch whose key is in the file.
        let held: Vec<i64> = std::fs::read_to_string(data.join("erasure.keys"))
            .unwrap()
            .lines()
            .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        for e in kek_epochs(&data.join(strongbox::store::DB_FILE)) {
            assert!(
                held.contains(&e),
                "after {point}: epoch {e} not in {held:?}"
            );
        }
        after.kill();
    }
}
