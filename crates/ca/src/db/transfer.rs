//! Moving a CA into and out of the database: a new CA (`ca setup --database`), adopting a
//! puppetserver CA directory (`ca import --database`), and writing puppetserver's layout back
//! (`ca export`), which puppetserver itself then serves.

use std::{collections::HashMap, path::Path};

use pki::{inventory, pemfile, Certname, Serial, Validity};
use time::OffsetDateTime;

use super::{schema, DbSettings, PgStore};
use crate::{
    error::CaError,
    fs::{FsStore, NewCa},
    setup,
    store::{CaStore, StoreError},
};

impl PgStore {
    /// Makes a new CA: its certificate and key into `cadir` (nothing else goes there), and
    /// the CA's record and first CRL into the database, which must not hold a CA yet.
    pub fn setup(
        settings: &DbSettings,
        cadir: &Path,
        ca_name: &str,
        key: pki::KeyAlgorithm,
        ttl: std::time::Duration,
    ) -> Result<Self, CaError> {
        let material = setup::new_ca(ca_name, key, ttl)?;
        let crl_der = pemfile::single_block(material.crl_pem.as_bytes(), &["X509 CRL"])
            .map_err(|e| CaError::Setup(e.to_string()))?;
        let ca_der = super::first_cert(material.cert_pem.as_bytes(), cadir)?;
        let store = Self::connect(settings, cadir)?;
        store.adopt(&ca_der, &crl_der, b"", &[], &[])?;
        write_ca_files(cadir, material.cert_pem.as_bytes(), material.key_pem.as_bytes())?;
        Ok(Self::open(settings, cadir)?)
    }

    /// Adopts the puppetserver CA directory `from`: its certificate and key into `cadir`;
    /// its CRL chain, inventory (serials kept), signed certificates and pending requests into
    /// the database, which must not hold a CA yet. `from` is only read.
    pub fn import(settings: &DbSettings, cadir: &Path, from: &Path) -> Result<Self, CaError> {
        setup::check_importable(from)?;
        let source = FsStore::inspect(from)?;
        let crl = source.crl_chain()?.bytes;
        let crl_text = String::from_utf8_lossy(&crl).into_owned();
        let crls = pemfile::raw_blocks(&crl_text);
        let first = crls.first().ok_or_else(|| CaError::Setup("ca_crl.pem holds no CRL".into()))?;
        let crl_der = pemfile::single_block(first.as_bytes(), &["X509 CRL"])
            .map_err(|e| CaError::Setup(format!("ca_crl.pem: {e}")))?;
        let rest: String = crls[1..].concat();
        let text = std::fs::read_to_string(from.join("inventory.txt"))
            .map_err(StoreError::io("read", from.join("inventory.txt")))?;
        let signed = source.certificates()?;
        let requests = source.requests()?;
        let certs = imported_certs(&text, &signed)?;
        let bundle = source.ca_bundle()?.bytes;
        let ca_der = super::first_cert(&bundle, from)?;
        let store = Self::connect(settings, cadir)?;
        store.adopt(&ca_der, &crl_der, rest.as_bytes(), &certs, &requests)?;
        let key = source.ca_key_pem()?;
        write_ca_files(cadir, &bundle, key.as_bytes())?;
        Ok(Self::open(settings, cadir)?)
    }

    /// Writes this CA in puppetserver's layout into `to` (which must not hold a CA): the
    /// certificate and key, the CRL chain, `serial` (past the highest sequential serial, never
    /// a random one), `inventory.txt` with every certificate issued, `signed/` and
    /// `requests/`.
    pub fn export(&self, to: &Path) -> Result<(), CaError> {
        let rows = self.run(async |client| {
            let rows = client
                .query("SELECT serial, certname, not_before, not_after FROM ca_cert ORDER BY issued_at, serial", &[])
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let serial = Serial::from_be_bytes(&r.get::<_, Vec<u8>>(0)).unwrap_or(Serial::FIRST);
                    let validity = Validity { not_before: r.get(2), not_after: r.get(3) };
                    (serial, r.get::<_, String>(1), validity)
                })
                .collect::<Vec<_>>())
        })?;
        let bundle = self.ca_bundle()?.bytes;
        let key_pem = self.ca_key_pem()?;
        let key = pki::key::load_key_pem(&key_pem)
            .map_err(|e| CaError::Setup(format!("ca_key.pem: {e}")))?;
        let ca_der = super::first_cert(&bundle, &self.cadir)?;
        let ca = pki::describe::certificate(&ca_der)
            .and_then(|d| d.cert)
            .ok_or_else(|| CaError::Setup("ca_crt.pem".into()))?;
        let ca_validity = Validity {
            not_before: pki::timefmt::parse_puppet_date(&ca.not_before)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            not_after: pki::timefmt::parse_puppet_date(&ca.not_after)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        };
        let ca_serial = ca.serial.unwrap_or(Serial::FIRST);
        let ca_name =
            pki::describe::certificate(&ca_der).map(|d| d.common_name).unwrap_or_default();
        let mut inventory_text = String::new();
        if !rows.iter().any(|(serial, _, _)| *serial == ca_serial) {
            inventory_text.push_str(&inventory::line(ca_serial, &ca_validity, &ca_name));
        }
        for (serial, name, validity) in &rows {
            inventory_text.push_str(&inventory::line(*serial, validity, name));
        }
        let highest = rows
            .iter()
            .map(|(serial, _, _)| *serial)
            .chain([ca_serial])
            .filter(|s| !s.is_random())
            .max()
            .unwrap_or(Serial::FIRST);
        let new_ca = NewCa {
            cert_pem: String::from_utf8_lossy(&bundle).into_owned(),
            public_key_pem: key.public_key_pem(),
            key_pem,
            crl_pem: String::from_utf8_lossy(&self.crl_chain()?.bytes).into_owned(),
            next_serial: highest.next(),
            inventory: inventory_text,
        };
        let store = FsStore::create(to, &new_ca)?;
        for (name, pem) in self.certificates()? {
            store.install_exported(&name, &pem, false)?;
        }
        for (name, pem) in self.requests()? {
            store.install_exported(&name, &pem, true)?;
        }
        Ok(())
    }

    /// Creates or migrates the schema, refuses a database that holds a CA, and records this
    /// one: its certificate, first CRL and the CRLs above it, certificates and requests.
    fn adopt(
        &self,
        ca_cert: &[u8],
        crl_der: &[u8],
        chain_rest: &[u8],
        certs: &[ImportedCert],
        requests: &[(Certname, Vec<u8>)],
    ) -> Result<(), CaError> {
        let info = pki::crl::CrlInfo::from_der(crl_der)?;
        let number = i64::try_from(info.number)
            .map_err(|_| CaError::Setup("the CRL number does not fit".into()))?;
        let next_update = info.next_update.unwrap_or(info.this_update);
        let entries = i32::try_from(info.revoked.len()).unwrap_or(i32::MAX);
        let node = self.settings.node.as_str();
        Ok(self.run(async |client| {
            schema::migrate(client).await?;
            let tx = client.transaction().await?;
            let held = tx.query_opt("SELECT 1 FROM ca_meta WHERE key = 'ca_cert'", &[]).await?;
            if held.is_some() {
                return Err(StoreError::Database("the database already holds a CA".into()));
            }
            tx.execute("INSERT INTO ca_meta (key, value) VALUES ('ca_cert', $1), ('crl_chain_rest', $2)", &[&ca_cert, &chain_rest]).await?;
            tx.execute(
                "INSERT INTO ca_crl (number, this_update, next_update, der, entries, built_by) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&number, &info.this_update, &next_update, &crl_der, &entries, &node],
            )
            .await?;
            let revoked: Vec<Vec<u8>> = info.revoked.iter().map(|e| e.serial.clone()).collect();
            for cert in certs {
                let serial = cert.serial.to_be_bytes();
                let revoked_at = revoked.contains(&serial).then_some(info.this_update);
                tx.execute(
                    "INSERT INTO ca_cert (serial, certname, pem, not_before, not_after, issued_by, kind, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, 'import', $7) ON CONFLICT (serial) DO NOTHING",
                    &[&serial, &cert.name, &cert.pem, &cert.validity.not_before, &cert.validity.not_after, &node, &revoked_at],
                )
                .await?;
                if cert.current {
                    tx.execute("INSERT INTO ca_current (certname, serial) VALUES ($1, $2) ON CONFLICT (certname) DO UPDATE SET serial = EXCLUDED.serial", &[&cert.name, &serial]).await?;
                }
            }
            for (name, pem) in requests {
                tx.execute("INSERT INTO ca_request (certname, pem, submitted_by) VALUES ($1, $2, $3) ON CONFLICT (certname) DO NOTHING", &[&name.as_str(), pem, &node]).await?;
            }
            tx.commit().await?;
            Ok(())
        })?)
    }
}

/// One certificate of an imported CA.
struct ImportedCert {
    serial: Serial,
    name: String,
    pem: Option<Vec<u8>>,
    validity: Validity,
    /// It is `signed/<name>.pem` (what `GET certificate/<name>` returns).
    current: bool,
}

/// The inventory's certificates, with the PEM of those still in `signed/`; signed certificates
/// missing from the inventory are added.
fn imported_certs(
    inventory_text: &str,
    signed: &[(Certname, Vec<u8>)],
) -> Result<Vec<ImportedCert>, CaError> {
    let mut by_serial: HashMap<u128, (Certname, Vec<u8>, Validity)> = HashMap::new();
    for (name, pem) in signed {
        let der = pemfile::single_block(pem, &["CERTIFICATE"])
            .map_err(|e| CaError::Setup(format!("signed/{name}.pem: {e}")))?;
        let facts = pki::describe::certificate(&der)
            .and_then(|d| d.cert)
            .ok_or_else(|| CaError::Setup(format!("signed/{name}.pem")))?;
        let serial =
            facts.serial.ok_or_else(|| CaError::Setup(format!("signed/{name}.pem: serial")))?;
        let validity = Validity {
            not_before: pki::timefmt::parse_puppet_date(&facts.not_before)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            not_after: pki::timefmt::parse_puppet_date(&facts.not_after)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        };
        by_serial.insert(serial.value(), (name.clone(), pem.clone(), validity));
    }
    let mut out = Vec::new();
    for entry in inventory::parse(inventory_text) {
        let name = entry.common_name().unwrap_or(&entry.subject).to_owned();
        let current = by_serial.remove(&entry.serial.value());
        let validity = match (&current, entry.validity) {
            (Some((_, _, v)), _) => *v,
            (None, Some(v)) => v,
            (None, None) => continue,
        };
        out.push(ImportedCert {
            serial: entry.serial,
            pem: current.as_ref().map(|(_, pem, _)| pem.clone()),
            current: current.is_some(),
            name,
            validity,
        });
    }
    for (serial, (name, pem, validity)) in by_serial {
        out.push(ImportedCert {
            serial: Serial::from_u128(serial),
            name: name.to_string(),
            pem: Some(pem),
            validity,
            current: true,
        });
    }
    Ok(out)
}

/// Writes the CA's certificate (0644) and key (0600) into `cadir`, refusing to overwrite.
fn write_ca_files(cadir: &Path, cert: &[u8], key: &[u8]) -> Result<(), CaError> {
    std::fs::create_dir_all(cadir).map_err(StoreError::io("create directory", cadir))?;
    for name in ["ca_crt.pem", "ca_key.pem"] {
        if cadir.join(name).exists() {
            return Err(StoreError::AlreadyExists(cadir.to_path_buf()).into());
        }
    }
    crate::fs::write_file(&cadir.join("ca_key.pem"), key, 0o600)?;
    crate::fs::write_file(&cadir.join("ca_crt.pem"), cert, 0o644)?;
    Ok(())
}
