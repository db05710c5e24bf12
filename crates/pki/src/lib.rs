//! The pure core of crossbar's Puppet CA.
//!
//! What it does: parses and checks certnames and PKCS#10 requests by puppetserver's rules,
//! issues certificates in puppetserver's profile (validity, extensions, key identifiers),
//! builds CRLs, reads `autosign.conf` globs, `serial` and `inventory.txt` formats, and
//! describes certificates for the CA API.
//!
//! What it does not do: no sockets, no clocks, no async, and no files but one (the proxy
//! secret's, [`secret::read_secret_file`]). Callers pass `now` in and
//! store the bytes that come out; the `ca` crate owns storage and HTTP.

pub mod autosign;
pub mod certname;
pub mod crl;
pub mod csr;
mod der;
pub mod describe;
pub mod inventory;
pub mod issue;
pub mod key;
pub mod oid;
pub mod pemfile;
pub mod policy;
pub mod secret;
pub mod serial;
pub mod timefmt;

pub use certname::{Certname, CertnameError};
pub use csr::{AltName, Csr, CsrError};
pub use issue::{CaSigner, CertRequest, IssuedCert, Validity};
pub use key::KeyAlgorithm;
pub use policy::{CsrPolicy, PolicyViolation};
pub use serial::Serial;

/// Re-exported so callers can hold keys without depending on rcgen directly.
pub use rcgen::KeyPair;
