//! Record rollback detection. A row put back to an older (version,
//! ciphertext) pair of its own record, or un-deleted, still opens: the
//! read answers the old state with OK. `audit verify --records` compares
//! every stored record with the last write of it in the (MAC'd, anchored)
//! audit chain and reports both.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use strongbox::api::pb;
use strongbox::client::Client;

/// The stored (version, ciphertext, dek_id, size) of the record `key`.
type Row = (i64, Vec<u8>, String, i64);

fn row_of(s: &TestServer, key: &str) -> Row {
    let r = s
        .stored()
        .rows(
            "SELECT version, ciphertext, dek_id, size FROM records WHERE key = $1",
            &[key],
        )
        .pop()
        .unwrap();
    (r[0].int(), r[1].bytes(), r[2].text(), r[3].int())
}

/// Writes `row` back over record `key`, live (as an attacker with write
/// access to the database but not the keys can).
fn put_back(s: &TestServer, key: &str, row: &Row) {
    let stored = s.stored();
    let (version, ciphertext, size) = (row.0, stored.blob(&row.1), row.3);
    let n = stored.execute(
        &format!(
            "UPDATE records SET version = {version}, ciphertext = {ciphertext}, dek_id = $2,
             size = {size}, deleted_at = NULL WHERE key = $1"
        ),
        &[key, &row.2],
    );
    assert_eq!(n, 1);
}

async fn verify_records(c: &Client) -> pb::VerifyAuditResponse {
    c.audit()
        .verify_audit(pb::VerifyAuditRequest { records: true })
        .await
        .unwrap()
        .into_inner()
}

/// `strongbox audit verify --records` against the server: (exit ok, stdout).
fn cli_verify(s: &TestServer) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .args(["--endpoint", &s.endpoint, "--api-key", &s.operator_key])
        .args(["audit", "verify", "--records"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_a_record_rolled_back_to_an_older_version() {
    let mut s = TestServer::start().await;
    let (_, key) = s.tenant_with_user_key("t").await;
    let user = s.client(&key).await;
    put_ok(&user, "t", "alice", "billing", "iban", b"DE00 old").await;
    let old = row_of(&s, "iban");
    put_ok(&user, "t", "alice", "billing", "iban", b"DE99 new").await;
    let op = s.operator().await;
    let clean = verify_records(&op).await;
    assert!(clean.ok, "{:?}", clean.record_problems);
    assert_eq!(clean.records_checked, 1);

    s.stop().await;
    put_back(&s, "iban", &old);
    s.restart().await;
    let user = s.client(&key).await;
    // Not detectable at read time: the old pair authenticates as version 1.
    assert_eq!(
        get_value(&user, "t", "alice", "billing", "iban")
            .await
            .unwrap(),
        b"DE00 old"
    );
    let op = s.operator().await;
    let plain = op
        .audit()
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(plain.ok, "the chain itself is intact");
    let r = verify_records(&op).await;
    assert!(!r.ok);
    assert_eq!(r.record_problem_count, 1, "{:?}", r.record_problems);
    assert!(
        r.record_problems[0].starts_with("rollback: tenant 't' record:")
            && r.record_problems[0].contains("/billing/iban is at version 1")
            && r.record_problems[0].ends_with("made version 2"),
        "{}",
        r.record_problems[0]
    );
    let (ok, out) = cli_verify(&s);
    assert!(!ok, "the CLI exits non-zero");
    assert!(out.contains("BAD record: rollback"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_a_deleted_record_brought_back() {
    let mut s = TestServer::start().await;
    let (_, key) = s.tenant_with_user_key("t").await;
    let user = s.client(&key).await;
    put_ok(&user, "t", "bob", "contact", "phone", b"+44 1").await;
    let live = row_of(&s, "phone");
    user.records()
        .delete_record(pb::DeleteRecordRequest {
            tenant: "t".into(),
            subject: "bob".into(),
            category: "contact".into(),
            key: "phone".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    s.stop().await;
    put_back(&s, "phone", &live);
    s.restart().await;
    let user = s.client(&key).await;
    assert_eq!(
        get_value(&user, "t", "bob", "contact", "phone")
            .await
            .unwrap(),
        b"+44 1",
        "the undeleted row reads"
    );
    let r = verify_records(&s.operator().await).await;
    assert!(!r.ok);
    assert!(
        r.record_problems[0].starts_with("resurrection: ")
            && r.record_problems[0].contains("was deleted at version 1"),
        "{:?}",
        r.record_problems
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_used_normally_verifies_with_its_records() {
    let s = TestServer::start().await;
    let (admin, user) = s.tenant_with_user("t").await;
    for i in 0..5 {
        put_ok(&user, "t", "carol", "c", &format!("k{i}"), b"v1").await;
        put_ok(&user, "t", "carol", "c", &format!("k{i}"), b"v2").await;
    }
    put_ok(&user, "t", "", "settings", "theme", b"dark").await;
    user.records()
        .delete_record(pb::DeleteRecordRequest {
            tenant: "t".into(),
            subject: "carol".into(),
            category: "c".into(),
            key: "k0".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    // A shredded and reinstated subject starts a new history.
    put_ok(&user, "t", "dave", "c", "k", b"before").await;
    put_ok(&user, "t", "dave", "c", "k", b"before 2").await;
    user.subjects()
        .shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: "dave".into(),
        })
        .await
        .unwrap();
    let mut again = put("t", "dave", "c", "k", b"after");
    again.reinstate_erased_subject = true;
    user.records().put_record(again).await.unwrap();
    // Re-encryption moves records to new keys without new versions.
    admin
        .keys()
        .reencrypt_data_keys(pb::ReencryptDataKeysRequest {
            tenant: "t".into(),
            subject: "carol".into(),
        })
        .await
        .unwrap();
    // Another tenant, for the auditor's view.
    let (_, other) = s.tenant_with_user("u").await;
    put_ok(&other, "u", "erin", "c", "k", b"x").await;

    let r = verify_records(&s.operator().await).await;
    assert!(r.ok, "{:?}", r.record_problems);
    assert_eq!(r.records_unaudited, 0);
    // carol's 5 (one deleted), the tenant record, dave's new one (his old
    // row is under a destroyed key until purged), erin's.
    assert_eq!(r.records_checked, 8);
    // A tenant auditor checks its own tenant's records only.
    let mine = verify_records(&user).await;
    assert!(mine.ok, "{:?}", mine.record_problems);
    assert_eq!(mine.records_checked, 7);
}
