//! The audit trail: one durable entry per call, fail closed, and every way
//! of tampering with the stored chain detected by `audit verify`.
#![allow(clippy::unwrap_used)]

mod common;

use common::rpcs::{RPC_ORDER, call, request_id, rpcs_from_descriptors, setup};
use common::stored::Stored;
use common::*;
use rusqlite::params;
use strongbox::api::pb;
use strongbox::audit::{self, Call, Outcome};
use strongbox::client::Client;
use strongbox::crypto::{self, SecretKey};
use tonic::Code;

fn db(s: &TestServer) -> Stored {
    s.stored()
}

fn entries_with_request_id(s: &TestServer, id: &str) -> Vec<(String, String, String, i32)> {
    db(s)
        .rows(
            "SELECT action, outcome, resource, code FROM audit_log WHERE request_id = $1",
            &[id],
        )
        .into_iter()
        .map(|r| (r[0].text(), r[1].text(), r[2].text(), r[3].int() as i32))
        .collect()
}

async fn list(
    c: &Client,
    req: pb::ListAuditEntriesRequest,
) -> Result<Vec<pb::AuditEntry>, tonic::Status> {
    let mut s = c.audit().list_audit_entries(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(e) = s.message().await? {
        out.push(e);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_writes_exactly_one_entry() {
    let described = rpcs_from_descriptors();
    let s = TestServer::start().await;
    // Each role calls every RPC: allowed and denied calls alike.
    for role in ["operator", "writer", "auditor"] {
        let (client, ctx) = setup(&s, role).await;
        for rpc in RPC_ORDER {
            let id = match call(rpc, &client, &ctx, role).await {
                Ok(id) => id,
                Err(status) => request_id::<()>(&Err(status)),
            };
            assert_eq!(id.len(), 16, "{role} × {rpc}: x-request-id returned");
            let entries = entries_with_request_id(&s, &id);
            assert_eq!(entries.len(), 1, "{role} × {rpc}: {entries:?}");
        }
    }
    assert_eq!(described.len(), RPC_ORDER.len());

    // Unauthenticated and malformed calls are recorded too.
    let anon = s.anonymous().await;
    let r = anon
        .tenants()
        .list_tenants(pb::ListTenantsRequest::default())
        .await;
    let id = request_id(&r);
    let e = entries_with_request_id(&s, &id);
    assert_eq!(
        e,
        vec![(
            "tenant.list".into(),
            "denied".into(),
            String::new(),
            Code::Unauthenticated as i32
        )]
    );
    let op = s.operator().await;
    let r = op
        .records()
        .get_record(get("BAD TENANT", "", "c", "k"))
        .await;
    let e = entries_with_request_id(&s, &request_id(&r));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].1, "failed");
    assert_eq!(e[0].3, Code::InvalidArgument as i32);
    assert!(verify_audit(&op).await.ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_carry_who_what_why_and_never_values_or_subject_ids() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    let canary = format!("CANARY-{}", random_hex(20));
    let subject = format!("canary-subject-{}@example.com", random_hex(8));
    let mut req = tonic::Request::new(put("t", &subject, "contact", "email", canary.as_bytes()));
    req.metadata_mut().insert(
        "x-strongbox-purpose",
        "support ticket 4711".parse().unwrap(),
    );
    let r = u.records().put_record(req).await;
    let id = request_id(&r);
    r.unwrap();
    get_value(&u, "t", &subject, "contact", "email")
        .await
        .unwrap();
    let entries = list(
        &u,
        pb::ListAuditEntriesRequest {
            tenant: "t".into(),
            action: "record.put".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = entries.iter().find(|e| e.request_id == id).unwrap();
    assert_eq!(e.tenant, "t");
    assert_eq!(e.outcome, "ok");
    assert_eq!(e.purpose, "support ticket 4711");
    assert!(e.peer.starts_with("127.0.0.1:"), "{}", e.peer);
    assert!(e.principal.starts_with("prn-"));
    assert!(
        e.resource.starts_with("record:") && e.resource.ends_with("/contact/email"),
        "{}",
        e.resource
    );
    // Neither the value nor the subject id is anywhere in the audit table.
    let dump: Vec<u8> = db(&s)
        .rows("SELECT * FROM audit_log", &[])
        .into_iter()
        .flatten()
        .flat_map(|cell| match cell {
            common::stored::Cell::Text(t) => t.into_bytes(),
            common::stored::Cell::Bytes(b) => b,
            other => format!("{other:?}").into_bytes(),
        })
        .collect();
    assert!(contains(&dump, b"record.put"), "the dump holds the entries");
    assert!(!contains(&dump, canary.as_bytes()));
    assert!(!contains(&dump, subject.as_bytes()));
    assert!(!contains(&dump, b"canary-subject"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_closed_when_the_audit_table_cannot_be_written() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    put_ok(&u, "t", "ann", "c", "k", b"before").await;
    let c = db(&s);
    // A real failure of the audit table: every insert into it aborts.
    let (broken, fixed) = match c {
        Stored::Sqlite(_) => (
            "CREATE TRIGGER audit_broken BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
            "DROP TRIGGER audit_broken",
        ),
        Stored::Postgres(_) => (
            "CREATE FUNCTION audit_broken() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk says no'; END $$;
             CREATE TRIGGER audit_broken BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_broken();",
            "DROP TRIGGER audit_broken ON audit_log",
        ),
    };
    c.batch(broken);
    let count = || c.count("SELECT count(*) FROM audit_log", &[]);
    let entries_before = count();

    assert_status(
        u.records()
            .put_record(put("t", "ann", "c", "k", b"after"))
            .await,
        Code::Unavailable,
        "audit",
    );
    assert_status(
        u.records()
            .put_record(put("t", "bob", "c", "k", b"new subject"))
            .await,
        Code::Unavailable,
        "audit",
    );
    // A read does not return data it could not record.
    assert_status(
        get_value(&u, "t", "ann", "c", "k").await,
        Code::Unavailable,
        "audit",
    );
    let shred = u
        .subjects()
        .shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: "ann".into(),
        })
        .await;
    assert_status(shred, Code::Unavailable, "audit");
    assert_eq!(count(), entries_before);

    c.batch(fixed);
    // Nothing changed while the audit log was down.
    assert_eq!(
        get_value(&u, "t", "ann", "c", "k").await.unwrap(),
        b"before"
    );
    assert_status(
        get_value(&u, "t", "bob", "c", "k").await,
        Code::NotFound,
        "record not found",
    );
    let subjects = c.count("SELECT count(*) FROM subjects", &[]);
    assert_eq!(subjects, 1, "no subject row was half-written");
    assert!(verify_audit(&s.operator().await).await.ok);
}

/// A server with a few dozen audit entries, stopped, and its chain state.
async fn audited_server() -> TestServer {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    for i in 0..20 {
        put_ok(&u, "t", "zed", "c", &format!("k{i}"), b"v").await;
    }
    s
}

/// Applies `tamper` to the audit table, then asks the server to verify.
async fn tampered(tamper: &str) -> pb::VerifyAuditResponse {
    let s = audited_server().await;
    let op = s.operator().await;
    assert!(verify_audit(&op).await.ok, "the untouched chain verifies");
    db(&s).batch(tamper);
    verify_audit(&op).await
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_edited_field() {
    let r = tampered("UPDATE audit_log SET principal = 'prn-someone-else' WHERE seq = 5").await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_seq, 5, "{}", r.problem);
    assert!(r.problem.contains("MAC does not match"), "{}", r.problem);
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_deleted_entry() {
    let r = tampered("DELETE FROM audit_log WHERE seq = 7").await;
    assert!(!r.ok);
    // On SQLite the sequence has a hole. On PostgreSQL a lane's entries
    // need not be consecutive (the lanes of several servers interleave),
    // so the cut shows at the lane's next entry, whose MAC covers the one
    // before it.
    let (at, says) = if on_postgres() {
        (8, "or is missing")
    } else {
        (7, "entry 7 is missing")
    };
    assert_eq!(r.first_bad_seq, at, "{}", r.problem);
    assert!(r.problem.contains(says), "{}", r.problem);
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_swapped_entries() {
    let r = tampered(
        "UPDATE audit_log SET seq = -1 WHERE seq = 8;
         UPDATE audit_log SET seq = 8 WHERE seq = 9;
         UPDATE audit_log SET seq = 9 WHERE seq = -1;",
    )
    .await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_seq, 8, "{}", r.problem);
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_truncated_tail() {
    // The head row still names the cut entries. On SQLite the verify
    // call's own entry cannot be chained, so the call itself is refused as
    // tampering. On PostgreSQL an append checks the lane's head row by its
    // MAC only (reading the lane's entries would make every server's
    // appends conflict; src/audit/mod.rs): the call is served and the
    // report names the cut.
    let s = audited_server().await;
    let op = s.operator().await;
    db(&s).batch("DELETE FROM audit_log WHERE seq > 10");
    let r = op
        .audit()
        .verify_audit(pb::VerifyAuditRequest::default())
        .await;
    if on_postgres() {
        let r = r.unwrap().into_inner();
        assert!(!r.ok);
        // Named by the head row, or first by the anchor file when it had
        // recorded a later entry of the lane.
        assert!(
            r.problem
                .contains("truncated or rolled back: the head is entry")
                || r.problem
                    .contains("the anchor outside the database records entry"),
            "{}",
            r.problem
        );
    } else {
        assert_status(r, Code::DataLoss, "the head row names entry");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_truncated_tail_with_head_rewound_by_hand() {
    // Cutting the tail and writing a head row for the new end (without the
    // audit key, its MAC cannot be made).
    let s = audited_server().await;
    let op = s.operator().await;
    let c = db(&s);
    let row = c.rows("SELECT seq, mac FROM audit_log WHERE seq = 10", &[]);
    let (seq, mac) = (row[0][0].int(), row[0][1].bytes());
    // The head row: in `meta` on SQLite, the lane's row on PostgreSQL.
    let (read_head, write_head) = match c {
        Stored::Sqlite(_) => (
            "SELECT value FROM meta WHERE name = 'audit_head'",
            "UPDATE meta SET value = {} WHERE name = 'audit_head'",
        ),
        Stored::Postgres(_) => (
            "SELECT head FROM audit_lanes WHERE lane = (SELECT lane FROM audit_log WHERE seq = 10)",
            "UPDATE audit_lanes SET head = {} WHERE lane = (SELECT lane FROM audit_log WHERE seq = 10)",
        ),
    };
    let old_head = c.one(read_head, &[]).bytes();
    let mut head = (seq as u64).to_be_bytes().to_vec();
    head.extend_from_slice(&mac);
    head.extend_from_slice(&crypto::sha256(&head));
    assert_ne!(head, old_head);
    c.execute("DELETE FROM audit_log WHERE seq > 10", &[]);
    let written = c.execute(&write_head.replace("{}", &c.blob(&head)), &[]);
    assert_eq!(written, 1);
    let r = op
        .audit()
        .verify_audit(pb::VerifyAuditRequest::default())
        .await;
    assert_status(r, Code::DataLoss, "head row's MAC does not match");
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_entry_rewritten_with_a_plain_sha256() {
    let s = audited_server().await;
    let op = s.operator().await;
    let c = db(&s);
    let prev = c
        .one("SELECT mac FROM audit_log WHERE seq = 11", &[])
        .bytes();
    // The forger changes the entry and recomputes its "MAC" as a hash of the
    // previous link and the new contents: without the key it cannot match.
    let mut forged = prev.clone();
    forged.extend_from_slice(b"record.put|ok|0|forged");
    c.execute(
        &format!(
            "UPDATE audit_log SET principal = 'prn-forged', mac = {} WHERE seq = 12",
            c.blob(&crypto::sha256(&forged))
        ),
        &[],
    );
    let r = verify_audit(&op).await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_seq, 12, "{}", r.problem);
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_are_scoped_and_filtered() {
    let s = TestServer::start().await;
    let (admin_a, user_a) = s.tenant_with_user("ta").await;
    let (_, user_b) = s.tenant_with_user("tb").await;
    let auditor_a = s.principal(&admin_a, "ta", "aud", &["auditor"]).await;
    put_ok(&user_a, "ta", "x", "c", "k", b"v").await;
    put_ok(&user_b, "tb", "x", "c", "k", b"v").await;
    let _ = get_value(&user_a, "ta", "x", "c", "missing").await;

    let mine = list(
        &auditor_a,
        pb::ListAuditEntriesRequest {
            tenant: "ta".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!mine.is_empty());
    assert!(
        mine.iter().all(|e| e.tenant == "ta"),
        "an auditor sees only its tenant"
    );
    // Naming nothing still confines it to its tenant; naming another is not found.
    let unnamed = list(&auditor_a, pb::ListAuditEntriesRequest::default())
        .await
        .unwrap();
    assert!(unnamed.iter().all(|e| e.tenant == "ta"));
    assert_status(
        list(
            &auditor_a,
            pb::ListAuditEntriesRequest {
                tenant: "tb".into(),
                ..Default::default()
            },
        )
        .await,
        Code::NotFound,
        "tenant 'tb' not found",
    );
    let failed = list(
        &auditor_a,
        pb::ListAuditEntriesRequest {
            tenant: "ta".into(),
            outcome: "failed".into(),
            action: "record.get".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].code, Code::NotFound as i32);

    // The operator sees the platform's whole log, pages by sequence number.
    let op = s.operator().await;
    let all = list(&op, pb::ListAuditEntriesRequest::default())
        .await
        .unwrap();
    assert!(all.iter().any(|e| e.tenant == "tb") && all.iter().any(|e| e.tenant == "ta"));
    let page = list(
        &op,
        pb::ListAuditEntriesRequest {
            limit: 3,
            after_seq: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    let later = list(
        &op,
        pb::ListAuditEntriesRequest {
            since_unix_ms: strongbox::now_ms() + 60_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(later.is_empty());
    assert_status(
        list(
            &op,
            pb::ListAuditEntriesRequest {
                outcome: "maybe".into(),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "outcome:",
    );
}

/// A chain of `n` entries built by the library in a fresh database.
fn library_chain(
    n: u64,
    time: impl Fn(u64) -> i64,
) -> (tempfile::TempDir, strongbox::store::Direct, SecretKey) {
    let dir = tempfile::tempdir().unwrap();
    let store = strongbox::store::Store::open(&dir.path().join("db"), 1).unwrap();
    drop(store);
    let d = strongbox::store::Direct::open(&dir.path().join("db")).unwrap();
    let key = SecretKey::generate();
    for i in 1..=n {
        let mut e = library_entry(i);
        e.time = time(i);
        audit::append(d.tx(), &key, e).unwrap();
    }
    (dir, d, key)
}

/// The `i`th entry of [`library_chain`].
fn library_entry(i: u64) -> audit::Entry {
    let call = Call::new(
        format!("req{i}"),
        "record.get",
        "purpose".into(),
        "127.0.0.1:1".into(),
    );
    call.set_principal("prn-1");
    call.set_tenant("t");
    call.set_resource(format!("record:tenant/c/k{i}"));
    call.entry(Outcome::Ok, 0)
}

#[test]
fn appends_in_one_transaction_chain_on_after_a_rolled_back_one() {
    // The second append of a transaction extends the head the first wrote
    // without reading it again; an append undone by a savepoint's rollback
    // must not be the head the next one extends.
    let (_dir, d, key) = library_chain(3, |i| 1_700_000_000_000 + i as i64);
    d.begin().unwrap();
    assert_eq!(audit::append(d.tx(), &key, library_entry(4)).unwrap(), 4);
    d.tx()
        .savepoint(&mut |tx| {
            assert_eq!(audit::append(tx, &key, library_entry(5)).unwrap(), 5);
            false
        })
        .unwrap();
    assert_eq!(audit::append(d.tx(), &key, library_entry(6)).unwrap(), 5);
    assert_eq!(audit::append(d.tx(), &key, library_entry(7)).unwrap(), 6);
    d.commit().unwrap();
    let report = audit::verify(d.tx(), &key).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.entries, 6);
}

#[test]
fn fail_a_tail_cut_between_transactions_at_the_next_append() {
    // What one transaction's appends remember ends with it: the first
    // append of the next transaction reads and checks the stored head.
    let (_dir, d, key) = library_chain(3, |i| 1_700_000_000_000 + i as i64);
    d.begin().unwrap();
    audit::append(d.tx(), &key, library_entry(4)).unwrap();
    audit::append(d.tx(), &key, library_entry(5)).unwrap();
    d.commit().unwrap();
    d.sqlite()
        .execute_batch("DELETE FROM audit_log WHERE seq = 5")
        .unwrap();
    d.begin().unwrap();
    let e = audit::append(d.tx(), &key, library_entry(6)).unwrap_err();
    assert!(e.to_string().contains("the head row names entry 5"), "{e}");
}

#[test]
fn fail_any_random_single_byte_edit_of_the_audit_table() {
    let (_dir, d, key) = library_chain(40, |i| 1_700_000_000_000 + i as i64);
    let c = d.sqlite();
    assert_eq!(audit::verify(d.tx(), &key).unwrap().problem, None);
    let cols = [
        "time",
        "request_id",
        "principal",
        "tenant",
        "action",
        "resource",
        "outcome",
        "code",
        "purpose",
        "peer",
        "mac",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let seq = 1 + next() % 40;
        let col = cols[(next() % cols.len() as u64) as usize];
        c.execute_batch("SAVEPOINT edit").unwrap();
        let value: rusqlite::types::Value = c
            .query_row(
                &format!("SELECT {col} FROM audit_log WHERE seq = ?1"),
                [seq],
                |r| r.get(0),
            )
            .unwrap();
        let edited = match value {
            rusqlite::types::Value::Integer(v) => {
                rusqlite::types::Value::Integer(v ^ (1 << (next() % 8)))
            }
            rusqlite::types::Value::Text(t) => {
                let mut b = t.into_bytes();
                let i = (next() % b.len().max(1) as u64) as usize;
                if b.is_empty() {
                    b.push(b'x');
                } else {
                    b[i] = if b[i] == b'z' { b'y' } else { b'z' };
                }
                rusqlite::types::Value::Text(String::from_utf8_lossy(&b).into_owned())
            }
            rusqlite::types::Value::Blob(mut b) => {
                let i = (next() % b.len() as u64) as usize;
                b[i] ^= 1 << (next() % 8);
                rusqlite::types::Value::Blob(b)
            }
            other => panic!("unexpected column value {other:?}"),
        };
        c.execute(
            &format!("UPDATE audit_log SET {col} = ?1 WHERE seq = ?2"),
            params![edited, seq],
        )
        .unwrap();
        let report = audit::verify(d.tx(), &key).unwrap();
        assert!(
            report.problem.is_some(),
            "edit of {col} at {seq} went undetected"
        );
        c.execute_batch("ROLLBACK TO edit; RELEASE edit").unwrap();
    }
    assert_eq!(audit::verify(d.tx(), &key).unwrap().problem, None);
}

#[test]
fn pruning_cuts_at_a_checkpoint_and_stays_verifiable() {
    let n = 2 * audit::CHECKPOINT_EVERY + 500;
    // Entries up to 2100 are "old", the rest new.
    let (_dir, d, key) = library_chain(n, |i| if i <= 2100 { 1_000 } else { 10_000 });
    let c = d.sqlite();
    let pruned = audit::prune(d.tx(), &key, 5_000).unwrap();
    assert_eq!(
        pruned,
        2 * audit::CHECKPOINT_EVERY,
        "cut at the newest checkpoint that is all old"
    );
    let report = audit::verify(d.tx(), &key).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.entries, 500);
    assert_eq!(report.head_seq, n);
    // Cutting further by hand (not at the base) is detected.
    c.execute("DELETE FROM audit_log WHERE seq = 2001", [])
        .unwrap();
    assert!(audit::verify(d.tx(), &key).unwrap().problem.is_some());
}

#[test]
fn a_chain_longer_than_a_read_page_verifies_and_an_edit_past_the_page_is_caught() {
    // The chain is walked 10,000 entries a query.
    let (_dir, d, key) = library_chain(10_050, |i| 1_700_000_000_000 + i as i64);
    let report = audit::verify(d.tx(), &key).unwrap();
    assert_eq!((report.entries, report.problem), (10_050, None));
    d.sqlite()
        .execute(
            "UPDATE audit_log SET principal = 'prn-2' WHERE seq = 10020",
            [],
        )
        .unwrap();
    let report = audit::verify(d.tx(), &key).unwrap();
    assert_eq!(report.problem.map(|(seq, _)| seq), Some(10_020));
}

#[test]
fn an_empty_log_verifies() {
    let (_dir, d, key) = library_chain(0, |_| 0);
    let r = audit::verify(d.tx(), &key).unwrap();
    assert_eq!((r.entries, r.problem), (0, None));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_auditor_verifies_without_learning_about_other_tenants() {
    let s = TestServer::start().await;
    let (_, t_user) = s.tenant_with_user("t").await;
    let (_, u_user) = s.tenant_with_user("u").await;
    for i in 0..5 {
        put_ok(&u_user, "u", "zed", "c", &format!("k{i}"), b"v").await;
    }
    put_ok(&t_user, "t", "amy", "c", "k", b"v").await;
    let r = verify_audit(&t_user).await;
    let row = db(&s).rows(
        "SELECT count(*), max(seq) FROM audit_log WHERE tenant = 't'",
        &[],
    );
    let (t_entries, t_last) = (row[0][0].int(), row[0][1].int());
    assert!(r.ok);
    // The verify call's own entry is recorded after the report was made.
    assert_eq!(
        r.entries as i64,
        t_entries - 1,
        "its own tenant's count only"
    );
    assert!(r.head_seq as i64 <= t_last);
    // A break in tenant u's entries: t's auditor learns only that the chain
    // does not hold, not where or whose.
    let u_seq = db(&s).count(
        "SELECT max(seq) FROM audit_log WHERE tenant = 'u' AND action = 'record.put'",
        &[],
    );
    db(&s).execute(
        &format!("UPDATE audit_log SET purpose = 'edited' WHERE seq = {u_seq}"),
        &[],
    );
    let r = verify_audit(&t_user).await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_seq, 0);
    assert!(
        !r.problem.contains(&u_seq.to_string()) && !r.problem.contains("'u'"),
        "{}",
        r.problem
    );
    // The operator sees where.
    let r = verify_audit(&s.operator().await).await;
    assert_eq!(r.first_bad_seq as i64, u_seq);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_entry_names_the_action_authorized() {
    // CreatePrincipal by the operator is authorized as the bootstrap of a
    // tenant's first admin, and its entry says so.
    let s = TestServer::start().await;
    let op = s.operator().await;
    op.tenants()
        .create_tenant(pb::CreateTenantRequest {
            tenant: "t".into(),
            name: "t".into(),
        })
        .await
        .unwrap();
    let r = op
        .principals()
        .create_principal(pb::CreatePrincipalRequest {
            tenant: "t".into(),
            name: "first-admin".into(),
            roles: vec!["admin".into()],
            ..Default::default()
        })
        .await;
    let e = entries_with_request_id(&s, &request_id(&r));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, "tenant.bootstrap-admin");
    // An admin's CreatePrincipal is `principal.create`.
    let admin = op.as_key(&r.unwrap().into_inner().api_key).unwrap();
    let r = admin
        .principals()
        .create_principal(pb::CreatePrincipalRequest {
            tenant: "t".into(),
            name: "reader".into(),
            roles: vec!["reader".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(
        entries_with_request_id(&s, &request_id(&r))[0].0,
        "principal.create"
    );
}
