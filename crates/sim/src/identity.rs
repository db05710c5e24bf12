//! Simulated agents' identities: certificates issued in bulk from a CA directory beforehand,
//! loaded one TLS configuration per agent; and keys with CSRs for a bootstrap storm, made
//! before the clock starts.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use pki::{Certname, KeyAlgorithm};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer},
    ClientConfig, RootCertStore,
};
use thiserror::Error;

use crate::client::{self, ClientError};

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("CA: {0}")]
    Ca(#[from] ca::CaError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}: {1}")]
    Invalid(PathBuf, String),
    #[error("{dir} holds {found} agent certificates; {wanted} were asked for")]
    TooFew { dir: PathBuf, found: usize, wanted: usize },
}

/// The certname of simulated agent `index`.
pub fn certname(prefix: &str, index: usize) -> String {
    format!("{prefix}{index:05}.sim.example.com")
}

/// Issues `count` agent certificates from the CA in `cadir` into `out` (`<certname>.pem`,
/// `<certname>.key`, and `ca_crt.pem`), on `threads` threads. Agents get `key` keys.
pub fn issue(
    cadir: &Path,
    out: &Path,
    prefix: &str,
    count: usize,
    key: KeyAlgorithm,
    threads: usize,
) -> Result<usize, IdentityError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e| IdentityError::Io(path, e)
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let (store, _) = ca::fs::FsStore::open(cadir).map_err(ca::CaError::from)?;
    let service = ca::CaService::open(Arc::new(store), ca::CaSettings::default())?;
    std::fs::write(
        out.join("ca_crt.pem"),
        service.store().ca_bundle().map_err(ca::CaError::from)?.bytes,
    )
    .map_err(io(out))?;
    let next = AtomicUsize::new(0);
    let issued = AtomicUsize::new(0);
    let result: Result<(), IdentityError> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<(), IdentityError> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return Ok(());
                        }
                        let name = certname(prefix, i);
                        let certname = Certname::parse(&name).map_err(|e| {
                            IdentityError::Invalid(out.to_path_buf(), e.to_string())
                        })?;
                        let (key_pem, cert) =
                            service.generate(&certname, Vec::new(), false, key)?;
                        let cert_path = out.join(format!("{name}.pem"));
                        std::fs::write(&cert_path, cert.pem).map_err(io(&cert_path))?;
                        let key_path = out.join(format!("{name}.key"));
                        std::fs::write(&key_path, key_pem).map_err(io(&key_path))?;
                        issued.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join().unwrap_or_else(|_| {
                Err(IdentityError::Invalid(out.to_path_buf(), "an issuing thread panicked".into()))
            })
        })
    });
    result?;
    Ok(issued.load(Ordering::Relaxed))
}

/// One simulated agent.
pub struct Identity {
    pub certname: String,
    pub config: Arc<ClientConfig>,
}

/// Loads the first `count` agents of `dir` (sorted by name), each with its own TLS
/// configuration; `resume` allows session resumption.
pub fn load(
    dir: &Path,
    prefix: &str,
    count: usize,
    roots: &Arc<RootCertStore>,
    resume: bool,
) -> Result<Vec<Identity>, IdentityError> {
    let mut identities = Vec::with_capacity(count);
    for i in 0..count {
        let name = certname(prefix, i);
        let cert_path = dir.join(format!("{name}.pem"));
        if !cert_path.exists() {
            return Err(IdentityError::TooFew { dir: dir.to_path_buf(), found: i, wanted: count });
        }
        let read =
            |path: &Path| std::fs::read(path).map_err(|e| IdentityError::Io(path.to_path_buf(), e));
        let chain: Vec<CertificateDer<'static>> =
            pki::pemfile::blocks(&read(&cert_path)?, "CERTIFICATE")
                .map_err(|e| IdentityError::Invalid(cert_path.clone(), e.to_string()))?
                .into_iter()
                .map(CertificateDer::from)
                .collect();
        let key_path = dir.join(format!("{name}.key"));
        let key_der = pki::pemfile::single_block(
            &read(&key_path)?,
            &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"],
        )
        .map_err(|e| IdentityError::Invalid(key_path.clone(), e.to_string()))?;
        let key = PrivateKeyDer::try_from(key_der)
            .map_err(|e| IdentityError::Invalid(key_path.clone(), e.to_string()))?;
        identities.push(Identity {
            certname: name,
            config: client::tls_config(roots.clone(), Some((chain, key)), resume)?,
        });
    }
    Ok(identities)
}

/// A new agent's CSR, made before a storm's clock starts.
pub struct NewAgent {
    pub certname: String,
    pub csr_pem: bytes::Bytes,
}

/// `count` new agents with `key` keys and their CSRs, on `threads` threads.
pub fn new_agents(
    prefix: &str,
    count: usize,
    key: KeyAlgorithm,
    threads: usize,
) -> Result<Vec<NewAgent>, IdentityError> {
    let next = AtomicUsize::new(0);
    let made = std::sync::Mutex::new(Vec::with_capacity(count));
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let name = certname(prefix, i);
                if let Ok(csr) = csr(&name, key) {
                    if let Ok(mut made) = made.lock() {
                        made.push((i, NewAgent { certname: name, csr_pem: csr.into() }));
                    }
                }
            });
        }
    });
    let mut made = made.into_inner().unwrap_or_default();
    if made.len() != count {
        return Err(IdentityError::Invalid(
            PathBuf::from(prefix),
            format!("made {} of {count} CSRs", made.len()),
        ));
    }
    made.sort_by_key(|(i, _)| *i);
    Ok(made.into_iter().map(|(_, agent)| agent).collect())
}

fn csr(certname: &str, key: KeyAlgorithm) -> Result<String, String> {
    let key_pair = key.generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, certname);
    params.serialize_request(&key_pair).and_then(|csr| csr.pem()).map_err(|e| e.to_string())
}
