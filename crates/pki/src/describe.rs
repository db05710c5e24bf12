//! What the CA API reports about a certificate or a request (puppetserver's status object).

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use x509_parser::{certificate::X509Certificate, extensions::ParsedExtension, prelude::FromDer};

use crate::{
    csr::{alt_name, AltName, Csr},
    oid,
    serial::Serial,
    timefmt::puppet_date,
};

/// The facts behind one entry of `certificate_status(es)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub common_name: String,
    /// IPs first, then DNS names, each prefixed (`IP:`, `DNS:`).
    pub subject_alt_names: Vec<String>,
    pub dns_alt_names: Vec<String>,
    /// Extensions under `1.3.6.1.4.1.34380.1.3`, by short name.
    pub authorization_extensions: BTreeMap<String, String>,
    pub fingerprints: Fingerprints,
    /// Certificates only.
    pub cert: Option<CertFacts>,
}

/// Upper-case, colon-separated digests of the DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprints {
    pub sha1: String,
    pub sha256: String,
    pub sha512: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub serial: Option<Serial>,
    pub serial_bytes: Vec<u8>,
    pub not_before: String,
    pub not_after: String,
    pub not_after_unix: i64,
}

impl Fingerprints {
    pub fn of(der: &[u8]) -> Self {
        Self {
            sha1: hex_colon(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()),
            sha256: hex_colon(digest::digest(&digest::SHA256, der).as_ref()),
            sha512: hex_colon(digest::digest(&digest::SHA512, der).as_ref()),
        }
    }
}

/// Describes a DER certificate; `None` when it does not parse.
pub fn certificate(der: &[u8]) -> Option<Description> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut names = Vec::new();
    let mut auth = BTreeMap::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            names.extend(san.general_names.iter().filter_map(|n| alt_name(n).ok()));
        }
        note_authorization(&ext.oid.to_id_string(), ext.value, &mut auth);
    }
    let validity = cert.validity();
    Some(Description {
        common_name: crate::csr::first_common_name(cert.subject()).unwrap_or_default(),
        subject_alt_names: ordered_alt_names(&names),
        dns_alt_names: dns_only(&names),
        authorization_extensions: auth,
        fingerprints: Fingerprints::of(der),
        cert: Some(CertFacts {
            serial: Serial::from_be_bytes(cert.raw_serial()),
            serial_bytes: cert.raw_serial().to_vec(),
            not_before: puppet_date(validity.not_before.to_datetime()),
            not_after: puppet_date(validity.not_after.to_datetime()),
            not_after_unix: validity.not_after.timestamp(),
        }),
    })
}

/// Describes a parsed CSR.
pub fn request(csr: &Csr) -> Description {
    let mut auth = BTreeMap::new();
    for ext in csr.extensions() {
        note_authorization(&ext.oid, &ext.value, &mut auth);
    }
    Description {
        common_name: csr.common_name().unwrap_or_default().to_owned(),
        subject_alt_names: ordered_alt_names(csr.alt_names()),
        dns_alt_names: dns_only(csr.alt_names()),
        authorization_extensions: auth,
        fingerprints: Fingerprints::of(csr.der()),
        cert: None,
    }
}

/// The first CN of a DER-encoded X.500 name.
pub fn name_common_name(der: &[u8]) -> Option<String> {
    let (_, name) = x509_parser::x509::X509Name::from_der(der).ok()?;
    crate::csr::first_common_name(&name)
}

fn note_authorization(oid_text: &str, value: &[u8], into: &mut BTreeMap<String, String>) {
    if oid::is_under(oid_text, oid::PP_AUTH_CERT_EXT) {
        into.insert(oid::display_name(oid_text).to_owned(), extension_text(value));
    }
}

/// The text of a string-valued extension; hex for anything else.
pub fn extension_text(value: &[u8]) -> String {
    let parsed = x509_parser::der_parser::parse_der(value)
        .ok()
        .and_then(|(_, obj)| obj.as_str().ok().map(str::to_owned));
    parsed.unwrap_or_else(|| value.iter().map(|b| format!("{b:02x}")).collect())
}

fn ordered_alt_names(names: &[AltName]) -> Vec<String> {
    let ips = names.iter().filter(|n| matches!(n, AltName::Ip(_)));
    let dns = names.iter().filter(|n| matches!(n, AltName::Dns(_)));
    ips.chain(dns).map(ToString::to_string).collect()
}

fn dns_only(names: &[AltName]) -> Vec<String> {
    names.iter().filter(|n| matches!(n, AltName::Dns(_))).map(ToString::to_string).collect()
}

fn hex_colon(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}
