//! The listener: accept with back-off, hand each connection to one of the per-core workers
//! ([`workers`]), which serve it ([`connection`]); on shutdown stop accepting and drain.

mod connection;
mod paced;
mod turns;
mod workers;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
};

use self::workers::{hand_off, start_workers, Accepted};
use crate::{config::ServeSettings, state::LbState};

/// Serves `listener` until `shutdown` resolves, then stops accepting and waits up to
/// `drain_grace` for open requests to finish.
///
/// Client connections are served by one thread per core, each with its own single-threaded
/// tokio runtime: a connection, its requests and the backend connections it uses stay on one
/// thread, as in HAProxy, so no request waits for another thread to be woken. This task
/// accepts and hands each connection to the worker holding the fewest (kept-alive connections
/// are long-lived, so balancing them at accept time matters). Background work (health checks,
/// CRL pulls, reloads, the admin listener) stays on the caller's runtime.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<LbState>,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let (finish, finished) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let (workers, threads) = start_workers(&state, &settings, &stopped, &finished);
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);
    state.liveness.set_accepting(true);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted.and_then(|(stream, peer)| Ok((stream.into_std()?, peer))) {
            Ok((stream, peer)) => {
                if backoff.succeeded() {
                    state.liveness.set_accepting(true);
                }
                hand_off(&workers, Accepted { stream, peer, slot });
            }
            Err(e) => {
                drop(slot);
                state.metrics.accept_failed();
                let Some(pause) = backoff.failed(&e) else { continue };
                state.liveness.set_accepting(false);
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    drop(listener);
    state.liveness.set_accepting(false);
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

/// Pauses after `accept` errors that retrying at once cannot fix (out of file descriptors or
/// memory): the connections wait in the kernel's backlog instead of the LB spinning a core.
#[derive(Debug, Default)]
struct Backoff {
    pause: Option<Duration>,
    failures: u64,
}

const MIN_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);

impl Backoff {
    /// The pause before the next `accept`, if any; logs the start of a run of errors.
    fn failed(&mut self, error: &std::io::Error) -> Option<Duration> {
        if !is_resource_error(error) {
            // The peer gave up before we took it (ECONNABORTED and the like): accept the next.
            tracing::debug!(error = %error, "accept failed");
            return None;
        }
        self.failures += 1;
        let pause = self.pause.map_or(MIN_PAUSE, |p| (p * 2).min(MAX_PAUSE));
        if self.pause.is_none() {
            tracing::error!(error = %error, "accept failed: out of resources; pausing accepts (up to {MAX_PAUSE:?}) until they succeed again");
        }
        self.pause = Some(pause);
        Some(pause)
    }

    /// Whether this success ends a run of errors.
    fn succeeded(&mut self) -> bool {
        if self.pause.take().is_some() {
            tracing::warn!(failures = self.failures, "accepting connections again");
            self.failures = 0;
            return true;
        }
        false
    }
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM (Linux numbers): retrying at once cannot help.
fn is_resource_error(error: &std::io::Error) -> bool {
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ENOBUFS: i32 = 105;
    matches!(error.raw_os_error(), Some(ENOMEM | ENFILE | EMFILE | ENOBUFS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_errors_back_off_exponentially_and_reset_on_success() {
        let emfile = std::io::Error::from_raw_os_error(24);
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        let mut backoff = Backoff::default();
        assert_eq!(backoff.failed(&aborted), None, "a peer's abort is retried at once");
        let pauses: Vec<Duration> = (0..9).filter_map(|_| backoff.failed(&emfile)).collect();
        assert_eq!(pauses[0], MIN_PAUSE);
        assert_eq!(pauses[1], MIN_PAUSE * 2);
        assert_eq!(*pauses.last().expect("pauses"), MAX_PAUSE, "capped");
        backoff.succeeded();
        assert_eq!(backoff.failed(&emfile), Some(MIN_PAUSE), "a new run starts small");
    }
}
