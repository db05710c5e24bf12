//! What puppetserver 8 added to the CA API, through the HTTP router: certificate renewal and
//! bulk signing, with their statuses and JSON shapes, and the service version the CLI reads.

use std::{collections::HashSet, net::SocketAddr, path::Path, sync::Arc};

use axum::{body::Body, extract::ConnectInfo};
use ca::{
    api::{self, AccessPolicy, ApiState},
    autosign::Autosign,
    fs::FsStore,
    service::{CaService, CaSettings},
    setup,
};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use pki::{Certname, KeyAlgorithm, KeyPair};
use tower::ServiceExt;

const SECRET: &str = "test-proxy-secret-0123456789";
const ADMIN: &str = "admin.example.com";

struct Ca {
    dir: tempfile::TempDir,
    state: Arc<ApiState>,
}

impl Ca {
    fn new(settings: CaSettings) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        setup::setup(
            dir.path(),
            "puppetlb.example.com",
            KeyAlgorithm::EcP256,
            pki::issue::DEFAULT_CA_TTL,
        )
        .expect("setup");
        let (store, _) = FsStore::open(dir.path()).expect("open");
        let service = Arc::new(CaService::open(Arc::new(store), settings).expect("service"));
        let access = AccessPolicy {
            proxy_secret: Some(SECRET.into()),
            trusted_proxies: vec![],
            admin_certnames: HashSet::from([ADMIN.to_owned()]),
        };
        Self { dir, state: Arc::new(ApiState::new(service, Autosign::Off, access)) }
    }

    fn service(&self) -> Arc<CaService> {
        self.state.service()
    }

    /// Issues `name` a certificate (as `ca generate` would); returns its PEM.
    fn issue(&self, name: &str) -> String {
        let (_, issued) = self
            .service()
            .generate(&Certname::parse(name).expect("name"), vec![], false, KeyAlgorithm::EcP256)
            .expect("generate");
        issued.pem
    }

    /// One request, as the LB would send it for `client` (its verified certificate PEM).
    async fn call(
        &self,
        method: &str,
        path: &str,
        client: Option<(&str, &str)>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut request =
            Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some((name, pem)) = client {
            let encoded: String = pem
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            request = request
                .header("x-crossbar-proxy-secret", SECRET)
                .header("x-client-verify", "SUCCESS")
                .header("x-client-dn", format!("CN={name}"))
                .header("x-client-cert", encoded);
        }
        let mut request = request.body(Body::from(body.to_owned())).expect("request");
        let peer: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = api::router(self.state.clone()).oneshot(request).await.expect("response");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn submit(&self, name: &str) {
        self.service().accept_request(name, csr_pem(name).as_bytes()).expect("submitted");
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn csr_pem(cn: &str) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.serialize_request(&key).expect("csr").pem().expect("pem")
}

fn der(pem: &str) -> Vec<u8> {
    pki::pemfile::single_block(pem.as_bytes(), &["CERTIFICATE"]).expect("pem")
}

#[tokio::test]
async fn renewal_issues_the_same_certificate_anew_and_keeps_the_old_one_valid() {
    let ca = Ca::new(CaSettings::default());
    let old = ca.issue("agent1.example.com");
    let (status, body) = ca
        .call("POST", "/puppet-ca/v1/certificate_renewal", Some(("agent1.example.com", &old)), "")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = pki::describe::certificate(&der(&body)).expect("a certificate");
    let before = pki::describe::certificate(&der(&old)).expect("old");
    assert_eq!(new.common_name, "agent1.example.com");
    assert_eq!(new.subject_alt_names, before.subject_alt_names);
    let (new_facts, old_facts) = (new.cert.expect("facts"), before.cert.expect("facts"));
    assert_ne!(new_facts.serial_bytes, old_facts.serial_bytes, "a new serial");
    let days =
        (new_facts.not_after_unix - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
    assert!((89..=90).contains(&days), "the renewal lifetime, 90 days: {days}");
    let stored =
        std::fs::read_to_string(ca.path().join("signed/agent1.example.com.pem")).expect("signed");
    assert_eq!(stored, body, "signed/<name>.pem is the renewed certificate");
    let inventory = std::fs::read_to_string(ca.path().join("inventory.txt")).expect("inventory");
    assert_eq!(inventory.lines().filter(|l| l.ends_with("/CN=agent1.example.com")).count(), 2);
    assert!(
        !ca.service().crl().expect("crl").is_revoked(&old_facts.serial_bytes),
        "the old certificate stays valid"
    );
    // The old certificate may renew again (puppetserver checks neither expiry nor currency).
    let again = ca
        .call("POST", "/puppet-ca/v1/certificate_renewal", Some(("agent1.example.com", &old)), "")
        .await;
    assert_eq!(again.0, StatusCode::OK);
}

#[tokio::test]
async fn renewal_refuses_what_puppetserver_refuses() {
    let ca = Ca::new(CaSettings::default());
    let old = ca.issue("agent1.example.com");
    // Anonymous (no verified certificate, or headers without the LB's secret): 403.
    let (status, _) = ca.call("POST", "/puppet-ca/v1/certificate_renewal", None, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Another CA's certificate: 403 with puppetserver's message.
    let other = Ca::new(CaSettings::default());
    let foreign = other.issue("agent1.example.com");
    let (status, body) = ca
        .call(
            "POST",
            "/puppet-ca/v1/certificate_renewal",
            Some(("agent1.example.com", &foreign)),
            "",
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "Certificate present, but does not match signature")
    );
    // A certificate for another name than the verified one grants nothing: 400.
    let (status, _) = ca
        .call("POST", "/puppet-ca/v1/certificate_renewal", Some(("agent2.example.com", &old)), "")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Revoked: 400, and nothing issued.
    ca.service()
        .revoke(&[Certname::parse("agent1.example.com").expect("name")], &ca::audit::Actor::Ca)
        .expect("revoke");
    let (status, body) = ca
        .call("POST", "/puppet-ca/v1/certificate_renewal", Some(("agent1.example.com", &old)), "")
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_REQUEST, "No valid certificate found in renewal request")
    );
    // Renewal off: puppetserver's 404.
    let off = Ca::new(CaSettings { auto_renewal_ttl: None, ..CaSettings::default() });
    let cert = off.issue("agent3.example.com");
    let (status, body) = off
        .call("POST", "/puppet-ca/v1/certificate_renewal", Some(("agent3.example.com", &cert)), "")
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, "Not Found"));
}

#[tokio::test]
async fn bulk_signing_answers_in_puppetservers_shapes() {
    let ca = Ca::new(CaSettings::default());
    let admin = ca.issue(ADMIN);
    for name in ["a.example.com", "b.example.com", "c.example.com"] {
        ca.submit(name);
    }
    // A request policy refuses (an extra SAN) lands in signing-errors and stays pending.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["d.example.com".into(), "evil.example.com".into()])
            .expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, "d.example.com");
    let csr = params.serialize_request(&key).expect("csr").pem().expect("pem");
    ca.service().accept_request("d.example.com", csr.as_bytes()).expect("saved");

    let who = Some((ADMIN, admin.as_str()));
    let body = r#"{"certnames":["a.example.com","a.example.com","ghost.example.com","d.example.com","Not A Name"]}"#;
    let (status, answer) = ca.call("POST", "/puppet-ca/v1/sign", who, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        r#"{"signed":["a.example.com"],"no-csr":["a.example.com","ghost.example.com"],"signing-errors":["d.example.com","Not A Name"]}"#
    );
    assert!(ca.path().join("signed/a.example.com.pem").exists());
    assert!(ca.path().join("requests/d.example.com.pem").exists(), "a refused request stays");

    let (status, answer) =
        ca.call("POST", "/puppet-ca/v1/sign", who, r#"{"certnames":[1,2]}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer.starts_with(r#"{"kind":"schema-violation","submitted":[1,2],"error":"#),
        "{answer}"
    );
    for nothing in ["", "not json", "{}", r#"{"certnames":null}"#] {
        let (status, answer) = ca.call("POST", "/puppet-ca/v1/sign", who, nothing).await;
        assert_eq!(
            (status, answer.as_str()),
            (StatusCode::OK, r#"{"signed":[],"no-csr":[],"signing-errors":[]}"#),
            "{nothing:?}"
        );
    }

    let (status, answer) = ca.call("POST", "/puppet-ca/v1/sign/all", who, "{}").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        r#"{"signed":["b.example.com","c.example.com"],"no-csr":[],"signing-errors":["d.example.com"]}"#
    );

    // Admins only.
    let agent = ca.issue("agent1.example.com");
    for path in ["/puppet-ca/v1/sign", "/puppet-ca/v1/sign/all"] {
        assert_eq!(
            ca.call("POST", path, Some(("agent1.example.com", &agent)), "{}").await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(ca.call("POST", path, None, "{}").await.0, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn the_ca_service_reports_a_version_with_bulk_signing() {
    let ca = Ca::new(CaSettings::default());
    let (status, body) = ca.call("GET", "/status/v1/services", None, "").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let version = json["ca"]["service_version"].as_str().expect("a version");
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().expect("numeric")).collect();
    assert!(parts >= vec![8, 4, 0], "the CLI uses bulk signing from 8.4.0: {version}");
}

#[test]
fn a_request_asking_for_auto_renewal_gets_the_renewal_lifetime() {
    let ca = Ca::new(CaSettings::default());
    let path = format!("{}/../pki/testdata/puppet-secret.csr", env!("CARGO_MANIFEST_DIR"));
    let pem =
        std::fs::read(path).expect("a CSR made by Puppet's own code, pp_auth_auto_renew = true");
    ca.service().accept_request("agent1.example.com", &pem).expect("saved");
    let issued = ca
        .service()
        .sign(
            &Certname::parse("agent1.example.com").expect("name"),
            Some(std::time::Duration::from_secs(5 * 365 * 86_400)),
            &ca::audit::Actor::Ca,
        )
        .expect("signed");
    let days = (issued.validity.not_after - issued.validity.not_before).whole_days();
    assert_eq!(
        days, 91,
        "90 days from now, not the 5 years asked (puppetserver's rule), and a day back"
    );
}
