//! The issued-certificate profile (reference section 4) and CRL building, read back with
//! x509-parser and cross-checked with `openssl verify -crl_check`.

use std::{process::Command, time::Duration};

use ::time::OffsetDateTime;
use pki::{
    crl::{self, CrlInfo},
    issue::{self, DEFAULT_CERT_TTL},
    CaSigner, CertRequest, Certname, Csr, KeyAlgorithm, Serial, Validity,
};
use x509_parser::{extensions::ParsedExtension, prelude::*};

fn fixture(name: &str) -> Csr {
    let path = format!("{}/testdata/{name}.csr", env!("CARGO_MANIFEST_DIR"));
    Csr::from_pem(&std::fs::read(path).expect("fixture")).expect("parse")
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).expect("zero nanos")
}

fn new_ca(alg: KeyAlgorithm) -> CaSigner {
    let key = alg.generate().expect("key");
    let der = issue::self_signed_ca("puppetlb.example.com", &key, now(), issue::DEFAULT_CA_TTL)
        .expect("ca");
    CaSigner::new(der, key).expect("signer")
}

fn issue(ca: &CaSigner, csr: &str, serial: u64) -> pki::IssuedCert {
    let name = Certname::parse("agent1.example.com").expect("name");
    let request = CertRequest::from_csr(name, &fixture(csr));
    ca.issue(&request, Serial::new(serial), Validity::puppet(now(), DEFAULT_CERT_TTL))
        .expect("issue")
}

fn san_text(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::IPAddress(ip) => {
            format!("IP:{}", std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).expect("v4")))
        }
        other => panic!("unexpected {other}"),
    }
}

fn ext<'a>(cert: &'a X509Certificate<'a>, oid: &str) -> &'a X509Extension<'a> {
    cert.extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .unwrap_or_else(|| panic!("missing {oid}"))
}

#[test]
fn issued_certificate_follows_puppetservers_profile() {
    let ca = new_ca(KeyAlgorithm::Rsa2048);
    let issued = issue(&ca, "pp-role", 2);
    let (_, cert) = X509Certificate::from_der(&issued.der).expect("parse issued");
    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).expect("parse ca");

    assert_eq!(cert.version(), X509Version::V3);
    assert_eq!(cert.raw_serial(), &[2]);
    assert_eq!(cert.subject().to_string(), "CN=agent1.example.com");
    assert_eq!(
        cert.issuer().as_raw(),
        ca_cert.subject().as_raw(),
        "issuer bytes equal the CA subject"
    );
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.11",
        "sha256WithRSA"
    );
    let nb = cert.validity().not_before.to_datetime();
    let na = cert.validity().not_after.to_datetime();
    assert!(
        (now() - ::time::Duration::days(1) - nb).whole_seconds().abs() <= 2,
        "notBefore is now - 1 day"
    );
    assert_eq!((na - nb).whole_seconds(), DEFAULT_CERT_TTL.as_secs() as i64 + 86_400);

    let ku = ext(&cert, "2.5.29.15");
    assert!(ku.critical);
    let ParsedExtension::KeyUsage(usage) = ku.parsed_extension() else { panic!("key usage") };
    assert!(usage.digital_signature() && usage.key_encipherment() && !usage.key_cert_sign());
    let eku = ext(&cert, "2.5.29.37");
    assert!(eku.critical);
    let ParsedExtension::ExtendedKeyUsage(eku) = eku.parsed_extension() else { panic!("eku") };
    assert!(eku.server_auth && eku.client_auth);
    let bc = ext(&cert, "2.5.29.19");
    assert!(bc.critical);
    let ParsedExtension::BasicConstraints(bc) = bc.parsed_extension() else { panic!("bc") };
    assert!(!bc.ca);

    let ParsedExtension::SubjectKeyIdentifier(ski) = ext(&cert, "2.5.29.14").parsed_extension()
    else {
        panic!("ski")
    };
    let ParsedExtension::SubjectKeyIdentifier(ca_ski) =
        ext(&ca_cert, "2.5.29.14").parsed_extension()
    else {
        panic!("ca ski")
    };
    let ParsedExtension::AuthorityKeyIdentifier(aki) = ext(&cert, "2.5.29.35").parsed_extension()
    else {
        panic!("aki")
    };
    assert_eq!(aki.key_identifier.as_ref().map(|k| k.0), Some(ca_ski.0));
    assert_eq!(aki.authority_cert_serial, Some(&[1u8][..]), "AKI names the CA's serial");
    assert!(aki.authority_cert_issuer.is_some(), "AKI names the CA's issuer");
    let expected_ski = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &cert.public_key().subject_public_key.data,
    );
    assert_eq!(ski.0, expected_ski.as_ref());

    let comment = ext(&cert, "2.16.840.1.113730.1.13");
    assert!(!comment.critical);
    assert!(String::from_utf8_lossy(comment.value).contains("Puppet Server Internal Certificate"));
    let ParsedExtension::SubjectAlternativeName(san) = ext(&cert, "2.5.29.17").parsed_extension()
    else {
        panic!("san")
    };
    assert_eq!(
        san.general_names.iter().map(san_text).collect::<Vec<_>>(),
        ["DNS:agent1.example.com"]
    );
    let role = ext(&cert, "1.3.6.1.4.1.34380.1.1.13");
    assert_eq!(role.value, &[0x0c, 0x03, b'w', b'e', b'b'], "pp_role carried over byte for byte");
    assert!(!role.critical);

    let criticals: Vec<bool> = cert.extensions().iter().map(|e| e.critical).collect();
    let first_critical = criticals.iter().position(|c| *c).expect("some critical");
    assert!(
        criticals[first_critical..].iter().all(|c| *c),
        "critical extensions come last: {criticals:?}"
    );
}

#[test]
fn alt_names_keep_the_request_order_and_add_the_certname() {
    let ca = new_ca(KeyAlgorithm::EcP256);
    let name = Certname::parse("agent1.example.com").expect("name");
    let mut request = CertRequest::from_csr(name, &fixture("p256"));
    request.alt_names =
        vec![pki::AltName::Dns("puppet".into()), pki::AltName::Ip("10.0.0.5".parse().expect("ip"))];
    let issued = ca
        .issue(&request, Serial::new(7), Validity::puppet(now(), Duration::from_secs(3600)))
        .expect("issue");
    let (_, cert) = X509Certificate::from_der(&issued.der).expect("parse");
    let ParsedExtension::SubjectAlternativeName(san) = ext(&cert, "2.5.29.17").parsed_extension()
    else {
        panic!("san")
    };
    let names: Vec<String> = san.general_names.iter().map(san_text).collect();
    assert_eq!(names, ["DNS:puppet", "IP:10.0.0.5", "DNS:agent1.example.com"]);
    assert!(
        cert.signature_algorithm.algorithm.to_id_string().starts_with("1.2.840.10045.4.3"),
        "ecdsa"
    );
}

#[test]
fn ca_certificate_is_a_puppet_ca() {
    let ca = new_ca(KeyAlgorithm::EcP384);
    let (_, cert) = X509Certificate::from_der(ca.cert_der()).expect("parse");
    assert_eq!(cert.subject().to_string(), "CN=Puppet CA: puppetlb.example.com");
    assert_eq!(cert.subject().as_raw(), cert.issuer().as_raw());
    assert_eq!(cert.raw_serial(), &[1]);
    let ParsedExtension::BasicConstraints(bc) = ext(&cert, "2.5.29.19").parsed_extension() else {
        panic!("bc")
    };
    assert!(bc.ca && bc.path_len_constraint.is_none());
    let ParsedExtension::KeyUsage(ku) = ext(&cert, "2.5.29.15").parsed_extension() else {
        panic!("ku")
    };
    assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
    assert!(cert.verify_signature(None).is_ok());
}

#[test]
fn crls_grow_by_revocation_and_keep_their_entries() {
    let ca = new_ca(KeyAlgorithm::EcP256);
    let empty =
        CrlInfo::from_der(&crl::build(&ca, &[], 0, now()).expect("empty crl")).expect("parse");
    assert_eq!(empty.number, 0);
    assert!(empty.revoked.is_empty());
    assert_eq!(empty.next_update.map(|t| (t - empty.this_update).whole_days()), Some(5 * 365));

    let first = crl::revoke(&ca, &empty, &[vec![3]], now(), 0).expect("revoke").expect("changed");
    let first = CrlInfo::from_der(&first).expect("parse");
    assert_eq!(first.number, 1);
    assert!(first.is_revoked(&[3]) && first.is_revoked(&[0, 3]) && !first.is_revoked(&[4]));
    assert_eq!(first.revoked[0].reason, Some(1), "keyCompromise");

    assert!(
        crl::revoke(&ca, &first, &[vec![3]], now(), 0).expect("noop").is_none(),
        "already revoked: unchanged"
    );
    let second = CrlInfo::from_der(
        &crl::revoke(&ca, &first, &[vec![4], vec![0x01, 0x00]], now(), 0)
            .expect("revoke")
            .expect("changed"),
    )
    .expect("parse");
    assert_eq!(second.number, 2);
    assert_eq!(second.revoked.len(), 3);
    assert_eq!(second.revoked[0], first.revoked[0], "earlier entries are kept as they were");

    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).expect("parse");
    let crl_der = crl::build(&ca, &second.revoked, 2, now()).expect("crl");
    assert!(crl::verify_signature(&crl_der, ca_cert.public_key().raw).is_ok());
    let other = new_ca(KeyAlgorithm::EcP256);
    let (_, other_cert) = X509Certificate::from_der(other.cert_der()).expect("parse");
    assert!(crl::verify_signature(&crl_der, other_cert.public_key().raw).is_err());
}

#[test]
fn pruning_drops_expired_and_repeated_entries_and_nothing_else() {
    let ca = new_ca(KeyAlgorithm::EcP256);
    let entry =
        |serial: u8| crl::RevokedEntry { serial: vec![serial], revoked_at: now(), reason: Some(1) };
    let der = crl::build(&ca, &[entry(3), entry(4), entry(5), entry(4)], 7, now()).expect("crl");
    let current = CrlInfo::from_der(&der).expect("parse");
    let expired = std::collections::HashSet::from([vec![5], vec![9]]);
    let pruned = crl::prune(&ca, &current, &expired, now(), 1000).expect("prune").expect("changed");
    let pruned = CrlInfo::from_der(&pruned).expect("parse");
    assert_eq!(pruned.revoked, vec![current.revoked[0].clone(), current.revoked[1].clone()]);
    assert_eq!(pruned.number, 1000, "numbered as every CRL change is");
    let none = std::collections::HashSet::from([vec![9]]);
    assert!(crl::prune(&ca, &pruned, &none, now(), 0).expect("prune").is_none(), "nothing to drop");
}

/// `openssl verify -crl_check` accepts the issued certificate with the CA's CRL, and rejects it
/// once the CRL lists it — for an RSA and an EC CA.
#[test]
fn openssl_verifies_issued_certs_and_crls() {
    for alg in [KeyAlgorithm::Rsa2048, KeyAlgorithm::EcP256] {
        let ca = new_ca(alg);
        let issued = issue(&ca, "rsa2048", 2);
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, label: &str, der: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, pki::pemfile::encode(label, der)).expect("write");
            path
        };
        let ca_path = write("ca.pem", "CERTIFICATE", ca.cert_der());
        let cert_path = write("cert.pem", "CERTIFICATE", &issued.der);
        let empty = crl::build(&ca, &[], 0, now()).expect("crl");
        let crl_path = write("crl.pem", "X509 CRL", &empty);
        let verify = |crl: &std::path::Path| {
            Command::new("openssl")
                .args(["verify", "-crl_check", "-x509_strict", "-purpose", "sslclient", "-CAfile"])
                .arg(&ca_path)
                .arg("-CRLfile")
                .arg(crl)
                .arg(&cert_path)
                .output()
                .expect("run openssl (the test command installs it)")
        };
        let ok = verify(&crl_path);
        assert!(
            ok.status.success(),
            "{alg}: {}{}",
            String::from_utf8_lossy(&ok.stdout),
            String::from_utf8_lossy(&ok.stderr)
        );

        let info = CrlInfo::from_der(&empty).expect("parse");
        let revoked = crl::revoke(&ca, &info, &[issued.serial.to_be_bytes()], now(), 0)
            .expect("revoke")
            .expect("changed");
        let revoked_path = write("crl2.pem", "X509 CRL", &revoked);
        let refused = verify(&revoked_path);
        assert!(!refused.status.success(), "{alg}: revoked cert must fail");
        let text = String::from_utf8_lossy(&refused.stdout).to_string()
            + &String::from_utf8_lossy(&refused.stderr);
        assert!(text.contains("certificate revoked"), "{alg}: {text}");
    }
}

/// A renewal asks for what the old certificate had: its name, key, SANs and Puppet extensions
/// (byte for byte), `pp_cli_auth` included; the profile's own extensions are written anew.
#[test]
fn a_renewal_request_carries_over_the_old_certificate() {
    let ca = new_ca(KeyAlgorithm::EcP256);
    let name = Certname::parse("agent1.example.com").expect("name");
    let mut request = CertRequest::from_csr(name, &fixture("pp-role"));
    request.alt_names.push(pki::AltName::Dns("puppet".into()));
    request.cli_auth = true;
    let old = ca
        .issue(&request, Serial::new(7), Validity::puppet(now(), DEFAULT_CERT_TTL))
        .expect("issue");
    let renewal = CertRequest::from_certificate(&old.der).expect("renewal request");
    assert_eq!(renewal.name.as_str(), "agent1.example.com");
    assert_eq!(renewal.public_key, request.public_key);
    assert!(renewal.cli_auth);
    let renewed = ca
        .issue(&renewal, Serial::new(8), Validity::puppet(now(), Duration::from_secs(90 * 86_400)))
        .expect("renew");
    let (_, before) = X509Certificate::from_der(&old.der).expect("old");
    let (_, after) = X509Certificate::from_der(&renewed.der).expect("new");
    let content = |cert: &X509Certificate<'_>| {
        let mut exts: Vec<(String, bool, Vec<u8>)> = cert
            .extensions()
            .iter()
            .map(|e| (e.oid.to_id_string(), e.critical, e.value.to_vec()))
            .collect();
        exts.sort();
        exts
    };
    assert_eq!(content(&before), content(&after), "the same extensions, values and criticality");
    assert_eq!(before.subject().to_string(), after.subject().to_string());
    assert_eq!(before.public_key().raw, after.public_key().raw);
    assert_ne!(before.raw_serial(), after.raw_serial());
    assert!(ca.issued(&renewed.der) && ca.issued(&old.der));
    let other = new_ca(KeyAlgorithm::EcP256);
    assert!(!other.issued(&old.der), "another CA's certificate is not ours");
}
