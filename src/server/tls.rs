//! TLS on the listener, done here rather than inside tonic so that a
//! refused handshake is logged with its peer and reason (no client
//! certificate, an unknown CA, an expired certificate, a wrong key usage)
//! and counted in the metrics; tonic then serves the established
//! `TlsStream`s (its `Connected` impl gives handlers the peer
//! certificates for mTLS, as before).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::connections::Guarded;
use crate::config::TlsFiles;
use crate::error::{Error, Result};

/// The acceptor for `tls`: the server's chain and key, and with a client CA
/// a verifier that requires a client certificate it signed (mTLS).
pub fn acceptor(tls: &TlsFiles) -> Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|c| c.collect::<std::result::Result<_, _>>())
        .map_err(|e| Error::invalid("tls_cert", format!("{}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(Error::invalid(
            "tls_cert",
            format!("{}: no certificate in it", tls.cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| Error::invalid("tls_key", format!("{}: {e}", tls.key.display())))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid("tls_cert", format!("TLS setup failed: {e}")))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| Error::invalid("client_ca", format!("{}: {e}", ca.display())))?
            {
                let cert = cert
                    .map_err(|e| Error::invalid("client_ca", format!("{}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::invalid("client_ca", format!("{}: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| Error::invalid("client_ca", format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| Error::invalid("tls_key", format!("does not match tls_cert: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The reasons a refused handshake is counted under (the metric's label
/// values, each present from the start at 0).
pub(crate) const REASONS: [&str; 16] = [
    "handshake timed out",
    "peer closed the connection during the handshake",
    "connection error during the handshake",
    "no client certificate",
    "client certificate from an unknown CA",
    "expired client certificate",
    "client certificate not valid yet",
    "wrong key usage: the client certificate lacks extendedKeyUsage clientAuth",
    "revoked client certificate",
    "malformed client certificate",
    "invalid client certificate",
    "no common ALPN protocol (the client does not speak h2)",
    "TLS version or cipher suites not supported by the peer",
    "not TLS (or a malformed handshake)",
    "the peer aborted the handshake (it refused our certificate?)",
    "TLS error",
];

/// Why a handshake failed, in words an operator can act on.
pub fn reason(e: &io::Error) -> &'static str {
    use rustls::{CertificateError, Error as Tls};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Tls>()) else {
        return match e.kind() {
            io::ErrorKind::TimedOut => "handshake timed out",
            io::ErrorKind::UnexpectedEof => "peer closed the connection during the handshake",
            _ => "connection error during the handshake",
        };
    };
    match tls {
        Tls::NoCertificatesPresented => "no client certificate",
        Tls::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "client certificate from an unknown CA",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "expired client certificate"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "client certificate not valid yet"
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "wrong key usage: the client certificate lacks extendedKeyUsage clientAuth"
            }
            CertificateError::Revoked => "revoked client certificate",
            CertificateError::BadSignature | CertificateError::BadEncoding => {
                "malformed client certificate"
            }
            _ => "invalid client certificate",
        },
        Tls::NoApplicationProtocol => "no common ALPN protocol (the client does not speak h2)",
        Tls::PeerIncompatible(_) => "TLS version or cipher suites not supported by the peer",
        Tls::InvalidMessage(_) => "not TLS (or a malformed handshake)",
        Tls::AlertReceived(_) => "the peer aborted the handshake (it refused our certificate?)",
        _ => "TLS error",
    }
}

/// Logs refused handshakes at most once a second, counting the rest.
struct RefusedLog {
    last: Option<Instant>,
    quiet: u64,
}

impl RefusedLog {
    fn note(&mut self, peer: SocketAddr, why: &'static str) {
        crate::metrics::get().tls_refused(why);
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.quiet += 1;
            return;
        }
        tracing::warn!(
            %peer,
            reason = why,
            suppressed = self.quiet,
            "TLS handshake refused"
        );
        self.last = Some(now);
        self.quiet = 0;
    }
}

/// Runs each connection's handshake on its own task (within `timeout`)
/// and yields the ones that complete.
pub fn accept(
    mut plain: tokio_stream::wrappers::ReceiverStream<io::Result<Guarded>>,
    acceptor: TlsAcceptor,
    timeout: Duration,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsStream<Guarded>>> {
    use tokio_stream::StreamExt;
    let (tx, rx) = mpsc::channel(64);
    let log = Arc::new(Mutex::new(RefusedLog {
        last: None,
        quiet: 0,
    }));
    tokio::spawn(async move {
        while let Some(conn) = plain.next().await {
            let Ok(conn) = conn else { continue };
            let (acceptor, tx, log) = (acceptor.clone(), tx.clone(), log.clone());
            tokio::spawn(async move {
                let peer = conn.peer();
                let done = tokio::time::timeout(timeout, acceptor.accept(conn))
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
                match done {
                    Ok(tls) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Err(e) => log
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .note(peer, reason(&e)),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_a_declared_label() {
        use rustls::{CertificateError, Error as Tls};
        let errors = [
            io::Error::new(io::ErrorKind::InvalidData, Tls::NoCertificatesPresented),
            io::Error::new(
                io::ErrorKind::InvalidData,
                Tls::InvalidCertificate(CertificateError::UnknownIssuer),
            ),
            io::Error::new(
                io::ErrorKind::InvalidData,
                Tls::InvalidCertificate(CertificateError::Expired),
            ),
            io::Error::new(
                io::ErrorKind::InvalidData,
                Tls::InvalidCertificate(CertificateError::InvalidPurpose),
            ),
            io::Error::new(
                io::ErrorKind::InvalidData,
                Tls::InvalidCertificate(CertificateError::NotValidYet),
            ),
            io::Error::new(io::ErrorKind::InvalidData, Tls::NoApplicationProtocol),
            io::Error::new(io::ErrorKind::InvalidData, Tls::DecryptError),
            io::ErrorKind::TimedOut.into(),
            io::ErrorKind::UnexpectedEof.into(),
            io::ErrorKind::ConnectionReset.into(),
        ];
        for e in &errors {
            assert!(REASONS.contains(&reason(e)), "{}", reason(e));
        }
        assert_eq!(reason(&errors[0]), "no client certificate");
        assert!(reason(&errors[3]).starts_with("wrong key usage"));
    }
}
