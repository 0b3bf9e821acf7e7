//! `strongbox bench --op rewrap`: a tenant key rotation's rewrap of
//! `--records` data keys, and put latency with and without it.

use std::time::Instant;

use super::{BenchArgs, prefill, puts_beside, puts_for, puts_until};
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
    let before = puts_for(pool, tenant, args, value, duration).await?;
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
    let (mut report, puts) = puts_beside(&before, &during);
    if json_out {
        report["op"] = "rewrap".into();
        report["data_keys"] = args.records.into();
        report["rewrap_s"] = took.as_secs_f64().into();
        report["rewrap_deks_per_sec"] = (rewrapped / took.as_secs_f64()).into();
        println!("{report}");
    } else {
        println!(
            "rewrap: {} data keys in {:.2} s ({:.0}/s); {puts}",
            args.records,
            took.as_secs_f64(),
            rewrapped / took.as_secs_f64(),
        );
    }
    Ok(())
}
