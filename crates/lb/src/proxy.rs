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
    pool::Pool,
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

/// Why no backend answered, mapped to the client's status in [`ProxyError::status`].
#[derive(Debug)]
enum ProxyError {
    NoPool(String),
    NoMembers(String),
    Unreachable { pool: String, last: FailureKind },
    Failed { member: String, kind: FailureKind },
}

impl ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NoPool(_) | Self::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            Self::NoMembers(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Failed { kind: FailureKind::ResponseTimeout(..), .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::Failed { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::NoPool(pool) => format!("crossbar has no pool named '{pool}' for this request"),
            Self::NoMembers(pool) => {
                format!("pool '{pool}' has no member that can take the request")
            }
            Self::Unreachable { pool, last } => {
                format!("no member of pool '{pool}' could be reached (last error: {last})")
            }
            Self::Failed { member, kind } => format!("backend {member} failed: {kind}"),
        }
    }
}

impl Proxy {
    pub fn new(routes: RouteTable, pools: Vec<Pool>) -> Self {
        let pools = pools.into_iter().map(|p| (p.name.clone(), Arc::new(p))).collect();
        Self { routes, pools }
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
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
        let pool_name = self.routes.pool_for(&path, request.uri().query()).to_owned();
        let upstream_request = prepare(request, conn);
        let log = AccessLog {
            conn_identity: conn.identity.clone(),
            peer: conn.peer,
            method,
            path,
            pool: pool_name.clone(),
            started,
        };
        match self.forward(&pool_name, upstream_request).await {
            Ok((member, response)) => respond(response, member, log),
            Err(error) => {
                let status = error.status();
                let message = error.message();
                log.emit("-", status, message.len() as u64, Some(&message));
                error_response(status, message)
            }
        }
    }

    async fn forward(
        &self,
        pool_name: &str,
        request: Request<UpstreamBody>,
    ) -> Result<(String, Response<PooledBody>), ProxyError> {
        let pool =
            self.pools.get(pool_name).ok_or_else(|| ProxyError::NoPool(pool_name.to_owned()))?;
        let replay = Replay::capture(&request);
        let mut request = Some(request);
        let mut last = None;
        for member in pool.candidates() {
            let Some(attempt) = request.take().or_else(|| replay.as_ref().map(Replay::rebuild))
            else {
                break;
            };
            let in_flight = member.start();
            match member.upstream.send(attempt).await {
                Ok(mut response) => {
                    response.body_mut().on_done(Box::new(move |_, _| drop(in_flight)));
                    return Ok((member.upstream.url().to_owned(), response));
                }
                Err(SendFailure { kind, request: unsent }) => {
                    tracing::warn!(pool = pool_name, member = member.upstream.url(), error = %kind, retry = unsent.is_some() || replay.is_some(), "backend attempt failed");
                    let reached_backend = unsent.is_none();
                    request = unsent;
                    if reached_backend && replay.is_none() {
                        return Err(ProxyError::Failed {
                            member: member.upstream.url().to_owned(),
                            kind,
                        });
                    }
                    last = Some(kind);
                }
            }
        }
        match last {
            Some(last) => Err(ProxyError::Unreachable { pool: pool_name.to_owned(), last }),
            None => Err(ProxyError::NoMembers(pool_name.to_owned())),
        }
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

fn respond(response: Response<PooledBody>, member: String, log: AccessLog) -> Response<ClientBody> {
    let (mut parts, mut body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let status = parts.status;
    body.on_done(Box::new(move |bytes, _| log.emit(&member, status, bytes, None)));
    Response::from_parts(parts, Either::Left(body))
}

fn error_response(status: StatusCode, message: String) -> Response<ClientBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(message))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The fields of one access-log line.
struct AccessLog {
    conn_identity: ClientIdentity,
    peer: SocketAddr,
    method: Method,
    path: String,
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
            pool = %self.pool,
            member,
            status = status.as_u16(),
            bytes,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            error = error.unwrap_or(""),
        );
    }
}
