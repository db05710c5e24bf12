//! Puppet 8 end to end: Debian 13's `puppet-agent` 8.10, `puppetserver` 8.7 compilers and its
//! `puppetserver ca` 2.7 CLI, run from the Debian 13 root the test command makes
//! (`scripts/puppet8-root.sh`), against crossbar (CA and LB in one process) on this host. One
//! test, because the JVMs start once: agents 8 bootstrap with autosign tokens, run with trusted
//! facts, renew their certificates by themselves and keep running; the CLI 8 lists, signs in
//! bulk, revokes and cleans; a revoked agent 8 is refused at the handshake.

use std::{path::Path, process::Output, time::Duration};

use pki::KeyAlgorithm;
use testkit::{
    compiler::Compiler,
    fixture::{CaFixture, Crossbar, LB_NAME},
    puppet::{output_text, Agent, Install},
    tls::TlsClient,
    wait,
};

use super::{bin, serial_of};

fn succeeded(out: &Output) -> bool {
    matches!(out.status.code(), Some(0 | 2))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `puppetserver ca …` 8 (inside the root) with `conf` as its puppet.conf; returns its exit
/// code and output.
fn cli8(install: &Install, conf: &Path, args: &[&str]) -> (i32, String) {
    let out = install
        .command("puppetserver")
        .arg("ca")
        .args(args)
        .arg("--config")
        .arg(install.inner(conf))
        .output()
        .expect("puppetserver ca in the Puppet 8 root");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A puppet.conf for the CLI inside the root: the LB's certificate (`pp_cli_auth`) as its
/// host certificate, copied into `dir` with the CA bundle and CRL.
fn cli_conf(install: &Install, fx: &CaFixture, dir: &Path, port: u16) -> std::path::PathBuf {
    let ssl = dir.join("cli-ssl");
    std::fs::create_dir_all(&ssl).unwrap();
    for (from, to) in [
        (fx.cert(LB_NAME), "cert.pem"),
        (fx.key(LB_NAME), "key.pem"),
        (fx.ca_bundle(), "ca.pem"),
        (fx.crl(), "crl.pem"),
    ] {
        std::fs::copy(from, ssl.join(to)).unwrap();
    }
    let inner = install.inner(&ssl);
    let i = inner.display();
    let conf = dir.join("cli-puppet.conf");
    std::fs::write(
        &conf,
        format!("[main]\nserver = localhost\nca_server = localhost\nca_port = {port}\ncertname = {LB_NAME}\nhostcert = {i}/cert.pem\nhostprivkey = {i}/key.pem\nlocalcacert = {i}/ca.pem\nhostcrl = {i}/crl.pem\n"),
    )
    .unwrap();
    conf
}

fn simulated_puppet8_runs(fx: &CaFixture, dir: &Path, port: u16) {
    let certs = dir.join("sim-agents");
    let path = |p: &Path| p.display().to_string();
    let (code, out, err) = super::crossbar([
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
    let json = dir.join("sim-runs8.json");
    let lb = format!("127.0.0.1:{port}");
    let args = [
        "sim",
        "runs",
        "--lb",
        &lb,
        "--certs",
        &path(&certs),
        "--agents",
        "2",
        "--puppet",
        "8",
        "--renew",
        "1",
        "--duration",
        "8s",
        "--json",
        &path(&json),
    ];
    let (code, out, err) = super::crossbar(args);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report["runs"].as_u64().is_some_and(|runs| runs >= 2), "{report}");
    assert_eq!(
        (report["runs_failed"].as_u64(), report["requests_failed"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    let ok = |kind: &str| {
        report["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kind"] == kind)
            .map_or(0, |k| k["ok"].as_u64().unwrap())
    };
    assert!(
        ok("ca_cert") >= 2 && ok("crl") >= 2 && ok("renewal") >= 2 && ok("catalog") >= 2,
        "{report}"
    );
}

#[test]
fn puppet8_agents_compilers_renewal_and_cli() {
    let install = Install::puppet8();
    let work = install.tempdir();
    let fx = CaFixture::new(KeyAlgorithm::Rsa2048);
    let mut compilers = ["compiler8-1.example.com", "compiler8-2.example.com"]
        .map(|name| Compiler::start_in(&install, work.path(), name));
    for compiler in &mut compilers {
        compiler.wait_ready();
    }
    let policy = super::token_policy(fx.dir());
    // Agents 8 ask for automatic renewal (pp_auth_auto_renew), so their certificates live
    // auto_renewal_cert_ttl: 20 days, inside the agent's 30-day hostcert_renewal_interval.
    let autosign = format!(
        "{{ policy = \"{}\", timeout = \"20s\" }}\nauto_renewal_cert_ttl = \"20d\"",
        policy.display()
    );
    let pool = format!(
        "[lb.pools.compilers]\nhealth = {{ interval = \"500ms\" }}\nmembers = [ {{ url = \"{}\", max_in_flight = 1 }}, {{ url = \"{}\", max_in_flight = 1 }} ]\n",
        compilers[0].url(),
        compilers[1].url()
    );
    let cb = Crossbar::start(bin(), fx.dir(), "crossbar", &fx.single_node_config(&autosign, &pool));
    let port = cb.lb_port();

    // Bootstrap with autosign tokens as Puppet 8 writes them, then a run with trusted facts.
    let agent = |name: &str, password: &str| {
        let agent = Agent::of(&install, work.path(), name);
        agent.csr_attributes(&super::csr_attributes(password, "db"));
        agent
    };
    let web = agent("web8.example.com", super::TOKEN_PASSWORD);
    let jwt = agent("jwt8.example.com", super::TOKEN_JWT);
    let wrong = agent("wrong8.example.com", "n0t_the_token!");
    for signed in [&web, &jwt] {
        let out = signed.bootstrap(port);
        assert!(out.status.success(), "{}: {}", signed.certname, output_text(&out));
    }
    assert!(!wrong.bootstrap(port).status.success(), "a wrong token is not signed");
    assert!(fx.cadir.join("requests/wrong8.example.com.pem").is_file(), "and stays pending");
    let life = |agent: &Agent| {
        let der =
            pki::pemfile::single_block(&std::fs::read(agent.cert()).unwrap(), &["CERTIFICATE"])
                .unwrap();
        let facts = pki::describe::certificate(&der).unwrap().cert.unwrap();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
                as i64;
        (facts.not_after_unix - now) / 86_400
    };
    assert!(
        (19..=20).contains(&life(&web)),
        "the renewal lifetime for an agent 8: {} days",
        life(&web)
    );

    // The first run renews (20 days left, inside 30), then compiles on a puppetserver 8 with
    // the trusted pp_role; the next run goes on with the renewed certificate.
    let before = serial_of(&web.cert());
    let first = web.run(port);
    assert!(succeeded(&first), "{}", output_text(&first));
    let text = stdout(&first);
    assert!(text.contains("Renewed client certificate"), "the agent renewed: {text}");
    assert!(text.contains("pp_role db") && text.contains("compiled by compiler8-"), "{text}");
    let renewed = serial_of(&web.cert());
    assert_ne!(renewed, before, "the agent saved its renewed certificate");
    assert_eq!(
        std::fs::read(web.cert()).unwrap(),
        std::fs::read(fx.cadir.join("signed/web8.example.com.pem")).unwrap(),
        "the CA's signed/ holds what the agent got"
    );
    let second = web.run(port);
    assert!(succeeded(&second), "{}", output_text(&second));
    let log = cb.child.stderr();
    assert!(
        log.contains("renewed certificate") && log.contains("/puppet-ca/v1/certificate_renewal"),
        "renewal went through the LB to the CA"
    );

    // The simulator's Puppet 8 agents against the same compilers: the anonymous CA and CRL
    // refresh (304 while unchanged), the renewal on every run here, the run itself.
    simulated_puppet8_runs(&fx, work.path(), port);

    // The CLI 8 through the LB: list, bulk sign, revoke, clean.
    let conf = cli_conf(&install, &fx, work.path(), port);
    let (code, listed) = cli8(&install, &conf, &["list"]);
    assert_eq!(code, 0, "{listed}");
    assert!(listed.contains("wrong8.example.com"), "{listed}");
    let (code, signed) = cli8(&install, &conf, &["sign", "--certname", "wrong8.example.com"]);
    assert_eq!(code, 0, "{signed}");
    assert!(
        signed.contains("Successfully signed the following certificate requests:"),
        "bulk signing: {signed}"
    );
    assert!(cb.child.stderr().contains("path=/puppet-ca/v1/sign "), "the CLI used POST /sign");
    for name in ["extra1.example.com", "extra2.example.com"] {
        agent(name, "no token").bootstrap(port);
    }
    let (code, all) = cli8(&install, &conf, &["sign", "--all"]);
    assert_eq!(code, 0, "{all}");
    assert!(all.contains("extra1.example.com") && all.contains("extra2.example.com"), "{all}");
    assert!(
        cb.child.stderr().contains("path=/puppet-ca/v1/sign/all"),
        "the CLI used POST /sign/all"
    );
    let (code, nothing) = cli8(&install, &conf, &["sign", "--all"]);
    assert_eq!(code, 24, "nothing left to sign: {nothing}");

    let (code, revoked) = cli8(&install, &conf, &["revoke", "--certname", "jwt8.example.com"]);
    assert_eq!(code, 0, "{revoked}");
    let (code, cleaned) = cli8(&install, &conf, &["clean", "--certname", "extra1.example.com"]);
    assert_eq!(code, 0, "{cleaned}");
    assert!(!fx.cadir.join("signed/extra1.example.com.pem").exists());
    let (code, listing) = cli8(&install, &conf, &["list", "--all"]);
    assert_eq!(code, 0, "{listing}");
    assert!(
        listing.contains("Revoked Certificates:") && listing.contains("jwt8.example.com"),
        "{listing}"
    );

    // The revoked agent 8 is refused at the LB's handshake; the others go on.
    let revoked_client = TlsClient::new(&fx.ca_bundle(), Some((&jwt.cert(), &jwt.key())));
    wait::until_true("the LB to refuse the revoked agent", Duration::from_secs(30), || {
        revoked_client.handshake_and_request(port, "/puppet-ca/v1/certificate/ca").is_err()
    });
    let refused = jwt.run(port);
    assert!(!succeeded(&refused), "{}", output_text(&refused));
    let third = web.run(port);
    assert!(succeeded(&third), "{}", output_text(&third));
}
