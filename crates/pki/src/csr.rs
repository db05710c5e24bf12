//! PKCS#10 certificate signing requests: parsed once from untrusted bytes into owned values.
//!
//! Parsing does not judge a request; [`crate::policy`] does. Parsing fails only when the bytes
//! are not one well-formed CSR.

mod pkcs10;

use std::net::IpAddr;

use thiserror::Error;
use x509_parser::{
    extensions::{GeneralName, ParsedExtension, X509Extension},
    prelude::FromDer,
    x509::SubjectPublicKeyInfo,
};

use crate::{oid, pemfile};

/// Largest CSR body accepted, in bytes. An RSA-16384 CSR with many extensions is under 10 KiB.
pub const MAX_CSR_BYTES: usize = 64 * 1024;

const CSR_LABELS: &[&str] = &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// A parsed certificate signing request.
#[derive(Debug, Clone)]
pub struct Csr {
    der: Vec<u8>,
    common_name: Option<String>,
    public_key: PublicKeyInfo,
    extensions: Vec<RequestedExtension>,
    alt_names: Vec<AltName>,
    /// Attributes other than the extension request (challengePassword, Puppet's custom
    /// attributes), as text.
    attributes: Vec<CsrAttribute>,
    signature_valid: bool,
}

/// One attribute of a request other than its extension request: what `csr_attributes.yaml`'s
/// `custom_attributes` put there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrAttribute {
    /// Dotted OID, e.g. `1.2.840.113549.1.9.7` (challengePassword).
    pub oid: String,
    /// The value as text, whatever string type and characters it was written with.
    pub value: String,
}

/// The public key of a request or certificate, as far as policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    /// The whole SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// The subjectPublicKey bit string's bytes (what a key identifier hashes).
    pub key_bits: Vec<u8>,
    pub kind: KeyKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    Ec { curve: EcCurve },
    Other { algorithm: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcCurve {
    P256,
    P384,
    Unsupported,
}

/// One extension from the request's extensionRequest attribute, kept byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedExtension {
    pub oid: String,
    pub arcs: Vec<u64>,
    pub critical: bool,
    /// The extnValue contents (DER of the extension's own value).
    pub value: Vec<u8>,
}

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AltName {
    Dns(String),
    Ip(IpAddr),
    /// Any other GeneralName kind, described for messages.
    Other(String),
}

impl std::fmt::Display for AltName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dns(name) => write!(f, "DNS:{name}"),
            Self::Ip(ip) => write!(f, "IP:{ip}"),
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// Why bytes are not a CSR.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CsrError {
    #[error("the certificate request is empty")]
    Empty,
    #[error("the certificate request is larger than {MAX_CSR_BYTES} bytes")]
    TooLarge,
    #[error("the certificate request is not PEM: {0}")]
    Pem(#[from] pemfile::PemError),
    #[error("the certificate request is not valid PKCS#10 DER: {0}")]
    Der(String),
    #[error("the certificate request has {0} bytes after its end")]
    TrailingData(usize),
    #[error("the certificate request repeats extension {0}")]
    DuplicateExtension(String),
    #[error("the certificate request has a malformed subject alternative name extension")]
    BadAltNames,
}

impl Csr {
    /// Parses exactly one PEM-framed PKCS#10 request.
    pub fn from_pem(bytes: &[u8]) -> Result<Self, CsrError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(CsrError::Empty);
        }
        if bytes.len() > MAX_CSR_BYTES {
            return Err(CsrError::TooLarge);
        }
        let der = pemfile::single_block(bytes, CSR_LABELS)?;
        Self::from_der(der)
    }

    /// Parses a DER PKCS#10 request (see [`pkcs10`] for what is read strictly and what is not).
    pub fn from_der(der: Vec<u8>) -> Result<Self, CsrError> {
        let parsed = pkcs10::parse(&der)?;
        let common_name = first_common_name(&parsed.subject);
        let public_key = PublicKeyInfo::from_spki(&parsed.spki);
        let extensions = requested_extensions(&parsed.extensions)?;
        let alt_names = alt_names_of(&parsed.extensions)?;
        let attributes =
            parsed.attributes.into_iter().map(|(oid, value)| CsrAttribute { oid, value }).collect();
        let signature_valid = parsed.signature_valid;
        Ok(Self {
            der,
            common_name,
            public_key,
            extensions,
            alt_names,
            attributes,
            signature_valid,
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The request re-encoded as PEM, as puppetserver stores it.
    pub fn to_pem(&self) -> String {
        pemfile::encode("CERTIFICATE REQUEST", &self.der)
    }

    /// The first CN of the subject, if any.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    pub fn public_key(&self) -> &PublicKeyInfo {
        &self.public_key
    }

    pub fn extensions(&self) -> &[RequestedExtension] {
        &self.extensions
    }

    pub fn alt_names(&self) -> &[AltName] {
        &self.alt_names
    }

    /// Attributes other than the extension request.
    pub fn attributes(&self) -> &[CsrAttribute] {
        &self.attributes
    }

    /// The first value of the attribute `oid` (dotted), if the request has it.
    pub fn attribute(&self, oid: &str) -> Option<&str> {
        self.attributes.iter().find(|a| a.oid == oid).map(|a| a.value.as_str())
    }

    /// Whether the agent asked for automatic renewal (Puppet 8's `pp_auth_auto_renew`
    /// attribute set to `true`).
    pub fn wants_auto_renewal(&self) -> bool {
        self.attribute(oid::PP_AUTH_AUTO_RENEW) == Some("true")
    }

    /// Whether the request is signed by the key it carries.
    pub fn signature_valid(&self) -> bool {
        self.signature_valid
    }
}

impl PublicKeyInfo {
    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Self {
        let algorithm = spki.algorithm.algorithm.to_id_string();
        let kind = match algorithm.as_str() {
            OID_RSA => KeyKind::Rsa { bits: rsa_modulus_bits(spki) },
            OID_EC => KeyKind::Ec { curve: ec_curve(spki) },
            _ => KeyKind::Other { algorithm },
        };
        Self { spki_der: spki.raw.to_vec(), key_bits: spki.subject_public_key.data.to_vec(), kind }
    }

    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Option<Self> {
        let (_, spki) = SubjectPublicKeyInfo::from_der(der).ok()?;
        Some(Self::from_spki(&spki))
    }
}

fn rsa_modulus_bits(spki: &SubjectPublicKeyInfo<'_>) -> usize {
    let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = spki.parsed() else {
        return 0;
    };
    let modulus = rsa.modulus;
    let Some(first) = modulus.iter().position(|b| *b != 0) else {
        return 0;
    };
    let significant = &modulus[first..];
    (significant.len() - 1) * 8 + (8 - significant[0].leading_zeros() as usize)
}

fn ec_curve(spki: &SubjectPublicKeyInfo<'_>) -> EcCurve {
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    match curve.map(|oid| oid.to_id_string()).as_deref() {
        Some(OID_P256) => EcCurve::P256,
        Some(OID_P384) => EcCurve::P384,
        _ => EcCurve::Unsupported,
    }
}

pub(crate) fn first_common_name(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    name.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned)
}

fn requested_extensions(
    extensions: &[X509Extension<'_>],
) -> Result<Vec<RequestedExtension>, CsrError> {
    let mut out: Vec<RequestedExtension> = Vec::new();
    for ext in extensions {
        let oid = ext.oid.to_id_string();
        if out.iter().any(|seen| seen.oid == oid) {
            return Err(CsrError::DuplicateExtension(oid));
        }
        let arcs = ext.oid.iter().map(Iterator::collect).unwrap_or_default();
        out.push(RequestedExtension {
            oid,
            arcs,
            critical: ext.critical,
            value: ext.value.to_vec(),
        });
    }
    Ok(out)
}

fn alt_names_of(extensions: &[X509Extension<'_>]) -> Result<Vec<AltName>, CsrError> {
    let Some(ext) = extensions.iter().find(|e| e.oid.to_id_string() == oid::SUBJECT_ALT_NAME)
    else {
        return Ok(Vec::new());
    };
    let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() else {
        return Err(CsrError::BadAltNames);
    };
    san.general_names.iter().map(alt_name).collect()
}

pub(crate) fn alt_name(name: &GeneralName<'_>) -> Result<AltName, CsrError> {
    Ok(match name {
        GeneralName::DNSName(dns) => AltName::Dns((*dns).to_owned()),
        GeneralName::IPAddress(bytes) => AltName::Ip(ip_from_bytes(bytes)?),
        GeneralName::Invalid(..) => return Err(CsrError::BadAltNames),
        other => AltName::Other(other.to_string()),
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Result<IpAddr, CsrError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).map(IpAddr::from).map_err(|_| CsrError::BadAltNames)
}
