//! The load a bench op puts on the servers: `concurrency` clients, each
//! calling in a loop until a deadline or a flag, and what it measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::{Rng, SeedableRng};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::{BenchArgs, BenchOp, get_req, put_req};
use crate::api::pb;
use crate::api::pb::record_service_client::RecordServiceClient;
use crate::api::pb::subject_service_client::SubjectServiceClient;
use crate::client::{Client, Svc};

type Records = RecordServiceClient<Svc>;

/// Whether this call of `op` is a put (`mixed`: half of them).
fn is_put(op: BenchOp, rng: &mut impl Rng) -> bool {
    match op {
        BenchOp::Put | BenchOp::Rewrap | BenchOp::Sweep => true,
        BenchOp::Mixed => rng.random_bool(0.5),
        BenchOp::Get | BenchOp::Health | BenchOp::Shred | BenchOp::Export => false,
    }
}

async fn put(
    records: &mut Records,
    tenant: &str,
    args: &BenchArgs,
    i: usize,
    value: &[u8],
) -> Result<(), tonic::Status> {
    records
        .put_record(put_req(tenant, args.subjects, i, value))
        .await
        .map(drop)
}

async fn get(
    records: &mut Records,
    tenant: &str,
    args: &BenchArgs,
    rng: &mut impl Rng,
) -> Result<(), tonic::Status> {
    let i = rng.random_range(0..args.records.max(1));
    records
        .get_record(get_req(tenant, args.subjects, i))
        .await
        .map(drop)
}

/// Exports a random prefilled subject and reads its stream to the end.
async fn export(
    subjects: &mut SubjectServiceClient<Svc>,
    tenant: &str,
    args: &BenchArgs,
    rng: &mut impl Rng,
) -> Result<(), tonic::Status> {
    let n = args.subjects.max(1).min(args.records.max(1));
    let mut stream = subjects
        .export_subject(pb::ExportSubjectRequest {
            tenant: tenant.to_owned(),
            subject: format!("bench-subject-{}", rng.random_range(0..n)),
        })
        .await?
        .into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

/// One worker's tally.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// When a load run ends: at a deadline, or when a flag is raised.
#[derive(Clone)]
pub(super) struct Stop {
    deadline: Instant,
    pub(super) flag: Arc<AtomicBool>,
}

impl Stop {
    pub(super) fn at(deadline: Instant) -> Self {
        Stop {
            deadline,
            flag: Arc::default(),
        }
    }

    fn now(&self) -> bool {
        Instant::now() >= self.deadline || self.flag.load(Ordering::Relaxed)
    }
}

/// What a load run measured.
pub(super) struct LoadResult {
    pub(super) ops: usize,
    pub(super) elapsed_s: f64,
    pub(super) ops_per_sec: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
}

/// Runs `args.concurrency` clients doing `op` until `stop`.
pub(super) async fn load(
    pool: &[Client],
    tenant: &str,
    args: &BenchArgs,
    value: &[u8],
    op: BenchOp,
    stop: Stop,
) -> anyhow::Result<LoadResult> {
    let mut workers = Vec::with_capacity(args.concurrency);
    let started = Instant::now();
    for w in 0..args.concurrency {
        let c = pool[w % pool.len()].clone();
        let (tenant, value, args, stop) = (
            tenant.to_owned(),
            value.to_vec(),
            args.clone(),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut rng = rand::rngs::StdRng::from_os_rng();
            let (mut records, mut writes) = (c.records(), 0usize);
            let mut subjects = c.subjects();
            let mut health = HealthClient::new(c.channel());
            while !stop.now() {
                let t0 = Instant::now();
                let result = match op {
                    // The transport's ceiling: no authentication, no vault.
                    BenchOp::Health => health.check(HealthCheckRequest::default()).await.map(drop),
                    BenchOp::Shred => unreachable!("shred runs apart"),
                    BenchOp::Export => export(&mut subjects, &tenant, &args, &mut rng).await,
                    _ if is_put(op, &mut rng) => {
                        // Puts go to fresh keys per worker, spread over subjects.
                        writes += 1;
                        let i = args.records + w * 10_000_000 + writes;
                        put(&mut records, &tenant, &args, i, &value).await
                    }
                    _ => get(&mut records, &tenant, &args, &mut rng).await,
                };
                let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                match result {
                    Ok(()) => tally.latencies_us.push(us),
                    Err(e) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| {
                            format!(
                                "{}: {}",
                                crate::cli::output::code_name(e.code()),
                                e.message()
                            )
                        });
                    }
                }
            }
            tally
        }));
    }
    let mut all = Vec::new();
    let (mut errors, mut first_error) = (0u64, None);
    for w in workers {
        let t = w.await?;
        all.extend(t.latencies_us);
        errors += t.errors;
        first_error = first_error.or(t.first_error);
    }
    let elapsed_s = started.elapsed().as_secs_f64().max(1e-9);
    all.sort_unstable();
    Ok(LoadResult {
        ops: all.len(),
        elapsed_s,
        ops_per_sec: all.len() as f64 / elapsed_s,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        errors,
        first_error,
    })
}

pub(super) fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx]) / 1000.0
}
