//! `strongbox bench --op sweep`: put latency while the retention sweep
//! expires `--records` records, against the same load without a sweep.
//!
//! The records go into category `expiring`, one subject each (so the sweep
//! also erases every subject); then a policy of 1 s is set on `expiring`
//! and puts (category `bench`) run until the preview shows nothing due.
//! The sweep starts at the server's next housekeeping pass: run the server
//! with a short `housekeeping_interval` (e.g. 1s) to measure it.

use std::time::{Duration, Instant};

use super::{BenchArgs, prefill_in, puts_beside, puts_for, puts_until};
use crate::api::pb;
use crate::client::Client;

pub(super) async fn run(
    pool: &[Client],
    tenant: &str,
    args: &BenchArgs,
    value: &[u8],
    duration: Duration,
    json_out: bool,
) -> anyhow::Result<()> {
    prefill_in(pool, tenant, "expiring", args, value, |i| {
        format!("sweep-subject-{i}")
    })
    .await?;
    let before = puts_for(pool, tenant, args, value, duration).await?;
    let mut retention = pool[0].retention();
    retention
        .set_retention_policy(pb::SetRetentionPolicyRequest {
            tenant: tenant.to_owned(),
            category: "expiring".into(),
            keep_seconds: 1,
            after: "write".into(),
        })
        .await?;
    let started = Instant::now();
    let (during, expired) = puts_until(pool, tenant, args, value, async || {
        let p = retention
            .preview_retention(pb::PreviewRetentionRequest {
                tenant: tenant.to_owned(),
                within_seconds: 0,
            })
            .await?
            .into_inner();
        let expired: u64 = p
            .expired
            .iter()
            .filter(|c| c.category == "expiring")
            .map(|c| c.records)
            .sum();
        let done = p.due.iter().all(|c| c.category != "expiring") && expired > 0;
        Ok(done.then_some(expired))
    })
    .await?;
    let took = started.elapsed();
    let rate = expired as f64 / took.as_secs_f64();
    let (mut report, puts) = puts_beside(&before, &during);
    if json_out {
        report["op"] = "sweep".into();
        report["records_expired"] = expired.into();
        report["sweep_s"] = took.as_secs_f64().into();
        report["expired_per_sec"] = rate.into();
        println!("{report}");
    } else {
        println!(
            "sweep: {expired} records expired in {:.2} s ({rate:.0}/s, from the policy to the last; includes the wait for the next housekeeping pass); {puts}",
            took.as_secs_f64(),
        );
    }
    Ok(())
}
