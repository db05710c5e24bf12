//! The CA as the admin page sees it: requests to the pool that serves the CA API, made for an
//! authenticated operator. The LB vouches for the operator as it vouches for agents — the
//! identity headers and the pool's proxy secret — so the CA authorizes the operator's name
//! against its `admin_certnames` and records it in its audit trail.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::Full;

use crate::{headers, proxy::Proxy};

/// Longest a CA call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest CA answer read (the certificate list of a large fleet).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Why a CA call produced no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CaCallError {
    #[error("no pool serves the CA API")]
    NoPool,
    #[error("no healthy member in pool {0}")]
    NoMember(String),
    #[error("CA member {member}: {reason}")]
    Failed { member: String, reason: String },
}

/// One call to the CA API for `operator`; the CA's status and body.
pub(crate) async fn call(
    proxy: &Proxy,
    operator: &str,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> Result<(StatusCode, Bytes), CaCallError> {
    let pool_name = proxy.routes().pool_for(path, None);
    let pool = proxy.pool(pool_name).ok_or(CaCallError::NoPool)?;
    let mut members: Vec<_> =
        pool.members().iter().filter(|m| m.is_healthy() && !m.is_drained()).collect();
    members.sort_by_key(|m| m.standby);
    let member = members.first().ok_or_else(|| CaCallError::NoMember(pool.name.clone()))?;
    let failed = |reason: String| CaCallError::Failed { member: member.url().to_owned(), reason };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, member.upstream.authority())
        .header(header::ACCEPT, "application/json")
        .body(Full::new(body.clone().unwrap_or_default()))
        .map_err(|e| failed(e.to_string()))?;
    if body.is_some() {
        request
            .headers_mut()
            .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    }
    headers::apply_operator(request.headers_mut(), operator).map_err(|e| failed(e.to_string()))?;
    if let Some(secret) = &pool.settings.proxy_secret {
        headers::set_proxy_secret(request.headers_mut(), secret);
    }
    let authority = member.upstream.authority().to_owned();
    let exchange = super::client::exchange(&authority, request, MAX_ANSWER);
    match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed(format!("no answer within {CALL_TIMEOUT:?}"))),
    }
}
