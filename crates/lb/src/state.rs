//! The LB's shared state, in one place: the current generation (configuration, proxy, TLS
//! state, background tasks), swapped atomically on reload, and the listener-wide metrics.
//! Requests in flight keep the generation they started with.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::{
    config::LbConfig,
    crl, metrics,
    pool::Pool,
    probe,
    proxy::Proxy,
    tls::{watch::TlsState, TlsError, TlsSnapshot},
};

/// One configuration's proxy and TLS state, and the stop switch of its background tasks.
pub(crate) struct Generation {
    pub(crate) config: LbConfig,
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) tls: Arc<TlsState>,
    stop: watch::Sender<bool>,
}

/// What every part of the LB shares.
pub struct LbState {
    generation: ArcSwap<Generation>,
    /// Every TLS snapshot, whatever generation made it; connections watch it for revocations.
    snapshots: watch::Sender<Arc<TlsSnapshot>>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// Whether the listener and the workers are alive (`/healthz`).
    pub(crate) liveness: crate::liveness::Liveness,
}

/// Why the LB cannot start or reload: its TLS material (certificate, key, CA bundle, CRL).
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct LbError(#[from] TlsError);

impl LbState {
    /// Loads the TLS material (with the cached CRL when pulling) and builds the pools. Nothing
    /// runs until the tasks are started.
    pub(crate) fn new(config: LbConfig) -> Result<Arc<Self>, LbError> {
        let initial_crl = config.crl_pull.as_ref().and_then(crl::read_cache);
        let tls = TlsState::load(config.tls.clone(), initial_crl, None)?;
        let snapshots = tls.snapshots();
        let metrics = Arc::new(metrics::Metrics::default());
        let pools = config.pools.iter().map(|p| Arc::new(Pool::new(p, &config.upstream))).collect();
        let proxy =
            Arc::new(Proxy::new(config.routes.clone(), pools, config.requests, metrics.clone()));
        let generation = Generation { config, proxy, tls, stop: watch::channel(false).0 };
        Ok(Arc::new(Self {
            generation: ArcSwap::from_pointee(generation),
            snapshots,
            metrics,
            liveness: crate::liveness::Liveness::default(),
        }))
    }

    /// The proxy new requests use.
    pub(crate) fn proxy(&self) -> Arc<Proxy> {
        self.generation.load().proxy.clone()
    }

    /// The TLS state new connections use.
    pub(crate) fn tls(&self) -> Arc<TlsState> {
        self.generation.load().tls.clone()
    }

    pub(crate) fn generation(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// What keeps this LB itself from serving now (`/healthz`, and what feeds systemd's
    /// watchdog): the listener, the workers, the certificate, the CRL. Empty when it can.
    pub fn problems(&self) -> Vec<String> {
        let generation = self.generation();
        let expects_crl =
            generation.config.crl_pull.is_some() || generation.config.tls.crl.is_some();
        let mut problems = self.liveness.problems(std::time::Instant::now());
        let now = time::OffsetDateTime::now_utc();
        problems.extend(crate::liveness::tls_problems(&generation.tls.current(), expects_crl, now));
        problems
    }

    /// Whether the listener is accepting connections (serving has begun).
    pub fn is_accepting(&self) -> bool {
        self.liveness.is_accepting()
    }

    /// One line for an operator (`systemctl status`): connections, pools, the CRL.
    pub fn status_line(&self) -> String {
        let generation = self.generation();
        let open = self.metrics.connections_open.load(std::sync::atomic::Ordering::Relaxed);
        let pools: Vec<String> = generation
            .proxy
            .pools()
            .map(|pool| {
                let healthy =
                    pool.members().iter().filter(|m| m.is_healthy() && !m.is_drained()).count();
                format!("{} {healthy}/{} up", pool.name, pool.members().len())
            })
            .collect();
        let crl = match &generation.tls.current().crl {
            Some(crl) => {
                let age = (time::OffsetDateTime::now_utc() - crl.this_update).whole_seconds();
                format!("CRL #{} ({age} s old)", crl.number)
            }
            None => "no CRL".to_owned(),
        };
        format!("lb: {open} connections; {}; {crl}", pools.join(", "))
    }

    /// Notified with every new TLS snapshot (new CRLs above all).
    pub(crate) fn snapshots(&self) -> watch::Receiver<Arc<TlsSnapshot>> {
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
        let proxy = Arc::new(Proxy::new(
            config.routes.clone(),
            pools,
            config.requests,
            self.metrics.clone(),
        ));
        let generation = Arc::new(Generation { config, proxy, tls, stop: watch::channel(false).0 });
        self.generation.store(generation.clone());
        old.stop();
        self.start_tasks(&generation);
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Starts a generation's background tasks: health checks, TLS file watching, CRL pulls.
    pub(crate) fn start_tasks(self: &Arc<Self>, generation: &Generation) {
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

impl Generation {
    /// Stops this generation's background tasks.
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// The new configuration's pools, reusing the running pool object wherever a pool's
/// configuration is unchanged (so members keep their health, counters and connections).
fn reuse_pools(old: &Generation, config: &LbConfig) -> Vec<Arc<Pool>> {
    config
        .pools
        .iter()
        .map(|pool| {
            let unchanged = config.upstream == old.config.upstream
                && old.config.pools.iter().any(|p| p == pool);
            match old.proxy.pool(&pool.name) {
                Some(existing) if unchanged => existing.clone(),
                _ => Arc::new(Pool::new(pool, &config.upstream)),
            }
        })
        .collect()
}
