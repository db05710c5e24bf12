//! The trapperkeeper status endpoints an LB health check (and `puppetserver ca`) asks.

use axum::{extract::Path, response::IntoResponse, routing::get, Json, Router};
use http::{header, StatusCode};
use serde_json::json;

use super::State;

/// The puppetserver version whose CA API crossbar serves, reported as the `ca` service's
/// version: at least 8.4.0, so `puppetserver ca` 2.7+ uses the bulk-sign endpoints.
const SERVICE_VERSION: &str = "8.7.0";

pub(super) fn routes() -> axum::Router<State> {
    Router::new()
        .route("/status/v1/simple", get(simple))
        .route("/status/v1/simple/{service}", get(simple_service))
        .route("/status/v1/services", get(services))
}

async fn simple() -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "running")
}

async fn simple_service(Path(service): Path<String>) -> impl IntoResponse {
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if matches!(service.as_str(), "ca" | "status-service") {
        return (StatusCode::OK, content_type, "running".to_owned());
    }
    (StatusCode::NOT_FOUND, content_type, format!("not found: {service}"))
}

async fn services() -> impl IntoResponse {
    let service = |version: &str| {
        json!({
            "service_version": version,
            "service_status_version": 1,
            "state": "running",
            "detail_level": "info",
            "status": {},
            "active_alerts": [],
        })
    };
    Json(json!({ "ca": service(SERVICE_VERSION), "status-service": service("1.1.1") }))
}
