//! The role table over real gRPC: every role × every RPC is allowed or
//! refused with PERMISSION_DENIED exactly as SPEC.md's table says. The RPC
//! list is read from the service descriptors, so an RPC added without a row
//! here fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use prost::Message;
use strongbox::api::pb;
use strongbox::client::Client;
use tonic::{Code, Status};

/// SPEC.md's role table, transcribed as (role, RPCs it may call).
const SPEC_TABLE: &[(&str, &[&str])] = &[
    (
        "operator",
        &[
            "CreateTenant",
            "ListTenants",
            "GetTenant",
            "ScheduleTenantShred",
            "CancelTenantShred",
            "CreatePrincipal", // a tenant's first admin only
            "VerifyReceipt",
        ],
    ),
    ("admin", &["GetTenant", "CreatePrincipal"]),
    ("writer", &["PutRecord", "DeleteRecord"]),
    ("reader", &["GetRecord", "ListRecords"]),
    (
        "privacy-officer",
        &["ExportSubject", "ShredSubject", "VerifyReceipt"],
    ),
    ("auditor", &["VerifyReceipt"]),
];

/// Order matters: the shred is scheduled late and cancelled last.
const RPC_ORDER: &[&str] = &[
    "CreateTenant",
    "ListTenants",
    "GetTenant",
    "CreatePrincipal",
    "PutRecord",
    "GetRecord",
    "ListRecords",
    "DeleteRecord",
    "ExportSubject",
    "VerifyReceipt",
    "ShredSubject",
    "ScheduleTenantShred",
    "CancelTenantShred",
];

fn rpcs_from_descriptors() -> BTreeSet<String> {
    let fds = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    fds.file
        .iter()
        .flat_map(|f| f.service.iter())
        .flat_map(|s| s.method.iter().map(|m| m.name().to_string()))
        .collect()
}

struct Ctx {
    tenant: String,
    /// A tenant with no admin yet, for the operator's bootstrap call.
    fresh_tenant: String,
    receipt: pb::DeletionReceipt,
}

async fn call(rpc: &str, c: &Client, ctx: &Ctx, role: &str) -> Result<(), Status> {
    let t = ctx.tenant.clone();
    match rpc {
        "CreateTenant" => c
            .tenants()
            .create_tenant(pb::CreateTenantRequest {
                tenant: format!("new-by-{role}"),
                name: String::new(),
            })
            .await
            .map(drop),
        "ListTenants" => c
            .tenants()
            .list_tenants(pb::ListTenantsRequest::default())
            .await
            .map(drop),
        "GetTenant" => c
            .tenants()
            .get_tenant(pb::GetTenantRequest { tenant: t })
            .await
            .map(drop),
        "CreatePrincipal" => {
            let (tenant, roles) = if role == "operator" {
                (ctx.fresh_tenant.clone(), vec!["admin".to_string()])
            } else {
                (t, vec!["reader".to_string()])
            };
            c.principals()
                .create_principal(pb::CreatePrincipalRequest {
                    tenant,
                    name: format!("made-by-{role}"),
                    roles,
                })
                .await
                .map(drop)
        }
        "PutRecord" => c
            .records()
            .put_record(put(&t, "alice", "contact", "new", b"v"))
            .await
            .map(drop),
        "GetRecord" => c
            .records()
            .get_record(get(&t, "alice", "contact", "email"))
            .await
            .map(drop),
        "ListRecords" => c
            .records()
            .list_records(pb::ListRecordsRequest {
                tenant: t,
                ..Default::default()
            })
            .await
            .map(drop),
        "DeleteRecord" => c
            .records()
            .delete_record(pb::DeleteRecordRequest {
                tenant: t,
                subject: "alice".into(),
                category: "contact".into(),
                key: "to-delete".into(),
                expected_version: None,
            })
            .await
            .map(drop),
        "ExportSubject" => {
            let mut s = c
                .subjects()
                .export_subject(pb::ExportSubjectRequest {
                    tenant: t,
                    subject: "alice".into(),
                })
                .await?
                .into_inner();
            while s.message().await?.is_some() {}
            Ok(())
        }
        "VerifyReceipt" => {
            let valid = c
                .subjects()
                .verify_receipt(pb::VerifyReceiptRequest {
                    receipt: Some(ctx.receipt.clone()),
                })
                .await?
                .into_inner()
                .valid;
            assert!(valid, "a genuine receipt verifies");
            Ok(())
        }
        "ShredSubject" => c
            .subjects()
            .shred_subject(pb::ShredSubjectRequest {
                tenant: t,
                subject: "victim".into(),
            })
            .await
            .map(drop),
        "ScheduleTenantShred" => c
            .tenants()
            .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
                tenant: t,
                grace_seconds: Some(3600),
            })
            .await
            .map(drop),
        "CancelTenantShred" => c
            .tenants()
            .cancel_tenant_shred(pb::CancelTenantShredRequest { tenant: t })
            .await
            .map(drop),
        other => panic!("no call for RPC {other}: add it to the role matrix"),
    }
}

/// A tenant seeded with records, a shreddable subject and a receipt, and a
/// client for `role` in it.
async fn setup(s: &TestServer, role: &str) -> (Client, Ctx) {
    let tenant = format!("t-{role}");
    let admin = s.tenant(&tenant).await;
    let seed = s
        .principal(&admin, &tenant, "seed", &["writer", "privacy-officer"])
        .await;
    for (subject, key) in [
        ("alice", "email"),
        ("alice", "to-delete"),
        ("victim", "email"),
        ("gone", "email"),
    ] {
        put_ok(&seed, &tenant, subject, "contact", key, b"value").await;
    }
    let receipt = seed
        .subjects()
        .shred_subject(pb::ShredSubjectRequest {
            tenant: tenant.clone(),
            subject: "gone".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let fresh_tenant = format!("fresh-{role}");
    s.operator()
        .await
        .tenants()
        .create_tenant(pb::CreateTenantRequest {
            tenant: fresh_tenant.clone(),
            name: String::new(),
        })
        .await
        .unwrap();
    let client = match role {
        "operator" => s.operator().await,
        "admin" => admin.clone(),
        r => s.principal(&admin, &tenant, r, &[r]).await,
    };
    (
        client,
        Ctx {
            tenant,
            fresh_tenant,
            receipt,
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_role_times_every_rpc() {
    let described = rpcs_from_descriptors();
    let ordered: BTreeSet<String> = RPC_ORDER.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        described, ordered,
        "every RPC of the API must have a row in the role matrix"
    );

    let s = TestServer::start().await;
    for (role, allowed) in SPEC_TABLE {
        let (client, ctx) = setup(&s, role).await;
        for rpc in RPC_ORDER {
            let result = call(rpc, &client, &ctx, role).await;
            if allowed.contains(rpc) {
                assert!(
                    result.is_ok(),
                    "{role} × {rpc} must be allowed, got {result:?}"
                );
            } else {
                let e = result.expect_err(&format!("{role} × {rpc} must be refused"));
                assert_eq!(
                    e.code(),
                    Code::PermissionDenied,
                    "{role} × {rpc}: {}",
                    e.message()
                );
                assert!(
                    e.message().contains(role),
                    "{role} × {rpc}: {}",
                    e.message()
                );
            }
        }
    }
}

#[test]
fn code_table_matches_spec_table() {
    use strongbox::authz::{Action, Role, allows};
    // RPC -> action, for the RPCs whose action does not depend on the caller.
    let map = [
        ("CreateTenant", Action::TenantCreate),
        ("ListTenants", Action::TenantList),
        ("GetTenant", Action::TenantGet),
        ("ScheduleTenantShred", Action::TenantShred),
        ("CancelTenantShred", Action::TenantCancelShred),
        ("PutRecord", Action::RecordPut),
        ("GetRecord", Action::RecordGet),
        ("ListRecords", Action::RecordList),
        ("DeleteRecord", Action::RecordDelete),
        ("ExportSubject", Action::SubjectExport),
        ("ShredSubject", Action::SubjectShred),
        ("VerifyReceipt", Action::ReceiptVerify),
    ];
    for (role_name, allowed) in SPEC_TABLE {
        let role = Role::parse(role_name).unwrap();
        for (rpc, action) in map {
            assert_eq!(
                allows(role, action),
                allowed.contains(&rpc),
                "{role_name} × {rpc}"
            );
        }
    }
}
