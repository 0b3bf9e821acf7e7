//! `strongbox bench --op rewrap`: a tenant key rotation's rewrap of
//! `--records` data keys on an idle server, then again under put load,
//! with put latency with and without it.

use std::time::{Duration, Instant};

use super::{BenchArgs, prefill, puts_beside, puts_for, puts_until};
use crate::api::pb;
use crate::client::Client;

/// Rotates `tenant`'s key.
async fn rotate(pool: &[Client], tenant: &str) -> anyhow::Result<()> {
    pool[0]
        .keys()
        .rotate_tenant_key(pb::RotateTenantKeyRequest {
            tenant: tenant.to_owned(),
        })
        .await?;
    Ok(())
}

/// Whether the rewrap after a rotation has moved every data key and
/// retired the old version.
async fn rewrapped(pool: &[Client], tenant: &str) -> anyhow::Result<Option<()>> {
    let st = pool[0]
        .keys()
        .get_tenant_key_status(pb::GetTenantKeyStatusRequest {
            tenant: tenant.to_owned(),
        })
        .await?
        .into_inner();
    Ok(
        (st.data_keys_to_rewrap == 0 && st.versions.iter().all(|v| v.state != "retiring"))
            .then_some(()),
    )
}

/// Times a tenant key rotation's rewrap of `--records` data keys (one
/// subject each) on an idle server, and again while clients put, with put
/// latency under that load with and without it.
pub(super) async fn run(
    pool: &[Client],
    tenant: &str,
    args: &BenchArgs,
    value: &[u8],
    duration: Duration,
    json_out: bool,
) -> anyhow::Result<()> {
    prefill(pool, tenant, args, value, |i| format!("rewrap-subject-{i}")).await?;
    // Idle: nothing but the job (and this poll, every 10 ms).
    let started = Instant::now();
    rotate(pool, tenant).await?;
    while rewrapped(pool, tenant).await?.is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let idle = started.elapsed();

    let before = puts_for(pool, tenant, args, value, duration).await?;
    let started = Instant::now();
    rotate(pool, tenant).await?;
    let (during, ()) = puts_until(pool, tenant, args, value, async || {
        rewrapped(pool, tenant).await
    })
    .await?;
    let loaded = started.elapsed();
    // The data keys of the loaded run: the prefilled subjects and those the
    // first load's puts created (one subject each), at least.
    let records = args.records as f64;
    let (mut report, puts) = puts_beside(&before, &during);
    if json_out {
        report["op"] = "rewrap".into();
        report["data_keys"] = args.records.into();
        report["rewrap_idle_s"] = idle.as_secs_f64().into();
        report["rewrap_idle_deks_per_sec"] = (records / idle.as_secs_f64()).into();
        report["rewrap_s"] = loaded.as_secs_f64().into();
        report["rewrap_deks_per_sec"] = (records / loaded.as_secs_f64()).into();
        println!("{report}");
    } else {
        println!(
            "rewrap: {} data keys in {:.2} s idle ({:.0}/s), {:.2} s under load ({:.0}/s); {puts}",
            args.records,
            idle.as_secs_f64(),
            records / idle.as_secs_f64(),
            loaded.as_secs_f64(),
            records / loaded.as_secs_f64(),
        );
    }
    Ok(())
}
