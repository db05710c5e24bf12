//! A TLS handshake timed by how long the *client* keeps the LB waiting, not by how long the
//! LB takes. After an LB failover thousands of agents handshake at once, and a saturated LB
//! takes seconds to get round to each: cutting those handshakes off at a wall-clock deadline
//! throws away signatures already made, the agents come back, and the load only grows (the
//! herd benchmark lost a quarter of its runs that way). A client that stalls — sends nothing
//! while the LB waits on it, or reads nothing while the LB has bytes for it — is still cut off
//! after the timeout; a hard cap bounds every handshake whatever happens. Once the handshake
//! is over the stream is passed through untimed ([`Paced::stop`]): requests pay nothing for it.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

/// Not waiting on the client.
const NOT_WAITING: u64 = u64::MAX;

/// An I/O object that notes since when it has been waiting on the peer.
#[derive(Debug)]
pub(super) struct Paced<T> {
    inner: T,
    /// `None` once stopped.
    clock: Option<Arc<WaitClock>>,
}

/// Since when (milliseconds after `origin`) the stream has been waiting on the client.
#[derive(Debug)]
pub(super) struct WaitClock {
    origin: Instant,
    since: AtomicU64,
}

impl WaitClock {
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn waiting(&self) {
        let now = self.now();
        let _ = self.since.compare_exchange(NOT_WAITING, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn progressed(&self) {
        self.since.store(NOT_WAITING, Ordering::Relaxed);
    }

    /// How long the stream has been waiting on the client, if it is.
    fn waited(&self) -> Option<Duration> {
        let since = self.since.load(Ordering::Relaxed);
        (since != NOT_WAITING).then(|| Duration::from_millis(self.now().saturating_sub(since)))
    }

    /// Resolves once the stream has waited on the client for `timeout` without a break.
    pub(super) async fn stalled(&self, timeout: Duration) {
        loop {
            let left = match self.waited() {
                Some(waited) if waited >= timeout => return,
                Some(waited) => timeout - waited,
                None => timeout,
            };
            tokio::time::sleep(left.max(Duration::from_millis(10))).await;
        }
    }
}

impl<T> Paced<T> {
    /// The stream, and the clock that tells how long it has been waiting on the client.
    pub(super) fn new(inner: T) -> (Self, Arc<WaitClock>) {
        let clock = WaitClock { origin: Instant::now(), since: AtomicU64::new(NOT_WAITING) };
        let clock = Arc::new(clock);
        (Self { inner, clock: Some(clock.clone()) }, clock)
    }

    /// Stops timing (the handshake is over): reads and writes go straight through.
    pub(super) fn stop(&mut self) {
        self.clock = None;
    }

    fn note<R>(&self, poll: &Poll<R>) {
        match (&self.clock, poll) {
            (None, _) => {}
            (Some(clock), Poll::Pending) => clock.waiting(),
            (Some(clock), Poll::Ready(_)) => clock.progressed(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Paced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.note(&poll);
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Paced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(&poll);
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_nothing_stalls_the_stream() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (mut paced, clock) = Paced::new(ours);
        let mut buf = [0u8; 8];
        let read = paced.read(&mut buf);
        tokio::select! {
            _ = read => panic!("nothing was sent"),
            () = clock.stalled(Duration::from_secs(10)) => {}
        }
        assert!(clock.waited().is_some_and(|w| w >= Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_busy_on_our_side_is_never_stalled_however_long_it_takes() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let (mut paced, clock) = Paced::new(ours);
        theirs.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        paced.read_exact(&mut buf).await.expect("read");
        // The LB then works (or waits for a core) for a minute without asking the client.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(clock.waited(), None, "data was there when asked: not the client's delay");
        let stalled =
            tokio::time::timeout(Duration::from_secs(5), clock.stalled(Duration::from_secs(1)));
        assert!(stalled.await.is_err(), "no stall while nobody waits on the client");
    }

    #[tokio::test(start_paused = true)]
    async fn progress_restarts_the_wait() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let (mut paced, clock) = Paced::new(ours);
        let mut buf = [0u8; 1];
        let reader = tokio::spawn(async move {
            for _ in 0..3 {
                paced.read_exact(&mut buf).await.expect("read");
            }
        });
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            assert!(clock.waited().is_some_and(|w| w >= Duration::from_secs(6)));
            theirs.write_all(b"x").await.expect("write");
            tokio::task::yield_now().await;
        }
        reader.await.expect("reader");
        assert_eq!(clock.waited(), None, "each byte came within 10 s: never stalled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_stream_is_no_longer_timed() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (mut paced, clock) = Paced::new(ours);
        paced.stop();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(60), paced.read(&mut buf));
        assert!(read.await.is_err(), "nothing was sent");
        assert_eq!(clock.waited(), None, "a stopped stream does not time its waits");
    }
}
