//! The CLI against a real server process: README's quickstart, run verbatim,
//! and exit codes and stderr on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{random_hex, spawn_binary, spawn_binary_logging};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_strongbox")
}

/// `strongbox serve` with its defaults, in `dir`, on port 0.
fn serve_in(dir: &Path) -> (std::process::Child, String) {
    spawn_binary(&[], dir)
}

fn quickstart() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("<!-- quickstart:start -->")
        .nth(1)
        .and_then(|s| s.split("<!-- quickstart:end -->").next())
        .expect("README has a quickstart block");
    let script = block
        .trim()
        .trim_start_matches("```sh")
        .trim_end_matches("```");
    // The build line is for people; the test already has the binary.
    script
        .lines()
        .filter(|l| !l.starts_with("cargo build"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn readme_quickstart_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, endpoint) = serve_in(dir.path());
    let bin_dir = Path::new(bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &quickstart()])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("STRONGBOX_ENDPOINT", &endpoint)
        .env_remove("STRONGBOX_API_KEY")
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("acme\tAcme Corp\tactive"), "{stdout}");
    assert!(stdout.contains("stored version 1"), "{stdout}");
    assert!(
        stdout.contains("\"subject\": \"alice@example.com\""),
        "export: {stdout}"
    );
    assert!(stdout.contains("records unreadable: 1"), "{stdout}");
    assert!(stdout.contains("erased, as promised"), "{stdout}");
    assert!(
        stderr.contains("error: NOT_FOUND: record not found"),
        "{stderr}"
    );
}

#[test]
fn failures_exit_nonzero_with_the_status_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, endpoint) = serve_in(dir.path());
    let op_key = std::fs::read_to_string(dir.path().join("strongbox-data/operator.key")).unwrap();
    let run = |key: &str, args: &[&str]| {
        Command::new(bin())
            .args(args)
            .env("STRONGBOX_ENDPOINT", &endpoint)
            .env("STRONGBOX_API_KEY", key)
            .output()
            .unwrap()
    };
    let ok = run(op_key.trim(), &["--json", "tenant", "create", "t1"]);
    assert!(ok.status.success());
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["id"], "t1");
    assert_eq!(v["state"], "active");

    let cases: [(&str, &[&str], &str); 4] = [
        (
            "sbk_bad",
            &["tenant", "list"],
            "error: UNAUTHENTICATED: invalid API key",
        ),
        (
            op_key.trim(),
            &["tenant", "create", "BAD ID"],
            "error: INVALID_ARGUMENT: tenant:",
        ),
        (
            op_key.trim(),
            &["tenant", "get", "nope"],
            "error: NOT_FOUND: tenant 'nope' not found",
        ),
        (
            op_key.trim(),
            &[
                "record",
                "get",
                "--tenant",
                "t1",
                "--category",
                "c",
                "--key",
                "k",
            ],
            "error: PERMISSION_DENIED: role operator may not record.get",
        ),
    ];
    for (key, args, expected) in cases {
        let out = run(key, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed to stdout on failure"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn no_canary_in_the_server_log_or_the_audit_output() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    // The most verbose logging there is, every crate included.
    let (mut server, endpoint) = spawn_binary_logging(&[], dir.path(), "trace", Some(&log));
    let op_key = std::fs::read_to_string(dir.path().join("strongbox-data/operator.key")).unwrap();
    let canary = format!("CANARY-{}", random_hex(20));
    let subject = format!("canary-subject-{}@example.com", random_hex(8));
    let run = |key: &str, args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .env("STRONGBOX_ENDPOINT", &endpoint)
            .env("STRONGBOX_API_KEY", key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let op = op_key.trim();
    run(op, &["tenant", "create", "t"]);
    let admin = run(
        op,
        &[
            "principal",
            "create",
            "--tenant",
            "t",
            "--role",
            "admin",
            "a",
        ],
    );
    let user = run(
        admin.trim(),
        &[
            "principal",
            "create",
            "--tenant",
            "t",
            "--role",
            "writer",
            "--role",
            "reader",
            "--role",
            "privacy-officer",
            "u",
        ],
    );
    let user = user.trim();
    let addr = [
        "--tenant",
        "t",
        "--subject",
        &subject,
        "--category",
        "contact",
        "--key",
        "email",
    ];
    run(
        user,
        &[&["record", "put"][..], &addr, &["--value", &canary]].concat(),
    );
    assert_eq!(run(user, &[&["record", "get"][..], &addr].concat()), canary);
    run(
        user,
        &["subject", "export", "--tenant", "t", "--subject", &subject],
    );
    run(
        user,
        &["subject", "shred", "--tenant", "t", "--subject", &subject],
    );

    let verify = run(op, &["audit", "verify"]);
    assert!(verify.starts_with("ok: "), "{verify}");
    let lines = run(
        op,
        &["--json", "audit", "list", "--tenant", "t", "--since", "1h"],
    );
    let entries: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "subject.shred" && e["outcome"] == "ok")
    );
    assert!(entries.iter().any(|e| e["action"] == "record.get"));
    server.kill().unwrap();
    server.wait().unwrap();

    let log_text = std::fs::read(&log).unwrap();
    assert!(log_text.len() > 1000, "trace logging produced output");
    for (what, bytes) in [
        ("server log", &log_text),
        ("audit list", &lines.into_bytes()),
    ] {
        for needle in [canary.as_bytes(), subject.as_bytes(), b"canary-subject"] {
            let found = bytes.windows(needle.len()).any(|w| w == needle);
            assert!(!found, "{what} holds {:?}", String::from_utf8_lossy(needle));
        }
        // API keys do not leak either.
        assert!(
            !bytes.windows(user.len()).any(|w| w == user.as_bytes()),
            "{what} holds an API key"
        );
    }
}

fn help(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn each_command_shows_only_the_flags_it_takes() {
    let client_flags = [
        "--endpoint",
        "--api-key",
        "--ca-cert",
        "--client-cert",
        "--purpose",
    ];
    for offline in [
        &["serve"][..],
        &["restore"],
        &["audit", "accept-loss"],
        &["key", "move-root"],
        &["enrol"],
    ] {
        let text = help(offline);
        for flag in client_flags {
            assert!(
                !text.contains(flag),
                "`{offline:?} --help` shows {flag}:\n{text}"
            );
        }
    }
    assert!(help(&["serve"]).contains("--metrics-listen"));
    for client in [&["record", "get"][..], &["tenant", "list"], &["backup"]] {
        let text = help(client);
        for flag in client_flags {
            assert!(text.contains(flag), "`{client:?} --help` lacks {flag}");
        }
    }
    // A client flag given to the server is refused, not ignored.
    let out = Command::new(bin())
        .args(["serve", "--endpoint", "http://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--endpoint'"));
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_strongbox()"),
        ("zsh", "#compdef strongbox"),
        ("fish", "complete -c strongbox"),
    ] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..200.min(text.len())]
        );
        assert!(text.contains("retention"), "{shell} completes subcommands");
    }
}

#[test]
fn the_stated_purpose_is_in_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, endpoint) = serve_in(dir.path());
    let key = std::fs::read_to_string(dir.path().join("strongbox-data/operator.key")).unwrap();
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let out = Command::new(bin())
            .args(["--endpoint", &endpoint, "--api-key", key.trim()])
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(
        &["--purpose", "TICKET-4711 offboarding", "tenant", "list"],
        &[],
    );
    run(
        &["tenant", "list"],
        &[("STRONGBOX_PURPOSE", "RUNBOOK-step-3")],
    );
    let trail = run(&["--json", "audit", "list", "--action", "tenant.list"], &[]);
    assert!(trail.contains("TICKET-4711 offboarding"), "{trail}");
    assert!(trail.contains("RUNBOOK-step-3"), "{trail}");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn bench_runs_ops_back_to_back_beside_the_health_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, endpoint) = serve_in(dir.path());
    let op_key = std::fs::read_to_string(dir.path().join("strongbox-data/operator.key")).unwrap();
    let pid = server.id().to_string();
    let bench = |ops: &str| {
        Command::new(bin())
            .args(["--json", "bench", "--op", ops, "--duration", "1s"])
            .args([
                "--concurrency",
                "8",
                "--records",
                "50",
                "--server-pid",
                &pid,
            ])
            .env("STRONGBOX_ENDPOINT", &endpoint)
            .env("STRONGBOX_API_KEY", op_key.trim())
            .output()
            .unwrap()
    };
    let out = bench("put,get,export,health");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    let ops: Vec<_> = runs.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["put", "get", "export", "health"], "{v}");
    let ceiling = v["health_ops_per_sec"].as_f64().unwrap();
    assert_eq!(ceiling, runs[3]["ops_per_sec"].as_f64().unwrap(), "{v}");
    for r in runs {
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
        assert!(r["server_cpu_us_per_op"].as_f64().unwrap() > 0.0, "{r}");
    }
    for r in &runs[..3] {
        let fraction = r["fraction_of_health"].as_f64().unwrap();
        let expected = r["ops_per_sec"].as_f64().unwrap() / ceiling;
        assert!((fraction - expected).abs() < 1e-9, "{r}");
    }
    assert!(runs[3].get("fraction_of_health").is_none(), "{v}");
    // The shred scenario reports the server's CPU per one-record shred.
    let shred = bench("shred");
    assert!(
        shred.status.success(),
        "{}",
        String::from_utf8_lossy(&shred.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&shred.stdout).unwrap();
    assert_eq!(v["records"], 50, "{v}");
    assert!(
        v["server_cpu_us_per_one_record_shred"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    // One op prints its object alone, as before.
    let one = bench("health");
    assert!(one.status.success());
    let v: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(v["op"], "health", "{v}");
    // Ops that run a scenario of their own do not go in a list.
    let refused = bench("shred,put");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--op: shred runs alone"), "{err}");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn bench_rewrap_reports_the_idle_rate_and_puts_beside_a_loaded_rewrap() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, endpoint) = serve_in(dir.path());
    let op_key = std::fs::read_to_string(dir.path().join("strongbox-data/operator.key")).unwrap();
    let out = Command::new(bin())
        .args(["--json", "bench", "--op", "rewrap", "--duration", "1s"])
        .args(["--concurrency", "4", "--records", "200"])
        .env("STRONGBOX_ENDPOINT", &endpoint)
        .env("STRONGBOX_API_KEY", op_key.trim())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["op"], "rewrap", "{v}");
    assert_eq!(v["data_keys"], 200, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    for field in [
        "rewrap_idle_deks_per_sec",
        "rewrap_deks_per_sec",
        "put_p99_ms_without",
        "put_p99_ms_during",
    ] {
        assert!(v[field].as_f64().unwrap() > 0.0, "{field}: {v}");
    }
    // The rate is the keys over the time it took.
    let idle =
        v["rewrap_idle_deks_per_sec"].as_f64().unwrap() * v["rewrap_idle_s"].as_f64().unwrap();
    assert!((idle - 200.0).abs() < 1e-6, "{v}");
    server.kill().unwrap();
    server.wait().unwrap();
}
