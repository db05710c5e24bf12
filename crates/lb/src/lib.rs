//! crossbar's TLS front and load balancer for Puppet agents.
//!
//! What it does: terminates TLS 1.2/1.3 (rustls, aws-lc-rs) with an optional client
//! certificate verified against the whole Puppet CA bundle and CRL; reloads certificate, bundle
//! and CRL when they change without dropping connections; strips client-sent `X-Client-*`
//! headers and sets them from the TLS session; routes `/puppet-ca/` (and the legacy
//! `/<env>/certificate…` forms) to the CA pool and the rest to the compilers; forwards over
//! kept-alive HTTP/1.1 connections, streaming bodies, trying the next member when one cannot be
//! reached.
//!
//! What it does not do: sign or store certificates (the `ca` crate, reached over HTTP like any
//! backend), or decide CA policy.

pub mod config;
pub mod headers;
pub mod identity;
pub mod pool;
pub mod proxy;
pub mod route;
pub mod server;
pub mod tls;
pub mod upstream;

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;

pub use config::{FileLbConfig, LbConfig};

/// A built load balancer, ready to serve.
pub struct Lb {
    pub tls: Arc<tls::watch::TlsState>,
    pub proxy: Arc<proxy::Proxy>,
    config: LbConfig,
}

impl Lb {
    /// Loads the TLS material and builds the pools; fails on a bad certificate, key or CRL.
    pub fn build(config: LbConfig) -> Result<Self, tls::TlsError> {
        let tls = tls::watch::TlsState::load(config.tls.clone())?;
        let proxy = Arc::new(proxy::Proxy::new(config.routes.clone(), config.build_pools()));
        Ok(Self { tls, proxy, config })
    }

    /// Serves `listener` until `shutdown` resolves, watching the TLS files meanwhile.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let (stop_watch, watch_stopped) = tokio::sync::oneshot::channel::<()>();
        let watcher =
            tokio::spawn(self.tls.clone().watch_files(self.config.tls_reload_interval, async {
                let _ = watch_stopped.await;
            }));
        server::serve(
            listener,
            self.tls.clone(),
            self.proxy.clone(),
            self.config.serve.clone(),
            shutdown,
        )
        .await;
        let _ = stop_watch.send(());
        let _ = watcher.await;
    }
}
