//! crossbar as a systemd service, without systemd: the sd_notify messages read from a
//! `NOTIFY_SOCKET` the test owns (ready only once the listeners answer, reload and stop
//! sequences, a watchdog that starves when a worker is wedged), restarts with the listening
//! sockets held by the test as systemd holds them (no connection refused), JSON logs, and the
//! CA's metrics after a known sequence of operations.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use pki::KeyAlgorithm;
use testkit::{
    activation::SocketHolder,
    fixture::{csr_pem, http, CaFixture, Crossbar, ADMIN_NAME},
    tls::TlsClient,
    wait,
};

use super::{bin, crossbar, online};

/// The service manager's end of `NOTIFY_SOCKET`.
struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Notifications {
    fn new(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Self { socket, path }
    }

    fn env(&self) -> (&'static str, &str) {
        ("NOTIFY_SOCKET", self.path.to_str().unwrap())
    }

    /// The next message, if one comes within `timeout`.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Messages until one has `line` as one of its lines; panics after `timeout`.
    fn until(&self, line: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(message) = self.next(deadline.saturating_duration_since(Instant::now())) {
                let done = message.lines().any(|l| l == line);
                seen.push(message);
                if done {
                    return seen;
                }
            }
        }
        panic!("no {line:?} within {timeout:?}; got {seen:?}");
    }
}

fn config(fx: &CaFixture, extra_lb: &str) -> String {
    fx.single_node_config("true", &format!("admin_listen = \"127.0.0.1:0\"\n{extra_lb}"))
}

#[test]
fn systemd_hears_ready_reloading_and_stopping_at_the_right_moments() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let notify = Notifications::new(fx.dir());
    let text = config(&fx, "");
    let mut cb = Crossbar::start_env(bin(), fx.dir(), "crossbar", &text, &[notify.env()]);
    let ready = notify.until("READY=1", Duration::from_secs(30));
    // Ready means serving: a request through the LB works at once.
    let client = TlsClient::new(&fx.ca_bundle(), None);
    assert_eq!(
        client.handshake_and_request(cb.lb_port(), "/puppet-ca/v1/certificate/ca").unwrap().status,
        200
    );
    let status = ready.last().unwrap();
    assert!(status.contains("STATUS=lb: ") && status.contains("CRL #0"), "{ready:?}");
    // The debug wedge exists only when asked for in the environment.
    assert_eq!(http(cb.admin.unwrap(), "POST", "/debug/wedge-worker", b"").unwrap().0, 404);

    // A reload: RELOADING=1 with the monotonic clock, then READY=1.
    std::fs::write(fx.dir().join("crossbar.toml"), config(&fx, "max_connections = 1000")).unwrap();
    cb.child.signal("HUP");
    let reloading = notify.until("READY=1", Duration::from_secs(10));
    let first = reloading
        .iter()
        .find(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {reloading:?}"));
    let usec: u64 = first
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);
    assert!(reloading.last().unwrap().contains("STATUS=configuration reloaded"), "{reloading:?}");

    // A refused reload says so, and the service stays ready with its running configuration.
    std::fs::write(fx.dir().join("crossbar.toml"), "[lb]\nlisten = \"nonsense\"\n").unwrap();
    cb.child.signal("HUP");
    let refused = notify.until("READY=1", Duration::from_secs(10));
    assert!(refused.iter().any(|m| m.contains("RELOADING=1")), "{refused:?}");
    assert!(refused.last().unwrap().contains("STATUS=reload refused"), "{refused:?}");
    assert_eq!(
        client.handshake_and_request(cb.lb_port(), "/puppet-ca/v1/certificate/ca").unwrap().status,
        200
    );

    cb.child.signal("TERM");
    notify.until("STOPPING=1", Duration::from_secs(10));
    assert_eq!(cb.child.wait_exit(Duration::from_secs(40)), Some(0));
}

#[test]
fn the_watchdog_is_fed_only_while_every_worker_turns() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let notify = Notifications::new(fx.dir());
    let env = [notify.env(), ("WATCHDOG_USEC", "400000"), ("CROSSBAR_DEBUG_WEDGE", "1")];
    let cb = Crossbar::start_env(bin(), fx.dir(), "crossbar", &config(&fx, ""), &env);
    notify.until("READY=1", Duration::from_secs(30));
    for _ in 0..3 {
        notify.until("WATCHDOG=1", Duration::from_secs(2));
    }
    let admin = cb.admin.unwrap();
    assert_eq!(http(admin, "POST", "/debug/wedge-worker", b"").unwrap().0, 200);
    wait::until_true("/healthz to report the wedged worker", Duration::from_secs(15), || {
        http(admin, "GET", "/healthz", b"").is_ok_and(|(status, body)| {
            status == 503 && String::from_utf8_lossy(&body).contains("has not turned")
        })
    });
    // Starving: a silence of three watchdog periods (it is fed every 200 ms while healthy).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_feed = Instant::now();
    while last_feed.elapsed() < Duration::from_millis(1200) {
        assert!(Instant::now() < deadline, "the watchdog is still fed");
        if notify.next(Duration::from_millis(100)).is_some_and(|m| m.contains("WATCHDOG=1")) {
            last_feed = Instant::now();
        }
    }
    assert!(cb.child.stderr().contains("not feeding systemd's watchdog"));
}

#[test]
fn a_restart_with_held_sockets_refuses_no_connection() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let sockets = SocketHolder::bind(2);
    let (lb, admin) = (sockets.addr(0), sockets.addr(1));
    let text = fx
        .single_node_config("true", &format!("admin_listen = \"{admin}\"\n"))
        .replace("listen = \"127.0.0.1:0\"\ncert", &format!("listen = \"{lb}\"\ncert"));
    assert!(text.contains(&format!("listen = \"{lb}\"")), "{text}");
    let path = fx.dir().join("activated.toml");
    std::fs::write(&path, &text).unwrap();
    let args = ["serve", "--config", path.to_str().unwrap()];
    let mut first = sockets.spawn("first", bin(), &args, fx.dir(), &[("RUST_LOG", "info")]);
    first.wait_for_stdout("lb listening on", Duration::from_secs(30));
    assert!(first.stderr().contains("using the socket systemd passed"), "{}", first.stderr());

    // Agents keep connecting, one new connection per request, through the restart.
    let results = Arc::new(Mutex::new(Vec::<Result<u16, String>>::new()));
    let running = Arc::new(AtomicBool::new(true));
    let agents: Vec<_> = (0..4)
        .map(|_| {
            let client = TlsClient::new(&fx.ca_bundle(), None);
            let (out, on) = (results.clone(), running.clone());
            std::thread::spawn(move || {
                while on.load(Ordering::Relaxed) {
                    let reply = client.request_to(
                        lb,
                        "/puppet-ca/v1/certificate/ca",
                        Duration::from_secs(30),
                    );
                    out.lock().unwrap().push(reply.map(|r| r.status));
                }
            })
        })
        .collect();
    let count = || results.lock().unwrap().len();
    wait::until_true("requests before the restarts", Duration::from_secs(10), || count() >= 40);
    // Several restarts: a connection caught at the moment of one is rare, so give it chances.
    let mut current = first;
    for round in 0..6 {
        current.signal("TERM");
        assert_eq!(current.wait_exit(Duration::from_secs(40)), Some(0));
        let during = count();
        current = sockets.spawn(
            &format!("restart{round}"),
            bin(),
            &args,
            fx.dir(),
            &[("RUST_LOG", "info")],
        );
        current.wait_for_stdout("lb listening on", Duration::from_secs(30));
        wait::until_true("requests after a restart", Duration::from_secs(20), || {
            count() >= during + 40
        });
    }
    running.store(false, Ordering::Relaxed);
    for agent in agents {
        agent.join().unwrap();
    }
    let results = results.lock().unwrap();
    let failed: Vec<&Result<u16, String>> =
        results.iter().filter(|r| !matches!(r, Ok(200))).collect();
    assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), results.len());
}

#[test]
fn json_logs_are_one_object_per_line_with_access_and_audit_fields() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let text = format!("{}\n[log]\nformat = \"json\"\n", config(&fx, ""));
    let mut cb = Crossbar::start(bin(), fx.dir(), "crossbar", &text);
    let client = TlsClient::new(&fx.ca_bundle(), None);
    let csr = csr_pem("json.example.com");
    let put = testkit::tls::request(
        "PUT",
        "/puppet-ca/v1/certificate_request/json.example.com",
        &[("Content-Type", "text/plain")],
        csr.as_bytes(),
    );
    assert_eq!(client.raw(cb.lb_port(), &put).status, 200);
    cb.child.signal("TERM");
    cb.child.wait_exit(Duration::from_secs(40));
    let log = cb.child.stderr();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 4, "{log}");
    for line in &lines {
        let ts = line["timestamp"].as_str().expect("a timestamp");
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok()
                && ts.ends_with('Z'),
            "{ts}"
        );
        assert!(line["level"].is_string() && line["target"].is_string(), "{line}");
    }
    let access = lines
        .iter()
        .find(|l| {
            l["target"] == "crossbar::access"
                && l["path"].as_str().is_some_and(|p| p.contains("certificate_request"))
        })
        .expect("an access line for the CSR");
    assert_eq!(
        (access["status"].as_u64(), access["method"].as_str()),
        (Some(200), Some("PUT")),
        "{access}"
    );
    let audit = lines.iter().find(|l| l["target"] == "crossbar::audit").expect("an audit line");
    assert_eq!(
        (audit["action"].as_str(), audit["actor"].as_str()),
        (Some("sign"), Some("autosign")),
        "{audit}"
    );
    assert_eq!(audit["certname"].as_str(), Some("json.example.com"), "{audit}");
    assert!(audit["serial"].is_string(), "{audit}");
}

#[test]
fn ca_metrics_count_a_known_sequence() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let text = config(&fx, "").replace("[ca]\n", "[ca]\nadmin_listen = \"127.0.0.1:0\"\n");
    let cb = Crossbar::start(bin(), fx.dir(), "crossbar", &text);
    let client = TlsClient::new(&fx.ca_bundle(), None);
    for i in 0..3 {
        let csr = csr_pem(&format!("m{i}.example.com"));
        let put = testkit::tls::request(
            "PUT",
            &format!("/puppet-ca/v1/certificate_request/m{i}.example.com"),
            &[],
            csr.as_bytes(),
        );
        assert_eq!(client.raw(cb.lb_port(), &put).status, 200);
    }
    let again = testkit::tls::request(
        "PUT",
        "/puppet-ca/v1/certificate_request/m0.example.com",
        &[],
        csr_pem("m0.example.com").as_bytes(),
    );
    assert_eq!(client.raw(cb.lb_port(), &again).status, 400, "a duplicate");
    let admin = online(&cb.lb_url(), &fx.cert(ADMIN_NAME), &fx.key(ADMIN_NAME), &fx.ca_bundle());
    let mut args =
        vec!["ca".to_owned(), "revoke".into(), "--certname".into(), "m1.example.com".into()];
    args.extend(admin);
    let (code, out, err) = crossbar(&args);
    assert_eq!(code, 0, "{out}{err}");
    let (status, body) = http(cb.ca_metrics.unwrap(), "GET", "/metrics", b"").unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    let value = |line: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    };
    assert_eq!(
        value("crossbar_ca_requests_total{endpoint=\"PUT certificate_request\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        value("crossbar_ca_requests_total{endpoint=\"PUT certificate_request\",status=\"400\"}"),
        1.0
    );
    assert_eq!(value("crossbar_ca_certificates_signed_total"), 3.0);
    assert_eq!(value("crossbar_ca_certificates_revoked_total"), 1.0);
    assert_eq!(value("crossbar_ca_autosign_decisions_total{outcome=\"signed\"}"), 3.0);
    assert_eq!(value("crossbar_ca_signing_duration_seconds_count"), 3.0);
    assert_eq!(value("crossbar_ca_requests_pending"), 0.0);
    assert_eq!(value("crossbar_ca_crl_number"), 1.0);
    assert!(value("crossbar_ca_crl_next_update_seconds") > 0.0);
    assert_eq!(value("crossbar_ca_store_errors_total{kind=\"unavailable\"}"), 0.0);
}
