//! crossbar's Puppet-compatible certificate authority.
//!
//! What it does: keeps CA state behind the [`store::CaStore`] contract, either in
//! puppetserver's on-disk layout ([`fs::FsStore`]: one exclusive lock for every write, atomic
//! files, a serial never reused, crash recovery on open) or in PostgreSQL ([`db::PgStore`]:
//! several active nodes, random serials, one CRL writer at a time, moving a CA in and out);
//! runs the CA operations in puppetserver's order ([`service::CaService`]), each recorded in
//! the audit trail ([`audit`]); serves the Puppet CA HTTP API v1 ([`api::router`]); decides
//! autosigning ([`autosign::Autosign`]).
//!
//! What it does not do: TLS (the CA listens on plain HTTP behind the LB, which verifies clients
//! and passes their identity in `X-Client-*` headers), certificate policy decisions (those are
//! in `pki`), or load balancing.

pub mod api;
pub mod audit;
pub mod autosign;
pub mod config;
pub mod db;
pub mod error;
pub mod fs;
pub mod metrics;
pub mod service;
pub mod setup;
pub mod store;

pub use error::CaError;
pub use service::{CaService, CaSettings};
pub use store::CaStore;
