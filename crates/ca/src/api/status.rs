//! `certificate_status(es)` and `clean`: the operator's API, for admins only.

use std::time::Duration;

use axum::{
    extract::{Query, State as AxState},
    response::{IntoResponse, Response},
    Json,
};
use http::{header, HeaderMap, StatusCode};
use pki::Certname;
use serde::Deserialize;
use serde_json::Value;

use super::{
    blocking,
    extract::{Admin, LimitedBody, Subject},
    ApiError, State,
};
use crate::{
    error::CaError,
    service::{CertStatus, State as CertState},
};

const MEDIA_TYPES: &[&str] = &["application/json", "text/pson", "pson"];

/// `GET certificate_status/{subject}`.
pub(super) async fn get_status(
    _: Admin,
    AxState(state): AxState<State>,
    Subject(name): Subject,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let content_type = negotiate(&headers)?;
    match blocking(&state, move |ca| ca.status(&name)).await? {
        Some(status) => Ok(json_response(content_type, status.to_json())),
        None => Err(ApiError::NotFound("Resource not found.".into())),
    }
}

/// `PUT certificate_status/{subject}` with `{"desired_state": "signed"|"revoked", "cert_ttl": N}`.
pub(super) async fn put_status(
    Admin(actor): Admin,
    AxState(state): AxState<State>,
    Subject(name): Subject,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    check_content_type(&headers)?;
    let desired = parse_desired_state(name.as_str(), &body)?;
    blocking(&state, move |ca| {
        if ca.store().existing(&name)?.is_none() {
            return Err(CaError::NotFound("Invalid certificate subject.".into()));
        }
        match desired {
            Desired::Signed(ttl) => ca.sign(&name, ttl, &actor).map(drop),
            Desired::Revoked => ca.revoke(std::slice::from_ref(&name), &actor),
        }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE certificate_status/{subject}`: removes cert and request, without revoking.
pub(super) async fn delete_status(
    Admin(actor): Admin,
    AxState(state): AxState<State>,
    Subject(name): Subject,
) -> Result<Response, ApiError> {
    blocking(&state, move |ca| ca.delete(&name, &actor)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub(super) struct StatusesQuery {
    state: Option<String>,
}

/// `GET certificate_statuses/{any}?state=requested|signed|revoked`.
pub(super) async fn get_statuses(
    _: Admin,
    AxState(state): AxState<State>,
    Query(query): Query<StatusesQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let content_type = negotiate(&headers)?;
    let only = match query.state.as_deref() {
        Some("requested") => Some(CertState::Requested),
        Some("signed") => Some(CertState::Signed),
        Some("revoked") => Some(CertState::Revoked),
        _ => None,
    };
    let statuses = blocking(&state, move |ca| ca.statuses(only)).await?;
    Ok(json_response(
        content_type,
        Value::Array(statuses.iter().map(CertStatus::to_json).collect()),
    ))
}

/// `GET certificate_statuses/` with no key.
pub(super) async fn missing_segment() -> ApiError {
    ApiError::BadInput("Missing URL Segment".into())
}

#[derive(Deserialize)]
struct CleanBody {
    certnames: Option<Value>,
    #[serde(rename = "async")]
    is_async: Option<bool>,
}

/// `PUT clean` with `{"certnames": [...]}`: revoke, then delete the certificates.
pub(super) async fn clean(
    Admin(actor): Admin,
    AxState(state): AxState<State>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let parsed: CleanBody = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadInput("Request body is not JSON.".into()))?;
    if parsed.is_async == Some(true) {
        return Err(ApiError::BadInput("Async mode is not currently supported.".into()));
    }
    let names = clean_names(parsed.certnames)?;
    let outcome = blocking(&state, move |ca| ca.clean(&names, &actor)).await?;
    let message = if outcome.missing.is_empty() {
        "Successfully cleaned all certs.".to_owned()
    } else {
        let missing: Vec<&str> = outcome.missing.iter().map(Certname::as_str).collect();
        format!("The following certs do not exist and cannot be revoked: [{}]", missing.join(" "))
    };
    Ok(super::text(StatusCode::OK, message))
}

fn clean_names(value: Option<Value>) -> Result<Vec<Certname>, ApiError> {
    let missing = || {
        ApiError::BadInput("Missing required key: 'certnames'. Body must be a JSON map with the required key 'certnames' and optional key 'async'.".into())
    };
    let Some(Value::Array(items)) = value else {
        return Err(missing());
    };
    let mut names: Vec<Certname> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(text) = item else {
            return Err(missing());
        };
        let name = Certname::parse(&text).map_err(CaError::from)?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

enum Desired {
    Signed(Option<Duration>),
    Revoked,
}

/// puppetserver's `:malformed?` checks, in its order and with its messages.
fn parse_desired_state(subject: &str, body: &[u8]) -> Result<Desired, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadInput("Empty request body.".into()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::BadInput("Request body is not JSON.".into()))?;
    let Some(desired) = value.get("desired_state") else {
        return Err(ApiError::BadInput("Missing required parameter \"desired_state\"".into()));
    };
    let ttl = match value.get("cert_ttl") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().map(Duration::from_secs),
        Some(other) => {
            let shown = other.as_str().map_or_else(|| other.to_string(), str::to_owned);
            return Err(ApiError::BadInput(format!(
                "cert_ttl specified for host {subject} must be an integer, not \"{shown}\""
            )));
        }
    };
    match desired.as_str() {
        Some("signed") => Ok(Desired::Signed(ttl)),
        Some("revoked") => Ok(Desired::Revoked),
        _ => {
            let shown = desired.as_str().map_or_else(|| desired.to_string(), str::to_owned);
            Err(ApiError::BadInput(format!("State {shown} invalid; Must specify desired state of 'signed' or 'revoked' for host {subject}.")))
        }
    }
}

/// A PUT whose Content-Type is present must be one of the JSON media types.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if MEDIA_TYPES.contains(&essence.as_str()) {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType)
}

/// The response type for `Accept`: JSON unless the client asked only for a pson type; 406 when
/// it accepts none of ours.
fn negotiate(headers: &HeaderMap) -> Result<&'static str, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok("application/json");
    };
    let ranges: Vec<String> = accept
        .split(',')
        .map(|r| r.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .collect();
    if ranges.iter().any(|r| r == "application/json" || r == "*/*" || r == "application/*")
        || accept.trim().is_empty()
    {
        return Ok("application/json");
    }
    if let Some(found) = MEDIA_TYPES.iter().find(|m| ranges.iter().any(|r| r == *m)) {
        return Ok(found);
    }
    Err(ApiError::NotAcceptable)
}

fn json_response(content_type: &'static str, value: Value) -> Response {
    let mut response = Json(value).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

/// `?limit=` of the audit trail.
#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    limit: Option<usize>,
}

/// Most audit events one request returns.
const AUDIT_MAX: usize = 1000;

/// `GET /puppet-ca/v1/crossbar/audit?limit=N` (crossbar's, admin-only): the newest events of
/// the audit trail, newest first, where the store keeps one (the database); 404 for a
/// directory, whose trail is the log.
pub(super) async fn audit(
    _: Admin,
    AxState(state): AxState<State>,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, AUDIT_MAX);
    match blocking(&state, move |ca| Ok(ca.store().recent_audit(limit)?)).await? {
        Some(events) => Ok(Json(events).into_response()),
        None => Err(ApiError::NotFound(
            "this CA keeps its audit trail in its log (directory store), not in a table".into(),
        )),
    }
}
