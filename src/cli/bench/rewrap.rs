//! `strongbox bench --op rewrap`: a tenant key rotation's rewrap of
//! `--records` data keys, and put latency with and without it.

use std::time::Instant;

use serde_json::json;

use super::{BenchArgs, BenchOp, Stop, load, prefill, puts_until};
use crate::api::pb;
use crate::client::Client;

/// Times a tenant key rotation's rewrap of `--records` data keys (one
/// subject each), and put latency under load with and without it.
pub(super) async fn run(
    pool: &[Client],
    tenant: &str,
    args: &BenchArgs,
    value: &[u8],
    duration: std::time::Duration,
    json_out: bool,
) -> anyhow::Result<()> {
    prefill(pool, tenant, args, value, |i| format!("rewrap-subject-{i}")).await?;
    let before = load(
        pool,
        tenant,
        args,
        value,
        BenchOp::Put,
        Stop::at(Instant::now() + duration),
    )
    .await?;
    let mut keys = pool[0].keys();
    let started = Instant::now();
    keys.rotate_tenant_key(pb::RotateTenantKeyRequest {
        tenant: tenant.to_owned(),
    })
    .await?;
    let (during, ()) = puts_until(pool, tenant, args, value, async || {
        let st = keys
            .get_tenant_key_status(pb::GetTenantKeyStatusRequest {
                tenant: tenant.to_owned(),
            })
            .await?
            .into_inner();
        Ok(
            (st.data_keys_to_rewrap == 0 && st.versions.iter().all(|v| v.state != "retiring"))
                .then_some(()),
        )
    })
    .await?;
    let took = started.elapsed();
    // The data keys: the prefilled subjects, the tenant's own, and those the
    // first load's puts created.
    let rewrapped = args.records as f64;
    if json_out {
        println!(
            "{}",
            json!({
                "op": "rewrap",
                "data_keys": args.records,
                "rewrap_s": took.as_secs_f64(),
                "rewrap_deks_per_sec": rewrapped / took.as_secs_f64(),
                "put_p99_ms_without": before.p99_ms,
                "put_p99_ms_during": during.p99_ms,
                "put_ops_per_sec_without": before.ops_per_sec,
                "put_ops_per_sec_during": during.ops_per_sec,
                "errors": before.errors + during.errors,
            })
        );
    } else {
        println!(
            "rewrap: {} data keys in {:.2} s ({:.0}/s); puts p99 {:.2} ms without, {:.2} ms during ({:.0} vs {:.0} ops/s), {} errors",
            args.records,
            took.as_secs_f64(),
            rewrapped / took.as_secs_f64(),
            before.p99_ms,
            during.p99_ms,
            before.ops_per_sec,
            during.ops_per_sec,
            before.errors + during.errors
        );
    }
    Ok(())
}
