//! `strongbox tenant ...`: tenants, their shred schedule, admin recovery and
//! legal holds.

use anyhow::Context;
use serde_json::json;

use super::super::TenantCmd;
use super::super::output::{tenant_json, tenant_line};
use super::*;
use crate::api::pb;
use crate::client::Client;
use crate::vault::fmt_time;

pub(super) async fn tenant(client: &Client, cmd: TenantCmd, json: bool) -> anyhow::Result<()> {
    let mut svc = client.tenants();
    let show = |t: &pb::Tenant| {
        if json {
            print_json(&tenant_json(t));
        } else {
            println!("{}", tenant_line(t));
        }
    };
    match cmd {
        TenantCmd::Create { tenant, name } => {
            let t = svc
                .create_tenant(pb::CreateTenantRequest {
                    tenant,
                    name: name.unwrap_or_default(),
                })
                .await?
                .into_inner();
            show(&t);
        }
        TenantCmd::Get { tenant } => show(
            &svc.get_tenant(pb::GetTenantRequest { tenant })
                .await?
                .into_inner(),
        ),
        TenantCmd::List => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = svc
                    .list_tenants(pb::ListTenantsRequest {
                        page_size: 1000,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.tenants);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            if json {
                print_json(&json!(all.iter().map(tenant_json).collect::<Vec<_>>()));
            } else {
                all.iter().for_each(|t| println!("{}", tenant_line(t)));
            }
        }
        TenantCmd::Shred { tenant, grace } => {
            let grace_seconds = grace
                .map(|g| {
                    humantime::parse_duration(&g)
                        .with_context(|| format!("--grace: '{g}' is not a duration like 7d or 0s"))
                })
                .transpose()?
                .map(|d| d.as_secs());
            let t = svc
                .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
                    tenant,
                    grace_seconds,
                })
                .await?
                .into_inner();
            show(&t);
        }
        TenantCmd::CancelShred { tenant } => show(
            &svc.cancel_tenant_shred(pb::CancelTenantShredRequest { tenant })
                .await?
                .into_inner(),
        ),
        TenantCmd::RecoverAdmin { tenant } => show(
            &svc.request_admin_recovery(pb::AdminRecoveryRequest { tenant })
                .await?
                .into_inner(),
        ),
        TenantCmd::Hold { tenant, reason } => {
            let h = svc
                .place_tenant_hold(pb::PlaceTenantHoldRequest { tenant, reason })
                .await?
                .into_inner();
            print_hold(&h, json);
        }
        TenantCmd::Release { tenant, hold } => {
            let r = svc
                .release_tenant_hold(pb::ReleaseTenantHoldRequest {
                    tenant,
                    hold_id: hold.unwrap_or_default(),
                })
                .await?
                .into_inner();
            print_released(&r, json);
        }
        TenantCmd::CancelRecovery { tenant } => show(
            &svc.cancel_admin_recovery(pb::AdminRecoveryRequest { tenant })
                .await?
                .into_inner(),
        ),
    }
    Ok(())
}

pub(super) fn hold_json(h: &pb::Hold) -> serde_json::Value {
    json!({
        "id": h.id, "tenant": h.tenant,
        "subject_blind_id": (!h.subject_blind_id.is_empty()).then_some(&h.subject_blind_id),
        "reason": h.reason, "created_at": fmt_time(h.created_at_unix_ms), "created_by": h.created_by,
    })
}

pub(super) fn hold_line(h: &pb::Hold) -> String {
    let on = if h.subject_blind_id.is_empty() {
        "tenant".to_owned()
    } else {
        format!("subject {}", h.subject_blind_id)
    };
    format!(
        "{}\t{on}\t{}\tplaced {} by {}",
        h.id,
        h.reason,
        fmt_time(h.created_at_unix_ms),
        h.created_by
    )
}

/// A new hold: its id on stdout (for scripts), the rest on stderr.
pub(super) fn print_hold(h: &pb::Hold, json: bool) {
    if json {
        print_json(&hold_json(h));
    } else {
        eprintln!("{}", hold_line(h));
        println!("{}", h.id);
    }
}

pub(super) fn print_released(r: &pb::ReleaseHoldsResponse, json: bool) {
    if json {
        print_json(&json!({ "released": r.released }));
    } else if r.released.is_empty() {
        eprintln!("no hold to release");
    } else {
        r.released.iter().for_each(|id| println!("released {id}"));
    }
}
