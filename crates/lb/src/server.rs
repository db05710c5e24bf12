//! The listener: accept, TLS handshake with the current snapshot, then HTTP/1.1 keep-alive
//! connections served by the proxy, drained gracefully on shutdown.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::{
    identity::ClientIdentity,
    proxy::{ConnInfo, Proxy},
    tls::watch::TlsState,
};

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub drain_grace: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(60),
            max_connections: 50_000,
            drain_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and waits up to
/// `drain_grace` for open requests.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<TlsState>,
    proxy: Arc<Proxy>,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.current().config.clone());
        let proxy = proxy.clone();
        let http = http.clone();
        let watcher = graceful.watcher();
        let timeout = settings.handshake_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let tls_stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return handshake_failed(peer, &e.to_string()),
                Err(_) => return handshake_failed(peer, "timed out"),
            };
            let leaf = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec());
            let info =
                Arc::new(ConnInfo { peer, identity: ClientIdentity::from_peer(leaf.as_deref()) });
            let service = service_fn(move |request| {
                let proxy = proxy.clone();
                let info = info.clone();
                async move { Ok::<_, Infallible>(proxy.handle(request, &info).await) }
            });
            let connection = http.serve_connection(TokioIo::new(tls_stream), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(grace = ?settings.drain_grace, "stopped accepting; draining open connections");
    if tokio::time::timeout(settings.drain_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain grace period over; closing the remaining connections");
    }
}

fn handshake_failed(peer: SocketAddr, reason: &str) {
    tracing::info!(client = %peer, reason, "TLS handshake failed");
}
