//! The LB's request path under attack: what one anonymous client on the network can try, and
//! what it must not achieve (issue 12). Each test names the hole it closes. Backends here are
//! crossbar's own CA (in the same process, reached over HTTP like any backend) and the stub
//! compiler (a test double, for the LB's own behaviour).

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use pki::KeyAlgorithm;
use serde_json::Value;
use testkit::{
    fixture::{http, CaFixture, Crossbar, ADMIN_NAME},
    process::rss_kib,
    stub::StubBackend,
    tls::{read_reply, request, Reply, TlsClient},
    wait,
};

use super::{bin, crossbar};

fn start(fx: &CaFixture, extra_lb: &str) -> Crossbar {
    let extra = format!("admin_listen = \"127.0.0.1:0\"\n{extra_lb}");
    Crossbar::start(bin(), fx.dir(), "crossbar", &fx.single_node_config("false", &extra))
}

fn pools(cb: &Crossbar) -> Value {
    let (status, body) = http(cb.admin.unwrap(), "GET", "/pools", b"").unwrap();
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

/// `(healthy, ejections)` of every member of `pool`.
fn members(cb: &Crossbar, pool: &str) -> Vec<(bool, u64)> {
    let pools = pools(cb);
    let pool = pools.as_array().unwrap().iter().find(|p| p["name"] == pool).unwrap();
    pool["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["healthy"].as_bool().unwrap(), m["ejections"].as_u64().unwrap()))
        .collect()
}

/// A CSR upload with chunked framing, the body as given (possibly broken).
fn chunked_put(name: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("PUT /puppet-ca/v1/certificate_request/{name} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends `bytes` and reads one reply within `timeout`; `None` when the LB closed the connection
/// without one.
fn send_raw(client: &TlsClient, port: u16, bytes: &[u8], timeout: Duration) -> Option<Reply> {
    let mut stream = client.connect(port).unwrap();
    stream.sock.set_read_timeout(Some(timeout)).unwrap();
    stream.write_all(bytes).ok()?;
    stream.flush().ok()?;
    read_reply(&mut stream).ok()
}

/// Hole: a chunked upload with broken framing, or a client hanging up mid-upload, ejected the
/// backend ("error from user's Body stream") and answered 503. Now it is the client's fault: a
/// 400, and the member stays in rotation.
#[test]
fn broken_uploads_are_the_clients_fault_and_eject_nothing() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let cb = start(&fx, "");
    let anonymous = TlsClient::new(&fx.ca_bundle(), None);
    let port = cb.lb_port();
    let long_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(64 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a chunk size that is not hex", chunked_put("a.example.com", b"zz\r\nhello\r\n0\r\n\r\n")),
        ("bare LF line endings", chunked_put("a.example.com", b"5\nhello\n0\n\n")),
        (
            "an overflowing chunk size",
            chunked_put("a.example.com", b"fffffffffffffffffff\r\nhello\r\n"),
        ),
        ("a huge chunk extension", chunked_put("a.example.com", long_extension.as_bytes())),
        ("a chunk longer than its size", chunked_put("a.example.com", b"2\r\nhello\r\n0\r\n\r\n")),
    ];
    for (what, bytes) in &cases {
        let reply = send_raw(&anonymous, port, bytes, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        assert!(!reply.text().trim().is_empty(), "{what}: a 400 says why");
    }
    // A client that hangs up in the middle of its body: nobody to answer, nothing to blame.
    for _ in 0..3 {
        let mut stream = anonymous.connect(port).unwrap();
        stream.write_all(b"PUT /puppet-ca/v1/certificate_request/b.example.com HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n\r\n-----BEGIN").unwrap();
        stream.flush().unwrap();
        drop(stream);
    }
    let ca = anonymous.handshake_and_request(port, "/puppet-ca/v1/certificate/ca").unwrap();
    assert_eq!(ca.status, 200, "the CA still serves: {}", ca.text());
    assert_eq!(members(&cb, "ca"), [(true, 0)], "the CA was never ejected");
}

/// Hole: one certless client sending a broken `PUT certificate_request` every half second kept
/// the CA pool out of service (an agent's 48 CA requests: 6 answered, 42 got 503).
#[test]
fn an_attacker_looping_broken_uploads_costs_honest_agents_nothing() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let cb = start(&fx, "");
    let port = cb.lb_port();
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, bundle) = (stop.clone(), fx.ca_bundle());
        std::thread::spawn(move || {
            let client = TlsClient::new(&bundle, None);
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) {
                let _ = send_raw(
                    &client,
                    port,
                    &chunked_put("evil.example.com", b"zz\r\n"),
                    Duration::from_secs(5),
                );
                sent += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            sent
        })
    };
    let honest = TlsClient::new(&fx.ca_bundle(), None);
    let mut statuses = Vec::new();
    for i in 0..48 {
        let path = if i % 2 == 0 {
            "/puppet-ca/v1/certificate/ca"
        } else {
            "/puppet-ca/v1/certificate_revocation_list/ca"
        };
        statuses.push(honest.handshake_and_request(port, path).map(|r| r.status).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    let sent = attacker.join().unwrap();
    assert!(sent >= 10, "the attacker kept at it ({sent} broken uploads)");
    assert!(statuses.iter().all(|s| *s == 200), "every honest request answered: {statuses:?}");
    assert_eq!(members(&cb, "ca"), [(true, 0)]);
}

/// Hole: an oversized chunked CSR that the CA answers with 413 sometimes came back as 503 and
/// ejected the CA (the CA closed with the body unread; the LB blamed it).
#[test]
fn an_oversized_chunked_csr_gets_413_and_ejects_nothing() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let cb = start(&fx, "");
    let anonymous = TlsClient::new(&fx.ca_bundle(), None);
    for size_kib in [70, 300, 1024] {
        let chunk = vec![b'A'; 1024];
        let mut body = Vec::new();
        for _ in 0..size_kib {
            body.extend_from_slice(b"400\r\n");
            body.extend_from_slice(&chunk);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        for _ in 0..5 {
            let reply = send_raw(
                &anonymous,
                cb.lb_port(),
                &chunked_put("big.example.com", &body),
                Duration::from_secs(10),
            )
            .unwrap_or_else(|| panic!("{size_kib} KiB: no reply"));
            assert_eq!(reply.status, 413, "{size_kib} KiB: {}", reply.text());
        }
    }
    assert_eq!(members(&cb, "ca"), [(true, 0)]);
}

/// Hole: two anonymous POSTs that send 100 bytes of a 100,000-byte body and go quiet held a
/// pool's `max_in_flight` slots until `timeouts.response` (600 s), and the member was ejected
/// when that finally fired. Now a stalled body is cut with 408 after `timeouts.body_idle`.
#[test]
fn a_stalled_body_is_cut_with_408_and_frees_its_slot() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let stub = StubBackend::start(Duration::ZERO);
    let cb = start(
        &fx,
        &format!("timeouts = {{ body_idle = \"1s\" }}\n[lb.pools.compilers]\nmembers = [{{ url = \"{}\", max_in_flight = 2 }}]\n", stub.url()),
    );
    let port = cb.lb_port();
    let anonymous = TlsClient::new(&fx.ca_bundle(), None);
    let started = Instant::now();
    let stallers: Vec<_> = (0..2)
        .map(|_| {
            let mut stream = anonymous.connect(port).unwrap();
            stream.sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            stream.write_all(b"POST /puppet/v3/catalog/x HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n").unwrap();
            stream.write_all(&[b'a'; 100]).unwrap();
            stream.flush().unwrap();
            stream
        })
        .collect();
    // An honest agent meanwhile: it waits for a slot, and gets one once the stallers are cut.
    let honest = anonymous.handshake_and_request(port, "/puppet/v3/node/x").unwrap();
    assert_eq!(honest.status, 200, "{}", honest.text());
    for mut staller in stallers {
        let reply = read_reply(&mut staller).unwrap();
        assert_eq!(reply.status, 408, "{}", reply.text());
    }
    assert!(started.elapsed() < Duration::from_secs(15), "cut well before timeouts.response");
    assert_eq!(members(&cb, "compilers"), [(true, 0)], "the member was not blamed");
}

/// Hole: request heads up to ~450 KiB were accepted and forwarded, and 200 connections holding
/// unfinished 390 KiB heads grew the LB by 82 MiB. Now a head is at most 16 KiB (431 beyond),
/// with at most 100 headers.
#[test]
fn request_heads_are_bounded_in_size_count_and_memory() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let stub = StubBackend::start(Duration::ZERO);
    let cb =
        start(&fx, &format!("[lb.pools.compilers]\nmembers = [{{ url = \"{}\" }}]\n", stub.url()));
    let port = cb.lb_port();
    let anonymous = TlsClient::new(&fx.ca_bundle(), None);
    let with_header = |name: &str, len: usize| {
        request("GET", "/puppet/v3/node/x", &[(name, "a".repeat(len).as_str())], b"")
    };
    assert_eq!(anonymous.raw(port, &with_header("X-Pad", 12 * 1024)).status, 200, "12 KiB passes");
    assert_eq!(
        anonymous.raw(port, &with_header("X-Pad", 20 * 1024)).status,
        431,
        "20 KiB does not"
    );
    let many: Vec<(String, &str)> = (0..101).map(|i| (format!("X-H{i}"), "1")).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    assert_eq!(anonymous.raw(port, &request("GET", "/puppet/v3/node/x", &many, b"")).status, 431);

    let pid = cb.child.id();
    let before = rss_kib(pid).unwrap();
    let mut held = Vec::new();
    let line = format!("X-Pad: {}\r\n", "b".repeat(1000));
    for _ in 0..200 {
        let mut stream = anonymous.connect(port).unwrap();
        stream.sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = stream.write_all(b"GET /puppet/v3/node/x HTTP/1.1\r\nHost: localhost\r\n");
        for _ in 0..390 {
            if stream.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
        let _ = stream.flush();
        held.push(stream);
    }
    let grown_mib = (rss_kib(pid).unwrap().saturating_sub(before)) / 1024;
    assert!(grown_mib < 24, "200 oversized heads grew the LB by {grown_mib} MiB");
    for mut stream in held {
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let text = String::from_utf8_lossy(&rest);
        assert!(rest.is_empty() || text.starts_with("HTTP/1.1 431"), "{text}");
    }
}

/// Holes: an absolute-form target naming another host was forwarded verbatim; a request with no
/// `Host`, or two, was forwarded; `CONNECT` and `TRACE` reached the backends.
#[test]
fn http11_is_enforced_at_the_edge() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let stub = StubBackend::start(Duration::ZERO);
    let cb =
        start(&fx, &format!("[lb.pools.compilers]\nmembers = [{{ url = \"{}\" }}]\n", stub.url()));
    let port = cb.lb_port();
    let anonymous = TlsClient::new(&fx.ca_bundle(), None);
    let raw = |text: String| anonymous.raw(port, text.as_bytes());
    let cases = [
        ("no Host", "GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(), 400),
        ("two Hosts", "GET /echo HTTP/1.1\r\nHost: localhost\r\nHost: evil.example.com\r\nConnection: close\r\n\r\n".to_owned(), 400),
        ("absolute-form for another host", "GET https://evil.example.com/echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_owned(), 400),
        ("CONNECT", "CONNECT evil.example.com:443 HTTP/1.1\r\nHost: evil.example.com:443\r\nConnection: close\r\n\r\n".to_owned(), 405),
        ("TRACE", "TRACE /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_owned(), 405),
    ];
    let served = stub.served();
    for (what, text, status) in cases {
        let reply = raw(text);
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        assert!(!reply.text().trim().is_empty(), "{what}: says why");
    }
    assert_eq!(stub.served(), served, "none of them reached the backend");
    // Absolute-form naming this LB is normalised to origin-form.
    let reply = raw(format!("GET https://localhost:{port}/echo HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"));
    assert_eq!(reply.status, 200);
    assert!(
        reply.text().starts_with("target: /echo\n"),
        "the backend saw origin-form: {}",
        reply.text()
    );
}

/// Hole: settings that `crossbar check` passed and then broke the LB, typos inside inline tables
/// silently ignored, and files `check` never looked at.
#[test]
fn check_refuses_what_serve_could_not_run() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let base = fx.single_node_config("false", "");
    let cases: Vec<(&str, String, &str)> = vec![
        ("zero reload interval", base.replace("tls_reload_interval = \"250ms\"", "tls_reload_interval = \"0s\""), "tls_reload_interval"),
        ("huge header_read", format!("{base}timeouts = {{ header_read = \"18446744073709551615s\" }}\n"), "timeouts.header_read"),
        ("huge idle_park", format!("{base}timeouts = {{ idle_park = \"100000000y\" }}\n"), "timeouts.idle_park"),
        ("typo in crl", base.replace(&format!("crl = \"{}\"", fx.crl().display()), "crl = { pool = \"ca\", refesh = \"2s\" }"), "refesh"),
        ("typo in autosign", base.replace("autosign = false", "autosign = { policy = \"/bin/true\", timout = \"5s\" }"), "timout"),
        ("typo in health", format!("{base}[lb.pools.compilers]\nmembers = [{{ url = \"http://127.0.0.1:1\" }}]\nhealth = {{ intervall = \"2s\" }}\n"), "intervall"),
        ("missing cert file", base.replace("puppetlb.example.com.pem", "missing.pem"), "missing.pem"),
        ("missing CA directory", base.replace(&format!("cadir = \"{}\"", fx.cadir.display()), "cadir = \"/nonexistent/ca\""), "/nonexistent/ca"),
        ("no connections allowed", base.replace("[lb]\n", "[lb]\nmax_connections = 0\n"), "max_connections"),
    ];
    for (what, config, key) in cases {
        let path = fx.dir().join("bad.toml");
        std::fs::write(&path, &config).unwrap();
        let (code, out, err) = crossbar(["check", "--config", path.to_str().unwrap()]);
        assert_ne!(code, 0, "{what}: check accepted it:\n{out}");
        assert!(err.contains(key), "{what}: the error names {key:?}: {err}");
    }
}

/// Hole: the CA believed `X-Client-*` headers from any local process (trusted_proxies =
/// loopback), so any local user could be a CA admin by talking to the CA port directly.
#[test]
fn a_local_process_cannot_pose_as_the_lb() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let cb = start(&fx, "");
    let ca = cb.ca.unwrap();
    let mut stream = TcpStream::connect(ca).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let spoofed = format!("GET /puppet-ca/v1/certificate_statuses/all HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nX-Client-Verify: SUCCESS\r\nX-Client-DN: CN={ADMIN_NAME}\r\nConnection: close\r\n\r\n");
    stream.write_all(spoofed.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 403"), "a spoofed admin on the CA port: {reply}");
    // The real LB's admin still is one.
    let admin = TlsClient::new(&fx.ca_bundle(), Some((&fx.cert(ADMIN_NAME), &fx.key(ADMIN_NAME))));
    let listed = admin.raw(
        cb.lb_port(),
        &request(
            "GET",
            "/puppet-ca/v1/certificate_statuses/all",
            &[("Accept", "application/json")],
            b"",
        ),
    );
    assert_eq!(listed.status, 200, "{}", listed.text());
}

/// Hole: running out of file descriptors made the accept loop spin a core.
#[test]
fn accept_errors_back_off_instead_of_spinning() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let stub = StubBackend::start(Duration::ZERO);
    let config = fx.single_node_config(
        "false",
        &format!("admin_listen = \"127.0.0.1:0\"\n[lb.pools.compilers]\nmembers = [{{ url = \"{}\" }}]\n", stub.url()),
    );
    let path = fx.dir().join("fds.toml");
    std::fs::write(&path, &config).unwrap();
    let mut command = std::process::Command::new("prlimit");
    command.args(["--nofile=96:96", "--"]).arg(bin()).args(["serve", "--config"]).arg(&path);
    let mut child = testkit::process::ChildGuard::spawn("crossbar-fds", command, fx.dir());
    let lb_line = child.wait_for_stdout("lb listening on", Duration::from_secs(30));
    let admin_line = child.wait_for_stdout("admin listening on", Duration::from_secs(30));
    let addr = |line: &str| {
        line.rsplit("://").next().unwrap().trim().parse::<std::net::SocketAddr>().unwrap()
    };
    let (lb, admin) = (addr(&lb_line), addr(&admin_line));
    // More connections than descriptors: the rest wait in the kernel's backlog.
    let held: Vec<TcpStream> = (0..200).filter_map(|_| TcpStream::connect(lb).ok()).collect();
    assert!(held.len() > 120, "connections queued: {}", held.len());
    wait::until_true("the accept failure to be logged", Duration::from_secs(20), || {
        child.stderr().contains("accept failed")
    });
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
    };
    let (cpu_before, t0) = (cpu(child.id()), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let share = (cpu(child.id()) - cpu_before) / t0.elapsed().as_secs_f64();
    assert!(share < 0.25, "the LB used {:.0}% of a core while out of descriptors", share * 100.0);
    // Descriptors back: the admin listener answers, and the errors were counted.
    drop(held);
    let errors = wait::until("the metrics to show accept errors", Duration::from_secs(30), || {
        let (_, body) = http(admin, "GET", "/metrics", b"").ok()?;
        let text = String::from_utf8_lossy(&body).into_owned();
        let line = text.lines().find(|l| l.starts_with("crossbar_accept_errors_total"))?.to_owned();
        let count: u64 = line.rsplit(' ').next()?.parse().ok()?;
        (count > 0).then_some(count)
    });
    assert!(errors > 0);
}
