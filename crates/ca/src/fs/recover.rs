//! Repairs what a crash (`kill -9`, power loss) can leave in a CA directory. Runs under the lock,
//! when no other process can be mid-write, so every temp file found is debris.

use std::{collections::BTreeSet, fs, path::Path};

use pki::{describe, inventory, Certname, Serial};

use super::{atomic, layout::Layout};
use crate::store::StoreError;

/// What recovery found and mended, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub temp_files_removed: usize,
    pub inventory_lines_added: usize,
    pub requests_removed: usize,
    /// Set when the serial file was behind the highest serial in use.
    pub serial_raised_to: Option<Serial>,
}

impl Recovery {
    pub fn is_clean(&self) -> bool {
        *self == Self::default()
    }
}

pub(super) fn run(layout: &Layout) -> Result<Recovery, StoreError> {
    let mut report = Recovery::default();
    for dir in [layout.dir.clone(), layout.signed_dir(), layout.requests_dir()] {
        report.temp_files_removed += remove_temp_files(&dir)?;
    }
    let inventory_text = read_text(&layout.inventory())?;
    let mut known: BTreeSet<Serial> = inventory::parse(&inventory_text).map(|e| e.serial).collect();
    // Random serials (signed by a database-backed CA, then exported) do not count: the
    // `serial` file continues the sequential ones.
    let sequential = |s: &Serial| !s.is_random();
    let mut highest = known.iter().copied().filter(sequential).max().unwrap_or(Serial::new(0));
    for (name, der_serial, line) in signed_certs(layout)? {
        if sequential(&der_serial) {
            highest = highest.max(der_serial);
        }
        if known.insert(der_serial) {
            tracing::warn!(certname = %name, serial = %der_serial, "certificate missing from inventory.txt; appending it");
            atomic::append_line(&layout.inventory(), &line)?;
            report.inventory_lines_added += 1;
        }
        report.requests_removed += usize::from(atomic::remove(&layout.request(&name))?);
    }
    let serial_path = layout.serial();
    let serial = Serial::parse_file(&read_text(&serial_path)?)
        .map_err(|e| StoreError::Corrupt { path: serial_path.clone(), what: e.to_string() })?;
    if serial <= highest {
        let next = highest.next();
        tracing::warn!(was = %serial, now = %next, "serial file was behind the certificates in use; raising it");
        atomic::write(&serial_path, next.to_file().as_bytes(), 0o644)?;
        report.serial_raised_to = Some(next);
    }
    Ok(report)
}

fn read_text(path: &Path) -> Result<String, StoreError> {
    fs::read_to_string(path).map_err(StoreError::io("read", path))
}

fn remove_temp_files(dir: &Path) -> Result<usize, StoreError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(atomic::TEMP_PREFIX) {
            removed += usize::from(atomic::remove(&entry.path())?);
        }
    }
    Ok(removed)
}

/// Each signed certificate's name, serial and the inventory line it should have.
fn signed_certs(layout: &Layout) -> Result<Vec<(Certname, Serial, String)>, StoreError> {
    let mut out = Vec::new();
    for (name, pem) in super::read_pem_dir(&layout.signed_dir())? {
        let path = layout.signed(&name);
        let Some(facts) = cert_facts(&pem) else {
            tracing::error!(file = %path.display(), "unreadable certificate in signed/; leaving it alone");
            continue;
        };
        out.push((name, facts.0, facts.1));
    }
    Ok(out)
}

fn cert_facts(pem: &[u8]) -> Option<(Serial, String)> {
    let der = pki::pemfile::single_block(pem, &["CERTIFICATE"]).ok()?;
    let description = describe::certificate(&der)?;
    let cert = description.cert?;
    let serial = cert.serial?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).ok()?;
    let validity = pki::Validity {
        not_before: parsed.validity().not_before.to_datetime(),
        not_after: parsed.validity().not_after.to_datetime(),
    };
    Some((serial, inventory::line(serial, &validity, &description.common_name)))
}
