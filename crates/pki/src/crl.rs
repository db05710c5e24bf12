//! Certificate revocation lists: reading the CA's CRL and building the next one.

use std::time::Duration;

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use thiserror::Error;
use time::OffsetDateTime;
use x509_parser::{
    prelude::FromDer, revocation_list::CertificateRevocationList, x509::SubjectPublicKeyInfo,
};

use crate::{issue::CaSigner, pemfile};

mod chain;

pub use chain::{check_update, verify_chain, ChainError, UpdateError, VerifiedChain};

/// puppetserver's CRL lifetime: five calendar years (we use 5 × 365 days).
pub const CRL_LIFETIME: Duration = Duration::from_secs(5 * 365 * 86_400);

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Big-endian serial, leading zeros stripped.
    pub serial: Vec<u8>,
    pub revoked_at: OffsetDateTime,
    /// RFC 5280 CRLReason code.
    pub reason: Option<u8>,
}

/// What a CRL says, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: Option<OffsetDateTime>,
    pub issuer_raw: Vec<u8>,
    pub revoked: Vec<RevokedEntry>,
}

#[derive(Debug, Error)]
pub enum CrlError {
    #[error("not a CRL: {0}")]
    Parse(String),
    #[error("CRL file is empty or not PEM: {0}")]
    Pem(#[from] pemfile::PemError),
    #[error("the CRL number is larger than 64 bits")]
    HugeNumber,
    #[error("could not sign the CRL: {0}")]
    Sign(#[from] rcgen::Error),
    #[error("the CRL is not signed by the CA: {0}")]
    Signature(String),
}

impl CrlInfo {
    /// Parses one DER CRL.
    pub fn from_der(der: &[u8]) -> Result<Self, CrlError> {
        let (_, crl) =
            CertificateRevocationList::from_der(der).map_err(|e| CrlError::Parse(e.to_string()))?;
        let number = match crl.crl_number() {
            Some(n) => u64::try_from(n).map_err(|_| CrlError::HugeNumber)?,
            None => 0,
        };
        let revoked = crl
            .iter_revoked_certificates()
            .map(|entry| RevokedEntry {
                serial: strip_zeros(entry.raw_serial()),
                revoked_at: entry.revocation_date.to_datetime(),
                reason: entry.reason_code().map(|(_, code)| code.0),
            })
            .collect();
        Ok(Self {
            number,
            this_update: crl.last_update().to_datetime(),
            next_update: crl.next_update().map(|t| t.to_datetime()),
            issuer_raw: crl.issuer().as_raw().to_vec(),
            revoked,
        })
    }

    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        let serial = strip_zeros(serial);
        self.revoked.iter().any(|e| e.serial == serial)
    }
}

/// Checks that `crl_der` is signed by the key in `issuer_spki_der`.
pub fn verify_signature(crl_der: &[u8], issuer_spki_der: &[u8]) -> Result<(), CrlError> {
    let (_, crl) =
        CertificateRevocationList::from_der(crl_der).map_err(|e| CrlError::Parse(e.to_string()))?;
    let (_, spki) = SubjectPublicKeyInfo::from_der(issuer_spki_der)
        .map_err(|e| CrlError::Signature(e.to_string()))?;
    crl.verify_signature(&spki).map_err(|e| CrlError::Signature(e.to_string()))
}

/// Signs a CRL with `entries`, numbered `number`, valid from `this_update` for [`CRL_LIFETIME`].
pub fn build(
    signer: &CaSigner,
    entries: &[RevokedEntry],
    number: u64,
    this_update: OffsetDateTime,
) -> Result<Vec<u8>, CrlError> {
    let this_update = this_update.replace_nanosecond(0).unwrap_or(this_update);
    let params = CertificateRevocationListParams {
        this_update,
        next_update: this_update + CRL_LIFETIME,
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: entries.iter().map(revoked_params).collect(),
        key_identifier_method: match signer.key_id() {
            Some(id) => KeyIdMethod::PreSpecified(id.to_vec()),
            None => KeyIdMethod::Sha256,
        },
    };
    Ok(params.signed_by(signer.issuer())?.der().to_vec())
}

/// The number of the CRL after one numbered `current`: the next, or `floor` when higher (a
/// store shared by several nodes passes the time in milliseconds, so that numbers keep
/// increasing without a shared counter, even across a lost row).
pub fn next_number(current: u64, floor: u64) -> u64 {
    current.saturating_add(1).max(floor)
}

/// The CRL that follows `current` once `serials` are revoked at `now`, or `None` when every
/// serial is already listed (puppetserver then leaves the CRL alone). Reason: keyCompromise.
/// Its number is [`next_number`] of `current`'s and `floor`.
pub fn revoke(
    signer: &CaSigner,
    current: &CrlInfo,
    serials: &[Vec<u8>],
    now: OffsetDateTime,
    floor: u64,
) -> Result<Option<Vec<u8>>, CrlError> {
    let mut entries = current.revoked.clone();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    for serial in serials {
        if !entries.iter().any(|e| e.serial == strip_zeros(serial)) {
            entries.push(RevokedEntry {
                serial: strip_zeros(serial),
                revoked_at: now,
                reason: Some(1),
            });
        }
    }
    if entries.len() == current.revoked.len() {
        return Ok(None);
    }
    let this_update = now - time::Duration::seconds(1);
    build(signer, &entries, next_number(current.number, floor), this_update).map(Some)
}

/// The CRL that follows `current` without the entries of `expired` (serials of certificates
/// past their notAfter, which no verifier accepts anyway, RFC 5280 §3.3) and without repeated
/// serials; `None` when nothing would be removed.
pub fn prune(
    signer: &CaSigner,
    current: &CrlInfo,
    expired: &std::collections::HashSet<Vec<u8>>,
    now: OffsetDateTime,
    floor: u64,
) -> Result<Option<Vec<u8>>, CrlError> {
    let mut seen = std::collections::HashSet::new();
    let entries: Vec<RevokedEntry> = current
        .revoked
        .iter()
        .filter(|e| !expired.contains(&e.serial) && seen.insert(e.serial.clone()))
        .cloned()
        .collect();
    if entries.len() == current.revoked.len() {
        return Ok(None);
    }
    let now = now.replace_nanosecond(0).unwrap_or(now);
    build(signer, &entries, next_number(current.number, floor), now - time::Duration::seconds(1))
        .map(Some)
}

fn revoked_params(entry: &RevokedEntry) -> RevokedCertParams {
    RevokedCertParams {
        serial_number: SerialNumber::from_slice(&entry.serial),
        revocation_time: entry.revoked_at,
        reason_code: entry.reason.and_then(reason),
        invalidity_date: None,
    }
}

fn reason(code: u8) -> Option<RevocationReason> {
    use RevocationReason::*;
    Some(match code {
        0 => Unspecified,
        1 => KeyCompromise,
        2 => CaCompromise,
        3 => AffiliationChanged,
        4 => Superseded,
        5 => CessationOfOperation,
        6 => CertificateHold,
        8 => RemoveFromCrl,
        9 => PrivilegeWithdrawn,
        10 => AaCompromise,
        _ => return None,
    })
}

fn strip_zeros(bytes: &[u8]) -> Vec<u8> {
    match bytes.iter().position(|b| *b != 0) {
        Some(i) => bytes[i..].to_vec(),
        None => vec![0],
    }
}
