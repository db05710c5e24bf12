//! The admin listener (loopback by default): `/healthz` for keepalived (this LB itself),
//! `/readyz` for monitoring (this LB and its pools), `/metrics` for Prometheus, `/pools` as
//! JSON, draining or enabling a member at run time (what Apache's balancer-manager does), and
//! at `/` the admin page: pools, TLS, revocation and the CA's queue in one view ([`page`]).
//!
//! Viewing is open; every action, and the CA's lists, need an operator's token ([`auth`]).
//! Actions are logged (target `crossbar::audit`) and kept for the page ([`ActionLog`]); CA
//! actions also land in the CA's own audit trail under the operator's name ([`ca`]).

mod auth;
mod ca;
mod client;
mod page;
mod peers;

use std::{collections::VecDeque, sync::Arc, sync::Mutex};

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::watch};

pub(crate) use self::auth::{read_tokens, AdminToken};
use crate::{pool::Pool, state::LbState};

/// What the admin routes share.
pub(crate) struct Admin {
    lb: Arc<LbState>,
    actions: ActionLog,
}

type Shared = Arc<Admin>;

/// The most recent operator actions on this LB, newest first, for the page.
#[derive(Default)]
pub(crate) struct ActionLog(Mutex<VecDeque<Value>>);

/// Actions kept for the page.
const ACTIONS_KEPT: usize = 100;

impl ActionLog {
    fn record(&self, operator: &str, action: &str, target: &str, outcome: &str) {
        tracing::info!(target: "crossbar::audit", operator, action, subject = target, outcome, "admin page action");
        let entry = json!({
            "at": time::OffsetDateTime::now_utc().unix_timestamp(),
            "operator": operator,
            "action": action,
            "target": target,
            "outcome": outcome,
        });
        if let Ok(mut log) = self.0.lock() {
            log.push_front(entry);
            log.truncate(ACTIONS_KEPT);
        }
    }

    fn recent(&self) -> Vec<Value> {
        self.0.lock().map(|log| log.iter().cloned().collect()).unwrap_or_default()
    }
}

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
    let shared = Arc::new(Admin { lb: state.clone(), actions: ActionLog::default() });
    let page_routes = Router::new()
        .route("/", get(page::index))
        .route("/page.css", get(page::style))
        .route("/page.js", get(page::script))
        .route("/api/state", get(overview))
        .route("/api/ca/{list}", get(ca_list))
        .route("/api/ca/{action}/{certname}", post(ca_action))
        .route("/pools/{pool}/members/{member}/drain", post(drain))
        .route("/pools/{pool}/members/{member}/enable", post(enable))
        .with_state(shared);
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
        .with_state(state)
        .merge(page_routes)
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
        "answers_5xx": m.stats.by_class[4].load(Relaxed),
        "last_down": m.last_down().map(|(at, why)| json!({"at": at, "why": why})),
    })
}

/// Everything the page shows of this LB (and what its peers say of their CRLs), in one answer.
async fn overview(
    State(admin): State<Shared>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let state = &admin.lb;
    let generation = state.generation();
    let metrics = &state.metrics;
    let tls = generation.tls.current();
    let crl = tls.crl.as_ref().map(|c| {
        json!({
            "number": c.number,
            "this_update": c.this_update.unix_timestamp(),
            "next_update": c.next_update.map(|t| t.unix_timestamp()),
            "revoked": c.revoked.len(),
        })
    });
    let source = match (&generation.config.crl_pull, &generation.config.tls.crl) {
        (Some(pull), _) => format!("pulled from pool {} every {:?}", pull.pool, pull.refresh),
        (None, Some(path)) => format!("file {}", path.display()),
        (None, None) => "none".to_owned(),
    };
    let last_pull = metrics.crl_last_pull.lock().ok().and_then(|last| {
        last.as_ref().map(|(at, outcome)| json!({"at": at.unix_timestamp(), "outcome": outcome}))
    });
    let pools: Vec<Value> =
        sorted_pools(&generation.proxy).into_iter().map(|p| pool_detail(p)).collect();
    // A peer asking (`?local`) gets this LB alone, so two LBs never ask each other in a loop.
    let peers = if params.contains_key("local") {
        Vec::new()
    } else {
        peers::states(&generation.config.admin_peers).await
    };
    let failures: serde_json::Map<String, Value> =
        metrics.handshake_failures().into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect();
    Json(json!({
        "now": time::OffsetDateTime::now_utc().unix_timestamp(),
        "version": env!("CARGO_PKG_VERSION"),
        "listen": generation.config.listen.to_string(),
        "problems": state.problems(),
        "can_act": !generation.config.admin_tokens.is_empty(),
        "tls": {
            "handshakes": metrics.handshakes.load(Relaxed),
            "failures": failures,
            "open": metrics.connections_open.load(Relaxed),
            "parked": metrics.connections_parked.load(Relaxed),
            "closed_revoked": metrics.connections_closed_revoked.load(Relaxed),
            "cert_not_after": tls.cert_validity.map(|(_, after)| after.unix_timestamp()),
        },
        "crl": {
            "current": crl,
            "source": source,
            "pulls": metrics.crl_pulls.load(Relaxed),
            "pull_failures": metrics.crl_pull_failures.load(Relaxed),
            "last_pull": last_pull,
        },
        "pools": pools,
        "peers": peers,
        "actions": admin.actions.recent(),
    }))
}

fn pool_detail(pool: &Pool) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let mut value = pool_json(pool);
    let stats = &pool.stats;
    if let Some(object) = value.as_object_mut() {
        object.insert("p50_s".into(), json!(stats.duration.quantile(0.5)));
        object.insert("p99_s".into(), json!(stats.duration.quantile(0.99)));
        object.insert(
            "shed".into(),
            json!({
                "no_member": stats.shed_no_member.load(Relaxed),
                "queue_full": stats.shed_queue_full.load(Relaxed),
                "queue_timeout": stats.shed_queue_timeout.load(Relaxed),
                "backend_failed": stats.shed_backend_failed.load(Relaxed),
            }),
        );
    }
    value
}

/// The operator a request acts for, or why not.
fn operator(admin: &Admin, headers: &HeaderMap) -> Result<String, auth::Refusal> {
    let generation = admin.lb.generation();
    auth::authorize(&generation.config.admin_tokens, headers).map(|t| t.name.clone()).inspect_err(
        |refusal| {
            tracing::warn!(target: "crossbar::audit", reason = refusal.message(), "admin action refused");
        },
    )
}

fn refused(refusal: auth::Refusal) -> Response {
    (refusal.status(), format!("{}\n", refusal.message())).into_response()
}

async fn drain(
    State(admin): State<Shared>,
    headers: HeaderMap,
    Path((pool, member)): Path<(String, usize)>,
) -> Response {
    set_drained(&admin, &headers, &pool, member, true)
}

async fn enable(
    State(admin): State<Shared>,
    headers: HeaderMap,
    Path((pool, member)): Path<(String, usize)>,
) -> Response {
    set_drained(&admin, &headers, &pool, member, false)
}

fn set_drained(
    admin: &Admin,
    headers: &HeaderMap,
    pool_name: &str,
    index: usize,
    drained: bool,
) -> Response {
    let operator = match operator(admin, headers) {
        Ok(name) => name,
        Err(refusal) => return refused(refusal),
    };
    let proxy = admin.lb.proxy();
    let action = if drained { "drain" } else { "enable" };
    let Some(member) = proxy.pool(pool_name).and_then(|p| p.members().get(index)) else {
        let target = format!("{pool_name}/{index}");
        admin.actions.record(&operator, action, &target, "no such member");
        return (StatusCode::NOT_FOUND, format!("no member {index} in pool {pool_name}\n"))
            .into_response();
    };
    member.set_drained(drained);
    tracing::info!(pool = pool_name, member = member.url(), drained, "operator changed a member");
    admin.actions.record(&operator, action, &format!("{pool_name} {}", member.url()), "done");
    Json(member_json(index, member)).into_response()
}

/// The CA's lists, for an operator: `requests` (pending CSRs), `signed`, `revoked`, and
/// `audit` (the CA's stored audit trail, where it keeps one).
async fn ca_list(
    State(admin): State<Shared>,
    headers: HeaderMap,
    Path(list): Path<String>,
    Query(_): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let operator = match operator(&admin, &headers) {
        Ok(name) => name,
        Err(refusal) => return refused(refusal),
    };
    let path = match list.as_str() {
        "requests" => "/puppet-ca/v1/certificate_statuses/any?state=requested",
        "signed" => "/puppet-ca/v1/certificate_statuses/any?state=signed",
        "revoked" => "/puppet-ca/v1/certificate_statuses/any?state=revoked",
        "audit" => "/puppet-ca/v1/crossbar/audit?limit=50",
        _ => {
            return (StatusCode::NOT_FOUND, "lists: requests, signed, revoked, audit\n")
                .into_response()
        }
    };
    forward(&admin, &operator, Method::GET, path, None).await
}

/// An operator's CA action: `sign` or `reject` a pending request, `revoke` a certificate.
async fn ca_action(
    State(admin): State<Shared>,
    headers: HeaderMap,
    Path((action, certname)): Path<(String, String)>,
) -> Response {
    let operator = match operator(&admin, &headers) {
        Ok(name) => name,
        Err(refusal) => return refused(refusal),
    };
    if pki::Certname::parse(&certname).is_err() {
        admin.actions.record(&operator, &action, &certname, "refused: not a certname");
        return (StatusCode::BAD_REQUEST, "not a certname\n").into_response();
    }
    let path = format!("/puppet-ca/v1/certificate_status/{certname}");
    let (method, body) = match action.as_str() {
        "sign" => (Method::PUT, Some(r#"{"desired_state":"signed"}"#)),
        "revoke" => (Method::PUT, Some(r#"{"desired_state":"revoked"}"#)),
        "reject" => (Method::DELETE, None),
        _ => return (StatusCode::NOT_FOUND, "actions: sign, reject, revoke\n").into_response(),
    };
    let body = body.map(|text: &'static str| bytes::Bytes::from_static(text.as_bytes()));
    let response = forward(&admin, &operator, method, &path, body).await;
    let outcome = if response.status().is_success() {
        "done".to_owned()
    } else {
        format!("CA answered {}", response.status())
    };
    admin.actions.record(&operator, &action, &certname, &outcome);
    response
}

/// One CA call, its answer passed on (a CA that cannot be reached is a 502).
async fn forward(
    admin: &Admin,
    operator: &str,
    method: Method,
    path: &str,
    body: Option<bytes::Bytes>,
) -> Response {
    let proxy = admin.lb.proxy();
    match ca::call(&proxy, operator, method, path, body).await {
        Ok((status, body)) => {
            let kind = if body.first() == Some(&b'[') || body.first() == Some(&b'{') {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            (status, [(header::CONTENT_TYPE, kind)], body).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "admin page: CA call failed");
            (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response()
        }
    }
}
