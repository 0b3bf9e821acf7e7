//! Tenant isolation: a principal of tenant A, holding every tenant role,
//! calls every record and subject RPC with tenant B's ids. Each call is
//! refused exactly as for a tenant that does not exist, and B's data is
//! untouched.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use strongbox::api::pb;
use strongbox::client::Client;
use tonic::{Code, Status};

/// Every record and subject RPC, aimed at `tenant`, subject "alice".
async fn every_data_rpc(c: &Client, tenant: &str) -> Vec<(&'static str, Result<(), Status>)> {
    let t = tenant.to_string();
    let subj = |s: &str| (t.clone(), s.to_string());
    let mut out = Vec::new();
    out.push((
        "PutRecord",
        c.records()
            .put_record(put(&t, "alice", "contact", "email", b"evil"))
            .await
            .map(drop),
    ));
    out.push((
        "PutRecord(tenant-level)",
        c.records()
            .put_record(put(&t, "", "infra", "cfg", b"evil"))
            .await
            .map(drop),
    ));
    out.push((
        "GetRecord",
        c.records()
            .get_record(get(&t, "alice", "contact", "email"))
            .await
            .map(drop),
    ));
    out.push((
        "GetRecord(tenant-level)",
        c.records()
            .get_record(get(&t, "", "infra", "cfg"))
            .await
            .map(drop),
    ));
    out.push((
        "DeleteRecord",
        c.records()
            .delete_record(pb::DeleteRecordRequest {
                tenant: t.clone(),
                subject: "alice".into(),
                category: "contact".into(),
                key: "email".into(),
                expected_version: None,
            })
            .await
            .map(drop),
    ));
    out.push((
        "ListRecords",
        c.records()
            .list_records(pb::ListRecordsRequest {
                tenant: t.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
    ));
    let (tt, s) = subj("alice");
    out.push((
        "ExportSubject",
        c.subjects()
            .export_subject(pb::ExportSubjectRequest {
                tenant: tt.clone(),
                subject: s.clone(),
            })
            .await
            .map(drop),
    ));
    out.push((
        "ShredSubject",
        c.subjects()
            .shred_subject(pb::ShredSubjectRequest {
                tenant: tt,
                subject: s,
            })
            .await
            .map(drop),
    ));
    out.push((
        "CreatePrincipal",
        c.principals()
            .create_principal(pb::CreatePrincipalRequest {
                tenant: t.clone(),
                name: "intruder".into(),
                roles: vec!["reader".into()],
                ..Default::default()
            })
            .await
            .map(drop),
    ));
    out.push((
        "GetTenant",
        c.tenants()
            .get_tenant(pb::GetTenantRequest { tenant: t.clone() })
            .await
            .map(drop),
    ));
    out.push((
        "VerifyReceipt",
        c.subjects()
            .verify_receipt(pb::VerifyReceiptRequest {
                receipt: Some(pb::DeletionReceipt {
                    tenant: t.clone(),
                    ..Default::default()
                }),
            })
            .await
            .map(drop),
    ));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_cannot_see_or_touch_tenant_b() {
    let s = TestServer::start().await;
    let (admin_a, user_a) = s.tenant_with_user("tenant-a").await;
    let (_, user_b) = s.tenant_with_user("tenant-b").await;
    put_ok(
        &user_b,
        "tenant-b",
        "alice",
        "contact",
        "email",
        b"b-alice@example.com",
    )
    .await;
    put_ok(&user_b, "tenant-b", "", "infra", "cfg", b"b-config").await;
    // A holds a same-named subject of its own: it must stay separate.
    put_ok(
        &user_a,
        "tenant-a",
        "alice",
        "contact",
        "email",
        b"a-alice@example.com",
    )
    .await;

    for caller in [&user_a, &admin_a] {
        let on_b = every_data_rpc(caller, "tenant-b").await;
        let on_nowhere = every_data_rpc(caller, "no-such-tenant").await;
        for ((rpc, b), (_, none)) in on_b.into_iter().zip(on_nowhere) {
            let b = b.expect_err(rpc);
            let none = none.expect_err(rpc);
            assert_eq!(b.code(), Code::NotFound, "{rpc}: {}", b.message());
            // Byte-for-byte the same answer as for a tenant that does not
            // exist, once the tenant's name is swapped.
            assert_eq!(
                b.message().replace("tenant-b", "X"),
                none.message().replace("no-such-tenant", "X"),
                "{rpc}"
            );
        }
    }

    // B's data is untouched; A's same-named subject is A's own.
    assert_eq!(
        get_value(&user_b, "tenant-b", "alice", "contact", "email")
            .await
            .unwrap(),
        b"b-alice@example.com"
    );
    assert_eq!(
        get_value(&user_b, "tenant-b", "", "infra", "cfg")
            .await
            .unwrap(),
        b"b-config"
    );
    assert_eq!(
        get_value(&user_a, "tenant-a", "alice", "contact", "email")
            .await
            .unwrap(),
        b"a-alice@example.com"
    );
    let listed = user_b
        .records()
        .list_records(pb::ListRecordsRequest {
            tenant: "tenant-b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(listed.len(), 2);
    // The same subject id has a different blind id in each tenant.
    let a_list = user_a
        .records()
        .list_records(pb::ListRecordsRequest {
            tenant: "tenant-a".into(),
            subject: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    let b_alice = listed.iter().find(|r| r.category == "contact").unwrap();
    assert_ne!(a_list[0].subject_blind_id, b_alice.subject_blind_id);
}
