//! One request through the LB: check the head at the edge, route, rewrite headers, try
//! members, answer. Failures are judged by [`crate::blame`] and answered in one place
//! ([`error`]).

mod access;
mod error;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Instant};

use bytes::Bytes;
use http::{header, request::Parts, Method, Request, Response, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;

use self::{access::AccessLog, error::ProxyError};
use crate::{
    blame::{self, Blame, Next},
    body::{ClientFault, GuardedBody},
    config::RequestLimits,
    edge::{self, LbNames},
    headers,
    identity::ClientIdentity,
    metrics::Metrics,
    pool::{Member, Pool, Shed, Work},
    route::{RouteTable, Target},
    upstream::{PooledBody, SendFailure, UpstreamBody},
};

/// What the client receives: a streamed backend body, or a short body of our own.
pub(crate) type ClientBody = Either<PooledBody, Full<Bytes>>;

/// Facts about the client connection, fixed after the handshake.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) identity: ClientIdentity,
    /// The names of the certificate this connection was served with.
    pub(crate) names: Arc<LbNames>,
}

/// Routes, pools and limits: everything a request needs.
pub(crate) struct Proxy {
    routes: RouteTable,
    pools: HashMap<String, Arc<Pool>>,
    limits: RequestLimits,
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub(crate) fn new(
        routes: RouteTable,
        pools: Vec<Arc<Pool>>,
        limits: RequestLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let pools = pools.into_iter().map(|p| (p.name.clone(), p)).collect();
        Self { routes, pools, limits, metrics }
    }

    pub(crate) fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub(crate) fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    pub(crate) fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    /// Proxies one request; never fails (errors become a status with a body).
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        conn: &ConnInfo,
    ) -> Response<ClientBody> {
        let (mut parts, body) = request.into_parts();
        let mut log = AccessLog::new(conn, &parts, Instant::now());
        if let Err(refusal) = edge::check(&mut parts, &conn.names) {
            self.metrics.refused(refusal);
            return self.fail(&log, None, ProxyError::Refused(refusal));
        }
        let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
        let target = Target { path: parts.uri.path(), query: parts.uri.query(), user_agent };
        let (route, pool_name) = self.routes.route_for(target);
        log.routed(self.routes.label(route), pool_name);
        let Some(pool) = self.pools.get(pool_name) else {
            return self.fail(&log, None, ProxyError::NoPool(pool_name.to_owned()));
        };
        if declared_length(&parts, &body)
            .is_some_and(|n| pool.settings.max_body.is_some_and(|max| n > max))
        {
            return self.fail(&log, Some(pool), ProxyError::Client(ClientFault::TooLarge));
        }
        let request = self.prepare(parts, body, conn, pool);
        match self.forward(pool, request, conn.identity.certname()).await {
            Ok((member, response)) => respond(response, pool.clone(), member, log),
            Err(error) => self.fail(&log, Some(pool), error),
        }
    }

    fn fail(
        &self,
        log: &AccessLog,
        pool: Option<&Arc<Pool>>,
        error: ProxyError,
    ) -> Response<ClientBody> {
        if let Some(pool) = pool {
            error.count(pool);
        }
        if let ProxyError::Client(fault) = &error {
            self.metrics.client_fault(*fault);
        }
        let answer = error.answer(pool.map(|p| p.as_ref()));
        log.emit("-", answer.status, answer.message.len() as u64, Some(&answer.message));
        answer.into_response()
    }

    /// Sends the request to a member, trying others when the verdict allows.
    async fn forward(
        &self,
        pool: &Arc<Pool>,
        request: Request<UpstreamBody>,
        key: Option<&str>,
    ) -> Result<(Arc<Member>, Response<PooledBody>), ProxyError> {
        let replay = Replay::capture(&request);
        let upload = match request.body() {
            Either::Left(body) => Some(body.upload().clone()),
            Either::Right(_) => None,
        };
        let work = Work::of(request.uri().path());
        let mut request = Some(request);
        let mut tried = Vec::new();
        let mut last = None;
        loop {
            let (index, slot) = pool
                .acquire(key, work, &tried)
                .await
                .map_err(|why| ProxyError::Shed { why, last: last.take() })?;
            let Some(attempt) = request.take().or_else(|| replay.as_ref().map(Replay::rebuild))
            else {
                // Only a request that can be replayed gets here after an attempt reached a backend.
                return Err(ProxyError::Shed { why: Shed::NoMember, last });
            };
            let member = slot.member().clone();
            let sent = std::time::Instant::now();
            match member.upstream.send(attempt).await {
                Ok(mut response) => {
                    let status = response.status();
                    pool.learn(&member, work, key, sent.elapsed());
                    member.record_status(status.as_u16());
                    if status.is_server_error() && pool.settings.eject_on_5xx {
                        note_ejection(pool, &member, &format!("answered {status}"));
                    }
                    response.body_mut().on_done(Box::new(move |_, _| drop(slot)));
                    return Ok((member, response));
                }
                Err(SendFailure { kind, request: unsent }) => {
                    drop(slot);
                    let uploaded = upload.as_ref().map_or(blame::Upload::Complete, |u| u.outcome());
                    let verdict =
                        blame::judge(kind.class(), uploaded, unsent.is_some(), replay.is_some());
                    if verdict.eject {
                        note_ejection(pool, &member, &kind.to_string());
                    }
                    match (verdict.next, verdict.blame) {
                        (Next::TryAnother, _) => {
                            request = unsent;
                            tried.push(index);
                            last = Some(kind);
                        }
                        (Next::Answer, Blame::Client(fault)) => {
                            tracing::info!(pool = %pool.name, member = member.url(), %fault, "client failed its request body; member not blamed");
                            return Err(ProxyError::Client(fault));
                        }
                        (Next::Answer, blame) => {
                            return Err(ProxyError::Failed {
                                member: member.url().to_owned(),
                                kind,
                                proven: blame == Blame::Backend,
                            })
                        }
                    }
                }
            }
        }
    }

    /// The backend request: hop-by-hop headers gone, identity headers from the TLS session,
    /// the pool's proxy secret, the body guarded.
    fn prepare(
        &self,
        mut parts: Parts,
        body: Incoming,
        conn: &ConnInfo,
        pool: &Pool,
    ) -> Request<UpstreamBody> {
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::apply_identity(&mut parts.headers, &conn.identity);
        if let Some(secret) = &pool.settings.proxy_secret {
            headers::set_proxy_secret(&mut parts.headers, secret);
        }
        headers::set_forwarded(&mut parts.headers, conn.peer.ip());
        parts.version = Version::HTTP_11;
        let body = if body.is_end_stream() {
            Either::Right(Empty::new())
        } else {
            Either::Left(GuardedBody::new(body, self.limits, pool.settings.max_body))
        };
        Request::from_parts(parts, body)
    }
}

/// The body length a request declares (`Content-Length`), if any.
fn declared_length(parts: &Parts, body: &Incoming) -> Option<u64> {
    body.size_hint()
        .exact()
        .or_else(|| parts.headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok())
}

fn note_ejection(pool: &Pool, member: &Member, reason: &str) {
    if member.eject(&pool.settings.health, reason).is_some() {
        tracing::warn!(pool = %pool.name, member = member.url(), reason, "member ejected: out of rotation until it passes its health checks");
    }
}

/// The head of a body-less GET or HEAD, kept so the request can be sent again after it reached
/// a backend that failed before answering.
struct Replay(Parts);

impl Replay {
    fn capture(request: &Request<UpstreamBody>) -> Option<Self> {
        let idempotent = matches!(*request.method(), Method::GET | Method::HEAD);
        if !idempotent || !matches!(request.body(), Either::Right(_)) {
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
        pool.stats.duration.observe(log.elapsed());
        log.emit(member.url(), status, bytes, None);
    }));
    Response::from_parts(parts, Either::Left(body))
}

#[cfg(test)]
mod tests;

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("pools", &self.pools.keys()).finish_non_exhaustive()
    }
}
