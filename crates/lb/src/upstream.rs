//! Kept-alive HTTP/1.1 connections to one backend member.
//!
//! Unlike a generic client, this pool hands a request back when it was never written to a
//! socket (connect refused, or a pooled connection found closed), so the caller can try another
//! member even with a streaming PUT/POST body. A connection goes back to the pool only when its
//! response body has been read to the end.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    thread::ThreadId,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;

/// What we send upstream: the client's streaming body, or nothing (retried GETs, probes).
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// Timeouts and pool sizes for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// From the request being written to the response head arriving. puppetserver compiles can
    /// take minutes; agents wait up to `http_read_timeout` (10 min).
    pub response_timeout: Duration,
    /// How long an unused connection is kept (below the backend's own idle timeout).
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(20),
            max_idle: 64,
        }
    }
}

/// Why a backend exchange failed.
#[derive(Debug, Error)]
pub enum FailureKind {
    #[error("connect to {0} failed: {1}")]
    Connect(String, std::io::Error),
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("HTTP handshake with {0} failed: {1}")]
    Handshake(String, hyper::Error),
    #[error("{0} closed the connection before answering: {1}")]
    Send(String, hyper::Error),
    #[error("the new connection to {0} closed before the request was sent")]
    Closed(String),
    #[error("{0} sent no response within {1:?}")]
    ResponseTimeout(String, Duration),
}

impl FailureKind {
    /// A connection-level failure (the member is unreachable), as opposed to a slow answer.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::Connect(..) | Self::ConnectTimeout(..) | Self::Handshake(..) | Self::Closed(..)
        )
    }
}

/// A failed exchange; `request` is `Some` when it never reached the backend.
#[derive(Debug)]
pub struct SendFailure {
    pub kind: FailureKind,
    pub request: Option<Request<UpstreamBody>>,
}

/// One backend: where it is and its idle connections.
pub struct Upstream {
    url: String,
    authority: String,
    settings: UpstreamSettings,
    idle: Mutex<Vec<Idle>>,
}

/// A pooled connection, and the thread whose runtime drives it: connections are only reused
/// on that thread (see [`crate::server::serve`]), and `max_idle` counts per thread.
struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
    home: ThreadId,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("url", &self.url).finish_non_exhaustive()
    }
}

#[derive(Debug, Error)]
#[error("member url {url:?}: {reason}")]
pub struct UrlError {
    pub url: String,
    pub reason: &'static str,
}

impl Upstream {
    /// A member at `url` (`http://host:port`).
    pub fn new(url: &str, settings: UpstreamSettings) -> Result<Self, UrlError> {
        let err = |reason| UrlError { url: url.to_owned(), reason };
        let uri: Uri = url.parse().map_err(|_| err("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(err(
                "only http:// members are supported (backends sit on a private network)",
            ));
        }
        let authority = uri.authority().ok_or_else(|| err("no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(err("a member URL has no path"));
        }
        let port = authority.port_u16().unwrap_or(80);
        let authority = format!("{}:{port}", authority.host());
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            authority,
            settings,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host:port` to connect to.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// Sends `request` over a pooled or new connection.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, SendFailure> {
        while let Some(sender) = self.take_idle().await {
            match self.exchange(sender, request).await {
                Exchange::Done(result) => return result,
                // The pooled connection was closed by the backend while idle: try a fresh one.
                Exchange::Unsent(back) => request = back,
            }
        }
        let sender = match self.connect().await {
            Ok(sender) => sender,
            Err(kind) => return Err(SendFailure { kind, request: Some(request) }),
        };
        match self.exchange(sender, request).await {
            Exchange::Done(result) => result,
            Exchange::Unsent(back) => Err(SendFailure {
                kind: FailureKind::Closed(self.url.clone()),
                request: Some(back),
            }),
        }
    }

    /// Drops every idle connection (the member left the pool or was ejected).
    pub fn clear_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// The most recently used idle connection of this thread.
    async fn take_idle(&self) -> Option<SendRequest<UpstreamBody>> {
        let here = std::thread::current().id();
        loop {
            let Idle { mut sender, since, .. } = {
                let mut idle = self.idle.lock().ok()?;
                let mine = idle.iter().rposition(|c| c.home == here)?;
                idle.remove(mine)
            };
            if since.elapsed() >= self.settings.idle_timeout || sender.is_closed() {
                continue;
            }
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn put_idle(&self, sender: SendRequest<UpstreamBody>, home: ThreadId) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let now = Instant::now();
            let mine = |idle: &[Idle]| idle.iter().filter(|c| c.home == home).count();
            if mine(&idle) >= self.settings.max_idle {
                // Full: make room from connections that expired or closed, if any.
                let timeout = self.settings.idle_timeout;
                idle.retain(|c| now.duration_since(c.since) < timeout && !c.sender.is_closed());
            }
            if mine(&idle) < self.settings.max_idle {
                idle.push(Idle { sender, since: now, home });
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, FailureKind> {
        let addr = &self.authority;
        let stream =
            match tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(addr))
                .await
            {
                Err(_) => return Err(FailureKind::ConnectTimeout(addr.clone())),
                Ok(Err(e)) => return Err(FailureKind::Connect(addr.clone(), e)),
                Ok(Ok(stream)) => stream,
            };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| FailureKind::Handshake(addr.clone(), e))?;
        let url = self.url.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(member = %url, error = %e, "backend connection ended with an error");
            }
        });
        Ok(sender)
    }

    async fn exchange(
        self: &Arc<Self>,
        mut sender: SendRequest<UpstreamBody>,
        request: Request<UpstreamBody>,
    ) -> Exchange {
        let timeout = self.settings.response_timeout;
        let sent = sender.try_send_request(request);
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Exchange::Done(Err(SendFailure {
                kind: FailureKind::ResponseTimeout(self.url.clone(), timeout),
                request: None,
            })),
            Ok(Ok(response)) => {
                Exchange::Done(Ok(response.map(|body| PooledBody::new(body, sender, self.clone()))))
            }
            Ok(Err(mut e)) => match e.take_message() {
                Some(request) => Exchange::Unsent(request),
                None => Exchange::Done(Err(SendFailure {
                    kind: FailureKind::Send(self.url.clone(), e.into_error()),
                    request: None,
                })),
            },
        }
    }
}

enum Exchange {
    Done(Result<Response<PooledBody>, SendFailure>),
    Unsent(Request<UpstreamBody>),
}

/// Called once when a response body ends or is dropped: bytes passed and whether it ended
/// cleanly.
pub type OnDone = Box<dyn FnOnce(u64, bool) + Send + Sync>;

/// A backend response body that returns its connection to the pool at its end.
pub struct PooledBody {
    inner: Incoming,
    /// The connection to give back, with the thread that drives it (where the response
    /// started: the exchange and its connection run on one thread).
    reuse: Option<(SendRequest<UpstreamBody>, ThreadId, Arc<Upstream>)>,
    bytes: u64,
    on_done: Option<OnDone>,
}

impl PooledBody {
    fn new(inner: Incoming, sender: SendRequest<UpstreamBody>, upstream: Arc<Upstream>) -> Self {
        let home = std::thread::current().id();
        let mut body =
            Self { inner, reuse: Some((sender, home, upstream)), bytes: 0, on_done: None };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// Adds a completion callback (access log, in-flight accounting); callbacks run in the
    /// order they were added. Runs at once if the body already ended.
    pub fn on_done(&mut self, done: OnDone) {
        if self.reuse.is_none() && self.inner.is_end_stream() && self.on_done.is_none() {
            done(self.bytes, true);
            return;
        }
        self.on_done = Some(match self.on_done.take() {
            None => done,
            Some(earlier) => Box::new(move |bytes, clean| {
                earlier(bytes, clean);
                done(bytes, clean);
            }),
        });
    }

    fn release(&mut self) {
        if let Some((sender, home, upstream)) = self.reuse.take() {
            upstream.put_idle(sender, home);
        }
    }

    fn finish(&mut self, clean: bool) {
        if clean {
            self.release();
        } else {
            self.reuse = None;
        }
        if let Some(done) = self.on_done.take() {
            done(self.bytes, clean);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.bytes += len;
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.on_done.is_some() {
            // Dropped before its end: the client went away, the connection is not reusable.
            let clean = self.inner.is_end_stream();
            self.finish(clean);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_urls() {
        let ok = |url: &str| Upstream::new(url, UpstreamSettings::default()).map(|u| u.authority);
        assert_eq!(ok("http://127.0.0.1:8141").ok().as_deref(), Some("127.0.0.1:8141"));
        assert_eq!(ok("http://ca1.example.com/").ok().as_deref(), Some("ca1.example.com:80"));
        assert!(ok("https://127.0.0.1:8141").is_err());
        assert!(ok("http://127.0.0.1:8141/puppet").is_err());
        assert!(ok("127.0.0.1:8141").is_err());
        assert!(ok("").is_err());
    }

    /// One GET through the pool, its body read to the end (which gives the connection back).
    async fn get(upstream: &Arc<Upstream>) -> http::StatusCode {
        use http_body_util::BodyExt;
        let request = Request::get(format!("{}/x", upstream.url()))
            .body(Either::Right(Empty::new()))
            .expect("a valid request");
        let response = upstream.send(request).await.expect("the stub answers");
        let status = response.status();
        response.into_body().collect().await.expect("the whole body");
        status
    }

    fn on_own_runtime<T: Send + 'static>(
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(work)
        })
    }

    #[test]
    fn idle_connections_are_reused_on_the_thread_that_drives_them_only() {
        let stub = testkit::stub::StubBackend::start(Duration::ZERO);
        let upstream = Arc::new(
            Upstream::new(&stub.url(), UpstreamSettings::default()).expect("a member URL"),
        );
        // The first thread keeps its runtime, and so its pooled connection, alive until told.
        let (done, first_done) = std::sync::mpsc::channel();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let first = upstream.clone();
        let first = on_own_runtime(async move {
            assert_eq!(get(&first).await, 200);
            assert_eq!(get(&first).await, 200);
            done.send(()).expect("the test waits");
            let _ = finished.await;
        });
        first_done.recv().expect("the first thread's requests");
        assert_eq!(stub.connections(), 1, "the second request reused the first's connection");
        let second = upstream;
        on_own_runtime(async move { assert_eq!(get(&second).await, 200) })
            .join()
            .expect("the second thread's request");
        assert_eq!(
            stub.connections(),
            2,
            "another thread does not take a connection the first thread's runtime drives"
        );
        let _ = finish.send(());
        first.join().expect("the first thread ends");
    }
}
