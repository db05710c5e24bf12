//! The listener: accept, hand the connection to one of the per-core worker threads, TLS
//! handshake with the current snapshot, then HTTP/1.1 keep-alive connections served by the
//! current proxy. hyper serves a connection while requests are on it; once it has been idle for
//! `idle_park` it is parked without hyper and its buffers until its next request (see
//! [`crate::idle`]). Connections whose client certificate a new CRL revokes are closed; on
//! shutdown the listener stops accepting and drains.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use http::{Request, Response};
use hyper::{body::Incoming, service::Service};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use crate::{
    identity::ClientIdentity,
    idle::{Activity, Tracked, Watched},
    metrics::{HandshakeFailure, Metrics},
    proxy::{ClientBody, ConnInfo},
    tls::TlsSnapshot,
    LbState,
};

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// How long a client connection stays idle in hyper before it is parked without hyper's
    /// buffers (see [`crate::idle`]); zero parks it as soon as it is idle. Parking and waking
    /// cost about as much as a small request, so busy connections are left alone.
    pub idle_park: Duration,
    pub max_connections: usize,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub drain_grace: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(60),
            idle_park: Duration::from_secs(1),
            max_connections: 50_000,
            drain_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and waits up to
/// `drain_grace` for open requests to finish.
///
/// Client connections are served by one thread per core, each with its own single-threaded
/// tokio runtime (see [`worker_count`]): a connection, its requests and the backend connections
/// it uses stay on one thread, as in HAProxy, so no request waits for another thread to be
/// woken. This task accepts and hands each connection to the worker holding the fewest
/// (kept-alive connections are long-lived, so balancing them at accept time matters).
/// Background work (health checks, CRL pulls, reloads, the admin listener) stays on the
/// caller's runtime.
pub async fn serve(
    listener: TcpListener,
    state: Arc<LbState>,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let (finish, finished) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let (workers, threads) = start_workers(&state, &settings, &stopped, &finished);
    tokio::pin!(shutdown);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted.and_then(|(stream, peer)| Ok((stream.into_std()?, peer))) {
            Ok((stream, peer)) => hand_off(&workers, Accepted { stream, peer, slot }),
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
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
    let _ = finish.send(true);
    drop(workers);
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
}

/// Starts [`worker_count`] worker threads; returns how to reach them and their threads.
fn start_workers(
    state: &Arc<LbState>,
    settings: &ServeSettings,
    stopped: &watch::Receiver<bool>,
    finished: &watch::Receiver<bool>,
) -> (Vec<WorkerHandle>, Vec<std::thread::JoinHandle<()>>) {
    let (mut workers, mut threads) = (Vec::new(), Vec::new());
    for index in 0..worker_count() {
        let (handoff, incoming) = mpsc::unbounded_channel();
        let load = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            incoming,
            load: load.clone(),
            state: state.clone(),
            settings: settings.clone(),
            stopped: stopped.clone(),
            finished: finished.clone(),
        };
        match std::thread::Builder::new().name(format!("lb-worker-{index}")).spawn(|| worker.run())
        {
            Ok(thread) => {
                threads.push(thread);
                workers.push(WorkerHandle { handoff, load });
            }
            Err(e) => tracing::error!(error = %e, "cannot start an LB worker thread"),
        }
    }
    (workers, threads)
}

/// How many worker threads serve clients: one per core the process may use.
fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// A connection accepted by the listener, on its way to a worker. The slot is given back when
/// the connection ends.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
}

/// The listener's side of a worker: where to send connections, and how many it holds.
struct WorkerHandle {
    handoff: mpsc::UnboundedSender<Accepted>,
    load: Arc<AtomicUsize>,
}

/// Gives `accepted` to the worker holding the fewest connections.
fn hand_off(workers: &[WorkerHandle], accepted: Accepted) {
    let Some(worker) = workers.iter().min_by_key(|w| w.load.load(Ordering::Relaxed)) else {
        return tracing::error!("no LB worker is running; dropping a client connection");
    };
    worker.load.fetch_add(1, Ordering::Relaxed);
    if worker.handoff.send(accepted).is_err() {
        worker.load.fetch_sub(1, Ordering::Relaxed);
        tracing::error!("an LB worker has stopped; dropping a client connection");
    }
}

/// One worker thread: serves the connections the listener hands it.
struct Worker {
    incoming: mpsc::UnboundedReceiver<Accepted>,
    load: Arc<AtomicUsize>,
    state: Arc<LbState>,
    settings: ServeSettings,
    stopped: watch::Receiver<bool>,
    finished: watch::Receiver<bool>,
}

impl Worker {
    fn run(mut self) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => return tracing::error!(error = %e, "cannot start an LB worker's runtime"),
        };
        runtime.block_on(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(self.settings.header_read_timeout)
                .keep_alive(true);
            let mut finished = self.finished.clone();
            loop {
                let accepted = tokio::select! {
                    accepted = self.incoming.recv() => accepted,
                    // Keep serving the connections this worker holds until the drain is over.
                    _ = finished.wait_for(|done| *done) => None,
                };
                let Some(Accepted { stream, peer, slot }) = accepted else { break };
                let stream = match TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(e) => {
                        self.load.fetch_sub(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "an LB worker cannot take a connection");
                        continue;
                    }
                };
                let connection = Connection {
                    state: self.state.clone(),
                    http: http.clone(),
                    stopped: self.stopped.clone(),
                    peer,
                    handshake_timeout: self.settings.handshake_timeout,
                    idle_timeout: self.settings.header_read_timeout,
                    idle_park: self.settings.idle_park,
                };
                let load = self.load.clone();
                tokio::spawn(async move {
                    connection.run(stream).await;
                    load.fetch_sub(1, Ordering::Relaxed);
                    drop(slot);
                });
            }
            let _ = finished.wait_for(|done| *done).await;
        });
    }
}

/// The client stream: TLS over TCP, watched for idleness (see [`crate::idle`]). Boxed: the
/// TLS state is over a kilobyte, and every future that moves the stream would otherwise hold a
/// copy of it for the life of the connection.
type ClientIo = Watched<Box<TlsStream<TcpStream>>>;

/// One client connection.
struct Connection {
    state: Arc<LbState>,
    http: hyper::server::conn::http1::Builder,
    stopped: watch::Receiver<bool>,
    peer: SocketAddr,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    idle_park: Duration,
}

/// What a connection does after hyper has stopped serving it.
enum AfterServing {
    /// hyper went idle and was taken off; the stream waits for the next request.
    Park(ClientIo, ClientService),
    /// The connection is done: close the stream (TLS close_notify, then FIN).
    Close(ClientIo),
    /// The stream failed; there is nothing left to close cleanly.
    Gone,
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
    /// Resolves once the connection must close (and never after that: `closing` stays set).
    async fn must_close(&mut self, metrics: &Metrics, peer: SocketAddr) {
        loop {
            tokio::select! {
                Ok(()) = self.stopped.changed(), if !self.closing => {
                    self.closing = true;
                    return;
                }
                Ok(()) = self.snapshots.changed(), if !self.closing && self.serial.is_some() => {
                    let crl = self.snapshots.borrow_and_update().crl.clone();
                    if let (Some(crl), Some(serial)) = (crl, self.serial.as_deref()) {
                        if crl.is_revoked(serial) {
                            tracing::info!(client = %peer, "closing a live connection: its client certificate is now revoked");
                            metrics.connections_closed_revoked.fetch_add(1, Ordering::Relaxed);
                            self.closing = true;
                            return;
                        }
                    }
                }
                else => std::future::pending::<()>().await,
            }
        }
    }
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let acceptor = TlsAcceptor::from(self.state.tls().current().config.clone());
        // Boxed, like `serve` below: a task's future is as large as the largest state it can be
        // in, and a parked connection should not pay for the handshake's or hyper's.
        let accept = Box::pin(async move { acceptor.accept(stream).await.map(Box::new) });
        let tls_stream = match tokio::time::timeout(self.handshake_timeout, accept).await {
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
        let leaf = tls_stream.get_ref().1.peer_certificates().and_then(|c| c.first());
        let info = Arc::new(ConnInfo {
            peer: self.peer,
            identity: ClientIdentity::from_peer(leaf.map(|c| c.as_ref())),
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
                AfterServing::Close(mut io) => {
                    let _ = tokio::time::timeout(CLOSE_NOTIFY_TIMEOUT, io.shutdown()).await;
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
                () = watch.must_close(&self.state.metrics, self.peer), if !closing => {
                    Pin::new(&mut connection).graceful_shutdown();
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(client = %self.peer, error = %e, "client connection ended with an error");
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
            () = watch.must_close(metrics, self.peer), if !watch.closing => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(listener: &std::net::TcpListener, slots: &Arc<Semaphore>) -> Accepted {
        let addr = listener.local_addr().expect("bound");
        let stream = std::net::TcpStream::connect(addr).expect("loopback connect");
        let peer = stream.local_addr().expect("connected");
        let slot = slots.clone().try_acquire_owned().expect("a free slot");
        Accepted { stream, peer, slot }
    }

    #[test]
    fn connections_go_to_the_worker_holding_the_fewest() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let slots = Arc::new(Semaphore::new(8));
        let (busy_tx, mut busy_rx) = mpsc::unbounded_channel();
        let (quiet_tx, mut quiet_rx) = mpsc::unbounded_channel();
        let workers = [
            WorkerHandle { handoff: busy_tx, load: Arc::new(AtomicUsize::new(3)) },
            WorkerHandle { handoff: quiet_tx, load: Arc::new(AtomicUsize::new(1)) },
        ];
        hand_off(&workers, accepted(&listener, &slots));
        hand_off(&workers, accepted(&listener, &slots));
        assert!(quiet_rx.try_recv().is_ok() && quiet_rx.try_recv().is_ok());
        assert!(busy_rx.try_recv().is_err(), "nothing for the busier worker until loads are even");
        assert_eq!(workers[1].load.load(Ordering::Relaxed), 3);
        hand_off(&workers, accepted(&listener, &slots));
        hand_off(&workers, accepted(&listener, &slots));
        assert_eq!(
            (workers[0].load.load(Ordering::Relaxed), workers[1].load.load(Ordering::Relaxed)),
            (4, 4),
            "even loads take turns"
        );
    }

    #[test]
    fn a_stopped_worker_drops_the_connection_and_its_count() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let slots = Arc::new(Semaphore::new(1));
        let (gone, receiver) = mpsc::unbounded_channel();
        drop(receiver);
        let workers = [WorkerHandle { handoff: gone, load: Arc::new(AtomicUsize::new(0)) }];
        hand_off(&workers, accepted(&listener, &slots));
        assert_eq!(workers[0].load.load(Ordering::Relaxed), 0);
        assert_eq!(slots.available_permits(), 1, "the connection's slot is given back");
    }
}
