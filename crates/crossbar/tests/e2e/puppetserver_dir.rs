//! A CA directory made by the real `puppetserver ca setup` (two-tier, PKCS#1 key, no
//! `requests/`) is served as it is, and `crossbar ca import` adopts one.

use std::process::Command;

use testkit::{
    fixture::Crossbar,
    puppet::{output_text, Agent},
};

use super::{bin, crossbar, openssl_verify};

const LB: &str = "puppetlb.example.com";

/// Runs `puppetserver ca setup` into `<root>/ps`; returns (cadir, ssldir).
fn puppetserver_setup(root: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cadir = root.join("ps/ca");
    let ssldir = root.join("ps/ssl");
    let conf = root.join("ps-puppet.conf");
    std::fs::write(
        &conf,
        format!(
            "[main]\ncertname = {LB}\nssldir = {}\n[server]\ncadir = {}\n",
            ssldir.display(),
            cadir.display()
        ),
    )
    .unwrap();
    let out = Command::new("puppetserver")
        .args(["ca", "setup", "--subject-alt-names", "localhost", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "puppetserver ca setup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!cadir.join("requests").exists(), "puppetserver makes no requests/ (we create it)");
    (cadir, ssldir)
}

fn config(cadir: &std::path::Path, ssldir: &std::path::Path) -> String {
    format!(
        "[ca]\nlisten = \"127.0.0.1:0\"\ncadir = \"{cadir}\"\nautosign = true\n\n[lb]\nlisten = \"127.0.0.1:0\"\ncert = \"{ssl}/certs/{LB}.pem\"\nkey = \"{ssl}/private_keys/{LB}.pem\"\nclient_ca = \"{cadir}/ca_crt.pem\"\ncrl = \"{cadir}/ca_crl.pem\"\n",
        cadir = cadir.display(),
        ssl = ssldir.display()
    )
}

#[test]
fn a_puppetserver_made_ca_is_served_as_it_is() {
    let root = tempfile::tempdir().unwrap();
    let (cadir, ssldir) = puppetserver_setup(root.path());
    let bundle_before = std::fs::read(cadir.join("ca_crt.pem")).unwrap();
    let cb = Crossbar::start(bin(), root.path(), "crossbar", &config(&cadir, &ssldir));
    let agent = Agent::new(root.path(), "agent1.example.com");
    let out = agent.bootstrap(cb.lb_port());
    assert!(out.status.success(), "{}", output_text(&out));
    let (ok, text) =
        openssl_verify(&cadir.join("ca_crt.pem"), &cadir.join("ca_crl.pem"), &agent.cert());
    assert!(ok, "two-tier chain with both CRLs: {text}");
    assert_eq!(
        std::fs::read(agent.dir.join("ssl/certs/ca.pem")).unwrap(),
        bundle_before,
        "the bundle is served byte for byte"
    );
    // puppetserver's lower-case "002" was read (the agent got serial 2), and the file is written
    // back in puppetserver's own %04X form, ahead of every serial in use.
    assert_eq!(super::serial_of(&agent.cert()), [2]);
    let serial = std::fs::read_to_string(cadir.join("serial")).unwrap();
    let next = pki::Serial::parse_file(&serial).unwrap().value();
    assert!(
        serial.len() >= 4 && serial == serial.to_uppercase() && !serial.ends_with('\n'),
        "{serial:?}"
    );
    assert!(next > 2, "{serial:?}");
}

#[test]
fn ca_import_adopts_a_puppetserver_ca() {
    let root = tempfile::tempdir().unwrap();
    let (from, ssldir) = puppetserver_setup(root.path());
    let cadir = root.path().join("imported");
    let (code, out, err) = crossbar([
        "ca",
        "import",
        "--cadir",
        cadir.to_str().unwrap(),
        "--from",
        from.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, listed, _) = crossbar(["ca", "list", "--all", "--cadir", cadir.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(listed.contains(LB) && listed.contains("pp_cli_auth"), "{listed}");
    let (code, again, _) = crossbar([
        "ca",
        "import",
        "--cadir",
        cadir.to_str().unwrap(),
        "--from",
        from.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "a second import must not overwrite: {again}");
    let cb = Crossbar::start(bin(), root.path(), "crossbar", &config(&cadir, &ssldir));
    let agent = Agent::new(root.path(), "agent2.example.com");
    assert!(agent.bootstrap(cb.lb_port()).status.success());
}
