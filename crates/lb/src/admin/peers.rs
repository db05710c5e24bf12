//! The other LBs of a pair, as the admin page shows them: each peer's `/api/state`, asked
//! when the page asks this LB, with a short deadline so a dead peer shows as unreachable
//! rather than stalling the page.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// How long a peer may take to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest peer answer read.
const MAX_STATE: usize = 4 * 1024 * 1024;

/// What each peer says of its CRL and its own problems, or why it could not be asked.
pub(super) async fn states(peers: &[String]) -> Vec<Value> {
    let mut asks = tokio::task::JoinSet::new();
    for (index, authority) in peers.iter().cloned().enumerate() {
        asks.spawn(async move { (index, ask(&authority).await) });
    }
    let mut answers: Vec<(usize, Value)> = Vec::with_capacity(peers.len());
    while let Some(joined) = asks.join_next().await {
        if let Ok(answer) = joined {
            answers.push(answer);
        }
    }
    answers.sort_by_key(|(index, _)| *index);
    answers.into_iter().map(|(_, value)| value).collect()
}

async fn ask(authority: &str) -> Value {
    match tokio::time::timeout(PEER_TIMEOUT, state(authority)).await {
        Ok(Ok(state)) => json!({
            "peer": authority,
            "reachable": true,
            "crl": state["crl"],
            "problems": state["problems"],
            "now": state["now"],
        }),
        Ok(Err(e)) => json!({"peer": authority, "reachable": false, "error": e.to_string()}),
        Err(_) => {
            json!({"peer": authority, "reachable": false, "error": format!("no answer within {PEER_TIMEOUT:?}")})
        }
    }
}

async fn state(authority: &str) -> std::io::Result<Value> {
    let stream = TcpStream::connect(authority).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(io)?;
    tokio::spawn(connection);
    let request = Request::get("/api/state?local")
        .header(header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(std::io::Error::other)?;
    let response = sender.send_request(request).await.map_err(io)?;
    if !response.status().is_success() {
        return Err(std::io::Error::other(format!("answered {}", response.status())));
    }
    let body = Limited::new(response.into_body(), MAX_STATE)
        .collect()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

fn io(e: hyper::Error) -> std::io::Error {
    std::io::Error::other(e)
}
