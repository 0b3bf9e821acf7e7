//! `strongbox record ...`: put, get, delete and list records.

use std::io::{Read, Write};

use anyhow::Context;
use serde_json::json;

use super::super::output::record_json;
use super::super::{RecordAddrArgs, RecordCmd};
use super::*;
use crate::api::pb;
use crate::client::Client;
use crate::vault::fmt_time;

pub(super) fn read_value(
    value: Option<String>,
    file: Option<std::path::PathBuf>,
) -> anyhow::Result<Vec<u8>> {
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

pub(super) async fn record(client: &Client, cmd: RecordCmd, json: bool) -> anyhow::Result<()> {
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
