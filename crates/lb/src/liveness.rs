//! Whether this LB itself can serve, whatever its backends do: what keepalived tracks
//! (`/healthz`), so that the address moves only when the other LB would do better. The
//! listener must be accepting, every worker's runtime turning, the certificate valid and the
//! CRL (when one is expected) loaded and not past its `nextUpdate`. Backend pools are left out
//! on purpose: both LBs see the same backends, and a VIP that left both for them would take
//! the CA traffic down too. They are in `/readyz`.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use time::OffsetDateTime;

use crate::tls::TlsSnapshot;

/// Set by the hidden `POST /debug/wedge-worker` admin route (only served with
/// `CROSSBAR_DEBUG_WEDGE=1` in the environment): the next worker to beat blocks its thread for
/// good, as a worker stuck in a bug would. Lets the tests see `/healthz` and systemd's
/// watchdog notice a wedged runtime.
pub(crate) static WEDGE_NEXT_WORKER: AtomicBool = AtomicBool::new(false);

/// Whether the hidden wedge route is served.
pub(crate) fn debug_wedge_enabled() -> bool {
    std::env::var_os("CROSSBAR_DEBUG_WEDGE").is_some_and(|v| v == "1")
}

/// How often a worker shows it is alive.
pub(crate) const BEAT: Duration = Duration::from_millis(250);
/// A worker silent this long is stuck.
const LATE: Duration = Duration::from_secs(2);

/// The LB's own liveness signals.
pub(crate) struct Liveness {
    epoch: Instant,
    accepting: AtomicBool,
    workers: Mutex<Vec<Arc<Heartbeat>>>,
}

/// One worker's last sign of life, in milliseconds since the epoch of its [`Liveness`].
pub(crate) struct Heartbeat(AtomicU64);

impl Default for Liveness {
    fn default() -> Self {
        Self { epoch: Instant::now(), accepting: AtomicBool::new(false), workers: Mutex::default() }
    }
}

impl Liveness {
    /// The listener is accepting (or stopped, or pausing after resource errors).
    pub(crate) fn set_accepting(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::Relaxed);
    }

    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }

    /// A new worker's heartbeat, alive from now.
    pub(crate) fn register_worker(&self) -> Arc<Heartbeat> {
        let heartbeat = Arc::new(Heartbeat(AtomicU64::new(self.millis(Instant::now()))));
        if let Ok(mut workers) = self.workers.lock() {
            workers.push(heartbeat.clone());
        }
        heartbeat
    }

    /// Records a worker's sign of life (or, when the debug wedge is armed, blocks the caller's
    /// thread for good without beating again).
    pub(crate) fn beat(&self, heartbeat: &Heartbeat) {
        if WEDGE_NEXT_WORKER.swap(false, Ordering::SeqCst) {
            tracing::warn!("debug wedge: this worker's thread now blocks for good");
            loop {
                std::thread::park();
            }
        }
        heartbeat.0.store(self.millis(Instant::now()), Ordering::Relaxed);
    }

    /// A stopped worker no longer counts.
    pub(crate) fn unregister_worker(&self, heartbeat: &Arc<Heartbeat>) {
        if let Ok(mut workers) = self.workers.lock() {
            workers.retain(|w| !Arc::ptr_eq(w, heartbeat));
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// What keeps this LB from serving now; empty when it can.
    pub(crate) fn problems(&self, now: Instant) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.accepting.load(Ordering::Relaxed) {
            problems.push("the listener is not accepting connections".to_owned());
        }
        let beats: Vec<u64> = match self.workers.lock() {
            Ok(workers) => workers.iter().map(|w| w.0.load(Ordering::Relaxed)).collect(),
            Err(_) => return vec!["the worker registry is poisoned".to_owned()],
        };
        problems.extend(late_workers(&beats, self.millis(now)));
        problems
    }
}

/// The workers whose last beat is older than [`LATE`] at `now_ms`, or none running at all.
fn late_workers(beats: &[u64], now_ms: u64) -> Vec<String> {
    if beats.is_empty() {
        return vec!["no worker is running".to_owned()];
    }
    let late = u64::try_from(LATE.as_millis()).unwrap_or(u64::MAX);
    beats
        .iter()
        .enumerate()
        .filter(|(_, beat)| now_ms.saturating_sub(**beat) > late)
        .map(|(i, beat)| {
            format!("worker {i} has not turned for {} ms", now_ms.saturating_sub(*beat))
        })
        .collect()
}

/// What is wrong with the TLS side at `now`: an expired or not yet valid certificate, a CRL
/// expected but not loaded, or past its `nextUpdate` (agents and this LB would refuse it).
pub(crate) fn tls_problems(
    snapshot: &TlsSnapshot,
    expects_crl: bool,
    now: OffsetDateTime,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some((not_before, not_after)) = snapshot.cert_validity {
        if now > not_after {
            problems.push(format!("the LB's certificate expired at {not_after}"));
        } else if now < not_before {
            problems.push(format!("the LB's certificate is not valid before {not_before}"));
        }
    }
    match (&snapshot.crl, expects_crl) {
        (None, true) => problems.push("no CRL loaded yet".to_owned()),
        (Some(crl), _) => {
            if let Some(next) = crl.next_update.filter(|next| now > *next) {
                problems.push(format!("the CRL is past its nextUpdate ({next})"));
            }
        }
        (None, false) => {}
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_worker_or_none_at_all_is_a_problem() {
        assert!(late_workers(&[1000, 2500], 3000).is_empty());
        let late = late_workers(&[500, 2900], 3000);
        assert_eq!(late.len(), 1);
        assert!(late[0].contains("worker 0") && late[0].contains("2500 ms"), "{late:?}");
        assert_eq!(late_workers(&[], 3000), ["no worker is running"]);
    }

    #[test]
    fn the_listener_and_workers_make_liveness() {
        let liveness = Liveness::default();
        let now = Instant::now();
        assert_eq!(liveness.problems(now).len(), 2, "not accepting, no worker");
        liveness.set_accepting(true);
        let worker = liveness.register_worker();
        assert!(liveness.problems(now).is_empty());
        assert_eq!(liveness.problems(now + LATE * 2).len(), 1, "a worker that stopped turning");
        liveness.beat(&worker);
        liveness.unregister_worker(&worker);
        assert_eq!(liveness.problems(Instant::now()), ["no worker is running"]);
    }
}
