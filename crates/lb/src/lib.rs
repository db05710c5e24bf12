//! crossbar's TLS front and load balancer for Puppet agents.
//!
//! What it does: terminates TLS 1.2/1.3 (rustls, aws-lc-rs) with an optional client
//! certificate verified against the whole Puppet CA bundle and CRL; keeps that CRL current
//! (a watched file, or pulled from the CA pool) and closes connections it revokes; enforces
//! strict HTTP/1.1 at the edge and bounds every phase of a request (head size and count, body
//! stalls and rate, body size); strips client-sent `X-Client-*` headers and sets them from the
//! TLS session; routes `/puppet-ca/` (and the legacy `/<env>/certificate…` forms) to the CA
//! pool and the rest to the compilers; balances over healthy members (round-robin,
//! least-requests, least-latency, certname-hash, hot standbys), queues when every member is at
//! `max_in_flight` and sheds with `503 + Retry-After`; forwards over kept-alive HTTP/1.1
//! connections with streamed bodies, retries what is safe to retry, and blames a backend only
//! for its own failures; serves `/healthz`, `/readyz`, `/metrics` and `/pools` on an admin listener;
//! reloads its config.
//!
//! What it does not do: sign or store certificates (the `ca` crate, reached over HTTP like any
//! backend), or decide CA policy.
//!
//! The public surface is what the binary uses: [`FileLbConfig`] and [`LbConfig`] (the `[lb]`
//! section, checked), [`Lb`] (build, then run) and [`LbState`] (reload).

mod admin;
mod balance;
mod blame;
mod body;
mod config;
mod crl;
mod describe;
mod edge;
mod fetch;
mod headers;
mod health;
mod histogram;
mod identity;
mod idle;
mod liveness;
mod metrics;
mod pool;
mod probe;
mod proxy;
mod route;
mod server;
mod state;
mod tls;
mod upstream;

#[cfg(test)]
mod test_util;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};

pub use config::{read_secret, FileLbConfig, LbConfig, LbConfigError, Secret};
pub use state::{LbError, LbState};

/// The name of the pool CA traffic goes to.
pub const CA_POOL: &str = route::CA_POOL;

/// How long startup waits for a first CRL from the CA pool when no cached one exists.
const FIRST_PULL_WAIT: Duration = Duration::from_secs(10);

/// A built load balancer, ready to serve.
pub struct Lb {
    state: Arc<LbState>,
}

impl Lb {
    /// Reads the TLS material (certificate, key, CA bundle, CRL or its cache) and builds the
    /// pools, exactly as serving will; fails on a bad certificate, key or CRL. Starts nothing.
    pub fn build(config: LbConfig) -> Result<Self, LbError> {
        Ok(Self { state: LbState::new(config)? })
    }

    /// The shared state, e.g. to reload it on SIGHUP.
    pub fn state(&self) -> Arc<LbState> {
        self.state.clone()
    }

    /// Starts the background tasks, waits (briefly) for a first CRL when one must be pulled,
    /// serves the admin listener, and serves `listener` until `shutdown` resolves.
    pub async fn run(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) {
        let state = self.state;
        let generation = state.generation();
        state.start_tasks(&generation);
        if generation.config.crl_pull.is_some() && generation.tls.current().crl.is_none() {
            wait_for_first_crl(&state).await;
        }
        let (admin_stop, admin_stopped) = watch::channel(false);
        if let Some(admin) = admin {
            tokio::spawn(admin::serve(admin, state.clone(), admin_stopped));
        }
        let serve = generation.config.serve.clone();
        drop(generation);
        server::serve(listener, state.clone(), serve, shutdown).await;
        let _ = admin_stop.send(true);
        state.generation().stop();
    }
}

async fn wait_for_first_crl(state: &LbState) {
    let mut snapshots = state.snapshots();
    let wait = snapshots.wait_for(|s| s.crl.is_some());
    if tokio::time::timeout(FIRST_PULL_WAIT, wait).await.is_err() {
        tracing::error!("no CRL could be pulled from the CA pool yet: client certificates are checked without one until it arrives, and /healthz answers 503");
    }
}
