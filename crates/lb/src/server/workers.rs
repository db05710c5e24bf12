//! The per-core workers: one thread each, with its own single-threaded tokio runtime, serving
//! the connections the listener hands it.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use hyper_util::rt::TokioTimer;
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch, OwnedSemaphorePermit},
};

use super::{connection::Connection, turns::Turns};
use crate::{config::ServeSettings, state::LbState};

/// Starts [`worker_count`] worker threads; returns how to reach them and their threads.
pub(super) fn start_workers(
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

/// hyper's HTTP/1 server settings: keep-alive, the head's read timeout, and its size and
/// header count (431 beyond; hyper's read buffer never grows past the head limit, or 8 KiB).
fn http_builder(settings: &ServeSettings) -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(settings.max_head_bytes.max(8192))
        .max_header_size(settings.max_head_bytes);
    // hyper allocates its header array on the heap for each request once a count is set: only
    // pay for it when the limit is not hyper's own default (100).
    if settings.max_headers != 100 {
        http.max_headers(settings.max_headers);
    }
    http
}

/// How many worker threads serve clients: one per core the process may use.
fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// A connection accepted by the listener, on its way to a worker. The slot is given back when
/// the connection ends.
pub(super) struct Accepted {
    pub(super) stream: std::net::TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) slot: OwnedSemaphorePermit,
}

/// The listener's side of a worker: where to send connections, and how many it holds.
pub(super) struct WorkerHandle {
    handoff: mpsc::UnboundedSender<Accepted>,
    load: Arc<AtomicUsize>,
}

/// Gives `accepted` to the worker holding the fewest connections.
pub(super) fn hand_off(workers: &[WorkerHandle], accepted: Accepted) {
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
        let heartbeat = self.state.liveness.register_worker();
        let (state, owner) = (self.state.clone(), self.state.clone());
        let beating = heartbeat.clone();
        runtime.block_on(async move {
            let http = http_builder(&self.settings);
            let turns = Arc::new(Turns::new());
            tokio::spawn(crate::upstream::sweep_idle_forever());
            // Shows `/healthz` that this runtime turns (a stuck worker stops beating).
            tokio::spawn(async move {
                loop {
                    state.liveness.beat(&beating);
                    tokio::time::sleep(crate::liveness::BEAT).await;
                }
            });
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
                    turns: turns.clone(),
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
        owner.liveness.unregister_worker(&heartbeat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

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
