//! The filesystem store and the CA service on it: setup, the CSR pipeline, concurrent
//! signing, revocation, and recovery from what a crash leaves behind.

use std::{
    collections::BTreeSet, fs, os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration,
};

use ca::{
    error::CaError,
    fs::FsStore,
    service::{CaService, CaSettings, State},
    setup,
};
use pki::{Certname, KeyAlgorithm, KeyPair};

fn name(text: &str) -> Certname {
    Certname::parse(text).expect("valid certname")
}

fn new_ca(dir: &Path, settings: CaSettings) -> CaService {
    setup::setup(dir, "puppetlb.example.com", KeyAlgorithm::EcP256, pki::issue::DEFAULT_CA_TTL)
        .expect("setup");
    open(dir, settings)
}

fn open(dir: &Path, settings: CaSettings) -> CaService {
    let (store, _) = FsStore::open(dir).expect("open");
    CaService::open(Arc::new(store), settings).expect("service")
}

/// A CSR for `cn` made with rcgen (a P-256 key), as an agent would send it.
fn csr_pem(cn: &str) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.serialize_request(&key).expect("csr").pem().expect("pem")
}

fn inventory_serials(dir: &Path) -> Vec<u64> {
    let text = fs::read_to_string(dir.join("inventory.txt")).expect("inventory");
    pki::inventory::parse(&text).map(|e| e.serial.value()).collect()
}

#[test]
fn setup_writes_puppetservers_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = new_ca(dir.path(), CaSettings::default());
    let d = dir.path();
    for file in [
        "ca_crt.pem",
        "ca_key.pem",
        "ca_pub.pem",
        "ca_crl.pem",
        "serial",
        "inventory.txt",
        "infra_inventory.txt",
        "infra_serials",
    ] {
        assert!(d.join(file).is_file(), "{file}");
    }
    assert!(d.join("signed").is_dir() && d.join("requests").is_dir());
    assert_eq!(
        fs::metadata(d.join("ca_key.pem")).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::read_to_string(d.join("serial")).expect("serial"), "0002");
    assert_eq!(inventory_serials(d), [1]);
    assert!(fs::read_to_string(d.join("inventory.txt"))
        .expect("inv")
        .ends_with("/CN=Puppet CA: puppetlb.example.com\n"));
    let crl = service.crl().expect("crl");
    assert_eq!((crl.number, crl.revoked.len()), (0, 0));
    assert_eq!(service.signer().subject(), "CN=Puppet CA: puppetlb.example.com");
    let again = setup::setup(d, "other", KeyAlgorithm::EcP256, Duration::from_secs(3600));
    assert!(again.is_err(), "setup must refuse to overwrite a CA");
}

#[test]
fn csr_pipeline_follows_puppetservers_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(dir.path(), CaSettings::default());
    let agent = name("agent1.example.com");

    let pending = ca
        .accept_request("agent1.example.com", csr_pem("agent1.example.com").as_bytes())
        .expect("accept");
    assert_eq!(pending.name, agent);
    let dup = ca
        .accept_request("agent1.example.com", csr_pem("agent1.example.com").as_bytes())
        .expect_err("duplicate");
    assert_eq!(
        dup.to_string(),
        "agent1.example.com already has a requested certificate; ignoring certificate request"
    );
    // A duplicate wins over a subject mismatch, as in puppetserver.
    let dup = ca
        .accept_request("agent1.example.com", csr_pem("other.example.com").as_bytes())
        .expect_err("duplicate first");
    assert!(matches!(dup, CaError::Duplicate { .. }));
    let mismatch = ca
        .accept_request("agent2.example.com", csr_pem("other.example.com").as_bytes())
        .expect_err("mismatch");
    assert!(matches!(mismatch, CaError::Rejected(_)), "{mismatch}");
    assert!(
        ca.store().request(&name("agent2.example.com")).expect("read").is_none(),
        "a rejected CSR is not saved"
    );

    let issued = ca.sign(&agent, None).expect("sign");
    assert_eq!(issued.serial.value(), 2);
    assert!(ca.store().request(&agent).expect("read").is_none(), "the CSR is removed once signed");
    let dup = ca
        .accept_request("agent1.example.com", csr_pem("agent1.example.com").as_bytes())
        .expect_err("duplicate");
    assert!(dup.to_string().contains("already has a signed certificate"), "{dup}");
    assert!(matches!(ca.sign(&agent, None), Err(CaError::NoRequest(_))));

    ca.revoke(std::slice::from_ref(&agent)).expect("revoke");
    assert_eq!(ca.status(&agent).expect("status").map(|s| s.state), Some(State::Revoked));
    let dup = ca
        .accept_request("agent1.example.com", csr_pem("agent1.example.com").as_bytes())
        .expect_err("duplicate");
    assert!(dup.to_string().contains("already has a revoked certificate"), "{dup}");
    assert!(matches!(ca.revoke(&[name("nobody.example.com")]), Err(CaError::NoCertificate(_))));
    let crl_before = fs::read(dir.path().join("ca_crl.pem")).expect("crl");
    ca.revoke(std::slice::from_ref(&agent)).expect("revoking twice is a no-op");
    assert_eq!(
        fs::read(dir.path().join("ca_crl.pem")).expect("crl"),
        crl_before,
        "CRL untouched by a repeated revoke"
    );
}

#[test]
fn clean_revokes_then_deletes_and_reports_the_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(dir.path(), CaSettings::default());
    for n in ["a.example.com", "b.example.com"] {
        ca.accept_request(n, csr_pem(n).as_bytes()).expect("accept");
        ca.sign(&name(n), None).expect("sign");
    }
    let outcome = ca.clean(&[name("a.example.com"), name("ghost.example.com")]).expect("clean");
    assert_eq!(outcome.missing, [name("ghost.example.com")]);
    assert!(ca.store().certificate(&name("a.example.com")).expect("read").is_none());
    let crl = ca.crl().expect("crl");
    assert_eq!(crl.revoked.len(), 1);
    assert_eq!(crl.number, 1);
    let states: Vec<(String, State)> = ca
        .statuses(None)
        .expect("statuses")
        .into_iter()
        .map(|s| (s.name.to_string(), s.state))
        .collect();
    assert_eq!(states, [("b.example.com".to_owned(), State::Signed)]);
}

#[test]
fn concurrent_signing_never_reuses_a_serial() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Arc::new(new_ca(dir.path(), CaSettings::default()));
    let names: Vec<String> = (0..40).map(|i| format!("node{i}.example.com")).collect();
    for n in &names {
        ca.accept_request(n, csr_pem(n).as_bytes()).expect("accept");
    }
    // Two services on the same directory stand for two CA processes sharing it.
    let other = Arc::new(open(dir.path(), CaSettings::default()));
    std::thread::scope(|scope| {
        for (i, n) in names.iter().enumerate() {
            let service = if i % 2 == 0 { ca.clone() } else { other.clone() };
            scope.spawn(move || service.sign(&name(n), None).expect("sign"));
        }
    });
    let serials = inventory_serials(dir.path());
    let unique: BTreeSet<u64> = serials.iter().copied().collect();
    assert_eq!(serials.len(), names.len() + 1);
    assert_eq!(unique.len(), serials.len(), "duplicate serial in {serials:?}");
    // Serials come from blocks each store reserves, so they need not be contiguous, but the
    // serial file is always ahead of every serial in use.
    let next =
        pki::Serial::parse_file(&fs::read_to_string(dir.path().join("serial")).expect("serial"))
            .expect("serial file")
            .value();
    assert!(unique.iter().all(|s| *s < next), "serial file {next} not ahead of {unique:?}");
}

#[test]
fn opening_repairs_what_a_crash_left_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = new_ca(d, CaSettings::default());
    for n in ["a.example.com", "b.example.com"] {
        ca.accept_request(n, csr_pem(n).as_bytes()).expect("accept");
        ca.sign(&name(n), None).expect("sign");
    }
    // A crash between storing b's certificate and appending its inventory line, with b's CSR
    // still there, a torn next line, a stale temp file, and a serial file rolled back.
    let inventory = fs::read_to_string(d.join("inventory.txt")).expect("inv");
    let without_b: String = inventory
        .lines()
        .filter(|l| !l.ends_with("/CN=b.example.com"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(d.join("inventory.txt"), format!("{without_b}0x0009 2026-")).expect("write");
    fs::write(d.join("requests/b.example.com.pem"), csr_pem("b.example.com")).expect("write");
    fs::write(d.join("signed/.crossbar-tmp-999-1"), "partial").expect("write");
    fs::write(d.join("serial"), "0002").expect("write");
    drop(ca);

    let (_, recovery) = FsStore::open(d).expect("open");
    assert_eq!(recovery.temp_files_removed, 1);
    assert_eq!(recovery.inventory_lines_added, 1);
    assert_eq!(recovery.requests_removed, 1);
    assert_eq!(recovery.serial_raised_to.map(|s| s.value()), Some(4));
    let serials = inventory_serials(d);
    assert_eq!(serials, [1, 2, 3], "torn line skipped, b's line restored");

    let ca = open(d, CaSettings::default());
    ca.accept_request("c.example.com", csr_pem("c.example.com").as_bytes()).expect("accept");
    assert_eq!(ca.sign(&name("c.example.com"), None).expect("sign").serial.value(), 4);
    let (_, second) = FsStore::open(d).expect("open again");
    assert!(second.is_clean(), "nothing left to repair: {second:?}");
}

#[test]
fn an_incomplete_directory_is_refused_with_the_missing_files_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_ca(dir.path(), CaSettings::default());
    fs::remove_file(dir.path().join("serial")).expect("rm");
    let err = FsStore::open(dir.path()).expect_err("incomplete");
    assert!(err.to_string().contains("serial missing"), "{err}");
}

#[test]
fn pending_requests_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(dir.path(), CaSettings { max_pending_requests: 2, ..CaSettings::default() });
    ca.accept_request("a.example.com", csr_pem("a.example.com").as_bytes()).expect("a");
    ca.accept_request("b.example.com", csr_pem("b.example.com").as_bytes()).expect("b");
    let err =
        ca.accept_request("c.example.com", csr_pem("c.example.com").as_bytes()).expect_err("cap");
    assert!(matches!(err, CaError::TooManyPending(2)));
}

#[test]
fn generate_issues_a_server_cert_with_its_alt_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(dir.path(), CaSettings::default());
    let alt = vec![pki::AltName::Dns("puppet".into()), pki::AltName::Dns("localhost".into())];
    let (key_pem, issued) = ca
        .generate(&name("puppetlb.example.com"), alt, true, KeyAlgorithm::EcP256)
        .expect("generate");
    assert!(key_pem.contains("PRIVATE KEY"));
    let d = pki::describe::certificate(&issued.der).expect("describe");
    assert_eq!(d.dns_alt_names, ["DNS:puppet", "DNS:localhost", "DNS:puppetlb.example.com"]);
    assert_eq!(d.authorization_extensions.get("pp_cli_auth").map(String::as_str), Some("true"));
    assert!(
        ca.generate(&name("puppetlb.example.com"), vec![], false, KeyAlgorithm::EcP256).is_err(),
        "no second cert for the name"
    );
}
