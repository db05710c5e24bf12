//! The admin listener (loopback by default): `/healthz` for keepalived (this LB itself),
//! `/readyz` for monitoring (this LB and its pools), `/metrics` for Prometheus, `/pools` as
//! JSON, and draining or enabling a member at run time (what Apache's balancer-manager does).

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::watch};

use crate::{pool::Pool, state::LbState};

/// Serves the admin routes until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<LbState>,
    mut stop: watch::Receiver<bool>,
) {
    let router = router(state);
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "admin listener failed");
    }
}

pub(crate) fn router(state: Arc<LbState>) -> Router {
    let router = Router::new();
    let router = if crate::liveness::debug_wedge_enabled() {
        router.route("/debug/wedge-worker", post(wedge_worker))
    } else {
        router
    };
    router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/pools", get(pools))
        .route("/pools/{pool}/members/{member}/drain", post(drain))
        .route("/pools/{pool}/members/{member}/enable", post(enable))
        .with_state(state)
}

/// 200 when this LB itself can serve (what keepalived tracks): its listener accepts, its
/// workers turn, its certificate is valid and its CRL loaded and current. Backends are not
/// asked (see [`crate::liveness`]). 503 otherwise, saying what is wrong.
async fn healthz(State(state): State<Arc<LbState>>) -> Response {
    plain(own_problems(&state))
}

/// 200 when this LB can serve every route now: `/healthz`'s checks, and at least one eligible
/// member in every pool the routes use. For monitoring and people, not for moving the VIP.
async fn readyz(State(state): State<Arc<LbState>>) -> Response {
    let mut problems = own_problems(&state);
    let generation = state.generation();
    let mut needed: Vec<&str> = generation.proxy.routes().pools().collect();
    needed.sort_unstable();
    needed.dedup();
    for name in needed {
        match generation.proxy.pool(name) {
            None => problems.push(format!("pool {name}: not configured")),
            Some(pool) if !pool.has_eligible() => {
                problems.push(format!("pool {name}: no healthy member"))
            }
            Some(_) => {}
        }
    }
    plain(problems)
}

fn own_problems(state: &LbState) -> Vec<String> {
    state.problems()
}

fn plain(problems: Vec<String>) -> Response {
    let (status, body) = if problems.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", problems.join("\n")))
    };
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Hidden (`CROSSBAR_DEBUG_WEDGE=1`): wedges one worker, for the liveness tests.
async fn wedge_worker() -> &'static str {
    crate::liveness::WEDGE_NEXT_WORKER.store(true, std::sync::atomic::Ordering::SeqCst);
    "the next worker to beat will block for good\n"
}

async fn metrics(State(state): State<Arc<LbState>>) -> Response {
    let generation = state.generation();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let pools = sorted_pools(&generation.proxy);
    let text = state.metrics.encode(&pools, &generation.tls.current(), now);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn pools(State(state): State<Arc<LbState>>) -> Json<Value> {
    let proxy = state.proxy();
    Json(Value::Array(sorted_pools(&proxy).into_iter().map(|p| pool_json(p)).collect()))
}

fn sorted_pools(proxy: &crate::proxy::Proxy) -> Vec<&Arc<Pool>> {
    let mut pools: Vec<&Arc<Pool>> = proxy.pools().collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    pools
}

fn pool_json(pool: &Pool) -> Value {
    let members: Vec<Value> =
        pool.members().iter().enumerate().map(|(index, m)| member_json(index, m)).collect();
    json!({
        "name": pool.name,
        "balance": pool.settings.strategy.to_string(),
        "queued": pool.queued(),
        "queue_max": pool.settings.queue_max,
        "members": members,
    })
}

fn member_json(index: usize, m: &crate::pool::Member) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    json!({
        "index": index,
        "url": m.url(),
        "standby": m.standby,
        "healthy": m.is_healthy(),
        "drained": m.is_drained(),
        "in_flight": m.in_flight(),
        "max_in_flight": m.max_in_flight,
        "latency_ms": m.latency().map(|s| (s * 1000.0 * 10.0).round() / 10.0),
        "requests": m.stats.requests.load(Relaxed),
        "failures": m.stats.failures.load(Relaxed),
        "ejections": m.stats.ejections.load(Relaxed),
    })
}

async fn drain(
    State(state): State<Arc<LbState>>,
    Path((pool, member)): Path<(String, usize)>,
) -> Response {
    set_drained(&state, &pool, member, true)
}

async fn enable(
    State(state): State<Arc<LbState>>,
    Path((pool, member)): Path<(String, usize)>,
) -> Response {
    set_drained(&state, &pool, member, false)
}

fn set_drained(state: &LbState, pool_name: &str, index: usize, drained: bool) -> Response {
    let proxy = state.proxy();
    let Some(member) = proxy.pool(pool_name).and_then(|p| p.members().get(index)) else {
        return (StatusCode::NOT_FOUND, format!("no member {index} in pool {pool_name}\n"))
            .into_response();
    };
    member.set_drained(drained);
    tracing::info!(pool = pool_name, member = member.url(), drained, "operator changed a member");
    Json(member_json(index, member)).into_response()
}
