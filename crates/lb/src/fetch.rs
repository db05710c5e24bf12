//! One plain HTTP/1.1 GET to a backend on a fresh connection, bounded in time and size: what
//! health probes and CRL pulls send (never on the request path).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A backend's answer.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// What to ask for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Get<'a> {
    /// `host:port`.
    pub(crate) authority: &'a str,
    pub(crate) path: &'a str,
    pub(crate) user_agent: &'static str,
    pub(crate) if_modified_since: Option<&'a str>,
    pub(crate) if_none_match: Option<&'a str>,
    /// Largest body read; a longer one fails the fetch.
    pub(crate) max_body: usize,
    /// For the whole exchange, connect included.
    pub(crate) timeout: Duration,
}

/// Sends the GET and reads the whole answer; the error says what failed.
pub(crate) async fn get(get: Get<'_>) -> Result<Fetched, String> {
    let exchange = async {
        let stream =
            TcpStream::connect(get.authority).await.map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = Request::get(get.path)
            .header(header::HOST, get.authority)
            .header(header::USER_AGENT, get.user_agent);
        if let Some(since) = get.if_modified_since {
            request = request.header(header::IF_MODIFIED_SINCE, since);
        }
        if let Some(tag) = get.if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, get.max_body)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok(Fetched { status: parts.status, headers: parts.headers, body })
    };
    tokio::time::timeout(get.timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", get.timeout)))
}
