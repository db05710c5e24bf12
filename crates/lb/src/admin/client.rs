//! One HTTP/1.1 exchange over a fresh plain-TCP connection, for the admin page's calls to the
//! CA and to peer LBs (never on the request path, which pools its connections).

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Sends `request` to `authority` and reads the answer, refusing one over `max_body` bytes.
pub(super) async fn exchange<B>(
    authority: &str,
    request: Request<B>,
    max_body: usize,
) -> std::io::Result<(StatusCode, Bytes)>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(authority).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(io)?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(io)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

fn io(e: hyper::Error) -> std::io::Error {
    std::io::Error::other(e)
}
