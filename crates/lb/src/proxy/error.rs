//! The one place where a request that got no backend answer becomes a status and a message.
//!
//! - a client's fault gets the 4xx it earned: 400 for a malformed head or body, 405 for a
//!   method this LB refuses, 408 for a body that stalled or trickled, 413 for one too large;
//! - 503 with a jittered `Retry-After` whenever no backend produced an answer and the request
//!   may well succeed later (Puppet agents sleep and retry on it, where any other 5xx fails
//!   the run): no eligible member, a full or slow queue, a member that failed before answering;
//! - 504 for a backend slower than `timeouts.response`;
//! - 502 for an unknown pool, an answer that was not HTTP, or a backend that went away while
//!   the client's body was still arriving (nobody's proven fault: the member stays in rotation).

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use super::ClientBody;
use crate::{
    blame::FailureClass,
    body::ClientFault,
    edge::Refusal,
    pool::{Pool, Shed},
    upstream::FailureKind,
};

/// Why no backend answered.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// Refused at the edge, before routing.
    Refused(Refusal),
    NoPool(String),
    /// The client failed its own request body.
    Client(ClientFault),
    /// The pool could not give the request a member (none eligible, queue full or timed out).
    Shed {
        why: Shed,
        last: Option<FailureKind>,
    },
    /// A backend took the request and failed before answering; it cannot be replayed.
    /// `proven`: the backend's own fault (else it went away while the body was arriving).
    Failed {
        member: String,
        kind: FailureKind,
        proven: bool,
    },
}

/// A response of the LB's own.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) retry_after: Option<u64>,
    /// The connection cannot be reused (the client's body was not read to its end).
    pub(crate) close: bool,
    pub(crate) message: String,
}

impl ProxyError {
    /// Counts the failure in its pool's metrics.
    pub(crate) fn count(&self, pool: &Pool) {
        use std::sync::atomic::Ordering::Relaxed;
        match self {
            Self::Shed { why, .. } => pool.stats.shed(*why),
            Self::Failed { .. } => {
                pool.stats.shed_backend_failed.fetch_add(1, Relaxed);
            }
            Self::Refused(_) | Self::NoPool(_) | Self::Client(_) => {}
        }
    }

    /// The status, `Retry-After` and message for the client; `pool` draws the `Retry-After`.
    pub(crate) fn answer(&self, pool: Option<&Pool>) -> Answer {
        let retry_after = || pool.map_or(10, Pool::retry_after);
        let plain =
            |status, message: String| Answer { status, retry_after: None, close: false, message };
        match self {
            Self::Refused(Refusal::Method) => plain(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{}; crossbar forwards GET, HEAD, POST, PUT and DELETE", Refusal::Method),
            ),
            Self::Refused(refusal) => plain(StatusCode::BAD_REQUEST, refusal.to_string()),
            Self::NoPool(pool) => plain(
                StatusCode::BAD_GATEWAY,
                format!("crossbar has no pool named '{pool}' for this request"),
            ),
            Self::Client(fault) => Answer {
                status: match fault {
                    ClientFault::Framing | ClientFault::HungUp => StatusCode::BAD_REQUEST,
                    ClientFault::Stalled | ClientFault::TooSlow => StatusCode::REQUEST_TIMEOUT,
                    ClientFault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                },
                retry_after: None,
                close: true,
                message: fault.to_string(),
            },
            Self::Shed { why, last } => {
                let pool_name = pool.map_or("?", |p| p.name.as_str());
                let reason = match (why, last) {
                    (_, Some(last)) => format!(
                        "no member of pool '{pool_name}' could take the request (last error: {last})"
                    ),
                    (Shed::NoMember, None) => format!("pool '{pool_name}' has no healthy member"),
                    (Shed::QueueFull, None) => format!(
                        "pool '{pool_name}' is overloaded: every member is busy and the queue is full"
                    ),
                    (Shed::QueueTimeout, None) => {
                        format!("pool '{pool_name}' is overloaded: no member freed up in time")
                    }
                };
                let seconds = retry_after();
                Answer {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    retry_after: Some(seconds),
                    close: false,
                    message: format!("{reason}; retry in {seconds}s"),
                }
            }
            Self::Failed { member, kind, proven: false } => Answer {
                status: StatusCode::BAD_GATEWAY,
                retry_after: None,
                close: true,
                message: format!(
                    "backend {member} closed the connection while the request body was still being sent: {kind}"
                ),
            },
            Self::Failed { member, kind, proven: true } => match kind.class() {
                FailureClass::ResponseTimeout => {
                    plain(StatusCode::GATEWAY_TIMEOUT, format!("backend {member} failed: {kind}"))
                }
                FailureClass::Malformed => plain(
                    StatusCode::BAD_GATEWAY,
                    format!("backend {member} sent an invalid answer: {kind}"),
                ),
                FailureClass::Connect | FailureClass::Closed => {
                    let seconds = retry_after();
                    Answer {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        retry_after: Some(seconds),
                        close: false,
                        message: format!(
                            "backend {member} failed before answering: {kind}; retry in {seconds}s"
                        ),
                    }
                }
            },
        }
    }
}

impl Answer {
    pub(crate) fn into_response(self) -> Response<ClientBody> {
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(self.message))));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE"));
        }
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_status() {
        let timeout =
            FailureKind::ResponseTimeout("http://m".into(), std::time::Duration::from_secs(1));
        let closed = FailureKind::Closed("http://m".into());
        let failed = |kind, proven| ProxyError::Failed { member: "http://m".into(), kind, proven };
        let cases: Vec<(ProxyError, u16, bool)> = vec![
            (ProxyError::Refused(Refusal::NoHost), 400, false),
            (ProxyError::Refused(Refusal::ForeignTarget), 400, false),
            (ProxyError::Refused(Refusal::Method), 405, false),
            (ProxyError::NoPool("x".into()), 502, false),
            (ProxyError::Client(ClientFault::Framing), 400, false),
            (ProxyError::Client(ClientFault::HungUp), 400, false),
            (ProxyError::Client(ClientFault::Stalled), 408, false),
            (ProxyError::Client(ClientFault::TooSlow), 408, false),
            (ProxyError::Client(ClientFault::TooLarge), 413, false),
            (ProxyError::Shed { why: Shed::NoMember, last: None }, 503, true),
            (ProxyError::Shed { why: Shed::QueueFull, last: None }, 503, true),
            (ProxyError::Shed { why: Shed::QueueTimeout, last: None }, 503, true),
            (failed(timeout, true), 504, false),
            (failed(closed, true), 503, true),
            (failed(FailureKind::Closed("http://m".into()), false), 502, false),
        ];
        for (error, status, retry) in cases {
            let answer = error.answer(None);
            assert_eq!(answer.status.as_u16(), status, "{error:?}");
            assert_eq!(answer.retry_after.is_some(), retry, "{error:?}: Retry-After");
            assert!(!answer.message.is_empty(), "{error:?}: a message");
        }
    }
}
