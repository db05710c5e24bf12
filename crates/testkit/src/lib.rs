//! Test-only helpers for crossbar's end-to-end tests.
//!
//! What it does: runs child processes that are killed when the test ends ([`process`]), waits
//! for conditions with deadlines instead of sleeping ([`wait`]), makes throwaway CA
//! directories and certificates ([`fixture`]), drives the real Debian Puppet agent with private
//! state ([`puppet`]), drives headless Chromium through chromedriver ([`browser`]), runs PostgreSQL clusters and replicas of its own ([`postgres`]), and speaks raw HTTP/1.1 over TLS with or without a client certificate
//! ([`tls`]).
//!
//! What it does not do: run in production code; nothing here is a test double for a Puppet
//! component.

// Test helpers may panic with a clear message: a panic is a failed test.
#![allow(clippy::unwrap_used)]

pub mod activation;
pub mod browser;
pub mod compiler;
pub mod failover;
pub mod fixture;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod puppet;
pub mod site;
pub mod stub;
pub mod tls;
pub mod wait;
