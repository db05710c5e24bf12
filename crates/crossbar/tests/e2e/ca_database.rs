//! The CA's state in PostgreSQL, end to end: two crossbar CA nodes active/active on one real
//! PostgreSQL behind a crossbar LB, under a bootstrap storm from `crossbar sim bootstrap` while
//! a node is killed, while the database is stopped, and while the primary fails over to a
//! promoted replica; a revocation on one node refused at another LB; real Puppet 7 agents,
//! compiler and `puppetserver ca` CLI; and the CA moved out to a real puppetserver and back.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use testkit::{
    compiler::Compiler,
    fixture::{http, Crossbar, ADMIN_NAME, LB_NAME},
    postgres::Postgres,
    process::ChildGuard,
    puppet::{output_text, Agent},
    tls::TlsClient,
    wait,
};

use super::{bin, crossbar};

/// How long a storm may take at most (it takes seconds; the outage tests add Retry-After).
const STORM_TIMEOUT: Duration = Duration::from_secs(300);

/// A database CA: its state in `url`, its certificate and key copied to one cadir per node, the
/// LB's and an admin's certificates, and the secret the LBs prove themselves with.
struct DbCa {
    root: tempfile::TempDir,
    url: String,
}

impl DbCa {
    /// `crossbar ca setup --database` (an EC P-256 CA, quick), then the LB's certificate (with
    /// `pp_cli_auth`, as puppetserver's own) and an admin certificate from `crossbar ca
    /// generate --database`.
    fn setup(url: &str) -> Self {
        Self::setup_with(url, "ec-p256")
    }

    fn setup_with(url: &str, ca_key: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let ca = Self { root, url: url.to_owned() };
        let a = ca.cadir("a");
        run_ok(&[
            "ca",
            "setup",
            "--database",
            url,
            "--cadir",
            &a,
            "--ca-name",
            LB_NAME,
            "--key",
            ca_key,
        ]);
        let tls = ca.tls().display().to_string();
        run_ok(&[
            "ca",
            "generate",
            "--database",
            url,
            "--cadir",
            &a,
            "--certname",
            LB_NAME,
            "--dns-alt-names",
            "localhost,127.0.0.1",
            "--out",
            &tls,
            "--ca-admin",
            "--key",
            "ec-p256",
        ]);
        run_ok(&[
            "ca",
            "generate",
            "--database",
            url,
            "--cadir",
            &a,
            "--certname",
            ADMIN_NAME,
            "--out",
            &tls,
            "--key",
            "ec-p256",
        ]);
        std::fs::write(ca.secret(), "e2e-database-lb-secret-0123456789\n").unwrap();
        ca
    }

    fn dir(&self) -> &Path {
        self.root.path()
    }

    /// The cadir of node `node` (a copy of node a's certificate and key).
    fn cadir(&self, node: &str) -> String {
        let dir = self.dir().join(format!("ca-{node}"));
        if node != "a" && !dir.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            for file in ["ca_crt.pem", "ca_key.pem"] {
                std::fs::copy(self.dir().join("ca-a").join(file), dir.join(file)).unwrap();
            }
        }
        dir.display().to_string()
    }

    fn tls(&self) -> PathBuf {
        self.dir().join("tls")
    }

    fn secret(&self) -> PathBuf {
        self.dir().join("proxy-secret")
    }

    fn bundle(&self) -> PathBuf {
        self.tls().join("ca_crt.pem")
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.tls().join(format!("{name}.pem"))
    }

    fn key(&self, name: &str) -> PathBuf {
        self.tls().join(format!("{name}.key"))
    }

    /// A CA node on the database. It waits out an outage for 1 s only (20 s by default), so
    /// that the outage tests see its 503s.
    fn node(&self, node: &str, autosign: bool) -> Crossbar {
        let config = format!(
            "[ca]\nlisten = \"127.0.0.1:0\"\ncadir = \"{}\"\ndatabase = \"{}\"\ndatabase_timeout = \"2s\"\ndatabase_outage_wait = \"1s\"\nnode_name = \"{node}\"\nautosign = {autosign}\nproxy_secret_file = \"{}\"\nadmin_certnames = [\"{ADMIN_NAME}\"]\n",
            self.cadir(node),
            self.url,
            self.secret().display()
        );
        Crossbar::start(bin(), self.dir(), &format!("ca-{node}"), &config)
    }

    /// An LB with both CA nodes active (round-robin, no standby), pulling the CRL from them
    /// every second; `extra` adds pools.
    fn lb(&self, name: &str, cas: &[&Crossbar], extra: &str) -> Crossbar {
        let members: Vec<String> =
            cas.iter().map(|ca| format!("{{ url = \"http://{}\" }}", ca.ca.unwrap())).collect();
        let config = format!(
            r#"[lb]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
client_ca = "{bundle}"
crl = {{ pool = "ca", refresh = "1s" }}

[lb.pools.ca]
balance = "round-robin"
health = {{ interval = "500ms", rise = 1, fall = 1 }}
proxy_secret_file = "{secret}"
members = [ {members} ]
{extra}
"#,
            cert = self.cert(LB_NAME).display(),
            key = self.key(LB_NAME).display(),
            bundle = self.bundle().display(),
            secret = self.secret().display(),
            members = members.join(", "),
        );
        Crossbar::start(bin(), self.dir(), name, &config)
    }

    /// `crossbar sim bootstrap` of `agents` new agents named `<prefix>NNNNN.sim.example.com`
    /// through `lb`, running in the background; its JSON report lands in `<prefix>.json`.
    fn storm(&self, lb: &Crossbar, prefix: &str, agents: usize) -> Storm {
        let json = self.dir().join(format!("{prefix}.json"));
        let mut command = Command::new(bin());
        command
            .args(["sim", "bootstrap", "--lb", &format!("127.0.0.1:{}", lb.lb_port())])
            .arg("--cacert")
            .arg(self.bundle())
            .args(["--agents", &agents.to_string(), "--concurrency", "32", "--prefix", prefix])
            .args(["--waitforcert", "1s", "--duration", "240s", "--json"])
            .arg(&json);
        let child = ChildGuard::spawn(&format!("storm-{prefix}"), command, self.dir());
        Storm { child, json, agents, started: Instant::now() }
    }
}

/// A storm running in the background.
struct Storm {
    child: ChildGuard,
    json: PathBuf,
    agents: usize,
    started: Instant,
}

impl Storm {
    /// Waits for the storm to end; asserts every agent got its certificate; returns the report.
    fn finish(mut self) -> serde_json::Value {
        let code = self.child.wait_exit(STORM_TIMEOUT);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&self.json).unwrap_or_default())
                .unwrap_or_else(|_| panic!("no report (exit {code:?}): {}", self.child.stderr()));
        eprintln!(
            "storm of {} agents: {:.1} s, {report}",
            self.agents,
            self.started.elapsed().as_secs_f64()
        );
        assert_eq!(report["runs"].as_u64(), Some(self.agents as u64), "{report}");
        assert_eq!(
            report["runs_failed"].as_u64(),
            Some(0),
            "every agent ends with a certificate: {report}"
        );
        report
    }
}

fn run_ok(args: &[&str]) -> String {
    let (code, out, err) = crossbar(args);
    assert_eq!(code, 0, "crossbar {args:?}: {out}{err}");
    out
}

/// Rows of certificates issued to names starting with `prefix`: (count, distinct serials).
fn issued(pg: &Postgres, prefix: &str) -> (u64, u64) {
    let text = pg.psql(
        "crossbar",
        &format!(
            "SELECT count(*), count(DISTINCT serial) FROM ca_cert WHERE certname LIKE '{prefix}%'"
        ),
    );
    let (count, distinct) = text.split_once('|').unwrap();
    (count.parse().unwrap(), distinct.parse().unwrap())
}

/// The current certificate of every name starting with `prefix`, from the database.
fn current(pg: &Postgres, prefix: &str) -> Vec<(String, Vec<u8>)> {
    pg.psql("crossbar", &format!("SELECT cur.certname, encode(c.pem, 'escape') FROM ca_current cur JOIN ca_cert c USING (serial) WHERE cur.certname LIKE '{prefix}%' ORDER BY 1"))
        .split("-----END CERTIFICATE-----")
        .filter_map(|chunk| {
            let (name, pem) = chunk.trim_start_matches('\n').split_once('|')?;
            Some((name.to_owned(), format!("{pem}-----END CERTIFICATE-----\n").into_bytes()))
        })
        .collect()
}

fn get_certificate(ca: SocketAddr, name: &str) -> Vec<u8> {
    let (status, body) =
        http(ca, "GET", &format!("/puppet-ca/v1/certificate/{name}"), b"").unwrap();
    assert_eq!(status, 200, "{name} from {ca}");
    body
}

#[test]
fn two_active_ca_nodes_sign_a_2000_agent_storm_and_serve_every_certificate() {
    let pg = Postgres::start("pg");
    let ca = DbCa::setup(&pg.url());
    let (a, b) = (ca.node("a", true), ca.node("b", true));
    let lb = ca.lb("lb", &[&a, &b], "");
    ca.storm(&lb, "storm", 2000).finish();
    assert_eq!(issued(&pg, "storm"), (2000, 2000), "one certificate per agent, no serial twice");
    let signers = pg.psql(
        "crossbar",
        "SELECT count(DISTINCT issued_by) FROM ca_cert WHERE certname LIKE 'storm%'",
    );
    assert_eq!(signers, "2", "both nodes signed");
    let certs = current(&pg, "storm");
    assert_eq!(certs.len(), 2000);
    for (name, pem) in &certs {
        for node in [&a, &b] {
            assert_eq!(&get_certificate(node.ca.unwrap(), name), pem, "{name}");
        }
    }
}

#[test]
fn a_ca_node_killed_mid_storm_loses_no_agent_and_repeats_no_serial() {
    let pg = Postgres::start("pg");
    let ca = DbCa::setup(&pg.url());
    let (mut a, b) = (ca.node("a", true), ca.node("b", true));
    let lb = ca.lb("lb", &[&a, &b], "");
    let storm = ca.storm(&lb, "kill", 800);
    wait::until_true("the storm to be under way", STORM_TIMEOUT, || issued(&pg, "kill").0 >= 150);
    a.child.kill();
    let killed_at = issued(&pg, "kill").0;
    storm.finish();
    assert!(killed_at < 800, "the kill landed mid-storm ({killed_at} signed)");
    assert_eq!(issued(&pg, "kill"), (800, 800));
    for (name, pem) in current(&pg, "kill") {
        assert_eq!(get_certificate(b.ca.unwrap(), &name), pem, "{name}");
    }
}

#[test]
fn a_database_outage_mid_storm_is_answered_503_and_the_storm_completes_after_it() {
    let mut pg = Postgres::start("pg");
    let ca = DbCa::setup(&pg.url());
    let (mut a, mut b) = (ca.node("a", true), ca.node("b", true));
    let lb = ca.lb("lb", &[&a, &b], "");
    let storm = ca.storm(&lb, "outage", 800);
    wait::until_true("the storm to be under way", STORM_TIMEOUT, || issued(&pg, "outage").0 >= 150);
    pg.stop();
    let stopped = Instant::now();
    // Agents are told to come back: 503 with Retry-After, through the LB.
    wait::until_true("a 503 with Retry-After during the outage", STORM_TIMEOUT, || {
        let log = lb.child.stderr();
        log.lines().any(|l| l.contains("certificate_request/outage") && l.contains("status=503"))
    });
    let client = TlsClient::new(&ca.bundle(), None);
    let csr = testkit::fixture::csr_pem("during.example.com");
    let reply = client
        .connect(lb.lb_port())
        .map(|mut s| {
            testkit::tls::exchange(
                &mut s,
                &testkit::tls::request(
                    "PUT",
                    "/puppet-ca/v1/certificate_request/during.example.com",
                    &[("Content-Type", "text/plain")],
                    csr.as_bytes(),
                ),
            )
        })
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 503, "{}", reply.text());
    let retry: u64 = reply.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // What agents already have is still served: the CA certificate and the CRL.
    for path in ["/puppet-ca/v1/certificate/ca", "/puppet-ca/v1/certificate_revocation_list/ca"] {
        assert_eq!(client.handshake_and_request(lb.lb_port(), path).unwrap().status, 200, "{path}");
    }
    pg.restart();
    eprintln!("database down for {:.1} s", stopped.elapsed().as_secs_f64());
    let report = storm.finish();
    assert!(
        report["errors"].as_object().unwrap().keys().any(|k| k.contains("503 with Retry-After")),
        "agents were told to retry: {report}"
    );
    assert!(a.child.is_running() && b.child.is_running(), "no CA node restarted");
    assert_eq!(issued(&pg, "outage"), (800, 800));
}

#[test]
fn ca_nodes_follow_the_primary_to_a_promoted_replica_mid_storm() {
    let mut primary = Postgres::start("primary");
    let replica = primary.replica("replica");
    let url = format!(
        "postgresql://crossbar:crossbar@127.0.0.1:{},127.0.0.1:{}/crossbar?target_session_attrs=read-write",
        primary.port, replica.port
    );
    let ca = DbCa::setup(&url);
    let (a, b) = (ca.node("a", true), ca.node("b", true));
    let lb = ca.lb("lb", &[&a, &b], "");
    let storm = ca.storm(&lb, "failover", 800);
    wait::until_true("the storm to be under way", STORM_TIMEOUT, || {
        issued(&primary, "failover").0 >= 150
    });
    primary.kill();
    let killed = Instant::now();
    replica.promote();
    wait::until_true("a signing on the new primary", STORM_TIMEOUT, || {
        replica.psql(
            "crossbar",
            "SELECT count(*) FROM ca_cert WHERE issued_at > now() - interval '1 second'",
        ) != "0"
    });
    eprintln!(
        "failover: signing resumed {:.1} s after the primary died",
        killed.elapsed().as_secs_f64()
    );
    storm.finish();
    let (count, distinct) = issued(&replica, "failover");
    assert_eq!(count, distinct, "no serial issued twice");
    assert!(count >= 800, "{count}");
    for (name, pem) in current(&replica, "failover") {
        for node in [&a, &b] {
            assert_eq!(get_certificate(node.ca.unwrap(), &name), pem, "{name}");
        }
    }
}

#[test]
fn a_revocation_through_one_node_is_served_by_the_other_and_enforced_by_its_lb() {
    let pg = Postgres::start("pg");
    let ca = DbCa::setup(&pg.url());
    let (a, b) = (ca.node("a", true), ca.node("b", true));
    // One LB per node, so that each only ever talks to its own.
    let (lb_a, lb_b) = (ca.lb("lb-a", &[&a], ""), ca.lb("lb-b", &[&b], ""));
    let a_dir = ca.cadir("a");
    let tls = ca.tls().display().to_string();
    for agent in ["agent1.example.com", "agent2.example.com"] {
        run_ok(&[
            "ca",
            "generate",
            "--database",
            &ca.url,
            "--cadir",
            &a_dir,
            "--certname",
            agent,
            "--out",
            &tls,
            "--key",
            "ec-p256",
        ]);
    }
    let as_agent = |name: &str| TlsClient::new(&ca.bundle(), Some((&ca.cert(name), &ca.key(name))));
    for name in ["agent1.example.com", "agent2.example.com"] {
        assert_eq!(
            as_agent(name)
                .handshake_and_request(lb_b.lb_port(), "/puppet-ca/v1/certificate/ca")
                .unwrap()
                .status,
            200
        );
    }
    let admin =
        super::online(&lb_a.lb_url(), &ca.cert(ADMIN_NAME), &ca.key(ADMIN_NAME), &ca.bundle());
    // Two revocations in quick succession (within a second, most often): each must reach
    // the other LB, which pulls with the ETag.
    for name in ["agent1.example.com", "agent2.example.com"] {
        let mut args = vec!["ca".to_owned(), "revoke".into(), "--certname".into(), name.into()];
        args.extend(admin.iter().cloned());
        let (code, out, err) = crossbar(&args);
        assert_eq!(code, 0, "{out}{err}");
        let serial = super::serial_of(&ca.cert(name));
        let (status, crl) =
            http(b.ca.unwrap(), "GET", "/puppet-ca/v1/certificate_revocation_list/ca", b"")
                .unwrap();
        assert_eq!(status, 200);
        let der = pki::pemfile::blocks(&crl, "X509 CRL").unwrap().remove(0);
        assert!(
            pki::crl::CrlInfo::from_der(&der).unwrap().is_revoked(&serial),
            "node b lists {name} when the call returns"
        );
        let started = Instant::now();
        wait::until_true(&format!("lb-b to refuse {name}"), Duration::from_secs(20), || {
            as_agent(name)
                .handshake_and_request(lb_b.lb_port(), "/puppet-ca/v1/certificate/ca")
                .is_err()
        });
        eprintln!(
            "lb-b refused {name} {:.2} s after the revocation",
            started.elapsed().as_secs_f64()
        );
    }
    let anonymous = TlsClient::new(&ca.bundle(), None);
    let crl_a = anonymous
        .handshake_and_request(lb_a.lb_port(), "/puppet-ca/v1/certificate_revocation_list/ca")
        .unwrap();
    let crl_b = anonymous
        .handshake_and_request(lb_b.lb_port(), "/puppet-ca/v1/certificate_revocation_list/ca")
        .unwrap();
    assert_eq!(crl_a.body, crl_b.body, "the same bytes from every node");
    assert_eq!(crl_a.header("last-modified"), crl_b.header("last-modified"));
    // Both revocations are in the audit trail every node reads, with who did them and where.
    let as_admin = TlsClient::new(&ca.bundle(), Some((&ca.cert(ADMIN_NAME), &ca.key(ADMIN_NAME))));
    let trail = as_admin
        .handshake_and_request(lb_b.lb_port(), "/puppet-ca/v1/crossbar/audit?limit=20")
        .unwrap();
    assert_eq!(trail.status, 200, "{}", trail.text());
    let events: serde_json::Value = serde_json::from_slice(&trail.body).unwrap();
    for name in ["agent1.example.com", "agent2.example.com"] {
        assert!(
            events.as_array().unwrap().iter().any(|e| e["action"] == "revoke"
                && e["certname"] == name
                && e["node"] == "a"
                && e["actor"].as_str().unwrap().contains(ADMIN_NAME)),
            "the revocation of {name} by {ADMIN_NAME} on node a: {events}"
        );
    }
    let anonymous_trail =
        anonymous.handshake_and_request(lb_b.lb_port(), "/puppet-ca/v1/crossbar/audit").unwrap();
    assert_eq!(anonymous_trail.status, 403, "the trail is for admins");
}

/// `puppet.conf` for the real `puppetserver ca` CLI on the LB host: the LB's certificate (it
/// has `pp_cli_auth`), the CA bundle and a CRL fetched from a node.
fn cli_conf(ca: &DbCa, node: &Crossbar, port: u16) -> String {
    let (status, crl) =
        http(node.ca.unwrap(), "GET", "/puppet-ca/v1/certificate_revocation_list/ca", b"").unwrap();
    assert_eq!(status, 200);
    let crl_path = ca.tls().join("crl.pem");
    std::fs::write(&crl_path, crl).unwrap();
    let path = ca.dir().join("cli-puppet.conf");
    std::fs::write(
        &path,
        format!(
            "[main]\nserver = localhost\nca_server = localhost\nca_port = {port}\ncertname = {LB_NAME}\nhostcert = {}\nhostprivkey = {}\nlocalcacert = {}\nhostcrl = {}\n",
            ca.cert(LB_NAME).display(),
            ca.key(LB_NAME).display(),
            ca.bundle().display(),
            crl_path.display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn compilers_pool(compiler: &Compiler) -> String {
    format!("\n[lb.pools.compilers]\nmembers = [ {{ url = \"{}\" }} ]\n", compiler.url())
}

fn run_succeeds(agent: &Agent, port: u16) {
    let out = agent.run(port);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}: {}", agent.certname, output_text(&out));
}

/// Real Puppet 7 pieces on the database store: agents wait, the real CLI lists, signs, revokes
/// and cleans through the LB (whose two CA nodes share the work), agents run on a real
/// compiler. Then `crossbar ca export` hands the CA to a real puppetserver, which serves the
/// agents and signs a new one; and `crossbar ca import --database` takes that
/// puppetserver-made state back, under whose crossbar the agents keep running.
#[test]
fn real_puppet_on_the_database_store_then_out_to_puppetserver_and_back() {
    let pg = Postgres::start("pg");
    // An RSA CA: puppetserver 7 cannot load an EC CA key (its ssl-utils reads RSA only).
    let ca = DbCa::setup_with(&pg.url(), "rsa-2048");
    let (a, b) = (ca.node("a", false), ca.node("b", false));
    let mut compiler = Compiler::start(ca.dir(), "compiler1");
    compiler.wait_ready();
    let lb = ca.lb("lb", &[&a, &b], &compilers_pool(&compiler));
    let port = lb.lb_port();
    let agents: Vec<Agent> =
        ["agent1.example.com", "agent2.example.com"].map(|n| Agent::new(ca.dir(), n)).into();
    for agent in &agents {
        assert!(!agent.bootstrap(port).status.success(), "waits for signing");
    }
    let conf = cli_conf(&ca, &a, port);
    let listed = super::puppetserver_ca(&["list", "--config", &conf]);
    assert!(
        listed.contains("agent1.example.com") && listed.contains("agent2.example.com"),
        "{listed}"
    );
    super::puppetserver_ca(&[
        "sign",
        "--certname",
        "agent1.example.com,agent2.example.com",
        "--config",
        &conf,
    ]);
    for agent in &agents {
        let out = agent.bootstrap(port);
        assert!(out.status.success(), "{}", output_text(&out));
        run_succeeds(agent, port);
    }
    super::puppetserver_ca(&["revoke", "--certname", "agent2.example.com", "--config", &conf]);
    wait::until_true("the LB to refuse agent2", Duration::from_secs(20), || {
        !matches!(agents[1].run(port).status.code(), Some(0 | 2))
    });
    let all = super::puppetserver_ca(&["list", "--all", "--config", &conf]);
    assert!(all.contains("Revoked Certificates:") && all.contains("agent2.example.com"), "{all}");
    super::puppetserver_ca(&["clean", "--certname", "agent2.example.com", "--config", &conf]);
    let all = super::puppetserver_ca(&["list", "--all", "--config", &conf]);
    assert!(!all.contains("agent2.example.com") && all.contains("agent1.example.com"), "{all}");
    let audit = pg.psql(
        "crossbar",
        "SELECT action FROM ca_audit WHERE certname = 'agent2.example.com' ORDER BY id",
    );
    // The CLI's clean is a revocation (again) and a deletion.
    let expected = ["submit", "sign", "revoke", "revoke", "delete"];
    assert_eq!(audit.lines().collect::<Vec<_>>(), expected, "{audit}");
    drop(lb);

    // Out to puppetserver: it serves the exported directory to the same agents.
    let exported = ca.dir().join("exported-ca");
    run_ok(&[
        "ca",
        "export",
        "--cadir",
        &ca.cadir("a"),
        "--database",
        &ca.url,
        "--to",
        &exported.display().to_string(),
    ]);
    let mut puppetserver = Compiler::start_with_ca(ca.dir(), "puppetserver", &exported);
    puppetserver.wait_ready();
    run_succeeds(&agents[0], puppetserver.port);
    let agent3 = Agent::new(ca.dir(), "agent3.example.com");
    let out = agent3.bootstrap(puppetserver.port);
    assert!(out.status.success(), "puppetserver signs from the exported CA: {}", output_text(&out));
    let serial = pki::Serial::from_be_bytes(&super::serial_of(&agent3.cert())).unwrap();
    assert!(!serial.is_random(), "puppetserver continues the sequential serials: {serial}");
    puppetserver.kill();

    // And back: the puppetserver-made state into a new database, served by crossbar.
    pg.psql("postgres", "CREATE DATABASE crossbar2");
    let url2 = format!("{}2", pg.url());
    let cadir_c = ca.dir().join("ca-c");
    run_ok(&[
        "ca",
        "import",
        "--cadir",
        &cadir_c.display().to_string(),
        "--from",
        &exported.display().to_string(),
        "--database",
        &url2,
    ]);
    let c = Crossbar::start(
        bin(),
        ca.dir(),
        "ca-c",
        &format!(
            "[ca]\nlisten = \"127.0.0.1:0\"\ncadir = \"{}\"\ndatabase = \"{url2}\"\nproxy_secret_file = \"{}\"\n",
            cadir_c.display(),
            ca.secret().display()
        ),
    );
    let lb = ca.lb("lb-after-import", &[&c], &compilers_pool(&compiler));
    for agent in [&agents[0], &agent3] {
        run_succeeds(agent, lb.lb_port());
    }
    let (status, _) =
        http(c.ca.unwrap(), "GET", "/puppet-ca/v1/certificate/agent3.example.com", b"").unwrap();
    assert_eq!(status, 200, "the certificate puppetserver signed is served");
}

/// The offline CLI (`crossbar ca list/sign/revoke/clean --database --cadir`) on a CA node's
/// host, while a node serves: what it does is in the database, served by the node at once, and
/// in the audit trail as the offline CLI's.
#[test]
fn the_offline_cli_lists_signs_revokes_and_cleans_on_the_database_store() {
    let pg = Postgres::start("pg");
    let ca = DbCa::setup(&pg.url());
    let node = ca.node("a", false);
    let node_addr = node.ca.unwrap();
    for name in ["offline1.example.com", "offline2.example.com"] {
        let csr = testkit::fixture::csr_pem(name);
        let path = format!("/puppet-ca/v1/certificate_request/{name}");
        let (status, body) = http(node_addr, "PUT", &path, csr.as_bytes()).unwrap();
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&body));
    }
    let cadir = ca.cadir("cli");
    let offline = |args: &[&str]| {
        let mut all = vec!["ca"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--database", &ca.url, "--cadir", &cadir]);
        run_ok(&all)
    };
    let pending = offline(&["list"]);
    assert!(pending.contains("offline1.example.com"), "{pending}");
    assert!(pending.contains("offline2.example.com"), "{pending}");

    offline(&["sign", "--certname", "offline1.example.com"]);
    let served = get_certificate(node_addr, "offline1.example.com");
    let stored = current(&pg, "offline1.");
    assert_eq!(stored, vec![("offline1.example.com".to_owned(), served)], "the node serves it");
    offline(&["sign", "--all"]);
    let all = offline(&["list", "--all"]);
    let signed = all.split_once("Signed Certificates:").map(|(_, signed)| signed).unwrap_or("");
    assert!(signed.contains("offline2.example.com"), "signed by --all: {all}");

    offline(&["revoke", "--certname", "offline1.example.com"]);
    let serial = pg.psql(
        "crossbar",
        "SELECT upper(encode(serial, 'hex')) FROM ca_cert WHERE certname = 'offline1.example.com' AND revoked_at IS NOT NULL",
    );
    assert!(!serial.is_empty(), "offline1 is revoked in the database");
    let (status, crl) =
        http(node_addr, "GET", "/puppet-ca/v1/certificate_revocation_list/ca", b"").unwrap();
    assert_eq!(status, 200);
    let crl_file = ca.dir().join("offline.crl.pem");
    std::fs::write(&crl_file, &crl).unwrap();
    let text = Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(&crl_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).replace(':', "").to_uppercase();
    assert!(text.contains(serial.trim_start_matches('0')), "the node's CRL lists {serial}: {text}");

    offline(&["clean", "--certname", "offline2.example.com"]);
    assert!(current(&pg, "offline2.").is_empty(), "offline2 is cleaned");
    let (status, _) =
        http(node_addr, "GET", "/puppet-ca/v1/certificate/offline2.example.com", b"").unwrap();
    assert_eq!(status, 404, "the node no longer serves the cleaned certificate");
    let audit = pg.psql(
        "crossbar",
        "SELECT actor || ' ' || action || ' ' || certname FROM ca_audit WHERE actor LIKE 'offline CLI%' ORDER BY id",
    );
    for action in ["sign offline1", "sign offline2", "revoke offline1", "clean offline2"] {
        assert!(audit.contains(action), "the audit trail has {action}: {audit}");
    }
}
