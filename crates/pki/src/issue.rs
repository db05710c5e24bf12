//! Issuing certificates in puppetserver's profile, and making a new CA.
//!
//! Every extension is written by this module (none by rcgen's defaults), non-critical ones
//! first and critical ones last as BouncyCastle does, so the output matches puppetserver's.

use std::time::Duration;

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    PublicKeyData, SerialNumber,
};
use thiserror::Error;
use time::OffsetDateTime;
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

use crate::{
    certname::Certname,
    csr::{AltName, PublicKeyInfo, RequestedExtension},
    der, oid, pemfile,
    serial::Serial,
};

/// Puppet's default `ca_ttl`: five 365-day years.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(5 * 365 * 86_400);
/// `puppetserver ca setup`'s default lifetime for a CA certificate: fifteen years.
pub const DEFAULT_CA_TTL: Duration = Duration::from_secs(15 * 365 * 86_400);
/// puppetserver's upper bound on `ca_ttl`: fifty years.
pub const MAX_TTL: Duration = Duration::from_secs(1_576_800_000);

const BACKDATE: time::Duration = time::Duration::days(1);
const OID_SKI: &[u64] = &[2, 5, 29, 14];
const OID_AKI: &[u64] = &[2, 5, 29, 35];
const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_SAN: &[u64] = &[2, 5, 29, 17];
const OID_NETSCAPE_COMMENT: &[u64] = &[2, 16, 840, 1, 113_730, 1, 13];
const OID_PP_CLI_AUTH: &[u64] = &[1, 3, 6, 1, 4, 1, 34_380, 1, 3, 39];

/// A certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// puppetserver's rule: from one day before `now` until `now + ttl`, to the second.
    pub fn puppet(now: OffsetDateTime, ttl: Duration) -> Self {
        let now = now.replace_nanosecond(0).unwrap_or(now);
        Self { not_before: now - BACKDATE, not_after: now + ttl }
    }
}

#[derive(Debug, Error)]
pub enum IssueError {
    #[error("the CA certificate cannot be read: {0}")]
    CaCert(String),
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,
    #[error("the request's public key cannot be used: {0}")]
    PublicKey(String),
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
    #[error("the certificate cannot be renewed: {0}")]
    Renewal(String),
}

/// The CA's signing material: its certificate (the first of `ca_crt.pem`) and its key.
pub struct CaSigner {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    key_id: Option<Vec<u8>>,
    own_issuer_der: Vec<u8>,
    own_serial: Vec<u8>,
    subject: String,
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSigner").field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// What goes into a certificate besides the CA's own choices.
#[derive(Debug, Clone)]
pub struct CertRequest {
    pub name: Certname,
    pub public_key: PublicKeyInfo,
    pub alt_names: Vec<AltName>,
    /// Extensions carried over from the CSR (already through policy), SAN excluded.
    pub extensions: Vec<RequestedExtension>,
    /// Add `pp_cli_auth = "true"`, as puppetserver does for its own host certificate.
    pub cli_auth: bool,
}

impl CertRequest {
    /// What a CSR asks for: its key, its SANs and its extensions (SAN itself excluded).
    pub fn from_csr(name: Certname, csr: &crate::Csr) -> Self {
        Self {
            name,
            public_key: csr.public_key().clone(),
            alt_names: csr.alt_names().to_vec(),
            extensions: csr
                .extensions()
                .iter()
                .filter(|e| e.oid != oid::SUBJECT_ALT_NAME)
                .cloned()
                .collect(),
            cli_auth: false,
        }
    }
}

impl CertRequest {
    /// What a renewal of the certificate `der` asks for: the same name, key, SANs and Puppet
    /// extensions (carried byte for byte; `pp_cli_auth` as the `cli_auth` flag). Key usages,
    /// the comment and the key identifiers are the profile's, written anew.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IssueError> {
        let bad = |why: String| IssueError::Renewal(why);
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
        let cn = crate::csr::first_common_name(cert.subject())
            .ok_or_else(|| bad("the certificate has no common name".into()))?;
        let name = Certname::parse(&cn).map_err(|e| bad(e.to_string()))?;
        let public_key = PublicKeyInfo::from_spki(cert.public_key());
        let mut alt_names = Vec::new();
        let mut extensions = Vec::new();
        let mut cli_auth = false;
        for e in cert.extensions() {
            let oid_text = e.oid.to_id_string();
            if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) =
                e.parsed_extension()
            {
                for general in &san.general_names {
                    alt_names.push(crate::csr::alt_name(general).map_err(|e| bad(e.to_string()))?);
                }
            } else if oid_text == oid::PP_CLI_AUTH {
                cli_auth = crate::describe::extension_text(e.value) == "true";
            } else if oid::is_puppet_extension(&oid_text) {
                let arcs = e.oid.iter().map(Iterator::collect).unwrap_or_default();
                extensions.push(RequestedExtension {
                    oid: oid_text,
                    arcs,
                    critical: e.critical,
                    value: e.value.to_vec(),
                });
            }
        }
        Ok(Self { name, public_key, alt_names, extensions, cli_auth })
    }
}

/// A freshly signed certificate.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub der: Vec<u8>,
    pub pem: String,
    pub serial: Serial,
    pub validity: Validity,
}

impl CaSigner {
    /// Builds a signer from the CA certificate (DER) and its private key.
    pub fn new(cert_der: Vec<u8>, key: KeyPair) -> Result<Self, IssueError> {
        let (_, cert) =
            X509Certificate::from_der(&cert_der).map_err(|e| IssueError::CaCert(e.to_string()))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(IssueError::KeyMismatch);
        }
        let key_id = subject_key_id(&cert);
        let own_issuer_der = cert.issuer().as_raw().to_vec();
        let own_serial = cert.raw_serial().to_vec();
        let subject = cert.subject().to_string();
        let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key)?;
        Ok(Self { issuer, cert_der, key_id, own_issuer_der, own_serial, subject })
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA's subject, e.g. `CN=Puppet CA: puppetlb.example.com`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    pub(crate) fn key_id(&self) -> Option<&[u8]> {
        self.key_id.as_deref()
    }

    /// Whether this CA issued the certificate `der`: its authority key identifier names this
    /// CA's key, and this CA's key verifies its signature.
    pub fn issued(&self, der: &[u8]) -> bool {
        let (Ok((_, cert)), Ok((_, ca))) =
            (X509Certificate::from_der(der), X509Certificate::from_der(&self.cert_der))
        else {
            return false;
        };
        let aki = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        });
        aki.is_some() && aki == self.key_id && cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    /// Signs `request` with `serial` for `validity`.
    pub fn issue(
        &self,
        request: &CertRequest,
        serial: Serial,
        validity: Validity,
    ) -> Result<IssuedCert, IssueError> {
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&request.public_key.spki_der)
            .map_err(|e| IssueError::PublicKey(e.to_string()))?;
        let mut params = base_params(request.name.as_str(), serial, validity);
        params.custom_extensions = self.leaf_extensions(request);
        let cert = params.signed_by(&spki, &self.issuer)?;
        let der = cert.der().to_vec();
        let pem = pemfile::encode("CERTIFICATE", &der);
        Ok(IssuedCert { der, pem, serial, validity })
    }

    fn leaf_extensions(&self, request: &CertRequest) -> Vec<CustomExtension> {
        let mut exts =
            vec![ext(OID_NETSCAPE_COMMENT, der::ia5_string(oid::NETSCAPE_COMMENT_TEXT), false)];
        if let Some(key_id) = &self.key_id {
            let aki = der::authority_key_identifier(
                key_id,
                Some((&self.own_issuer_der, &self.own_serial)),
            );
            exts.push(ext(OID_AKI, aki, false));
        }
        let key_id = sha1(&request.public_key.key_bits);
        exts.push(ext(OID_SKI, der::octet_string(&key_id), false));
        exts.push(ext(OID_SAN, der::subject_alt_names(&alt_names_with_cn(request)), false));
        exts.extend(carried_extensions(request));
        if request.cli_auth {
            exts.push(ext(OID_PP_CLI_AUTH, der::utf8_string("true"), false));
        }
        exts.push(ext(OID_KEY_USAGE, der::KEY_USAGE_LEAF.to_vec(), true));
        exts.push(ext(OID_EXT_KEY_USAGE, der::ext_key_usage_server_client(), true));
        exts.push(ext(OID_BASIC_CONSTRAINTS, der::BASIC_CONSTRAINTS_LEAF.to_vec(), true));
        exts
    }
}

/// Makes a self-signed CA certificate `CN=Puppet CA: <name>` with serial 1, the way
/// puppetserver's `generate-ssl-files!` does; returns its DER.
pub fn self_signed_ca(
    ca_name: &str,
    key: &KeyPair,
    now: OffsetDateTime,
    ttl: Duration,
) -> Result<Vec<u8>, IssueError> {
    let validity = Validity::puppet(now, ttl);
    let mut params = base_params(&format!("Puppet CA: {ca_name}"), Serial::FIRST, validity);
    let key_id = sha1(&subject_public_key_bits(&key.subject_public_key_info())?);
    params.custom_extensions = vec![
        ext(OID_NETSCAPE_COMMENT, der::ia5_string(oid::NETSCAPE_COMMENT_TEXT), false),
        ext(OID_AKI, der::authority_key_identifier(&key_id, None), false),
        ext(OID_SKI, der::octet_string(&key_id), false),
        ext(OID_BASIC_CONSTRAINTS, der::BASIC_CONSTRAINTS_CA.to_vec(), true),
        ext(OID_KEY_USAGE, der::KEY_USAGE_CA.to_vec(), true),
    ];
    Ok(params.self_signed(key)?.der().to_vec())
}

fn base_params(common_name: &str, serial: Serial, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.is_ca = IsCa::NoCa;
    params.use_authority_key_identifier_extension = false;
    params
}

/// The request's SANs, with `DNS:<certname>` added when absent (`ensure-ext-list-has-cn-san`).
fn alt_names_with_cn(request: &CertRequest) -> Vec<AltName> {
    let own = AltName::Dns(request.name.to_string());
    let mut names = request.alt_names.clone();
    if !names.contains(&own) {
        names.push(own);
    }
    names
}

fn carried_extensions(request: &CertRequest) -> impl Iterator<Item = CustomExtension> + '_ {
    request
        .extensions
        .iter()
        .filter(|e| e.oid != oid::SUBJECT_ALT_NAME && e.oid != oid::PP_CLI_AUTH)
        .map(|e| ext(&e.arcs, e.value.clone(), e.critical))
}

fn ext(oid: &[u64], value: Vec<u8>, critical: bool) -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(oid, value);
    ext.set_criticality(critical);
    ext
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
        _ => None,
    })
}

fn subject_public_key_bits(spki_der: &[u8]) -> Result<Vec<u8>, IssueError> {
    PublicKeyInfo::from_spki_der(spki_der)
        .map(|info| info.key_bits)
        .ok_or_else(|| IssueError::PublicKey("unparsable SubjectPublicKeyInfo".into()))
}

/// RFC 5280 method 1 key identifier: SHA-1 of the subjectPublicKey bits.
pub(crate) fn sha1(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes).as_ref().to_vec()
}
