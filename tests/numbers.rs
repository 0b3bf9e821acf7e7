//! Every numeric field of every request, listed from the descriptor set,
//! gets 0, 1, 2^63-1, 2^63 and 2^64-1 (or the i64/u32 equivalents): the
//! answer is never INTERNAL or UNKNOWN, a value beyond the field's stated
//! range is INVALID_ARGUMENT naming the field, and nothing wraps into a
//! stored value (the policy read back is the one set, entries after
//! 2^63-1 are none).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use prost::Message;
use prost_types::field_descriptor_proto::Type;
use strongbox::api::pb;
use strongbox::client::Client;
use tonic::Code;

const U64S: [u64; 5] = [0, 1, (1 << 63) - 1, 1 << 63, u64::MAX];

/// `Message.field` for every integer field of a request message (and of
/// the messages a request carries).
fn numeric_request_fields() -> BTreeSet<String> {
    let fds = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let messages: Vec<_> = fds
        .file
        .iter()
        .flat_map(|f| f.message_type.iter())
        .collect();
    let mut wanted: Vec<String> = messages
        .iter()
        .filter(|m| m.name().ends_with("Request"))
        .map(|m| m.name().to_owned())
        .collect();
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::new();
    while let Some(name) = wanted.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let m = messages.iter().find(|m| m.name() == name).unwrap();
        for f in &m.field {
            match f.r#type() {
                Type::Int32
                | Type::Int64
                | Type::Uint32
                | Type::Uint64
                | Type::Sint32
                | Type::Sint64
                | Type::Fixed32
                | Type::Fixed64 => {
                    out.insert(format!("{}.{}", name, f.name()));
                }
                Type::Message => {
                    wanted.push(f.type_name().rsplit('.').next().unwrap().to_owned());
                }
                _ => {}
            }
        }
    }
    out
}

/// The outcome of one call: OK, or the status code and message.
fn outcome<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<(), (Code, String)> {
    r.map(drop).map_err(|s| (s.code(), s.message().to_owned()))
}

/// Each value beyond `max` must be INVALID_ARGUMENT naming `field`; no
/// value may be INTERNAL or UNKNOWN.
fn check(field: &str, value: u64, max: u64, r: Result<(), (Code, String)>) {
    if let Err((code, msg)) = &r {
        assert!(
            !matches!(code, Code::Internal | Code::Unknown),
            "{field}={value}: {code:?} {msg}"
        );
    }
    if value > max {
        match r {
            Err((Code::InvalidArgument, msg)) => {
                assert!(msg.contains(field), "{field}={value}: {msg}")
            }
            other => panic!("{field}={value} is beyond {max} but answered {other:?}"),
        }
    }
}

async fn setup(s: &TestServer) -> (Client, Client, Client, pb::DeletionReceipt) {
    let (admin, user) = s.tenant_with_user("t").await;
    put_ok(&user, "t", "gone", "c", "k", b"v").await;
    let receipt = user
        .subjects()
        .shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: "gone".into(),
        })
        .await
        .unwrap()
        .into_inner();
    (s.operator().await, admin, user, receipt)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_numeric_field_is_range_checked() {
    let s = TestServer::start().await;
    let (op, admin, user, receipt) = setup(&s).await;
    let ten_years = strongbox::ids::MAX_SECONDS;
    let i63 = (1u64 << 63) - 1;
    let mut covered = BTreeSet::new();
    let mut cover = |f: &str| {
        covered.insert(f.to_owned());
    };

    for v in U64S {
        cover("ListTenantsRequest.page_size");
        cover("ListRecordsRequest.page_size");
        cover("ListAuditEntriesRequest.limit");
        let n = v as u32;
        let r = op
            .tenants()
            .list_tenants(pb::ListTenantsRequest {
                page_size: n,
                ..Default::default()
            })
            .await;
        check("page_size", n as u64, 1000, outcome(r));
        let r = user
            .records()
            .list_records(pb::ListRecordsRequest {
                tenant: "t".into(),
                page_size: n,
                ..Default::default()
            })
            .await;
        check("page_size", n as u64, 1000, outcome(r));
        let r = op
            .audit()
            .list_audit_entries(pb::ListAuditEntriesRequest {
                limit: n,
                ..Default::default()
            })
            .await;
        check("limit", n as u64, 10_000, outcome(r).map(drop));

        cover("ScheduleTenantShredRequest.grace_seconds");
        let r = op
            .tenants()
            .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
                tenant: "nobody".into(),
                grace_seconds: Some(v),
            })
            .await;
        check("grace_seconds", v, ten_years, outcome(r));

        cover("SetRetentionPolicyRequest.keep_seconds");
        let r = admin
            .retention()
            .set_retention_policy(pb::SetRetentionPolicyRequest {
                tenant: "t".into(),
                category: "c".into(),
                keep_seconds: v,
                after: String::new(),
            })
            .await;
        check("keep_seconds", v, ten_years, outcome(r));
        cover("SetRetentionDefaultRequest.keep_seconds");
        cover("SetRetentionDefaultRequest.max_seconds");
        for (field, req) in [
            (
                "keep_seconds",
                pb::SetRetentionDefaultRequest {
                    category: "n".into(),
                    keep_seconds: Some(v),
                    max_seconds: None,
                },
            ),
            (
                "max_seconds",
                pb::SetRetentionDefaultRequest {
                    category: "n".into(),
                    keep_seconds: None,
                    max_seconds: Some(v),
                },
            ),
        ] {
            let r = op.retention().set_retention_default(req).await;
            check(field, v, ten_years, outcome(r));
        }
        cover("PreviewRetentionRequest.within_seconds");
        let r = admin
            .retention()
            .preview_retention(pb::PreviewRetentionRequest {
                tenant: "t".into(),
                within_seconds: v,
            })
            .await;
        check("within_seconds", v, ten_years, outcome(r));

        cover("CreatePrincipalRequest.expires_in_seconds");
        let r = admin
            .principals()
            .create_principal(pb::CreatePrincipalRequest {
                tenant: "t".into(),
                name: format!("p{}", random_hex(8)),
                roles: vec!["reader".into()],
                expires_in_seconds: Some(v),
                ..Default::default()
            })
            .await;
        check("expires_in_seconds", v, ten_years, outcome(r));
        cover("CreateApiKeyRequest.expires_in_seconds");
        let r = admin
            .principals()
            .create_api_key(pb::CreateApiKeyRequest {
                tenant: "t".into(),
                principal_id: "prn-none".into(),
                expires_in_seconds: Some(v),
            })
            .await;
        check("expires_in_seconds", v, ten_years, outcome(r));

        cover("PutRecordRequest.expected_version");
        let mut p = put("t", "amy", "c", "k", b"v");
        p.expected_version = Some(v);
        check(
            "expected_version",
            v,
            i63,
            outcome(user.records().put_record(p).await),
        );
        cover("DeleteRecordRequest.expected_version");
        let r = user
            .records()
            .delete_record(pb::DeleteRecordRequest {
                tenant: "t".into(),
                subject: "amy".into(),
                category: "c".into(),
                key: "k".into(),
                expected_version: Some(v),
            })
            .await;
        check("expected_version", v, i63, outcome(r));

        cover("ListAuditEntriesRequest.after_seq");
        let r = op
            .audit()
            .list_audit_entries(pb::ListAuditEntriesRequest {
                after_seq: v,
                ..Default::default()
            })
            .await;
        check("after_seq", v, i63, outcome(r));
        if v == i63 {
            // Nothing comes after the largest sequence number (it did wrap
            // to -1 and return every entry).
            let mut stream = op
                .audit()
                .list_audit_entries(pb::ListAuditEntriesRequest {
                    after_seq: v,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(stream.message().await.unwrap().is_none());
        }
        cover("ListAuditEntriesRequest.since_unix_ms");
        cover("ListAuditEntriesRequest.until_unix_ms");
        let r = op
            .audit()
            .list_audit_entries(pb::ListAuditEntriesRequest {
                since_unix_ms: v as i64,
                until_unix_ms: v as i64,
                ..Default::default()
            })
            .await;
        check("since_unix_ms", 0, u64::MAX, outcome(r));

        cover("SetRotationPolicyRequest.max_age_seconds");
        cover("SetRotationPolicyRequest.max_encryptions");
        cover("SetRotationPolicyRequest.min_decryption_version");
        let r = admin
            .keys()
            .set_rotation_policy(pb::SetRotationPolicyRequest {
                tenant: "t".into(),
                max_age_seconds: Some(v),
                ..Default::default()
            })
            .await;
        let set = outcome(r);
        check("max_age_seconds", v, ten_years, set.clone());
        if v >= 1 && v <= ten_years {
            // Stored as set, not wrapped.
            assert_eq!(key_status(&admin, "t").await.rotation_max_age_seconds, v);
        }
        let r = admin
            .keys()
            .set_rotation_policy(pb::SetRotationPolicyRequest {
                tenant: "t".into(),
                max_encryptions: Some(v),
                ..Default::default()
            })
            .await;
        check("max_encryptions", v, 1 << 32, outcome(r));
        let r = admin
            .keys()
            .set_rotation_policy(pb::SetRotationPolicyRequest {
                tenant: "t".into(),
                min_decryption_version: Some(v as u32),
                ..Default::default()
            })
            .await;
        check("min_decryption_version", (v as u32) as u64, 1, outcome(r));

        cover("DeletionReceipt.records_made_unreadable");
        cover("DeletionReceipt.shredded_at_unix_ms");
        let mut forged = receipt.clone();
        forged.records_made_unreadable = v;
        forged.shredded_at_unix_ms = v as i64;
        let r = user
            .subjects()
            .verify_receipt(pb::VerifyReceiptRequest {
                receipt: Some(forged),
            })
            .await;
        check("records_made_unreadable", 0, u64::MAX, outcome(r));
    }
    let fields = numeric_request_fields();
    assert_eq!(
        covered, fields,
        "a numeric request field has no row in this test"
    );
}
