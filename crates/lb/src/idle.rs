//! Knowing when hyper has nothing left to do on a client connection, so that the listener can
//! take the connection back from hyper while it is idle.
//!
//! Why: hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for every HTTP/1 connection
//! for as long as it serves it, and its server API can neither size nor release them. A Puppet
//! agent keeps its connection open while it applies its catalog, so most connections in front
//! of a fleet are idle. The listener ([`crate::server`]) therefore takes a connection back from
//! hyper once it has been idle for `timeouts.idle_park`, and holds it without those buffers
//! until its next request arrives.
//!
//! How: [`Watched`] wraps the client stream and records what hyper does with it; [`Tracked`]
//! wraps each response body and notes when hyper is done with it. [`Activity::is_idle`] is true
//! only after this sequence with nothing in between: the last response finished, everything
//! hyper wrote was flushed, and hyper then asked for more bytes and there were none. At that
//! point hyper is waiting for the next request head and holds no unsent bytes, so asking it to
//! shut down gracefully ends it at once, and `into_parts` hands back the stream and any bytes it
//! had read ahead (given back to the next hyper instance through [`Watched::rewind`]).
//!
//! What it does not do: parse HTTP or decide anything about a request; hyper does all of that.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU32, AtomicU8, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A response finished since hyper last read request bytes.
const ANSWERED: u8 = 1;
/// Everything written since then was flushed.
const FLUSHED: u8 = 2;
/// hyper asked for more bytes after its last write, and none had come.
const WAITING: u8 = 4;
const IDLE: u8 = ANSWERED | FLUSHED | WAITING;

/// What hyper has done on one client connection; shared by the stream, the service and the
/// response bodies of that connection.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    in_flight: AtomicU32,
    events: AtomicU8,
    /// A request has started on this connection.
    started: std::sync::atomic::AtomicBool,
}

impl Activity {
    /// Whether any request has started on this connection (a fresh one has had none yet).
    pub(crate) fn has_started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// True when hyper has answered every request, flushed, and is waiting for the next one.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && self.events.load(Ordering::Relaxed) == IDLE
    }

    /// Marks a request as started; it ends when the returned guard is dropped (the guard
    /// travels with the response body, which hyper drops once it has written all of it).
    pub(crate) fn start_request(self: &Arc<Self>) -> InFlight {
        self.started.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn read_bytes(&self) {
        self.events.store(0, Ordering::Relaxed);
    }

    fn read_pending(&self) {
        self.events.fetch_or(WAITING, Ordering::Relaxed);
    }

    fn wrote(&self) {
        self.events.fetch_and(!(FLUSHED | WAITING), Ordering::Relaxed);
    }

    fn flushed(&self) {
        self.events.fetch_or(FLUSHED, Ordering::Relaxed);
    }
}

/// One request in flight on a connection; see [`Activity::start_request`].
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.events.fetch_or(ANSWERED, Ordering::Relaxed);
        }
    }
}

/// A response body that ends its request's [`InFlight`] when hyper drops it.
#[derive(Debug)]
pub(crate) struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, in_flight: InFlight) -> Self {
        Self { body, _in_flight: in_flight }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client stream as hyper sees it: reports reads, writes and flushes to [`Activity`], and
/// first replays bytes a previous hyper instance had read ahead.
#[derive(Debug)]
pub(crate) struct Watched<T> {
    inner: T,
    read_ahead: Bytes,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, read_ahead: Bytes::new(), activity }
    }

    /// Bytes hyper had read but not parsed when it was taken off the connection; they are read
    /// again before anything from the stream. They are copied out: the `Bytes` hyper hands
    /// back, even empty, keeps its whole read buffer alive.
    pub(crate) fn rewind(&mut self, read_ahead: &[u8]) {
        self.read_ahead = Bytes::copy_from_slice(read_ahead);
    }

    /// Whether bytes are already waiting to be read (so there is no need to wait on the stream).
    pub(crate) fn has_read_ahead(&self) -> bool {
        !self.read_ahead.is_empty()
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.read_ahead.is_empty() {
            let n = this.read_ahead.len().min(buf.remaining());
            buf.put_slice(&this.read_ahead[..n]);
            this.read_ahead.advance(n);
            this.activity.read_bytes();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &polled {
            Poll::Pending => this.activity.read_pending(),
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.activity.read_bytes(),
            // End of stream or an error: hyper will end the connection itself.
            Poll::Ready(_) => {}
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            self.activity.flushed();
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T> Watched<T> {
    fn note_write(&self, polled: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = polled {
            if *n > 0 {
                self.activity.wrote();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of one kept-alive request, in the order hyper produces them.
    fn answer_one(activity: &Arc<Activity>) {
        activity.read_bytes();
        activity.read_pending();
        let request = activity.start_request();
        activity.wrote();
        drop(request);
        activity.wrote();
    }

    #[test]
    fn idle_only_after_answered_flushed_and_waiting() {
        let activity = Arc::new(Activity::default());
        assert!(!activity.is_idle(), "a fresh connection has answered nothing");
        answer_one(&activity);
        assert!(!activity.is_idle(), "written but not flushed");
        activity.flushed();
        assert!(!activity.is_idle(), "flushed, but hyper has not asked for the next request");
        activity.read_pending();
        assert!(activity.is_idle());
    }

    #[test]
    fn a_write_after_the_flush_makes_it_busy_again() {
        let activity = Arc::new(Activity::default());
        answer_one(&activity);
        activity.flushed();
        activity.read_pending();
        activity.wrote();
        assert!(!activity.is_idle());
        activity.flushed();
        assert!(!activity.is_idle(), "the wait for more bytes came before the last write");
        activity.read_pending();
        assert!(activity.is_idle());
    }

    #[test]
    fn bytes_of_the_next_request_make_it_busy_until_that_one_is_answered() {
        let activity = Arc::new(Activity::default());
        answer_one(&activity);
        activity.flushed();
        activity.read_pending();
        activity.read_bytes();
        activity.read_pending();
        assert!(!activity.is_idle(), "a partial request head is not idleness");
        answer_one(&activity);
        activity.flushed();
        activity.read_pending();
        assert!(activity.is_idle());
    }

    #[test]
    fn a_request_in_flight_is_never_idle() {
        let activity = Arc::new(Activity::default());
        answer_one(&activity);
        let pipelined = activity.start_request();
        activity.flushed();
        activity.read_pending();
        assert!(!activity.is_idle());
        drop(pipelined);
        assert!(activity.is_idle());
    }

    #[tokio::test]
    async fn read_ahead_bytes_come_first_then_the_stream() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut watched = Watched::new(server, activity.clone());
        watched.rewind(b"GET / ");
        assert!(watched.has_read_ahead());
        let mut client = client;
        client.write_all(b"HTTP/1.1\r\n").await.expect("the duplex pipe takes 10 bytes");
        let mut got = vec![0; 16];
        watched.read_exact(&mut got).await.expect("16 bytes arrive");
        assert_eq!(got, b"GET / HTTP/1.1\r\n");
        assert!(!watched.has_read_ahead());
    }
}
