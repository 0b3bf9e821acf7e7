//! `strongbox subject ...`: export, access history, shred and receipts.

use std::io::Read;

use anyhow::Context;
use serde_json::json;

use super::super::SubjectCmd;
use super::super::output::{self, record_json};
use super::tenant::{print_hold, print_released};
use super::*;
use crate::api::pb;
use crate::client::Client;
use crate::vault::fmt_time;

pub(super) async fn subject(client: &Client, cmd: SubjectCmd, json: bool) -> anyhow::Result<()> {
    let mut svc = client.subjects();
    match cmd {
        SubjectCmd::Touch { tenant, subject } => {
            svc.touch_subject(pb::TouchSubjectRequest { tenant, subject })
                .await?;
            if json {
                print_json(&json!({ "touched": true }));
            } else {
                eprintln!("touched");
            }
        }
        SubjectCmd::Hold {
            tenant,
            subject,
            reason,
        } => {
            let h = svc
                .place_subject_hold(pb::PlaceSubjectHoldRequest {
                    tenant,
                    subject,
                    reason,
                })
                .await?
                .into_inner();
            print_hold(&h, json);
        }
        SubjectCmd::Release {
            tenant,
            subject,
            hold,
        } => {
            let r = svc
                .release_subject_hold(pb::ReleaseSubjectHoldRequest {
                    tenant,
                    subject,
                    hold_id: hold.unwrap_or_default(),
                })
                .await?
                .into_inner();
            print_released(&r, json);
        }
        SubjectCmd::Export { tenant, subject } => {
            let mut stream = svc
                .export_subject(pb::ExportSubjectRequest { tenant, subject })
                .await?
                .into_inner();
            let mut doc = serde_json::Map::new();
            let mut records = Vec::new();
            let mut history = Vec::new();
            while let Some(item) = stream.message().await? {
                match item.item {
                    Some(pb::export_subject_response::Item::Header(h)) => {
                        doc.insert("tenant".into(), json!(h.tenant));
                        doc.insert("subject".into(), json!(h.subject));
                        doc.insert("subject_blind_id".into(), json!(h.subject_blind_id));
                        doc.insert("created_at".into(), json!(fmt_time(h.created_at_unix_ms)));
                    }
                    Some(pb::export_subject_response::Item::Record(r)) => {
                        records.push(record_json(&r))
                    }
                    Some(pb::export_subject_response::Item::Access(a)) => history.push(json!({
                        "time": fmt_time(a.time_unix_ms), "principal": a.principal_name,
                        "principal_id": a.principal_id, "action": a.action,
                        "outcome": a.outcome, "purpose": a.purpose,
                    })),
                    None => {}
                }
            }
            doc.insert("records".into(), json!(records));
            doc.insert("access_history".into(), json!(history));
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        SubjectCmd::Shred { tenant, subject } => {
            let r = svc
                .shred_subject(pb::ShredSubjectRequest { tenant, subject })
                .await?
                .into_inner();
            if json {
                print_json(&output::receipt_json(&r));
            } else {
                println!("subject shredded: its data key is destroyed");
                println!("receipt id:        {}", r.receipt_id);
                println!("tenant:            {}", r.tenant);
                println!("subject blind id:  {}", r.subject_blind_id);
                println!("destroyed keys:    {}", r.destroyed_key_ids.join(", "));
                println!("records unreadable: {}", r.records_made_unreadable);
                println!("shredded at:       {}", fmt_time(r.shredded_at_unix_ms));
                println!("mac:               {}", r.mac);
                if !r.erasure.is_empty() {
                    println!("erasure:           {}", r.erasure);
                }
            }
        }
        SubjectCmd::VerifyReceipt { file } => {
            let text = match file {
                Some(f) => std::fs::read_to_string(&f)
                    .with_context(|| format!("--file {}", f.display()))?,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                }
            };
            let v: serde_json::Value =
                serde_json::from_str(&text).context("the receipt is not JSON")?;
            let receipt = output::receipt_from_json(&v)?;
            let valid = svc
                .verify_receipt(pb::VerifyReceiptRequest {
                    receipt: Some(receipt),
                })
                .await?
                .into_inner()
                .valid;
            if json {
                print_json(&json!({ "valid": valid }));
            } else {
                println!("{}", if valid { "valid" } else { "INVALID" });
            }
            if !valid {
                anyhow::bail!(
                    "the receipt does not verify: it was altered or not issued by this vault"
                );
            }
        }
    }
    Ok(())
}
