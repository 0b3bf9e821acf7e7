//! Prometheus metrics over real HTTP: `/metrics` on the listener
//! `metrics_listen` names, counters that move with calls, no personal data
//! or secret in any label, tenant labels only when asked for, and output
//! that the Prometheus client library's OpenMetrics parser accepts.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;

use common::*;
use strongbox::config::ServerConfig;
use tonic::Code;

/// `GET path` over a plain TCP connection: (status line, body).
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn scrape(s: &TestServer) -> String {
    let addr = s.server.as_ref().unwrap().metrics_addr.unwrap();
    let (status, body) = http_get(addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    body
}

/// The value of the sample `series` (name and labels as printed), or 0.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.split(' ').next().unwrap().parse().unwrap())
}

fn calls(method: &str, code: u32) -> String {
    format!(
        "strongbox_rpc_server_calls_total{{rpc_service=\"strongbox.v1.RecordService\",rpc_method=\"{method}\",rpc_grpc_status_code=\"{code}\"}}"
    )
}

async fn server(tenant_labels: bool) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_tenant_labels: tenant_labels,
        ..config_for(&dir)
    };
    TestServer::start_with(dir, config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_move_with_calls_and_no_label_carries_personal_data() {
    let s = server(false).await;
    let (_, user) = s.tenant_with_user("acme-metrics").await;
    let before = scrape(&s);
    for i in 0..3 {
        put_ok(
            &user,
            "acme-metrics",
            "alice-SUBJECT-SECRET",
            "contact",
            &format!("KEY-SECRET-{i}"),
            b"VALUE-SECRET",
        )
        .await;
    }
    assert_status(
        get_value(&user, "acme-metrics", "nobody", "contact", "missing").await,
        Code::NotFound,
        "",
    );
    let after = scrape(&s);
    // Other tests' servers share the process's metrics: deltas, at least.
    assert!(value(&after, &calls("PutRecord", 0)) - value(&before, &calls("PutRecord", 0)) >= 3.0);
    assert!(value(&after, &calls("GetRecord", 5)) - value(&before, &calls("GetRecord", 5)) >= 1.0);
    let audited = "strongbox_audit_entries_written_total";
    assert!(
        value(&after, audited) - value(&before, audited) >= 4.0,
        "{after}"
    );
    let commits = "strongbox_store_group_commit_jobs_count";
    assert!(value(&after, commits) > value(&before, commits));
    for family in [
        "strongbox_rpc_server_duration_seconds_bucket{le=\"0.0001\",rpc_service=\"strongbox.v1.RecordService\",rpc_method=\"PutRecord\"}",
        "strongbox_rpc_server_in_flight",
        "strongbox_rpc_server_shed_total",
        "strongbox_store_writer_queue_depth",
        "strongbox_store_commit_duration_seconds_count",
        "strongbox_store_read_pool_wait_seconds_count",
        "strongbox_key_cache_lookups_total{result=\"hit\"}",
        "strongbox_audit_write_failures_total",
        "strongbox_rewrap_data_keys_remaining",
        "strongbox_reencrypt_jobs_remaining",
        "strongbox_retention_expired_records_total",
        "strongbox_tenant_shreds_pending",
        "strongbox_housekeeping_age_seconds",
        "strongbox_erasure_epoch",
        "strongbox_build_info{version=",
    ] {
        assert!(after.contains(family), "no {family} in\n{after}");
    }
    for secret in [
        "SUBJECT-SECRET",
        "KEY-SECRET",
        "VALUE-SECRET",
        "acme-metrics",
        "sbk_",
    ] {
        assert!(!after.contains(secret), "{secret} in /metrics");
    }
    let (status, _) = http_get(s.server.as_ref().unwrap().metrics_addr.unwrap(), "/other");
    assert!(status.contains("404"), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_labels_only_when_asked_for() {
    let s = server(true).await;
    let (_, user) = s.tenant_with_user("labelled").await;
    put_ok(&user, "labelled", "bob", "c", "k", b"v").await;
    let text = scrape(&s);
    assert!(
        text.contains("strongbox_tenant_calls_total{tenant=\"labelled\",rpc_method=\"record.put\",outcome=\"ok\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prometheus_parser_accepts_the_output() {
    let Some(python) = pyenv_python("the Prometheus parser") else {
        return;
    };
    let s = server(true).await;
    let (_, user) = s.tenant_with_user("parsed").await;
    put_ok(&user, "parsed", "bob", "c", "k", b"v").await;
    let text = scrape(&s);
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import sys\n\
             from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
             fams = list(text_string_to_metric_families(sys.stdin.read()))\n\
             names = {f.name for f in fams}\n\
             for n in ['strongbox_rpc_server_calls', 'strongbox_rpc_server_duration_seconds', 'strongbox_build_info']:\n\
             \x20   assert n in names, n\n\
             print(len(fams), 'families')",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "the parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("families"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_alerts_and_the_docs_name_only_metrics_that_exist() {
    let s = server(false).await;
    let text = scrape(&s);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let alerts = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    let docs = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let names = |doc: &str| -> Vec<String> {
        doc.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("strongbox_") && w.len() > "strongbox_".len())
            .map(str::to_owned)
            .collect()
    };
    // The per-tenant family exists only with tenant labels on.
    let labelled = server(true).await;
    let (_, user) = labelled.tenant_with_user("docs").await;
    put_ok(&user, "docs", "x", "c", "k", b"v").await;
    let all = format!("{text}{}", scrape(&labelled));
    for name in names(&alerts).into_iter().chain(names(&docs)) {
        // A family with no sample yet is still declared (`# TYPE family`).
        let family = name.strip_suffix("_total").unwrap_or(&name);
        assert!(
            all.contains(&name) || all.contains(&format!("# TYPE {family} ")),
            "{name} is documented but not exported"
        );
    }
    // And every exported family is documented.
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let family = line.split(' ').next().unwrap();
        assert!(
            docs.contains(family),
            "{family} is not in docs/operations.md"
        );
    }
}
