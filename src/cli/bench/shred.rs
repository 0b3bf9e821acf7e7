//! `strongbox bench --op shred`: one subject of `--records` records
//! shredded, after the median shred of one-record subjects (and the
//! servers' CPU per one-record shred, with `--server-pid`); with another
//! server (`--also-endpoint`), how soon a read there is refused.

use std::time::Instant;

use serde_json::json;

use super::{BenchArgs, cpu_seconds, prefill, put_to};
use crate::api::pb;
use crate::client::Client;

/// One-record subjects shredded: enough that their CPU time is read
/// well above /proc's 10 ms tick.
const ONE_RECORD_SUBJECTS: usize = 25;

/// Times the shred of a subject holding `--records` records against the
/// median of [`ONE_RECORD_SUBJECTS`] subjects holding one record each.
pub(super) async fn run(
    pool: &[Client],
    tenant: &str,
    args: &BenchArgs,
    value: &[u8],
    json_out: bool,
) -> anyhow::Result<()> {
    prefill(pool, tenant, args, value, |_| "shred-big".to_owned()).await?;
    let mut records = pool[0].records();
    for i in 0..ONE_RECORD_SUBJECTS {
        records
            .put_record(put_to(tenant, format!("shred-one-{i}"), i, value))
            .await?;
    }
    let mut subjects = pool[0].subjects();
    // With another server, pool[1] is on it: after each one-record shred
    // on the first server, the record is read there, which must be
    // refused; timed from the shred's start.
    let other = (args.servers() > 1).then(|| pool[1].records());
    let mut timed_shred = async |subject: String, i: usize| -> anyhow::Result<(f64, u64, f64)> {
        let started = Instant::now();
        let r = subjects
            .shred_subject(pb::ShredSubjectRequest {
                tenant: tenant.to_owned(),
                subject: subject.clone(),
            })
            .await?
            .into_inner();
        let shred_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut refused_ms = 0.0;
        if let Some(mut other) = other.clone() {
            let read = other
                .get_record(pb::GetRecordRequest {
                    tenant: tenant.to_owned(),
                    subject,
                    category: "bench".into(),
                    key: format!("k{i}"),
                })
                .await;
            anyhow::ensure!(
                read.as_ref()
                    .is_err_and(|s| s.code() == tonic::Code::NotFound),
                "the other server answered a read after the shred returned: {read:?}"
            );
            refused_ms = started.elapsed().as_secs_f64() * 1000.0;
        }
        Ok((shred_ms, r.records_made_unreadable, refused_ms))
    };
    // The one-record shreds first, so that the purge of the big subject's
    // rows does not share the writer with them; the servers' CPU is read
    // around them.
    let mut one_ms = Vec::new();
    let mut refused_ms = Vec::new();
    let cpu_before = cpu_seconds(&args.server_pids);
    for i in 0..ONE_RECORD_SUBJECTS {
        let (ms, _, refused) = timed_shred(format!("shred-one-{i}"), i).await?;
        one_ms.push(ms);
        refused_ms.push(refused);
    }
    let cpu_per_shred = (!args.server_pids.is_empty())
        .then(|| (cpu_seconds(&args.server_pids) - cpu_before) * 1e6 / ONE_RECORD_SUBJECTS as f64);
    let (big_ms, big_records, _) = timed_shred("shred-big".into(), 0).await?;
    one_ms.sort_by(f64::total_cmp);
    refused_ms.sort_by(f64::total_cmp);
    let one_median = one_ms[ONE_RECORD_SUBJECTS / 2];
    let refused_median = refused_ms[ONE_RECORD_SUBJECTS / 2];
    if json_out {
        println!(
            "{}",
            json!({
                "op": "shred",
                "records": big_records,
                "shred_ms": big_ms,
                "shred_one_record_median_ms": one_median,
                "refused_on_other_server_median_ms": refused_median,
                "server_cpu_us_per_one_record_shred": cpu_per_shred,
                "servers": args.servers(),
                "errors": 0,
            })
        );
    } else {
        println!(
            "shred: {big_records} records in {big_ms:.2} ms; one record (median of {ONE_RECORD_SUBJECTS}) in {one_median:.2} ms"
        );
        if args.servers() > 1 {
            println!(
                "shred on the first server to a read refused on the second: {refused_median:.2} ms (median of {ONE_RECORD_SUBJECTS})"
            );
        }
    }
    Ok(())
}
