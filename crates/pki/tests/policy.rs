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

/// Puppet writes custom attributes (challengePassword above all) as PrintableStrings whatever
/// their characters; such requests parse, keep their attribute text, and verify.
#[test]
fn csrs_as_puppet_writes_them_parse_with_their_attributes() {
    let read = |name: &str| {
        let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        Csr::from_pem(&std::fs::read(path).expect("test CSR")).expect("parses")
    };
    let secret = read("puppet-secret.csr");
    assert_eq!(secret.attribute(pki::oid::CHALLENGE_PASSWORD), Some("S3cr3t_pass!"));
    assert!(secret.wants_auto_renewal(), "pp_auth_auto_renew = true");
    assert!(secret.signature_valid());
    assert_eq!(secret.common_name(), Some("agent1.example.com"));
    assert_eq!(secret.extensions().len(), 1, "pp_role, strictly parsed");
    let jwt = read("puppet-jwt.csr");
    assert_eq!(
        jwt.attribute(pki::oid::CHALLENGE_PASSWORD),
        Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudDEifQ.x_Y-z!09")
    );
    assert_eq!(jwt.attribute("1.3.6.1.4.1.34380.1.1.99"), Some("p@ss word é"));
    assert!(!jwt.wants_auto_renewal());
    assert!(jwt.signature_valid());
    // Tampered request info: the signature no longer verifies (it covers the bytes as sent).
    let mut der = jwt.der().to_vec();
    let token = der.windows(4).position(|w| w == b"eyJh").expect("the token's bytes");
    der[token] = b'f';
    assert!(!Csr::from_der(der).expect("still parses").signature_valid());
}

/// The extension request stays strict: a malformed one fails the whole request.
#[test]
fn a_malformed_extension_request_is_refused() {
    let path = format!("{}/testdata/puppet-secret.csr", env!("CARGO_MANIFEST_DIR"));
    let csr = Csr::from_pem(&std::fs::read(path).expect("test CSR")).expect("parses");
    let mut der = csr.der().to_vec();
    // The extension request's OID (1.2.840.113549.1.9.14) is followed by its SET; break the
    // SEQUENCE OF inside it by giving it a wrong tag.
    let ext_req = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
    let at = der.windows(ext_req.len()).position(|w| w == ext_req).expect("extReq");
    let inner = at + ext_req.len() + 2; // SET tag and length, then the SEQUENCE OF
    assert_eq!(der[inner], 0x30);
    der[inner] = 0x31;
    assert!(Csr::from_der(der).is_err());
}
