//! The deployment examples in deploy/: the systemd unit passes
//! `systemd-analyze verify` (where systemd is installed) with its hardening
//! in place; the Prometheus alert rules pass `promtool check rules` (where
//! scripts/test could fetch promtool), and tests/metrics.rs checks that
//! every metric they name exists.
#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/strongbox.service"),
    )
    .unwrap();
    for option in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/strongbox",
        "MemoryDenyWriteExecute=yes",
        "LimitCORE=0",
    ] {
        assert!(
            unit.contains(option),
            "deploy/strongbox.service lacks {option}"
        );
    }
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped the verify: no systemd-analyze on this machine");
        return;
    }
    // Verified with this build's binary where the unit expects the installed one.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strongbox.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/strongbox", env!("CARGO_BIN_EXE_strongbox")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_pass_promtool() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fetched = root.join("target/tools/prometheus/usr/bin/promtool");
    let promtool = if fetched.exists() {
        fetched
    } else if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        "promtool".into()
    } else {
        eprintln!("skipped: no promtool (scripts/test fetches it where apt-get can)");
        return;
    };
    let out = std::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(root.join("deploy/prometheus/alerts.yml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("SUCCESS: 6 rules found"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
