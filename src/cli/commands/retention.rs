//! `strongbox retention ...`: retention policies, defaults and previews.

use anyhow::Context;
use serde_json::json;

use super::super::RetentionCmd;
use super::*;
use crate::api::pb;
use crate::client::Client;

/// A whole number of seconds from a duration flag like `30d`.
pub(super) fn whole_seconds(flag: &str, text: &str) -> anyhow::Result<u64> {
    let d = humantime::parse_duration(text)
        .with_context(|| format!("--{flag}: '{text}' is not a duration like 365d or 30s"))?;
    Ok(d.as_secs())
}

pub(super) fn retention_json(r: &pb::Retention) -> serde_json::Value {
    let d = |s: u64| (s != 0).then(|| fmt_secs(s));
    json!({
        "category": r.category,
        "policy": d(r.policy_keep_seconds).map(|k| json!({ "keep": k, "after": r.policy_after })),
        "default": d(r.default_keep_seconds),
        "max": d(r.max_seconds),
        "effective": d(r.effective_keep_seconds).map(|k| json!({ "keep": k, "after": r.effective_after })),
    })
}

pub(super) fn fmt_secs(s: u64) -> String {
    crate::ids::fmt_duration(std::time::Duration::from_secs(s))
}

pub(super) async fn retention(
    client: &Client,
    cmd: RetentionCmd,
    json: bool,
) -> anyhow::Result<()> {
    let mut svc = client.retention();
    match cmd {
        RetentionCmd::Set {
            tenant,
            category,
            keep,
            after,
        } => {
            let r = svc
                .set_retention_policy(pb::SetRetentionPolicyRequest {
                    tenant,
                    category,
                    keep_seconds: whole_seconds("keep", &keep)?,
                    after,
                })
                .await?
                .into_inner();
            print_retention(&r, json);
        }
        RetentionCmd::Default {
            category,
            keep,
            max,
        } => {
            let d = svc
                .set_retention_default(pb::SetRetentionDefaultRequest {
                    category,
                    keep_seconds: keep.map(|k| whole_seconds("keep", &k)).transpose()?,
                    max_seconds: max.map(|m| whole_seconds("max", &m)).transpose()?,
                })
                .await?
                .into_inner();
            let d_ = |s: u64| if s == 0 { "-".to_owned() } else { fmt_secs(s) };
            if json {
                print_json(&json!({
                    "category": d.category, "keep": (d.keep_seconds != 0).then(|| fmt_secs(d.keep_seconds)),
                    "max": (d.max_seconds != 0).then(|| fmt_secs(d.max_seconds)),
                }));
            } else {
                println!(
                    "{}\tdefault {}\tmax {}",
                    d.category,
                    d_(d.keep_seconds),
                    d_(d.max_seconds)
                );
            }
        }
        RetentionCmd::List { tenant } => {
            let r = svc
                .list_retention(pb::ListRetentionRequest { tenant })
                .await?
                .into_inner();
            r.retention.iter().for_each(|r| print_retention(r, json));
        }
        RetentionCmd::Preview { tenant, within } => {
            let within_seconds = within
                .map(|w| whole_seconds("within", &w))
                .transpose()?
                .unwrap_or(0);
            let p = svc
                .preview_retention(pb::PreviewRetentionRequest {
                    tenant,
                    within_seconds,
                })
                .await?
                .into_inner();
            let rows = |v: &[pb::RetentionCount]| {
                v.iter()
                    .map(|c| json!({ "category": c.category, "day": c.day, "records": c.records }))
                    .collect::<Vec<_>>()
            };
            if json {
                print_json(&json!({ "due": rows(&p.due), "expired": rows(&p.expired) }));
            } else {
                for c in &p.due {
                    println!("due\t{}\t{}\t{}", c.category, c.day, c.records);
                }
                for c in &p.expired {
                    println!("expired\t{}\t{}\t{}", c.category, c.day, c.records);
                }
            }
        }
    }
    Ok(())
}

pub(super) fn print_retention(r: &pb::Retention, json: bool) {
    if json {
        print_json(&retention_json(r));
        return;
    }
    let d = |s: u64| if s == 0 { "-".to_owned() } else { fmt_secs(s) };
    let in_force = if r.effective_keep_seconds == 0 {
        "kept until deleted".to_owned()
    } else {
        format!(
            "{} after {}",
            fmt_secs(r.effective_keep_seconds),
            r.effective_after
        )
    };
    println!(
        "{}\t{in_force}\t(policy {}{}, default {}, max {})",
        r.category,
        d(r.policy_keep_seconds),
        if r.policy_after.is_empty() {
            String::new()
        } else {
            format!(" after {}", r.policy_after)
        },
        d(r.default_keep_seconds),
        d(r.max_seconds)
    );
}
