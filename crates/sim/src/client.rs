//! One simulated agent's connection: TCP, TLS with its own client certificate (or none, or
//! plain HTTP for a baseline straight to a backend), then HTTP/1.1 kept alive.

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::{
    client::Resumption,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, RootCertStore,
};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::agent::Step;

/// Where the simulated agents connect.
#[derive(Debug, Clone)]
pub enum Target {
    /// The LB (or any TLS server whose certificate names `server_name`).
    Tls { addr: SocketAddr, server_name: ServerName<'static>, roots: Arc<RootCertStore> },
    /// A backend straight, over plain HTTP (a baseline); `identity_headers` adds the
    /// `X-Client-*` headers an LB would set.
    Plain { addr: SocketAddr, identity_headers: bool },
}

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] http::Error),
    #[error("cannot read {0}: {1}")]
    Read(String, String),
}

/// A client TLS configuration: the CA bundle, and the agent's certificate when it has one.
/// Session resumption is off unless asked for: every connection is a full handshake, as an agent
/// run makes.
pub fn tls_config(
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    resume: bool,
) -> Result<Arc<ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Read("TLS versions".into(), e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| ClientError::Read("client certificate".into(), e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// The CA bundle as a root store.
pub fn roots(bundle: &Path) -> Result<Arc<RootCertStore>, ClientError> {
    let read_err = |e: String| ClientError::Read(bundle.display().to_string(), e);
    let pem = std::fs::read(bundle).map_err(|e| read_err(e.to_string()))?;
    let mut store = RootCertStore::empty();
    for der in pki::pemfile::blocks(&pem, "CERTIFICATE").map_err(|e| read_err(e.to_string()))? {
        store.add(CertificateDer::from(der)).map_err(|e| read_err(e.to_string()))?;
    }
    Ok(Arc::new(store))
}

/// An open connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    identity: Option<(HeaderValue, HeaderValue)>,
}

/// Opens a connection as `certname` (TLS: with `config`); returns it and the time the TCP and
/// TLS handshakes took.
pub async fn connect(
    target: &Target,
    config: Option<&Arc<ClientConfig>>,
    certname: &str,
) -> Result<(Conn, Duration), ClientError> {
    let started = Instant::now();
    match target {
        Target::Tls { addr, server_name, roots } => {
            let tcp = TcpStream::connect(addr).await.map_err(ClientError::Connect)?;
            let _ = tcp.set_nodelay(true);
            let config = match config {
                Some(config) => config.clone(),
                None => tls_config(roots.clone(), None, false)?,
            };
            let tls = TlsConnector::from(config)
                .connect(server_name.clone(), tcp)
                .await
                .map_err(ClientError::Tls)?;
            let took = started.elapsed();
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(connection);
            let host = HeaderValue::from_str(&format!("{}:{}", server_name.to_str(), addr.port()))
                .unwrap_or(HeaderValue::from_static("localhost"));
            Ok((Conn { sender, host, identity: None }, took))
        }
        Target::Plain { addr, identity_headers } => {
            let tcp = TcpStream::connect(addr).await.map_err(ClientError::Connect)?;
            let _ = tcp.set_nodelay(true);
            let took = started.elapsed();
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(connection);
            let host = HeaderValue::from_str(&addr.to_string())
                .unwrap_or(HeaderValue::from_static("localhost"));
            let identity = identity_headers.then(|| {
                (
                    HeaderValue::from_static("SUCCESS"),
                    HeaderValue::from_str(&format!("CN={certname}"))
                        .unwrap_or(HeaderValue::from_static("CN=agent")),
                )
            });
            Ok((Conn { sender, host, identity }, took))
        }
    }
}

/// An answer: status, body size, and the `Retry-After` seconds when given.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: StatusCode,
    pub bytes: usize,
    pub retry_after: Option<u64>,
}

impl Conn {
    /// Sends one step and reads the whole answer.
    pub async fn send(&mut self, step: &Step) -> Result<Answer, ClientError> {
        self.sender.ready().await?;
        let mut request = Request::builder()
            .method(step.method.clone())
            .uri(&step.path)
            .header(header::HOST, self.host.clone());
        for (name, value) in &step.headers {
            request = request.header(name, value);
        }
        if let Some(content_type) = step.content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        if let Some((verify, dn)) = &self.identity {
            request =
                request.header("x-client-verify", verify.clone()).header("x-client-dn", dn.clone());
        }
        let response =
            self.sender.send_request(request.body(Full::new(step.body.clone()))?).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut body = response.into_body();
        let mut bytes = 0;
        while let Some(frame) = body.frame().await {
            bytes += frame?.data_ref().map_or(0, Bytes::len);
        }
        Ok(Answer { status, bytes, retry_after })
    }
}
