//! `strongbox key ...`: key status, rotation and re-encryption.

use anyhow::Context;
use serde_json::json;

use super::super::KeyCmd;
use super::*;
use crate::api::pb;
use crate::client::Client;
use crate::vault::fmt_time;

pub(super) async fn key(client: &Client, cmd: KeyCmd, json: bool) -> anyhow::Result<()> {
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
