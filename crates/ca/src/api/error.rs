//! The one place where CA failures become HTTP statuses and bodies.

use axum::response::{IntoResponse, Response};
use http::{header, Method, StatusCode};

use crate::{error::CaError, store::StoreError};
use pki::CsrError;

/// A failed API request.
#[derive(Debug)]
pub enum ApiError {
    Ca(CaError),
    Forbidden {
        path: String,
        method: Method,
    },
    /// A malformed request body or parameter; the text is puppetserver's message.
    BadInput(String),
    UnsupportedMediaType,
    NotAcceptable,
    MethodNotAllowed,
    NotFound(String),
    BadClientCert(String),
    /// A request body over the CA's limit.
    TooLarge(String),
    Internal(String),
}

impl From<CaError> for ApiError {
    fn from(e: CaError) -> Self {
        Self::Ca(e)
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Ca(e) => ca_status(e),
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::BadInput(_) | Self::BadClientCert(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn body(&self) -> String {
        match self {
            Self::Ca(e)
                if ca_status(e).is_server_error()
                    && ca_status(e) != StatusCode::SERVICE_UNAVAILABLE =>
            {
                format!("Internal Server Error: {e}")
            }
            Self::Ca(e) => e.to_string(),
            Self::Forbidden { path, method } => format!(
                "Forbidden request: {path} (method :{}). Please see the server logs for details.",
                method.as_str().to_ascii_lowercase()
            ),
            Self::BadInput(msg) | Self::NotFound(msg) | Self::TooLarge(msg) => msg.clone(),
            Self::BadClientCert(msg) => format!("Unable to parse the X-Client-Cert header: {msg}"),
            Self::UnsupportedMediaType => "Unsupported media type.".into(),
            Self::NotAcceptable => "No acceptable resource available.".into(),
            Self::MethodNotAllowed => "Method not allowed.".into(),
            Self::Internal(msg) => format!("Internal Server Error: {msg}"),
        }
    }
}

fn ca_status(e: &CaError) -> StatusCode {
    match e {
        CaError::BadRequest(CsrError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
        CaError::BadName(_)
        | CaError::BadRequest(_)
        | CaError::Duplicate { .. }
        | CaError::Rejected(_) => StatusCode::BAD_REQUEST,
        CaError::SignRefused(_) | CaError::NoRequest(_) | CaError::NoCertificate(_) => {
            StatusCode::CONFLICT
        }
        CaError::NotFound(_) | CaError::RenewalDisabled => StatusCode::NOT_FOUND,
        CaError::RenewalForeign => StatusCode::FORBIDDEN,
        CaError::RenewalInvalid => StatusCode::BAD_REQUEST,
        CaError::TooManyPending(_) | CaError::Store(StoreError::Unavailable(_)) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        CaError::Store(_) | CaError::Issue(_) | CaError::Crl(_) | CaError::Setup(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// A `Retry-After` between 5 and 15 seconds, so that agents told to wait do not all come back
/// at once (Puppet agents sleep that long and send again).
fn retry_after() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    5 + u64::from(nanos % 11)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = self.body();
        if status.is_server_error() {
            tracing::error!(%status, error = %body, "CA request failed");
        } else {
            tracing::info!(%status, reason = %body, "CA request refused");
        }
        let mut response =
            (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from(retry_after()));
        }
        response
    }
}
