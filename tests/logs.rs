//! `serve --log-format json`: one JSON object a line on stderr, for log
//! pipelines; never a secret in it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args: Vec<&std::ffi::OsStr> = vec![
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--log-format".as_ref(),
        "json".as_ref(),
    ];
    // Serve::start reads the address from the JSON start-up line on stdout.
    let mut serve = Serve::start(&args, dir.path(), &[("RUST_LOG", "info")]).unwrap();
    assert!(serve.wait_for("strongbox serving", Duration::from_secs(10)));
    let operator_key = std::fs::read_to_string(data.join("operator.key")).unwrap();
    let lines = serve.seen().to_vec();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v.get(field).is_some(), "{field} missing: {line}");
        }
        assert!(!line.contains(operator_key.trim()), "a secret was logged");
    }
    let serving: serde_json::Value = serde_json::from_str(
        lines
            .iter()
            .find(|l| l.contains("strongbox serving"))
            .unwrap(),
    )
    .unwrap();
    // The event's fields sit at the top level, beside the message.
    assert!(serving.get("addr").is_some(), "{serving}");
    serve.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_config_file_sets_the_format_and_text_has_no_colour_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("strongbox.toml"),
        "data_dir = \"data\"\nlog_format = \"json\"\n",
    )
    .unwrap();
    let args: Vec<&std::ffi::OsStr> = vec!["--config".as_ref(), "strongbox.toml".as_ref()];
    let mut serve = Serve::start(&args, dir.path(), &[("RUST_LOG", "info")]).unwrap();
    assert!(serve.wait_for("strongbox serving", Duration::from_secs(10)));
    for line in serve.seen() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    serve.kill();

    // The flag wins over the file; text on a pipe carries no ANSI colour.
    let args: Vec<&std::ffi::OsStr> = vec![
        "--config".as_ref(),
        "strongbox.toml".as_ref(),
        "--log-format".as_ref(),
        "text".as_ref(),
    ];
    let mut serve = Serve::start(&args, dir.path(), &[("RUST_LOG", "info")]).unwrap();
    assert!(serve.wait_for("strongbox serving", Duration::from_secs(10)));
    for line in serve.seen() {
        assert!(!line.starts_with('{'), "{line}");
        assert!(!line.contains('\u{1b}'), "colour codes on a pipe: {line:?}");
    }
    serve.kill();
}
