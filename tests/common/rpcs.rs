//! Every RPC of the API, callable by name with valid arguments: the role
//! matrix and the one-audit-entry-per-call test both walk this table.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;

use prost::Message;
use strongbox::api::pb;
use strongbox::client::Client;
use tonic::{Response, Status};

use super::{TestServer, get, put, put_ok};

/// The request id a call was answered with (success or failure).
pub fn request_id<T>(r: &Result<Response<T>, Status>) -> String {
    let md = match r {
        Ok(resp) => resp.metadata(),
        Err(s) => s.metadata(),
    };
    md.get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Keeps the request id, drops the body.
fn rid<T>(r: Result<Response<T>, Status>) -> Result<String, Status> {
    let id = request_id(&r);
    r.map(|_| id.clone()).map_err(|mut s| {
        if let Ok(v) = id.parse() {
            s.metadata_mut().insert("x-request-id", v);
        }
        s
    })
}

/// Order matters: the shred is scheduled late and cancelled last.
pub const RPC_ORDER: &[&str] = &[
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
    "ListAuditEntries",
    "VerifyAudit",
    "ListPrincipals",
    "CreateApiKey",
    "RevokeApiKey",
    "RotateTenantKey",
    "GetTenantKeyStatus",
    "RotateRootKey",
    "SetRotationPolicy",
    "ReencryptDataKeys",
    "RequestAdminRecovery",
    "CancelAdminRecovery",
    "PlaceSubjectHold",
    "ReleaseSubjectHold",
    "PlaceTenantHold",
    "ReleaseTenantHold",
    "ListHolds",
    "TouchSubject",
    "SetRetentionPolicy",
    "SetRetentionDefault",
    "ListRetention",
    "PreviewRetention",
    "Backup",
    "ScheduleTenantShred",
    "CancelTenantShred",
];

pub fn rpcs_from_descriptors() -> BTreeSet<String> {
    let fds = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    fds.file
        .iter()
        .flat_map(|f| f.service.iter())
        .flat_map(|s| s.method.iter().map(|m| m.name().to_string()))
        .collect()
}

pub struct Ctx {
    pub tenant: String,
    /// A tenant with no admin yet, for the operator's bootstrap call.
    pub fresh_tenant: String,
    pub receipt: pb::DeletionReceipt,
    /// A principal of `tenant` no test call acts as, and its key's id.
    pub spare_principal: String,
    pub spare_key: String,
}

pub async fn call(rpc: &str, c: &Client, ctx: &Ctx, role: &str) -> Result<String, Status> {
    let t = ctx.tenant.clone();
    match rpc {
        "CreateTenant" => rid(c
            .tenants()
            .create_tenant(pb::CreateTenantRequest {
                tenant: format!("new-by-{role}"),
                name: String::new(),
            })
            .await),
        "ListTenants" => rid(c
            .tenants()
            .list_tenants(pb::ListTenantsRequest::default())
            .await),
        "GetTenant" => rid(c
            .tenants()
            .get_tenant(pb::GetTenantRequest { tenant: t })
            .await),
        "CreatePrincipal" => {
            let (tenant, roles) = if role == "operator" {
                (ctx.fresh_tenant.clone(), vec!["admin".to_string()])
            } else {
                (t, vec!["reader".to_string()])
            };
            rid(c
                .principals()
                .create_principal(pb::CreatePrincipalRequest {
                    tenant,
                    name: format!("made-by-{role}"),
                    roles,
                    ..Default::default()
                })
                .await)
        }
        "PutRecord" => rid(c
            .records()
            .put_record(put(&t, "alice", "contact", "new", b"v"))
            .await),
        "GetRecord" => rid(c
            .records()
            .get_record(get(&t, "alice", "contact", "email"))
            .await),
        "ListRecords" => rid(c
            .records()
            .list_records(pb::ListRecordsRequest {
                tenant: t,
                ..Default::default()
            })
            .await),
        "DeleteRecord" => rid(c
            .records()
            .delete_record(pb::DeleteRecordRequest {
                tenant: t,
                subject: "alice".into(),
                category: "contact".into(),
                key: "to-delete".into(),
                expected_version: None,
            })
            .await),
        "ExportSubject" => {
            let r = c
                .subjects()
                .export_subject(pb::ExportSubjectRequest {
                    tenant: t,
                    subject: "alice".into(),
                })
                .await;
            let id = rid_ref(&r);
            let mut s = r?.into_inner();
            while s.message().await?.is_some() {}
            Ok(id)
        }
        "VerifyReceipt" => {
            let r = c
                .subjects()
                .verify_receipt(pb::VerifyReceiptRequest {
                    receipt: Some(ctx.receipt.clone()),
                })
                .await;
            if let Ok(v) = &r {
                assert!(v.get_ref().valid, "a genuine receipt verifies");
            }
            rid(r)
        }
        "ShredSubject" => rid(c
            .subjects()
            .shred_subject(pb::ShredSubjectRequest {
                tenant: t,
                subject: "victim".into(),
            })
            .await),
        "ListAuditEntries" => {
            let r = c
                .audit()
                .list_audit_entries(pb::ListAuditEntriesRequest {
                    tenant: t,
                    ..Default::default()
                })
                .await;
            let id = rid_ref(&r);
            let mut s = r?.into_inner();
            while s.message().await?.is_some() {}
            Ok(id)
        }
        "VerifyAudit" => {
            let r = c
                .audit()
                .verify_audit(pb::VerifyAuditRequest::default())
                .await;
            if let Ok(v) = &r {
                assert!(
                    v.get_ref().ok,
                    "the chain verifies: {}",
                    v.get_ref().problem
                );
            }
            rid(r)
        }
        "ScheduleTenantShred" => rid(c
            .tenants()
            .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
                tenant: t,
                grace_seconds: Some(3600),
            })
            .await),
        "RequestAdminRecovery" => rid(c
            .tenants()
            .request_admin_recovery(pb::AdminRecoveryRequest { tenant: t })
            .await),
        "CancelAdminRecovery" => rid(c
            .tenants()
            .cancel_admin_recovery(pb::AdminRecoveryRequest { tenant: t })
            .await),
        "PlaceSubjectHold" => rid(c
            .subjects()
            .place_subject_hold(pb::PlaceSubjectHoldRequest {
                tenant: t,
                subject: "held".into(),
                reason: format!("case by {role}"),
            })
            .await),
        "ReleaseSubjectHold" => rid(c
            .subjects()
            .release_subject_hold(pb::ReleaseSubjectHoldRequest {
                tenant: t,
                subject: "held".into(),
                hold_id: String::new(),
            })
            .await),
        "PlaceTenantHold" => rid(c
            .tenants()
            .place_tenant_hold(pb::PlaceTenantHoldRequest {
                tenant: t,
                reason: format!("case by {role}"),
            })
            .await),
        "ReleaseTenantHold" => rid(c
            .tenants()
            .release_tenant_hold(pb::ReleaseTenantHoldRequest {
                tenant: t,
                hold_id: String::new(),
            })
            .await),
        "ListHolds" => rid(c
            .tenants()
            .list_holds(pb::ListHoldsRequest { tenant: t })
            .await),
        "TouchSubject" => rid(c
            .subjects()
            .touch_subject(pb::TouchSubjectRequest {
                tenant: t,
                subject: "alice".into(),
            })
            .await),
        "SetRetentionPolicy" => rid(c
            .retention()
            .set_retention_policy(pb::SetRetentionPolicyRequest {
                tenant: t,
                category: "contact".into(),
                keep_seconds: 10 * 365 * 86_400,
                after: "write".into(),
            })
            .await),
        "SetRetentionDefault" => rid(c
            .retention()
            .set_retention_default(pb::SetRetentionDefaultRequest {
                category: "billing".into(),
                keep_seconds: Some(10 * 365 * 86_400),
                max_seconds: None,
            })
            .await),
        "ListRetention" => rid(c
            .retention()
            .list_retention(pb::ListRetentionRequest { tenant: t })
            .await),
        "PreviewRetention" => rid(c
            .retention()
            .preview_retention(pb::PreviewRetentionRequest {
                tenant: t,
                within_seconds: 86_400,
            })
            .await),
        "Backup" => {
            let r = c.backup().backup(pb::BackupRequest {}).await;
            let id = request_id(&r);
            let mut stream = r?.into_inner();
            while stream.message().await?.is_some() {}
            Ok(id)
        }
        "CancelTenantShred" => rid(c
            .tenants()
            .cancel_tenant_shred(pb::CancelTenantShredRequest { tenant: t })
            .await),
        "ListPrincipals" => rid(c
            .principals()
            .list_principals(pb::ListPrincipalsRequest { tenant: t })
            .await),
        "CreateApiKey" => rid(c
            .principals()
            .create_api_key(pb::CreateApiKeyRequest {
                tenant: t,
                principal_id: ctx.spare_principal.clone(),
                expires_in_seconds: None,
            })
            .await),
        "RevokeApiKey" => rid(c
            .principals()
            .revoke_api_key(pb::RevokeApiKeyRequest {
                tenant: t,
                key_id: ctx.spare_key.clone(),
            })
            .await),
        "RotateTenantKey" => rid(c
            .keys()
            .rotate_tenant_key(pb::RotateTenantKeyRequest { tenant: t })
            .await),
        "GetTenantKeyStatus" => rid(c
            .keys()
            .get_tenant_key_status(pb::GetTenantKeyStatusRequest { tenant: t })
            .await),
        "RotateRootKey" => rid(c.keys().rotate_root_key(pb::RotateRootKeyRequest {}).await),
        "ReencryptDataKeys" => rid(c
            .keys()
            .reencrypt_data_keys(pb::ReencryptDataKeysRequest {
                tenant: t.clone(),
                subject: "alice".into(),
            })
            .await),
        "SetRotationPolicy" => rid(c
            .keys()
            .set_rotation_policy(pb::SetRotationPolicyRequest {
                tenant: t,
                max_age_seconds: Some(30 * 86400),
                max_encryptions: None,
                min_decryption_version: None,
            })
            .await),
        other => panic!("no call for RPC {other}: add it to tests/common/rpcs.rs"),
    }
}

/// The request id of a streaming call's first answer.
fn rid_ref<T>(r: &Result<Response<T>, Status>) -> String {
    request_id(r)
}

/// A tenant seeded with records, a shreddable subject and a receipt, and a
/// client for `role` in it.
pub async fn setup(s: &TestServer, role: &str) -> (Client, Ctx) {
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
    let spare = admin
        .principals()
        .create_principal(pb::CreatePrincipalRequest {
            tenant: tenant.clone(),
            name: "spare".into(),
            roles: vec!["reader".into()],
            expires_in_seconds: None,
            client_cert_cn: String::new(),
            enrolment: String::new(),
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
            spare_principal: spare.principal_id,
            spare_key: spare.key_id,
        },
    )
}
