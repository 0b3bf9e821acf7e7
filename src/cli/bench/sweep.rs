//! `strongbox bench --op sweep`: put latency while the retention sweep
//! expires `--records` records, against the same load without a sweep.
//!
//! The records go into category `expiring`, one subject each (so the sweep
//! also erases every subject); then a policy of 1 s is set on `expiring`
//! and puts (category `bench`) run until the preview shows nothing due.
//! The sweep starts at the server's next housekeeping pass: run the server
//! with a short `housekeeping_interval` (e.g. 1s) to measure it.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{BenchArgs, BenchOp, Stop, load, prefill_in, puts_until};
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
    let before = load(
        pool,
        tenant,
        args,
        value,
        BenchOp::Put,
        Stop::at(Instant::now() + duration),
    )
    .await?;
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
    if json_out {
        println!(
            "{}",
            json!({
                "op": "sweep",
                "records_expired": expired,
                "sweep_s": took.as_secs_f64(),
                "expired_per_sec": rate,
                "put_p99_ms_without": before.p99_ms,
                "put_p99_ms_during": during.p99_ms,
                "put_ops_per_sec_without": before.ops_per_sec,
                "put_ops_per_sec_during": during.ops_per_sec,
                "errors": before.errors + during.errors,
            })
        );
    } else {
        println!(
            "sweep: {expired} records expired in {:.2} s ({rate:.0}/s, from the policy to the last; includes the wait for the next housekeeping pass); puts p99 {:.2} ms without, {:.2} ms during ({:.0} vs {:.0} ops/s), {} errors",
            took.as_secs_f64(),
            before.p99_ms,
            during.p99_ms,
            before.ops_per_sec,
            during.ops_per_sec,
            before.errors + during.errors
        );
    }
    Ok(())
}
