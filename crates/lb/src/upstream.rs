//! Kept-alive HTTP/1.1 connections to one backend member.
//!
//! Unlike a generic client, this hands a request back when it was never written to a socket
//! (connect refused, or a pooled connection found closed), so the caller can try another member
//! even with a streaming PUT/POST body; and it says where an exchange failed (connecting,
//! sending, waiting), which decides who is to blame ([`crate::blame`]). The response timeout
//! starts when the request's last byte has gone: a client trickling its body is bounded by the
//! body guard ([`crate::body`]), never blamed on the backend.
//!
//! Idle connections are kept per worker thread (each thread runs its own runtime and drives
//! the connections it opened), so taking one never touches a lock another thread holds. A
//! connection goes back to its thread's pool only when its response body was read to the end.

use std::{
    cell::RefCell,
    collections::HashMap,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
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

use crate::{blame::FailureClass, body::GuardedBody, config::UpstreamSettings};

/// What we send upstream: the client's guarded streaming body, or nothing (body-less requests,
/// retried GETs).
pub(crate) type UpstreamBody = Either<GuardedBody, Empty<Bytes>>;

/// Why a backend exchange failed.
#[derive(Debug, Error)]
pub(crate) enum FailureKind {
    #[error("connect to {0} failed: {1}")]
    Connect(String, std::io::Error),
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("HTTP handshake with {0} failed: {1}")]
    Handshake(String, hyper::Error),
    #[error("the new connection to {0} closed before the request was sent")]
    Closed(String),
    #[error("{0} failed the exchange: {1}")]
    Exchange(String, hyper::Error),
    #[error("{0} sent no response within {1:?} of the request's end")]
    ResponseTimeout(String, Duration),
}

impl FailureKind {
    /// What kind of failure this is, for [`crate::blame`].
    pub(crate) fn class(&self) -> FailureClass {
        match self {
            Self::Connect(..)
            | Self::ConnectTimeout(..)
            | Self::Handshake(..)
            | Self::Closed(..) => FailureClass::Connect,
            Self::Exchange(_, e) if e.is_parse() => FailureClass::Malformed,
            Self::Exchange(..) => FailureClass::Closed,
            Self::ResponseTimeout(..) => FailureClass::ResponseTimeout,
        }
    }
}

/// A failed exchange; `request` is `Some` when it never reached the backend.
#[derive(Debug)]
pub(crate) struct SendFailure {
    pub(crate) kind: FailureKind,
    pub(crate) request: Option<Request<UpstreamBody>>,
}

/// Most of a backend's answer read ahead of a client that is slow to take it (HAProxy's and
/// nginx's proxy buffers are of this order): hyper's default grows to 408 KiB per connection,
/// so ten thousand agents fetching 100 KiB catalogs at once held a gigabyte. The rest waits in
/// the kernel's socket buffer. Response heads from backends are far smaller.
const UPSTREAM_READ_BUFFER: usize = 16 * 1024;

/// Where a member is: `http://host:port`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    /// `host:port` to connect to.
    pub(crate) authority: String,
}

#[derive(Debug, Error)]
#[error("member url {url:?}: {reason}")]
pub(crate) struct UrlError {
    url: String,
    reason: &'static str,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Self, UrlError> {
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
        if authority.as_str().contains('@') {
            return Err(err("a member URL has no user information"));
        }
        let port = authority.port_u16().unwrap_or(80);
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            authority: format!("{}:{port}", authority.host()),
        })
    }
}

/// One backend: where it is, and the key of its idle connections in each worker's pool.
pub(crate) struct Upstream {
    endpoint: Endpoint,
    settings: UpstreamSettings,
    /// This upstream's key in the per-thread idle pools.
    id: usize,
    /// Bumped to drop every idle connection (an ejection): pooled connections of an older
    /// epoch are discarded when found.
    epoch: AtomicU64,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("url", &self.endpoint.url).finish_non_exhaustive()
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// A pooled connection, and until when it may be reused.
struct Idle {
    sender: SendRequest<UpstreamBody>,
    expires: Instant,
    epoch: u64,
}

impl Idle {
    fn usable(&self, now: Instant, epoch: u64) -> bool {
        self.epoch == epoch && now < self.expires && !self.sender.is_closed()
    }
}

/// How often each worker drops its expired idle connections (and those of removed members).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs on each worker: drops this thread's idle connections that expired or closed, so that
/// members no longer in use (after a reload) hold no sockets.
pub(crate) async fn sweep_idle_forever() {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let now = Instant::now();
        IDLE.with_borrow_mut(|idle| {
            idle.retain(|_, pooled| {
                pooled.retain(|c| now < c.expires && !c.sender.is_closed());
                !pooled.is_empty()
            });
        });
    }
}

thread_local! {
    /// This thread's idle connections, by upstream id. Only this thread's runtime drives them.
    static IDLE: RefCell<HashMap<usize, Vec<Idle>>> = RefCell::new(HashMap::new());
}

impl Upstream {
    pub(crate) fn new(endpoint: Endpoint, settings: UpstreamSettings) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Self { endpoint, settings, id, epoch: AtomicU64::new(0) }
    }

    pub(crate) fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// `host:port` to connect to.
    pub(crate) fn authority(&self) -> &str {
        &self.endpoint.authority
    }

    /// Sends `request` over a pooled or new connection.
    pub(crate) async fn send(
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
                kind: FailureKind::Closed(self.endpoint.url.clone()),
                request: Some(back),
            }),
        }
    }

    /// Drops every idle connection, on every thread (the member was ejected).
    pub(crate) fn clear_idle(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// The most recently used idle connection of this thread.
    async fn take_idle(&self) -> Option<SendRequest<UpstreamBody>> {
        let epoch = self.epoch.load(Ordering::Relaxed);
        loop {
            let idle = IDLE.with_borrow_mut(|idle| idle.get_mut(&self.id)?.pop())?;
            if !idle.usable(Instant::now(), epoch) {
                continue;
            }
            let mut sender = idle.sender;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn put_idle(&self, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let epoch = self.epoch.load(Ordering::Relaxed);
        let expires = now + self.settings.idle_timeout;
        IDLE.with_borrow_mut(|idle| {
            let mine = idle.entry(self.id).or_default();
            if mine.len() >= self.settings.max_idle {
                // Full: make room from connections that expired, closed or were cleared.
                mine.retain(|c| c.usable(now, epoch));
            }
            if mine.len() < self.settings.max_idle {
                mine.push(Idle { sender, expires, epoch });
            }
        });
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, FailureKind> {
        let addr = &self.endpoint.authority;
        let connect = TcpStream::connect(addr);
        let stream = match tokio::time::timeout(self.settings.connect_timeout, connect).await {
            Err(_) => return Err(FailureKind::ConnectTimeout(addr.clone())),
            Ok(Err(e)) => return Err(FailureKind::Connect(addr.clone(), e)),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(UPSTREAM_READ_BUFFER)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| FailureKind::Handshake(addr.clone(), e))?;
        let url = self.endpoint.url.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(member = %url, error = %e, "backend connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends one request on `sender`. The response timeout runs from the moment the request's
    /// body is complete (at once for a body-less request).
    async fn exchange(
        self: &Arc<Self>,
        mut sender: SendRequest<UpstreamBody>,
        request: Request<UpstreamBody>,
    ) -> Exchange {
        let upload = match request.body() {
            Either::Left(body) => Some(body.upload().clone()),
            Either::Right(_) => None,
        };
        let sent = sender.try_send_request(request);
        tokio::pin!(sent);
        if let Some(upload) = upload {
            tokio::select! {
                result = &mut sent => return self.answered(result, sender),
                () = upload.finished() => {}
            }
        }
        let timeout = self.settings.response_timeout;
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Exchange::Done(Err(SendFailure {
                kind: FailureKind::ResponseTimeout(self.endpoint.url.clone(), timeout),
                request: None,
            })),
            Ok(result) => self.answered(result, sender),
        }
    }

    fn answered(
        self: &Arc<Self>,
        result: Result<
            Response<Incoming>,
            hyper::client::conn::TrySendError<Request<UpstreamBody>>,
        >,
        sender: SendRequest<UpstreamBody>,
    ) -> Exchange {
        match result {
            Ok(response) => {
                Exchange::Done(Ok(response.map(|body| PooledBody::new(body, sender, self.clone()))))
            }
            Err(mut e) => match e.take_message() {
                Some(request) => Exchange::Unsent(request),
                None => Exchange::Done(Err(SendFailure {
                    kind: FailureKind::Exchange(self.endpoint.url.clone(), e.into_error()),
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
pub(crate) type OnDone = Box<dyn FnOnce(u64, bool) + Send + Sync>;

/// A backend response body that returns its connection to the pool at its end.
pub(crate) struct PooledBody {
    inner: Incoming,
    /// The connection to give back to this thread's pool (the exchange and its connection
    /// run on one thread).
    reuse: Option<(SendRequest<UpstreamBody>, Arc<Upstream>)>,
    bytes: u64,
    on_done: Option<OnDone>,
}

impl PooledBody {
    fn new(inner: Incoming, sender: SendRequest<UpstreamBody>, upstream: Arc<Upstream>) -> Self {
        let mut body = Self { inner, reuse: Some((sender, upstream)), bytes: 0, on_done: None };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// Adds a completion callback (access log, in-flight accounting); callbacks run in the
    /// order they were added. Runs at once if the body already ended.
    pub(crate) fn on_done(&mut self, done: OnDone) {
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
        if let Some((sender, upstream)) = self.reuse.take() {
            upstream.put_idle(sender);
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
        let ok = |url: &str| Endpoint::parse(url).map(|e| e.authority);
        assert_eq!(ok("http://127.0.0.1:8141").ok().as_deref(), Some("127.0.0.1:8141"));
        assert_eq!(ok("http://ca1.example.com/").ok().as_deref(), Some("ca1.example.com:80"));
        assert!(ok("https://127.0.0.1:8141").is_err());
        assert!(ok("http://127.0.0.1:8141/puppet").is_err());
        assert!(ok("http://user@127.0.0.1:8141").is_err());
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

    fn upstream(url: &str) -> Arc<Upstream> {
        let endpoint = Endpoint::parse(url).expect("a member URL");
        Arc::new(Upstream::new(endpoint, UpstreamSettings::default()))
    }

    #[test]
    fn idle_connections_are_reused_on_the_thread_that_drives_them_only() {
        let stub = testkit::stub::StubBackend::start(Duration::ZERO);
        let upstream = upstream(&stub.url());
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

    #[test]
    fn clearing_drops_pooled_connections_on_every_thread() {
        let stub = testkit::stub::StubBackend::start(Duration::ZERO);
        let again = upstream(&stub.url());
        on_own_runtime(async move {
            assert_eq!(get(&again).await, 200);
            again.clear_idle();
            assert_eq!(get(&again).await, 200);
        })
        .join()
        .expect("the thread's requests");
        assert_eq!(stub.connections(), 2, "the cleared connection was not reused");
    }
}
