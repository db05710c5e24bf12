//! A small HTTPS client with a client certificate, for `crossbar ca … --server`.

use std::{path::Path, sync::Arc};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// One server, one identity; a connection per request.
pub struct AdminClient {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl AdminClient {
    pub fn new(server: &str, cert: &Path, key: &Path, cacert: &Path) -> anyhow::Result<Self> {
        let uri: Uri =
            server.parse().with_context(|| format!("--server {server:?} is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            bail!("--server {server:?} must be an https:// URL");
        }
        let host = uri.host().ok_or_else(|| anyhow!("--server {server:?} has no host"))?.to_owned();
        let port = uri.port_u16().unwrap_or(8140);
        let server_name = ServerName::try_from(host.clone())
            .with_context(|| format!("--server host {host:?} is not a valid name"))?;
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).with_context(|| format!("{flag} {}: cannot read", path.display()))
        };
        let chain: Vec<CertificateDer<'static>> =
            pki::pemfile::blocks(&read("--cert", cert)?, "CERTIFICATE")
                .with_context(|| format!("--cert {}", cert.display()))?
                .into_iter()
                .map(CertificateDer::from)
                .collect();
        let key_der = pki::pemfile::single_block(
            &read("--key", key)?,
            &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"],
        )
        .with_context(|| format!("--key {}", key.display()))?;
        let key = PrivateKeyDer::try_from(key_der)
            .map_err(|e| anyhow!("--key {}: {e}", key.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for der in pki::pemfile::blocks(&read("--cacert", cacert)?, "CERTIFICATE")
            .with_context(|| format!("--cacert {}", cacert.display()))?
        {
            roots
                .add(CertificateDer::from(der))
                .with_context(|| format!("--cacert {}", cacert.display()))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("the client certificate and key do not go together")?;
        Ok(Self { host, port, server_name, connector: TlsConnector::from(Arc::new(config)) })
    }

    /// Sends one request with a JSON body (or none) and returns status and body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        json: Option<serde_json::Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let address = format!("{}:{}", self.host, self.port);
        let tcp = TcpStream::connect(&address)
            .await
            .with_context(|| format!("cannot connect to {address}"))?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .with_context(|| format!("TLS with {address} failed"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        let body = json.map(|v| v.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, format!("{}:{}", self.host, self.port))
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "crossbar-ca-cli")
            .body(Full::new(Bytes::from(body)))?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("request to {address} failed"))?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}
