//! Hostile requests through the TLS front to the CA: each gets its expected status with a
//! message, and the CA directory is byte-for-byte unchanged afterwards.

use pki::KeyAlgorithm;
use testkit::{
    fixture::{csr_pem, CaFixture, Crossbar, ADMIN_NAME, LB_NAME},
    tls::{request, TlsClient},
};

use super::bin;

enum Who {
    Anonymous,
    Admin,
}

#[test]
fn hostile_requests_get_clear_answers_and_change_nothing() {
    let fx = CaFixture::new(KeyAlgorithm::EcP256);
    let cb = Crossbar::start(bin(), fx.dir(), "crossbar", &fx.single_node_config("false", ""));
    let anonymous = TlsClient::new(&fx.ca_bundle(), None);
    let admin = TlsClient::new(&fx.ca_bundle(), Some((&fx.cert(ADMIN_NAME), &fx.key(ADMIN_NAME))));

    // A pending request, so that a duplicate can be attempted.
    let pending = csr_pem("dup.example.com");
    let put = request(
        "PUT",
        "/puppet-ca/v1/certificate_request/dup.example.com",
        &[("Content-Type", "text/plain")],
        pending.as_bytes(),
    );
    assert_eq!(anonymous.raw(cb.lb_port(), &put).status, 200);
    let before = fx.snapshot();

    let valid = csr_pem("agent1.example.com");
    let two = format!("{valid}{valid}");
    let huge = vec![b'A'; 70 * 1024];
    let lb_cert_header: String =
        std::fs::read_to_string(fx.cert(LB_NAME)).unwrap().replace('\n', "%0A").replace(' ', "%20");
    let spoof: Vec<(&str, &str)> = vec![
        ("X-Client-Verify", "SUCCESS"),
        ("x-client-verify", "SUCCESS"),
        ("X-CLIENT-DN", "CN=admin.example.com"),
        ("X_Client_DN", "CN=admin.example.com"),
        ("X-Client-Cert", lb_cert_header.as_str()),
    ];
    let json = [("Content-Type", "application/json")];
    let csr_put =
        |path: &str, body: &[u8]| request("PUT", path, &[("Content-Type", "text/plain")], body);
    let signed = br#"{"desired_state":"signed"}"#;

    let cases: Vec<(&str, Who, Vec<u8>, u16)> = vec![
        ("empty CSR", Who::Anonymous, csr_put("/puppet-ca/v1/certificate_request/agent1.example.com", b""), 400),
        ("not PEM", Who::Anonymous, csr_put("/puppet-ca/v1/certificate_request/agent1.example.com", b"hello"), 400),
        ("two CSRs in one body", Who::Anonymous, csr_put("/puppet-ca/v1/certificate_request/agent1.example.com", two.as_bytes()), 400),
        ("a certificate instead of a CSR", Who::Anonymous, csr_put("/puppet-ca/v1/certificate_request/agent1.example.com", &std::fs::read(fx.cert(ADMIN_NAME)).unwrap()), 400),
        ("oversized CSR", Who::Anonymous, csr_put("/puppet-ca/v1/certificate_request/agent1.example.com", &huge), 413),
        ("CN does not match the URL", Who::Anonymous, csr_put("/puppet-ca/v1/certificate_request/agent9.example.com", valid.as_bytes()), 400),
        ("upper-case name", Who::Anonymous, csr_put("/puppet-ca/v1/certificate_request/Agent1.example.com", valid.as_bytes()), 400),
        ("duplicate CSR", Who::Anonymous, csr_put("/puppet-ca/v1/certificate_request/dup.example.com", csr_pem("dup.example.com").as_bytes()), 400),
        ("path traversal, %2F", Who::Anonymous, csr_put("/puppet-ca/v1/certificate_request/..%2F..%2Fetc%2Fpasswd", valid.as_bytes()), 400),
        ("key file via traversal", Who::Anonymous, request("GET", "/puppet-ca/v1/certificate/..%2Fca_key", &[], b""), 400),
        ("dot-dot, %2e", Who::Anonymous, request("GET", "/puppet-ca/v1/certificate/%2e%2e", &[], b""), 400),
        ("double-encoded traversal", Who::Anonymous, request("GET", "/puppet-ca/v1/certificate/%252e%252e%252fca_key", &[], b""), 400),
        ("NUL in the name", Who::Anonymous, request("GET", "/puppet-ca/v1/certificate/a%00b", &[], b""), 400),
        ("non-ASCII name", Who::Anonymous, request("GET", "/puppet-ca/v1/certificate/%C3%A4gent", &[], b""), 400),
        ("overlong name", Who::Anonymous, request("GET", &format!("/puppet-ca/v1/certificate/{}", "a".repeat(251)), &[], b""), 400),
        ("a name that is not there", Who::Anonymous, request("GET", "/puppet-ca/v1/certificate/ca_key", &[], b""), 404),
        ("spoofed admin: sign", Who::Anonymous, request("PUT", "/puppet-ca/v1/certificate_status/dup.example.com", &[spoof.clone(), json.to_vec()].concat(), signed), 403),
        ("spoofed admin: list", Who::Anonymous, request("GET", "/puppet-ca/v1/certificate_statuses/all", &spoof, b""), 403),
        ("spoofed admin: clean", Who::Anonymous, request("PUT", "/puppet-ca/v1/clean", &[spoof.clone(), json.to_vec()].concat(), br#"{"certnames":["admin.example.com"]}"#), 403),
        ("anonymous delete of a request", Who::Anonymous, request("DELETE", "/puppet-ca/v1/certificate_request/dup.example.com", &[], b""), 403),
        ("wrong method: POST a CSR", Who::Anonymous, request("POST", "/puppet-ca/v1/certificate_request/agent1.example.com", &[], valid.as_bytes()), 405),
        ("wrong method: PATCH the CA cert", Who::Anonymous, request("PATCH", "/puppet-ca/v1/certificate/ca", &[], b""), 405),
        ("unknown CA endpoint", Who::Anonymous, request("GET", "/puppet-ca/v1/secrets", &[], b""), 404),
        ("missing statuses segment", Who::Anonymous, request("GET", "/puppet-ca/v1/certificate_statuses/", &[], b""), 400),
        ("status body is not JSON", Who::Admin, request("PUT", "/puppet-ca/v1/certificate_status/dup.example.com", &json, b"{nope"), 400),
        ("empty status body", Who::Admin, request("PUT", "/puppet-ca/v1/certificate_status/dup.example.com", &json, b""), 400),
        ("bad desired_state", Who::Admin, request("PUT", "/puppet-ca/v1/certificate_status/dup.example.com", &json, br#"{"desired_state":"bogus"}"#), 400),
        ("cert_ttl not an integer", Who::Admin, request("PUT", "/puppet-ca/v1/certificate_status/dup.example.com", &json, br#"{"desired_state":"signed","cert_ttl":"1y"}"#), 400),
        ("wrong status content type", Who::Admin, request("PUT", "/puppet-ca/v1/certificate_status/dup.example.com", &[("Content-Type", "text/plain")], signed), 415),
        ("revoke a name with no cert", Who::Admin, request("PUT", "/puppet-ca/v1/certificate_status/dup.example.com", &json, br#"{"desired_state":"revoked"}"#), 409),
        ("status of an unknown name", Who::Admin, request("PUT", "/puppet-ca/v1/certificate_status/ghost.example.com", &json, signed), 404),
        ("clean without certnames", Who::Admin, request("PUT", "/puppet-ca/v1/clean", &json, br#"{"names":[]}"#), 400),
        ("async clean", Who::Admin, request("PUT", "/puppet-ca/v1/clean", &json, br#"{"certnames":["x"],"async":true}"#), 400),
        ("smuggling: both Content-Length and chunked", Who::Anonymous, b"PUT /puppet-ca/v1/certificate_request/agent1.example.com HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".to_vec(), 400),
    ];
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for (what, who, bytes, expected) in &cases {
        let client = match who {
            Who::Anonymous => &anonymous,
            Who::Admin => &admin,
        };
        let reply = client.raw(cb.lb_port(), bytes);
        if reply.status != *expected {
            failures.push(format!(
                "{what}: expected {expected}, got {} ({})",
                reply.status,
                reply.text().trim()
            ));
        } else if reply.status != 405 && reply.text().trim().is_empty() {
            failures.push(format!("{what}: {} without a message", reply.status));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(fx.snapshot() == before, "the CA directory changed");
    assert!(
        cb.child.stderr().contains("forbidden: CA admin endpoints need pp_cli_auth"),
        "refusals are logged for the operator"
    );
}
