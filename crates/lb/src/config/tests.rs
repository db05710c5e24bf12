use super::*;

const BASE: &str = r#"
listen = "127.0.0.1:8140"
cert = "/etc/crossbar/lb.pem"
key = "/etc/crossbar/lb.key"
client_ca = "/etc/crossbar/ca_crt.pem"
"#;

fn parse(extra: &str) -> Result<LbConfig, String> {
    let file: FileLbConfig =
        toml::from_str(&format!("{BASE}{extra}")).map_err(|e| e.to_string())?;
    LbConfig::try_from(file).map_err(|e| e.to_string())
}

#[test]
fn defaults_are_the_documented_ones() {
    let config = parse("").expect("a minimal config");
    assert_eq!(config.serve.max_head_bytes, 16 * 1024);
    assert_eq!(config.serve.max_headers, 100);
    assert_eq!(config.requests.body_idle, Duration::from_secs(20));
    assert_eq!(config.requests.body_min_rate, 500);
    assert_eq!(config.tls_reload_interval, Duration::from_secs(2));
    assert_eq!(config.upstream.response_timeout, Duration::from_secs(600));
}

#[test]
fn every_duration_and_size_is_range_checked_with_its_key_named() {
    let pool = "[pools.compilers]\nmembers = [{ url = \"http://127.0.0.1:1\" }]\n";
    let cases = [
        ("tls_reload_interval = \"0s\"", "tls_reload_interval"),
        ("timeouts = { header_read = \"18446744073709551615s\" }", "timeouts.header_read"),
        ("timeouts = { idle_park = \"2h\" }", "timeouts.idle_park"),
        ("timeouts = { handshake = \"0s\" }", "timeouts.handshake"),
        ("timeouts = { connect = \"0ms\" }", "timeouts.connect"),
        ("timeouts = { response = \"0s\" }", "timeouts.response"),
        ("timeouts = { body_idle = \"0s\" }", "timeouts.body_idle"),
        ("timeouts = { drain = \"5000d\" }", "timeouts.drain"),
        ("limits = { header_bytes = 10 }", "limits.header_bytes"),
        ("limits = { header_bytes = \"2GiB\" }", "limits.header_bytes"),
        ("limits = { header_bytes = \"16 parsecs\" }", "limits.header_bytes"),
        ("limits = { headers = 0 }", "limits.headers"),
        ("max_connections = 0", "max_connections"),
        ("crl = { pool = \"ca\", refresh = \"0s\" }", "crl.refresh"),
    ];
    for (line, key) in cases {
        let got = parse(&format!("{line}\n{pool}"));
        assert!(got.as_ref().is_err_and(|e| e.contains(key)), "{line}: {got:?}");
    }
    let pool_cases = [
        ("health = { interval = \"0s\" }", "health.interval"),
        ("health = { rise = 0 }", "health.rise"),
        ("health = { fall = 1000 }", "health.fall"),
        ("queue = { timeout = \"2h\" }", "queue.timeout"),
        ("retry_after = { min = \"0s\", max = \"5s\" }", "retry_after.min"),
        ("retry_after = { min = \"9s\", max = \"5s\" }", "retry_after"),
        ("max_body = 0", "max_body"),
        ("members = [{ url = \"http://127.0.0.1:1\", max_in_flight = 0 }]", "max_in_flight"),
    ];
    for (line, key) in pool_cases {
        let members = if line.starts_with("members") {
            ""
        } else {
            "members = [{ url = \"http://127.0.0.1:1\" }]\n"
        };
        let got = parse(&format!("[pools.compilers]\n{members}{line}\n"));
        assert!(got.as_ref().is_err_and(|e| e.contains(key)), "{line}: {got:?}");
    }
}

#[test]
fn unknown_keys_are_refused_at_every_depth() {
    let cases = [
        ("crl = { pool = \"ca\", refesh = \"2s\" }", "refesh"),
        ("crl = { file = \"/x\", pool = \"ca\" }", "crl"),
        ("timeouts = { body_idel = \"2s\" }", "body_idel"),
        ("limits = { header_byte = 100 }", "header_byte"),
        ("[pools.compilers]\nmembers = [{ url = \"http://127.0.0.1:1\" }]\nhealth = { intervall = \"2s\" }", "intervall"),
        ("[pools.compilers]\nmembers = [{ url = \"http://127.0.0.1:1\", weight = 2 }]", "weight"),
        ("[pools.compilers]\nmembers = [{ url = \"http://127.0.0.1:1\" }]\nqueue = { maximum = 2 }", "maximum"),
        ("colour = \"blue\"", "colour"),
    ];
    for (text, key) in cases {
        let got = parse(text);
        assert!(got.as_ref().is_err_and(|e| e.contains(key)), "{text}: {got:?}");
    }
}

#[test]
fn sizes_take_units() {
    let config = parse("limits = { header_bytes = \"32KiB\", body_min_rate = \"1KiB\" }")
        .expect("sizes with units");
    assert_eq!(config.serve.max_head_bytes, 32 * 1024);
    assert_eq!(config.requests.body_min_rate, 1024);
    let config = parse(
        "[pools.compilers]\nmembers = [{ url = \"http://127.0.0.1:1\" }]\nmax_body = \"4MiB\"",
    )
    .expect("max_body");
    assert_eq!(config.pools[0].settings.max_body, Some(4 << 20));
}

#[test]
fn the_crl_forms_all_parse() {
    let file = parse("crl = \"/var/lib/ca_crl.pem\"").expect("path");
    assert!(file.tls.crl.is_some() && file.crl_pull.is_none());
    let file = parse("crl = { file = \"/var/lib/ca_crl.pem\" }").expect("file table");
    assert!(file.tls.crl.is_some());
    let pull = parse("crl = { pool = \"ca\", refresh = \"5s\", cache = \"/var/cache/crl.pem\" }")
        .expect("pull");
    assert_eq!(pull.crl_pull.map(|p| p.refresh), Some(Duration::from_secs(5)));
    assert!(parse("crl = { pool = \"nope\" }").is_err_and(|e| e.contains("crl.pool")));
}

#[test]
fn secrets_are_read_from_files_and_must_be_long_enough() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good");
    std::fs::write(&good, "0123456789abcdef0123\n").expect("write");
    let short = dir.path().join("short");
    std::fs::write(&short, "tiny\n").expect("write");
    let pool = |path: &std::path::Path| {
        format!("[pools.ca]\nmembers = [{{ url = \"http://127.0.0.1:1\" }}]\nproxy_secret_file = \"{}\"", path.display())
    };
    let config = parse(&pool(&good)).expect("a good secret");
    assert_eq!(config.pools[0].settings.proxy_secret, Some(Secret::new("0123456789abcdef0123")));
    assert!(format!("{:?}", config.pools[0].settings).contains("Secret(…)"), "never printed");
    assert!(parse(&pool(&short)).is_err_and(|e| e.contains("proxy_secret_file")));
    let missing = dir.path().join("missing");
    assert!(parse(&pool(&missing)).is_err_and(|e| e.contains("proxy_secret_file")));
}
