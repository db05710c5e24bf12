//! DER encodings of the extension values puppetserver writes, built with yasna.

use std::net::IpAddr;

use yasna::{models::ObjectIdentifier, Tag};

use crate::csr::AltName;

const SERVER_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 1];
const CLIENT_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 2];

/// keyUsage = digitalSignature, keyEncipherment.
pub(crate) const KEY_USAGE_LEAF: &[u8] = &[0x03, 0x02, 0x05, 0xa0];
/// keyUsage = keyCertSign, cRLSign.
pub(crate) const KEY_USAGE_CA: &[u8] = &[0x03, 0x02, 0x01, 0x06];
/// basicConstraints = CA:FALSE (an empty sequence).
pub(crate) const BASIC_CONSTRAINTS_LEAF: &[u8] = &[0x30, 0x00];
/// basicConstraints = CA:TRUE, no path length.
pub(crate) const BASIC_CONSTRAINTS_CA: &[u8] = &[0x30, 0x03, 0x01, 0x01, 0xff];

/// extendedKeyUsage = serverAuth, clientAuth.
pub(crate) fn ext_key_usage_server_client() -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_oid(&ObjectIdentifier::from_slice(SERVER_AUTH));
            w.next().write_oid(&ObjectIdentifier::from_slice(CLIENT_AUTH));
        })
    })
}

pub(crate) fn octet_string(bytes: &[u8]) -> Vec<u8> {
    yasna::construct_der(|w| w.write_bytes(bytes))
}

pub(crate) fn ia5_string(text: &str) -> Vec<u8> {
    yasna::construct_der(|w| w.write_ia5_string(text))
}

pub(crate) fn utf8_string(text: &str) -> Vec<u8> {
    yasna::construct_der(|w| w.write_utf8_string(text))
}

/// AuthorityKeyIdentifier with the key id and, when known, the issuer's own issuer name and
/// serial, as puppetserver (BouncyCastle) writes it.
pub(crate) fn authority_key_identifier(
    key_id: &[u8],
    issuer_of_issuer: Option<(&[u8], &[u8])>,
) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_tagged_implicit(Tag::context(0), |w| w.write_bytes(key_id));
            let Some((name_der, serial)) = issuer_of_issuer else {
                return;
            };
            w.next().write_tagged_implicit(Tag::context(1), |w| {
                w.write_sequence(|w| {
                    w.next().write_tagged(Tag::context(4), |w| w.write_der(name_der));
                })
            });
            w.next().write_tagged_implicit(Tag::context(2), |w| w.write_bigint_bytes(serial, true));
        })
    })
}

/// SubjectAltName with DNS and IP entries.
pub(crate) fn subject_alt_names(names: &[AltName]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            for name in names {
                match name {
                    AltName::Dns(dns) => {
                        w.next().write_tagged_implicit(Tag::context(2), |w| w.write_ia5_string(dns))
                    }
                    AltName::Ip(ip) => w
                        .next()
                        .write_tagged_implicit(Tag::context(7), |w| w.write_bytes(&ip_bytes(ip))),
                    AltName::Other(_) => {}
                }
            }
        })
    })
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}
