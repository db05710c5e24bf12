//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`); not crossbar's API.
//! Each one drives a pure part of the request path or the config with untrusted input and
//! asserts what must hold whatever the input.

use std::time::Duration;

use http::{header, HeaderMap, HeaderName, HeaderValue, Request};

use crate::{
    config::{FileLbConfig, LbConfig},
    edge::{self, LbNames},
    headers,
    identity::{ClientIdentity, VerifiedClient},
    route::{RouteTable, CA_POOL},
};

/// Headers from `name: value` lines (those that are valid header fields).
fn header_map(text: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim()))
        else {
            continue;
        };
        map.append(name, value);
    }
    map
}

/// Whether a header only the LB may set survived.
fn spoofable(map: &HeaderMap) -> bool {
    map.keys().any(|name| {
        let folded = name.as_str().replace('_', "-");
        folded.starts_with("x-crossbar-")
            || ((folded == "x-client-verify"
                || folded == "x-client-dn"
                || folded == "x-client-cert")
                && name.as_str() != folded)
    })
}

/// The header policy: after it, a client's headers carry exactly the LB's identity headers and
/// no hop-by-hop header.
pub fn header_policy(text: &str) {
    for verified in [false, true] {
        let mut map = header_map(text);
        headers::strip_hop_by_hop(&mut map);
        let identity = if verified {
            ClientIdentity::Verified(VerifiedClient {
                certname: "agent.example.com".into(),
                serial: vec![1],
                dn: HeaderValue::from_static("CN=agent.example.com"),
                cert: HeaderValue::from_static("pem"),
            })
        } else {
            ClientIdentity::Anonymous
        };
        headers::apply_identity(&mut map, &identity);
        assert!(!spoofable(&map), "a client header survived: {map:?}");
        let verify: Vec<_> = map.get_all(headers::X_CLIENT_VERIFY).iter().collect();
        let expected = if verified { "SUCCESS" } else { "NONE" };
        assert_eq!(verify, [expected], "{map:?}");
        assert_eq!(map.get_all(headers::X_CLIENT_DN).iter().count(), usize::from(verified));
        assert_eq!(map.get_all(headers::X_CLIENT_CERT).iter().count(), usize::from(verified));
        for hop in [header::CONNECTION, header::TRANSFER_ENCODING, header::UPGRADE, header::TE] {
            assert!(!map.contains_key(&hop), "{hop} survived: {map:?}");
        }
    }
}

/// The edge check and routing: an accepted head has one `Host` and an origin-form target, and
/// CA paths always go to the CA pool.
pub fn edge_and_route(text: &str) {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let mut words = first.split(' ');
    let (method, target) = (words.next().unwrap_or("GET"), words.next().unwrap_or("/"));
    let Ok(request) = Request::builder().method(method).uri(target).body(()) else { return };
    let (mut parts, ()) = request.into_parts();
    parts.headers = header_map(rest);
    let names = LbNames::new(["puppetlb.example.com".to_owned(), "127.0.0.1".to_owned()]);
    if edge::check(&mut parts, &names).is_ok() {
        assert!(parts.uri.authority().is_none() && parts.uri.scheme().is_none(), "{parts:?}");
        assert_eq!(parts.headers.get_all(header::HOST).iter().count(), 1);
        assert!(parts.method != http::Method::CONNECT && parts.method != http::Method::TRACE);
    }
    static ROUTES: std::sync::OnceLock<RouteTable> = std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| RouteTable::with_defaults(vec![]));
    let (path, query) = (parts.uri.path(), parts.uri.query());
    let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let (_, pool) = routes.route_for(crate::route::Target { path, query, user_agent });
    if path.starts_with("/puppet-ca/") {
        assert_eq!(pool, CA_POOL, "{path}");
    }
}

/// The `[lb]` parser: nothing panics, and an accepted config's every timer can be armed.
pub fn lb_config(text: &str) {
    let Ok(file) = toml::from_str::<FileLbConfig>(text) else { return };
    let Ok(config) = LbConfig::try_from(file) else { return };
    let _ = config.describe();
    let now = tokio::time::Instant::now();
    let durations = [
        config.tls_reload_interval,
        config.serve.handshake_timeout,
        config.serve.header_read_timeout,
        config.serve.idle_park,
        config.serve.drain_grace,
        config.requests.body_idle,
        config.upstream.connect_timeout,
        config.upstream.response_timeout,
        config.upstream.idle_timeout,
    ];
    let pools = config.pools.iter().flat_map(|p| {
        let check = p.settings.check.iter().flat_map(|c| [c.interval, c.timeout]);
        check.chain([p.settings.queue_timeout, Duration::from_secs(p.settings.retry_after.1)])
    });
    for duration in durations.into_iter().chain(pools) {
        assert!(now.checked_add(duration).is_some(), "{duration:?} cannot be armed");
    }
    assert!(config.tls_reload_interval > Duration::ZERO);
    assert!(config.serve.max_connections > 0 && config.serve.max_head_bytes >= 1024);
}
