//! crossbar's TLS front and load balancer for Puppet agents.
//!
//! What it does: terminates TLS 1.2/1.3 (rustls, aws-lc-rs) with an optional client
//! certificate verified against the whole Puppet CA bundle and CRL; keeps that CRL current
//! (a watched file, or pulled from the CA pool) and closes connections it revokes; strips
//! client-sent `X-Client-*` headers and sets them from the TLS session; routes `/puppet-ca/`
//! (and the legacy `/<env>/certificate…` forms) to the CA pool and the rest to the compilers;
//! balances over healthy members (round-robin, least-requests, certname-hash, hot standbys),
//! queues when every member is at `max_in_flight` and sheds with `503 + Retry-After`; forwards
//! over kept-alive HTTP/1.1 connections with streamed bodies and retries what is safe to retry;
//! serves `/healthz`, `/metrics` and `/pools` on an admin listener; reloads its config.
//!
//! What it does not do: sign or store certificates (the `ca` crate, reached over HTTP like any
//! backend), or decide CA policy.

pub mod admin;
pub mod balance;
pub mod config;
pub mod crl;
pub mod headers;
pub mod health;
pub mod identity;
pub mod idle;
pub mod metrics;
pub mod pool;
pub mod probe;
pub mod proxy;
pub mod route;
pub mod server;
pub mod tls;
pub mod upstream;

#[cfg(test)]
mod test_util;

use std::{future::Future, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::{net::TcpListener, sync::watch};

pub use config::{FileLbConfig, LbConfig};
use pool::Pool;
use proxy::Proxy;
use tls::{watch::TlsState, TlsSnapshot};

/// How long startup waits for a first CRL from the CA pool when no cached one exists.
const FIRST_PULL_WAIT: Duration = Duration::from_secs(10);

/// What the LB serves with now: one configuration's proxy and TLS state, and the background
/// tasks (health checks, file watching, CRL pulls) that keep them current.
pub struct Generation {
    pub config: LbConfig,
    pub proxy: Arc<Proxy>,
    pub tls: Arc<TlsState>,
    stop: watch::Sender<bool>,
}

/// The LB's shared state: the current generation, swapped atomically on reload (requests in
/// flight keep the one they started with).
pub struct LbState {
    generation: ArcSwap<Generation>,
    /// Every TLS snapshot, whatever generation made it; connections watch it for revocations.
    snapshots: watch::Sender<Arc<TlsSnapshot>>,
    pub metrics: metrics::Metrics,
}

/// Why the LB cannot start or reload.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

impl LbState {
    /// Loads the TLS material (with the cached CRL when pulling) and builds the pools. Nothing
    /// runs until [`Lb::run`].
    pub fn new(config: LbConfig) -> Result<Arc<Self>, LbError> {
        let initial_crl = config.crl_pull.as_ref().and_then(crl::read_cache);
        let tls = TlsState::load(config.tls.clone(), initial_crl, None)?;
        let snapshots = tls.snapshots();
        let proxy = Arc::new(Proxy::new(
            config.routes.clone(),
            config.build_pools().into_iter().map(Arc::new).collect(),
        ));
        let generation = Generation { config, proxy, tls, stop: watch::channel(false).0 };
        Ok(Arc::new(Self {
            generation: ArcSwap::from_pointee(generation),
            snapshots,
            metrics: metrics::Metrics::default(),
        }))
    }

    /// The proxy new requests use.
    pub fn proxy(&self) -> Arc<Proxy> {
        self.generation.load().proxy.clone()
    }

    /// The TLS state new connections use.
    pub fn tls(&self) -> Arc<TlsState> {
        self.generation.load().tls.clone()
    }

    pub fn generation(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// Notified with every new TLS snapshot (new CRLs above all).
    pub fn snapshots(&self) -> watch::Receiver<Arc<TlsSnapshot>> {
        self.snapshots.subscribe()
    }

    /// Applies a new configuration: builds it whole, keeps pools whose configuration did not
    /// change (with their health and connections), swaps it in, then stops the previous
    /// generation's tasks. On error the running configuration stays.
    pub fn reload(self: &Arc<Self>, config: LbConfig) -> Result<(), LbError> {
        let old = self.generation.load_full();
        if config.listen != old.config.listen || config.admin_listen != old.config.admin_listen {
            tracing::warn!("listen and admin_listen changes take effect on restart");
        }
        let same_tls = config.tls == old.config.tls
            && config.crl_pull.as_ref().map(|p| &p.cache)
                == old.config.crl_pull.as_ref().map(|p| &p.cache);
        let tls = if same_tls {
            old.tls.clone()
        } else {
            TlsState::load(
                config.tls.clone(),
                config.crl_pull.as_ref().and_then(crl::read_cache),
                Some(self.snapshots.clone()),
            )?
        };
        let pools = reuse_pools(&old, &config);
        let proxy = Arc::new(Proxy::new(config.routes.clone(), pools));
        let generation = Arc::new(Generation { config, proxy, tls, stop: watch::channel(false).0 });
        self.generation.store(generation.clone());
        let _ = old.stop.send(true);
        self.start_tasks(&generation);
        tracing::info!("configuration reloaded");
        Ok(())
    }

    fn start_tasks(self: &Arc<Self>, generation: &Generation) {
        let stop = generation.stop.subscribe();
        for pool in generation.proxy.pools() {
            probe::spawn_checks(pool, &stop);
        }
        let files = generation.tls.clone();
        let interval = generation.config.tls_reload_interval;
        let mut watch_stop = stop.clone();
        tokio::spawn(files.watch_files(interval, async move {
            let _ = watch_stop.wait_for(|stopped| *stopped).await;
        }));
        if let Some(pull) = generation.config.crl_pull.clone() {
            tokio::spawn(crl::pull_loop(self.clone(), pull, stop));
        }
    }
}

/// The new configuration's pools, reusing the running pool object wherever a pool's
/// configuration is unchanged (so members keep their health, counters and connections).
fn reuse_pools(old: &Generation, config: &LbConfig) -> Vec<Arc<Pool>> {
    let fresh = config.build_pools();
    fresh
        .into_iter()
        .map(|pool| {
            let unchanged = config.upstream == old.config.upstream
                && config.pools.iter().find(|p| p.name == pool.name)
                    == old.config.pools.iter().find(|p| p.name == pool.name);
            match old.proxy.pool(&pool.name) {
                Some(existing) if unchanged => existing.clone(),
                _ => Arc::new(pool),
            }
        })
        .collect()
}

/// A built load balancer, ready to serve.
pub struct Lb {
    state: Arc<LbState>,
}

impl Lb {
    /// Loads the TLS material and builds the pools; fails on a bad certificate, key or CRL.
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
        let _ = state.generation().stop.send(true);
    }
}

async fn wait_for_first_crl(state: &LbState) {
    let mut snapshots = state.snapshots();
    let wait = snapshots.wait_for(|s| s.crl.is_some());
    if tokio::time::timeout(FIRST_PULL_WAIT, wait).await.is_err() {
        tracing::error!("no CRL could be pulled from the CA pool yet: client certificates are checked without one until it arrives, and /healthz answers 503");
    }
}
