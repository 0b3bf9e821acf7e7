//! Every RPC's bad input gets the status the spec names, with a message
//! that names the field and the rule; nothing is written.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use strongbox::api::pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn fail_authentication() {
    let s = TestServer::start().await;
    let anon = s.anonymous().await;
    assert_status(
        anon.tenants()
            .list_tenants(pb::ListTenantsRequest::default())
            .await,
        Code::Unauthenticated,
        "missing authorization",
    );
    let real = s.operator_key.clone();
    let wrong_secret = format!(
        "{}{}",
        &real[..real.len() - 1],
        if real.ends_with('0') { '1' } else { '0' }
    );
    let unknown_id = format!("sbk_0000000000000000_{}", &real[real.len() - 64..]);
    for bad in [
        "sbk_nope",
        "not-a-key",
        wrong_secret.as_str(),
        unknown_id.as_str(),
    ] {
        let c = s.client(bad).await;
        // One message for every failure: no oracle for which part was wrong.
        assert_status(
            c.tenants()
                .list_tenants(pb::ListTenantsRequest::default())
                .await,
            Code::Unauthenticated,
            "invalid API key",
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_tenant_rpcs() {
    let s = TestServer::start().await;
    let op = s.operator().await;
    let mut t = op.tenants();
    let create = |id: &str, name: &str| pb::CreateTenantRequest {
        tenant: id.into(),
        name: name.into(),
    };
    assert_status(
        t.create_tenant(create("", "x")).await,
        Code::InvalidArgument,
        "tenant: must be 1-64",
    );
    assert_status(
        t.create_tenant(create("Acme", "x")).await,
        Code::InvalidArgument,
        "tenant: may contain only",
    );
    assert_status(
        t.create_tenant(create(&"a".repeat(65), "x")).await,
        Code::InvalidArgument,
        "tenant:",
    );
    assert_status(
        t.create_tenant(create("ok", &"n".repeat(300))).await,
        Code::InvalidArgument,
        "name:",
    );
    t.create_tenant(create("ok", "Ok")).await.unwrap();
    assert_status(
        t.create_tenant(create("ok", "again")).await,
        Code::AlreadyExists,
        "already exists",
    );

    assert_status(
        t.get_tenant(pb::GetTenantRequest {
            tenant: "a b".into(),
        })
        .await,
        Code::InvalidArgument,
        "tenant:",
    );
    assert_status(
        t.get_tenant(pb::GetTenantRequest {
            tenant: "nope".into(),
        })
        .await,
        Code::NotFound,
        "tenant 'nope' not found",
    );
    assert_status(
        t.list_tenants(pb::ListTenantsRequest {
            page_size: 1001,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "page_size: must be at most 1000",
    );
    assert_status(
        t.list_tenants(pb::ListTenantsRequest {
            page_token: "NOT A TOKEN".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "page_token:",
    );
    assert_status(
        t.schedule_tenant_shred(pb::ScheduleTenantShredRequest {
            tenant: "nope".into(),
            grace_seconds: None,
        })
        .await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        t.cancel_tenant_shred(pb::CancelTenantShredRequest {
            tenant: "ok".into(),
        })
        .await,
        Code::FailedPrecondition,
        "no shred scheduled",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_principal_rpcs() {
    let s = TestServer::start().await;
    let admin = s.tenant("t").await;
    let mut p = admin.principals();
    let req = |name: &str, roles: &[&str]| pb::CreatePrincipalRequest {
        tenant: "t".into(),
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    };
    assert_status(
        p.create_principal(req("x", &[])).await,
        Code::InvalidArgument,
        "roles: at least one",
    );
    assert_status(
        p.create_principal(req("x", &["root"])).await,
        Code::InvalidArgument,
        "roles: unknown role 'root'",
    );
    assert_status(
        p.create_principal(req("x", &["operator"])).await,
        Code::InvalidArgument,
        "roles: operator is a platform role",
    );
    assert_status(
        p.create_principal(req("", &["reader"])).await,
        Code::InvalidArgument,
        "name: must be 1-128",
    );
    assert_status(
        p.create_principal(req("a\u{7}", &["reader"])).await,
        Code::InvalidArgument,
        "name: must not contain control",
    );
    p.create_principal(req("x", &["reader"])).await.unwrap();
    assert_status(
        p.create_principal(req("x", &["reader"])).await,
        Code::AlreadyExists,
        "name: a principal named 'x'",
    );

    // The operator may create only a tenant's first admin.
    let op = s.operator().await;
    assert_status(
        op.principals()
            .create_principal(req("second-admin", &["admin"]))
            .await,
        Code::FailedPrecondition,
        "already has principals",
    );
    assert_status(
        op.principals()
            .create_principal(req("w", &["writer"]))
            .await,
        Code::PermissionDenied,
        "only a tenant's first admin",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_record_rpcs() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    let mut r = u.records();
    let cases: Vec<(pb::PutRecordRequest, Code, &str)> = vec![
        (
            put("", "s", "c", "k", b"v"),
            Code::InvalidArgument,
            "tenant:",
        ),
        (
            put("t", &"s".repeat(257), "c", "k", b"v"),
            Code::InvalidArgument,
            "subject: must be 1-256 bytes",
        ),
        (
            put("t", "s", "", "k", b"v"),
            Code::InvalidArgument,
            "category: must be 1-64",
        ),
        (
            put("t", "s", "Contact", "k", b"v"),
            Code::InvalidArgument,
            "category: may contain only",
        ),
        (
            put("t", "s", "c", "", b"v"),
            Code::InvalidArgument,
            "key: must be 1-512",
        ),
        (
            put("t", "s", "c", &"k".repeat(513), b"v"),
            Code::InvalidArgument,
            "key: must be 1-512",
        ),
        (
            put("t", "s", "c", "a\nb", b"v"),
            Code::InvalidArgument,
            "key: must not contain control",
        ),
        (
            pb::PutRecordRequest {
                content_type: "x".repeat(129),
                ..put("t", "s", "c", "k", b"v")
            },
            Code::InvalidArgument,
            "content_type: must be at most 128",
        ),
        (
            put("t", "s", "c", "k", &vec![0u8; (1 << 20) + 1]),
            Code::ResourceExhausted,
            "value: 1048577 bytes exceeds the limit of 1048576",
        ),
        (
            pb::PutRecordRequest {
                expected_version: Some(4),
                ..put("t", "s", "c", "k", b"v")
            },
            Code::FailedPrecondition,
            "expected_version: expected version 4, but the record does not exist",
        ),
    ];
    for (req, code, needle) in cases {
        assert_status(r.put_record(req).await, code, needle);
    }
    // Past the transport's decoding limit the refusal is the same kind.
    assert_status(
        r.put_record(put("t", "s", "c", "k", &vec![0u8; 3 << 20]))
            .await,
        Code::ResourceExhausted,
        "value: the request is larger than the server accepts; values may be at most 1048576 bytes",
    );
    // None of the refused puts wrote anything.
    let listed = r
        .list_records(pb::ListRecordsRequest {
            tenant: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.records.is_empty());
    // A value at exactly the limit is accepted.
    put_ok(&u, "t", "s", "c", "max", &vec![7u8; 1 << 20]).await;
    assert_eq!(
        get_value(&u, "t", "s", "c", "max").await.unwrap().len(),
        1 << 20
    );

    assert_status(
        r.get_record(get("t", "s", "c", "")).await,
        Code::InvalidArgument,
        "key:",
    );
    assert_status(
        r.get_record(get("t", "s", "BAD", "k")).await,
        Code::InvalidArgument,
        "category:",
    );
    assert_status(
        r.get_record(get("t", "s", "c", "absent")).await,
        Code::NotFound,
        "record not found",
    );
    assert_status(
        r.delete_record(pb::DeleteRecordRequest {
            tenant: "t".into(),
            category: "c".into(),
            key: "\u{0}".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "key:",
    );
    let list = |size, token: &str| pb::ListRecordsRequest {
        tenant: "t".into(),
        page_size: size,
        page_token: token.into(),
        ..Default::default()
    };
    assert_status(
        r.list_records(list(5000, "")).await,
        Code::InvalidArgument,
        "page_size: must be at most 1000",
    );
    assert_status(
        r.list_records(list(0, "zz")).await,
        Code::InvalidArgument,
        "page_token:",
    );
    assert_status(
        r.list_records(list(0, "00000009ab")).await,
        Code::InvalidArgument,
        "page_token:",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_subject_rpcs() {
    let s = TestServer::start().await;
    let (_, u) = s.tenant_with_user("t").await;
    let mut subj = u.subjects();
    assert_status(
        subj.shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "subject: is required",
    );
    assert_status(
        subj.shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: "nobody".into(),
        })
        .await,
        Code::NotFound,
        "subject not found",
    );
    assert_status(
        subj.export_subject(pb::ExportSubjectRequest {
            tenant: "t".into(),
            subject: "nobody".into(),
        })
        .await
        .map(|_| ()),
        Code::NotFound,
        "subject not found",
    );
    assert_status(
        subj.export_subject(pb::ExportSubjectRequest {
            tenant: "t".into(),
            subject: "x".repeat(300),
        })
        .await
        .map(|_| ()),
        Code::InvalidArgument,
        "subject: must be 1-256",
    );
    assert_status(
        subj.verify_receipt(pb::VerifyReceiptRequest { receipt: None })
            .await,
        Code::InvalidArgument,
        "receipt: is required",
    );
    put_ok(&u, "t", "dave", "c", "k", b"v").await;
    let receipt = subj
        .shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: "dave".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut bad_hex = receipt.clone();
    bad_hex.mac = "zz".into();
    assert_status(
        subj.verify_receipt(pb::VerifyReceiptRequest {
            receipt: Some(bad_hex),
        })
        .await,
        Code::InvalidArgument,
        "receipt.mac: must be hex",
    );
    // Deletion requests are retried: a second shred of the same subject
    // succeeds with the original receipt, which still verifies.
    let again = subj
        .shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: "dave".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, receipt);
    assert!(receipt_valid(&u, &again).await);
    // A subject never stored is still NOT_FOUND.
    assert_status(
        subj.shred_subject(pb::ShredSubjectRequest {
            tenant: "t".into(),
            subject: "never-seen".into(),
        })
        .await,
        Code::NotFound,
        "subject not found",
    );
}

/// A `tenant` field sent as a varint where the method wants a string.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(uint64, tag = "1")]
    tenant: u64,
}

/// A `tenant` field whose bytes are not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct NotUtf8 {
    #[prost(bytes = "vec", tag = "1")]
    tenant: Vec<u8>,
}

async fn raw_get_tenant<M>(s: &TestServer, msg: M) -> tonic::Status
where
    M: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(s.anonymous().await.channel());
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<M, pb::Tenant> = tonic_prost::ProstCodec::default();
    grpc.unary(
        tonic::Request::new(msg),
        http::uri::PathAndQuery::from_static("/strongbox.v1.TenantService/GetTenant"),
        codec,
    )
    .await
    .unwrap_err()
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_undecodable_requests_are_invalid_argument_not_internal() {
    let s = TestServer::start().await;
    for status in [
        raw_get_tenant(&s, WrongWireType { tenant: 7 }).await,
        raw_get_tenant(
            &s,
            NotUtf8 {
                tenant: vec![0xff, 0xfe, 0x41],
            },
        )
        .await,
    ] {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status
                .message()
                .starts_with("request: not a valid protobuf message for this method: ")
                && status.message().contains("tenant"),
            "{}",
            status.message()
        );
    }
    // Refused before any handler, and audited all the same.
    let trail = audit_trail(&s.operator().await, "").await;
    let refused: Vec<_> = trail
        .iter()
        .filter(|(a, o, r)| {
            a == "rpc.refused"
                && o == "failed"
                && r == "rpc:/strongbox.v1.TenantService/GetTenant undecodable"
        })
        .collect();
    assert_eq!(refused.len(), 2, "{trail:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_undecodable_requests_is_coalesced() {
    let mut s = TestServer::start().await;
    for _ in 0..200 {
        raw_get_tenant(&s, WrongWireType { tenant: 7 }).await;
    }
    s.stop().await;
    let stored = s.stored();
    let single = stored.count(
        "SELECT count(*) FROM audit_log WHERE action = 'rpc.refused'",
        &[],
    );
    let coalesced = stored
        .one(
            "SELECT resource FROM audit_log WHERE action = 'calls.failures-coalesced'",
            &[],
        )
        .text();
    assert_eq!(single, 20, "the burst, one entry each");
    assert!(
        coalesced.contains("count:180") && coalesced.contains("reasons:undecodable"),
        "{coalesced}"
    );
}

/// A get carrying `entries` extra metadata entries of `value_len` bytes each.
fn get_with_metadata(entries: usize, value_len: usize) -> tonic::Request<pb::GetRecordRequest> {
    let mut req = tonic::Request::new(get("t", "ann", "c", "k"));
    let value: tonic::metadata::MetadataValue<_> = "a".repeat(value_len).parse().unwrap();
    for i in 0..entries {
        let name = format!("x-pad-{i}");
        req.metadata_mut().insert(
            tonic::metadata::MetadataKey::from_bytes(name.as_bytes()).unwrap(),
            value.clone(),
        );
    }
    req
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_metadata_gets_a_grpc_status_and_the_connection_stays_up() {
    let mut s = TestServer::start().await;
    let (_, user) = s.tenant_with_user("t").await;
    put_ok(&user, "t", "ann", "c", "k", b"v").await;
    // Under the 16 KiB limit: served.
    let served = user.records().get_record(get_with_metadata(10, 1024)).await;
    assert_eq!(served.unwrap().into_inner().value, b"v");
    // Over it, three ways: 40 entries of 1 KiB, 1,000 small entries, and
    // one 64 KiB entry.
    for (entries, value_len) in [(40, 1024), (1000, 8), (1, 64 * 1024)] {
        let refused = user
            .records()
            .get_record(get_with_metadata(entries, value_len))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(
            refused.message().starts_with("request metadata: ")
                && refused.message().contains("over the limit of 16384"),
            "{entries} x {value_len}: {refused:?}"
        );
        // The same connection serves the next call.
        assert_eq!(get_value(&user, "t", "ann", "c", "k").await.unwrap(), b"v");
    }
    s.stop().await;
    let refused = s.stored().rows(
        "SELECT resource, code FROM audit_log WHERE action = 'rpc.refused'",
        &[],
    );
    assert_eq!(refused.len(), 3, "one entry per refused call: {refused:?}");
    for row in &refused {
        let resource = row[0].text();
        assert!(
            resource.contains("GetRecord") && resource.contains("metadata too large"),
            "{resource}"
        );
        assert_eq!(row[1].int(), Code::ResourceExhausted as i64, "{resource}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_past_the_http2_limit_leaves_the_server_serving() {
    let s = TestServer::start().await;
    let (admin, key) = s.tenant_with_user_key("t").await;
    let user = admin.as_key(&key).unwrap();
    put_ok(&user, "t", "ann", "c", "k", b"v").await;
    // 320 KiB: past HTTP/2's 256 KiB header-list limit, refused by HTTP/2
    // itself (no gRPC status can be given there).
    let refused = user
        .records()
        .get_record(get_with_metadata(320, 1024))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // The server still serves, on this connection or a new one.
    let again = match get_value(&user, "t", "ann", "c", "k").await {
        Ok(v) => v,
        Err(_) => {
            let fresh = s.client(&key).await;
            get_value(&fresh, "t", "ann", "c", "k").await.unwrap()
        }
    };
    assert_eq!(again, b"v");
}

/// Sends the request body as given bytes; reads the answer's as bytes.
#[derive(Clone, Copy, Default)]
struct RawCodec;

#[derive(Clone, Copy, Default)]
struct RawCoder;

impl tonic::codec::Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }

    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bytes_to_every_rpc_are_invalid_argument_never_internal() {
    use prost::Message;
    // Every call here fails; the per-address flood guard is not under test.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&dir);
    config.load.auth_failure_burst = 1_000_000;
    let s = TestServer::start_with(dir, config).await;
    let set =
        prost_types::FileDescriptorSet::decode(strongbox::api::pb::FILE_DESCRIPTOR_SET).unwrap();
    let random: Vec<u8> = strongbox::crypto::random_bytes::<32>().to_vec();
    let payloads: [(&str, Vec<u8>); 4] = [
        ("random bytes", random),
        // Field 1, length-delimited, says 10 bytes and has 2.
        ("a truncated field", vec![0x0a, 0x0a, b'A', b'B']),
        // Field 1 as a varint (most methods want a string there).
        ("a wrong wire type", vec![0x08, 0x07]),
        ("invalid UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
    ];
    let mut rpcs = 0;
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                rpcs += 1;
                for (what, body) in &payloads {
                    let mut grpc = tonic::client::Grpc::new(s.anonymous().await.channel());
                    grpc.ready().await.unwrap();
                    let path_q = http::uri::PathAndQuery::try_from(path.as_str()).unwrap();
                    let status = if method.server_streaming() {
                        grpc.server_streaming(tonic::Request::new(body.clone()), path_q, RawCodec)
                            .await
                            .err()
                    } else {
                        grpc.unary(tonic::Request::new(body.clone()), path_q, RawCodec)
                            .await
                            .err()
                    };
                    let status =
                        status.unwrap_or_else(|| panic!("{path} with {what}: answered OK"));
                    // Bytes that happen to decode (fields the message does
                    // not have are skipped) reach authentication instead.
                    assert!(
                        matches!(status.code(), Code::InvalidArgument | Code::Unauthenticated),
                        "{path} with {what}: {status:?}"
                    );
                    if *what == "a truncated field" {
                        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
                    }
                }
            }
        }
    }
    assert!(rpcs > 30, "only {rpcs} RPCs in the descriptor set");
}
