//! The most this machine can do: raw signatures per second for a key type, and full TLS
//! handshakes per second with a client certificate and CRL checking, both sides in memory
//! (no sockets, no HTTP) — the ceilings the socket benchmarks are compared with.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rustls::{
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection,
};
use serde::Serialize;

/// Operations per second over `threads` threads for `duration`.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    pub what: String,
    pub threads: usize,
    pub per_second: f64,
}

fn measure(what: &str, threads: usize, duration: Duration, op: impl Fn() -> bool + Sync) -> Rate {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    if op() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    Rate {
        what: what.to_owned(),
        threads,
        per_second: done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
    }
}

/// Signatures per second with a fresh key of `key`, and certificates issued per second by a CA
/// with such a key (signature + encoding: what a CA does per CSR).
pub fn signatures(
    key: pki::KeyAlgorithm,
    threads: usize,
    duration: Duration,
) -> Result<Vec<Rate>, String> {
    let key_pair = key.generate().map_err(|e| e.to_string())?;
    let message = [7u8; 512];
    let sign = || rcgen::SigningKey::sign(&key_pair, &message).is_ok();
    let raw = measure(&format!("{key} signatures"), threads, duration, sign);
    let ca_key = key.generate().map_err(|e| e.to_string())?;
    let ca_der = pki::issue::self_signed_ca(
        "ceiling.example.com",
        &ca_key,
        time::OffsetDateTime::now_utc(),
        pki::issue::DEFAULT_CA_TTL,
    )
    .map_err(|e| e.to_string())?;
    let signer = pki::CaSigner::new(ca_der, ca_key).map_err(|e| e.to_string())?;
    let agent_key = pki::KeyAlgorithm::EcP256.generate().map_err(|e| e.to_string())?;
    let request = pki::CertRequest {
        name: pki::Certname::parse("agent.example.com").map_err(|e| e.to_string())?,
        public_key: pki::key::public_key_info(&agent_key).ok_or("public key")?,
        alt_names: Vec::new(),
        extensions: Vec::new(),
        cli_auth: false,
    };
    let validity =
        pki::Validity::puppet(time::OffsetDateTime::now_utc(), pki::issue::DEFAULT_CERT_TTL);
    let issue = || signer.issue(&request, pki::Serial::new(2), validity).is_ok();
    let issued = measure(&format!("certificates issued by a {key} CA"), threads, duration, issue);
    Ok(vec![raw, issued])
}

/// The TLS material of a handshake ceiling: the server's (the LB's) and one client's.
pub struct HandshakeMaterial {
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: PrivateKeyDer<'static>,
    pub ca_bundle: Vec<CertificateDer<'static>>,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    pub client_chain: Vec<CertificateDer<'static>>,
    pub client_key: PrivateKeyDer<'static>,
    pub server_name: String,
}

/// Full TLS 1.3 handshakes per second, server and client in memory, the server configured as
/// crossbar's LB (aws-lc-rs, optional client certificate verified against the bundle and CRLs)
/// and the client presenting a certificate, no resumption.
pub fn handshakes(
    material: HandshakeMaterial,
    threads: usize,
    duration: Duration,
) -> Result<Rate, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in &material.ca_bundle {
        roots.add(cert.clone()).map_err(|e| e.to_string())?;
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(material.crls)
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())?;
    let server = Arc::new(
        ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(material.server_chain, material.server_key)
            .map_err(|e| e.to_string())?,
    );
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(material.client_chain, material.client_key)
        .map_err(|e| e.to_string())?;
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);
    let name =
        rustls::pki_types::ServerName::try_from(material.server_name).map_err(|e| e.to_string())?;
    let one = || handshake_once(&server, &client, &name);
    if !one() {
        return Err("an in-memory handshake failed: check the certificates".into());
    }
    Ok(measure("full TLS handshakes in memory (both sides)", threads, duration, one))
}

fn handshake_once(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    name: &rustls::pki_types::ServerName<'static>,
) -> bool {
    let (Ok(mut s), Ok(mut c)) = (
        ServerConnection::new(server.clone()),
        ClientConnection::new(client.clone(), name.clone()),
    ) else {
        return false;
    };
    let mut buffer = Vec::with_capacity(16 * 1024);
    for _ in 0..20 {
        if !s.is_handshaking() && !c.is_handshaking() {
            return true;
        }
        if transfer(&mut c, &mut s, &mut buffer).is_err()
            || transfer(&mut s, &mut c, &mut buffer).is_err()
        {
            return false;
        }
    }
    false
}

fn transfer(
    from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl rustls::SideData>>,
    to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl rustls::SideData>>,
    buffer: &mut Vec<u8>,
) -> Result<(), ()> {
    buffer.clear();
    while from.wants_write() {
        from.write_tls(buffer).map_err(|_| ())?;
    }
    let mut slice = buffer.as_slice();
    while !slice.is_empty() {
        to.read_tls(&mut slice).map_err(|_| ())?;
        to.process_new_packets().map_err(|_| ())?;
    }
    Ok(())
}

/// The other key operations of a server's full TLS 1.3 handshake with a client certificate,
/// one thread each, with the library crossbar uses (aws-lc): the X25519 key exchange, the
/// verification of an agent certificate's signature by an RSA-4096 CA, and of the agent's
/// proof of its key (RSA-4096 PSS as Puppet's agents, or ECDSA P-256). With the server's own
/// signature (from [`signatures`]) they make the crypto floor of a handshake.
pub fn handshake_operations(duration: Duration) -> Result<Vec<Rate>, String> {
    use aws_lc_rs::{agreement, rand::SystemRandom, rsa::KeySize, signature, signature::KeyPair};
    let rng = SystemRandom::new();
    let peer = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng)
        .and_then(|k| k.compute_public_key())
        .map_err(|e| e.to_string())?;
    let peer = peer.as_ref().to_vec();
    let exchange = || {
        agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng)
            .and_then(|mine| {
                let _public = mine.compute_public_key()?;
                let theirs = agreement::UnparsedPublicKey::new(&agreement::X25519, &peer);
                agreement::agree_ephemeral(mine, theirs, aws_lc_rs::error::Unspecified, |s| {
                    Ok(s.len())
                })
            })
            .is_ok()
    };
    let message = [7u8; 1024];
    let rsa = signature::RsaKeyPair::generate(KeySize::Rsa4096).map_err(|e| e.to_string())?;
    let mut rsa_sig = vec![0; rsa.public_modulus_len()];
    rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, &message, &mut rsa_sig)
        .map_err(|e| e.to_string())?;
    let mut pss_sig = vec![0; rsa.public_modulus_len()];
    rsa.sign(&signature::RSA_PSS_SHA256, &rng, &message, &mut pss_sig)
        .map_err(|e| e.to_string())?;
    let rsa_public = rsa.public_key().as_ref().to_vec();
    let ec = signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING)
        .map_err(|e| e.to_string())?;
    let ec_sig = ec.sign(&rng, &message).map_err(|e| e.to_string())?;
    let ec_public = ec.public_key().as_ref().to_vec();
    let verify = |alg: &'static dyn signature::VerificationAlgorithm, key: &[u8], sig: &[u8]| {
        signature::UnparsedPublicKey::new(alg, key).verify(&message, sig).is_ok()
    };
    if !exchange()
        || !verify(&signature::RSA_PKCS1_2048_8192_SHA256, &rsa_public, &rsa_sig)
        || !verify(&signature::RSA_PSS_2048_8192_SHA256, &rsa_public, &pss_sig)
        || !verify(&signature::ECDSA_P256_SHA256_ASN1, &ec_public, ec_sig.as_ref())
    {
        return Err("a handshake operation failed its own check".into());
    }
    Ok(vec![
        measure("X25519 key exchanges", 1, duration, exchange),
        measure("rsa-4096 certificate signature verifications", 1, duration, || {
            verify(&signature::RSA_PKCS1_2048_8192_SHA256, &rsa_public, &rsa_sig)
        }),
        measure("rsa-4096 PSS proof verifications", 1, duration, || {
            verify(&signature::RSA_PSS_2048_8192_SHA256, &rsa_public, &pss_sig)
        }),
        measure("ec-p256 proof verifications", 1, duration, || {
            verify(&signature::ECDSA_P256_SHA256_ASN1, &ec_public, ec_sig.as_ref())
        }),
    ])
}
