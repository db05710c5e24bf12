//! The listener: accept, TLS handshake with the current snapshot, then HTTP/1.1 keep-alive
//! connections served by the current proxy. Connections whose client certificate a new CRL
//! revokes are closed; on shutdown the listener stops accepting and drains.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, Semaphore},
};
use tokio_rustls::TlsAcceptor;

use crate::{identity::ClientIdentity, metrics::HandshakeFailure, proxy::ConnInfo, LbState};

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
/// `drain_grace` for open requests to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<LbState>,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
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
        let connection = Connection {
            state: state.clone(),
            http: http.clone(),
            stopped: stopped.clone(),
            peer,
            handshake_timeout: settings.handshake_timeout,
        };
        tokio::spawn(async move {
            connection.run(stream).await;
            drop(slot);
        });
    }
    drop(listener);
    let open = settings.max_connections - slots.available_permits();
    tracing::info!(open, grace = ?settings.drain_grace, "stopped accepting; draining open connections");
    let _ = stop.send(true);
    let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(settings.drain_grace, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("drain grace period over; closing the remaining connections"),
    };
}

/// One client connection.
struct Connection {
    state: Arc<LbState>,
    http: hyper::server::conn::http1::Builder,
    stopped: watch::Receiver<bool>,
    peer: SocketAddr,
    handshake_timeout: Duration,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let acceptor = TlsAcceptor::from(self.state.tls().current().config.clone());
        let tls_stream = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return self
                    .handshake_failed(&e.to_string(), HandshakeFailure::classify(&e.to_string()))
            }
            Err(_) => return self.handshake_failed("timed out", HandshakeFailure::Timeout),
        };
        let metrics = &self.state.metrics;
        metrics.handshakes.fetch_add(1, Ordering::Relaxed);
        metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        let leaf = tls_stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        let info = Arc::new(ConnInfo {
            peer: self.peer,
            identity: ClientIdentity::from_peer(leaf.as_deref()),
        });
        let serial = match &info.identity {
            ClientIdentity::Verified(client) => Some(client.serial.clone()),
            ClientIdentity::Anonymous => None,
        };
        let state = self.state.clone();
        // Boxed: hyper keeps a slot the size of the service's future for the whole life of a
        // connection; a box keeps an idle connection's share to a pointer (the request future
        // is several KiB) and costs one allocation per request.
        let service = service_fn(move |request| {
            let proxy = state.proxy();
            let info = info.clone();
            Box::pin(async move { Ok::<_, Infallible>(proxy.handle(request, &info).await) })
        });
        let connection = self.http.serve_connection(TokioIo::new(tls_stream), service);
        tokio::pin!(connection);
        let mut snapshots = self.state.snapshots();
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(client = %self.peer, error = %e, "client connection ended with an error");
                    }
                    break;
                }
                Ok(()) = self.stopped.changed(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                Ok(()) = snapshots.changed(), if !closing && serial.is_some() => {
                    let crl = snapshots.borrow_and_update().crl.clone();
                    if let (Some(crl), Some(serial)) = (crl, serial.as_deref()) {
                        if crl.is_revoked(serial) {
                            tracing::info!(client = %self.peer, "closing a live connection: its client certificate is now revoked");
                            metrics.connections_closed_revoked.fetch_add(1, Ordering::Relaxed);
                            closing = true;
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
        }
        metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    fn handshake_failed(&self, reason: &str, kind: HandshakeFailure) {
        self.state.metrics.handshake_failed(kind);
        tracing::info!(client = %self.peer, reason, "TLS handshake failed");
    }
}
