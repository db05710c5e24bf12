//! What can go wrong in a CA operation. The HTTP status for each lives in `api::error`, the one
//! place where statuses are chosen.

use pki::{Certname, CertnameError, CsrError, PolicyViolation};
use thiserror::Error;

use crate::store::{CrlUpdateFailure, StoreError};

#[derive(Debug, Error)]
pub enum CaError {
    #[error("{0}")]
    BadName(#[from] CertnameError),
    #[error("{0}")]
    BadRequest(#[from] CsrError),
    #[error("{name} already has a {state} certificate; ignoring certificate request")]
    Duplicate { name: Certname, state: &'static str },
    /// A submitted CSR that policy refuses (puppetserver answers 400).
    #[error("{0}")]
    Rejected(PolicyViolation),
    /// A pending CSR an operator asked to sign that policy refuses (puppetserver answers 409).
    #[error("{0}")]
    SignRefused(PolicyViolation),
    #[error("Cannot sign certificate for host {0} without a certificate request")]
    NoRequest(Certname),
    #[error("Cannot revoke certificate for host {0} without a signed certificate")]
    NoCertificate(Certname),
    #[error("{0}")]
    NotFound(String),
    #[error(
        "too many pending certificate requests ({0}); sign or clean some before submitting more"
    )]
    TooManyPending(usize),
    #[error("CA storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Issue(#[from] pki::issue::IssueError),
    #[error("{0}")]
    Crl(#[from] pki::crl::CrlError),
    #[error("the CA's own files are unusable: {0}")]
    Setup(String),
    /// Renewal is off (`allow_auto_renewal = false`): puppetserver's 404.
    #[error("Not Found")]
    RenewalDisabled,
    /// The presented certificate is not this CA's.
    #[error("Certificate present, but does not match signature")]
    RenewalForeign,
    /// No usable certificate (none, unreadable, or revoked).
    #[error("No valid certificate found in renewal request")]
    RenewalInvalid,
}

impl From<CrlUpdateFailure> for CaError {
    fn from(e: CrlUpdateFailure) -> Self {
        match e {
            CrlUpdateFailure::Store(s) => Self::Store(s),
            CrlUpdateFailure::Crl(c) => Self::Crl(c),
        }
    }
}
