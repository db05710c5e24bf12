//! One request through the LB: route, rewrite headers, try members, answer.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;

use crate::{
    headers,
    identity::ClientIdentity,
    pool::{Member, Pool, Shed},
    route::RouteTable,
    upstream::{FailureKind, PooledBody, SendFailure, UpstreamBody},
};

/// What the client receives: a streamed backend body, or a short body of our own.
pub type ClientBody = Either<PooledBody, Full<Bytes>>;

/// Facts about the client connection, fixed after the handshake.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub identity: ClientIdentity,
}

/// Routes and pools: everything a request needs.
pub struct Proxy {
    routes: RouteTable,
    pools: HashMap<String, Arc<Pool>>,
}

/// Why no backend answered, mapped to the client's status in [`ProxyError::respond`].
#[derive(Debug)]
enum ProxyError {
    NoPool(String),
    /// The pool could not give the request a member (none eligible, queue full or timed out).
    Shed {
        pool: String,
        why: Shed,
        last: Option<FailureKind>,
        retry_after: u64,
    },
    /// A backend took the request and failed before answering; it cannot be replayed.
    Failed {
        member: String,
        kind: FailureKind,
        retry_after: u64,
    },
}

impl ProxyError {
    /// Counts the failure in its pool's metrics.
    fn count(&self, pool: &Pool) {
        match self {
            Self::NoPool(_) => {}
            Self::Shed { why, .. } => pool.stats.shed(*why),
            Self::Failed { .. } => {
                pool.stats.shed_backend_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// The one place where a proxy failure becomes a status: 503 with `Retry-After` whenever no
    /// backend produced an answer (Puppet agents sleep and retry on it, where any other 5xx
    /// fails the run), 504 for a backend that took longer than `timeouts.response`, 502 for an
    /// unknown pool or an answer that was not HTTP.
    fn respond(&self) -> (StatusCode, Option<u64>, String) {
        match self {
            Self::NoPool(pool) => (
                StatusCode::BAD_GATEWAY,
                None,
                format!("crossbar has no pool named '{pool}' for this request"),
            ),
            Self::Shed { pool, why, last, retry_after } => {
                let reason = match (why, last) {
                    (_, Some(last)) => format!(
                        "no member of pool '{pool}' could take the request (last error: {last})"
                    ),
                    (Shed::NoMember, None) => format!("pool '{pool}' has no healthy member"),
                    (Shed::QueueFull, None) => format!(
                        "pool '{pool}' is overloaded: every member is busy and the queue is full"
                    ),
                    (Shed::QueueTimeout, None) => {
                        format!("pool '{pool}' is overloaded: no member freed up in time")
                    }
                };
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(*retry_after),
                    format!("{reason}; retry in {retry_after}s"),
                )
            }
            Self::Failed { member, kind: kind @ FailureKind::ResponseTimeout(..), .. } => {
                (StatusCode::GATEWAY_TIMEOUT, None, format!("backend {member} failed: {kind}"))
            }
            Self::Failed { member, kind: kind @ FailureKind::Send(_, e), .. } if e.is_parse() => (
                StatusCode::BAD_GATEWAY,
                None,
                format!("backend {member} sent an invalid answer: {kind}"),
            ),
            Self::Failed { member, kind, retry_after } => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(*retry_after),
                format!(
                    "backend {member} failed before answering: {kind}; retry in {retry_after}s"
                ),
            ),
        }
    }
}

impl Proxy {
    pub fn new(routes: RouteTable, pools: Vec<Arc<Pool>>) -> Self {
        let pools = pools.into_iter().map(|p| (p.name.clone(), p)).collect();
        Self { routes, pools }
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    /// Proxies one request; never fails (errors become 502/503/504 with a body).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        conn: &ConnInfo,
    ) -> Response<ClientBody> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let (route, pool_name) = self.routes.route_for(&path, request.uri().query());
        let (route, pool_name) = (self.routes.label(route), pool_name.to_owned());
        let upstream_request = prepare(request, conn);
        let log = AccessLog {
            conn_identity: conn.identity.clone(),
            peer: conn.peer,
            method,
            path,
            route,
            pool: pool_name.clone(),
            started,
        };
        match self.forward(&pool_name, upstream_request, conn.identity.certname()).await {
            Ok((pool, member, response)) => respond(response, pool, member, log),
            Err(error) => {
                if let Some(pool) = self.pools.get(&pool_name) {
                    error.count(pool);
                }
                let (status, retry_after, message) = error.respond();
                log.emit("-", status, message.len() as u64, Some(&message));
                error_response(status, retry_after, message)
            }
        }
    }

    async fn forward(
        &self,
        pool_name: &str,
        request: Request<UpstreamBody>,
        key: Option<&str>,
    ) -> Result<(Arc<Pool>, Arc<Member>, Response<PooledBody>), ProxyError> {
        let pool =
            self.pools.get(pool_name).ok_or_else(|| ProxyError::NoPool(pool_name.to_owned()))?;
        let replay = Replay::capture(&request);
        let mut request = Some(request);
        let mut tried = Vec::new();
        let mut last = None;
        loop {
            let (index, slot) = match pool.acquire(key, &tried).await {
                Ok(acquired) => acquired,
                Err(why) => {
                    return Err(ProxyError::Shed {
                        pool: pool_name.to_owned(),
                        why,
                        last,
                        retry_after: pool.retry_after(),
                    })
                }
            };
            let Some(attempt) = request.take().or_else(|| replay.as_ref().map(Replay::rebuild))
            else {
                // Only a request that can be replayed gets here after an attempt reached a backend.
                return Err(ProxyError::Shed {
                    pool: pool_name.to_owned(),
                    why: Shed::NoMember,
                    last,
                    retry_after: pool.retry_after(),
                });
            };
            let member = slot.member().clone();
            match member.upstream.send(attempt).await {
                Ok(mut response) => {
                    let status = response.status();
                    member.record_status(status.as_u16());
                    if status.is_server_error() && pool.settings.eject_on_5xx {
                        note_ejection(pool, &member, &format!("answered {status}"));
                    }
                    response.body_mut().on_done(Box::new(move |_, _| drop(slot)));
                    return Ok((pool.clone(), member, response));
                }
                Err(SendFailure { kind, request: unsent }) => {
                    drop(slot);
                    note_ejection(pool, &member, &kind.to_string());
                    let reached_backend = unsent.is_none();
                    if reached_backend && replay.is_none() {
                        return Err(ProxyError::Failed {
                            member: member.url().to_owned(),
                            kind,
                            retry_after: pool.retry_after(),
                        });
                    }
                    request = unsent;
                    tried.push(index);
                    last = Some(kind);
                }
            }
        }
    }
}

fn note_ejection(pool: &Pool, member: &Member, reason: &str) {
    if member.eject(&pool.settings.health).is_some() {
        tracing::warn!(pool = %pool.name, member = member.url(), reason, "member ejected: out of rotation until it passes its health checks");
    }
}

/// The head of a body-less GET or HEAD, kept so the request can be sent again after it reached
/// a backend that failed before answering.
struct Replay(http::request::Parts);

impl Replay {
    fn capture(request: &Request<UpstreamBody>) -> Option<Self> {
        let idempotent = matches!(*request.method(), Method::GET | Method::HEAD);
        if !idempotent || !request.body().is_end_stream() {
            return None;
        }
        let mut parts = Request::new(()).into_parts().0;
        parts.method = request.method().clone();
        parts.uri = request.uri().clone();
        parts.version = request.version();
        parts.headers = request.headers().clone();
        Some(Self(parts))
    }

    fn rebuild(&self) -> Request<UpstreamBody> {
        let mut request = Request::new(Either::Right(Empty::new()));
        *request.method_mut() = self.0.method.clone();
        *request.uri_mut() = self.0.uri.clone();
        *request.headers_mut() = self.0.headers.clone();
        request
    }
}

/// The backend request: hop-by-hop headers gone, identity headers from the TLS session.
fn prepare(request: Request<Incoming>, conn: &ConnInfo) -> Request<UpstreamBody> {
    let (mut parts, body) = request.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::apply_identity(&mut parts.headers, &conn.identity);
    headers::set_forwarded(&mut parts.headers, conn.peer.ip());
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, Either::Left(body))
}

fn respond(
    response: Response<PooledBody>,
    pool: Arc<Pool>,
    member: Arc<Member>,
    log: AccessLog,
) -> Response<ClientBody> {
    let (mut parts, mut body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let status = parts.status;
    body.on_done(Box::new(move |bytes, _| {
        pool.stats.duration.observe(log.started.elapsed());
        log.emit(member.url(), status, bytes, None);
    }));
    Response::from_parts(parts, Either::Left(body))
}

fn error_response(
    status: StatusCode,
    retry_after: Option<u64>,
    message: String,
) -> Response<ClientBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(message))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The fields of one access-log line.
struct AccessLog {
    conn_identity: ClientIdentity,
    peer: SocketAddr,
    method: Method,
    path: String,
    route: Arc<str>,
    pool: String,
    started: Instant,
}

impl AccessLog {
    fn emit(&self, member: &str, status: StatusCode, bytes: u64, error: Option<&str>) {
        tracing::info!(
            target: "crossbar::access",
            client = %self.peer,
            certname = self.conn_identity.certname().unwrap_or("-"),
            verify = self.conn_identity.verify_result(),
            method = %self.method,
            path = %self.path,
            route = %self.route,
            pool = %self.pool,
            member,
            status = status.as_u16(),
            bytes,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            error = error.unwrap_or(""),
        );
    }
}
