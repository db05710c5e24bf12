//! The admin page in a real browser: Debian's headless Chromium driven through chromedriver,
//! against a running LB and CA (one `crossbar serve`), two stub compilers (test doubles: the
//! page is about the LB) and a real Puppet 7 agent. Screenshots are saved under
//! `target/tmp/admin-page/`.

use std::{path::PathBuf, time::Duration};

use pki::KeyAlgorithm;
use serde_json::json;
use testkit::{
    browser::Browser,
    fixture::{admin_token, CaFixture, Crossbar, ADMIN_NAME, LB_NAME},
    puppet::Agent,
    stub::StubBackend,
    tls::{request, TlsClient},
    wait,
};

use super::bin;

const WAIT: Duration = Duration::from_secs(30);

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin-page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// An LB of the pair without the CA, sharing the CA's files (it reads the same CRL file).
fn peer_config(fx: &CaFixture, compiler: &StubBackend) -> String {
    format!(
        "[lb]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\ncrl = \"{}\"\ntls_reload_interval = \"250ms\"\n[lb.pools.ca]\nhealth = false\nmembers = [{{ url = \"http://127.0.0.1:1\" }}]\n[lb.pools.compilers]\nmembers = [{{ url = \"{}\" }}]\n",
        fx.cert(LB_NAME).display(),
        fx.key(LB_NAME).display(),
        fx.ca_bundle().display(),
        fx.crl().display(),
        compiler.url()
    )
}

/// The page loads and lives; an action without the token is refused; with it, a member drained
/// from the page stops receiving requests (counted at the backend), a real agent's CSR appears
/// and is signed from the page (the agent's next bootstrap succeeds), and a revocation from the
/// page makes the LB refuse that agent. It also fits a phone.
#[test]
fn an_operator_drains_signs_and_revokes_from_the_admin_page_in_a_real_browser() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let a = StubBackend::start(Duration::ZERO);
    let b = StubBackend::start(Duration::ZERO);
    let (token_line, token) = admin_token(fx.dir());
    // The other LB of the pair, whose CRL the page shows too, and a peer that is down.
    let lb2 = Crossbar::start(bin(), fx.dir(), "lb2", &peer_config(&fx, &a));
    let lb2_admin = lb2.admin.unwrap();
    let extra = format!("admin_listen = \"127.0.0.1:0\"\n{token_line}\nadmin_peers = [\"http://{lb2_admin}\", \"http://127.0.0.1:1\"]\n[lb.pools.compilers]\nbalance = \"round-robin\"\nmembers = [{{ url = \"{}\" }}, {{ url = \"{}\" }}]\n", a.url(), b.url());
    let cb = Crossbar::start(bin(), fx.dir(), "crossbar", &fx.single_node_config("false", &extra));
    let shots = shots();
    let browser = Browser::start(fx.dir(), 1280, 800);
    browser.goto(&format!("http://{}/", cb.admin.unwrap()));
    browser.wait_for(
        "the page says the LB serves",
        "document.getElementById('overall').textContent === 'serving'",
        WAIT,
    );
    browser.wait_for(
        "both members listed",
        "document.querySelectorAll('#pools tr[data-state=healthy]').length >= 2",
        WAIT,
    );
    browser.wait_for(
        "the CRL shown",
        "document.getElementById('crl').textContent.includes('#')",
        WAIT,
    );
    let peer_row = format!("#crl-peers tr[data-lb='{lb2_admin}']");
    browser.wait_for(
        "the other LB's CRL shown",
        &format!("document.querySelector(\"{peer_row}\")?.textContent.includes('#')"),
        WAIT,
    );
    browser.wait_for(
        "a dead peer shown unreachable",
        "document.querySelector(\"#crl-peers tr[data-lb='127.0.0.1:1']\")?.textContent.includes('unreachable')",
        WAIT,
    );
    browser.screenshot(&shots.join("1-overview.png"));

    // Without the token, the page's own origin can neither act nor read the CA's lists.
    let refused = browser.eval_async(
        "const done = arguments[arguments.length - 1];
         Promise.all([
           fetch('/pools/compilers/members/0/drain', {method: 'POST'}).then(r => r.status),
           fetch('/api/ca/sign/anything.example.com', {method: 'POST'}).then(r => r.status),
           fetch('/api/ca/requests').then(r => r.status),
         ]).then(done);",
    );
    assert_eq!(refused, json!([401, 401, 401]));
    assert!(
        browser
            .eval("return document.querySelector(\"button[data-action='drain']\").disabled;", &[])
            == json!(true),
        "actions are disabled before signing in"
    );

    browser.type_into("#token", &token);
    browser.click("#use-token");
    browser.wait_for("signed in", "!document.getElementById('ca').hidden", WAIT);

    // Drain member 0 from the page: the page shows it, and the backend sees no more requests.
    browser.click("button[data-action='drain'][data-pool='compilers'][data-member='0']");
    browser.wait_for(
        "member 0 shown drained",
        "document.getElementById('member-compilers-0').dataset.state === 'drained'",
        WAIT,
    );
    browser.screenshot(&shots.join("2-drained.png"));
    let anonymous = TlsClient::new(&fx.ca_bundle(), None);
    let (served_a, served_b) = (a.served(), b.served());
    for _ in 0..6 {
        assert_eq!(anonymous.raw(cb.lb_port(), &request("GET", "/x", &[], b"")).status, 200);
    }
    assert_eq!(a.served(), served_a, "a drained member receives no request");
    assert_eq!(b.served(), served_b + 6);

    // A real agent asks for a certificate; the request appears on the page and is signed there.
    let agent = Agent::new(fx.dir(), "web01.example.com");
    let first = agent.bootstrap(cb.lb_port());
    assert!(!first.status.success(), "waits for signing: {}", text(&first));
    let pending = "#pending tr[data-certname='web01.example.com']";
    browser.wait_for("the CSR listed", &format!("document.querySelector(\"{pending}\")"), WAIT);
    browser.eval("document.getElementById('ca-section').scrollIntoView();", &[]);
    browser.screenshot(&shots.join("3-pending.png"));
    browser.click(&format!("{pending} button[data-action='sign']"));
    browser.wait_for(
        "the CSR gone from the queue",
        &format!("!document.querySelector(\"{pending}\")"),
        WAIT,
    );
    let second = agent.bootstrap(cb.lb_port());
    assert!(second.status.success(), "bootstrap after signing: {}", text(&second));
    let as_agent = TlsClient::new(&fx.ca_bundle(), Some((&agent.cert(), &agent.key())));
    assert_eq!(as_agent.handshake_and_request(cb.lb_port(), "/x").unwrap().status, 200);

    // Revoke it from the page: the LB refuses the agent from then on.
    browser.type_into("#search", "web01");
    let listed = "#certs tr[data-certname='web01.example.com']";
    browser.wait_for(
        "the certificate found",
        &format!("document.querySelector(\"{listed} button[data-action='revoke']\")"),
        WAIT,
    );
    browser.click(&format!("{listed} button[data-action='revoke']"));
    browser.accept_dialog();
    browser.wait_for(
        "shown revoked",
        &format!("document.querySelector(\"{listed}\")?.textContent.includes('revoked')"),
        WAIT,
    );
    browser.eval("document.getElementById('ca-section').scrollIntoView();", &[]);
    browser.screenshot(&shots.join("4-revoked.png"));
    wait::until_true("the LB to refuse the revoked agent", WAIT, || {
        as_agent.handshake_and_request(cb.lb_port(), "/x").is_err()
    });
    // The page shows the new CRL on both LBs.
    browser.wait_for("both LBs hold the new CRL", &format!("document.querySelectorAll('#crl-peers tbody tr').length === 3 && [...document.querySelectorAll('#crl-peers tr[data-lb]')].filter(r => r.textContent.includes('1 revoked')).length === 2 && document.querySelector(\"{peer_row}\").textContent.includes('1 revoked')"), WAIT);

    // Each action is on the page's record under the operator's name.
    browser.wait_for(
        "actions recorded",
        "document.querySelectorAll('#actions tbody tr').length >= 3",
        WAIT,
    );
    let record = browser.eval("return document.getElementById('actions').textContent;", &[]);
    let record = record.as_str().unwrap_or_default();
    for action in ["drain", "sign", "revoke"] {
        assert!(record.contains(action), "{action} missing from the record: {record}");
    }
    // And in the audit log: the LB's own record, and the CA's trail under the operator's name.
    let log = cb.child.stderr();
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert!(lines("admin page action") >= 3, "the LB logs each action:\n{log}");
    let ca_writes: Vec<&str> = log.lines().filter(|l| l.contains("CA write")).collect();
    for action in ["sign", "revoke"] {
        assert!(
            ca_writes.iter().any(|l| l.contains(ADMIN_NAME) && l.contains(action)),
            "the CA's audit trail has the {action} by {ADMIN_NAME}: {ca_writes:?}"
        );
    }

    // A phone: nothing wider than the screen but the tables, which scroll inside their box.
    browser.resize(390, 844);
    browser.wait_for(
        "fits a phone",
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
        WAIT,
    );
    browser.screenshot(&shots.join("5-phone.png"));
}
