//! crossbar's agent-fleet simulator, for load generation and benchmarks.
//!
//! What it does: models what a Puppet 7 agent run sends ([`agent`]); issues agent identities in
//! bulk from a CA directory and makes CSRs for bootstrap storms beforehand ([`identity`]); runs
//! simulated agents against an LB or a backend over real TLS with client certificates
//! ([`client`], [`scenario`]): Puppet runs on an interval with splay or back to back,
//! fixed-request throughput, full handshakes, idle connections held, bootstrap storms;
//! measures latency per request kind, errors and handshakes ([`stats`]); serves a stub compiler
//! for benchmarks of the LB itself ([`stub`], a test double); and measures this machine's
//! crypto ceilings ([`ceiling`]).
//!
//! What it does not do: compile catalogs (the stub answers canned bodies; benchmarks about
//! Puppet use real puppetserver compilers), or judge results (the `bench/` scripts compare).

pub mod agent;
pub mod ceiling;
pub mod client;
pub mod identity;
pub mod scenario;
pub mod stats;
pub mod stub;

/// A hash of `value` that is the same in every process of this build (SipHash with fixed
/// keys): what the simulator and the stub derive per-node and per-run draws from, so that every
/// LB measured is given the same ones.
pub(crate) fn stable_hash(value: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}
