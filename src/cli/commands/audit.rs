//! `strongbox audit ...`: verify and read the audit trail.

use anyhow::Context;
use serde_json::json;

use super::super::AuditCmd;
use super::*;
use crate::api::pb;
use crate::client::Client;
use crate::vault::fmt_time;

/// `--since`: an RFC 3339 time, or an age such as `24h` before now.
pub(super) fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        return Ok(ms);
    }
    let age = humantime::parse_duration(s).with_context(|| {
        format!("--since: '{s}' is neither an RFC 3339 time nor an age like 24h")
    })?;
    Ok(crate::now_ms() - age.as_millis() as i64)
}

pub(super) async fn audit(client: &Client, cmd: AuditCmd, json: bool) -> anyhow::Result<()> {
    let mut svc = client.audit();
    match cmd {
        AuditCmd::AcceptLoss(_) => {
            anyhow::bail!("audit accept-loss runs on the data directory, without a server")
        }
        AuditCmd::Verify { records } => {
            let r = svc
                .verify_audit(pb::VerifyAuditRequest { records })
                .await?
                .into_inner();
            let chain_ok = r.problem.is_empty();
            if json {
                let mut v = json!({
                    "ok": r.ok, "entries": r.entries, "head_seq": r.head_seq, "head": r.head,
                    "first_bad_seq": (!chain_ok).then_some(r.first_bad_seq), "problem": (!chain_ok).then_some(&r.problem),
                });
                if records {
                    v["records"] = json!({
                        "checked": r.records_checked, "unaudited": r.records_unaudited,
                        "problem_count": r.record_problem_count, "problems": r.record_problems,
                    });
                }
                print_json(&v);
            } else {
                if chain_ok {
                    println!("ok: {} entries, head {} {}", r.entries, r.head_seq, r.head);
                } else {
                    println!("BAD at entry {}: {}", r.first_bad_seq, r.problem);
                }
                if records && chain_ok {
                    println!(
                        "records: {} checked, {} with no audited write, {} disagree with the trail",
                        r.records_checked, r.records_unaudited, r.record_problem_count
                    );
                    r.record_problems
                        .iter()
                        .for_each(|p| println!("BAD record: {p}"));
                }
            }
            if !chain_ok {
                anyhow::bail!("the audit chain does not verify: {}", r.problem);
            }
            if r.record_problem_count > 0 {
                anyhow::bail!(
                    "{} records disagree with the audit trail (rolled back or resurrected)",
                    r.record_problem_count
                );
            }
        }
        AuditCmd::List {
            tenant,
            since,
            principal,
            action,
            outcome,
        } => {
            let since_unix_ms = since.as_deref().map(parse_since).transpose()?.unwrap_or(0);
            let mut after_seq = 0;
            loop {
                let mut stream = svc
                    .list_audit_entries(pb::ListAuditEntriesRequest {
                        tenant: tenant.clone().unwrap_or_default(),
                        since_unix_ms,
                        principal: principal.clone().unwrap_or_default(),
                        action: action.clone().unwrap_or_default(),
                        outcome: outcome.clone().unwrap_or_default(),
                        after_seq,
                        limit: 10_000,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let mut n = 0;
                while let Some(e) = stream.message().await? {
                    n += 1;
                    after_seq = e.seq;
                    if json {
                        print_json(&json!({
                            "seq": e.seq, "time": fmt_time(e.time_unix_ms), "request_id": e.request_id,
                            "principal": e.principal, "tenant": e.tenant, "action": e.action,
                            "resource": e.resource, "outcome": e.outcome, "code": e.code,
                            "purpose": e.purpose, "peer": e.peer, "mac": e.mac,
                        }));
                    } else {
                        println!(
                            "{}\t{}\t{}\t{}\t{}\t{}\t{} ({})\t{}",
                            e.seq,
                            fmt_time(e.time_unix_ms),
                            if e.principal.is_empty() {
                                "-"
                            } else {
                                &e.principal
                            },
                            if e.tenant.is_empty() { "-" } else { &e.tenant },
                            e.action,
                            e.resource,
                            e.outcome,
                            e.code,
                            e.peer
                        );
                    }
                }
                if n < 10_000 {
                    break;
                }
            }
        }
    }
    Ok(())
}
