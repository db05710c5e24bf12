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

fn inventory_serials(dir: &Path) -> Vec<u128> {
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

    let issued = ca.sign(&agent, None, &ca::audit::Actor::Ca).expect("sign");
    assert_eq!(issued.serial.value(), 2);
    assert!(ca.store().request(&agent).expect("read").is_none(), "the CSR is removed once signed");
    let dup = ca
        .accept_request("agent1.example.com", csr_pem("agent1.example.com").as_bytes())
        .expect_err("duplicate");
    assert!(dup.to_string().contains("already has a signed certificate"), "{dup}");
    assert!(matches!(ca.sign(&agent, None, &ca::audit::Actor::Ca), Err(CaError::NoRequest(_))));

    ca.revoke(std::slice::from_ref(&agent), &ca::audit::Actor::Ca).expect("revoke");
    assert_eq!(ca.status(&agent).expect("status").map(|s| s.state), Some(State::Revoked));
    let dup = ca
        .accept_request("agent1.example.com", csr_pem("agent1.example.com").as_bytes())
        .expect_err("duplicate");
    assert!(dup.to_string().contains("already has a revoked certificate"), "{dup}");
    assert!(matches!(
        ca.revoke(&[name("nobody.example.com")], &ca::audit::Actor::Ca),
        Err(CaError::NoCertificate(_))
    ));
    let crl_before = fs::read(dir.path().join("ca_crl.pem")).expect("crl");
    ca.revoke(std::slice::from_ref(&agent), &ca::audit::Actor::Ca)
        .expect("revoking twice is a no-op");
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
        ca.sign(&name(n), None, &ca::audit::Actor::Ca).expect("sign");
    }
    let outcome = ca
        .clean(&[name("a.example.com"), name("ghost.example.com")], &ca::audit::Actor::Ca)
        .expect("clean");
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
            scope.spawn(move || service.sign(&name(n), None, &ca::audit::Actor::Ca).expect("sign"));
        }
    });
    let serials = inventory_serials(dir.path());
    let unique: BTreeSet<u128> = serials.iter().copied().collect();
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
        ca.sign(&name(n), None, &ca::audit::Actor::Ca).expect("sign");
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
    assert_eq!(
        ca.sign(&name("c.example.com"), None, &ca::audit::Actor::Ca).expect("sign").serial.value(),
        4
    );
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

/// A test double: the directory store, except that the first `collisions` signings are told
/// their serial is taken (as the database store says when a random serial collides).
struct CollidingStore {
    inner: FsStore,
    collisions: std::sync::atomic::AtomicUsize,
}

impl ca::CaStore for CollidingStore {
    fn ca_bundle(&self) -> Result<ca::store::Stamped, ca::store::StoreError> {
        self.inner.ca_bundle()
    }
    fn crl_chain(&self) -> Result<ca::store::Stamped, ca::store::StoreError> {
        self.inner.crl_chain()
    }
    fn ca_key_pem(&self) -> Result<String, ca::store::StoreError> {
        self.inner.ca_key_pem()
    }
    fn certificate(
        &self,
        name: &Certname,
    ) -> Result<Option<ca::store::Stamped>, ca::store::StoreError> {
        self.inner.certificate(name)
    }
    fn request(&self, name: &Certname) -> Result<Option<Vec<u8>>, ca::store::StoreError> {
        self.inner.request(name)
    }
    fn existing(
        &self,
        name: &Certname,
    ) -> Result<Option<ca::store::Existing>, ca::store::StoreError> {
        self.inner.existing(name)
    }
    fn certificates(&self) -> Result<Vec<(Certname, Vec<u8>)>, ca::store::StoreError> {
        self.inner.certificates()
    }
    fn requests(&self) -> Result<Vec<(Certname, Vec<u8>)>, ca::store::StoreError> {
        self.inner.requests()
    }
    fn pending_count(&self) -> Result<usize, ca::store::StoreError> {
        self.inner.pending_count()
    }
    fn expired_serials(
        &self,
        now: time::OffsetDateTime,
    ) -> Result<std::collections::HashSet<Vec<u8>>, ca::store::StoreError> {
        self.inner.expired_serials(now)
    }
    fn save_request(
        &self,
        name: &Certname,
        pem: &[u8],
        overwrite: bool,
    ) -> Result<(), ca::store::StoreError> {
        self.inner.save_request(name, pem, overwrite)
    }
    fn delete_request(&self, name: &Certname) -> Result<bool, ca::store::StoreError> {
        self.inner.delete_request(name)
    }
    fn delete_certificate(&self, name: &Certname) -> Result<bool, ca::store::StoreError> {
        self.inner.delete_certificate(name)
    }
    fn reserve_serial(&self) -> Result<pki::Serial, ca::store::StoreError> {
        self.inner.reserve_serial()
    }
    fn store_issued(
        &self,
        name: &Certname,
        issued: &pki::IssuedCert,
        from: ca::store::IssueFrom<'_>,
        overwrite: bool,
        audit: &ca::audit::AuditEvent,
    ) -> Result<(), ca::store::StoreError> {
        use std::sync::atomic::Ordering;
        let left = self.collisions.load(Ordering::SeqCst);
        if left > 0 {
            self.collisions.store(left - 1, Ordering::SeqCst);
            return Err(ca::store::StoreError::SerialTaken(issued.serial));
        }
        self.inner.store_issued(name, issued, from, overwrite, audit)
    }
    fn update_crl(
        &self,
        update: &mut ca::store::CrlUpdateFn<'_>,
    ) -> Result<bool, ca::store::CrlUpdateFailure> {
        self.inner.update_crl(update)
    }
}

#[test]
fn a_taken_serial_is_signed_again_with_another_and_gives_up_after_a_few() {
    let dir = tempfile::tempdir().expect("tempdir");
    setup::setup(
        dir.path(),
        "puppetlb.example.com",
        KeyAlgorithm::EcP256,
        pki::issue::DEFAULT_CA_TTL,
    )
    .expect("setup");
    let colliding = |collisions: usize| {
        let (inner, _) = FsStore::open(dir.path()).expect("open");
        let store = CollidingStore { inner, collisions: collisions.into() };
        CaService::open(Arc::new(store), CaSettings::default()).expect("service")
    };
    let service = colliding(2);
    let pending = service.check_request("web1", csr_pem("web1").as_bytes()).expect("check");
    let issued = service.autosign(&pending).expect("signed on the third serial");
    assert!(inventory_serials(dir.path()).contains(&issued.serial.value()));
    let service = colliding(100);
    let pending = service.check_request("web2", csr_pem("web2").as_bytes()).expect("check");
    let error = service.autosign(&pending).expect_err("every serial taken");
    assert!(error.to_string().contains("serials in a row were taken"), "{error}");
    assert!(service.store().certificate(&name("web2")).expect("read").is_none());
}

#[test]
fn pruning_drops_expired_certificates_from_the_directorys_crl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = new_ca(dir.path(), CaSettings::default());
    let admin = ca::audit::Actor::Admin("ops".into());
    for n in ["short", "long"] {
        service.accept_request(n, csr_pem(n).as_bytes()).expect("submit");
    }
    let short = service.sign(&name("short"), Some(Duration::from_secs(1)), &admin).expect("sign");
    service.sign(&name("long"), None, &admin).expect("sign");
    service.revoke(&[name("short"), name("long")], &admin).expect("revoke");
    assert_eq!(service.prune_crl(&admin).expect("prune"), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while time::OffsetDateTime::now_utc() <= short.validity.not_after {
        assert!(std::time::Instant::now() < deadline, "the certificate never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(service.prune_crl(&admin).expect("prune"), 1);
    let crl = service.crl().expect("crl");
    assert_eq!(crl.revoked.len(), 1);
    assert!(!crl.is_revoked(&short.serial.to_be_bytes()));
}

/// A CA node died after saving an autosigned request and before signing it. Puppet's agent
/// submits the same key again (a 400 sends it to fetch a certificate that would never come):
/// the pending request is signed then. A different key under the name is still refused.
#[test]
fn a_request_submitted_again_with_the_same_key_is_autosigned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = new_ca(dir.path(), CaSettings::default());
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr_with = |key: &KeyPair| {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "agent1");
        params.serialize_request(key).expect("csr").pem().expect("pem")
    };
    // What the dead node left: the request saved, nothing signed.
    service.accept_request("agent1", csr_with(&key).as_bytes()).expect("saved");
    let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let error =
        service.check_request("agent1", csr_with(&other).as_bytes()).expect_err("another key");
    assert!(matches!(error, CaError::Duplicate { state: "requested", .. }), "{error}");
    // The agent's retry: a fresh CSR (Puppet builds one each time) with the same key.
    let again = service.check_request("agent1", csr_with(&key).as_bytes()).expect("same key");
    let error = service.save_request(&again).expect_err("without autosign it stays a duplicate");
    assert!(matches!(error, CaError::Duplicate { state: "requested", .. }), "{error}");
    let issued = service.autosign(&again).expect("autosigned now");
    let served = service.store().certificate(&name("agent1")).expect("read").expect("signed");
    assert_eq!(served.bytes, issued.pem.as_bytes());
    assert!(service.store().request(&name("agent1")).expect("read").is_none(), "request consumed");
}
