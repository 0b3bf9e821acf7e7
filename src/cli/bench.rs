//! `strongbox bench`: drives a running server over gRPC with N concurrent
//! clients for a duration and reports ops/s and p50/p99 latency.
//!
//! Called with an operator key, it makes its own tenant (`bench-<random>`)
//! and a writer+reader principal, and shreds the tenant (grace 0) at the end.
//! `get` and `mixed` first write the records they read. `mixed` is half
//! gets, half puts. `shred` writes `--records` records for one subject and
//! times its shred, next to the median shred time of subjects holding one
//! record each. `health` calls the gRPC health check (no authentication,
//! no vault work): the transport's own ceiling. `--op put,get,health` runs
//! ops back to back in one invocation and reports each as a fraction of
//! that ceiling.

use std::sync::atomic::Ordering;
use std::time::Instant;

use clap::{Args, ValueEnum};

use crate::api::pb;
use crate::client::Client;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchOp {
    Put,
    Get,
    Mixed,
    Shred,
    Rewrap,
    /// Put latency while the retention sweep expires `--records` records
    /// (the server's housekeeping interval sets when the sweep starts).
    Sweep,
    /// The gRPC health check: the server's own transport with no vault
    /// work, the ceiling the other ops are compared with.
    Health,
    /// ExportSubject of a random prefilled subject, read to the end
    /// (`--records` over `--subjects`: 10 records each by default).
    Export,
}

impl BenchOp {
    fn name(self) -> &'static str {
        match self {
            BenchOp::Put => "put",
            BenchOp::Get => "get",
            BenchOp::Mixed => "mixed",
            BenchOp::Shred => "shred",
            BenchOp::Rewrap => "rewrap",
            BenchOp::Sweep => "sweep",
            BenchOp::Health => "health",
            BenchOp::Export => "export",
        }
    }
}

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// The op, or several run back to back in one invocation
    /// (`put,get,health`), each reported beside the health ceiling.
    #[arg(
        long = "op",
        value_enum,
        value_delimiter = ',',
        default_value = "mixed"
    )]
    pub ops: Vec<BenchOp>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to run, e.g. `10s`.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Records written first for `get` and `mixed`; for `shred`, the
    /// records of the subject that is shredded.
    #[arg(long, default_value_t = 10_000)]
    pub records: usize,
    /// Subjects the records are spread over.
    #[arg(long, default_value_t = 1000)]
    pub subjects: usize,
    /// Another server of the same vault (several servers on one
    /// PostgreSQL database), plaintext `http://HOST:PORT`; repeatable. The
    /// connections are spread over all servers; `shred` also times how
    /// soon after a shred on the first server a read on the next one is
    /// refused.
    #[arg(long = "also-endpoint", value_name = "URL")]
    pub also_endpoints: Vec<String>,
    /// Every server to spread the connections over, comma-separated
    /// (`http://A:P,http://B:P`), instead of `--endpoint` and
    /// `--also-endpoint`: connection i goes to the (i mod n)th. The bench
    /// tenant is still set up through `--endpoint`; the servers must share
    /// its database.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "URL,...",
        conflicts_with = "also_endpoints"
    )]
    pub endpoints: Vec<String>,
    /// A server process on this machine (repeatable): its CPU time
    /// (utime+stime from /proc) during the timed load alone, the prefill
    /// left out, is reported per op (`server_cpu_us_per_op`).
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// A database process on this machine (repeatable), reported likewise
    /// (`database_cpu_us_per_op`).
    #[arg(long = "database-pid", value_name = "PID")]
    pub database_pids: Vec<u32>,
}

impl BenchArgs {
    /// How many servers the connections are spread over.
    pub(super) fn servers(&self) -> usize {
        if self.endpoints.is_empty() {
            1 + self.also_endpoints.len()
        } else {
            self.endpoints.len()
        }
    }
}

/// The CPU time (utime + stime, in seconds) of `pids`, from /proc; a
/// process that has exited counts 0.
fn cpu_seconds(pids: &[u32]) -> f64 {
    let tick = 100.0; // USER_HZ, fixed at 100 on Linux
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command (which may hold spaces) in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / tick
}

mod load;
mod report;
mod rewrap;
mod shred;
mod sweep;

use load::{LoadResult, Stop, load};

/// Sets up a tenant and a writer+reader key with the operator key.
async fn setup(client: &Client) -> anyhow::Result<(String, String)> {
    let tenant = format!("bench-{}", hex::encode(crate::crypto::random_bytes::<4>()));
    client
        .tenants()
        .create_tenant(pb::CreateTenantRequest {
            tenant: tenant.clone(),
            name: "strongbox bench".into(),
        })
        .await?;
    let admin = client
        .principals()
        .create_principal(pb::CreatePrincipalRequest {
            tenant: tenant.clone(),
            name: "bench-admin".into(),
            roles: vec!["admin".into()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .api_key;
    let rw = client
        .as_key(&admin)?
        .principals()
        .create_principal(pb::CreatePrincipalRequest {
            tenant: tenant.clone(),
            name: "bench-rw".into(),
            roles: vec![
                "writer".into(),
                "reader".into(),
                "privacy-officer".into(),
                "admin".into(),
            ],
            ..Default::default()
        })
        .await?
        .into_inner()
        .api_key;
    Ok((tenant, rw))
}

fn put_req(tenant: &str, subjects: usize, i: usize, value: &[u8]) -> pb::PutRecordRequest {
    put_to(
        tenant,
        format!("bench-subject-{}", i % subjects.max(1)),
        i,
        value,
    )
}

fn put_to(tenant: &str, subject: String, i: usize, value: &[u8]) -> pb::PutRecordRequest {
    put_in(tenant, "bench", subject, i, value)
}

fn put_in(
    tenant: &str,
    category: &str,
    subject: String,
    i: usize,
    value: &[u8],
) -> pb::PutRecordRequest {
    pb::PutRecordRequest {
        tenant: tenant.to_owned(),
        subject,
        category: category.into(),
        key: format!("k{i}"),
        value: value.to_vec(),
        ..Default::default()
    }
}

fn get_req(tenant: &str, subjects: usize, i: usize) -> pb::GetRecordRequest {
    pb::GetRecordRequest {
        tenant: tenant.to_owned(),
        subject: format!("bench-subject-{}", i % subjects.max(1)),
        category: "bench".into(),
        key: format!("k{i}"),
    }
}

pub(super) async fn run(client: &Client, args: BenchArgs, json_out: bool) -> anyhow::Result<()> {
    let duration = humantime::parse_duration(&args.duration)
        .map_err(|e| anyhow::anyhow!("--duration: '{}' is not a duration: {e}", args.duration))?;
    anyhow::ensure!(args.concurrency > 0, "--concurrency: must be at least 1");
    let ops = args.ops.clone();
    let alone = ops
        .iter()
        .find(|op| matches!(op, BenchOp::Shred | BenchOp::Sweep | BenchOp::Rewrap));
    if let Some(op) = alone {
        anyhow::ensure!(
            ops.len() == 1,
            "--op: {} runs alone, not in a list with other ops",
            op.name()
        );
    }
    let (tenant, key) = setup(client).await?;
    // Eight clients per connection, so one HTTP/2 connection is not the
    // bottleneck; connection i goes to server i mod servers.
    // `None`: the `--endpoint` server.
    let targets: Vec<Option<&str>> = if args.endpoints.is_empty() {
        std::iter::once(None)
            .chain(args.also_endpoints.iter().map(|u| Some(u.as_str())))
            .collect()
    } else {
        args.endpoints.iter().map(|u| Some(u.as_str())).collect()
    };
    let mut pool = Vec::new();
    for i in 0..args.concurrency.div_ceil(8).max(targets.len()) {
        pool.push(match targets[i % targets.len()] {
            None => client.reconnect(&key).await?,
            Some(url) => Client::connect(url, Some(&key))
                .await
                .map_err(|e| anyhow::anyhow!("{url}: {e}"))?,
        });
    }
    let value = vec![0x5a; args.value_size];

    let result = match alone {
        Some(BenchOp::Shred) => shred::run(&pool, &tenant, &args, &value, json_out).await,
        Some(BenchOp::Sweep) => sweep::run(&pool, &tenant, &args, &value, duration, json_out).await,
        Some(_) => rewrap::run(&pool, &tenant, &args, &value, duration, json_out).await,
        None => series(&pool, &tenant, &args, &value, duration)
            .await
            .map(|runs| report::print(&args, &runs, json_out)),
    };
    cleanup(client, &tenant).await;
    result
}

/// Runs each of `args.ops` for `duration`, back to back; reads are
/// prefilled once, first.
async fn series(
    pool: &[Client],
    tenant: &str,
    args: &BenchArgs,
    value: &[u8],
    duration: std::time::Duration,
) -> anyhow::Result<Vec<report::Run>> {
    if args
        .ops
        .iter()
        .any(|op| matches!(op, BenchOp::Get | BenchOp::Mixed | BenchOp::Export))
    {
        let subjects = args.subjects.max(1);
        prefill(pool, tenant, args, value, move |i| {
            format!("bench-subject-{}", i % subjects)
        })
        .await?;
    }
    let mut runs = Vec::new();
    for &op in &args.ops {
        let cpu_before = (
            cpu_seconds(&args.server_pids),
            cpu_seconds(&args.database_pids),
        );
        let r = load(
            pool,
            tenant,
            args,
            value,
            op,
            Stop::at(Instant::now() + duration),
        )
        .await?;
        let per_op = |before: f64, pids: &[u32]| {
            (!pids.is_empty() && r.ops > 0)
                .then(|| (cpu_seconds(pids) - before) * 1e6 / r.ops as f64)
        };
        let server_cpu = per_op(cpu_before.0, &args.server_pids);
        let database_cpu = per_op(cpu_before.1, &args.database_pids);
        runs.push(report::Run {
            op,
            r,
            server_cpu,
            database_cpu,
        });
    }
    Ok(runs)
}

/// The bench tenant is shredded at once when the run ends.
async fn cleanup(client: &Client, tenant: &str) {
    let _ = client
        .tenants()
        .schedule_tenant_shred(pb::ScheduleTenantShredRequest {
            tenant: tenant.to_owned(),
            grace_seconds: Some(0),
        })
        .await;
}

/// Puts under load (as `--op put`) for `duration`: the figures a
/// background job's load is compared with.
async fn puts_for(
    pool: &[Client],
    tenant: &str,
    args: &BenchArgs,
    value: &[u8],
    duration: std::time::Duration,
) -> anyhow::Result<LoadResult> {
    let stop = Stop::at(Instant::now() + duration);
    load(pool, tenant, args, value, BenchOp::Put, stop).await
}

/// Puts without a background job (`before`) and during one (`during`):
/// the JSON fields, and the sentence.
fn puts_beside(before: &LoadResult, during: &LoadResult) -> (serde_json::Value, String) {
    let errors = before.errors + during.errors;
    let fields = serde_json::json!({
        "put_p99_ms_without": before.p99_ms,
        "put_p99_ms_during": during.p99_ms,
        "put_ops_per_sec_without": before.ops_per_sec,
        "put_ops_per_sec_during": during.ops_per_sec,
        "errors": errors,
    });
    let text = format!(
        "puts p99 {:.2} ms without, {:.2} ms during ({:.0} vs {:.0} ops/s), {errors} errors",
        before.p99_ms, during.p99_ms, before.ops_per_sec, during.ops_per_sec
    );
    (fields, text)
}

/// Puts under load (as `--op put`) until `done`, polled every 50 ms while
/// a background job runs, answers `Some`: the load's figures and that
/// answer.
async fn puts_until<T>(
    pool: &[Client],
    tenant: &str,
    args: &BenchArgs,
    value: &[u8],
    mut done: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<(LoadResult, T)> {
    let stop = Stop::at(Instant::now() + std::time::Duration::from_secs(3600));
    let watch = async {
        loop {
            match done().await {
                Ok(Some(t)) => {
                    stop.flag.store(true, Ordering::Relaxed);
                    return Ok(t);
                }
                Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                Err(e) => {
                    stop.flag.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    };
    let (during, answer) = tokio::join!(
        load(pool, tenant, args, value, BenchOp::Put, stop.clone()),
        watch
    );
    Ok((during?, answer?))
}

/// Writes `--records` records `concurrency` at a time; `subject(i)` names
/// the subject of record `i`.
async fn prefill(
    pool: &[Client],
    tenant: &str,
    args: &BenchArgs,
    value: &[u8],
    subject: impl Fn(usize) -> String + Send + Sync + Clone + 'static,
) -> anyhow::Result<()> {
    prefill_in(pool, tenant, "bench", args, value, subject).await
}

async fn prefill_in(
    pool: &[Client],
    tenant: &str,
    category: &'static str,
    args: &BenchArgs,
    value: &[u8],
    subject: impl Fn(usize) -> String + Send + Sync + Clone + 'static,
) -> anyhow::Result<()> {
    let lanes = args.concurrency.min(args.records.max(1));
    let mut tasks = Vec::with_capacity(lanes);
    for lane in 0..lanes {
        let mut records = pool[lane % pool.len()].records();
        let (tenant, value, total, subject) = (
            tenant.to_owned(),
            value.to_vec(),
            args.records,
            subject.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = lane;
            while i < total {
                records
                    .put_record(put_in(&tenant, category, subject(i), i, &value))
                    .await?;
                i += lanes;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
