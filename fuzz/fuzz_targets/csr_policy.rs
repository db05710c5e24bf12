//! Untrusted CSR bytes, as PEM and as raw DER, through parsing, signing policy and description:
//! nothing may panic, and a request the CA stores (`to_pem`) must parse again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pki::{csr::MAX_CSR_BYTES, policy, Certname, Csr, CsrPolicy};

fuzz_target!(|data: &[u8]| {
    // The last byte picks the policy switches: mutating it rarely breaks PEM or DER framing.
    let switches = data.last().copied().unwrap_or(0);
    let policy = CsrPolicy {
        allow_subject_alt_names: switches & 1 != 0,
        allow_authorization_extensions: switches & 2 != 0,
    };
    if let Ok(csr) = Csr::from_pem(data) {
        check(&policy, &csr);
        let stored = csr.to_pem();
        // Base64 line breaks can push a request just under the limit over it.
        if stored.len() <= MAX_CSR_BYTES {
            let reread = Csr::from_pem(stored.as_bytes()).expect("a stored CSR must parse again");
            assert_eq!(reread.der(), csr.der());
        }
    }
    if let Ok(csr) = Csr::from_der(data.to_vec()) {
        check(&policy, &csr);
    }
});

fn check(policy: &CsrPolicy, csr: &Csr) {
    let name = Certname::parse("agent1.example.com").expect("a valid certname");
    let _ = policy.review(&name, csr);
    let _ = policy::check_subject(&name, csr);
    let _ = pki::describe::request(csr);
}
