//! The one set of rules a CRL chain must pass before crossbar trusts it, for the TLS front's
//! revocation checks and for CRLs pulled from the CA alike.
//!
//! Every CRL issued by a CA of the bundle must be signed by that CA (whose key usage, if any,
//! allows CRL signing) and cover all of its certificates: partitioned (issuing distribution
//! point) and delta CRLs are refused. The first CRL of the chain, the CA's own, must be issued
//! by a CA of the bundle. CRLs of issuers outside the bundle are left aside: nothing the
//! bundle trusts can be checked against them.

use std::collections::{HashMap, HashSet};

use thiserror::Error;
use time::OffsetDateTime;
use x509_parser::{
    certificate::X509Certificate,
    oid_registry::{OID_X509_EXT_DELTA_CRL_INDICATOR, OID_X509_EXT_ISSUER_DISTRIBUTION_POINT},
    prelude::FromDer,
    revocation_list::CertificateRevocationList,
};

use super::CrlInfo;

/// A CRL chain that passed [`verify_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    /// The first CRL: the CA's own.
    pub first: CrlInfo,
    /// The revoked serials (as DER encodes them, sign byte included) of every verified CRL, by
    /// the raw subject of the CA that issued it.
    pub revoked: HashMap<Vec<u8>, HashSet<Vec<u8>>>,
}

/// Why a CRL chain is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainError {
    #[error("not a CRL: {0}")]
    Unreadable(String),
    #[error("a CA certificate of the bundle is unreadable: {0}")]
    BadBundle(String),
    #[error("no CRL")]
    Empty,
    #[error("the first CRL is not issued by a CA of the bundle")]
    UnknownIssuer,
    #[error("partitioned CRLs (issuing distribution point) are not supported")]
    Partitioned,
    #[error("delta CRLs are not supported")]
    Delta,
    #[error("not signed by the CA it names, {0}")]
    NotSigned(String),
    #[error("{0} may not sign CRLs (key usage)")]
    MayNotSign(String),
}

/// Verifies `crls` (DER, the CA's own first) against the CA certificates of `bundle` (DER).
pub fn verify_chain<C: AsRef<[u8]>, B: AsRef<[u8]>>(
    crls: &[C],
    bundle: &[B],
) -> Result<VerifiedChain, ChainError> {
    let cas: Vec<X509Certificate<'_>> = bundle
        .iter()
        .map(|der| X509Certificate::from_der(der.as_ref()).map(|(_, cert)| cert))
        .collect::<Result<_, _>>()
        .map_err(|e| ChainError::BadBundle(e.to_string()))?;
    let mut first = None;
    let mut revoked: HashMap<Vec<u8>, HashSet<Vec<u8>>> = HashMap::new();
    for (index, der) in crls.iter().enumerate() {
        let der = der.as_ref();
        let (_, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| ChainError::Unreadable(e.to_string()))?;
        let issuer = crl.issuer().as_raw();
        let known = cas.iter().any(|ca| ca.subject().as_raw() == issuer);
        if index == 0 {
            if !known {
                return Err(ChainError::UnknownIssuer);
            }
            first =
                Some(CrlInfo::from_der(der).map_err(|e| ChainError::Unreadable(e.to_string()))?);
        }
        if !known {
            continue;
        }
        check_scope(&crl)?;
        check_signed(&crl, issuer, &cas)?;
        revoked
            .entry(issuer.to_vec())
            .or_default()
            .extend(crl.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()));
    }
    Ok(VerifiedChain { first: first.ok_or(ChainError::Empty)?, revoked })
}

fn check_scope(crl: &CertificateRevocationList<'_>) -> Result<(), ChainError> {
    for extension in crl.extensions() {
        if extension.oid == OID_X509_EXT_ISSUER_DISTRIBUTION_POINT {
            return Err(ChainError::Partitioned);
        }
        if extension.oid == OID_X509_EXT_DELTA_CRL_INDICATOR {
            return Err(ChainError::Delta);
        }
    }
    Ok(())
}

fn check_signed(
    crl: &CertificateRevocationList<'_>,
    issuer: &[u8],
    cas: &[X509Certificate<'_>],
) -> Result<(), ChainError> {
    let signer = cas
        .iter()
        .filter(|ca| ca.subject().as_raw() == issuer)
        .find(|ca| crl.verify_signature(ca.public_key()).is_ok())
        .ok_or_else(|| ChainError::NotSigned(crl.issuer().to_string()))?;
    let may_sign = match signer.key_usage() {
        Ok(None) => true,
        Ok(Some(usage)) => usage.value.crl_sign(),
        Err(_) => false,
    };
    if !may_sign {
        return Err(ChainError::MayNotSign(signer.subject().to_string()));
    }
    Ok(())
}

/// Why a newer CRL may not replace the one in use.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpdateError {
    #[error("expired: nextUpdate {0} is in the past")]
    Expired(String),
    #[error("has no nextUpdate")]
    NoNextUpdate,
    #[error("CRL number goes backwards ({new} after {current})")]
    Backwards { current: u64, new: u64 },
    #[error("same CRL number {0} with different contents")]
    Conflicting(u64),
}

/// Whether the CA's CRL `new` (from `new_pem`) may replace `current` (from `current_pem`) at
/// `now`: current, and numbered higher, or the very same.
pub fn check_update(
    new: &CrlInfo,
    new_pem: &[u8],
    current: Option<(&CrlInfo, &[u8])>,
    now: OffsetDateTime,
) -> Result<(), UpdateError> {
    let next = new.next_update.ok_or(UpdateError::NoNextUpdate)?;
    if next <= now {
        return Err(UpdateError::Expired(crate::timefmt::puppet_date(next)));
    }
    if let Some((current, current_pem)) = current {
        if new.number < current.number {
            return Err(UpdateError::Backwards { current: current.number, new: new.number });
        }
        if new.number == current.number && new_pem != current_pem {
            return Err(UpdateError::Conflicting(new.number));
        }
    }
    Ok(())
}
