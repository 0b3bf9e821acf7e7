//! gRPC health that follows the service: every `strongbox.v1` service and
//! the server as a whole (`""`) answer SERVING only while the vault can
//! serve. A probe runs every second: the writer thread is alive, storage
//! commits (a durable write of `meta.health_probe`), and the root key
//! answers (it opens the root check value). Any failure turns every service
//! NOT_SERVING until a probe passes again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api::{Api, pb};
use crate::vault::Vault;

/// How often the vault is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Every service the server registers health for: the whole server, and
/// each `strongbox.v1` service.
pub fn services() -> [&'static str; 9] {
    [
        "",
        <pb::tenant_service_server::TenantServiceServer<Api> as NamedService>::NAME,
        <pb::principal_service_server::PrincipalServiceServer<Api> as NamedService>::NAME,
        <pb::record_service_server::RecordServiceServer<Api> as NamedService>::NAME,
        <pb::subject_service_server::SubjectServiceServer<Api> as NamedService>::NAME,
        <pb::audit_service_server::AuditServiceServer<Api> as NamedService>::NAME,
        <pb::key_service_server::KeyServiceServer<Api> as NamedService>::NAME,
        <pb::retention_service_server::RetentionServiceServer<Api> as NamedService>::NAME,
        <pb::backup_service_server::BackupServiceServer<Api> as NamedService>::NAME,
    ]
}

pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in services() {
        reporter.set_service_status(name, status).await;
    }
}

/// Probes the vault once and reports the outcome for every service if it
/// changed from `was`; returns whether it serves.
pub async fn probe(vault: &Vault, reporter: &HealthReporter, was: Option<bool>) -> bool {
    let serving = match vault.health().await {
        Ok(()) => true,
        Err(e) => {
            if was != Some(false) {
                tracing::error!(error = %e, "health: NOT_SERVING");
            }
            false
        }
    };
    if was != Some(serving) {
        if serving && was.is_some() {
            tracing::info!("health: SERVING again");
        }
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        set_all(reporter, status).await;
    }
    serving
}

/// Probes the vault every `every` and reports the outcome for every
/// service, until `stop`; then reports NOT_SERVING (the server is going).
pub async fn watch(
    vault: Arc<Vault>,
    reporter: HealthReporter,
    every: Duration,
    was: bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut serving = was;
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            set_all(&reporter, ServingStatus::NotServing).await;
            return;
        }
        serving = probe(&vault, &reporter, Some(serving)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    async fn statuses(addr: std::net::SocketAddr) -> Vec<i32> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = HealthClient::new(channel);
        let mut out = Vec::new();
        for name in services() {
            let r = c
                .check(HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .unwrap();
            out.push(r.into_inner().status);
        }
        out
    }

    async fn until(addr: std::net::SocketAddr, status: ServingStatus) -> bool {
        for _ in 0..100 {
            if statuses(addr).await.iter().all(|s| *s == status as i32) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn server(dir: &tempfile::TempDir) -> crate::server::RunningServer {
        crate::server::start(ServerConfig {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_service_is_reported_and_follows_a_dead_writer() {
        let dir = tempfile::tempdir().unwrap();
        let s = server(&dir).await;
        assert!(until(s.addr, ServingStatus::Serving).await);
        s.vault.stop_writer().await;
        assert!(until(s.addr, ServingStatus::NotServing).await);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn not_serving_while_storage_cannot_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = server(&dir).await;
        assert!(until(s.addr, ServingStatus::Serving).await);
        let db = dir.path().join("data/strongbox.db");
        let refusing = crate::store::faults::refuse_meta_writes(&db, "health_probe");
        assert!(until(s.addr, ServingStatus::NotServing).await);
        drop(refusing);
        assert!(until(s.addr, ServingStatus::Serving).await);
    }
}
