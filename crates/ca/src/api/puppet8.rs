//! What puppetserver 8 added to the CA API: certificate renewal (8.1) and bulk signing (8.4),
//! with its status codes and JSON shapes.

use axum::{
    extract::State as AxState,
    response::{IntoResponse, Response},
    Json,
};
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use super::{
    blocking,
    extract::{Admin, LimitedBody, PresentedCert},
    text, ApiError, State,
};
use crate::service::BulkOutcome;

/// `POST certificate_renewal`: a new certificate for the one the client presented; `200`
/// with its PEM (the leaf alone). 404 when renewal is off, 403 for another CA's certificate,
/// 400 for a revoked or unusable one.
pub(super) async fn renew(
    AxState(state): AxState<State>,
    PresentedCert(der): PresentedCert,
) -> Result<Response, ApiError> {
    let issued = blocking(&state, move |ca| ca.renew(&der)).await?;
    Ok(text(StatusCode::OK, issued.pem))
}

/// puppetserver's bulk-sign answer; the fields in its order.
#[derive(Serialize)]
struct Signed {
    signed: Vec<String>,
    #[serde(rename = "no-csr")]
    no_csr: Vec<String>,
    #[serde(rename = "signing-errors")]
    signing_errors: Vec<String>,
}

impl From<BulkOutcome> for Signed {
    fn from(o: BulkOutcome) -> Self {
        Self { signed: o.signed, no_csr: o.no_csr, signing_errors: o.signing_errors }
    }
}

/// `POST sign` with `{"certnames": ["a", "b"]}`. As in puppetserver, a body that is missing,
/// not JSON or without `certnames` signs nothing (200 with empty lists); `certnames` that is
/// not a list of strings is a 422 `schema-violation`.
pub(super) async fn sign(
    Admin(actor): Admin,
    AxState(state): AxState<State>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let submitted = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("certnames").cloned())
        .unwrap_or(Value::Null);
    let names = match certnames(&submitted) {
        Ok(names) => names,
        Err(error) => return Ok(schema_violation(submitted, error)),
    };
    let outcome = blocking(&state, move |ca| Ok(ca.sign_many(&names, &actor))).await?;
    Ok(json(StatusCode::OK, &Signed::from(outcome)))
}

/// `POST sign/all`: every pending request (the body is ignored).
pub(super) async fn sign_all(
    Admin(actor): Admin,
    AxState(state): AxState<State>,
) -> Result<Response, ApiError> {
    let outcome = blocking(&state, move |ca| ca.sign_all(&actor)).await?;
    Ok(json(StatusCode::OK, &Signed::from(outcome)))
}

fn certnames(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| format!("not a string: {item}"))
            })
            .collect(),
        other => Err(format!("certnames must be a list of strings, not {other}")),
    }
}

fn schema_violation(submitted: Value, error: String) -> Response {
    #[derive(Serialize)]
    struct Violation {
        kind: &'static str,
        submitted: Value,
        error: String,
    }
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &Violation { kind: "schema-violation", submitted, error },
    )
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    (status, Json(body)).into_response()
}
