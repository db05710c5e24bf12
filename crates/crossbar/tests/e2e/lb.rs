//! The load balancer against stub backends (test doubles, for behaviour of the LB itself):
//! header policy as the backend sees it, overload shedding, ejection and health, admin,
//! reload and drain. The same behaviour with real puppetserver compilers is in `compilers.rs`.

use std::{
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use pki::KeyAlgorithm;
use testkit::{
    fixture::{admin_token, http, http_with, CaFixture, Crossbar, ADMIN_NAME},
    stub::StubBackend,
    tls::{request, Reply, TlsClient},
    wait,
};

use super::bin;

fn start(fx: &CaFixture, extra_lb: &str) -> Crossbar {
    let extra = format!("admin_listen = \"127.0.0.1:0\"\n{extra_lb}");
    Crossbar::start(bin(), fx.dir(), "crossbar", &fx.single_node_config("true", &extra))
}

fn admin_get(cb: &Crossbar, path: &str) -> (u16, String) {
    let (status, body) = http(cb.admin.unwrap(), "GET", path, b"").unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get(client: &TlsClient, cb: &Crossbar, path: &str, headers: &[(&str, &str)]) -> Reply {
    client.raw(cb.lb_port(), &request("GET", path, headers, b""))
}

fn served_by(reply: &Reply) -> String {
    reply.header("x-stub").unwrap_or("-").to_owned()
}

#[test]
fn backends_see_identity_from_tls_never_from_the_client() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let stub = StubBackend::start(Duration::ZERO);
    let cb =
        start(&fx, &format!("[lb.pools.compilers]\nmembers = [{{ url = \"{}\" }}]\n", stub.url()));
    let spoof = [
        ("X-Client-Verify", "SUCCESS"),
        ("x-client-verify", "SUCCESS"),
        ("X-CLIENT-DN", "CN=admin.example.com"),
        ("X_Client_Verify", "SUCCESS"),
        ("X-Client-Cert", "-----BEGIN%20CERTIFICATE-----"),
        ("X-Puppet-Version", "7.23.0"),
    ];
    let anonymous = TlsClient::new(&fx.ca_bundle(), None);
    let seen = get(&anonymous, &cb, "/echo", &spoof).text().to_ascii_lowercase();
    let identity: Vec<&str> =
        seen.lines().filter(|l| l.starts_with("x-client") || l.starts_with("x_client")).collect();
    assert_eq!(identity, ["x-client-verify: none"], "backend saw: {seen}");
    assert!(seen.contains("x-puppet-version: 7.23.0"), "X-Puppet-Version passes through: {seen}");
    assert!(
        seen.contains("x-forwarded-for: 127.0.0.1") && seen.contains("x-forwarded-proto: https"),
        "{seen}"
    );

    let admin = TlsClient::new(&fx.ca_bundle(), Some((&fx.cert(ADMIN_NAME), &fx.key(ADMIN_NAME))));
    let seen = get(&admin, &cb, "/echo", &spoof).text();
    let lines: Vec<&str> =
        seen.lines().filter(|l| l.to_ascii_lowercase().starts_with("x-client")).collect();
    assert_eq!(lines.len(), 3, "one copy of each: {lines:?}");
    assert!(lines.contains(&"x-client-verify: SUCCESS"));
    assert!(lines.contains(&"x-client-dn: CN=admin.example.com"));
    let cert_header = lines.iter().find_map(|l| l.strip_prefix("x-client-cert: ")).unwrap();
    let decoded: Vec<u8> = percent_decode(cert_header);
    assert_eq!(
        decoded,
        std::fs::read(fx.cert(ADMIN_NAME)).unwrap(),
        "X-Client-Cert is the URL-encoded PEM the client presented"
    );
    assert!(
        !cert_header.contains(' ') && !cert_header.contains('\n') && !cert_header.contains('+')
    );
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn overload_is_shed_with_retry_after_and_nothing_hangs() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let slow = StubBackend::start(Duration::from_millis(800));
    let pool = format!(
        "[lb.pools.compilers]\nmembers = [{{ url = \"{}\", max_in_flight = 1 }}]\nqueue = {{ max = 2, timeout = \"1s\" }}\nretry_after = {{ min = \"5s\", max = \"15s\" }}\n",
        slow.url()
    );
    let cb = Arc::new(start(&fx, &pool));
    let client = Arc::new(TlsClient::new(&fx.ca_bundle(), None));
    let replies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (cb, client, replies) = (cb.clone(), client.clone(), replies.clone());
            std::thread::spawn(move || {
                let reply = get(&client, &cb, "/puppet/v3/catalog/x", &[]);
                replies
                    .lock()
                    .unwrap()
                    .push((reply.status, reply.header("retry-after").map(str::to_owned)));
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(10), "every request was answered promptly");
    let replies = replies.lock().unwrap();
    let ok = replies.iter().filter(|(s, _)| *s == 200).count();
    let shed: Vec<&Option<String>> =
        replies.iter().filter(|(s, _)| *s == 503).map(|(_, ra)| ra).collect();
    assert_eq!(ok + shed.len(), 8, "{replies:?}");
    assert!(
        ok >= 1 && shed.len() >= 4,
        "a full member with a queue of 2 sheds most of 8: {replies:?}"
    );
    for retry_after in shed {
        let seconds: u64 = retry_after.as_deref().unwrap().parse().unwrap();
        assert!((5..=15).contains(&seconds), "jittered Retry-After within the range: {seconds}");
    }
    assert_eq!(slow.max_in_flight(), 1, "max_in_flight is never exceeded");
    let (_, metrics) = admin_get(&cb, "/metrics");
    assert!(
        metrics.contains("crossbar_shed_total{pool=\"compilers\",reason=\"queue_full\"}"),
        "{metrics}"
    );
}

#[test]
fn a_refusing_member_is_ejected_and_a_sick_one_leaves_and_rejoins_by_health_checks() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let dead: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let a = StubBackend::start(Duration::ZERO);
    let b = StubBackend::start(Duration::ZERO);
    let pool = format!(
        "[lb.pools.compilers]\nbalance = \"round-robin\"\nhealth = {{ interval = \"200ms\", timeout = \"1s\", rise = 2, fall = 2 }}\nmembers = [{{ url = \"http://{dead}\" }}, {{ url = \"{}\" }}, {{ url = \"{}\" }}]\n",
        a.url(),
        b.url()
    );
    let cb = start(&fx, &pool);
    let client = TlsClient::new(&fx.ca_bundle(), None);
    for _ in 0..12 {
        let reply = get(&client, &cb, "/puppet/v3/node/x", &[]);
        assert_eq!(
            reply.status,
            200,
            "a refused connection is retried on another member: {}",
            reply.text()
        );
    }
    let (_, pools) = admin_get(&cb, "/pools");
    let pools: serde_json::Value = serde_json::from_str(&pools).unwrap();
    let members =
        &pools.as_array().unwrap().iter().find(|p| p["name"] == "compilers").unwrap()["members"];
    assert_eq!(members[0]["healthy"], false, "the refusing member is out: {members}");

    b.set_healthy(false);
    wait::until_true("b to be taken out by its health checks", Duration::from_secs(10), || {
        member_health(&cb, 2) == Some(false)
    });
    let before = b.served();
    for _ in 0..6 {
        assert_eq!(served_by(&get(&client, &cb, "/puppet/v3/node/x", &[])), a.addr.to_string());
    }
    assert_eq!(b.served(), before, "an unhealthy member gets nothing");
    b.set_healthy(true);
    wait::until_true("b to rejoin after rise checks", Duration::from_secs(10), || {
        member_health(&cb, 2) == Some(true)
    });
    let by: Vec<String> =
        (0..6).map(|_| served_by(&get(&client, &cb, "/puppet/v3/node/x", &[]))).collect();
    assert!(by.contains(&b.addr.to_string()), "b serves again: {by:?}");
    let (status, text) = admin_get(&cb, "/healthz");
    assert_eq!(status, 200, "{text}");
}

fn member_health(cb: &Crossbar, index: usize) -> Option<bool> {
    let (_, pools) = admin_get(cb, "/pools");
    let pools: serde_json::Value = serde_json::from_str(&pools).ok()?;
    let pool = pools.as_array()?.iter().find(|p| p["name"] == "compilers")?;
    pool["members"][index]["healthy"].as_bool()
}

#[test]
fn operators_drain_and_enable_members_and_readyz_follows_while_healthz_stays() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let a = StubBackend::start(Duration::ZERO);
    let b = StubBackend::start(Duration::ZERO);
    let (token_line, token) = admin_token(fx.dir());
    let pool = format!("{token_line}\n[lb.pools.compilers]\nbalance = \"round-robin\"\nmembers = [{{ url = \"{}\" }}, {{ url = \"{}\" }}]\n", a.url(), b.url());
    let cb = start(&fx, &pool);
    let client = TlsClient::new(&fx.ca_bundle(), None);
    let bearer = format!("Bearer {token}");
    let admin = |path: &str| {
        let (status, body) =
            http_with(cb.admin.unwrap(), "POST", path, &[("Authorization", &bearer)], b"").unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    // Without the token, or with a wrong one, nothing changes.
    let (status, body) =
        http(cb.admin.unwrap(), "POST", "/pools/compilers/members/0/drain", b"").unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let wrong = [("Authorization", "Bearer 00000000000000000000000000000000")];
    let (status, _) =
        http_with(cb.admin.unwrap(), "POST", "/pools/compilers/members/0/drain", &wrong, b"")
            .unwrap();
    assert_eq!(status, 401);
    let (by_a, by_b) = (0..4).fold((0, 0), |(x, y), _| {
        let by = served_by(&get(&client, &cb, "/x", &[]));
        (x + usize::from(by == a.addr.to_string()), y + usize::from(by == b.addr.to_string()))
    });
    assert_eq!((by_a, by_b), (2, 2), "both still serve after refused drains");
    let (status, body) = admin("/pools/compilers/members/0/drain");
    assert_eq!(status, 200, "{body}");
    for _ in 0..4 {
        assert_eq!(served_by(&get(&client, &cb, "/x", &[])), b.addr.to_string());
    }
    admin("/pools/compilers/members/1/drain");
    let reply = get(&client, &cb, "/x", &[]);
    assert_eq!(reply.status, 503, "nothing left to serve: {}", reply.text());
    assert!(reply.header("retry-after").is_some());
    let (status, text) = admin_get(&cb, "/readyz");
    assert_eq!((status, text.trim()), (503, "pool compilers: no healthy member"));
    // The backends are the other LB's too: moving the VIP would not help, so /healthz, which
    // keepalived tracks, stays up.
    assert_eq!(admin_get(&cb, "/healthz"), (200, "ok\n".to_owned()));
    admin("/pools/compilers/members/0/enable");
    assert_eq!(served_by(&get(&client, &cb, "/x", &[])), a.addr.to_string());
    assert_eq!(admin_get(&cb, "/readyz").0, 200);
    assert_eq!(admin("/pools/compilers/members/9/drain").0, 404);
    // Every action is on the page's record, with its operator.
    let (_, state) = admin_get(&cb, "/api/state");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let actions: Vec<String> = state["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {} {}",
                a["operator"].as_str().unwrap(),
                a["action"].as_str().unwrap(),
                a["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            format!("{ADMIN_NAME} drain no such member"),
            format!("{ADMIN_NAME} enable done"),
            format!("{ADMIN_NAME} drain done"),
            format!("{ADMIN_NAME} drain done"),
        ]
    );
}

#[test]
fn sighup_reloads_and_a_bad_config_keeps_the_running_one() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let a = StubBackend::start(Duration::ZERO);
    let b = StubBackend::start(Duration::ZERO);
    let cb =
        start(&fx, &format!("[lb.pools.compilers]\nmembers = [{{ url = \"{}\" }}]\n", a.url()));
    let client = TlsClient::new(&fx.ca_bundle(), None);
    assert_eq!(served_by(&get(&client, &cb, "/x", &[])), a.addr.to_string());

    let config_path = fx.dir().join("crossbar.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, config.replace(&a.url(), &b.url())).unwrap();
    cb.child.signal("HUP");
    wait::until_true("the reload to send requests to b", Duration::from_secs(10), || {
        served_by(&get(&client, &cb, "/x", &[])) == b.addr.to_string()
    });

    std::fs::write(&config_path, "[lb]\nlisten = 42\n").unwrap();
    cb.child.signal("HUP");
    wait::until_true("the bad reload to be refused", Duration::from_secs(10), || {
        cb.child.stderr().contains("the new configuration is invalid; keeping the running one")
    });
    assert_eq!(served_by(&get(&client, &cb, "/x", &[])), b.addr.to_string());
}

#[test]
fn sigterm_stops_accepting_and_lets_in_flight_requests_finish() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let slow = StubBackend::start(Duration::from_millis(1500));
    let mut cb =
        start(&fx, &format!("[lb.pools.compilers]\nmembers = [{{ url = \"{}\" }}]\n", slow.url()));
    let port = cb.lb_port();
    let client = Arc::new(TlsClient::new(&fx.ca_bundle(), None));
    let in_flight = {
        let client = client.clone();
        std::thread::spawn(move || client.raw(port, &request("GET", "/slow", &[], b"")))
    };
    wait::until_true("the request to reach the backend", Duration::from_secs(10), || {
        slow.max_in_flight() == 1
    });
    cb.child.signal("TERM");
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "the in-flight request finished: {}", reply.text());
    assert_eq!(cb.child.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(client.connect(port).is_err(), "nothing listens any more");
}

#[test]
fn a_live_connection_is_closed_when_its_certificate_is_revoked() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    fx.issue("agent9.example.com", vec![], false);
    let stub = StubBackend::start(Duration::ZERO);
    let cb =
        start(&fx, &format!("[lb.pools.compilers]\nmembers = [{{ url = \"{}\" }}]\n", stub.url()));
    let agent = TlsClient::new(
        &fx.ca_bundle(),
        Some((&fx.cert("agent9.example.com"), &fx.key("agent9.example.com"))),
    );
    let mut live = agent.connect(cb.lb_port()).unwrap();
    assert_eq!(
        testkit::tls::exchange(&mut live, &testkit::tls::keepalive_get("/x")).unwrap().status,
        200
    );

    let (code, out, err) = super::crossbar([
        "ca",
        "revoke",
        "--certname",
        "agent9.example.com",
        "--cadir",
        fx.cadir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    wait::until_true(
        "the LB to close the revoked client's live connection",
        Duration::from_secs(15),
        || testkit::tls::exchange(&mut live, &testkit::tls::keepalive_get("/x")).is_err(),
    );
    assert!(cb
        .child
        .stderr()
        .contains("closing a live connection: its client certificate is now revoked"));
    let (_, metrics) = admin_get(&cb, "/metrics");
    assert!(metrics.contains("crossbar_connections_closed_revoked_total 1"), "{metrics}");
    assert!(
        agent.handshake_and_request(cb.lb_port(), "/x").is_err(),
        "and a new handshake is refused"
    );
    // The LB counts the failure after it has sent the alert the client already read.
    wait::until_true("the refused handshake to be counted", Duration::from_secs(10), || {
        admin_get(&cb, "/metrics")
            .1
            .contains("crossbar_tls_handshake_failures_total{reason=\"revoked\"} 1")
    });
}

/// The gauge of connections parked between requests, from `/metrics`.
fn idle_connections(cb: &Crossbar) -> String {
    let (_, metrics) = admin_get(cb, "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("crossbar_connections_idle "))
        .unwrap_or("missing")
        .to_owned()
}

/// An LB that parks connections as soon as they are idle, in front of one stub.
fn start_parking(fx: &CaFixture, stub: &StubBackend, idle_park: &str) -> Crossbar {
    start(
        fx,
        &format!(
            "timeouts = {{ idle_park = \"{idle_park}\" }}\n[lb.pools.compilers]\nmembers = [{{ url = \"{}\" }}]\n",
            stub.url()
        ),
    )
}

#[test]
fn idle_connections_are_parked_between_requests_and_keep_serving() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let stub = StubBackend::start(Duration::ZERO);
    let cb = start_parking(&fx, &stub, "0s");
    let client = TlsClient::new(&fx.ca_bundle(), None);
    let mut live = client.connect(cb.lb_port()).unwrap();
    let numbered = |n: u32| format!("GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Seq: {n}\r\n\r\n");
    let answered = |reply: &Reply, n: u32| {
        reply.status == 200 && reply.text().to_ascii_lowercase().contains(&format!("x-seq: {n}"))
    };

    let first = testkit::tls::exchange(&mut live, numbered(1).as_bytes()).unwrap();
    assert!(answered(&first, 1), "{}", first.text());
    wait::until_true("the answered connection to be parked", Duration::from_secs(10), || {
        idle_connections(&cb) == "1"
    });

    // A parked connection wakes on its next bytes, including a head sent in two writes.
    let head = numbered(2);
    let (start, rest) = head.split_at(10);
    live.write_all(start.as_bytes()).unwrap();
    live.flush().unwrap();
    let second = testkit::tls::exchange(&mut live, rest.as_bytes()).unwrap();
    assert!(answered(&second, 2), "{}", second.text());

    // Pipelined requests, the last one cut short: hyper has read its start when it goes idle
    // after the fourth answer, and must get those bytes back when the rest arrives.
    let fifth_head = numbered(5);
    let (fifth_start, fifth_rest) = fifth_head.split_at(10);
    let pipelined = [numbered(3).as_str(), numbered(4).as_str(), fifth_start].concat();
    let third = testkit::tls::exchange(&mut live, pipelined.as_bytes()).unwrap();
    let fourth = testkit::tls::read_reply(&mut live).unwrap();
    assert!(answered(&third, 3) && answered(&fourth, 4));
    let fifth = testkit::tls::exchange(&mut live, fifth_rest.as_bytes()).unwrap();
    assert!(answered(&fifth, 5), "{}", fifth.text());

    // A request with a body, then the connection parks again.
    let post =
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nX-Seq: 6\r\nContent-Length: 5\r\n\r\nhello";
    let sixth = testkit::tls::exchange(&mut live, post.as_bytes()).unwrap();
    assert!(answered(&sixth, 6), "{}", sixth.text());
    wait::until_true("the connection to be parked again", Duration::from_secs(10), || {
        idle_connections(&cb) == "1"
    });

    drop(live);
    wait::until_true("the closed connection to be let go", Duration::from_secs(10), || {
        let (_, metrics) = admin_get(&cb, "/metrics");
        idle_connections(&cb) == "0" && metrics.contains("crossbar_connections_open 0")
    });
}

#[test]
fn a_connection_is_parked_only_after_it_has_been_idle_for_idle_park() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let stub = StubBackend::start(Duration::ZERO);
    let cb = start_parking(&fx, &stub, "3s");
    let client = TlsClient::new(&fx.ca_bundle(), None);
    let mut live = client.connect(cb.lb_port()).unwrap();
    let started = Instant::now();
    let reply = testkit::tls::exchange(&mut live, &testkit::tls::keepalive_get("/x")).unwrap();
    assert_eq!(reply.status, 200);
    let early = idle_connections(&cb);
    // Only meaningful if this thread was not stalled for the whole delay.
    if started.elapsed() < Duration::from_secs(2) {
        assert_eq!(early, "0", "parked before idle_park had passed");
    }
    wait::until_true("the idle connection to be parked", Duration::from_secs(15), || {
        idle_connections(&cb) == "1"
    });
    assert!(started.elapsed() >= Duration::from_secs(3), "parked after {:?}", started.elapsed());
    let reply = testkit::tls::exchange(&mut live, &testkit::tls::keepalive_get("/x")).unwrap();
    assert_eq!(reply.status, 200, "and it serves again once woken");
}

#[test]
fn the_environment_parameter_routes_to_a_canary_pool() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let production = StubBackend::start(Duration::ZERO);
    let canary = StubBackend::start(Duration::ZERO);
    let config = format!(
        "[lb.pools.compilers]\nmembers = [{{ url = \"{}\" }}]\n[lb.pools.canary]\nmembers = [{{ url = \"{}\" }}]\n[[lb.routes]]\nenvironment = \"canary\"\npool = \"canary\"\n",
        production.url(),
        canary.url()
    );
    let cb = start(&fx, &config);
    let client = TlsClient::new(&fx.ca_bundle(), None);
    let cases = [
        ("/puppet/v3/catalog/a?environment=canary", canary.addr.to_string()),
        (
            "/puppet/v3/file_metadatas/plugins?recurse=false&environment=canary",
            canary.addr.to_string(),
        ),
        ("/puppet/v3/catalog/a?environment=production", production.addr.to_string()),
        ("/puppet/v3/catalog/a?configured_environment=canary", production.addr.to_string()),
    ];
    for (path, expected) in cases {
        assert_eq!(served_by(&get(&client, &cb, path, &[])), expected, "{path}");
    }
    let ca = get(&client, &cb, "/puppet-ca/v1/certificate/ca?environment=canary", &[]);
    assert!(
        ca.status == 200 && ca.text().contains("BEGIN CERTIFICATE"),
        "CA traffic still goes to the CA"
    );
    assert!(
        cb.child.stderr().contains("route=environment=canary pool=canary"),
        "the access log names the route"
    );
}

/// `timeouts.handshake` is how long a client may keep the LB waiting in the handshake: a
/// client that sends nothing is cut off after it, and one that drips its ClientHello a byte at
/// a time (never waiting that long, never finishing) is cut off by the hard cap of six
/// timeouts. (A busy LB's own slowness is never held against a client: the herd benchmark.)
#[test]
fn a_silent_or_dripping_handshake_is_cut_off() {
    use std::io::Read;
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let cb = start(&fx, "[lb.timeouts]\nhandshake = \"1s\"\n");
    let addr = SocketAddr::from(([127, 0, 0, 1], cb.lb_port()));
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    let closed = silent.read(&mut [0u8; 1]);
    let took = started.elapsed();
    assert!(matches!(closed, Ok(0) | Err(_)), "the LB closes a silent client: {closed:?}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&took),
        "cut after the 1 s timeout, took {took:?}"
    );

    // A ClientHello's record header and the start of its body, then zeros, a byte every 400 ms.
    let mut drip = std::net::TcpStream::connect(addr).unwrap();
    let hello = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    let started = Instant::now();
    let mut sent = 0usize;
    let cut = loop {
        let byte = hello.get(sent).copied().unwrap_or(0);
        if drip.write_all(&[byte]).is_err() {
            break started.elapsed();
        }
        sent += 1;
        assert!(started.elapsed() < Duration::from_secs(20), "a dripping handshake was never cut");
        std::thread::sleep(Duration::from_millis(400)); // the attacker's pace, not a wait for the LB
    };
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(9)).contains(&cut),
        "cut by the 6 s cap (six 1 s timeouts), after {cut:?} and {sent} bytes"
    );
}
