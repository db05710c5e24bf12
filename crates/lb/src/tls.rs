//! The TLS front's configuration: server certificate, client-certificate verification against
//! the whole CA bundle and its CRLs, built into one immutable snapshot.

mod revocation;
pub(crate) mod watch;

use std::{path::PathBuf, sync::Arc};

use rustls::{
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer},
    server::{danger::ClientCertVerifier, WebPkiClientVerifier},
    CipherSuite, RootCertStore, ServerConfig,
};
use thiserror::Error;

use crate::{config::TlsFiles, edge::LbNames};

/// The bytes a snapshot is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsMaterial {
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) key_pem: Vec<u8>,
    pub(crate) client_ca_pem: Vec<u8>,
    pub(crate) crl_pem: Vec<u8>,
}

/// One immutable TLS configuration, with what the rest of the LB wants to know about it.
#[derive(Debug)]
pub(crate) struct TlsSnapshot {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) material: TlsMaterial,
    /// The CA's CRL (the first of the chain): number and when it expires.
    pub(crate) crl: Option<pki::crl::CrlInfo>,
    /// The names of the LB's certificate (DNS names and addresses).
    pub(crate) names: Arc<LbNames>,
    /// The LB certificate's notBefore and notAfter.
    pub(crate) cert_validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
}

#[derive(Debug, Error)]
pub(crate) enum TlsError {
    #[error("{what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier rejected the CA bundle or CRL: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

impl TlsFiles {
    /// Reads every file; `crl_override` replaces the CRL file's content (a pulled CRL).
    pub(crate) fn read(&self, crl_override: Option<&[u8]>) -> Result<TlsMaterial, TlsError> {
        let read = |what, path: &PathBuf| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.clone(),
                source,
            })
        };
        let crl_pem = match (crl_override, &self.crl) {
            (Some(bytes), _) => bytes.to_vec(),
            (None, Some(path)) => read("CRL", path)?,
            (None, None) => Vec::new(),
        };
        Ok(TlsMaterial {
            cert_pem: read("certificate", &self.cert)?,
            key_pem: read("key", &self.key)?,
            client_ca_pem: read("client CA bundle", &self.client_ca)?,
            crl_pem,
        })
    }
}

impl TlsSnapshot {
    /// Validates the material whole and builds the rustls configuration: TLS 1.2 and 1.3,
    /// aws-lc-rs, a client certificate requested but optional (agents bootstrap without one),
    /// and when present verified against every CA in the bundle and every CRL.
    pub(crate) fn build(material: TlsMaterial) -> Result<Self, TlsError> {
        let provider = Arc::new(provider());
        let certs = certificates(&material.cert_pem, "certificate")?;
        let key = private_key(&material.key_pem)?;
        let bundle = certificates(&material.client_ca_pem, "client CA bundle")?;
        let roots = roots(&bundle)?;
        let names = names(certs.first())?;
        let cert_validity = certs.first().and_then(|der| validity(der));
        let crls = crls(&material.crl_pem)?;
        let chain = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()?;
        let (verifier, crl): (Arc<dyn ClientCertVerifier>, _) = if crls.is_empty() {
            (chain, None)
        } else {
            let (revoked, first) = revocation::RevokedSerials::verified(&crls, &bundle)?;
            (Arc::new(revocation::RevocationCheckingVerifier { chain, revoked }), Some(first))
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.ignore_client_order = true;
        // Resumption by stateless tickets: no per-session memory on the LB (a stateful cache
        // held ~4 KiB per connection and 8 MiB up front). A new ticket key per snapshot means a
        // new CRL or CA bundle ends every resumable session, so a revoked certificate cannot
        // skip verification by resuming. One ticket is enough: Puppet agents resume rarely.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        config.send_tls13_tickets = 1;
        Ok(Self { config: Arc::new(config), material, crl, names, cert_validity })
    }
}

/// The suites the LB prefers, whatever the client's order: AES-128-GCM with SHA-256. Puppet's
/// agents (OpenSSL) put AES-256-GCM-SHA384 first, and on CPUs without SHA-512 instructions its
/// handshake hashing alone was ~6% of an EC-keyed LB's handshake CPU; both are strong suites.
const PREFERRED_SUITES: [CipherSuite; 3] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// aws-lc-rs with [`PREFERRED_SUITES`] ahead of the others, which keep their order.
fn provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|suite| !PREFERRED_SUITES.contains(&suite.suite()));
    provider
}

fn certificates(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let blocks = pki::pemfile::blocks(pem, "CERTIFICATE")
        .map_err(|e| TlsError::Invalid { what, reason: e.to_string() })?;
    Ok(blocks.into_iter().map(CertificateDer::from).collect())
}

/// The DNS names and addresses the LB's certificate is for (subject alternative names, and the
/// common name).
fn names(cert: Option<&CertificateDer<'_>>) -> Result<Arc<LbNames>, TlsError> {
    let invalid = |reason: String| TlsError::Invalid { what: "certificate", reason };
    let der = cert.ok_or_else(|| invalid("no certificate".into()))?;
    let description = pki::describe::certificate(der)
        .ok_or_else(|| invalid("not an X.509 certificate".into()))?;
    let alt = description.subject_alt_names.iter().filter_map(|name| {
        name.strip_prefix("DNS:").or_else(|| name.strip_prefix("IP:")).map(str::to_owned)
    });
    Ok(LbNames::new(alt.chain([description.common_name.clone()])))
}

fn validity(der: &CertificateDer<'_>) -> Option<(time::OffsetDateTime, time::OffsetDateTime)> {
    let cert = pki::describe::certificate(der)?.cert?;
    let parse = pki::timefmt::parse_puppet_date;
    Some((parse(&cert.not_before)?, parse(&cert.not_after)?))
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    let invalid = |reason: String| TlsError::Invalid { what: "key", reason };
    let der =
        pki::pemfile::single_block(pem, &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"])
            .map_err(|e| invalid(e.to_string()))?;
    PrivateKeyDer::try_from(der).map_err(|e| invalid(e.to_string()))
}

fn roots(bundle: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in bundle {
        store
            .add(cert.clone())
            .map_err(|e| TlsError::Invalid { what: "client CA bundle", reason: e.to_string() })?;
    }
    Ok(store)
}

fn crls(pem: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    if pem.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let blocks = pki::pemfile::blocks(pem, "X509 CRL")
        .map_err(|e| TlsError::Invalid { what: "CRL", reason: e.to_string() })?;
    Ok(blocks.into_iter().map(CertificateRevocationListDer::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{
        client::Resumption, pki_types::ServerName, ClientConfig, ClientConnection, HandshakeKind,
        ServerConnection,
    };
    use testkit::fixture::{CaFixture, LB_NAME};

    fn snapshot(fx: &CaFixture) -> TlsSnapshot {
        let files = TlsFiles {
            cert: fx.cert(LB_NAME),
            key: fx.key(LB_NAME),
            client_ca: fx.ca_bundle(),
            crl: Some(fx.crl()),
        };
        TlsSnapshot::build(files.read(None).expect("read")).expect("build")
    }

    #[test]
    fn the_lbs_own_tls_problems_are_an_expired_certificate_and_a_missing_or_stale_crl() {
        use crate::liveness::tls_problems;
        let fx = CaFixture::new(pki::KeyAlgorithm::EcP256);
        let mut snap = snapshot(&fx);
        let (not_before, not_after) = snap.cert_validity.expect("the certificate's validity");
        let now = time::OffsetDateTime::now_utc();
        assert!(tls_problems(&snap, true, now).is_empty());
        let late = not_after + time::Duration::seconds(1);
        assert!(tls_problems(&snap, true, late).iter().any(|p| p.contains("expired")));
        let early = not_before - time::Duration::seconds(1);
        assert!(tls_problems(&snap, true, early).iter().any(|p| p.contains("not valid before")));
        let next_update = snap.crl.as_ref().and_then(|c| c.next_update).expect("nextUpdate");
        let stale = tls_problems(&snap, true, next_update + time::Duration::seconds(1));
        assert!(stale.iter().any(|p| p.contains("past its nextUpdate")), "{stale:?}");
        snap.crl = None;
        assert_eq!(tls_problems(&snap, true, now), ["no CRL loaded yet"]);
        assert!(tls_problems(&snap, false, now).is_empty(), "no CRL expected, none needed");
    }

    /// An agent's client config, resumption on, so that it keeps the tickets it receives.
    fn agent(fx: &CaFixture, name: &str) -> Arc<ClientConfig> {
        fx.issue(name, vec![], false);
        let chain =
            certificates(&std::fs::read(fx.cert(name)).expect("cert"), "cert").expect("pem");
        let key = private_key(&std::fs::read(fx.key(name)).expect("key")).expect("key pem");
        let bundle = certificates(&std::fs::read(fx.ca_bundle()).expect("ca"), "ca").expect("pem");
        let roots = roots(&bundle).expect("roots");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client cert");
        config.resumption = Resumption::in_memory_sessions(16);
        Arc::new(config)
    }

    /// A whole handshake in memory, the ticket delivered; how the client's handshake went.
    fn connect(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> HandshakeKind {
        handshake(client, server).0
    }

    /// [`connect`], with the suite the server chose.
    fn handshake(
        client: &Arc<ClientConfig>,
        server: &Arc<ServerConfig>,
    ) -> (HandshakeKind, Option<CipherSuite>) {
        let name = ServerName::try_from(LB_NAME).expect("name");
        let mut c = ClientConnection::new(client.clone(), name).expect("client");
        let mut s = ServerConnection::new(server.clone()).expect("server");
        for _ in 0..10 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).expect("client write");
            }
            s.read_tls(&mut wire.as_slice()).expect("server read");
            s.process_new_packets().expect("server handshake");
            wire.clear();
            while s.wants_write() {
                s.write_tls(&mut wire).expect("server write");
            }
            c.read_tls(&mut wire.as_slice()).expect("client read");
            c.process_new_packets().expect("client handshake");
            if !c.is_handshaking() && !s.is_handshaking() && !s.wants_write() {
                break;
            }
        }
        assert!(!c.is_handshaking() && !s.is_handshaking(), "the handshake completes");
        let suite = s.negotiated_cipher_suite().map(|suite| suite.suite());
        (c.handshake_kind().expect("handshake kind"), suite)
    }

    #[test]
    fn the_lb_picks_aes_128_gcm_sha256_over_the_clients_first_choice() {
        let fx = CaFixture::new(pki::KeyAlgorithm::EcP256);
        let agent = agent(&fx, "agent.example.com");
        let first = agent.crypto_provider().cipher_suites.first().map(|s| s.suite());
        assert_eq!(first, Some(CipherSuite::TLS13_AES_256_GCM_SHA384), "as Puppet's agents");
        let (_, chosen) = handshake(&agent, &snapshot(&fx).config);
        assert_eq!(chosen, Some(CipherSuite::TLS13_AES_128_GCM_SHA256));
    }

    #[test]
    fn tickets_resume_within_a_snapshot_and_never_across_one() {
        let fx = CaFixture::new(pki::KeyAlgorithm::EcP256);
        let agent = agent(&fx, "agent.example.com");
        let first = snapshot(&fx);
        assert_eq!(connect(&agent, &first.config), HandshakeKind::Full);
        assert_eq!(connect(&agent, &first.config), HandshakeKind::Resumed, "a ticket resumes");
        // A new CRL or CA bundle means a new snapshot: a ticket from before it must not skip
        // the certificate checks, or a revoked agent could resume its way in.
        let next = snapshot(&fx);
        assert_eq!(connect(&agent, &next.config), HandshakeKind::Full);
    }
}
