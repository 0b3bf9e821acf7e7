//! A gRPC client for Strongbox: one channel, the API key attached to every
//! call. The CLI, `strongbox bench` and the integration tests all use it.

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::api::pb::{
    audit_service_client::AuditServiceClient, backup_service_client::BackupServiceClient,
    key_service_client::KeyServiceClient, principal_service_client::PrincipalServiceClient,
    record_service_client::RecordServiceClient, retention_service_client::RetentionServiceClient,
    subject_service_client::SubjectServiceClient, tenant_service_client::TenantServiceClient,
};

/// Adds `authorization: Bearer <key>` to every call, and the stated
/// purpose (`x-strongbox-purpose`, recorded in the audit trail) if any.
#[derive(Clone)]
pub struct Auth {
    bearer: Option<AsciiMetadataValue>,
    purpose: Option<AsciiMetadataValue>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(b) = &self.bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        if let Some(p) = &self.purpose {
            req.metadata_mut().insert("x-strongbox-purpose", p.clone());
        }
        Ok(req)
    }
}

pub(crate) type Svc = InterceptedService<Channel, Auth>;

/// A connection to a Strongbox server acting as one principal.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    endpoint: Option<Endpoint>,
    auth: Auth,
}

/// TLS for the client: PEM files.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// CA that signed the server's certificate (https endpoints).
    pub ca_cert: Option<std::path::PathBuf>,
    /// Client certificate and key, for servers that require mTLS.
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
}

impl ClientTls {
    fn config(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let read = |flag: &str, p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| anyhow::anyhow!("{flag}: cannot read {}: {e}", p.display()))
        };
        if self.ca_cert.is_none() && self.client_cert.is_none() {
            return Ok(None);
        }
        let mut c = ClientTlsConfig::new();
        if let Some(ca) = &self.ca_cert {
            c = c.ca_certificate(Certificate::from_pem(read("--ca-cert", ca)?));
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                c = c.identity(Identity::from_pem(
                    read("--client-cert", cert)?,
                    read("--client-key", key)?,
                ));
            }
            (None, None) => {}
            _ => anyhow::bail!("--client-cert and --client-key go together"),
        }
        Ok(Some(c))
    }
}

/// Responses up to this size are accepted (a 1 MiB value plus room).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

impl Client {
    /// Connects to `endpoint` (`http://host:port`).
    pub async fn connect(endpoint: &str, api_key: Option<&str>) -> anyhow::Result<Self> {
        Self::connect_tls(endpoint, api_key, &ClientTls::default()).await
    }

    /// Connects to `endpoint` (`https://host:port` with TLS).
    pub async fn connect_tls(
        endpoint: &str,
        api_key: Option<&str>,
        tls: &ClientTls,
    ) -> anyhow::Result<Self> {
        let mut ep = Endpoint::from_shared(endpoint.to_owned()).map_err(|e| {
            anyhow::anyhow!(
                "--endpoint: '{endpoint}' is not a URL like http://127.0.0.1:50051: {e}"
            )
        })?;
        if let Some(c) = tls.config()? {
            ep = ep
                .tls_config(c)
                .map_err(|e| anyhow::anyhow!("TLS setup failed: {e}"))?;
        }
        let channel = ep
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {endpoint}: {e}"))?;
        let mut client = Self::with_channel(channel, api_key)?;
        client.endpoint = Some(ep);
        Ok(client)
    }

    /// A new connection to the same server, acting with `api_key`.
    pub async fn reconnect(&self, api_key: &str) -> anyhow::Result<Self> {
        let ep = self.endpoint.clone().ok_or_else(|| {
            anyhow::anyhow!("this client was built over a channel; it cannot reconnect")
        })?;
        let mut client = Self::with_channel(ep.connect().await?, Some(api_key))?;
        client.endpoint = Some(ep);
        Ok(client)
    }

    /// A client over an existing channel (several principals can share one).
    pub fn with_channel(channel: Channel, api_key: Option<&str>) -> anyhow::Result<Self> {
        let bearer = match api_key {
            Some(k) => Some(
                MetadataValue::try_from(format!("Bearer {}", k.trim())).map_err(|_| {
                    anyhow::anyhow!("the API key contains characters that cannot be sent")
                })?,
            ),
            None => None,
        };
        Ok(Client {
            channel,
            endpoint: None,
            auth: Auth {
                bearer,
                purpose: None,
            },
        })
    }

    /// The same client, stating `purpose` on every call (why the caller
    /// acts: a ticket, a runbook step); the audit trail records it.
    pub fn with_purpose(mut self, purpose: &str) -> anyhow::Result<Self> {
        self.auth.purpose = Some(MetadataValue::try_from(purpose).map_err(|_| {
            anyhow::anyhow!("--purpose: must be printable ASCII (at most 256 bytes)")
        })?);
        Ok(self)
    }

    /// The same connection acting with another API key.
    pub fn as_key(&self, api_key: &str) -> anyhow::Result<Self> {
        let mut client = Self::with_channel(self.channel.clone(), Some(api_key))?;
        client.endpoint = self.endpoint.clone();
        client.auth.purpose = self.auth.purpose.clone();
        Ok(client)
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn tenants(&self) -> TenantServiceClient<Svc> {
        TenantServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn principals(&self) -> PrincipalServiceClient<Svc> {
        PrincipalServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn records(&self) -> RecordServiceClient<Svc> {
        RecordServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    pub fn backup(&self) -> BackupServiceClient<Svc> {
        BackupServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn retention(&self) -> RetentionServiceClient<Svc> {
        RetentionServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn keys(&self) -> KeyServiceClient<Svc> {
        KeyServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn audit(&self) -> AuditServiceClient<Svc> {
        AuditServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn subjects(&self) -> SubjectServiceClient<Svc> {
        SubjectServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }
}
