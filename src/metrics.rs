//! Prometheus metrics: one registry for the process, served as OpenMetrics
//! text on `GET /metrics` by `serve --metrics-listen ADDR` (config
//! `metrics_listen`; off by default).
//!
//! The instruments are process-wide (like a logger): the request layer,
//! the writer thread, the read pool, the key cache, the audit trail and
//! the background jobs update them whether or not anything scrapes; each
//! update is an atomic add. The list, with an alert for each failure an
//! operator must hear about, is in docs/operations.md.
//!
//! **Invariant:** no label ever carries a subject id, record key, API key
//! or value. RPC labels are the service and method names and the gRPC
//! status code; tenant ids appear only in `strongbox_tenant_calls_total`,
//! which exists only with `metrics_tenant_labels = true`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub rpc_service: String,
    pub rpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcStatusLabels {
    pub rpc_service: String,
    pub rpc_method: String,
    pub rpc_grpc_status_code: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
    pub rpc_method: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

type Gaugef = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Every instrument.
pub struct Metrics {
    pub rpc_calls: Family<RpcStatusLabels, Counter>,
    pub rpc_duration: Family<RpcLabels, Histogram>,
    pub in_flight: Gauge,
    pub shed: Counter,
    pub tenant_calls: Family<TenantLabels, Counter>,
    pub writer_queue: Gauge,
    pub commit_jobs: Histogram,
    pub commit_retries: Counter,
    pub commit_seconds: Histogram,
    pub read_wait_seconds: Histogram,
    pub key_cache: Family<ResultLabels, Counter>,
    pub audit_written: Counter,
    pub audit_failures: Counter,
    pub rewrap_remaining: Gauge,
    pub rewrapped: Counter,
    pub reencrypt_remaining: Gauge,
    pub reencrypted: Counter,
    pub retention_expired: Counter,
    pub retention_last_sweep: Gaugef,
    pub tenant_shreds_pending: Gauge,
    pub housekeeping_last_success: Gaugef,
    pub housekeeping_age: Gaugef,
    pub job_lease_held: Gauge,
    pub erasure_epoch: Gauge,
    pub erasure_epochs_destroyed: Counter,
    tls_refused: Family<ReasonLabels, Counter>,
    build_info: Family<BuildLabels, Gauge>,
    started: Instant,
}

/// Histogram buckets of durations: 100 µs to ~13 s, doubling.
fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 18)
}

impl Metrics {
    fn new() -> Self {
        let m = Metrics {
            rpc_calls: Family::default(),
            rpc_duration: Family::new_with_constructor(|| Histogram::new(duration_buckets())),
            in_flight: Gauge::default(),
            shed: Counter::default(),
            tenant_calls: Family::default(),
            writer_queue: Gauge::default(),
            commit_jobs: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            commit_retries: Counter::default(),
            commit_seconds: Histogram::new(duration_buckets()),
            read_wait_seconds: Histogram::new(duration_buckets()),
            key_cache: Family::default(),
            audit_written: Counter::default(),
            audit_failures: Counter::default(),
            rewrap_remaining: Gauge::default(),
            rewrapped: Counter::default(),
            reencrypt_remaining: Gauge::default(),
            reencrypted: Counter::default(),
            retention_expired: Counter::default(),
            retention_last_sweep: Gaugef::default(),
            tenant_shreds_pending: Gauge::default(),
            housekeeping_last_success: Gaugef::default(),
            housekeeping_age: Gaugef::default(),
            job_lease_held: Gauge::default(),
            erasure_epoch: Gauge::default(),
            erasure_epochs_destroyed: Counter::default(),
            tls_refused: Family::default(),
            build_info: Family::default(),
            started: Instant::now(),
        };
        for reason in crate::server::tls::REASONS {
            drop(m.tls_refused.get_or_create(&ReasonLabels { reason }));
        }
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        m
    }

    /// The registry of everything, `tenant_labels` deciding whether the
    /// per-tenant family is in it.
    fn registry(&self, tenant_labels: bool) -> Registry {
        let mut r = Registry::with_prefix("strongbox");
        r.register(
            "rpc_server_calls",
            "Calls by service, method and gRPC status code",
            self.rpc_calls.clone(),
        );
        r.register(
            "rpc_server_duration_seconds",
            "Call latency by service and method, until the response headers",
            self.rpc_duration.clone(),
        );
        r.register(
            "rpc_server_in_flight",
            "Calls being served now",
            self.in_flight.clone(),
        );
        r.register(
            "rpc_server_shed",
            "Calls refused with RESOURCE_EXHAUSTED by the in-flight cap or a rate limit",
            self.shed.clone(),
        );
        if tenant_labels {
            r.register(
                "tenant_calls",
                "Calls by tenant, method and outcome (metrics_tenant_labels)",
                self.tenant_calls.clone(),
            );
        }
        r.register(
            "store_writer_queue_depth",
            "Write jobs waiting for the writer thread",
            self.writer_queue.clone(),
        );
        r.register(
            "store_group_commit_jobs",
            "Jobs per group commit",
            self.commit_jobs.clone(),
        );
        r.register(
            "store_commit_retries",
            "Group commits run again because another server's transaction conflicted (PostgreSQL)",
            self.commit_retries.clone(),
        );
        r.register(
            "store_commit_duration_seconds",
            "Time of each group commit's COMMIT, which is its WAL fsync (synchronous=FULL)",
            self.commit_seconds.clone(),
        );
        r.register(
            "store_read_pool_wait_seconds",
            "Time a read waited for a read connection",
            self.read_wait_seconds.clone(),
        );
        r.register(
            "key_cache_lookups",
            "Data key lookups by result (hit: cached; miss: unwrapped)",
            self.key_cache.clone(),
        );
        r.register(
            "audit_entries_written",
            "Audit entries appended (each commits with its call, or the call fails)",
            self.audit_written.clone(),
        );
        r.register(
            "audit_write_failures",
            "Audit appends that failed, failing their call",
            self.audit_failures.clone(),
        );
        r.register(
            "rewrap_data_keys_remaining",
            "Data keys wrapped under an older KEK version than their tenant's current one",
            self.rewrap_remaining.clone(),
        );
        r.register(
            "rewrap_data_keys_rewrapped",
            "Data keys rewrapped by the rotation job",
            self.rewrapped.clone(),
        );
        r.register(
            "reencrypt_jobs_remaining",
            "Data-key re-encryption jobs not finished",
            self.reencrypt_remaining.clone(),
        );
        r.register(
            "reencrypt_records",
            "Records moved to fresh data keys by re-encryption",
            self.reencrypted.clone(),
        );
        r.register(
            "retention_expired_records",
            "Records expired by the retention sweep",
            self.retention_expired.clone(),
        );
        r.register(
            "retention_last_sweep_timestamp_seconds",
            "When the retention sweep last finished a pass (Unix time)",
            self.retention_last_sweep.clone(),
        );
        r.register(
            "tenant_shreds_pending",
            "Tenants scheduled for shredding",
            self.tenant_shreds_pending.clone(),
        );
        r.register(
            "housekeeping_last_success_timestamp_seconds",
            "When housekeeping last finished a pass without error (Unix time)",
            self.housekeeping_last_success.clone(),
        );
        r.register(
            "housekeeping_age_seconds",
            "Seconds since housekeeping last finished a pass without error (since start if never)",
            self.housekeeping_age.clone(),
        );
        r.register(
            "background_jobs_lease_held",
            "1 when this server holds the background jobs' lease (runs them), else 0",
            self.job_lease_held.clone(),
        );
        r.register(
            "erasure_epoch",
            "The current erasure epoch",
            self.erasure_epoch.clone(),
        );
        r.register(
            "erasure_epochs_destroyed",
            "Erasure epoch keys destroyed",
            self.erasure_epochs_destroyed.clone(),
        );
        r.register(
            "tls_handshakes_refused",
            "TLS handshakes refused, by reason (the server log names the peer)",
            self.tls_refused.clone(),
        );
        r.register("build_info", "The running build", self.build_info.clone());
        r
    }

    /// The exposition: OpenMetrics text.
    pub fn render(&self, tenant_labels: bool) -> String {
        let last = self.housekeeping_last_success.get();
        let age = if last > 0.0 {
            crate::now_ms() as f64 / 1000.0 - last
        } else {
            self.started.elapsed().as_secs_f64()
        };
        self.housekeeping_age.set(age);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry(tenant_labels));
        out
    }

    /// Records a call's outcome.
    pub fn rpc_done(&self, path: &str, code: u32, took: Duration) {
        let (service, method) = split_path(path);
        self.rpc_calls
            .get_or_create(&RpcStatusLabels {
                rpc_service: service.to_owned(),
                rpc_method: method.to_owned(),
                rpc_grpc_status_code: code,
            })
            .inc();
        self.rpc_duration
            .get_or_create(&RpcLabels {
                rpc_service: service.to_owned(),
                rpc_method: method.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn key_cache(&self, hit: bool) {
        self.key_cache
            .get_or_create(&ResultLabels {
                result: if hit { "hit" } else { "miss" },
            })
            .inc();
    }

    pub fn tls_refused(&self, reason: &'static str) {
        self.tls_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn housekeeping_ok(&self) {
        self.housekeeping_last_success
            .set(crate::now_ms() as f64 / 1000.0);
    }
}

/// `/strongbox.v1.RecordService/PutRecord` -> (`strongbox.v1.RecordService`, `PutRecord`).
/// Anything else is one bucket, so a client cannot mint label values.
fn split_path(path: &str) -> (&str, &str) {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method))
            if !service.is_empty()
                && !method.is_empty()
                && service.len() <= 64
                && method.len() <= 64
                && !method.contains('/') =>
        {
            (service, method)
        }
        _ => ("unknown", "unknown"),
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_bounded_labels() {
        assert_eq!(
            split_path("/strongbox.v1.RecordService/PutRecord"),
            ("strongbox.v1.RecordService", "PutRecord")
        );
        assert_eq!(split_path("/x"), ("unknown", "unknown"));
        assert_eq!(split_path("/a/b/c"), ("unknown", "unknown"));
        let long = format!("/{}/M", "s".repeat(100));
        assert_eq!(split_path(&long), ("unknown", "unknown"));
    }

    #[test]
    fn renders_openmetrics_with_and_without_tenant_labels() {
        let m = Metrics::new();
        m.rpc_done(
            "/strongbox.v1.RecordService/GetRecord",
            5,
            Duration::from_millis(3),
        );
        m.tenant_calls
            .get_or_create(&TenantLabels {
                tenant: "acme".into(),
                rpc_method: "GetRecord".into(),
                outcome: "ok".into(),
            })
            .inc();
        let text = m.render(false);
        assert!(text.contains(
            "strongbox_rpc_server_calls_total{rpc_service=\"strongbox.v1.RecordService\",rpc_method=\"GetRecord\",rpc_grpc_status_code=\"5\"} 1"
        ), "{text}");
        assert!(text.contains("strongbox_build_info{version="), "{text}");
        assert!(!text.contains("acme"));
        assert!(text.ends_with("# EOF\n"));
        assert!(m.render(true).contains("tenant=\"acme\""));
    }
}
