//! Health probing: one task per member asks `GET /status/v1/simple` (or the configured path)
//! and feeds the answers to the member's health state machine.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::watch};

use crate::{
    health::Transition,
    pool::{ActiveCheck, Member, Pool},
};

/// Starts the probing tasks of `pool`; they stop when `stop` turns true.
pub fn spawn_checks(pool: &Arc<Pool>, stop: &watch::Receiver<bool>) {
    for member in pool.members() {
        tokio::spawn(probe_loop(pool.clone(), member.clone(), stop.clone()));
    }
}

async fn probe_loop(pool: Arc<Pool>, member: Arc<Member>, mut stop: watch::Receiver<bool>) {
    let policy = &pool.settings.health;
    // Without active checks, probes only bring an ejected member back.
    let interval = pool.settings.check.as_ref().map_or(policy.max_backoff, |c| c.interval);
    loop {
        let wait = member.next_probe_in(interval);
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(wait) => {}
        }
        if pool.settings.check.is_none() && member.is_healthy() {
            continue;
        }
        let outcome = probe(&member, pool.settings.check.as_ref()).await;
        match (member.record_probe(outcome.is_ok(), policy), outcome) {
            (Some(Transition::Down), Err(reason)) => {
                tracing::warn!(pool = %pool.name, member = member.url(), %reason, "member is down")
            }
            (Some(Transition::Up), _) => {
                tracing::info!(pool = %pool.name, member = member.url(), "member is back in rotation")
            }
            (_, Err(reason)) => {
                tracing::debug!(pool = %pool.name, member = member.url(), %reason, "probe failed")
            }
            _ => {}
        }
    }
}

/// One probe: the HTTP check when configured, else a TCP connect.
pub async fn probe(member: &Member, check: Option<&ActiveCheck>) -> Result<(), String> {
    let timeout = check.map_or(Duration::from_secs(2), |c| c.timeout);
    let attempt = async {
        let stream = TcpStream::connect(member.upstream.authority())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let Some(check) = check else { return Ok(()) };
        http_check(stream, member, check).await
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

async fn http_check(stream: TcpStream, member: &Member, check: &ActiveCheck) -> Result<(), String> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::get(check.path.as_str())
        .header(header::HOST, member.upstream.authority())
        .header(header::USER_AGENT, "crossbar-health-check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = Limited::new(response.into_body(), 4096)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    if status == StatusCode::OK && text.trim() == check.expect {
        return Ok(());
    }
    Err(format!("{} answered {status} {:?}", check.path, text.trim()))
}
