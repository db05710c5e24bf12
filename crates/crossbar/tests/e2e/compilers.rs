//! The seed's topology with real pieces: two real puppetserver 7 compilers, a crossbar CA pair
//! (primary and hot standby) on one CA directory, a crossbar LB in its own process pulling the
//! CRL from the CA pool, and real Puppet 7 agents. One test, because the JVMs start once: each
//! step is a scenario of issue 3.

use std::{collections::BTreeSet, path::Path, process::Output, time::Duration};

use pki::KeyAlgorithm;
use testkit::{
    compiler::Compiler,
    fixture::{http, CaFixture, Crossbar, LB_NAME},
    puppet::{output_text, Agent},
    tls::{request, TlsClient},
    wait,
};

use super::{bin, crossbar};

/// The secret the LB proves itself to the CAs with (`proxy_secret_file` on both sides).
fn secret_file(fx: &CaFixture) -> std::path::PathBuf {
    let path = fx.dir().join("proxy-secret");
    std::fs::write(&path, "e2e-compilers-lb-secret-0123456789\n").unwrap();
    path
}

fn ca_only(fx: &CaFixture) -> String {
    format!(
        "[ca]\nlisten = \"127.0.0.1:0\"\ncadir = \"{}\"\nautosign = true\nproxy_secret_file = \"{}\"\n",
        fx.cadir.display(),
        secret_file(fx).display()
    )
}

fn lb_only(fx: &CaFixture, cas: [&Crossbar; 2], compilers: [&Compiler; 2]) -> String {
    format!(
        r#"[lb]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
client_ca = "{bundle}"
crl = {{ pool = "ca", refresh = "1s", cache = "{cache}" }}

[lb.pools.ca]
health = {{ interval = "500ms" }}
proxy_secret_file = "{secret}"
members = [ {{ url = "http://{ca1}" }}, {{ url = "http://{ca2}", standby = true }} ]

[lb.pools.compilers]
balance = "least-requests"
health = {{ interval = "500ms", rise = 2, fall = 2 }}
members = [ {{ url = "{c1}", max_in_flight = 1 }}, {{ url = "{c2}", max_in_flight = 1 }} ]
"#,
        cert = fx.cert(LB_NAME).display(),
        key = fx.key(LB_NAME).display(),
        bundle = fx.ca_bundle().display(),
        cache = fx.dir().join("lb-crl.pem").display(),
        secret = secret_file(fx).display(),
        ca1 = cas[0].ca.unwrap(),
        ca2 = cas[1].ca.unwrap(),
        c1 = compilers[0].url(),
        c2 = compilers[1].url(),
    )
}

/// A successful `puppet agent -t` exits 0 (no changes) or 2 (changes applied).
fn succeeded(out: &Output) -> bool {
    matches!(out.status.code(), Some(0 | 2))
}

/// Which compiler compiled the catalog, from the run's output.
fn compiled_by(out: &Output) -> Option<String> {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split("compiled by ").nth(1))
        .map(|s| s.split(['\u{1b}', '\'']).next().unwrap_or(s).trim().to_owned())
}

fn member_healthy(lb: &Crossbar, pool: &str, url: &str) -> bool {
    let Ok((200, body)) = http(lb.admin.unwrap(), "GET", "/pools", b"") else { return false };
    let pools: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    pools
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == pool)
        .flat_map(|p| p["members"].as_array().cloned().unwrap_or_default())
        .any(|m| m["url"] == url && m["healthy"] == true)
}

#[test]
fn real_compilers_and_a_ca_pair_behind_crossbar() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let root = fx.dir();
    let mut c1 = Compiler::start(root, "compiler1.example.com");
    let mut c2 = Compiler::start(root, "compiler2.example.com");
    let mut ca1 = Crossbar::start(bin(), root, "ca-primary", &ca_only(&fx));
    let ca2 = Crossbar::start(bin(), root, "ca-standby", &ca_only(&fx));
    c1.wait_ready();
    c2.wait_ready();
    let lb = Crossbar::start(bin(), root, "lb", &lb_only(&fx, [&ca1, &ca2], [&c1, &c2]));
    let port = lb.lb_port();

    first_run_carries_trusted_facts(&fx, root, port);
    spoofed_headers_reach_compilers_as_none(&fx, port);
    let (web1, web2) = (Agent::new(root, "web1.example.com"), Agent::new(root, "web2.example.com"));
    a_dying_compiler_fails_no_run(&lb, &mut c1, &web1, &web2, port);
    the_standby_ca_takes_over(&fx, &lb, &mut ca1, root, port);
    revocation_reaches_the_lb_within_its_refresh(&fx, &web1, &web2, port);
    the_simulator_drives_real_compilers(&fx, root, port);

    let (rss, peak) = testkit::process::memory_kib(lb.child.id()).unwrap();
    eprintln!("LB memory after the e2e load: {} KiB resident, {} KiB peak", rss, peak);
    drop(ca2);
}

/// A first run through the LB: bootstrap, pluginsync, catalog, report; `pp_role` from
/// `csr_attributes.yaml` reaches the catalog through `X-Client-Cert`.
fn first_run_carries_trusted_facts(fx: &CaFixture, root: &Path, port: u16) {
    let agent = Agent::new(root, "role.example.com");
    agent.csr_attributes("extension_requests:\n  pp_role: web\n");
    let out = agent.run(port);
    assert!(succeeded(&out), "first run: {}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pp_role web"), "trusted facts arrived: {text}");
    assert!(compiled_by(&out).is_some_and(|c| c.starts_with("compiler")), "{text}");
    let reports: Vec<_> = ["compiler1.example.com", "compiler2.example.com"]
        .iter()
        .flat_map(|c| {
            std::fs::read_dir(root.join(c).join("var/reports/role.example.com"))
                .into_iter()
                .flatten()
        })
        .collect();
    assert!(!reports.is_empty(), "the report was stored by a compiler");
    let _ = fx;
}

/// A client without a certificate that claims an identity is seen by the compiler as
/// unauthenticated: puppetserver's own auth.conf refuses it.
fn spoofed_headers_reach_compilers_as_none(fx: &CaFixture, port: u16) {
    let anonymous = TlsClient::new(&fx.ca_bundle(), None);
    let spoof = [
        ("X-Client-Verify", "SUCCESS"),
        ("X-Client-DN", "CN=role.example.com"),
        ("x_client_verify", "SUCCESS"),
    ];
    let reply = anonymous.raw(
        port,
        &request("GET", "/puppet/v3/node/role.example.com?environment=production", &spoof, b""),
    );
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.text().contains("Forbidden request"), "puppetserver's refusal: {}", reply.text());
}

/// One compiler is killed (`kill -9`) during a loop of agent runs: no run fails; restarted, it
/// serves again.
fn a_dying_compiler_fails_no_run(
    lb: &Crossbar,
    c1: &mut Compiler,
    web1: &Agent,
    web2: &Agent,
    port: u16,
) {
    for agent in [web1, web2] {
        assert!(succeeded(&agent.run(port)), "warm-up run of {}", agent.certname);
    }
    let loop_agents = std::thread::scope(|scope| {
        let runs = scope
            .spawn(|| (0..3).flat_map(|_| [web1.run(port), web2.run(port)]).collect::<Vec<_>>());
        // The warm-up runs logged two catalog requests; the third is the loop's first run.
        wait::until_true("the loop's first catalog", Duration::from_secs(60), || {
            lb.child.stderr().matches("catalog/web").count() >= 3
        });
        c1.kill();
        runs.join().unwrap()
    });
    for out in &loop_agents {
        assert!(succeeded(out), "a run failed while a compiler died: {}", output_text(out));
    }
    let by: BTreeSet<String> = loop_agents.iter().filter_map(compiled_by).collect();
    assert!(by.contains("compiler2.example.com"), "the survivor served: {by:?}");
    assert!(!member_healthy(lb, "compilers", &c1.url()), "the dead compiler is out of rotation");
    let log = lb.child.stderr();
    let noticed = log.lines().any(|l| {
        (l.contains("member ejected") || l.contains("member is down")) && l.contains(&c1.url())
    });
    assert!(noticed, "the LB saw compiler1 fail");

    c1.restart();
    wait::until_true(
        "compiler1 to rejoin after its health checks",
        Duration::from_secs(60),
        || member_healthy(lb, "compilers", &c1.url()),
    );
    let served_again =
        (0..6).map(|i| if i % 2 == 0 { web1.run(port) } else { web2.run(port) }).any(|out| {
            assert!(succeeded(&out), "{}", output_text(&out));
            compiled_by(&out).as_deref() == Some("compiler1.example.com")
        });
    assert!(served_again, "the restarted compiler serves again");
}

/// The CA primary dies: CSRs and signing go on through the hot standby, on the same
/// directory, with no serial lost from the inventory or given twice.
fn the_standby_ca_takes_over(
    fx: &CaFixture,
    lb: &Crossbar,
    ca1: &mut Crossbar,
    root: &Path,
    port: u16,
) {
    let primary = format!("http://{}", ca1.ca.expect("the primary serves a CA"));
    ca1.child.kill();
    for name in ["new1.example.com", "new2.example.com"] {
        let agent = Agent::new(root, name);
        let out = agent.bootstrap(port);
        assert!(out.status.success(), "bootstrap through the standby CA: {}", output_text(&out));
    }
    // Whichever sees it first, a health check ("member is down") or a refused forward
    // ("member ejected"), takes the primary out of rotation.
    assert!(!member_healthy(lb, "ca", &primary), "the dead primary is out of rotation");
    let noticed = lb.child.stderr().lines().any(|l| {
        (l.contains("member ejected") || l.contains("member is down")) && l.contains(&primary)
    });
    assert!(noticed, "the LB logged the primary's failure");
    let inventory = std::fs::read_to_string(fx.cadir.join("inventory.txt")).unwrap();
    let serials: Vec<u128> = pki::inventory::parse(&inventory).map(|e| e.serial.value()).collect();
    let unique: BTreeSet<u128> = serials.iter().copied().collect();
    assert_eq!(unique.len(), serials.len(), "no serial given twice: {serials:?}");
    let signed = std::fs::read_dir(fx.cadir.join("signed"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pem"))
        .count();
    assert_eq!(
        signed + 1,
        serials.len(),
        "every certificate (and the CA's own) is in the inventory"
    );
}

/// An agent revoked: within the LB's CRL refresh its next run is refused at the LB, while the
/// other agents pass.
fn revocation_reaches_the_lb_within_its_refresh(
    fx: &CaFixture,
    web1: &Agent,
    web2: &Agent,
    port: u16,
) {
    let (code, out, err) = crossbar([
        "ca",
        "revoke",
        "--certname",
        "web2.example.com",
        "--cadir",
        fx.cadir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let as_web2 = TlsClient::new(&fx.ca_bundle(), Some((&web2.cert(), &web2.key())));
    wait::until_true("the LB to pull the CRL and refuse web2", Duration::from_secs(15), || {
        as_web2.handshake_and_request(port, "/status/v1/simple").is_err()
    });
    let refused = web2.run(port);
    assert!(!succeeded(&refused), "the revoked agent's run fails: {}", output_text(&refused));
    assert!(succeeded(&web1.run(port)), "the others still pass");
}

/// `crossbar sim` works against real compilers, not only the stub: Puppet runs of simulated
/// agents (identities issued from the CA directory) through the LB, each request of the run
/// answered by puppetserver with a success.
fn the_simulator_drives_real_compilers(fx: &CaFixture, root: &Path, port: u16) {
    let certs = root.join("sim-agents");
    let path = |p: &Path| p.display().to_string();
    let (code, out, err) = crossbar([
        "sim",
        "certs",
        "--cadir",
        &path(&fx.cadir),
        "--out",
        &path(&certs),
        "--agents",
        "2",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let json = root.join("sim-runs.json");
    let (code, out, err) = crossbar([
        "sim",
        "runs",
        "--lb",
        &format!("127.0.0.1:{port}"),
        "--certs",
        &path(&certs),
        "--agents",
        "2",
        "--duration",
        "10s",
        "--json",
        &path(&json),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report["runs"].as_u64().is_some_and(|runs| runs >= 2), "{report}");
    assert_eq!(report["runs_failed"], 0, "{report}");
    assert_eq!(report["requests_failed"], 0, "{report}");
}
