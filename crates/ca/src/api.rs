//! The Puppet CA HTTP API v1 (`/puppet-ca/v1/...`, and the Puppet 3 legacy forms) over a
//! [`CaService`], with puppetserver's status codes and bodies.

mod auth;
mod certs;
mod error;
mod extract;
mod health;
mod puppet8;
mod status;

use std::{sync::Arc, time::SystemTime};

use arc_swap::ArcSwap;

use axum::{
    extract::{DefaultBodyLimit, Request},
    middleware::{self, Next},
    response::Response,
    routing::{get, post, put},
    Router,
};
use http::{header, HeaderMap, HeaderValue, StatusCode};

pub use self::auth::{common_name, AccessPolicy, Caller};
pub use self::error::ApiError;
use crate::{autosign::Autosign, error::CaError, service::CaService, store::Stamped};

/// The Puppet version the CA reports in `X-Puppet-Version`; agents compare it with
/// `Gem::Version`, so it must look like one (Gotcha 10).
pub const PUPPET_VERSION: &str = "7.23.0";

/// Largest request body the API reads (CSRs are further limited to 64 KiB).
const MAX_BODY: usize = 256 * 1024;

/// Everything a handler needs; each part can be replaced at run time (config reload) while
/// requests in flight keep the one they started with.
pub struct ApiState {
    service: ArcSwap<CaService>,
    autosign: ArcSwap<Autosign>,
    access: ArcSwap<AccessPolicy>,
}

impl ApiState {
    pub fn new(service: Arc<CaService>, autosign: Autosign, access: AccessPolicy) -> Self {
        Self {
            service: ArcSwap::new(service),
            autosign: ArcSwap::from_pointee(autosign),
            access: ArcSwap::from_pointee(access),
        }
    }

    pub fn service(&self) -> Arc<CaService> {
        self.service.load_full()
    }

    pub fn autosign(&self) -> Arc<Autosign> {
        self.autosign.load_full()
    }

    pub fn access(&self) -> Arc<AccessPolicy> {
        self.access.load_full()
    }

    /// Installs reloaded settings.
    pub fn replace(&self, service: Arc<CaService>, autosign: Autosign, access: AccessPolicy) {
        self.service.store(service);
        self.autosign.store(Arc::new(autosign));
        self.access.store(Arc::new(access));
    }
}

type State = Arc<ApiState>;

/// The CA's routes. Serve with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(state: State) -> Router {
    Router::new()
        .merge(v1_routes("/puppet-ca/v1"))
        .merge(v1_routes("/{environment}"))
        .route("/puppet-ca/v1/certificate_statuses/", get(status::missing_segment))
        .route("/puppet-ca/v1/expirations", get(certs::expirations))
        .route("/puppet-ca/v1/crossbar/audit", get(status::audit))
        .route("/puppet-ca/v1/clean", put(status::clean))
        .route("/puppet-ca/v1/certificate_renewal", post(puppet8::renew))
        .route("/puppet-ca/v1/sign", post(puppet8::sign))
        .route("/puppet-ca/v1/sign/all", post(puppet8::sign_all))
        .merge(health::routes())
        .fallback(|| async { ApiError::NotFound("Not Found".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Bodies are bounded by `extract::LimitedBody`, which drains what it refuses.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(puppet_version_header))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

/// The CA's admin routes (`[ca] admin_listen`): `/metrics`, Prometheus text.
pub fn admin_router(state: State) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

async fn metrics(axum::extract::State(state): axum::extract::State<State>) -> Response {
    let service = state.service();
    let gauges = tokio::task::spawn_blocking(move || {
        let crl = service.crl().ok();
        crate::metrics::Gauges {
            pending: service.store().pending_count().ok(),
            crl_number: crl.as_ref().map(|c| c.number),
            crl_next_update: crl.and_then(|c| c.next_update).map(|t| t.unix_timestamp()),
        }
    })
    .await
    .unwrap_or(crate::metrics::Gauges {
        pending: None,
        crl_number: None,
        crl_next_update: None,
    });
    let text = state.service().metrics().encode(&gauges);
    let mut response = Response::new(text.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Counts every answered request by endpoint (the route's name after its prefix, with the
/// method) and status.
async fn count_requests(
    axum::extract::State(state): axum::extract::State<State>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = endpoint_name(
        request.method(),
        request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(axum::extract::MatchedPath::as_str),
    );
    let response = next.run(request).await;
    state.service().metrics().request(&endpoint, response.status().as_u16());
    response
}

/// `PUT certificate_request` for `/puppet-ca/v1/certificate_request/{subject}` (and the
/// legacy `/{environment}/…` form); `status` for the status routes; `other` for the rest.
fn endpoint_name(method: &http::Method, matched: Option<&str>) -> String {
    let name = match matched {
        Some(path) if path.starts_with("/status/") => "status",
        Some(path) => {
            let rest = path
                .strip_prefix("/puppet-ca/v1/")
                .or_else(|| path.strip_prefix("/{environment}/"))
                .unwrap_or("other");
            rest.split("/{").next().unwrap_or(rest)
        }
        None => "other",
    };
    format!("{method} {name}")
}

fn v1_routes(prefix: &str) -> Router<State> {
    Router::new()
        .route(&format!("{prefix}/certificate/{{subject}}"), get(certs::get_certificate))
        .route(
            &format!("{prefix}/certificate_request/{{subject}}"),
            get(certs::get_request).put(certs::put_request).delete(certs::delete_request),
        )
        .route(
            &format!("{prefix}/certificate_status/{{subject}}"),
            get(status::get_status).put(status::put_status).delete(status::delete_status),
        )
        .route(&format!("{prefix}/certificate_statuses/{{any}}"), get(status::get_statuses))
        .route(&format!("{prefix}/certificate_revocation_list/{{any}}"), get(certs::get_crl))
}

async fn puppet_version_header(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert("x-puppet-version", HeaderValue::from_static(PUPPET_VERSION));
    response
}

/// Runs a blocking CA operation off the async threads.
async fn blocking<T: Send + 'static>(
    state: &State,
    op: impl FnOnce(&CaService) -> Result<T, CaError> + Send + 'static,
) -> Result<T, ApiError> {
    let service = state.service();
    let metrics = service.metrics().clone();
    match tokio::task::spawn_blocking(move || op(&service)).await {
        Ok(Err(CaError::Store(e))) => {
            metrics.store_error(&e);
            Err(ApiError::from(CaError::Store(e)))
        }
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::Internal(format!("CA task failed: {e}"))),
    }
}

/// The stored bytes, or 304 when the client has them: `If-None-Match` naming the current tag,
/// or (without `If-None-Match`) `If-Modified-Since` not before the last change (RFC 9110
/// §13.2.2). Both answers carry `Last-Modified` and `ETag`.
fn stamped_response(headers: &HeaderMap, stamped: Stamped) -> Response {
    let etag = format!("\"{}\"", stamped.etag);
    let mut response = if not_modified(headers, &etag, stamped.modified) {
        text(StatusCode::NOT_MODIFIED, "")
    } else {
        text(StatusCode::OK, stamped.bytes)
    };
    let validators = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(stamped.modified)) {
        validators.insert(header::LAST_MODIFIED, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        validators.insert(header::ETAG, value);
    }
    response
}

fn not_modified(headers: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    if let Some(tags) = headers.get(header::IF_NONE_MATCH) {
        let tags = tags.to_str().unwrap_or_default();
        return tags
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag || t == "*");
    }
    let Some(since) = headers.get(header::IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Ok(since) = httpdate::parse_http_date(since) else {
        return false;
    };
    let seconds =
        |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    seconds(modified) <= seconds(since)
}

fn text(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
