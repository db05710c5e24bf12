//! Making a new CA directory (`crossbar ca setup`) and adopting a puppetserver one
//! (`crossbar ca import`).

use std::{fs, path::Path, time::Duration};

use pki::{crl, inventory, issue, pemfile, CaSigner, KeyAlgorithm, Serial, Validity};
use time::OffsetDateTime;

use crate::{
    error::CaError,
    fs::{FsStore, NewCa},
    store::StoreError,
};

/// Creates a CA named after `ca_name` (its cert is `CN=Puppet CA: <ca_name>`) in `dir`.
pub fn setup(
    dir: &Path,
    ca_name: &str,
    key_alg: KeyAlgorithm,
    ttl: Duration,
) -> Result<FsStore, CaError> {
    Ok(FsStore::create(dir, &new_ca(ca_name, key_alg, ttl)?)?)
}

/// A new CA's files: a fresh key, the self-signed certificate `CN=Puppet CA: <ca_name>`, an
/// empty CRL, the first serial and inventory line.
pub(crate) fn new_ca(
    ca_name: &str,
    key_alg: KeyAlgorithm,
    ttl: Duration,
) -> Result<NewCa, CaError> {
    if ca_name.trim().is_empty() {
        return Err(CaError::Setup("the CA name is empty".into()));
    }
    let now = OffsetDateTime::now_utc();
    let key = key_alg.generate().map_err(|e| CaError::Setup(e.to_string()))?;
    let key_pem = key.serialize_pem();
    let public_key_pem = key.public_key_pem();
    let cert_der = issue::self_signed_ca(ca_name, &key, now, ttl)?;
    let signer = CaSigner::new(cert_der.clone(), key)?;
    let crl_der = crl::build(&signer, &[], 0, now)?;
    let validity = Validity::puppet(now, ttl);
    Ok(NewCa {
        cert_pem: pemfile::encode("CERTIFICATE", &cert_der),
        key_pem,
        public_key_pem,
        crl_pem: pemfile::encode("X509 CRL", &crl_der),
        next_serial: Serial::FIRST.next(),
        inventory: inventory::line(Serial::FIRST, &validity, &format!("Puppet CA: {ca_name}")),
    })
}

/// Copies a puppetserver CA directory (`/etc/puppetlabs/puppetserver/ca`) into `dir`, after
/// checking that its certificate and key belong together. The source is only read.
pub fn import(dir: &Path, from: &Path) -> Result<FsStore, CaError> {
    check_importable(from)?;
    if dir.join("ca_crt.pem").exists() {
        return Err(StoreError::AlreadyExists(dir.to_path_buf()).into());
    }
    copy_tree(from, dir)?;
    let (store, recovery) = FsStore::open(dir)?;
    if !recovery.is_clean() {
        tracing::warn!(?recovery, "the imported CA needed repairs");
    }
    Ok(store)
}

pub(crate) fn check_importable(from: &Path) -> Result<(), CaError> {
    for file in ["ca_crt.pem", "ca_key.pem", "ca_crl.pem", "serial", "inventory.txt"] {
        if !from.join(file).is_file() {
            return Err(CaError::Setup(format!(
                "{} has no {file}; is it a puppetserver CA directory?",
                from.display()
            )));
        }
    }
    let read = |file: &str| {
        fs::read(from.join(file))
            .map_err(|e| CaError::Setup(format!("{}: {e}", from.join(file).display())))
    };
    let certs = pemfile::blocks(&read("ca_crt.pem")?, "CERTIFICATE")
        .map_err(|e| CaError::Setup(format!("ca_crt.pem: {e}")))?;
    let key_text = String::from_utf8(read("ca_key.pem")?)
        .map_err(|_| CaError::Setup("ca_key.pem is not text".into()))?;
    let key = pki::key::load_key_pem(&key_text)
        .map_err(|e| CaError::Setup(format!("ca_key.pem: {e}")))?;
    let first =
        certs.into_iter().next().ok_or_else(|| CaError::Setup("ca_crt.pem is empty".into()))?;
    CaSigner::new(first, key)?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), CaError> {
    fs::create_dir_all(to).map_err(StoreError::io("create directory", to))?;
    for entry in fs::read_dir(from).map_err(StoreError::io("list", from))? {
        let entry = entry.map_err(StoreError::io("list", from))?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(StoreError::io("stat", entry.path()))?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target).map_err(StoreError::io("copy", entry.path()))?;
        }
    }
    Ok(())
}
