//! Crypto-shredding: from the moment a shred returns, nothing of the
//! subject (or tenant) can be decrypted by the server, its caches, the
//! database file, the WAL, or an attacker holding the raw files and the
//! root key.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::attacker::*;
use common::stored::Stored;
use common::*;
use strongbox::api::pb;
use tonic::Code;

fn copy_dir(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    for (path, bytes) in data_dir_bytes(from) {
        let dest = to.join(path.file_name().unwrap());
        std::fs::write(&dest, bytes).unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// What an attacker takes away: a copy of the data directory (the root
/// key and erasure keys files are there) and the rows: the copied SQLite
/// file, or on PostgreSQL the database itself (a dump of it holds the same
/// live rows; what dead tuples and WAL keep is tests/postgres.rs's).
fn attackers_copy(s: &TestServer) -> (tempfile::TempDir, Stored) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&s.data_dir(), copy.path());
    let db = match s.stored() {
        Stored::Sqlite(_) => Stored::Sqlite(copy.path().join(strongbox::store::DB_FILE)),
        live => live,
    };
    (copy, db)
}

/// Whether `what` occurs in any file of the SQLite vault's data directory
/// (the WAL among them). On PostgreSQL, false: the files are the
/// database server's.
fn in_any_file(s: &TestServer, what: &[u8]) -> Option<std::path::PathBuf> {
    s.stored().file()?;
    data_dir_bytes(&s.data_dir())
        .into_iter()
        .find(|(_, bytes)| contains(bytes, what))
        .map(|(path, _)| path)
}

#[tokio::test(flavor = "multi_thread")]
async fn shredded_subject_cannot_be_recovered_from_raw_files_and_root_key() {
    let mut s = TestServer::start().await;
    let (_, key) = s.tenant_with_user_key("t").await;
    let u = s.client(&key).await;
    for k in ["email", "phone", "address"] {
        put_ok(
            &u,
            "t",
            "alice",
            "contact",
            k,
            format!("alice-{k}").as_bytes(),
        )
        .await;
    }
    put_ok(&u, "t", "bob", "contact", "email", b"bob-email").await;
    // The attacker's copy of every ciphertext, taken before the shred.
    let stored = s.stored();
    let stolen = steal_records(&stored, "t");
    assert_eq!(stolen.len(), 4);
    let alice_dek = stolen
        .iter()
        .find(|r| r.key == "phone")
        .unwrap()
        .dek_id
        .clone();
    let alice_wrapped = stored
        .one("SELECT wrapped FROM data_keys WHERE id = $1", &[&alice_dek])
        .bytes();
    assert!(
        get_value(&u, "t", "alice", "contact", "email")
            .await
            .is_ok()
    );
    assert!(
        s.vault().keyring().caches_dek(&alice_dek),
        "the read cached alice's key"
    );

    let receipt = shred_ok(&u, "t", "alice").await;
    assert_eq!(receipt.destroyed_key_ids, vec![alice_dek.clone()]);
    assert_eq!(receipt.records_made_unreadable, 3);

    // The moment the call returns: not in the cache, not in any row, and
    // on SQLite not in the file or the WAL (the shred checkpoints it
    // before returning).
    assert!(!s.vault().keyring().caches_dek(&alice_dek));
    assert_eq!(
        stored.count(
            "SELECT count(*) FROM data_keys WHERE id = $1 AND wrapped IS NOT NULL",
            &[&alice_dek]
        ),
        0
    );
    assert_eq!(
        in_any_file(&s, &alice_wrapped),
        None,
        "holds the wrapped key"
    );

    // The attacker: the database plus the root key.
    let (copy, db) = attackers_copy(&s);
    let keys = recover_data_keys(
        &db,
        &copy.path().join("root.key"),
        &copy.path().join("erasure.keys"),
        "t",
    );
    assert!(!keys.contains_key(&alice_dek));
    for r in &stolen {
        let plain = try_decrypt("t", r, &keys);
        if r.dek_id == alice_dek {
            assert_eq!(plain, None, "shredded record {} decrypted", r.key);
        } else {
            // Positive control: the same attack works on data not shredded,
            // so the failure above is the shred's doing.
            assert_eq!(plain.as_deref(), Some(&b"bob-email"[..]));
        }
    }

    // The server agrees, also after a restart.
    s.restart().await;
    let u = s.client(&key).await;
    assert_status(
        get_value(&u, "t", "alice", "contact", "email").await,
        Code::NotFound,
        "record not found",
    );
    assert_eq!(
        get_value(&u, "t", "bob", "contact", "email").await.unwrap(),
        b"bob-email"
    );
    let valid = receipt_valid(&u, &receipt).await;
    assert!(valid, "a receipt verifies after restart");
    let mut forged = receipt;
    forged.records_made_unreadable = 30;
    let valid = receipt_valid(&u, &forged).await;
    assert!(!valid, "an altered receipt fails");
}

#[tokio::test(flavor = "multi_thread")]
async fn ciphertext_rows_are_purged_after_shred() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    for i in 0..300 {
        put_ok(
            &u,
            "t",
            "carol",
            "logs",
            &format!("e{i}"),
            format!("carol event {i}").as_bytes(),
        )
        .await;
    }
    let stored = s.stored();
    let stolen = steal_records(&stored, "t");
    shred_ok(&u, "t", "carol").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = stored.count("SELECT count(*) FROM records WHERE tenant_id = 't'", &[]);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} rows still not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // On SQLite the purge checkpoints too: no ciphertext bytes remain in
    // any file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for r in stolen.iter().take(50) {
        assert_eq!(
            in_any_file(&s, &r.ciphertext[..40]),
            None,
            "holds purged ciphertext"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_read_succeeds_after_shred_returns_even_under_concurrent_reads() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    for i in 0..20 {
        put_ok(&u, "t", "dana", "c", &format!("k{i}"), b"dana-data").await;
    }
    let dek = s
        .stored()
        .one("SELECT dek_id FROM records WHERE key = 'k0'", &[])
        .text();
    let returned_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut readers = Vec::new();
    for w in 0..16 {
        let (u, returned_at) = (u.clone(), returned_at.clone());
        readers.push(tokio::spawn(async move {
            let mut late_successes = 0;
            for n in 0..400 {
                let started = Instant::now();
                let r = get_value(&u, "t", "dana", "c", &format!("k{}", (w + n) % 20)).await;
                let shred_done = *returned_at.lock().unwrap();
                match r {
                    Ok(_) if shred_done.is_some_and(|t| started > t) => late_successes += 1,
                    Ok(_) => {}
                    Err(e) => {
                        assert_eq!(e.code(), Code::NotFound, "{}", e.message());
                        if shred_done.is_some() {
                            break;
                        }
                    }
                }
            }
            late_successes
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    shred_ok(&u, "t", "dana").await;
    *returned_at.lock().unwrap() = Some(Instant::now());
    for r in readers {
        assert_eq!(
            r.await.unwrap(),
            0,
            "a read that started after the shred returned succeeded"
        );
    }
    assert!(
        !s.vault().keyring().caches_dek(&dek),
        "a racing read re-cached the destroyed key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn erased_subject_refuses_writes_unless_reinstated() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    put_ok(&u, "t", "erin", "contact", "email", b"old@example.com").await;
    shred_ok(&u, "t", "erin").await;
    assert_status(
        u.records()
            .put_record(put("t", "erin", "contact", "email", b"new"))
            .await,
        Code::FailedPrecondition,
        "reinstate_erased_subject",
    );
    let mut req = put("t", "erin", "contact", "email", b"new@example.com");
    req.reinstate_erased_subject = true;
    u.records().put_record(req).await.unwrap();
    assert_eq!(
        get_value(&u, "t", "erin", "contact", "email")
            .await
            .unwrap(),
        b"new@example.com"
    );
    // Export shows only what was stored after reinstatement.
    let (_, records) = export(&u, "t", "erin").await;
    let values: Vec<_> = records.into_iter().map(|r| r.value).collect();
    assert_eq!(values, vec![b"new@example.com".to_vec()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_shred_grace_suspends_and_cancel_restores() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    put_ok(&u, "t", "frank", "c", "k", b"v").await;
    let op = s.operator().await;
    let before = strongbox::now_ms();
    let t = op
        .tenants()
        .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
            tenant: "t".into(),
            grace_seconds: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.state, pb::TenantState::ShredScheduled as i32);
    let week = 7 * 24 * 3600 * 1000;
    assert!(
        (t.shred_at_unix_ms - before - week).abs() < 60_000,
        "default grace is 7 days"
    );
    assert_status(
        get_value(&u, "t", "frank", "c", "k").await,
        Code::FailedPrecondition,
        "suspended",
    );
    assert_status(
        u.records()
            .put_record(put("t", "frank", "c", "k2", b"v"))
            .await,
        Code::FailedPrecondition,
        "cancel-shred",
    );
    assert_status(
        u.subjects()
            .shred_subject(pb::ShredSubjectRequest {
                tenant: "t".into(),
                subject: "frank".into(),
            })
            .await,
        Code::FailedPrecondition,
        "suspended",
    );
    let t = op
        .tenants()
        .cancel_tenant_shred(pb::CancelTenantShredRequest { tenant: "t".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.state, pb::TenantState::Active as i32);
    assert_eq!(get_value(&u, "t", "frank", "c", "k").await.unwrap(), b"v");
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_shred_destroys_every_key() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    let (_, other) = s.tenant_with_user("keep").await;
    put_ok(&u, "t", "gina", "c", "k", b"gina-data").await;
    put_ok(&u, "t", "", "infra", "cfg", b"tenant-data").await;
    put_ok(&other, "keep", "gina", "c", "k", b"kept").await;
    assert!(get_value(&u, "t", "gina", "c", "k").await.is_ok());
    let stored = s.stored();
    let stolen = steal_records(&stored, "t");
    let kek = stored
        .one("SELECT wrapped FROM tenant_keks WHERE tenant_id = 't'", &[])
        .bytes();
    let tenant = strongbox::ids::TenantId::parse("t").unwrap();
    assert!(s.vault().keyring().cached_keys(&tenant) > 0);

    let t = s
        .operator()
        .await
        .tenants()
        .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
            tenant: "t".into(),
            grace_seconds: Some(0),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.state, pb::TenantState::Shredded as i32);
    assert_eq!(t.kek_version, 0);
    assert_eq!(s.vault().keyring().cached_keys(&tenant), 0);
    assert_eq!(
        stored.count(
            "SELECT count(*) FROM tenant_keks WHERE tenant_id = 't'",
            &[]
        ),
        0
    );
    assert_eq!(in_any_file(&s, &kek), None, "holds the tenant KEK");
    // The tenant's principals are gone with it.
    assert_status(
        get_value(&u, "t", "gina", "c", "k").await,
        Code::Unauthenticated,
        "invalid API key",
    );
    let (copy, db) = attackers_copy(&s);
    let keys = recover_data_keys(
        &db,
        &copy.path().join("root.key"),
        &copy.path().join("erasure.keys"),
        "t",
    );
    assert!(keys.is_empty());
    assert!(stolen.iter().all(|r| try_decrypt("t", r, &keys).is_none()));
    // Other tenants are untouched; the id stays reserved.
    assert_eq!(
        get_value(&other, "keep", "gina", "c", "k").await.unwrap(),
        b"kept"
    );
    assert_status(
        s.operator()
            .await
            .tenants()
            .create_tenant(pb::CreateTenantRequest {
                tenant: "t".into(),
                name: String::new(),
            })
            .await,
        Code::AlreadyExists,
        "already exists",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_tenant_shred_runs_when_grace_ends() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    put_ok(&u, "t", "hal", "c", "k", b"v").await;
    let op = s.operator().await;
    op.tenants()
        .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
            tenant: "t".into(),
            grace_seconds: Some(1),
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = op
            .tenants()
            .get_tenant(pb::GetTenantRequest { tenant: "t".into() })
            .await
            .unwrap()
            .into_inner();
        if t.state == pb::TenantState::Shredded as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the housekeeper did not run the due shred"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = s.stored().count(
        "SELECT count(*) FROM tenant_keks WHERE tenant_id = 't'",
        &[],
    );
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stored_row_wins_over_a_cached_data_key() {
    // The database row is the truth; the key cache only saves an unwrap. A
    // key the row says is destroyed is not served from the cache, however
    // it came to be destroyed (here: by another writer of the file, as
    // another server of a scaled-out vault would).
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    put_ok(&u, "t", "alice", "contact", "email", b"cached").await;
    assert_eq!(
        get_value(&u, "t", "alice", "contact", "email")
            .await
            .unwrap(),
        b"cached"
    );
    let changed = s.stored().execute(
        "UPDATE data_keys SET wrapped = NULL, destroyed_at = 1
         WHERE id = (SELECT dek_id FROM records WHERE tenant_id = 't' AND key = 'email')",
        &[],
    );
    assert_eq!(changed, 1);
    let r = get_value(&u, "t", "alice", "contact", "email").await;
    assert!(r.is_err(), "a destroyed key was served from the cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_tenant_shred_answers_with_the_schedule_already_made() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    put_ok(&u, "t", "ida", "c", "k", b"v").await;
    let op = s.operator().await;
    let schedule = |grace: u64| {
        let op = op.clone();
        async move {
            op.tenants()
                .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
                    tenant: "t".into(),
                    grace_seconds: Some(grace),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let first = schedule(3600).await;
    // A retry, even one asking for no grace, neither moves the schedule
    // nor runs the shred early.
    let again = schedule(0).await;
    assert_eq!(again.state, pb::TenantState::ShredScheduled as i32);
    assert_eq!(again.shred_at_unix_ms, first.shred_at_unix_ms);
    let trail = audit_trail(&op, "t").await;
    assert!(
        trail.iter().any(|(a, o, r)| a == "tenant.shred"
            && o == "ok"
            && r.contains("repeat-of:shred_scheduled")),
        "{trail:?}"
    );
    // Cancelled, then shredded at once; a retry after that answers shredded.
    op.tenants()
        .cancel_tenant_shred(pb::CancelTenantShredRequest { tenant: "t".into() })
        .await
        .unwrap();
    assert_eq!(schedule(0).await.state, pb::TenantState::Shredded as i32);
    assert_eq!(schedule(0).await.state, pb::TenantState::Shredded as i32);
}
