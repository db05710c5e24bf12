//! Who is on the other end of a TLS connection, in the forms the backends read.

use http::HeaderValue;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

/// Characters left as they are in `X-Client-Cert`: RFC 3986 unreserved. Everything else,
/// newlines (`%0A`), spaces (`%20`) and base64's `+/=` included, is percent-encoded, which
/// ring's `url-decode` (percent-only, `+` literal) reads back exactly.
const CERT_ESCAPE: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The client of one connection, computed once after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientIdentity {
    /// No client certificate: `X-Client-Verify: NONE`.
    Anonymous,
    /// A certificate the TLS layer verified against the CA bundle and CRL.
    Verified(VerifiedClient),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedClient {
    /// The subject's first CN: the agent's certname.
    pub(crate) certname: String,
    /// Big-endian serial, for revocation checks of live connections.
    pub(crate) serial: Vec<u8>,
    /// `X-Client-DN`, RFC 2253 (`CN=agent1.example.com`).
    pub(crate) dn: HeaderValue,
    /// `X-Client-Cert`, the URL-encoded PEM.
    pub(crate) cert: HeaderValue,
}

impl ClientIdentity {
    /// From the verified leaf certificate the client presented, if any. A certificate rustls
    /// verified but we cannot read (no CN) counts as anonymous.
    pub(crate) fn from_peer(leaf: Option<&[u8]>) -> Self {
        let Some(der) = leaf else {
            return Self::Anonymous;
        };
        match VerifiedClient::from_der(der) {
            Some(client) => Self::Verified(client),
            None => {
                tracing::warn!("verified client certificate has no usable CN; treating the client as anonymous");
                Self::Anonymous
            }
        }
    }

    pub(crate) fn certname(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::Verified(client) => Some(&client.certname),
        }
    }

    /// `SUCCESS` or `NONE`.
    pub(crate) fn verify_result(&self) -> &'static str {
        match self {
            Self::Anonymous => "NONE",
            Self::Verified(_) => "SUCCESS",
        }
    }
}

impl VerifiedClient {
    fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let certname = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
        let dn = HeaderValue::from_str(&rfc2253(&cert)).ok()?;
        let pem = pki::pemfile::encode("CERTIFICATE", der);
        let cert_header =
            HeaderValue::from_str(&utf8_percent_encode(&pem, CERT_ESCAPE).to_string()).ok()?;
        Some(Self { certname, serial: cert.raw_serial().to_vec(), dn, cert: cert_header })
    }
}

/// The subject in RFC 2253 form: last RDN first, `,` between RDNs, special characters escaped.
fn rfc2253(cert: &X509Certificate<'_>) -> String {
    let mut rdns: Vec<String> = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|attr| {
                let key = x509_parser::objects::oid2abbrev(
                    attr.attr_type(),
                    x509_parser::objects::oid_registry(),
                )
                .map(str::to_owned)
                .unwrap_or_else(|_| attr.attr_type().to_id_string());
                let value = attr.as_str().map(escape_rfc2253).unwrap_or_default();
                format!("{key}={value}")
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let edge =
            (i == 0 && (c == ' ' || c == '#')) || (i + 1 == value.chars().count() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_what_url_decode_restores() {
        let pem = "-----BEGIN CERTIFICATE-----\nMII+/=\n-----END CERTIFICATE-----\n";
        let encoded = utf8_percent_encode(pem, CERT_ESCAPE).to_string();
        assert_eq!(
            encoded,
            "-----BEGIN%20CERTIFICATE-----%0AMII%2B%2F%3D%0A-----END%20CERTIFICATE-----%0A"
        );
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(&encoded).collect();
        assert_eq!(decoded, pem.as_bytes());
    }

    #[test]
    fn rfc2253_escapes_specials() {
        assert_eq!(escape_rfc2253("a,b"), "a\\,b");
        assert_eq!(escape_rfc2253(" lead"), "\\ lead");
        assert_eq!(escape_rfc2253("plain.example.com"), "plain.example.com");
    }
}
