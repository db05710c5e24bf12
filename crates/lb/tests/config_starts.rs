//! A property of the `[lb]` config: any configuration the checks accept, the LB starts with and
//! serves a request through. Values are drawn around every range's edges (zero, the smallest
//! and largest accepted, just past them, absurd), so a setting that passes the check and then
//! panics a timer or a buffer at run time is found here.

#![allow(clippy::unwrap_used)]

use std::{sync::OnceLock, time::Duration};

use lb::{FileLbConfig, Lb, LbConfig};
use pki::KeyAlgorithm;
use proptest::prelude::*;
use testkit::{
    fixture::{CaFixture, LB_NAME},
    stub::StubBackend,
    tls::TlsClient,
};

struct World {
    fx: CaFixture,
    stub: StubBackend,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| World {
        fx: CaFixture::new(KeyAlgorithm::EcP256),
        stub: StubBackend::start(Duration::ZERO),
    })
}

/// Mostly absent or ordinary, sometimes at or past an edge.
fn pick<T: Clone + std::fmt::Debug + 'static>(
    ordinary: Vec<T>,
    edges: Vec<T>,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![
        5 => Just(None),
        4 => prop::sample::select(ordinary).prop_map(Some),
        1 => prop::sample::select(edges).prop_map(Some),
    ]
}

fn duration() -> impl Strategy<Value = Option<&'static str>> {
    pick(
        vec!["100ms", "1s", "2s", "10m", "1h"],
        vec![
            "0s",
            "1ms",
            "10ms",
            "50ms",
            "24h",
            "25h",
            "5000d",
            "18446744073709551615s",
            "100000000y",
        ],
    )
}

fn size() -> impl Strategy<Value = Option<&'static str>> {
    pick(
        vec!["1024", "8192", "\"16KiB\"", "\"1MiB\""],
        vec!["0", "1", "10", "500", "\"2MiB\"", "\"1GiB\"", "\"2GiB\"", "\"16 parsecs\""],
    )
}

fn count() -> impl Strategy<Value = Option<u64>> {
    pick(vec![1u64, 2, 4, 8, 100], vec![0, 1000, 1001, 100_000, 10_000_000])
}

/// `key = value` lines of a table, skipping absent values.
fn table(entries: &[(&str, Option<String>)]) -> String {
    let fields: Vec<String> =
        entries.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} = {v}"))).collect();
    format!("{{ {} }}", fields.join(", "))
}

fn quoted(value: Option<&str>) -> Option<String> {
    value.map(|v| format!("\"{v}\""))
}

prop_compose! {
    fn config_text()(
        reload in duration(),
        timeouts in prop::collection::vec(duration(), 8),
        header_bytes in size(),
        headers in count(),
        min_rate in size(),
        max_connections in count(),
        max_in_flight in count(),
        queue_max in count(),
        queue_timeout in duration(),
        check in prop::collection::vec(duration(), 2),
        rise_fall in prop::collection::vec(count(), 2),
        max_body in size(),
    ) -> String {
        let w = world();
        let keys = ["connect", "response", "backend_idle", "handshake", "header_read", "idle_park", "drain", "body_idle"];
        let timeouts: Vec<(&str, Option<String>)> =
            keys.iter().zip(&timeouts).map(|(k, v)| (*k, quoted(*v))).collect();
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\ncrl = \"{}\"\n",
            w.fx.cert(LB_NAME).display(), w.fx.key(LB_NAME).display(), w.fx.ca_bundle().display(), w.fx.crl().display()
        );
        if let Some(reload) = reload { text += &format!("tls_reload_interval = \"{reload}\"\n"); }
        if let Some(max) = max_connections { text += &format!("max_connections = {max}\n"); }
        text += &format!("timeouts = {}\n", table(&timeouts));
        text += &format!("limits = {}\n", table(&[
            ("header_bytes", header_bytes.map(str::to_owned)),
            ("headers", headers.map(|h| h.to_string())),
            ("body_min_rate", min_rate.map(str::to_owned)),
        ]));
        let member = match max_in_flight {
            Some(max) => format!("{{ url = \"{}\", max_in_flight = {max} }}", w.stub.url()),
            None => format!("{{ url = \"{}\" }}", w.stub.url()),
        };
        text += &format!("[pools.compilers]\nmembers = [{member}]\n");
        text += &format!("queue = {}\n", table(&[("max", queue_max.map(|m| m.to_string())), ("timeout", quoted(queue_timeout))]));
        text += &format!("health = {}\n", table(&[
            ("interval", quoted(check[0])), ("timeout", quoted(check[1])),
            ("rise", rise_fall[0].map(|r| r.to_string())), ("fall", rise_fall[1].map(|f| f.to_string())),
        ]));
        if let Some(max) = max_body { text += &format!("max_body = {max}\n"); }
        text
    }
}

/// Starts the LB with `config`, sends one request through it, and stops it.
fn serve_one_request(config: LbConfig) -> u16 {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let lb = Lb::build(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(lb.run(listener, None, async move {
            let _ = stopped.await;
        }));
        let bundle = world().fx.ca_bundle();
        let status = tokio::task::spawn_blocking(move || {
            let client = TlsClient::new(&bundle, None);
            client.handshake_and_request(port, "/puppet/v3/node/x").map(|r| r.status)
        })
        .await
        .unwrap()
        .unwrap();
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(30), running).await.unwrap().unwrap();
        status
    })
}

proptest! {
    // 48 accepted configurations, each started and served through; refused ones are drawn
    // again (most draws hold at least one value the check refuses).
    #![proptest_config(ProptestConfig { cases: 48, max_global_rejects: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn any_config_the_check_accepts_serves(text in config_text()) {
        let config = toml::from_str::<FileLbConfig>(&text)
            .ok()
            .and_then(|file| LbConfig::try_from(file).ok());
        prop_assume!(config.is_some());
        if let Some(config) = config {
            prop_assert_eq!(serve_one_request(config), 200, "{}", text);
        }
    }
}

/// The property is not vacuous: the extremes that are accepted do start.
#[test]
fn the_accepted_extremes_serve() {
    let w = world();
    let head = format!(
        "listen = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        w.fx.cert(LB_NAME).display(),
        w.fx.key(LB_NAME).display(),
        w.fx.ca_bundle().display()
    );
    let pool = format!(
        "[pools.compilers]\nmembers = [{{ url = \"{}\", max_in_flight = 1 }}]\n",
        w.stub.url()
    );
    for extra in [
        "tls_reload_interval = \"100ms\"\ntimeouts = { idle_park = \"0s\", drain = \"0s\", header_read = \"1h\", response = \"24h\", handshake = \"10m\" }\nlimits = { header_bytes = 1024, headers = 8, body_min_rate = 0 }\nmax_connections = 1\n",
        "tls_reload_interval = \"1h\"\ntimeouts = { idle_park = \"1h\", drain = \"1h\", body_idle = \"1h\", backend_idle = \"1h\", connect = \"5m\" }\nlimits = { header_bytes = \"1MiB\", headers = 1000, body_min_rate = \"1GiB\" }\nmax_connections = 1000000\n",
    ] {
        let text = format!("{head}{extra}{pool}queue = {{ max = 0, timeout = \"0s\" }}\n");
        let file: FileLbConfig = toml::from_str(&text).unwrap();
        let config = LbConfig::try_from(file).unwrap();
        assert_eq!(serve_one_request(config), 200, "{text}");
    }
}
