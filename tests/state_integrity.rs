//! Security state is authenticated: someone who can write the database
//! (the SQLite file, or PostgreSQL's tables) but does not hold the root key cannot authenticate with a secret
//! of their own, move a principal to another tenant, grant roles by copying
//! a row, un-revoke a key or lift a tenant's suspension. Each edit is made
//! with the server stopped (so no cache hides it), and the next call that
//! loads the row is refused with DATA_LOSS.
#![allow(clippy::unwrap_used)]

mod common;

use common::stored::Stored;
use common::*;
use strongbox::api::pb;
use strongbox::crypto;
use tonic::Code;

fn db(s: &TestServer) -> Stored {
    s.stored()
}

/// The key id of an API key `sbk_<id>_<secret>`.
fn key_id(api_key: &str) -> String {
    api_key.split('_').nth(1).unwrap().to_owned()
}

/// Lists tenant `tenant`'s records with `api_key`.
async fn list_as(
    s: &TestServer,
    api_key: &str,
    tenant: &str,
) -> Result<tonic::Response<pb::ListRecordsResponse>, tonic::Status> {
    s.client(api_key)
        .await
        .records()
        .list_records(pb::ListRecordsRequest {
            tenant: tenant.into(),
            ..Default::default()
        })
        .await
}

fn principal_of(c: &Stored, api_key: &str) -> String {
    c.one(
        "SELECT principal_id FROM api_keys WHERE key_id = $1",
        &[&key_id(api_key)],
    )
    .text()
}

/// Two tenants: `t` with a reader, `u` with a user and a record. Returns
/// both API keys.
async fn two_tenants(s: &TestServer) -> (String, String) {
    let admin_t = s.tenant("t").await;
    let reader = new_principal(&admin_t, "t", "reader", &["reader"]).await;
    let (_, u) = s.tenant_with_user_key("u").await;
    let user = s.client(&u).await;
    put_ok(&user, "u", "alice", "contact", "email", b"secret of u").await;
    (reader, u)
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_a_secret_hash_replaced_with_the_attackers() {
    let mut s = TestServer::start().await;
    let (reader, _) = two_tenants(&s).await;
    s.stop().await;
    let mine = "ab".repeat(32);
    let c = db(&s);
    let hash = c.blob(&crypto::sha256(mine.as_bytes()));
    let changed = c.execute(
        &format!("UPDATE api_keys SET secret_hash = {hash} WHERE key_id = $1"),
        &[&key_id(&reader)],
    );
    assert_eq!(changed, 1);
    s.restart().await;
    let forged = format!("sbk_{}_{mine}", key_id(&reader));
    let r = list_as(&s, &forged, "t").await;
    assert_status(r, Code::DataLoss, "fails its MAC");
    // The genuine key is refused as well: the row is not to be trusted.
    let r = list_as(&s, &reader, "t").await;
    assert_status(r, Code::DataLoss, "fails its MAC");
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_a_principal_moved_to_another_tenant() {
    let mut s = TestServer::start().await;
    let (reader, _) = two_tenants(&s).await;
    s.stop().await;
    let c = db(&s);
    c.execute(
        "UPDATE principals SET tenant_id = 'u' WHERE id = $1",
        &[&principal_of(&c, &reader)],
    );
    s.restart().await;
    let r = s
        .client(&reader)
        .await
        .records()
        .get_record(get("u", "alice", "contact", "email"))
        .await;
    assert_status(r, Code::DataLoss, "fails its MAC");
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_roles_granted_by_copying_another_principals_row() {
    let mut s = TestServer::start().await;
    let admin_t = s.tenant("t").await;
    let reader = new_principal(&admin_t, "t", "reader", &["reader"]).await;
    let writer = new_principal(&admin_t, "t", "writer", &["writer", "reader"]).await;
    s.stop().await;
    let c = db(&s);
    // The reader takes the writer's roles and MAC (bound to the writer's id).
    c.execute(
        "UPDATE principals SET (roles, mac) = (SELECT roles, mac FROM principals WHERE id = $2) WHERE id = $1",
        &[&principal_of(&c, &reader), &principal_of(&c, &writer)],
    );
    s.restart().await;
    let r = s
        .client(&reader)
        .await
        .records()
        .put_record(put("t", "bob", "contact", "email", b"x"))
        .await;
    assert_status(r, Code::DataLoss, "fails its MAC");
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_a_revoked_key_brought_back_or_a_mac_removed() {
    let mut s = TestServer::start().await;
    let admin_t = s.tenant("t").await;
    let reader = new_principal(&admin_t, "t", "reader", &["reader"]).await;
    let other = new_principal(&admin_t, "t", "other", &["reader"]).await;
    admin_t
        .principals()
        .revoke_api_key(pb::RevokeApiKeyRequest {
            tenant: "t".into(),
            key_id: key_id(&reader),
        })
        .await
        .unwrap();
    s.stop().await;
    let c = db(&s);
    c.execute(
        "UPDATE api_keys SET revoked_at = NULL WHERE key_id = $1",
        &[&key_id(&reader)],
    );
    // A MAC removed is not "a row from before MACs": it is refused too.
    c.execute(
        "UPDATE api_keys SET mac = NULL WHERE key_id = $1",
        &[&key_id(&other)],
    );
    s.restart().await;
    for key in [&reader, &other] {
        let r = list_as(&s, key, "t").await;
        assert_status(r, Code::DataLoss, "fails its MAC");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_a_suspension_lifted_with_another_tenants_row() {
    let mut s = TestServer::start().await;
    let (_, u) = two_tenants(&s).await;
    let op = s.operator().await;
    op.tenants()
        .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
            tenant: "u".into(),
            grace_seconds: Some(3600),
        })
        .await
        .unwrap();
    s.stop().await;
    // Tenant u's row made "active" with tenant t's (active) state and MAC.
    db(&s).execute(
        "UPDATE tenants SET (state, shred_at, mac) = (SELECT state, shred_at, mac FROM tenants WHERE id = 't') WHERE id = 'u'",
        &[],
    );
    s.restart().await;
    let u = s.client(&u).await;
    let r = u
        .records()
        .get_record(get("u", "alice", "contact", "email"))
        .await;
    assert_status(r, Code::DataLoss, "tenant 'u'");
    // The operator's view refuses it too, rather than show it active.
    let r = s
        .operator()
        .await
        .tenants()
        .list_tenants(pb::ListTenantsRequest::default())
        .await;
    assert_status(r, Code::DataLoss, "tenant 'u'");
}

#[tokio::test(flavor = "multi_thread")]
async fn untouched_state_serves_across_restarts_and_rotations() {
    let mut s = TestServer::start().await;
    let (reader, u) = two_tenants(&s).await;
    rotate_root(&s.operator().await).await;
    s.restart().await;
    let u = s.client(&u).await;
    assert_eq!(
        get_value(&u, "u", "alice", "contact", "email")
            .await
            .unwrap(),
        b"secret of u"
    );
    list_as(&s, &reader, "t").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_from_before_row_macs_is_sealed_once_at_start() {
    let mut s = TestServer::start().await;
    let (reader, _) = two_tenants(&s).await;
    s.stop().await;
    // What an older version left: no MACs, and no mark that rows were sealed.
    let c = db(&s);
    for table in ["tenants", "principals", "api_keys"] {
        c.execute(&format!("UPDATE {table} SET mac = NULL"), &[]);
    }
    c.execute("DELETE FROM meta WHERE name = 'state_sealed'", &[]);
    s.restart().await;
    list_as(&s, &reader, "t").await.unwrap();
    let unsealed = c.count(
        "SELECT (SELECT count(*) FROM tenants WHERE mac IS NULL) + (SELECT count(*) FROM principals WHERE mac IS NULL) + (SELECT count(*) FROM api_keys WHERE mac IS NULL)",
        &[],
    );
    assert_eq!(unsealed, 0);
}
