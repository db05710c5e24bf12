//! PKCS#10's structure, read with the leniency Puppet needs.
//!
//! Puppet's Ruby OpenSSL writes every `custom_attributes` entry of `csr_attributes.yaml` (a
//! challengePassword above all) as a PrintableString without checking its characters: `_`,
//! `!`, `.` of a JWT-shaped autosign token, even UTF-8 bytes. A strict DER parser refuses the
//! whole request, and the agent then waits forever for a certificate nobody can sign. So:
//! the request info, the subject, the public key, the signature and the extension request are
//! parsed strictly (they become the certificate), and every other attribute value is kept as
//! text whatever its string type and bytes. The signature is checked over the request info's
//! bytes as received.

use x509_parser::{
    asn1_rs::{Any, BitString, Class, FromDer, Oid, Tag},
    cri_attributes::ExtensionRequest,
    extensions::X509Extension,
    x509::{AlgorithmIdentifier, SubjectPublicKeyInfo, X509Name},
};

use super::CsrError;

/// `extensionRequest` (PKCS#9).
const EXTENSION_REQUEST: &str = "1.2.840.113549.1.9.14";

/// A request's parts, borrowing the DER.
pub(super) struct Pkcs10<'a> {
    pub(super) subject: X509Name<'a>,
    pub(super) spki: SubjectPublicKeyInfo<'a>,
    /// The extension request's extensions, in order.
    pub(super) extensions: Vec<X509Extension<'a>>,
    /// Every other attribute value: its OID (dotted) and its text.
    pub(super) attributes: Vec<(String, String)>,
    pub(super) signature_valid: bool,
}

fn der_error(
    what: &str,
) -> impl Fn(x509_parser::nom::Err<x509_parser::error::X509Error>) -> CsrError + '_ {
    move |e| CsrError::Der(format!("{what}: {e}"))
}

/// One DER value of `tag` (universal, or context-specific when `context` is set).
fn value<'a>(input: &'a [u8], tag: Tag, what: &str) -> Result<(&'a [u8], Any<'a>), CsrError> {
    let (rest, any) = Any::from_der(input).map_err(|e| CsrError::Der(format!("{what}: {e}")))?;
    if any.header.tag() != tag {
        return Err(CsrError::Der(format!(
            "{what}: expected tag {tag}, found {}",
            any.header.tag()
        )));
    }
    Ok((rest, any))
}

pub(super) fn parse(der: &[u8]) -> Result<Pkcs10<'_>, CsrError> {
    let (rest, outer) = value(der, Tag::Sequence, "CertificationRequest")?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingData(rest.len()));
    }
    let (after_info, info) = value(outer.data, Tag::Sequence, "certificationRequestInfo")?;
    let info_der = &outer.data[..outer.data.len() - after_info.len()];
    let (after_algorithm, algorithm) =
        AlgorithmIdentifier::from_der(after_info).map_err(der_error("signatureAlgorithm"))?;
    let (after_signature, signature) = BitString::from_der(after_algorithm)
        .map_err(|e| CsrError::Der(format!("signature: {e}")))?;
    if !after_signature.is_empty() {
        return Err(CsrError::Der("bytes after the signature".into()));
    }

    let (rest, version) = value(info.data, Tag::Integer, "version")?;
    if version.data != [0] {
        return Err(CsrError::Der("version is not 0 (v1)".into()));
    }
    let (rest, subject) = X509Name::from_der(rest).map_err(der_error("subject"))?;
    let (rest, spki) = SubjectPublicKeyInfo::from_der(rest).map_err(der_error("subjectPKInfo"))?;
    let (rest, attributes) =
        Any::from_der(rest).map_err(|e| CsrError::Der(format!("attributes: {e}")))?;
    if attributes.header.class() != Class::ContextSpecific || attributes.header.tag() != Tag(0) {
        return Err(CsrError::Der("attributes: expected [0]".into()));
    }
    if !rest.is_empty() {
        return Err(CsrError::Der("bytes after the attributes".into()));
    }
    let (extensions, attributes) = read_attributes(attributes.data)?;
    let signature_valid =
        x509_parser::verify::verify_signature(&spki, &algorithm, &signature, info_der).is_ok();
    Ok(Pkcs10 { subject, spki, extensions, attributes, signature_valid })
}

type Attributes<'a> = (Vec<X509Extension<'a>>, Vec<(String, String)>);

/// The extension request, strictly; every other attribute as text.
fn read_attributes(mut data: &[u8]) -> Result<Attributes<'_>, CsrError> {
    let mut extensions = None;
    let mut others = Vec::new();
    while !data.is_empty() {
        let (rest, attribute) = value(data, Tag::Sequence, "attribute")?;
        data = rest;
        let (after_oid, oid) = Oid::from_der(attribute.data)
            .map_err(|e| CsrError::Der(format!("attribute type: {e}")))?;
        let (after_set, values) = value(after_oid, Tag::Set, "attribute values")?;
        if !after_set.is_empty() {
            return Err(CsrError::Der("bytes after an attribute's values".into()));
        }
        let oid = oid.to_id_string();
        if oid == EXTENSION_REQUEST {
            if extensions.is_some() {
                return Err(CsrError::Der("two extension requests".into()));
            }
            let (rest, request) =
                ExtensionRequest::from_der(values.data).map_err(der_error("extension request"))?;
            if !rest.is_empty() {
                return Err(CsrError::Der("an extension request with more than one value".into()));
            }
            extensions = Some(request.extensions);
            continue;
        }
        let mut items = values.data;
        while !items.is_empty() {
            let (rest, item) =
                Any::from_der(items).map_err(|e| CsrError::Der(format!("attribute {oid}: {e}")))?;
            items = rest;
            others.push((oid.clone(), text(&item)));
        }
    }
    Ok((extensions.unwrap_or_default(), others))
}

/// An attribute value as text: any string type, whatever its characters (invalid UTF-8 is
/// replaced); anything else as `#` and its hex DER content.
fn text(item: &Any<'_>) -> String {
    let data = item.data;
    match item.header.tag() {
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        Tag::UniversalString => data
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                char::from_u32(u32::from_be_bytes(b)).unwrap_or('\u{fffd}')
            })
            .collect(),
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::T61String
        | Tag::Ia5String
        | Tag::VisibleString
        | Tag::NumericString
        | Tag::GeneralString => String::from_utf8_lossy(data).into_owned(),
        _ => {
            std::iter::once("#".to_owned()).chain(data.iter().map(|b| format!("{b:02x}"))).collect()
        }
    }
}
