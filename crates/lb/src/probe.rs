//! Health probing: one task per member asks `GET /status/v1/simple` (or the configured path)
//! and feeds the answers to the member's health state machine.

use std::{sync::Arc, time::Duration};

use http::StatusCode;
use tokio::sync::watch;

use crate::{
    config::ActiveCheck,
    fetch::{self, Get},
    health::Transition,
    pool::{Member, Pool},
};

/// Starts the probing tasks of `pool`; they stop when `stop` turns true.
pub(crate) fn spawn_checks(pool: &Arc<Pool>, stop: &watch::Receiver<bool>) {
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
async fn probe(member: &Member, check: Option<&ActiveCheck>) -> Result<(), String> {
    let Some(check) = check else {
        let connect = tokio::net::TcpStream::connect(member.upstream.authority());
        return match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("connect: {e}")),
            Err(_) => Err("connect: no answer within 2s".into()),
        };
    };
    let fetched = fetch::get(Get {
        authority: member.upstream.authority(),
        path: &check.path,
        user_agent: "crossbar-health-check",
        if_modified_since: None,
        if_none_match: None,
        max_body: 4096,
        timeout: check.timeout,
    })
    .await?;
    let text = String::from_utf8_lossy(&fetched.body);
    if fetched.status == StatusCode::OK && text.trim() == check.expect {
        return Ok(());
    }
    Err(format!("{} answered {} {:?}", check.path, fetched.status, text.trim()))
}
