//! `strongbox principal ...`: principals and their API keys.

use anyhow::Context;
use serde_json::json;

use super::super::PrincipalCmd;
use super::*;
use crate::api::pb;
use crate::client::Client;
use crate::vault::fmt_time;

pub(super) fn expires_in(flag: Option<String>) -> anyhow::Result<Option<u64>> {
    flag.map(|d| {
        humantime::parse_duration(&d)
            .map(|d| d.as_secs())
            .with_context(|| format!("--expires-in: '{d}' is not a duration like 90d"))
    })
    .transpose()
}

/// Prints a new API key: alone on stdout, so `KEY=$(strongbox …)` works.
pub(super) fn print_new_key(principal_id: &str, key_id: &str, api_key: &str, json: bool) {
    if json {
        print_json(&json!({ "principal_id": principal_id, "key_id": key_id, "api_key": api_key }));
    } else {
        eprintln!("principal {principal_id}, key id {key_id}: the API key below is shown once");
        println!("{api_key}");
    }
}

pub(super) fn key_line(k: &pb::ApiKeyInfo) -> String {
    let when = |ms: i64| {
        if ms == 0 {
            "-".to_owned()
        } else {
            fmt_time(ms)
        }
    };
    format!(
        "  key {}\tcreated {}\texpires {}\trevoked {}\tlast used {}",
        k.key_id,
        when(k.created_at_unix_ms),
        when(k.expires_at_unix_ms),
        when(k.revoked_at_unix_ms),
        when(k.last_used_at_unix_ms)
    )
}

pub(super) fn key_json(k: &pb::ApiKeyInfo) -> serde_json::Value {
    let when = |ms: i64| (ms != 0).then(|| fmt_time(ms));
    json!({
        "key_id": k.key_id, "principal_id": k.principal_id, "created_at": when(k.created_at_unix_ms),
        "expires_at": when(k.expires_at_unix_ms), "revoked_at": when(k.revoked_at_unix_ms),
        "last_used_at": when(k.last_used_at_unix_ms),
    })
}

pub(super) async fn principal(
    client: &Client,
    cmd: PrincipalCmd,
    json: bool,
) -> anyhow::Result<()> {
    let mut svc = client.principals();
    match cmd {
        PrincipalCmd::Create {
            tenant,
            roles,
            expires_in: exp,
            client_cert_cn,
            enrolment,
            name,
        } => {
            let p = svc
                .create_principal(pb::CreatePrincipalRequest {
                    tenant,
                    name,
                    roles,
                    expires_in_seconds: expires_in(exp)?,
                    client_cert_cn: client_cert_cn.unwrap_or_default(),
                    enrolment: enrolment.unwrap_or_default(),
                })
                .await?
                .into_inner();
            if p.api_key.is_empty() {
                if json {
                    print_json(&json!({ "principal_id": p.principal_id, "key_id": p.key_id }));
                } else {
                    println!(
                        "principal {}, key id {}: its key is the enrolled one, held by its owner",
                        p.principal_id, p.key_id
                    );
                }
            } else {
                print_new_key(&p.principal_id, &p.key_id, &p.api_key, json);
            }
        }
        PrincipalCmd::List { tenant } => {
            let r = svc
                .list_principals(pb::ListPrincipalsRequest { tenant })
                .await?
                .into_inner();
            for p in &r.principals {
                if json {
                    print_json(&json!({
                        "principal_id": p.principal_id, "name": p.name, "roles": p.roles,
                        "created_at": fmt_time(p.created_at_unix_ms),
                        "keys": p.keys.iter().map(key_json).collect::<Vec<_>>(),
                    }));
                } else {
                    println!("{}\t{}\t{}", p.principal_id, p.name, p.roles.join(","));
                    p.keys.iter().for_each(|k| println!("{}", key_line(k)));
                }
            }
        }
        PrincipalCmd::CreateKey {
            tenant,
            expires_in: exp,
            principal_id,
        } => {
            let k = svc
                .create_api_key(pb::CreateApiKeyRequest {
                    tenant,
                    principal_id: principal_id.clone(),
                    expires_in_seconds: expires_in(exp)?,
                })
                .await?
                .into_inner();
            print_new_key(&principal_id, &k.key_id, &k.api_key, json);
        }
        PrincipalCmd::RevokeKey { tenant, key_id } => {
            let k = svc
                .revoke_api_key(pb::RevokeApiKeyRequest { tenant, key_id })
                .await?
                .into_inner();
            if json {
                print_json(&key_json(&k));
            } else {
                println!("revoked key {} of principal {}", k.key_id, k.principal_id);
            }
        }
    }
    Ok(())
}
