//! The quickstart flow and record semantics over real gRPC.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use strongbox::api::pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_flow() {
    let s = TestServer::start().await;
    let admin = s.tenant("acme").await;
    let writer = s
        .principal(&admin, "acme", "app", &["writer", "reader"])
        .await;
    let dpo = s
        .principal(&admin, "acme", "dpo", &["privacy-officer"])
        .await;

    assert_eq!(
        put_ok(
            &writer,
            "acme",
            "alice@example.com",
            "contact",
            "email",
            b"alice@example.com"
        )
        .await,
        1
    );
    assert_eq!(
        put_ok(
            &writer,
            "acme",
            "alice@example.com",
            "contact",
            "phone",
            b"+44 20 7946 0000"
        )
        .await,
        1
    );
    assert_eq!(
        put_ok(&writer, "acme", "", "infra", "region", b"eu-west-1").await,
        1
    );
    let got = writer
        .records()
        .get_record(get("acme", "alice@example.com", "contact", "email"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, b"alice@example.com");
    assert_eq!(got.version, 1);
    assert_eq!(got.subject, "alice@example.com");
    assert_eq!(
        get_value(&writer, "acme", "", "infra", "region")
            .await
            .unwrap(),
        b"eu-west-1"
    );

    // Export streams a header then every record of the subject, decrypted.
    let (header, records) = export(&dpo, "acme", "alice@example.com").await;
    assert_eq!(header.subject, "alice@example.com");
    let mut values: Vec<_> = records.into_iter().map(|r| (r.key, r.value)).collect();
    values.sort();
    assert_eq!(
        values,
        vec![
            ("email".to_string(), b"alice@example.com".to_vec()),
            ("phone".to_string(), b"+44 20 7946 0000".to_vec())
        ]
    );

    // Shred: receipt, then the subject's data is gone; tenant-level data stays.
    let receipt = dpo
        .subjects()
        .shred_subject(pb::ShredSubjectRequest {
            tenant: "acme".into(),
            subject: "alice@example.com".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.records_made_unreadable, 2);
    assert_eq!(receipt.destroyed_key_ids.len(), 1);
    assert_status(
        get_value(&writer, "acme", "alice@example.com", "contact", "email").await,
        Code::NotFound,
        "record not found",
    );
    assert_eq!(
        get_value(&writer, "acme", "", "infra", "region")
            .await
            .unwrap(),
        b"eu-west-1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_and_compare_and_set() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    let mut rec = u.records();
    let mut req = put("t", "bob", "billing", "plan", b"free");
    req.expected_version = Some(0);
    assert_eq!(
        rec.put_record(req.clone())
            .await
            .unwrap()
            .into_inner()
            .version,
        1
    );
    // Absent-only put on an existing record is refused and changes nothing.
    assert_status(
        rec.put_record(req.clone()).await,
        Code::FailedPrecondition,
        "expected_version",
    );
    req.value = b"pro".to_vec();
    req.expected_version = Some(1);
    assert_eq!(
        rec.put_record(req.clone())
            .await
            .unwrap()
            .into_inner()
            .version,
        2
    );
    req.expected_version = Some(1);
    assert_status(
        rec.put_record(req.clone()).await,
        Code::FailedPrecondition,
        "found version 2",
    );
    assert_eq!(
        get_value(&u, "t", "bob", "billing", "plan").await.unwrap(),
        b"pro"
    );

    let del = |v| pb::DeleteRecordRequest {
        tenant: "t".into(),
        subject: "bob".into(),
        category: "billing".into(),
        key: "plan".into(),
        expected_version: v,
    };
    assert_status(
        rec.delete_record(del(Some(1))).await,
        Code::FailedPrecondition,
        "expected_version",
    );
    assert_eq!(
        rec.delete_record(del(Some(2)))
            .await
            .unwrap()
            .into_inner()
            .deleted_version,
        2
    );
    assert_status(
        rec.delete_record(del(None)).await,
        Code::NotFound,
        "record not found",
    );
    assert_status(
        get_value(&u, "t", "bob", "billing", "plan").await,
        Code::NotFound,
        "record not found",
    );
    // Versions keep rising after a delete, so an old ciphertext cannot pass
    // for the new record.
    assert_eq!(put_ok(&u, "t", "bob", "billing", "plan", b"x").await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_paginates_and_filters() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    for i in 0..25 {
        put_ok(
            &u,
            "t",
            &format!("s{}", i % 3),
            if i % 2 == 0 { "even" } else { "odd" },
            &format!("k{i:02}"),
            b"v",
        )
        .await;
    }
    let mut all = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = u
            .records()
            .list_records(pb::ListRecordsRequest {
                tenant: "t".into(),
                page_size: 7,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.records.len() <= 7);
        all.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(all.len(), 25);
    assert_eq!(pages, 4);
    let mut keys: Vec<_> = all.iter().map(|r| r.key.clone()).collect();
    keys.dedup();
    assert_eq!(keys.len(), 25, "no record listed twice");
    assert!(
        all.iter().all(|r| r.subject_blind_id.len() == 64),
        "subjects appear only as blind ids"
    );

    let filtered = u
        .records()
        .list_records(pb::ListRecordsRequest {
            tenant: "t".into(),
            subject: "s0".into(),
            category: "even".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    // i in 0..25 with i%3==0 and i even: 0, 6, 12, 18, 24
    assert_eq!(filtered.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn export_streams_many_pages() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    for i in 0..600 {
        put_ok(
            &u,
            "t",
            "carol",
            "logs",
            &format!("e{i:04}"),
            format!("event {i}").as_bytes(),
        )
        .await;
    }
    let (_, records) = export(&u, "t", "carol").await;
    for r in &records {
        let i: u32 = r.key[1..].parse().unwrap();
        assert_eq!(r.value, format!("event {i}").into_bytes());
    }
    let n = records.len();
    assert_eq!(n, 600);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection_answer() {
    let s = TestServer::start().await;
    let channel = s.anonymous().await.channel();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "strongbox.v1.RecordService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // v1alpha: what grpcio-reflection (Python), many GUI clients and older
    // grpcurl builds speak.
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut refl = ServerReflectionClient::new(channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "strongbox.v1.RetentionService".into(),
            )),
        };
        let msg = refl
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = msg.message_response else {
            panic!("unexpected v1alpha reflection answer: {msg:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for svc in [
        "strongbox.v1.TenantService",
        "strongbox.v1.RecordService",
        "strongbox.v1.SubjectService",
    ] {
        assert!(names.contains(&svc), "{names:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_all_land() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    let mut tasks = Vec::new();
    for w in 0..32 {
        let u = u.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                put_ok(
                    &u,
                    "t",
                    &format!("s{w}"),
                    "c",
                    &format!("k{i}"),
                    format!("{w}-{i}").as_bytes(),
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for w in 0..32 {
        for i in 0..20 {
            let v = get_value(&u, "t", &format!("s{w}"), "c", &format!("k{i}"))
                .await
                .unwrap();
            assert_eq!(v, format!("{w}-{i}").into_bytes());
        }
    }
}

/// `audit verify --records` reads the chain's writes and the stored
/// records a page at a time (10,000 rows): across page boundaries every
/// record is compared once.
#[tokio::test(flavor = "multi_thread")]
async fn verify_records_across_pages_compares_every_record_once() {
    const N: usize = 10_050;
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    put_numbered(std::slice::from_ref(&u), "t", N).await;
    let report = s
        .operator()
        .await
        .audit()
        .verify_audit(pb::VerifyAuditRequest { records: true })
        .await
        .unwrap()
        .into_inner();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records_checked, N as u64, "{report:?}");
    assert_eq!(report.records_unaudited, 0, "{report:?}");
}
