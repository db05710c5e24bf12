//! The client's request body on its way to a backend, guarded: counted against the pool's
//! `max_body`, cut when it stalls (`timeouts.body_idle`) or trickles below
//! `limits.body_min_rate`, and watched so that when an exchange fails the proxy knows whether
//! the client's body was complete, still arriving, or broken by the client.

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::{sync::Notify, time::Instant};

use crate::config::RequestLimits;

/// A client's failure to send its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFault {
    /// Broken framing: a bad chunk size or line ending, an oversized chunk extension, more
    /// bytes than declared.
    Framing,
    /// The client closed the connection before its body was complete.
    HungUp,
    /// No byte for `timeouts.body_idle`.
    Stalled,
    /// Slower than `limits.body_min_rate` on average.
    TooSlow,
    /// More than the pool's `max_body`.
    TooLarge,
}

impl ClientFault {
    pub(crate) const ALL: [Self; 5] =
        [Self::Framing, Self::HungUp, Self::Stalled, Self::TooSlow, Self::TooLarge];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Framing => "body_framing",
            Self::HungUp => "body_hung_up",
            Self::Stalled => "body_stalled",
            Self::TooSlow => "body_too_slow",
            Self::TooLarge => "body_too_large",
        }
    }

    /// What a failed client body looked like from hyper's side.
    fn of(error: &hyper::Error) -> Self {
        let mut source: Option<&(dyn StdError + 'static)> = error.source();
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind as K;
                if matches!(
                    io.kind(),
                    K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe
                ) {
                    return Self::HungUp;
                }
            }
            source = e.source();
        }
        if error.is_incomplete_message() {
            Self::HungUp
        } else {
            Self::Framing
        }
    }
}

impl fmt::Display for ClientFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Framing => "the request body is malformed",
            Self::HungUp => "the client closed the connection before its request body was complete",
            Self::Stalled => "the request body stalled",
            Self::TooSlow => "the request body arrived too slowly",
            Self::TooLarge => "the request body is larger than this LB accepts",
        })
    }
}

impl StdError for ClientFault {}

const IN_PROGRESS: u8 = 0;
const COMPLETE: u8 = 1;
/// Dropped before its end without a fault of the client's: the exchange ended first.
const ABANDONED: u8 = 2;
/// `FAULTED + fault index`.
const FAULTED: u8 = 3;

/// How far a body got, shared between the guard (polled by the backend connection) and the
/// proxy (which judges a failed exchange).
#[derive(Debug, Default)]
pub(crate) struct UploadState {
    state: AtomicU8,
    finished: Notify,
}

impl UploadState {
    /// Complete, incomplete, or the client's fault.
    pub(crate) fn outcome(&self) -> crate::blame::Upload {
        match self.state.load(Ordering::Acquire) {
            IN_PROGRESS | ABANDONED => crate::blame::Upload::Incomplete,
            COMPLETE => crate::blame::Upload::Complete,
            n => ClientFault::ALL
                .get(usize::from(n - FAULTED))
                .map_or(crate::blame::Upload::Incomplete, |f| crate::blame::Upload::Faulted(*f)),
        }
    }

    /// Resolves once the body is complete or failed.
    pub(crate) async fn finished(&self) {
        let notified = self.finished.notified();
        if self.state.load(Ordering::Acquire) != IN_PROGRESS {
            return;
        }
        notified.await;
    }

    fn finish(&self, state: u8) {
        if self
            .state
            .compare_exchange(IN_PROGRESS, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.finished.notify_one();
        }
    }

    fn fault(&self, fault: ClientFault) -> ClientFault {
        let index = ClientFault::ALL.iter().position(|f| *f == fault).unwrap_or(0);
        self.finish(FAULTED + index as u8);
        fault
    }
}

/// The client's body, guarded. Polled by the backend connection's task.
#[derive(Debug)]
pub(crate) struct GuardedBody {
    inner: Incoming,
    state: Arc<UploadState>,
    limits: RequestLimits,
    max_body: Option<u64>,
    started: Instant,
    last_byte: Instant,
    received: u64,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl GuardedBody {
    pub(crate) fn new(inner: Incoming, limits: RequestLimits, max_body: Option<u64>) -> Self {
        let now = Instant::now();
        Self {
            inner,
            state: Arc::new(UploadState::default()),
            limits,
            max_body,
            started: now,
            last_byte: now,
            received: 0,
            timer: None,
        }
    }

    pub(crate) fn upload(&self) -> &Arc<UploadState> {
        &self.state
    }

    /// When the body must have made progress by: `body_idle` after the last byte, and, at a
    /// minimum rate, `body_idle` plus one second per `body_min_rate` bytes after it started.
    fn deadline(&self) -> Instant {
        let idle = self.last_byte + self.limits.body_idle;
        match self.limits.body_min_rate {
            0 => idle,
            rate => {
                let earned = Duration::from_secs_f64(self.received as f64 / rate as f64);
                idle.min(self.started + self.limits.body_idle + earned)
            }
        }
    }

    fn failed(&self, fault: ClientFault) -> Poll<Option<Result<Frame<Bytes>, ClientFault>>> {
        Poll::Ready(Some(Err(self.state.fault(fault))))
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = ClientFault;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientFault>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.received += len;
                if self.max_body.is_some_and(|max| self.received > max) {
                    return self.failed(ClientFault::TooLarge);
                }
                if len > 0 {
                    self.last_byte = Instant::now();
                }
                if self.inner.is_end_stream() {
                    self.state.finish(COMPLETE);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let fault = ClientFault::of(&e);
                tracing::debug!(error = %e, "client request body failed");
                self.failed(fault)
            }
            Poll::Ready(None) => {
                self.state.finish(COMPLETE);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = self.deadline();
                let timer =
                    self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let stalled = Instant::now() >= self.last_byte + self.limits.body_idle;
                self.failed(if stalled { ClientFault::Stalled } else { ClientFault::TooSlow })
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for GuardedBody {
    fn drop(&mut self) {
        // Dropped unfinished (the backend answered early, or the exchange failed): nothing more
        // will come, and whoever waits for the end must not wait forever. Not complete: a
        // backend that dropped the body midway is not blamed as if it had all of it.
        self.state.finish(ABANDONED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_reads_back_what_was_recorded() {
        let state = UploadState::default();
        assert_eq!(state.outcome(), crate::blame::Upload::Incomplete);
        state.fault(ClientFault::Stalled);
        assert_eq!(state.outcome(), crate::blame::Upload::Faulted(ClientFault::Stalled));
        state.finish(COMPLETE);
        assert_eq!(
            state.outcome(),
            crate::blame::Upload::Faulted(ClientFault::Stalled),
            "the first outcome stays"
        );
        for fault in ClientFault::ALL {
            let state = UploadState::default();
            state.fault(fault);
            assert_eq!(state.outcome(), crate::blame::Upload::Faulted(fault));
        }
    }

    #[tokio::test]
    async fn finished_resolves_for_a_waiter_before_and_after() {
        let state = Arc::new(UploadState::default());
        let waiter = tokio::spawn({
            let state = state.clone();
            async move { state.finished().await }
        });
        tokio::task::yield_now().await;
        state.finish(COMPLETE);
        waiter.await.expect("the waiter wakes");
        state.finished().await;
    }
}
