//! Tenant key rotation: a new KEK version is used at once, the rewrap job
//! moves every data key over without touching record ciphertext, survives a
//! restart, and retires the old version by destroying its bytes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

use common::stored::Stored;
use strongbox::api::pb;
use strongbox::client::Client;
use tonic::Code;

/// Waits until no data key is left under an old version and it is retired.
async fn until_retired(admin: &Client, tenant: &str, version: u32) -> pb::TenantKeyStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = key_status(admin, tenant).await;
        let v = st.versions.iter().find(|v| v.version == version).unwrap();
        if st.data_keys_to_rewrap == 0 && v.state == "retired" {
            return st;
        }
        assert!(Instant::now() < deadline, "rewrap did not finish: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bytes of the SQLite vault's files (the WAL among them); none on
/// PostgreSQL, whose files are the database server's.
fn db_bytes(s: &TestServer) -> Vec<Vec<u8>> {
    if s.stored().file().is_none() {
        return Vec::new();
    }
    data_dir_bytes(&s.data_dir())
        .into_iter()
        .map(|(_, b)| b)
        .collect()
}

/// Every live record's data key id and ciphertext, by (owner, category,
/// key).
type Sealed = std::collections::BTreeMap<(Vec<u8>, String, String), (String, Vec<u8>)>;

fn sealed_records(stored: &Stored) -> Sealed {
    stored
        .rows(
            "SELECT owner, category, key, dek_id, ciphertext FROM records WHERE deleted_at IS NULL",
            &[],
        )
        .into_iter()
        .map(|r| {
            (
                (r[0].bytes(), r[1].text(), r[2].text()),
                (r[3].text(), r[4].bytes()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_rewrap_retire() {
    let s = TestServer::start().await;
    let (admin, u) = s.tenant_with_user("t").await;
    for i in 0..50 {
        put_ok(
            &u,
            "t",
            &format!("s{i}"),
            "c",
            "k",
            format!("v{i}").as_bytes(),
        )
        .await;
    }
    put_ok(&u, "t", "", "infra", "cfg", b"tenant-level").await;
    let stored = s.stored();
    let v1 = stored
        .one(
            "SELECT wrapped FROM tenant_keks WHERE tenant_id = 't' AND version = 1",
            &[],
        )
        .bytes();
    let sealed = sealed_records(&stored);
    let before = key_status(&admin, "t").await;
    assert_eq!(before.current_version, 1);
    assert_eq!(
        before.versions[0].encryptions, 51,
        "one wrap per data key (50 subjects + tenant)"
    );

    let after = admin
        .keys()
        .rotate_tenant_key(pb::RotateTenantKeyRequest { tenant: "t".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.current_version, 2);
    // New data keys use v2 at once.
    put_ok(&u, "t", "newcomer", "c", "k", b"fresh").await;
    let (_, (newcomer_dek, _)) = sealed_records(&stored)
        .into_iter()
        .find(|(at, _)| !sealed.contains_key(at))
        .unwrap();
    let newcomer_version = stored.count(
        "SELECT kek_version FROM data_keys WHERE id = $1",
        &[&newcomer_dek],
    );
    assert_eq!(newcomer_version, 2);

    let st = until_retired(&admin, "t", 1).await;
    let v2 = st.versions.iter().find(|v| v.version == 2).unwrap();
    assert_eq!(v2.state, "active");
    assert_eq!(v2.data_keys, 52);
    assert!(v2.encryptions >= 52);
    // Every record reads back; no record ciphertext was touched.
    for i in 0..50 {
        assert_eq!(
            get_value(&u, "t", &format!("s{i}"), "c", "k")
                .await
                .unwrap(),
            format!("v{i}").into_bytes()
        );
    }
    assert_eq!(
        get_value(&u, "t", "", "infra", "cfg").await.unwrap(),
        b"tenant-level"
    );
    let now = sealed_records(&stored);
    assert!(
        sealed.iter().all(|(at, was)| now.get(at) == Some(was)),
        "rotation rewraps keys, never record ciphertext"
    );
    // The retired version's bytes are gone from every row, and on SQLite
    // from every file.
    let keks = stored.column("SELECT wrapped FROM tenant_keks", &[]);
    assert!(keks.iter().all(|k| k.bytes() != v1), "retired KEK v1 kept");
    for bytes in db_bytes(&s) {
        assert!(!contains(&bytes, &v1), "retired KEK v1 still on disk");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrap_resumes_after_a_restart() {
    let mut s = TestServer::start().await;
    let (admin, key) = s.tenant_with_user_key("t").await;
    let admin_key = {
        // The admin's client is bound to the old endpoint; keep its key.
        let c = s.client(&s.operator_key.clone()).await;
        new_principal(&admin, "t", "admin2", &["admin"]).await;
        drop(c);
        new_principal(&admin, "t", "admin3", &["admin"]).await
    };
    // Enough data keys that the rewrap, at storage speed on an idle
    // server, is still running when the stop comes.
    const SUBJECTS: usize = 4000;
    let u = s.client(&key).await;
    let mut writers = Vec::new();
    for w in 0..8 {
        let u = u.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..SUBJECTS).step_by(8) {
                put_ok(&u, "t", &format!("s{i}"), "c", "k", b"v").await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    admin
        .keys()
        .rotate_tenant_key(pb::RotateTenantKeyRequest { tenant: "t".into() })
        .await
        .unwrap();
    // Stop at once: the job has at most begun. The test means something
    // only if the restart cuts the job short, so that is checked.
    s.stop().await;
    let left = s.stored().count(
        "SELECT count(*) FROM data_keys WHERE tenant_id = 't' AND kek_version = 1 AND wrapped IS NOT NULL",
        &[],
    );
    assert!(left > 0, "the rewrap finished before the restart");
    s.restart().await;
    let admin = s.client(&admin_key).await;
    until_retired(&admin, "t", 1).await;
    let u = s.client(&key).await;
    for i in (0..SUBJECTS).step_by(97) {
        assert_eq!(
            get_value(&u, "t", &format!("s{i}"), "c", "k")
                .await
                .unwrap(),
            b"v"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_under_load_loses_nothing() {
    let s = TestServer::start().await;
    let (admin, u) = s.tenant_with_user("t").await;
    for i in 0..300 {
        put_ok(
            &u,
            "t",
            &format!("s{}", i % 100),
            "c",
            &format!("pre{i}"),
            b"pre",
        )
        .await;
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let u = u.clone();
        workers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..60 {
                let subject = format!("s{}", (w * 13 + i) % 100);
                let key = format!("w{w}-{i}");
                put_ok(&u, "t", &subject, "c", &key, key.as_bytes()).await;
                acked.push((subject.clone(), key));
                // Reads during the job never fail.
                get_value(
                    &u,
                    "t",
                    &subject,
                    "c",
                    &format!("pre{}", (w * 13 + i) % 100),
                )
                .await
                .unwrap();
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    admin
        .keys()
        .rotate_tenant_key(pb::RotateTenantKeyRequest { tenant: "t".into() })
        .await
        .unwrap();
    let mut acked = Vec::new();
    for w in workers {
        acked.extend(w.await.unwrap());
    }
    until_retired(&admin, "t", 1).await;
    for (subject, key) in acked {
        assert_eq!(
            get_value(&u, "t", &subject, "c", &key).await.unwrap(),
            key.as_bytes()
        );
    }
}

async fn set_policy(
    admin: &Client,
    max_age: Option<u64>,
    max_enc: Option<u64>,
) -> Result<pb::TenantKeyStatus, tonic::Status> {
    admin
        .keys()
        .set_rotation_policy(pb::SetRotationPolicyRequest {
            tenant: "t".into(),
            max_age_seconds: max_age,
            max_encryptions: max_enc,
            min_decryption_version: None,
        })
        .await
        .map(|r| r.into_inner())
}

async fn until_version(admin: &Client, version: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while key_status(admin, "t").await.current_version < version {
        assert!(
            Instant::now() < deadline,
            "no automatic rotation to v{version}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_rotates_by_age_and_by_count() {
    let s = TestServer::start().await;
    let (admin, u) = s.tenant_with_user("t").await;
    let st = key_status(&admin, "t").await;
    assert!(st.rotation_policy_is_default);
    assert_eq!(st.rotation_max_age_seconds, 90 * 86400);
    let created = st.versions[0].created_at_unix_ms;
    assert_eq!(st.next_rotation_due_unix_ms, created + 90 * 86400 * 1000);

    // By count: the 4th data key wrapped under v1 makes it due.
    let st = set_policy(&admin, None, Some(4)).await.unwrap();
    assert!(!st.rotation_policy_is_default);
    assert_eq!(st.rotation_max_encryptions, 4);
    for i in 0..3 {
        put_ok(&u, "t", &format!("s{i}"), "c", "k", b"v").await;
    }
    until_version(&admin, 2).await;
    // By age: one second.
    set_policy(&admin, Some(1), None).await.unwrap();
    until_version(&admin, 3).await;
    for i in 0..3 {
        assert_eq!(
            get_value(&u, "t", &format!("s{i}"), "c", "k")
                .await
                .unwrap(),
            b"v"
        );
    }
    // The rotations are on record, by the system.
    let auto = s.stored().count(
        "SELECT count(*) FROM audit_log WHERE action = 'key.rotate.auto' AND principal = 'system' AND outcome = 'ok'",
        &[],
    );
    assert!(auto >= 2, "{auto}");
    assert_status(
        set_policy(&admin, Some(0), None).await,
        tonic::Code::InvalidArgument,
        "max_age_seconds",
    );
    assert_status(
        set_policy(&admin, None, Some(0)).await,
        tonic::Code::InvalidArgument,
        "max_encryptions",
    );
}

async fn reencrypt(admin: &Client, subject: &str) -> u64 {
    admin
        .keys()
        .reencrypt_data_keys(pb::ReencryptDataKeysRequest {
            tenant: "t".into(),
            subject: subject.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .jobs_started
}

async fn until_no_reencrypt_jobs(admin: &Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while key_status(admin, "t").await.reencrypt_jobs > 0 {
        assert!(Instant::now() < deadline, "re-encryption did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The data key id each record of the tenant is sealed under, by key.
fn deks_by_record(stored: &Stored) -> std::collections::HashMap<String, String> {
    stored
        .rows(
            "SELECT key, dek_id FROM records WHERE deleted_at IS NULL",
            &[],
        )
        .into_iter()
        .map(|r| (r[0].text(), r[1].text()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn reencrypt_moves_records_to_fresh_keys_and_destroys_the_old() {
    let s = TestServer::start().await;
    let (admin, u) = s.tenant_with_user("t").await;
    for i in 0..150 {
        put_ok(
            &u,
            "t",
            "alice",
            "c",
            &format!("a{i}"),
            format!("alice {i}").as_bytes(),
        )
        .await;
    }
    put_ok(&u, "t", "bob", "c", "b0", b"bob").await;
    put_ok(&u, "t", "", "infra", "cfg", b"tenant").await;
    let c = s.stored();
    let before = deks_by_record(&c);
    let alice_old = before["a0"].clone();
    let alice_wrapped = c
        .one("SELECT wrapped FROM data_keys WHERE id = $1", &[&alice_old])
        .bytes();

    assert_eq!(reencrypt(&admin, "alice").await, 1);
    // Writes go on meanwhile: a new record, and a compare-and-set update of
    // a record that may still be under the old key.
    put_ok(&u, "t", "alice", "c", "during", b"new").await;
    let mut cas = put("t", "alice", "c", "a7", b"updated");
    cas.expected_version = Some(1);
    u.records().put_record(cas).await.unwrap();
    until_no_reencrypt_jobs(&admin).await;

    let after = deks_by_record(&c);
    assert!(
        after
            .iter()
            .filter(|(k, _)| k.starts_with('a'))
            .all(|(_, d)| *d != alice_old),
        "every alice record moved"
    );
    assert_eq!(after["b0"], before["b0"], "bob was not in scope");
    let live = c.one("SELECT wrapped FROM data_keys WHERE id = $1", &[&alice_old]);
    assert!(live.is_null(), "the old data key is destroyed");
    for bytes in db_bytes(&s) {
        assert!(
            !contains(&bytes, &alice_wrapped),
            "the old data key's bytes are still on disk"
        );
    }
    for i in (0..150).step_by(11) {
        let want = if i == 7 {
            "updated".to_string()
        } else {
            format!("alice {i}")
        };
        assert_eq!(
            get_value(&u, "t", "alice", "c", &format!("a{i}"))
                .await
                .unwrap(),
            want.into_bytes()
        );
    }
    assert_eq!(
        get_value(&u, "t", "alice", "c", "a7").await.unwrap(),
        b"updated"
    );
    assert_eq!(
        get_value(&u, "t", "alice", "c", "during").await.unwrap(),
        b"new"
    );
    // The sealed subject id moved too: export still names her.
    let (header, records) = export(&u, "t", "alice").await;
    assert_eq!(header.subject, "alice");
    assert_eq!(records.len(), 151);

    // The whole tenant: alice, bob and the tenant-level key.
    assert_eq!(reencrypt(&admin, "").await, 3);
    until_no_reencrypt_jobs(&admin).await;
    let last = deks_by_record(&c);
    assert_ne!(last["b0"], before["b0"]);
    assert_ne!(last["cfg"], before["cfg"]);
    assert_eq!(get_value(&u, "t", "bob", "c", "b0").await.unwrap(), b"bob");
    assert_eq!(
        get_value(&u, "t", "", "infra", "cfg").await.unwrap(),
        b"tenant"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shred_during_reencrypt_destroys_every_key_of_the_subject() {
    let s = TestServer::start().await;
    let (admin, u) = s.tenant_with_user("t").await;
    for i in 0..300 {
        put_ok(&u, "t", "carol", "c", &format!("k{i}"), b"v").await;
    }
    reencrypt(&admin, "carol").await;
    let receipt = u
        .subjects()
        .shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: "carol".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!receipt.destroyed_key_ids.is_empty());
    assert_eq!(receipt.records_made_unreadable, 300);
    let live = s.stored().count(
        "SELECT count(*) FROM data_keys d JOIN tenants t ON t.id = d.tenant_id
         WHERE length(d.owner) > 0 AND d.wrapped IS NOT NULL",
        &[],
    );
    assert_eq!(live, 0, "a key of the shredded subject survived");
    assert_status(
        get_value(&u, "t", "carol", "c", "k0").await,
        tonic::Code::NotFound,
        "record not found",
    );
    until_no_reencrypt_jobs(&admin).await;
}

async fn set_min_version(admin: &Client, min: u32) -> Result<pb::TenantKeyStatus, tonic::Status> {
    admin
        .keys()
        .set_rotation_policy(pb::SetRotationPolicyRequest {
            tenant: "t".into(),
            min_decryption_version: Some(min),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

fn version(st: &pb::TenantKeyStatus, v: u32) -> &pb::KekVersionStatus {
    st.versions.iter().find(|x| x.version == v).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minimum_decryption_version_refuses_old_keys_until_rewrapped() {
    const N: usize = 3000;
    let s = TestServer::start().await;
    let (admin, u) = s.tenant_with_user("t").await;
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let u = u.clone();
            tokio::spawn(async move {
                for i in (w..N).step_by(16) {
                    let v = format!("v{i}");
                    put_ok(&u, "t", &format!("s{i}"), "c", "k", v.as_bytes()).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let last = format!("s{}", N - 1);

    // A read uses v1 and leaves the data key cached.
    let t0 = strongbox::now_ms();
    assert_eq!(
        get_value(&u, "t", &last, "c", "k").await.unwrap(),
        format!("v{}", N - 1).into_bytes()
    );
    let st = key_status(&admin, "t").await;
    assert!(version(&st, 1).last_used_unix_ms >= t0, "{st:?}");
    assert_eq!(st.min_decryption_version, 0);

    // No minimum beyond the current version.
    assert_status(
        set_min_version(&admin, 2).await,
        Code::InvalidArgument,
        "min_decryption_version: must be at most the current version 1",
    );

    admin
        .keys()
        .rotate_tenant_key(pb::RotateTenantKeyRequest { tenant: "t".into() })
        .await
        .unwrap();
    let st = set_min_version(&admin, 2).await.unwrap();
    assert_eq!(st.min_decryption_version, 2);
    assert!(
        st.data_keys_to_rewrap > 0,
        "the rewrap has not finished: {st:?}"
    );
    // The newest subjects are the last the rewrap reaches: still under v1,
    // refused for reads (the cached key included) and writes.
    assert_status(
        u.records().get_record(get("t", &last, "c", "k")).await,
        Code::FailedPrecondition,
        "below the tenant's minimum decryption version v2",
    );
    assert_status(
        u.records()
            .put_record(put("t", &format!("s{}", N - 2), "c", "k2", b"x"))
            .await,
        Code::FailedPrecondition,
        "minimum decryption version",
    );
    // A new subject's key is under v2.
    put_ok(&u, "t", "newcomer", "c", "k", b"fresh").await;
    assert_eq!(
        get_value(&u, "t", "newcomer", "c", "k").await.unwrap(),
        b"fresh"
    );

    // The rewrap still moves everything, and then all of it reads again.
    let st = until_retired(&admin, "t", 1).await;
    assert_eq!(st.min_decryption_version, 2);
    for i in (0..N).rev().step_by(29) {
        assert_eq!(
            get_value(&u, "t", &format!("s{i}"), "c", "k")
                .await
                .unwrap(),
            format!("v{i}").into_bytes()
        );
    }
    let st = key_status(&admin, "t").await;
    assert!(version(&st, 2).last_used_unix_ms >= version(&st, 1).last_used_unix_ms);
    assert_eq!(
        set_min_version(&admin, 0)
            .await
            .unwrap()
            .min_decryption_version,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn last_use_survives_a_restart() {
    let mut s = TestServer::start().await;
    let admin_key = tenant_with_admin(&s.operator().await, "t").await;
    let key = new_principal(&s.client(&admin_key).await, "t", "rw", &["writer"]).await;
    put_ok(&s.client(&key).await, "t", "a", "c", "k", b"x").await;
    let used = version(&key_status(&s.client(&admin_key).await, "t").await, 1).last_used_unix_ms;
    assert!(used > 0);
    // Housekeeping writes it down on every run and when the server stops.
    s.restart().await;
    let st = key_status(&s.client(&admin_key).await, "t").await;
    assert_eq!(version(&st, 1).last_used_unix_ms, used);
}

#[tokio::test(flavor = "multi_thread")]
async fn reencrypt_skips_a_corrupt_record_and_finishes() {
    let s = TestServer::start().await;
    let (admin, u) = s.tenant_with_user("t").await;
    for i in 0..5 {
        put_ok(&u, "t", "dana", "c", &format!("d{i}"), b"dana").await;
    }
    // One record's ciphertext is damaged before the job reaches it: d3's
    // copied over it, which fails d2's authentication (another key in the
    // AAD).
    let c = s.stored();
    let damaged = c.execute(
        "UPDATE records SET ciphertext = (SELECT ciphertext FROM records WHERE key = 'd3') WHERE key = 'd2'",
        &[],
    );
    assert_eq!(damaged, 1);
    assert_eq!(reencrypt(&admin, "dana").await, 1);
    // The job is not stuck on it: it finishes and destroys the old key.
    until_no_reencrypt_jobs(&admin).await;
    for i in [0, 1, 3, 4] {
        assert_eq!(
            get_value(&u, "t", "dana", "c", &format!("d{i}"))
                .await
                .unwrap(),
            b"dana"
        );
    }
    let skipped: Vec<String> = c
        .column("SELECT resource FROM audit_log WHERE action = 'key.reencrypt.skip-corrupt' AND outcome = 'failed' AND code = 15", &[])
        .iter()
        .map(|r| r.text())
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].ends_with("/c/d2"), "{skipped:?}");
}
