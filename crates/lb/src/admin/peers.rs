//! The other LBs of a pair, as the admin page shows them: each peer's `/api/state`, asked
//! when the page asks this LB, with a short deadline so a dead peer shows as unreachable
//! rather than stalling the page.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Empty;
use serde_json::{json, Value};

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
    let request = Request::get("/api/state?local")
        .header(header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(std::io::Error::other)?;
    let (status, body) = super::client::exchange(authority, request, MAX_STATE).await?;
    if !status.is_success() {
        return Err(std::io::Error::other(format!("answered {status}")));
    }
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}
