//! The client subcommands: each builds one request, calls the server and
//! prints the answer (JSON with `--json`).

use std::io::{Read, Write};

use anyhow::Context;
use serde_json::json;

use super::output::{self, record_json, tenant_json, tenant_line};
use super::{
    AuditCmd, Cli, Command, HoldCmd, KeyCmd, PrincipalCmd, RecordAddrArgs, RecordCmd, RetentionCmd,
    SubjectCmd, TenantCmd,
};
use crate::api::pb;
use crate::client::Client;
use crate::vault::fmt_time;

pub(super) async fn run(cli: Cli) -> anyhow::Result<()> {
    // The commands that work on the data directory or the HSM directly.
    match cli.command {
        Command::Key(KeyCmd::MoveRoot(args)) => {
            return super::offline::move_root(args, cli.json).await;
        }
        Command::Key(KeyCmd::HsmCheck(args)) => {
            return super::offline::hsm_check(args, cli.json).await;
        }
        Command::Enrol { key_out } => return enrol(&key_out, cli.json),
        _ => {}
    }
    let tls = crate::client::ClientTls {
        ca_cert: cli.ca_cert.clone(),
        client_cert: cli.client_cert.clone(),
        client_key: cli.client_key.clone(),
    };
    let mut client = Client::connect_tls(&cli.endpoint, cli.api_key.as_deref(), &tls).await?;
    if let Some(purpose) = &cli.purpose {
        client = client.with_purpose(purpose)?;
    }
    let json = cli.json;
    match cli.command {
        Command::Serve(_) => anyhow::bail!("serve is not a client command"),
        Command::Restore(_) => {
            anyhow::bail!("restore runs on the data directory, without a server")
        }
        Command::Completions { .. } => anyhow::bail!("completions needs no server"),
        Command::Tenant(cmd) => tenant(&client, cmd, json).await,
        Command::Principal(cmd) => principal(&client, cmd, json).await,
        Command::Record(cmd) => record(&client, cmd, json).await,
        Command::Subject(cmd) => subject(&client, cmd, json).await,
        Command::Audit(cmd) => audit(&client, cmd, json).await,
        Command::Retention(cmd) => retention(&client, cmd, json).await,
        Command::Hold(HoldCmd::List { tenant }) => {
            let r = client
                .tenants()
                .list_holds(pb::ListHoldsRequest { tenant })
                .await?
                .into_inner();
            for h in &r.holds {
                if json {
                    print_json(&hold_json(h));
                } else {
                    println!("{}", hold_line(h));
                }
            }
            Ok(())
        }
        Command::Key(cmd) => key(&client, cmd, json).await,
        Command::Bench(args) => super::bench::run(&client, args, json).await,
        Command::Enrol { .. } => anyhow::bail!("enrol needs no server"),
        Command::Backup { out } => backup(&client, &out, json).await,
    }
}

/// `strongbox enrol`: a key made here, written to `path` (0600, new file),
/// and the enrolment that registers it.
fn enrol(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (key, enrolment) = crate::api_key::enrol();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "--key-out: cannot create {} (it must not exist)",
                path.display()
            )
        })?;
    writeln!(f, "{}", key.expose())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("--key-out: cannot write {}", path.display()))?;
    if json {
        print_json(
            &json!({ "enrolment": enrolment.token(), "key_id": enrolment.key_id, "key_file": path }),
        );
    } else {
        eprintln!(
            "key written to {} (mode 0600): keep it. Give the enrolment below to whoever creates your principal (`principal create --enrolment ...`); it holds no secret.",
            path.display()
        );
        println!("{}", enrolment.token());
    }
    Ok(())
}

fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

async fn tenant(client: &Client, cmd: TenantCmd, json: bool) -> anyhow::Result<()> {
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

fn expires_in(flag: Option<String>) -> anyhow::Result<Option<u64>> {
    flag.map(|d| {
        humantime::parse_duration(&d)
            .map(|d| d.as_secs())
            .with_context(|| format!("--expires-in: '{d}' is not a duration like 90d"))
    })
    .transpose()
}

/// Prints a new API key: alone on stdout, so `KEY=$(strongbox …)` works.
fn print_new_key(principal_id: &str, key_id: &str, api_key: &str, json: bool) {
    if json {
        print_json(&json!({ "principal_id": principal_id, "key_id": key_id, "api_key": api_key }));
    } else {
        eprintln!("principal {principal_id}, key id {key_id}: the API key below is shown once");
        println!("{api_key}");
    }
}

fn key_line(k: &pb::ApiKeyInfo) -> String {
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

fn key_json(k: &pb::ApiKeyInfo) -> serde_json::Value {
    let when = |ms: i64| (ms != 0).then(|| fmt_time(ms));
    json!({
        "key_id": k.key_id, "principal_id": k.principal_id, "created_at": when(k.created_at_unix_ms),
        "expires_at": when(k.expires_at_unix_ms), "revoked_at": when(k.revoked_at_unix_ms),
        "last_used_at": when(k.last_used_at_unix_ms),
    })
}

async fn principal(client: &Client, cmd: PrincipalCmd, json: bool) -> anyhow::Result<()> {
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

fn read_value(value: Option<String>, file: Option<std::path::PathBuf>) -> anyhow::Result<Vec<u8>> {
    match (value, file) {
        (Some(v), _) => Ok(v.into_bytes()),
        (None, Some(f)) => std::fs::read(&f).with_context(|| format!("--file {}", f.display())),
        (None, None) => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the value from stdin")?;
            Ok(buf)
        }
    }
}

async fn record(client: &Client, cmd: RecordCmd, json: bool) -> anyhow::Result<()> {
    let mut svc = client.records();
    match cmd {
        RecordCmd::Put {
            addr,
            value,
            file,
            content_type,
            expected_version,
            reinstate_erased_subject,
        } => {
            let RecordAddrArgs {
                tenant,
                subject,
                category,
                key,
            } = addr;
            let value = read_value(value, file)?;
            let r = svc
                .put_record(pb::PutRecordRequest {
                    tenant,
                    subject: subject.unwrap_or_default(),
                    category,
                    key,
                    value,
                    content_type,
                    expected_version,
                    reinstate_erased_subject,
                })
                .await?
                .into_inner();
            if json {
                print_json(&json!({ "version": r.version }));
            } else {
                println!("stored version {}", r.version);
            }
        }
        RecordCmd::Get { addr } => {
            let r = svc
                .get_record(pb::GetRecordRequest {
                    tenant: addr.tenant,
                    subject: addr.subject.unwrap_or_default(),
                    category: addr.category,
                    key: addr.key,
                })
                .await?
                .into_inner();
            if json {
                print_json(&record_json(&r));
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&r.value)?;
                out.flush()?;
            }
        }
        RecordCmd::Delete {
            addr,
            expected_version,
        } => {
            let r = svc
                .delete_record(pb::DeleteRecordRequest {
                    tenant: addr.tenant,
                    subject: addr.subject.unwrap_or_default(),
                    category: addr.category,
                    key: addr.key,
                    expected_version,
                })
                .await?
                .into_inner();
            if json {
                print_json(&json!({ "deleted_version": r.deleted_version }));
            } else {
                println!("deleted version {}", r.deleted_version);
            }
        }
        RecordCmd::List {
            tenant,
            subject,
            category,
        } => {
            let mut token = String::new();
            loop {
                let page = svc
                    .list_records(pb::ListRecordsRequest {
                        tenant: tenant.clone(),
                        subject: subject.clone().unwrap_or_default(),
                        category: category.clone().unwrap_or_default(),
                        page_size: 1000,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                for r in &page.records {
                    if json {
                        print_json(&json!({
                            "subject_blind_id": r.subject_blind_id,
                            "category": r.category,
                            "key": r.key,
                            "version": r.version,
                            "content_type": r.content_type,
                            "size_bytes": r.size_bytes,
                            "updated_at": fmt_time(r.updated_at_unix_ms),
                        }));
                    } else {
                        let owner = if r.subject_blind_id.is_empty() {
                            "(tenant)"
                        } else {
                            &r.subject_blind_id
                        };
                        println!(
                            "{owner}\t{}\t{}\tv{}\t{} bytes\t{}",
                            r.category,
                            r.key,
                            r.version,
                            r.size_bytes,
                            fmt_time(r.updated_at_unix_ms)
                        );
                    }
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
    }
    Ok(())
}

async fn subject(client: &Client, cmd: SubjectCmd, json: bool) -> anyhow::Result<()> {
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

/// `--since`: an RFC 3339 time, or an age such as `24h` before now.
fn parse_since(s: &str) -> anyhow::Result<i64> {
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

async fn audit(client: &Client, cmd: AuditCmd, json: bool) -> anyhow::Result<()> {
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

async fn key(client: &Client, cmd: KeyCmd, json: bool) -> anyhow::Result<()> {
    let mut svc = client.keys();
    let status = match cmd {
        KeyCmd::Reencrypt { tenant, subject } => {
            let r = svc
                .reencrypt_data_keys(pb::ReencryptDataKeysRequest {
                    tenant,
                    subject: subject.unwrap_or_default(),
                })
                .await?
                .into_inner();
            if json {
                print_json(&json!({ "jobs_started": r.jobs_started }));
            } else {
                println!(
                    "re-encryption started for {} data keys; `key status` shows the jobs still running",
                    r.jobs_started
                );
            }
            return Ok(());
        }
        KeyCmd::Policy {
            tenant,
            max_age,
            max_encryptions,
            min_decryption_version,
        } => {
            let max_age_seconds = max_age
                .map(|d| {
                    humantime::parse_duration(&d)
                        .map(|d| d.as_secs())
                        .with_context(|| format!("--max-age: '{d}' is not a duration like 90d"))
                })
                .transpose()?;
            svc.set_rotation_policy(pb::SetRotationPolicyRequest {
                tenant,
                max_age_seconds,
                max_encryptions,
                min_decryption_version,
            })
            .await?
        }
        KeyCmd::MoveRoot(_) | KeyCmd::HsmCheck(_) => {
            anyhow::bail!("key move-root and key hsm-check run without a server")
        }
        KeyCmd::RotateRoot => {
            let r = svc
                .rotate_root_key(pb::RotateRootKeyRequest {})
                .await?
                .into_inner();
            if json {
                print_json(&json!({ "keys_rewrapped": r.keys_rewrapped, "root": r.root }));
            } else {
                println!(
                    "root key rotated: {} keys rewrapped ({})",
                    r.keys_rewrapped, r.root
                );
            }
            return Ok(());
        }
        KeyCmd::Rotate { tenant } => {
            svc.rotate_tenant_key(pb::RotateTenantKeyRequest { tenant })
                .await?
        }
        KeyCmd::Status { tenant } => {
            svc.get_tenant_key_status(pb::GetTenantKeyStatusRequest { tenant })
                .await?
        }
    }
    .into_inner();
    if json {
        print_json(&json!({
            "tenant": status.tenant,
            "current_version": status.current_version,
            "data_keys_to_rewrap": status.data_keys_to_rewrap,
            "reencrypt_jobs": status.reencrypt_jobs,
            "reencrypt_corrupt_records": status.reencrypt_corrupt_records,
            "min_decryption_version": status.min_decryption_version,
            "rotation": {
                "max_age_seconds": status.rotation_max_age_seconds,
                "max_encryptions": status.rotation_max_encryptions,
                "default_policy": status.rotation_policy_is_default,
                "next_due": (status.next_rotation_due_unix_ms != 0).then(|| fmt_time(status.next_rotation_due_unix_ms)),
            },
            "versions": status.versions.iter().map(|v| json!({
                "version": v.version, "state": v.state, "created_at": fmt_time(v.created_at_unix_ms),
                "data_keys": v.data_keys, "encryptions": v.encryptions,
                "retired_at": (v.retired_at_unix_ms != 0).then(|| fmt_time(v.retired_at_unix_ms)),
                "last_used": (v.last_used_unix_ms != 0).then(|| fmt_time(v.last_used_unix_ms)),
            })).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "tenant {}: current KEK v{}, {} data keys to rewrap, {} re-encryption jobs running",
            status.tenant,
            status.current_version,
            status.data_keys_to_rewrap,
            status.reencrypt_jobs
        );
        if status.reencrypt_corrupt_records != 0 {
            println!(
                "  {} corrupt records skipped by re-encryption (they fail authentication; see `audit list --action key.reencrypt.skip-corrupt`)",
                status.reencrypt_corrupt_records
            );
        }
        if status.next_rotation_due_unix_ms != 0 {
            println!(
                "  rotates every {} or after {} encryptions ({}); next due {}",
                humantime::format_duration(std::time::Duration::from_secs(
                    status.rotation_max_age_seconds
                )),
                status.rotation_max_encryptions,
                if status.rotation_policy_is_default {
                    "server default"
                } else {
                    "tenant policy"
                },
                fmt_time(status.next_rotation_due_unix_ms)
            );
        }
        if status.min_decryption_version != 0 {
            println!(
                "  minimum decryption version v{}: data keys under older versions are refused until rewrapped",
                status.min_decryption_version
            );
        }
        for v in &status.versions {
            println!(
                "  v{}\t{}\tcreated {}\t{} data keys\t{} encryptions\tlast used {}{}",
                v.version,
                v.state,
                fmt_time(v.created_at_unix_ms),
                v.data_keys,
                v.encryptions,
                if v.last_used_unix_ms != 0 {
                    fmt_time(v.last_used_unix_ms)
                } else {
                    "never".into()
                },
                if v.retired_at_unix_ms != 0 {
                    format!("\tretired {}", fmt_time(v.retired_at_unix_ms))
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

fn hold_json(h: &pb::Hold) -> serde_json::Value {
    json!({
        "id": h.id, "tenant": h.tenant,
        "subject_blind_id": (!h.subject_blind_id.is_empty()).then_some(&h.subject_blind_id),
        "reason": h.reason, "created_at": fmt_time(h.created_at_unix_ms), "created_by": h.created_by,
    })
}

fn hold_line(h: &pb::Hold) -> String {
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
fn print_hold(h: &pb::Hold, json: bool) {
    if json {
        print_json(&hold_json(h));
    } else {
        eprintln!("{}", hold_line(h));
        println!("{}", h.id);
    }
}

fn print_released(r: &pb::ReleaseHoldsResponse, json: bool) {
    if json {
        print_json(&json!({ "released": r.released }));
    } else if r.released.is_empty() {
        eprintln!("no hold to release");
    } else {
        r.released.iter().for_each(|id| println!("released {id}"));
    }
}

/// A whole number of seconds from a duration flag like `30d`.
fn whole_seconds(flag: &str, text: &str) -> anyhow::Result<u64> {
    let d = humantime::parse_duration(text)
        .with_context(|| format!("--{flag}: '{text}' is not a duration like 365d or 30s"))?;
    Ok(d.as_secs())
}

fn retention_json(r: &pb::Retention) -> serde_json::Value {
    let d = |s: u64| (s != 0).then(|| fmt_secs(s));
    json!({
        "category": r.category,
        "policy": d(r.policy_keep_seconds).map(|k| json!({ "keep": k, "after": r.policy_after })),
        "default": d(r.default_keep_seconds),
        "max": d(r.max_seconds),
        "effective": d(r.effective_keep_seconds).map(|k| json!({ "keep": k, "after": r.effective_after })),
    })
}

fn fmt_secs(s: u64) -> String {
    crate::ids::fmt_duration(std::time::Duration::from_secs(s))
}

async fn retention(client: &Client, cmd: RetentionCmd, json: bool) -> anyhow::Result<()> {
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

fn print_retention(r: &pb::Retention, json: bool) {
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

/// `strongbox backup --out FILE`: streamed to FILE.partial, renamed when whole.
async fn backup(client: &Client, out: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    anyhow::ensure!(
        !out.exists(),
        "--out: {} exists; a backup never overwrites a file",
        out.display()
    );
    let partial = out.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("--out: cannot create {}", partial.display()))?;
    let started = std::time::Instant::now();
    let written = async {
        let mut stream = client
            .backup()
            .backup(pb::BackupRequest {})
            .await?
            .into_inner();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.message().await? {
            file.write_all(&chunk.data)?;
            bytes += chunk.data.len() as u64;
        }
        file.sync_all()?;
        Ok::<_, anyhow::Error>(bytes)
    }
    .await;
    let bytes = match written {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, out)
        .with_context(|| format!("--out: cannot rename to {}", out.display()))?;
    let secs = started.elapsed().as_secs_f64();
    if json {
        print_json(&json!({ "file": out, "bytes": bytes, "seconds": secs }));
    } else {
        println!(
            "backup written to {} ({bytes} bytes in {secs:.1} s)",
            out.display()
        );
    }
    Ok(())
}
