//! The storage contract of the CA: what must be kept, and which writes are atomic together.
//!
//! A store owns the CA's files or rows. Every write that must not interleave with another CA
//! process (saving a CSR after the duplicate check, allocating a serial and storing the cert,
//! rewriting the CRL) is one method here, done under the store's exclusive lock.

use std::{collections::HashSet, path::PathBuf, time::SystemTime};

use pki::{Certname, IssuedCert, Serial};
use thiserror::Error;

/// Bytes as stored, when they last changed (`Last-Modified`, what `If-Modified-Since` compares
/// with) and a tag that changes whenever they do (`ETag`, what `If-None-Match` compares with:
/// exact where a date has only whole seconds).
#[derive(Debug, Clone)]
pub struct Stamped {
    pub bytes: Vec<u8>,
    pub modified: SystemTime,
    pub etag: String,
}

impl Stamped {
    /// Tagged by the change time (to the nanosecond) and the length, as web servers tag files.
    pub fn new(bytes: Vec<u8>, modified: SystemTime) -> Self {
        let nanos = modified.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let etag = format!("{nanos:x}-{:x}", bytes.len());
        Self { bytes, modified, etag }
    }
}

/// What a name already holds, for puppetserver's duplicate check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Request,
    Certificate,
}

/// What a name holds when a CSR for it arrives, and the pending requests (counted up to a
/// limit).
#[derive(Debug, Clone)]
pub struct Admission {
    pub existing: Option<Existing>,
    /// The pending request, when `existing` is a request.
    pub request: Option<Vec<u8>>,
    pub pending: usize,
}

/// How a certificate came to be issued.
#[derive(Debug, Clone, Copy)]
pub enum IssueFrom<'a> {
    /// From the pending request with exactly these bytes (an operator's signing); the request is
    /// removed once the certificate is stored.
    Request(&'a [u8]),
    /// From a request that was autosigned on submission and never stored, or without any
    /// request (`crossbar ca generate`): the name must have neither a request nor a certificate.
    Fresh,
    /// A renewal (Puppet 8's `certificate_renewal`): replaces the name's certificate, leaves
    /// any request alone. The old certificate stays valid.
    Renewal,
}

/// A storage failure. These are server faults (HTTP 500), never a client's.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("the CA directory {dir} is incomplete: {missing} missing (all of ca_crt.pem, ca_key.pem, ca_crl.pem, serial and inventory.txt must exist)")]
    Incomplete { dir: PathBuf, missing: String },
    #[error("the CA directory {0} already holds a CA; refusing to overwrite it")]
    AlreadyExists(PathBuf),
    #[error("{name} already has a {existing:?}")]
    Conflict { name: Certname, existing: Existing },
    #[error("the request for {0} changed or vanished before it was signed")]
    RequestChanged(Certname),
    /// The store cannot be reached now (the database is down or failing over); the request
    /// may succeed later (HTTP 503 with `Retry-After`).
    #[error("the CA database is unavailable: {0}")]
    Unavailable(String),
    /// The serial was used already (a random serial collided); sign again with another.
    #[error("serial {0} is taken")]
    SerialTaken(Serial),
    #[error("the CA database refused the operation: {0}")]
    Database(String),
}

impl StoreError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}

/// The CA's persistent state. Methods block; async callers run them on a blocking thread.
pub trait CaStore: Send + Sync + 'static {
    /// `ca_crt.pem`, byte for byte (agents hash the body for `ca_fingerprint`).
    fn ca_bundle(&self) -> Result<Stamped, StoreError>;
    /// `ca_crl.pem`: the CA's CRL first, then any parent CRLs.
    fn crl_chain(&self) -> Result<Stamped, StoreError>;
    /// The CA's private key, PEM.
    fn ca_key_pem(&self) -> Result<String, StoreError>;

    fn certificate(&self, name: &Certname) -> Result<Option<Stamped>, StoreError>;
    fn request(&self, name: &Certname) -> Result<Option<Vec<u8>>, StoreError>;
    fn existing(&self, name: &Certname) -> Result<Option<Existing>, StoreError>;
    fn certificates(&self) -> Result<Vec<(Certname, Vec<u8>)>, StoreError>;
    fn requests(&self) -> Result<Vec<(Certname, Vec<u8>)>, StoreError>;
    fn pending_count(&self) -> Result<usize, StoreError>;

    /// What a CSR submission checks, in one go: what the name holds (with its pending request)
    /// and how many requests are pending, counted up to `limit`.
    fn admission(&self, name: &Certname, limit: usize) -> Result<Admission, StoreError> {
        let existing = self.existing(name)?;
        let request = match existing {
            Some(Existing::Request) => self.request(name)?,
            _ => None,
        };
        Ok(Admission { existing, request, pending: self.pending_count()?.min(limit) })
    }

    /// Saves a request. Unless `overwrite`, fails with `Conflict` when the name has a request
    /// or a certificate — checked under the lock, so two CA processes cannot both save.
    fn save_request(&self, name: &Certname, pem: &[u8], overwrite: bool) -> Result<(), StoreError>;
    /// Removes a pending request; whether there was one.
    fn delete_request(&self, name: &Certname) -> Result<bool, StoreError>;
    /// Removes an issued certificate file (the inventory keeps its line); whether there was one.
    fn delete_certificate(&self, name: &Certname) -> Result<bool, StoreError>;

    /// A serial no certificate has had. Serials are reserved from the `serial` file in blocks,
    /// under the lock, and the file is durably advanced before any serial of a block is handed
    /// out: a crash can leave a gap, never a reuse.
    fn reserve_serial(&self) -> Result<Serial, StoreError>;

    /// Stores a signed certificate: checks under the lock that the name is still free (unless
    /// `overwrite`) and, for `IssueFrom::Request`, that the request is unchanged; then installs
    /// the certificate, appends its inventory line and removes the request. `audit` describes
    /// the signing: a store with an audit trail keeps it in the same write.
    fn store_issued(
        &self,
        name: &Certname,
        issued: &IssuedCert,
        from: IssueFrom<'_>,
        overwrite: bool,
        audit: &crate::audit::AuditEvent,
    ) -> Result<(), StoreError>;

    /// Under the lock: reads the CRL chain and, when `update` returns a new CA CRL (DER),
    /// writes it in place of the first CRL of the chain. Returns whether it changed.
    fn update_crl(&self, update: &mut CrlUpdateFn<'_>) -> Result<bool, CrlUpdateFailure>;

    /// The lowest number the next CRL may have (besides following the current one): 0 for a
    /// directory, milliseconds since the epoch for a database shared by several nodes, so
    /// that numbers keep increasing even if a row was lost in a failover.
    fn crl_number_floor(&self, now: time::OffsetDateTime) -> u64 {
        let _ = now;
        0
    }

    /// The serials (big-endian, no leading zeros) of the certificates this store knows that
    /// expired before `now`: what a CRL pruning may drop.
    fn expired_serials(&self, now: time::OffsetDateTime) -> Result<HashSet<Vec<u8>>, StoreError>;

    /// Records one CA write in the audit trail (the database's `ca_audit` table; a directory
    /// keeps none besides the log).
    fn record(&self, event: &crate::audit::AuditEvent) -> Result<(), StoreError> {
        let _ = event;
        Ok(())
    }

    /// The newest `limit` events of the audit trail, newest first; `None` when the store keeps
    /// no trail (a directory: the log is the trail).
    fn recent_audit(
        &self,
        limit: usize,
    ) -> Result<Option<Vec<crate::audit::AuditRecord>>, StoreError> {
        let _ = limit;
        Ok(None)
    }
}

/// Turns the current CA CRL (DER) into the next one, or `None` to leave it.
pub type CrlUpdateFn<'a> = dyn FnMut(&[u8]) -> Result<Option<Vec<u8>>, pki::crl::CrlError> + 'a;

/// Why `update_crl` failed: the store, or building the CRL.
#[derive(Debug, Error)]
pub enum CrlUpdateFailure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("CRL update failed: {0}")]
    Crl(#[from] pki::crl::CrlError),
}
