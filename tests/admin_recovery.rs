//! The operator's ways into a tenant, and their limits: a first admin from
//! the admin's own enrolment (the operator never holds the key), and a
//! break-glass admin recovery that takes effect only after the configured
//! delay, is audited, shows in `tenant get`, can be called off by the
//! tenant's admins, and cannot be brought forward by editing the database.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use strongbox::api::pb;
use strongbox::api_key;
use strongbox::client::Client;
use tonic::Code;

fn create_admin(tenant: &str, name: &str, enrolment: &str) -> pb::CreatePrincipalRequest {
    pb::CreatePrincipalRequest {
        tenant: tenant.into(),
        name: name.into(),
        roles: vec!["admin".into()],
        enrolment: enrolment.into(),
        ..Default::default()
    }
}

async fn recover(op: &Client, tenant: &str) -> Result<pb::Tenant, tonic::Status> {
    op.tenants()
        .request_admin_recovery(pb::AdminRecoveryRequest {
            tenant: tenant.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn tenant_get(c: &Client, tenant: &str) -> pb::Tenant {
    c.tenants()
        .get_tenant(pb::GetTenantRequest {
            tenant: tenant.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// (action, outcome) of tenant `tenant`'s audit entries, oldest first.
async fn audited(op: &Client, tenant: &str) -> Vec<(String, String)> {
    audit_trail(op, tenant)
        .await
        .into_iter()
        .map(|(a, o, _)| (a, o))
        .collect()
}

async fn server_with_delay(delay: Duration) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&dir);
    config.limits.admin_recovery_delay = delay;
    TestServer::start_with(dir, config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_takes_effect_only_after_the_delay_and_is_audited() {
    let s = server_with_delay(Duration::from_secs(2)).await;
    let op = s.operator().await;
    let admin = tenant_with_admin(&op, "t").await;
    let admin = op.as_key(&admin).unwrap();
    let key_id = admin_key_id(&admin, "t").await;
    // The tenant's only admin loses its key.
    admin
        .principals()
        .revoke_api_key(pb::RevokeApiKeyRequest {
            tenant: "t".into(),
            key_id,
        })
        .await
        .unwrap();

    // No admin holds a live key, and still the operator cannot step in.
    assert_status(
        op.principals()
            .create_principal(create_admin("t", "sneaky", ""))
            .await,
        Code::FailedPrecondition,
        "recover-admin",
    );

    let asked_at = strongbox::now_ms();
    let pending = recover(&op, "t").await.unwrap();
    let due = pending.admin_recovery_at_unix_ms;
    assert!(
        (asked_at + 2000..asked_at + 3000).contains(&due),
        "due {due}, asked {asked_at}"
    );
    assert_eq!(tenant_get(&op, "t").await.admin_recovery_at_unix_ms, due);
    // Asking again does not move the clock.
    assert_eq!(
        recover(&op, "t").await.unwrap().admin_recovery_at_unix_ms,
        due
    );
    // Before it takes effect: refused, naming when.
    assert_status(
        op.principals()
            .create_principal(create_admin("t", "early", ""))
            .await,
        Code::FailedPrecondition,
        "takes effect at",
    );

    let wait = due - strongbox::now_ms() + 100;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let restored = op
        .principals()
        .create_principal(create_admin("t", "restored", ""))
        .await
        .unwrap()
        .into_inner();
    let restored = op.as_key(&restored.api_key).unwrap();
    new_principal(&restored, "t", "reader", &["reader"]).await;

    // Used up: the next one needs a new request and a new wait.
    assert_eq!(tenant_get(&op, "t").await.admin_recovery_at_unix_ms, 0);
    assert_status(
        op.principals()
            .create_principal(create_admin("t", "again", ""))
            .await,
        Code::FailedPrecondition,
        "recover-admin",
    );

    let actions = audited(&op, "t").await;
    let ok = |a: &str| actions.iter().filter(|(x, o)| x == a && o == "ok").count();
    assert_eq!(ok("tenant.admin-recovery"), 2, "{actions:?}");
    // The first admin, and the one recovery; the refused attempts are
    // audited as refusals.
    assert_eq!(ok("tenant.bootstrap-admin"), 2, "{actions:?}");
    assert_eq!(
        actions
            .iter()
            .filter(|(x, o)| x == "tenant.bootstrap-admin" && o != "ok")
            .count(),
        3,
        "{actions:?}"
    );
}

/// The key id of the admin's (only) key.
async fn admin_key_id(admin: &Client, tenant: &str) -> String {
    admin
        .principals()
        .list_principals(pb::ListPrincipalsRequest {
            tenant: tenant.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .principals[0]
        .keys[0]
        .key_id
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_calls_a_recovery_off() {
    let s = server_with_delay(Duration::from_millis(500)).await;
    let op = s.operator().await;
    let admin = tenant_with_admin(&op, "t").await;
    let admin = op.as_key(&admin).unwrap();
    recover(&op, "t").await.unwrap();
    // The tenant's admin sees it, and calls it off.
    assert_ne!(tenant_get(&admin, "t").await.admin_recovery_at_unix_ms, 0);
    let after = admin
        .tenants()
        .cancel_admin_recovery(pb::AdminRecoveryRequest { tenant: "t".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.admin_recovery_at_unix_ms, 0);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_status(
        op.principals()
            .create_principal(create_admin("t", "sneaky", ""))
            .await,
        Code::FailedPrecondition,
        "recover-admin",
    );
    // Another tenant's admin cannot call off this tenant's recovery.
    let other = tenant_with_admin(&op, "u").await;
    let other = op.as_key(&other).unwrap();
    recover(&op, "t").await.unwrap();
    assert_status(
        other
            .tenants()
            .cancel_admin_recovery(pb::AdminRecoveryRequest { tenant: "t".into() })
            .await,
        Code::NotFound,
        "",
    );
    assert!(
        audited(&op, "t")
            .await
            .contains(&("tenant.admin-recovery.cancel".into(), "ok".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_delay_is_a_day() {
    let s = TestServer::start().await;
    let op = s.operator().await;
    tenant_with_admin(&op, "t").await;
    let asked_at = strongbox::now_ms();
    let due = recover(&op, "t").await.unwrap().admin_recovery_at_unix_ms;
    let day = 24 * 3600 * 1000;
    assert!((asked_at + day..asked_at + day + 60_000).contains(&due));
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_a_recovery_brought_forward_in_the_database() {
    let mut s = TestServer::start().await;
    let op = s.operator().await;
    tenant_with_admin(&op, "t").await;
    recover(&op, "t").await.unwrap();
    s.stop().await;
    let changed = s.stored().execute(
        "UPDATE tenants SET admin_recovery_at = 1 WHERE id = 't'",
        &[],
    );
    assert_eq!(changed, 1);
    s.restart().await;
    let op = s.operator().await;
    assert_status(
        op.principals()
            .create_principal(create_admin("t", "forged", ""))
            .await,
        Code::DataLoss,
        "MAC",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrolled_first_admin_key_never_reaches_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&dir);
    config.limits.require_admin_enrolment = true;
    let s = TestServer::start_with(dir, config).await;
    let op = s.operator().await;
    op.tenants()
        .create_tenant(pb::CreateTenantRequest {
            tenant: "t".into(),
            name: String::new(),
        })
        .await
        .unwrap();
    assert_status(
        op.principals()
            .create_principal(create_admin("t", "admin", ""))
            .await,
        Code::InvalidArgument,
        "enrolment: this server never hands an operator",
    );
    assert_status(
        op.principals()
            .create_principal(create_admin("t", "admin", "sbe_nothex_00"))
            .await,
        Code::InvalidArgument,
        "enrolment: must be an enrolment",
    );

    // The tenant's own person makes the key; only the enrolment travels.
    let (key, enrolment) = api_key::enrol();
    let created = op
        .principals()
        .create_principal(create_admin("t", "admin", &enrolment.token()))
        .await
        .unwrap()
        .into_inner();
    assert!(created.api_key.is_empty(), "the operator gets no key");
    assert_eq!(created.key_id, enrolment.key_id);
    let admin = op.as_key(key.expose()).unwrap();
    let reader = new_principal(&admin, "t", "reader", &["reader"]).await;
    assert!(reader.starts_with("sbk_"));
    // An enrolment cannot register a key id twice.
    let (_, again) = api_key::enrol();
    let copy = api_key::Enrolment {
        key_id: enrolment.key_id.clone(),
        ..again
    };
    assert_status(
        admin
            .principals()
            .create_principal(pb::CreatePrincipalRequest {
                tenant: "t".into(),
                name: "dup".into(),
                roles: vec!["writer".into()],
                enrolment: copy.token(),
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
        "",
    );
}
