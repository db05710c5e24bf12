//! CSR parsing and signing policy, table-driven over OpenSSL-made requests (testdata/gen.sh).

use pki::{csr::KeyKind, AltName, Certname, Csr, CsrError, CsrPolicy, PolicyViolation};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{name}.csr", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn csr(name: &str) -> Csr {
    Csr::from_pem(&fixture(name)).unwrap_or_else(|e| panic!("parse {name}: {e}"))
}

/// A short tag for each violation, so the table reads well.
fn tag(v: &PolicyViolation) -> &'static str {
    use PolicyViolation::*;
    match v {
        NameMismatch { .. } => "mismatch",
        BadSubject(_) => "subject",
        AltNamesDisallowed { .. } => "sans",
        AltNameWildcard { .. } => "san-wildcard",
        AltNameKind { .. } => "san-kind",
        AuthorizationExtension { .. } => "auth-ext",
        ExtensionsNotPermitted(_) => "not-permitted",
        WeakRsaKey { .. } => "weak-rsa",
        UnsupportedKey { .. } => "key",
        BadSignature => "signature",
    }
}

#[test]
fn signing_policy_table() {
    let strict = CsrPolicy::default();
    let open = CsrPolicy { allow_subject_alt_names: true, allow_authorization_extensions: true };
    let cases: &[(&str, &str, CsrPolicy, Result<(), &str>)] = &[
        ("rsa2048", "agent1.example.com", strict, Ok(())),
        ("p256", "agent1.example.com", strict, Ok(())),
        ("p384", "agent1.example.com", strict, Ok(())),
        ("extra-rdns", "agent1.example.com", strict, Ok(())),
        ("own-san", "agent1.example.com", strict, Ok(())),
        ("pp-role", "agent1.example.com", strict, Ok(())),
        ("p256", "agent2.example.com", strict, Err("mismatch")),
        ("no-cn", "agent1.example.com", strict, Err("mismatch")),
        ("upper", "agent1.example.com", strict, Err("mismatch")),
        ("rsa1024", "agent1.example.com", strict, Err("weak-rsa")),
        ("p521", "agent1.example.com", strict, Err("key")),
        ("ed25519", "agent1.example.com", strict, Err("key")),
        ("extra-san", "agent1.example.com", strict, Err("sans")),
        ("extra-san", "agent1.example.com", open, Ok(())),
        ("wildcard-san", "agent1.example.com", strict, Err("sans")),
        ("wildcard-san", "agent1.example.com", open, Err("san-wildcard")),
        ("email-san", "agent1.example.com", open, Err("san-kind")),
        ("pp-auth", "agent1.example.com", strict, Err("auth-ext")),
        ("pp-auth", "agent1.example.com", open, Ok(())),
        ("pp-cli-auth", "agent1.example.com", strict, Err("auth-ext")),
        ("pp-cli-auth", "agent1.example.com", open, Err("not-permitted")),
        ("key-usage", "agent1.example.com", open, Err("not-permitted")),
        ("bad-signature", "agent1.example.com", strict, Err("signature")),
    ];
    for (file, url_name, policy, expected) in cases {
        let name = Certname::parse(url_name).expect("valid test certname");
        let got = policy.review(&name, &csr(file));
        assert_eq!(got.as_ref().map_err(tag).copied(), *expected, "{file} as {url_name}: {got:?}");
    }
}

#[test]
fn violation_messages_use_puppetservers_words() {
    let name = Certname::parse("agent2.example.com").expect("name");
    let err = CsrPolicy::default().review(&name, &csr("p256")).expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        r#"Instance name "agent1.example.com" does not match requested key "agent2.example.com""#
    );

    let name = Certname::parse("agent1.example.com").expect("name");
    let err = CsrPolicy::default().review(&name, &csr("extra-san")).expect_err("sans");
    assert!(err.to_string().starts_with("CSR 'agent1.example.com' contains extra subject alternative names (DNS:agent1.example.com, DNS:puppet, IP:10.0.0.5), which are disallowed."), "{err}");

    let open = CsrPolicy { allow_subject_alt_names: true, allow_authorization_extensions: true };
    let err = open.review(&name, &csr("key-usage")).expect_err("whitelist");
    assert_eq!(err.to_string(), "Found extensions that are not permitted: 2.5.29.15, 2.5.29.19");
}

#[test]
fn parsing_extracts_what_policy_and_issuing_need() {
    let parsed = csr("extra-san");
    assert_eq!(parsed.common_name(), Some("agent1.example.com"));
    assert_eq!(
        parsed.alt_names(),
        &[
            AltName::Dns("agent1.example.com".into()),
            AltName::Dns("puppet".into()),
            AltName::Ip("10.0.0.5".parse().expect("ip"))
        ]
    );
    assert_eq!(csr("rsa2048").public_key().kind, KeyKind::Rsa { bits: 2048 });
    assert_eq!(csr("rsa1024").public_key().kind, KeyKind::Rsa { bits: 1024 });
    let role = csr("pp-role");
    let oids: Vec<&str> = role.extensions().iter().map(|e| e.oid.as_str()).collect();
    assert_eq!(oids, ["1.3.6.1.4.1.34380.1.1.13", "1.3.6.1.4.1.34380.1.2.1"]);
    assert!(role.signature_valid());
    assert!(!csr("bad-signature").signature_valid());
}

#[test]
fn malformed_requests_are_errors_not_panics() {
    let good = String::from_utf8(fixture("p256")).expect("ascii");
    let body_start = good.find('\n').expect("newline") + 1;
    let truncated = format!("{}\n-----END CERTIFICATE REQUEST-----\n", &good[..body_start + 40]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("whitespace", b" \n\t ".to_vec()),
        ("not pem", b"hello".to_vec()),
        ("two csrs", format!("{good}{good}").into_bytes()),
        ("certificate label", good.replace("CERTIFICATE REQUEST", "CERTIFICATE").into_bytes()),
        ("truncated der", truncated.into_bytes()),
        (
            "garbage base64",
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                .to_vec(),
        ),
        ("oversized", vec![b'A'; pki::csr::MAX_CSR_BYTES + 1]),
        ("binary", vec![0xff, 0x00, 0x80, 0x7f]),
    ];
    for (what, bytes) in cases {
        assert!(Csr::from_pem(&bytes).is_err(), "{what} should not parse");
    }
    assert_eq!(Csr::from_pem(b"").err(), Some(CsrError::Empty));
}
