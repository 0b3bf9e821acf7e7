//! API-key lifecycle: list without secrets, rotate without downtime,
//! revoke (refused on the very next call), expire, last use.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use prost::Message;
use strongbox::api::pb;
use strongbox::client::Client;
use tonic::Code;

async fn list(admin: &Client, tenant: &str) -> Vec<pb::PrincipalInfo> {
    admin
        .principals()
        .list_principals(pb::ListPrincipalsRequest {
            tenant: tenant.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .principals
}

async fn create(
    admin: &Client,
    tenant: &str,
    name: &str,
    roles: &[&str],
    expires: Option<u64>,
) -> pb::CreatePrincipalResponse {
    admin
        .principals()
        .create_principal(pb::CreatePrincipalRequest {
            tenant: tenant.into(),
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            expires_in_seconds: expires,
            client_cert_cn: String::new(),
            enrolment: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn revoke(
    admin: &Client,
    tenant: &str,
    key_id: &str,
) -> Result<pb::ApiKeyInfo, tonic::Status> {
    admin
        .principals()
        .revoke_api_key(pb::RevokeApiKeyRequest {
            tenant: tenant.into(),
            key_id: key_id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_without_downtime_then_revoke() {
    let s = TestServer::start().await;
    let admin = s.tenant("t").await;
    let p = create(&admin, "t", "billing", &["writer", "reader"], None).await;
    let old = admin.as_key(&p.api_key).unwrap();
    put_ok(&old, "t", "s", "c", "k", b"v1").await;

    // Step 1: a second key; both work.
    let second = admin
        .principals()
        .create_api_key(pb::CreateApiKeyRequest {
            tenant: "t".into(),
            principal_id: p.principal_id.clone(),
            expires_in_seconds: None,
        })
        .await
        .unwrap()
        .into_inner();
    let new = admin.as_key(&second.api_key).unwrap();
    assert_eq!(get_value(&new, "t", "s", "c", "k").await.unwrap(), b"v1");
    assert_eq!(get_value(&old, "t", "s", "c", "k").await.unwrap(), b"v1");

    // Step 2: revoke the first; the very next call with it is refused.
    let info = revoke(&admin, "t", &p.key_id).await.unwrap();
    assert!(info.revoked_at_unix_ms > 0);
    assert_status(
        get_value(&old, "t", "s", "c", "k").await,
        Code::Unauthenticated,
        "invalid API key",
    );
    assert_eq!(get_value(&new, "t", "s", "c", "k").await.unwrap(), b"v1");

    // Listed with both keys, the first revoked; no secret anywhere.
    let principals = list(&admin, "t").await;
    let billing = principals.iter().find(|x| x.name == "billing").unwrap();
    assert_eq!(billing.keys.len(), 2);
    assert!(
        billing
            .keys
            .iter()
            .any(|k| k.key_id == p.key_id && k.revoked_at_unix_ms > 0)
    );
    assert!(
        billing
            .keys
            .iter()
            .any(|k| k.key_id == second.key_id && k.revoked_at_unix_ms == 0)
    );
    let wire = pb::ListPrincipalsResponse {
        principals: principals.clone(),
    }
    .encode_to_vec();
    for key in [&p.api_key, &second.api_key] {
        let secret = key.rsplit('_').next().unwrap();
        assert!(
            !contains(&wire, secret.as_bytes()),
            "a listing carried a secret"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_call_succeeds_after_revoke_returns_even_under_concurrent_use() {
    let s = TestServer::start().await;
    let admin = s.tenant("t").await;
    let p = create(&admin, "t", "busy", &["reader"], None).await;
    put_ok(
        &s.principal(&admin, "t", "w", &["writer"]).await,
        "t",
        "s",
        "c",
        "k",
        b"v",
    )
    .await;
    let user = admin.as_key(&p.api_key).unwrap();
    let revoked_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (user, revoked_at) = (user.clone(), revoked_at.clone());
        tasks.push(tokio::spawn(async move {
            let mut late = 0;
            for _ in 0..300 {
                let started = Instant::now();
                let r = get_value(&user, "t", "s", "c", "k").await;
                let done = *revoked_at.lock().unwrap();
                if r.is_ok() && done.is_some_and(|t| started > t) {
                    late += 1;
                }
                if r.is_err() && done.is_some() {
                    break;
                }
            }
            late
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    revoke(&admin, "t", &p.key_id).await.unwrap();
    *revoked_at.lock().unwrap() = Some(Instant::now());
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            0,
            "a call that started after the revoke succeeded"
        );
    }
    assert_status(
        get_value(&user, "t", "s", "c", "k").await,
        Code::Unauthenticated,
        "invalid API key",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_expire() {
    let s = TestServer::start().await;
    let admin = s.tenant("t").await;
    let p = create(&admin, "t", "temp", &["reader"], Some(1)).await;
    let user = admin.as_key(&p.api_key).unwrap();
    assert_status(
        get_value(&user, "t", "s", "c", "k").await,
        Code::NotFound,
        "record not found",
    );
    let listed = list(&admin, "t").await;
    let k = &listed.iter().find(|x| x.name == "temp").unwrap().keys[0];
    assert!(k.expires_at_unix_ms > 0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_status(
        get_value(&user, "t", "s", "c", "k").await,
        Code::Unauthenticated,
        "invalid API key",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn last_use_is_recorded() {
    let s = TestServer::start().await;
    let admin = s.tenant("t").await;
    let p = create(&admin, "t", "app", &["reader"], None).await;
    let before = strongbox::now_ms();
    let _ = get_value(&admin.as_key(&p.api_key).unwrap(), "t", "s", "c", "k").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = list(&admin, "t").await;
        let k = &listed.iter().find(|x| x.name == "app").unwrap().keys[0];
        if k.last_used_at_unix_ms >= before {
            break;
        }
        assert!(Instant::now() < deadline, "last use never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_of_another_tenant_are_not_found() {
    let s = TestServer::start().await;
    let admin_a = s.tenant("ta").await;
    let admin_b = s.tenant("tb").await;
    let pb_ = create(&admin_b, "tb", "victim", &["reader"], None).await;
    assert_status(
        revoke(&admin_a, "ta", &pb_.key_id).await,
        Code::NotFound,
        "not found",
    );
    assert_status(
        revoke(&admin_a, "tb", &pb_.key_id).await,
        Code::NotFound,
        "tenant 'tb' not found",
    );
    assert_status(
        admin_a
            .principals()
            .create_api_key(pb::CreateApiKeyRequest {
                tenant: "ta".into(),
                principal_id: pb_.principal_id.clone(),
                expires_in_seconds: None,
            })
            .await,
        Code::NotFound,
        "principal",
    );
    // The victim's key still works.
    assert_status(
        get_value(&admin_b.as_key(&pb_.api_key).unwrap(), "tb", "s", "c", "k").await,
        Code::NotFound,
        "record not found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_cannot_add_an_admin_even_when_none_has_a_live_key() {
    let s = TestServer::start().await;
    let op = s.operator().await;
    op.tenants()
        .create_tenant(pb::CreateTenantRequest {
            tenant: "t".into(),
            name: String::new(),
        })
        .await
        .unwrap();
    let first = create(&op, "t", "first-admin", &["admin"], None).await;
    let admin = op.as_key(&first.api_key).unwrap();
    let second = || pb::CreatePrincipalRequest {
        tenant: "t".into(),
        name: "second".into(),
        roles: vec!["admin".into()],
        ..Default::default()
    };
    assert_status(
        op.principals().create_principal(second()).await,
        Code::FailedPrecondition,
        "already has principals",
    );
    // The admin revokes its own (last) key: the operator still cannot step
    // in directly; that takes a break-glass recovery (tests/admin_recovery.rs).
    revoke(&admin, "t", &first.key_id).await.unwrap();
    assert_status(
        op.principals().create_principal(second()).await,
        Code::FailedPrecondition,
        "strongbox tenant recover-admin t",
    );
}
