//! The access log: one line per request, whoever answered it.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use http::{request::Parts, Method, StatusCode};

use super::ConnInfo;

/// The fields of one access-log line.
pub(super) struct AccessLog {
    certname: Option<String>,
    verify: &'static str,
    peer: SocketAddr,
    method: Method,
    path: String,
    route: Arc<str>,
    pool: String,
    started: Instant,
}

impl AccessLog {
    pub(super) fn new(conn: &ConnInfo, parts: &Parts, started: Instant) -> Self {
        Self {
            certname: conn.identity.certname().map(str::to_owned),
            verify: conn.identity.verify_result(),
            peer: conn.peer,
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            route: Arc::from("-"),
            pool: "-".to_owned(),
            started,
        }
    }

    /// Records where the request was routed.
    pub(super) fn routed(&mut self, route: Arc<str>, pool: &str) {
        self.route = route;
        pool.clone_into(&mut self.pool);
    }

    pub(super) fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub(super) fn emit(&self, member: &str, status: StatusCode, bytes: u64, error: Option<&str>) {
        tracing::info!(
            target: "crossbar::access",
            client = %self.peer,
            certname = self.certname.as_deref().unwrap_or("-"),
            verify = self.verify,
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
