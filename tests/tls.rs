//! TLS and mTLS on the listener, with certificates generated at test time:
//! the CA, server and client certificates are made here by rcgen.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use strongbox::api::pb;
use strongbox::client::{Client, ClientTls};
use strongbox::config::TlsFiles;
use tonic::Code;

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client(&self, cn: &str) -> ClientTls {
        ClientTls {
            ca_cert: Some(self.path("ca.pem")),
            client_cert: Some(self.path(&format!("{cn}.pem"))),
            client_key: Some(self.path(&format!("{cn}.key"))),
        }
    }

    fn server_only(&self) -> ClientTls {
        ClientTls {
            ca_cert: Some(self.path("ca.pem")),
            ..Default::default()
        }
    }
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

fn leaf(
    dir: &Path,
    file: &str,
    cn: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).unwrap();
    std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (ca_cert, issuer) = ca("Strongbox Test CA");
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    let server_sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    leaf(
        dir.path(),
        "server",
        "localhost",
        server_sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        &issuer,
    );
    for cn in ["billing", "other"] {
        leaf(
            dir.path(),
            cn,
            cn,
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
            &issuer,
        );
    }
    let (_, rogue) = ca("Rogue CA");
    leaf(
        dir.path(),
        "rogue",
        "billing",
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        &rogue,
    );
    Pki { dir }
}

async fn tls_server(pki: &Pki, mtls: bool) -> (TestServer, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&dir);
    config.tls = Some(TlsFiles {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: mtls.then(|| pki.path("ca.pem")),
    });
    let s = TestServer::start_with(dir, config).await;
    let port = s.server.as_ref().unwrap().addr.port();
    (s, format!("https://localhost:{port}"))
}

async fn list_tenants(c: &Client) -> Result<(), tonic::Status> {
    c.tenants()
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .map(drop)
}

/// Checks that `r` (from [`refusal`]) is a refusal during the TLS
/// handshake, not an answer of the application: a transport error, carrying
/// the `alert` expected when the alert reached the client before the
/// server closed the connection.
fn refused_in_handshake(r: &str, alert: &str, who: &str) {
    assert!(r.contains("transport error"), "{who}: {r}");
    if r.contains("alert:") {
        assert!(r.contains(alert), "{who}: expected alert {alert}: {r}");
    }
}

/// What a refused connection came to: the connect error, or the first
/// call's status, as text with its whole source chain.
async fn refusal(connected: anyhow::Result<Client>) -> String {
    match connected {
        Err(e) => format!("connect: {e:#}"),
        Ok(c) => match list_tenants(&c).await {
            Ok(_) => "the call succeeded".into(),
            Err(e) => {
                let mut text = format!("call: {:?} {}", e.code(), e.message());
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    text.push_str(&format!(": {s}"));
                    src = s.source();
                }
                text
            }
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_and_plaintext_is_refused() {
    let pki = pki();
    let (s, https) = tls_server(&pki, false).await;
    let c = Client::connect_tls(&https, Some(&s.operator_key), &pki.server_only())
        .await
        .unwrap();
    list_tenants(&c).await.unwrap();
    // A plaintext client gets nowhere.
    let plain = format!(
        "http://127.0.0.1:{}",
        s.server.as_ref().unwrap().addr.port()
    );
    let r = refusal(Client::connect(&plain, Some(&s.operator_key)).await).await;
    // The TLS listener answers the HTTP/2 preface with a TLS alert, which
    // the plaintext client reads as a malformed frame.
    assert!(
        r.contains("transport error") && !r.contains("alert:"),
        "plaintext on a TLS listener: {r}"
    );
    // A client that does not trust the server's CA refuses it.
    let other_dir = tempfile::tempdir().unwrap();
    let (other_ca, _) = ca("Some Other CA");
    std::fs::write(other_dir.path().join("ca.pem"), other_ca.pem()).unwrap();
    let wrong = ClientTls {
        ca_cert: Some(other_dir.path().join("ca.pem")),
        ..Default::default()
    };
    let r = refusal(Client::connect_tls(&https, Some(&s.operator_key), &wrong).await).await;
    assert!(
        r.starts_with("connect: cannot connect to https://"),
        "an untrusted server: {r}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_requires_a_certificate_from_the_client_ca() {
    let pki = pki();
    let (s, https) = tls_server(&pki, true).await;
    for (who, tls) in [
        ("no certificate", pki.server_only()),
        ("rogue CA", pki.client("rogue")),
    ] {
        let r = refusal(Client::connect_tls(&https, Some(&s.operator_key), &tls).await).await;
        let alert = match who {
            "no certificate" => "CertificateRequired",
            _ => "UnknownCA",
        };
        refused_in_handshake(&r, alert, who);
    }
    let c = Client::connect_tls(&https, Some(&s.operator_key), &pki.client("billing"))
        .await
        .unwrap();
    let r = c
        .tenants()
        .list_tenants(pb::ListTenantsRequest::default())
        .await;
    let id = common::rpcs::request_id(&r);
    r.unwrap();
    // The audit entry names the certificate.
    let peer = s
        .stored()
        .one("SELECT peer FROM audit_log WHERE request_id = $1", &[&id])
        .text();
    assert!(peer.ends_with(" cn=billing"), "{peer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_principal_needs_its_certificate() {
    let pki = pki();
    let (s, https) = tls_server(&pki, true).await;
    let op = Client::connect_tls(&https, Some(&s.operator_key), &pki.client("other"))
        .await
        .unwrap();
    let admin_key = tenant_with_admin(&op, "t").await;
    let admin = op.as_key(&admin_key).unwrap();
    let pinned = admin
        .principals()
        .create_principal(pb::CreatePrincipalRequest {
            tenant: "t".into(),
            name: "billing-service".into(),
            roles: vec!["reader".into()],
            expires_in_seconds: None,
            client_cert_cn: "billing".into(),
            enrolment: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .api_key;
    // The right key over the wrong certificate is refused...
    let wrong = Client::connect_tls(&https, Some(&pinned), &pki.client("other"))
        .await
        .unwrap();
    assert_status(
        get_value(&wrong, "t", "s", "c", "k").await,
        Code::Unauthenticated,
        "valid only with its client certificate",
    );
    // ...and accepted over its own.
    let right = Client::connect_tls(&https, Some(&pinned), &pki.client("billing"))
        .await
        .unwrap();
    assert_status(
        get_value(&right, "t", "s", "c", "k").await,
        Code::NotFound,
        "record not found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_a_public_address_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&dir);
    config.listen = "0.0.0.0:0".parse().unwrap();
    let err = strongbox::server::start(config.clone())
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("without TLS") && msg.contains("--insecure-plaintext"),
        "{msg}"
    );
    // Said explicitly, it starts.
    config.insecure_plaintext = true;
    let running = strongbox::server::start(config).await.unwrap();
    running.shutdown().await.unwrap();
}

#[test]
fn cli_speaks_tls() {
    let pki = pki();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (s, https) = rt.block_on(tls_server(&pki, true));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .args(["--endpoint", &https, "tenant", "create", "via-cli"])
        .arg("--ca-cert")
        .arg(pki.path("ca.pem"))
        .arg("--client-cert")
        .arg(pki.path("billing.pem"))
        .arg("--client-key")
        .arg(pki.path("billing.key"))
        .env("STRONGBOX_API_KEY", &s.operator_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("via-cli\t"));
    drop(s);
}

#[test]
fn serve_flags_turn_on_mtls_and_refuse_plaintext_beyond_loopback() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    // A public address without TLS flags: refused, saying why.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-plaintext"));
    // With --tls-cert/--tls-key/--client-ca: mTLS.
    let args: Vec<std::ffi::OsString> = vec![
        "--tls-cert".into(),
        pki.path("server.pem").into_os_string(),
        "--tls-key".into(),
        pki.path("server.key").into_os_string(),
        "--client-ca".into(),
        pki.path("ca.pem").into_os_string(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (mut server, endpoint) = spawn_binary(&args, dir.path());
    let port = endpoint.rsplit(':').next().unwrap().to_owned();
    let https = format!("https://localhost:{port}");
    let op_key = std::fs::read_to_string(dir.path().join("strongbox-data/operator.key")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Client::connect_tls(&https, Some(op_key.trim()), &pki.client("billing"))
            .await
            .unwrap();
        list_tenants(&c).await.unwrap();
        let r = refusal(Client::connect_tls(&https, Some(op_key.trim()), &pki.server_only()).await)
            .await;
        refused_in_handshake(&r, "CertificateRequired", "no certificate");
        let r = refusal(Client::connect(&endpoint, Some(op_key.trim())).await).await;
        assert!(
            r.contains("transport error") && !r.contains("alert:"),
            "plaintext to the mTLS listener: {r}"
        );
    });
    server.kill().unwrap();
    server.wait().unwrap();
}
