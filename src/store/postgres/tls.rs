//! How a connection reaches PostgreSQL: plaintext, or TLS verified against
//! the CA the operator names (`database_ca`). TLS is required, and the
//! server's certificate checked (chain and host name), when the URL says
//! `sslmode=require` or a CA is given; a URL asking for TLS with no CA to
//! check the server against is refused at start rather than connected
//! unverified.

use std::path::Path;
use std::sync::Arc;

use postgres::config::SslMode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The parsed URL and how to connect with it.
#[derive(Clone)]
pub(crate) struct Target {
    config: postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl Target {
    /// Parses `url` and, with `ca` (PEM), sets TLS up against it.
    pub(crate) fn new(url: &str, ca: Option<&Path>) -> Result<Target> {
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            // The parser's messages name the option, never its value.
            Error::invalid("database_url", format!("not a PostgreSQL URL: {e}"))
        })?;
        let tls = match (config.get_ssl_mode(), ca) {
            (SslMode::Disable, Some(_)) => {
                return Err(Error::invalid(
                    "database_ca",
                    "is set, but database_url says sslmode=disable",
                ));
            }
            (SslMode::Disable | SslMode::Prefer, None) => None,
            (_, None) => {
                return Err(Error::invalid(
                    "database_ca",
                    "database_url asks for TLS (sslmode=require): give the CA certificate (PEM) that signed the database server's certificate, which Strongbox verifies",
                ));
            }
            (_, Some(ca)) => {
                // A CA given means TLS or nothing (no fallback to plaintext).
                config.ssl_mode(SslMode::Require);
                Some(MakeRustlsConnect::new(client_config(ca)?))
            }
        };
        Ok(Target { config, tls })
    }

    /// Opens a connection.
    pub(super) fn connect(&self) -> std::result::Result<postgres::Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        }
    }
}

fn client_config(ca: &Path) -> Result<rustls::ClientConfig> {
    let bad =
        |e: &dyn std::fmt::Display| Error::invalid("database_ca", format!("{}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(url: &str, ca: Option<&Path>) -> String {
        match Target::new(url, ca) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tls_is_asked_for_with_a_ca_or_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap_or_else(|e| panic!("{e}"));
        let e = refusal("postgres://u:hunter2@db/v?sslmode=require", None);
        assert!(e.contains("database_ca"), "{e}");
        let e = refusal("postgres://u:hunter2@db/v?sslmode=disable", Some(&empty));
        assert!(e.contains("sslmode=disable"), "{e}");
        let e = refusal("postgres://u:hunter2@db/v", Some(&empty));
        assert!(e.contains("no certificate"), "{e}");
        let e = refusal("postgres://u:hunter2@db/v?sslmode=sometimes", None);
        assert!(e.contains("database_url") && !e.contains("hunter2"), "{e}");
        let plain = Target::new("postgres://u:hunter2@db/v", None);
        assert!(plain.is_ok_and(|t| t.tls.is_none()));
    }
}
