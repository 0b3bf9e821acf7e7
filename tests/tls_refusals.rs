//! Certificates made with the `openssl` commands the README shows: mTLS
//! works with a client certificate that has `extendedKeyUsage=clientAuth`,
//! and each refused handshake (no client certificate, wrong key usage, an
//! unknown CA) is logged with the peer and the reason (and counted in the
//! metrics: `strongbox_tls_handshakes_refused_total{reason}`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use strongbox::client::{Client, ClientTls};

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate it signs for `name` with extensions `ext`.
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn signed(dir: &Path, ca: &str, name: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openssl_certificates_work_and_each_refusal_says_why() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no openssl on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "ca");
    ca(d, "other-ca");
    signed(
        d,
        "ca",
        "server",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    signed(d, "ca", "app", "extendedKeyUsage=clientAuth\n");
    signed(d, "ca", "no-client-auth", "extendedKeyUsage=serverAuth\n");
    signed(d, "other-ca", "stranger", "extendedKeyUsage=clientAuth\n");

    let data = d.join("data");
    let args: Vec<std::ffi::OsString> = vec![
        "--data-dir".into(),
        data.clone().into(),
        "--tls-cert".into(),
        d.join("server.pem").into(),
        "--tls-key".into(),
        d.join("server.key").into(),
        "--client-ca".into(),
        d.join("ca.pem").into(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut serve = Serve::start(&args, d, &[("RUST_LOG", "warn")]).unwrap();
    let port = serve.endpoint.rsplit(':').next().unwrap().to_owned();
    let endpoint = format!("https://localhost:{port}");
    let key = std::fs::read_to_string(data.join("operator.key")).unwrap();
    let tls = |cert: Option<&str>| ClientTls {
        ca_cert: Some(d.join("ca.pem")),
        client_cert: cert.map(|c| d.join(format!("{c}.pem"))),
        client_key: cert.map(|c| d.join(format!("{c}.key"))),
    };
    // With clientAuth: served.
    let op = Client::connect_tls(&endpoint, Some(key.trim()), &tls(Some("app")))
        .await
        .unwrap();
    op.tenants()
        .list_tenants(strongbox::api::pb::ListTenantsRequest::default())
        .await
        .unwrap();

    for (cert, why) in [
        (None, "no client certificate"),
        (Some("no-client-auth"), "wrong key usage"),
        (Some("stranger"), "client certificate from an unknown CA"),
    ] {
        let refused = match Client::connect_tls(&endpoint, Some(key.trim()), &tls(cert)).await {
            Err(_) => true,
            Ok(c) => c
                .tenants()
                .list_tenants(strongbox::api::pb::ListTenantsRequest::default())
                .await
                .is_err(),
        };
        assert!(refused, "{cert:?} was served");
        let logged = tokio::task::block_in_place(|| {
            serve.wait_for(&format!("reason=\"{why}"), Duration::from_secs(5))
                || serve.wait_for(&format!("reason={why}"), Duration::from_secs(1))
        });
        assert!(logged, "no log line for {why}: {:?}", serve.seen());
        // One line a second at most: let the next refusal be logged.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(
        serve
            .seen()
            .iter()
            .any(|l| l.contains("TLS handshake refused") && l.contains("127.0.0.1")),
        "{:?}",
        serve.seen()
    );
    serve.kill();
}
