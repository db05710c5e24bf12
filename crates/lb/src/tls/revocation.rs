//! Client-certificate revocation against CRLs that were verified once, when the snapshot was
//! built.
//!
//! rustls' `WebPkiClientVerifier` verifies a CRL's signature again on every handshake
//! (rustls/webpki#81). With Puppet's RSA-4096 CA that is one RSA verification per agent
//! connection, spent on a CRL that has not changed. Here each CRL is checked once, when the
//! snapshot is built, by [`pki::crl::verify_chain`] (the rules CRLs pulled from the CA pass
//! too): signed by the CA of the bundle that issued it, which must be allowed to sign CRLs, and
//! neither partitioned nor delta. A handshake then looks
//! the serial of every certificate the client presented up in the revoked set of its issuer.
//! The chain itself is still verified by webpki, without CRLs.
//!
//! The policy is webpki's as crossbar used it: a presented certificate whose issuer has no CRL
//! fails (unknown revocation status), `nextUpdate` is not enforced at the handshake (the LB
//! reports the CRL's age instead), and partitioned (issuing distribution point) or delta CRLs
//! are refused when the snapshot is built. One difference, stricter: webpki checks the
//! certificates of the path it built, this checks every certificate the client presented except
//! the bundle's own (trust anchors are not revocation-checked). Puppet agents present their
//! certificate alone.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use rustls::{
    client::danger::HandshakeSignatureValid,
    pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
};
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

use super::TlsError;

/// The revoked serials of every CRL, by the raw subject of the CA that issued it.
#[derive(Debug, Default)]
pub(crate) struct RevokedSerials {
    by_issuer: HashMap<Vec<u8>, HashSet<Vec<u8>>>,
    /// The bundle's certificates, which are trust anchors.
    anchors: HashSet<Vec<u8>>,
}

impl RevokedSerials {
    /// Verifies every CRL against the CA bundle ([`pki::crl::verify_chain`]) and collects its
    /// serials.
    /// Also returns what the CA's own CRL (the first) says.
    pub(crate) fn verified(
        crls: &[CertificateRevocationListDer<'_>],
        bundle: &[CertificateDer<'_>],
    ) -> Result<(Self, pki::crl::CrlInfo), TlsError> {
        let chain = pki::crl::verify_chain(crls, bundle)
            .map_err(|e| TlsError::Invalid { what: "CRL", reason: e.to_string() })?;
        let anchors = bundle.iter().map(|der| der.to_vec()).collect();
        Ok((Self { by_issuer: chain.revoked, anchors }, chain.first))
    }

    /// Whether the certificate `der` is revoked, not revoked, or of unknown status (no CRL for
    /// its issuer).
    pub(crate) fn status(&self, der: &[u8]) -> Result<(), CertificateError> {
        if self.anchors.contains(der) {
            return Ok(());
        }
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|_| CertificateError::BadEncoding)?;
        let revoked = self
            .by_issuer
            .get(cert.issuer().as_raw())
            .ok_or(CertificateError::UnknownRevocationStatus)?;
        // DER serials compare as bytes, as webpki compares them.
        if revoked.contains(cert.raw_serial()) {
            return Err(CertificateError::Revoked);
        }
        Ok(())
    }
}

/// Chain verification by webpki, then revocation from [`RevokedSerials`].
#[derive(Debug)]
pub(crate) struct RevocationCheckingVerifier {
    pub(crate) chain: Arc<dyn ClientCertVerifier>,
    pub(crate) revoked: RevokedSerials,
}

impl ClientCertVerifier for RevocationCheckingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.chain.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.chain.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self.chain.verify_client_cert(end_entity, intermediates, now)?;
        for cert in std::iter::once(end_entity).chain(intermediates) {
            self.revoked.status(cert).map_err(Error::InvalidCertificate)?;
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TestCa as Ca;
    use time::OffsetDateTime;

    fn crl_of(ca: &Ca, revoked: &[u8]) -> CertificateRevocationListDer<'static> {
        ca.crl_der(1, OffsetDateTime::now_utc(), revoked).into()
    }

    fn bundle(cas: &[&Ca]) -> Vec<CertificateDer<'static>> {
        cas.iter().map(|ca| CertificateDer::from(ca.der.clone())).collect()
    }

    #[test]
    fn serials_are_looked_up_in_their_issuers_crl() {
        let (ours, other) = (Ca::new("Puppet CA: ours"), Ca::new("Puppet CA: other"));
        let (revoked, _) =
            RevokedSerials::verified(&[crl_of(&ours, &[7])], &bundle(&[&ours, &other]))
                .expect("verified");
        let cases: [(&str, Vec<u8>, Result<(), CertificateError>); 5] = [
            ("revoked", ours.leaf("gone.example.com", 7), Err(CertificateError::Revoked)),
            ("not revoked", ours.leaf("web.example.com", 8), Ok(())),
            // 0x80 takes a sign byte in DER (00 80): no false match on its last byte.
            ("a serial with a sign byte", ours.leaf("db.example.com", 0x80), Ok(())),
            (
                "an issuer without a CRL",
                other.leaf("web.example.com", 7),
                Err(CertificateError::UnknownRevocationStatus),
            ),
            ("a trust anchor of the bundle", other.der, Ok(())),
        ];
        for (what, der, expected) in cases {
            assert_eq!(revoked.status(&der), expected, "{what}");
        }
    }

    #[test]
    fn a_serial_with_a_sign_byte_is_found_when_revoked() {
        let ours = Ca::new("Puppet CA: ours");
        let revoked = RevokedSerials::verified(&[crl_of(&ours, &[0x80])], &bundle(&[&ours]));
        let der = ours.leaf("web.example.com", 0x80);
        assert_eq!(revoked.expect("verified").0.status(&der), Err(CertificateError::Revoked));
    }

    #[test]
    fn crls_are_refused_unless_their_ca_signed_them_for_all_its_certificates() {
        let ours = Ca::new("Puppet CA: ours");
        // Same name, another key: a forged CRL that would unrevoke everyone.
        let impostor = Ca::new("Puppet CA: ours");
        let forged = RevokedSerials::verified(&[crl_of(&impostor, &[])], &bundle(&[&ours]));
        assert!(forged.is_err_and(|e| e.to_string().contains("not signed by the CA it names")));

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer_cert = ca_params.self_signed(&key).expect("ca");
        let issuer = rcgen::Issuer::new(ca_params, &key);
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2030, 1, 1),
            crl_number: rcgen::SerialNumber::from(2u64),
            issuing_distribution_point: Some(rcgen::CrlIssuingDistributionPoint {
                distribution_point: rcgen::CrlDistributionPoint {
                    uris: vec!["http://ca.example.com/part1.crl".into()],
                },
                scope: None,
            }),
            revoked_certs: vec![],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let partitioned = params.signed_by(&issuer).expect("crl");
        let refused =
            RevokedSerials::verified(&[partitioned.der().clone()], &[issuer_cert.der().clone()]);
        assert!(refused.is_err_and(|e| e.to_string().contains("partitioned")));
    }

    #[test]
    fn a_crl_of_an_outside_ca_is_left_aside() {
        let (ours, outside) = (Ca::new("Puppet CA: ours"), Ca::new("Some other CA"));
        let crls = [crl_of(&ours, &[]), crl_of(&outside, &[1])];
        let (revoked, _) = RevokedSerials::verified(&crls, &bundle(&[&ours])).expect("verified");
        assert_eq!(revoked.status(&ours.leaf("web.example.com", 1)), Ok(()));
    }
}
