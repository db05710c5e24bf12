//! The stub compiler: a **test double** for puppetserver in benchmarks of the LB itself. It
//! answers the `/puppet/v3` requests of an agent run with canned bodies of realistic size (a
//! catalog of about 100 KiB) after a configurable delay, and `/status/v1/simple` with
//! `running`. It compiles nothing; benchmarks that are about Puppet use real compilers.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// What the stub answers with.
#[derive(Debug, Clone)]
pub struct StubSettings {
    /// Wait before answering a catalog request (a compile).
    pub catalog_delay: Duration,
    /// Wait before answering any other request.
    pub other_delay: Duration,
    /// Size of the canned catalog.
    pub catalog_bytes: usize,
}

impl Default for StubSettings {
    fn default() -> Self {
        Self {
            catalog_delay: Duration::ZERO,
            other_delay: Duration::ZERO,
            catalog_bytes: 100 * 1024,
        }
    }
}

struct Canned {
    settings: StubSettings,
    catalog: Bytes,
    node: Bytes,
    metadatas: Bytes,
}

/// Serves `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    settings: StubSettings,
    shutdown: impl Future<Output = ()>,
) {
    let canned = Arc::new(Canned {
        catalog: catalog(settings.catalog_bytes),
        node: node(),
        metadatas: metadatas(),
        settings,
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let canned = canned.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(canned.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    canned: Arc<Canned>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    // Read the whole request body, as a compiler would.
    let _ = request.into_body().collect().await;
    let (status, body, delay) = if path.starts_with("/status/v1/simple") {
        return Ok(respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"running"),
        ));
    } else if path.starts_with("/puppet/v3/catalog/") {
        (StatusCode::OK, canned.catalog.clone(), canned.settings.catalog_delay)
    } else if path.starts_with("/puppet/v3/node/") {
        (StatusCode::OK, canned.node.clone(), canned.settings.other_delay)
    } else if path.starts_with("/puppet/v3/file_metadatas/")
        || path.starts_with("/puppet/v3/file_metadata/")
    {
        (StatusCode::OK, canned.metadatas.clone(), canned.settings.other_delay)
    } else if path.starts_with("/puppet/v3/report/") && method == Method::PUT {
        (StatusCode::OK, Bytes::from_static(b"[]"), canned.settings.other_delay)
    } else {
        let message = format!("{{\"message\":\"stub compiler: no canned answer for {path}\",\"issue_kind\":\"HANDLER_NOT_FOUND\"}}");
        return Ok(respond(StatusCode::NOT_FOUND, "application/json", Bytes::from(message)));
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(respond(status, "application/json", body))
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("x-puppet-version", HeaderValue::from_static("7.23.0"));
    response
}

fn node() -> Bytes {
    Bytes::from(
        serde_json::json!({"name": "agent", "environment": "production", "parameters": {"clientcert": "agent", "environment": "production"}, "classes": {}, "facts": {}})
            .to_string(),
    )
}

fn metadatas() -> Bytes {
    let entry = |path: &str| serde_json::json!({"path": path, "relative_path": ".", "links": "manage", "owner": 0, "group": 0, "mode": 420, "checksum": {"type": "ctime", "value": "{ctime}2026-11-25 12:00:00 +0000"}, "type": "directory", "destination": null});
    Bytes::from(
        serde_json::json!([entry(
            "/etc/puppetlabs/code/environments/production/modules/stdlib/lib"
        )])
        .to_string(),
    )
}

/// A catalog of about `size` bytes: `File` resources until the size is reached.
fn catalog(size: usize) -> Bytes {
    let mut resources = Vec::new();
    let mut total = 0;
    let mut i = 0;
    while total < size {
        let resource = serde_json::json!({"type": "File", "title": format!("/etc/simulated/file-{i:05}"), "tags": ["file", "class", "simulated"], "file": "/etc/puppetlabs/code/environments/production/manifests/site.pp", "line": i, "exported": false, "parameters": {"ensure": "file", "owner": "root", "group": "root", "mode": "0644", "content": "simulated content of a managed file"}});
        total += resource.to_string().len() + 1;
        resources.push(resource);
        i += 1;
    }
    Bytes::from(
        serde_json::json!({"tags": ["settings"], "name": "agent", "version": 1_795_628_228u64, "code_id": null, "catalog_uuid": "00000000-0000-0000-0000-000000000000", "catalog_format": 1, "environment": "production", "resources": resources, "edges": [], "classes": ["settings"]})
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canned_catalog_has_the_asked_size() {
        let c = catalog(100 * 1024);
        assert!((100 * 1024..110 * 1024).contains(&c.len()), "{}", c.len());
        assert!(serde_json::from_slice::<serde_json::Value>(&c).is_ok());
    }
}
