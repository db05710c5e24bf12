//! Helpers for this crate's async unit tests.

use std::time::Duration;

/// Waits (yielding to the runtime) until `condition` holds; panics after five seconds.
pub(crate) async fn until(mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A throwaway CA (EC P-256) that issues agent certificates and CRLs, in memory.
pub(crate) struct TestCa {
    pub(crate) signer: pki::CaSigner,
    pub(crate) der: Vec<u8>,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> Self {
        let key = pki::KeyAlgorithm::EcP256.generate().expect("key");
        let now = time::OffsetDateTime::now_utc();
        let der =
            pki::issue::self_signed_ca(name, &key, now, pki::issue::DEFAULT_CA_TTL).expect("ca");
        Self { signer: pki::CaSigner::new(der.clone(), key).expect("signer"), der }
    }

    /// The CA certificate as a PEM bundle.
    pub(crate) fn bundle_pem(&self) -> Vec<u8> {
        pki::pemfile::encode("CERTIFICATE", &self.der).into_bytes()
    }

    /// An agent certificate for `name` with `serial`.
    pub(crate) fn leaf(&self, name: &str, serial: u64) -> Vec<u8> {
        let csr = pki::Csr::from_pem(testkit::fixture::csr_pem(name).as_bytes()).expect("csr");
        let request = pki::CertRequest::from_csr(pki::Certname::parse(name).expect("name"), &csr);
        let now = time::OffsetDateTime::now_utc();
        let validity = pki::Validity::puppet(now, pki::issue::DEFAULT_CERT_TTL);
        let issued = self.signer.issue(&request, pki::Serial::new(serial), validity);
        issued.expect("issue").der
    }

    /// A CRL numbered `number`, issued at `this_update`, revoking one-byte `serials`.
    pub(crate) fn crl_der(
        &self,
        number: u64,
        this_update: time::OffsetDateTime,
        serials: &[u8],
    ) -> Vec<u8> {
        let entries: Vec<pki::crl::RevokedEntry> = serials
            .iter()
            .map(|s| pki::crl::RevokedEntry {
                serial: vec![*s],
                revoked_at: this_update,
                reason: Some(1),
            })
            .collect();
        pki::crl::build(&self.signer, &entries, number, this_update).expect("crl")
    }
}
