//! The agent's certificate life cycle through crossbar with the real Puppet 7 agent:
//! autosigned bootstrap, operator signing, revocation, and the real `puppetserver ca` CLI.

use std::time::Duration;

use pki::KeyAlgorithm;
use testkit::{
    fixture::{CaFixture, Crossbar, ADMIN_NAME, LB_NAME},
    puppet::{output_text, Agent},
    tls::TlsClient,
    wait,
};

use super::{bin, crossbar, online, openssl_verify, serial_of};

/// (a) With autosign on, `puppet ssl bootstrap` gets a certificate through the LB, from a CA
/// with Puppet's default RSA-4096 key; OpenSSL verifies it against the CA and CRL.
#[test]
fn autosigned_bootstrap_with_an_rsa_4096_ca() {
    let fx = CaFixture::new(KeyAlgorithm::Rsa4096);
    let cb = Crossbar::start(bin(), fx.dir(), "crossbar", &fx.single_node_config("true", ""));
    let agent = Agent::new(fx.dir(), "agent1.example.com");
    let out = agent.bootstrap(cb.lb_port());
    assert!(out.status.success(), "bootstrap failed: {}", output_text(&out));
    assert!(agent.has_cert());
    let (ok, text) = openssl_verify(&fx.ca_bundle(), &fx.crl(), &agent.cert());
    assert!(ok, "openssl rejects the agent cert: {text}");
    let access = cb.child.stderr();
    assert!(
        access.contains("certificate_request/agent1.example.com")
            && access.contains("verify=\"NONE\""),
        "the CSR went through the LB anonymously"
    );
}

/// (b) With autosign off the agent waits; an operator signs with `crossbar ca sign` (online,
/// through the LB with an admin certificate); the next bootstrap succeeds.
#[test]
fn operator_signs_a_waiting_agent() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let cb = Crossbar::start(bin(), fx.dir(), "crossbar", &fx.single_node_config("false", ""));
    let agent = Agent::new(fx.dir(), "agent2.example.com");
    let first = agent.bootstrap(cb.lb_port());
    assert!(!first.status.success(), "must wait for signing: {}", output_text(&first));
    assert!(!agent.has_cert());
    assert!(fx.cadir.join("requests/agent2.example.com.pem").is_file(), "the CSR is pending");

    let cadir = fx.cadir.to_str().unwrap();
    let (code, listed, _) = crossbar(["ca", "list", "--cadir", cadir]);
    assert_eq!(code, 0);
    assert!(
        listed.contains("Requested Certificates:") && listed.contains("agent2.example.com"),
        "{listed}"
    );

    let url = cb.lb_url();
    let admin = online(&url, &fx.cert(ADMIN_NAME), &fx.key(ADMIN_NAME), &fx.ca_bundle());
    let args = |head: &[&str], tail: &[String]| {
        head.iter().map(|s| (*s).to_owned()).chain(tail.iter().cloned()).collect::<Vec<String>>()
    };
    let (code, out, err) =
        crossbar(args(&["ca", "sign", "--certname", "agent2.example.com"], &admin));
    assert_eq!(code, 0, "sign failed: {out}{err}");
    assert!(fx.cadir.join("signed/agent2.example.com.pem").is_file());

    let second = agent.bootstrap(cb.lb_port());
    assert!(second.status.success(), "bootstrap after signing: {}", output_text(&second));
    assert!(agent.has_cert());

    let (code, json, _) = crossbar(args(&["ca", "list", "--all", "--json"], &admin));
    assert_eq!(code, 0);
    let statuses: serde_json::Value = serde_json::from_str(&json).unwrap();
    let agent_status =
        statuses.as_array().unwrap().iter().find(|s| s["name"] == "agent2.example.com").unwrap();
    assert_eq!(agent_status["state"], "signed");
    assert_eq!(agent_status["dns_alt_names"], serde_json::json!(["DNS:agent2.example.com"]));

    // Without an admin identity the same listing is refused.
    let stranger = online(&url, &agent.cert(), &agent.key(), &fx.ca_bundle());
    let (code, _, err) = crossbar(args(&["ca", "list", "--all"], &stranger));
    assert_ne!(code, 0);
    assert!(err.contains("403"), "{err}");
}

/// (c) After `crossbar ca revoke`, a handshake with the agent's certificate fails at the LB
/// and a freshly downloaded CRL lists its serial, while other clients still pass.
#[test]
fn revoked_agent_is_refused_at_the_handshake() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let cb = Crossbar::start(bin(), fx.dir(), "crossbar", &fx.single_node_config("true", ""));
    let agent = Agent::new(fx.dir(), "agent3.example.com");
    assert!(agent.bootstrap(cb.lb_port()).status.success());
    let as_agent = TlsClient::new(&fx.ca_bundle(), Some((&agent.cert(), &agent.key())));
    let as_admin =
        TlsClient::new(&fx.ca_bundle(), Some((&fx.cert(ADMIN_NAME), &fx.key(ADMIN_NAME))));
    let before = as_agent
        .handshake_and_request(cb.lb_port(), "/puppet-ca/v1/certificate/ca")
        .expect("valid cert is accepted");
    assert_eq!(before.status, 200);

    let (code, out, err) = crossbar([
        "ca",
        "revoke",
        "--certname",
        "agent3.example.com",
        "--cadir",
        fx.cadir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");

    wait::until_true("the LB to refuse the revoked certificate", Duration::from_secs(20), || {
        as_agent.handshake_and_request(cb.lb_port(), "/puppet-ca/v1/certificate/ca").is_err()
    });
    let err =
        as_agent.handshake_and_request(cb.lb_port(), "/puppet-ca/v1/certificate/ca").unwrap_err();
    assert!(err.to_lowercase().contains("revoked") || err.contains("alert"), "{err}");
    assert!(cb.child.stderr().contains("invalid peer certificate: Revoked"));
    assert_eq!(
        as_admin
            .handshake_and_request(cb.lb_port(), "/puppet-ca/v1/certificate/ca")
            .unwrap()
            .status,
        200
    );

    let anonymous = TlsClient::new(&fx.ca_bundle(), None);
    let crl = anonymous
        .handshake_and_request(cb.lb_port(), "/puppet-ca/v1/certificate_revocation_list/ca")
        .unwrap();
    assert_eq!(crl.status, 200);
    let der = pki::pemfile::blocks(&crl.body, "X509 CRL").unwrap().remove(0);
    let info = pki::crl::CrlInfo::from_der(&der).unwrap();
    assert!(info.is_revoked(&serial_of(&agent.cert())), "downloaded CRL lists the agent");
    let (ok, text) = super::openssl_verify(&fx.ca_bundle(), &fx.crl(), &agent.cert());
    assert!(!ok && text.contains("revoked"), "{text}");
}

/// (d) The real `puppetserver ca` CLI (Debian puppetserver 7) lists, signs and revokes through
/// crossbar, authorised by the LB certificate's `pp_cli_auth` as on a puppetserver host.
#[test]
fn real_puppetserver_ca_cli_works_against_crossbar() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let cb = Crossbar::start(bin(), fx.dir(), "crossbar", &fx.single_node_config("false", ""));
    let agent = Agent::new(fx.dir(), "agent4.example.com");
    assert!(!agent.bootstrap(cb.lb_port()).status.success());
    let conf = write_cli_conf(&fx, cb.lb_port());

    let listed = super::puppetserver_ca(&["list", "--config", &conf]);
    assert!(listed.contains("agent4.example.com"), "{listed}");
    super::puppetserver_ca(&["sign", "--certname", "agent4.example.com", "--config", &conf]);
    assert!(fx.cadir.join("signed/agent4.example.com.pem").is_file());
    let all = super::puppetserver_ca(&["list", "--all", "--config", &conf]);
    assert!(all.contains("Signed Certificates:") && all.contains("agent4.example.com"), "{all}");
    assert!(all.contains(LB_NAME) && all.contains("pp_cli_auth"), "{all}");

    super::puppetserver_ca(&["revoke", "--certname", "agent4.example.com", "--config", &conf]);
    let serial = serial_of(&fx.cadir.join("signed/agent4.example.com.pem"));
    let crl =
        pki::pemfile::blocks(&std::fs::read(fx.crl()).unwrap(), "X509 CRL").unwrap().remove(0);
    assert!(pki::crl::CrlInfo::from_der(&crl).unwrap().is_revoked(&serial));
    let after = super::puppetserver_ca(&["list", "--all", "--config", &conf]);
    assert!(after.contains("Revoked Certificates:"), "{after}");
}

fn write_cli_conf(fx: &CaFixture, port: u16) -> String {
    let path = fx.dir().join("cli-puppet.conf");
    let conf = format!(
        "[main]\nserver = localhost\nca_server = localhost\nca_port = {port}\ncertname = {LB_NAME}\nhostcert = {}\nhostprivkey = {}\nlocalcacert = {}\nhostcrl = {}\n",
        fx.cert(LB_NAME).display(),
        fx.key(LB_NAME).display(),
        fx.ca_bundle().display(),
        fx.crl().display()
    );
    std::fs::write(&path, conf).unwrap();
    path.display().to_string()
}

/// The rest of the CA API through the LB: `If-Modified-Since`, legacy routes, expirations,
/// `clean` (online), and the `X-Puppet-Version` header agents parse.
#[test]
fn the_rest_of_the_ca_api_through_the_lb() {
    use testkit::tls::request;
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let cb = Crossbar::start(bin(), fx.dir(), "crossbar", &fx.single_node_config("true", ""));
    let port = cb.lb_port();
    let anonymous = TlsClient::new(&fx.ca_bundle(), None);
    let admin = TlsClient::new(&fx.ca_bundle(), Some((&fx.cert(ADMIN_NAME), &fx.key(ADMIN_NAME))));
    let get = |client: &TlsClient, path: &str, headers: &[(&str, &str)]| {
        client.raw(port, &request("GET", path, headers, b""))
    };

    let bundle = get(&anonymous, "/puppet-ca/v1/certificate/ca", &[]);
    assert_eq!(bundle.status, 200);
    assert_eq!(
        bundle.body,
        std::fs::read(fx.ca_bundle()).unwrap(),
        "served byte for byte (ca_fingerprint hashes the body)"
    );
    assert_eq!(bundle.header("x-puppet-version"), Some("7.23.0"));
    let future = [("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")];
    let past = [("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")];
    for path in ["/puppet-ca/v1/certificate/ca", "/puppet-ca/v1/certificate_revocation_list/ca"] {
        assert_eq!(get(&anonymous, path, &future).status, 304, "{path} unchanged since then");
        assert_eq!(get(&anonymous, path, &past).status, 200, "{path} changed since then");
        assert_eq!(
            get(&anonymous, path, &[("If-Modified-Since", "yesterday")]).status,
            200,
            "an unparsable date is ignored"
        );
    }

    let legacy = get(&anonymous, "/production/certificate/ca", &[]);
    assert_eq!((legacy.status, legacy.body), (200, bundle.body), "Puppet 3 form of the route");
    assert_eq!(get(&anonymous, "/production/certificate_revocation_list/ca", &[]).status, 200);
    let csr = testkit::fixture::csr_pem("legacy.example.com");
    let put = anonymous.raw(
        port,
        &request(
            "PUT",
            "/production/certificate_request/legacy.example.com",
            &[("Content-Type", "text/plain")],
            csr.as_bytes(),
        ),
    );
    assert_eq!(put.status, 200, "{}", put.text());
    assert!(
        fx.cadir.join("signed/legacy.example.com.pem").is_file(),
        "autosigned through the legacy route"
    );

    assert_eq!(get(&anonymous, "/puppet-ca/v1/expirations", &[]).status, 403);
    let expirations = get(&admin, "/puppet-ca/v1/expirations", &[]);
    assert_eq!(expirations.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&expirations.body).unwrap();
    assert!(
        json["ca-certs"]["Puppet CA: puppetlb.example.com"]
            .as_str()
            .is_some_and(|d| d.ends_with("UTC")),
        "{json}"
    );
    assert!(json["crls"]["Puppet CA: puppetlb.example.com"].as_str().is_some(), "{json}");

    let url = cb.lb_url();
    let online = online(&url, &fx.cert(ADMIN_NAME), &fx.key(ADMIN_NAME), &fx.ca_bundle());
    let args = |head: &[&str]| {
        head.iter().map(|s| (*s).to_owned()).chain(online.iter().cloned()).collect::<Vec<String>>()
    };
    let (code, out, err) = crossbar(args(&["ca", "clean", "--certname", "legacy.example.com"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Successfully cleaned all certs."), "{out}");
    assert!(!fx.cadir.join("signed/legacy.example.com.pem").exists());
    let (code, out, _) = crossbar(args(&["ca", "clean", "--certname", "ghost.example.com"]));
    assert_ne!(code, 0);
    assert!(out.contains("do not exist"), "{out}");
}

/// CSRs as the real Puppet 7 agent writes them: challengePasswords with characters
/// PrintableString does not allow (`S3cr3t_pass!`, a JWT-shaped token) parse, reach the
/// autosign policy executable, and are signed; a wrong password is refused and stays pending.
#[test]
fn puppet7_csrs_with_autosign_tokens_are_signed_by_policy() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let policy = super::token_policy(fx.dir());
    let autosign = format!("{{ policy = \"{}\", timeout = \"20s\" }}", policy.display());
    let cb = Crossbar::start(bin(), fx.dir(), "crossbar", &fx.single_node_config(&autosign, ""));
    for (name, password, signed) in [
        ("token7.example.com", super::TOKEN_PASSWORD, true),
        ("jwt7.example.com", super::TOKEN_JWT, true),
        ("wrong7.example.com", "n0t_the_token!", false),
    ] {
        let agent = Agent::new(fx.dir(), name);
        agent.csr_attributes(&super::csr_attributes(password, "web"));
        let out = agent.bootstrap(cb.lb_port());
        assert_eq!(out.status.success(), signed, "{name}: {}", output_text(&out));
        assert_eq!(agent.has_cert(), signed, "{name}");
        let pending = fx.cadir.join(format!("requests/{name}.pem"));
        assert_eq!(pending.is_file(), !signed, "{name}: a refused request stays pending");
    }
    let log = cb.child.stderr();
    assert!(!log.contains("not valid PKCS#10"), "every agent CSR parsed");
    assert!(log.contains("refused: wrong7.example.com"), "the policy saw the wrong password");
}
