//! One client connection's life: the TLS handshake with the current snapshot, then HTTP/1.1
//! keep-alive served by the current proxy. hyper serves a connection while requests are on it;
//! once it has been idle for `idle_park` it is parked without hyper and its buffers until its
//! next request (see [`crate::idle`]). A connection whose client certificate a new CRL revokes
//! is closed, and so is every connection when the listener drains.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use super::{paced::Paced, turns::Turns};
use http::{Request, Response};
use hyper::{body::Incoming, service::Service};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use crate::{
    identity::ClientIdentity,
    idle::{Activity, Tracked, Watched},
    metrics::{HandshakeFailure, Metrics},
    proxy::{ClientBody, ConnInfo},
    state::LbState,
    tls::TlsSnapshot,
};

/// The client stream: TLS over TCP, watched for idleness (see [`crate::idle`]). Boxed: the
/// TLS state is over a kilobyte, and every future that moves the stream would otherwise hold a
/// copy of it for the life of the connection.
type ClientIo = Watched<Box<TlsStream<Paced<TcpStream>>>>;

/// Encrypted bytes kept for a client that is slow to read them (rustls's default is 64 KiB):
/// with the backend's read-ahead this bounds what one slow agent's catalog holds in memory,
/// which after a failover is ten thousand times over. The rest waits in the socket buffers.
const TLS_SEND_BUFFER: usize = 16 * 1024;

/// However busy the LB, a handshake ends within this many `handshake_timeout`s.
const HANDSHAKE_CAP_FACTOR: u32 = 6;

/// One client connection.
pub(super) struct Connection {
    pub(super) state: Arc<LbState>,
    pub(super) http: hyper::server::conn::http1::Builder,
    pub(super) stopped: watch::Receiver<bool>,
    pub(super) peer: SocketAddr,
    pub(super) handshake_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) idle_park: Duration,
    /// This worker's handshake turns (see `turns`).
    pub(super) turns: Arc<Turns>,
}

/// How long a connection accepted just before a shutdown (or a revocation) may take to send
/// its first request: a client that connected is about to send one, and closing under it
/// would fail that request (an agent's run, during a restart).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

/// What a connection does after hyper has stopped serving it.
enum AfterServing {
    /// hyper went idle and was taken off; the stream waits for the next request.
    Park(ClientIo, ClientService),
    /// The connection is done: close the stream (TLS close_notify, then FIN), reading and
    /// dropping what the client still sends for a moment (a body we answered without reading,
    /// say), so that our last answer is not lost to a reset: Apache's lingering close.
    Close(ClientIo),
    /// hyper refused a malformed or oversized head and answered it (400, 431): closed the same
    /// way.
    Linger(ClientIo),
    /// The stream failed; there is nothing left to close cleanly.
    Gone,
}

/// Why a connection is closed before the client ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    Stopping,
    Revoked,
}

/// Why the connection should be closed, if it should: the listener is stopping, or a new CRL
/// revokes the client's certificate.
struct CloseWatch {
    stopped: watch::Receiver<bool>,
    snapshots: watch::Receiver<Arc<TlsSnapshot>>,
    serial: Option<Vec<u8>>,
    closing: bool,
}

impl CloseWatch {
    /// Resolves once the connection must close, with why (and never after that: `closing`
    /// stays set).
    async fn must_close(&mut self, metrics: &Metrics, peer: SocketAddr) -> CloseReason {
        loop {
            tokio::select! {
                Ok(()) = self.stopped.changed(), if !self.closing => {
                    self.closing = true;
                    return CloseReason::Stopping;
                }
                Ok(()) = self.snapshots.changed(), if !self.closing && self.serial.is_some() => {
                    let crl = self.snapshots.borrow_and_update().crl.clone();
                    if let (Some(crl), Some(serial)) = (crl, self.serial.as_deref()) {
                        if crl.is_revoked(serial) {
                            tracing::info!(client = %peer, "closing a live connection: its client certificate is now revoked");
                            metrics.connections_closed_revoked.fetch_add(1, Ordering::Relaxed);
                            self.closing = true;
                            return CloseReason::Revoked;
                        }
                    }
                }
                else => std::future::pending::<()>().await,
            }
        }
    }
}

impl Connection {
    pub(super) async fn run(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let snapshot = self.state.tls().current();
        let acceptor = TlsAcceptor::from(snapshot.config.clone());
        let names = snapshot.names.clone();
        drop(snapshot);
        // Boxed, like `serve` below: a task's future is as large as the largest state it can be
        // in, and a parked connection should not pay for the handshake's or hyper's.
        let (paced, clock) = Paced::new(stream);
        let turns = self.turns.clone();
        let accept =
            Box::pin(async move { turns.take(acceptor.accept(paced)).await.map(Box::new) });
        // `handshake_timeout` is how long the client may keep the LB waiting; the hard cap
        // bounds a handshake that a saturated LB is slow to finish (see `paced`).
        let handshake = async {
            tokio::select! {
                done = accept => Some(done),
                () = clock.stalled(self.handshake_timeout) => None,
            }
        };
        let cap = self.handshake_timeout.saturating_mul(HANDSHAKE_CAP_FACTOR);
        let mut tls_stream = match tokio::time::timeout(cap, handshake).await {
            Ok(Some(Ok(s))) => s,
            Ok(Some(Err(e))) => {
                return self.handshake_failed(&e.to_string(), HandshakeFailure::classify(&e))
            }
            Ok(None) | Err(_) => {
                return self.handshake_failed("timed out", HandshakeFailure::Timeout)
            }
        };
        let (tcp, tls) = tls_stream.get_mut();
        tcp.stop();
        tls.set_buffer_limit(Some(TLS_SEND_BUFFER));
        let metrics = &self.state.metrics;
        metrics.handshakes.fetch_add(1, Ordering::Relaxed);
        metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        let leaf = tls_stream.get_ref().1.peer_certificates().and_then(|c| c.first());
        let info = Arc::new(ConnInfo {
            peer: self.peer,
            identity: ClientIdentity::from_peer(leaf.map(|c| c.as_ref())),
            names,
        });
        let serial = match &info.identity {
            ClientIdentity::Verified(client) => Some(client.serial.clone()),
            ClientIdentity::Anonymous => None,
        };
        let activity = Arc::new(Activity::default());
        let service = ClientService { state: self.state.clone(), info, activity: activity.clone() };
        let mut watch = CloseWatch {
            stopped: self.stopped.clone(),
            snapshots: self.state.snapshots(),
            serial,
            closing: false,
        };
        // The client speaks first: right after the handshake its first request is usually
        // already here, so hyper takes the connection at once.
        let mut next =
            Box::pin(self.serve(Watched::new(tls_stream, activity), service, &mut watch)).await;
        loop {
            next = match next {
                AfterServing::Park(io, service) => match self.park(io, &mut watch).await {
                    Some(io) => Box::pin(self.serve(io, service, &mut watch)).await,
                    None => break,
                },
                AfterServing::Close(io) | AfterServing::Linger(io) => {
                    linger(io).await;
                    break;
                }
                AfterServing::Gone => break,
            };
        }
        metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Serves requests with a new hyper connection until hyper goes idle, the connection ends,
    /// or `watch` says it must close.
    async fn serve(
        &self,
        io: ClientIo,
        service: ClientService,
        watch: &mut CloseWatch,
    ) -> AfterServing {
        let activity = service.activity.clone();
        let mut connection = self.http.serve_connection(TokioIo::new(io), service);
        let mut went_idle = false;
        let mut idle_for = IdleTimer::new(self.idle_park);
        // Set when the connection must close before its first request has started: that
        // request (sent right after the handshake, usually already on its way) is served first.
        let mut first_request_grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let result = loop {
            let closing = watch.closing;
            tokio::select! {
                result = std::future::poll_fn(|cx| loop {
                    let polled = connection.poll_without_shutdown(cx);
                    if polled.is_ready() || went_idle || closing {
                        return polled;
                    }
                    if !activity.is_idle() {
                        idle_for.stop();
                        return polled;
                    }
                    if idle_for.poll_elapsed(cx).is_pending() {
                        return polled;
                    }
                    // hyper is idle and holds no unsent bytes: a graceful shutdown ends it at
                    // once, without writing anything (the next poll returns Ready).
                    went_idle = true;
                    Pin::new(&mut connection).graceful_shutdown();
                }) => break result,
                reason = watch.must_close(&self.state.metrics, self.peer), if !closing => {
                    // A revoked client gets nothing more; a stopping LB serves a fresh
                    // connection's first request.
                    if reason == CloseReason::Revoked || activity.has_started() {
                        Pin::new(&mut connection).graceful_shutdown();
                    } else {
                        first_request_grace = Some(Box::pin(tokio::time::sleep(FIRST_REQUEST_GRACE)));
                    }
                }
                () = async { if let Some(grace) = first_request_grace.as_mut() { grace.await } }, if first_request_grace.is_some() => {
                    first_request_grace = None;
                    Pin::new(&mut connection).graceful_shutdown();
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(client = %self.peer, error = %e, "client connection ended with an error");
            if e.is_parse() {
                return AfterServing::Linger(connection.into_parts().io.into_inner());
            }
            return AfterServing::Gone;
        }
        let parts = connection.into_parts();
        let mut io = parts.io.into_inner();
        io.rewind(&parts.read_buf);
        if went_idle && !watch.closing {
            AfterServing::Park(io, parts.service)
        } else {
            AfterServing::Close(io)
        }
    }

    /// Holds an idle connection, without hyper, until bytes of its next request arrive. `None`
    /// when it has been closed instead: idle for too long, closed by the client, or told to
    /// close by `watch`.
    async fn park(&self, mut io: ClientIo, watch: &mut CloseWatch) -> Option<ClientIo> {
        if io.has_read_ahead() {
            return Some(io);
        }
        let metrics = &self.state.metrics;
        metrics.connections_parked.fetch_add(1, Ordering::Relaxed);
        let woke = tokio::select! {
            filled = tokio::time::timeout(self.idle_timeout, io.get_mut().fill_buf()) => match filled {
                Ok(Ok(bytes)) => !bytes.is_empty(),
                Ok(Err(e)) => {
                    tracing::debug!(client = %self.peer, error = %e, "idle client connection failed");
                    false
                }
                Err(_) => {
                    tracing::debug!(client = %self.peer, "closing a client connection idle for too long");
                    false
                }
            },
            _ = watch.must_close(metrics, self.peer), if !watch.closing => false,
        };
        metrics.connections_parked.fetch_sub(1, Ordering::Relaxed);
        if woke {
            return Some(io);
        }
        let _ = tokio::time::timeout(CLOSE_NOTIFY_TIMEOUT, io.shutdown()).await;
        None
    }

    fn handshake_failed(&self, reason: &str, kind: HandshakeFailure) {
        self.state.metrics.handshake_failed(kind);
        tracing::info!(client = %self.peer, reason, "TLS handshake failed");
    }
}

/// How long closing a connection may wait for the TLS close_notify to be written.
const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long, and how many bytes, a refused client's input is read and dropped before closing.
const LINGER_FOR: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Closes our side, then reads and drops what the client still sends (up to [`LINGER_FOR`] or
/// [`LINGER_BYTES`]): closing with unread bytes makes the kernel send a reset, and a client
/// reading our answer after that reset loses it.
async fn linger(mut io: ClientIo) {
    use tokio::io::AsyncReadExt;
    if tokio::time::timeout(CLOSE_NOTIFY_TIMEOUT, io.shutdown()).await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_FOR, drain).await;
}

/// The hyper service of one client connection: every request goes through the current proxy,
/// and its response body carries the request's [`InFlight`] guard.
#[derive(Clone)]
struct ClientService {
    state: Arc<LbState>,
    info: Arc<ConnInfo>,
    activity: Arc<Activity>,
}

impl Service<Request<Incoming>> for ClientService {
    type Response = Response<Tracked<ClientBody>>;
    type Error = Infallible;
    // Boxed: hyper keeps a slot the size of the service's future for the whole life of a
    // connection; a box keeps an idle connection's share to a pointer (the request future is
    // several KiB) and costs one allocation per request.
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let proxy = self.state.proxy();
        let info = self.info.clone();
        let in_flight = self.activity.start_request();
        Box::pin(async move {
            let response = proxy.handle(request, &info).await;
            Ok(response.map(|body| Tracked::new(body, in_flight)))
        })
    }
}

/// Measures how long hyper has been idle on a connection. Restarting it on every request is
/// cheap: tokio only moves a pending timer's deadline later, without re-registering it.
struct IdleTimer {
    after: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    running: bool,
}

impl IdleTimer {
    fn new(after: Duration) -> Self {
        Self { after, sleep: Box::pin(tokio::time::sleep(after)), running: false }
    }

    /// Starts the clock if it is not running, and says whether `after` has passed since.
    fn poll_elapsed(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.after.is_zero() {
            return std::task::Poll::Ready(());
        }
        if !self.running {
            self.running = true;
            self.sleep.as_mut().reset(tokio::time::Instant::now() + self.after);
        }
        self.sleep.as_mut().poll(cx)
    }

    fn stop(&mut self) {
        self.running = false;
    }
}
