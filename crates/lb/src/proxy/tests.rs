//! The proxy against scripted backends, one per failure class: who is blamed, what the client
//! is told, which member stays in rotation. A plain-HTTP hyper server stands in for the TLS
//! front (the request path after the handshake is the same).

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::*;
use crate::config::{MemberConfig, PoolConfig, PoolSettings, UpstreamSettings};

/// How a scripted backend behaves on each connection.
#[derive(Clone, Copy)]
enum Script {
    /// Reads the whole request, answers 200 `ok` (and keeps the connection alive).
    Ok,
    /// Reads the whole request, then closes without answering.
    CloseAfterRequest,
    /// Reads the head and a few body bytes, then closes.
    CloseMidBody,
    /// Reads the whole request and never answers.
    Silent,
    /// Reads the whole request and answers something that is not HTTP.
    Garbage,
}

/// A backend that follows `script`; returns its URL.
async fn backend(script: Script) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_script(stream, script));
        }
    });
    format!("http://{addr}")
}

async fn serve_script(mut stream: TcpStream, script: Script) {
    loop {
        let Some((head, body_len)) = read_head(&mut stream).await else { return };
        let _ = head;
        if let Script::CloseMidBody = script {
            let mut some = [0u8; 4];
            let _ = stream.read_exact(&mut some).await;
            return;
        }
        let mut body = vec![0u8; body_len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        match script {
            Script::Ok => {
                let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if stream.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
            Script::CloseAfterRequest | Script::CloseMidBody => return,
            Script::Silent => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Script::Garbage => {
                let _ = stream.write_all(b"SSH-2.0-not-http\r\n\r\n").await;
                return;
            }
        }
    }
}

/// Reads a request head; returns it and its `Content-Length`.
async fn read_head(stream: &mut TcpStream) -> Option<(String, usize)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    Some((head, length))
}

/// A refused port.
async fn refusing() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

struct Harness {
    addr: SocketAddr,
    pool: Arc<Pool>,
}

impl Harness {
    async fn start(urls: Vec<String>, limits: RequestLimits, max_body: Option<u64>) -> Self {
        let members = urls
            .into_iter()
            .map(|url| MemberConfig { url, standby: false, max_in_flight: None })
            .collect();
        let settings = PoolSettings {
            strategy: crate::balance::Strategy::RoundRobin,
            check: None,
            max_body,
            ..PoolSettings::default()
        };
        let config = PoolConfig { name: "compilers".into(), settings, members };
        let upstream = UpstreamSettings {
            response_timeout: Duration::from_millis(500),
            ..UpstreamSettings::default()
        };
        let pool = Arc::new(Pool::new(&config, &upstream));
        let proxy = Arc::new(Proxy::new(
            RouteTable::with_defaults(vec![]),
            vec![pool.clone()],
            limits,
            Arc::new(Metrics::default()),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let proxy = proxy.clone();
                let conn = Arc::new(ConnInfo {
                    peer,
                    identity: ClientIdentity::Anonymous,
                    names: LbNames::new(["localhost".to_owned()]),
                });
                let service = hyper::service::service_fn(move |request| {
                    let (proxy, conn) = (proxy.clone(), conn.clone());
                    async move { Ok::<_, Infallible>(proxy.handle(request, &conn).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { addr, pool }
    }

    /// Sends `bytes` and reads until the LB closes; the status, or 0 when it closed silently.
    async fn send(&self, bytes: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let _ = stream.write_all(bytes).await;
        self.reply(stream).await
    }

    async fn reply(&self, mut stream: TcpStream) -> (u16, String) {
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw));
        let _ = read.await.expect("the LB answers or closes within 10 s");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    }

    /// `(healthy, ejections)` of each member.
    fn members(&self) -> Vec<(bool, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        self.pool
            .members()
            .iter()
            .map(|m| (m.is_healthy(), m.stats.ejections.load(Relaxed)))
            .collect()
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

fn post(body: &str) -> Vec<u8> {
    format!("POST /puppet/v3/catalog/a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

fn limits() -> RequestLimits {
    RequestLimits { body_idle: Duration::from_millis(300), body_min_rate: 0 }
}

#[tokio::test]
async fn a_refused_connect_is_retried_elsewhere_and_ejects_the_refuser() {
    let h = Harness::start(vec![refusing().await, backend(Script::Ok).await], limits(), None).await;
    for _ in 0..2 {
        assert_eq!(
            h.send(&post("facts")).await.0,
            200,
            "even a POST: it never reached the refuser"
        );
    }
    assert_eq!(h.members(), [(false, 1), (true, 0)]);
}

#[tokio::test]
async fn a_get_is_replayed_after_a_backend_closed_on_it() {
    let h = Harness::start(
        vec![backend(Script::CloseAfterRequest).await, backend(Script::Ok).await],
        limits(),
        None,
    )
    .await;
    assert_eq!(h.send(&get("/puppet/v3/node/a")).await.0, 200);
    assert_eq!(h.members(), [(false, 1), (true, 0)]);
}

#[tokio::test]
async fn a_post_that_reached_a_failing_backend_gets_503_with_retry_after() {
    let h = Harness::start(vec![backend(Script::CloseAfterRequest).await], limits(), None).await;
    let (status, text) = h.send(&post("facts")).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    assert_eq!(h.members(), [(false, 1)]);
}

#[tokio::test]
async fn a_silent_backend_gets_504_and_is_ejected() {
    let h = Harness::start(vec![backend(Script::Silent).await], limits(), None).await;
    assert_eq!(h.send(&post("facts")).await.0, 504);
    assert_eq!(h.members(), [(false, 1)]);
}

#[tokio::test]
async fn an_answer_that_is_not_http_gets_502_and_ejects() {
    let h = Harness::start(vec![backend(Script::Garbage).await], limits(), None).await;
    assert_eq!(h.send(&post("facts")).await.0, 502);
    assert_eq!(h.members(), [(false, 1)]);
}

#[tokio::test]
async fn a_backend_leaving_mid_body_is_nobodys_proven_fault() {
    let h = Harness::start(vec![backend(Script::CloseMidBody).await], limits(), None).await;
    let mut stream = TcpStream::connect(h.addr).await.expect("connect");
    let head = "POST /puppet/v3/catalog/a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("head");
    // Keep sending (the backend reads 4 bytes and leaves), never finishing the body.
    let feeder = tokio::spawn(async move {
        for _ in 0..20 {
            if stream.write_all(&[b'a'; 1000]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stream
    });
    let stream = feeder.await.expect("feeder");
    let (status, text) = h.reply(stream).await;
    assert_eq!(status, 502, "{text}");
    assert_eq!(h.members(), [(true, 0)], "the member was not ejected");
}

#[tokio::test]
async fn broken_client_bodies_are_the_clients_fault() {
    let h = Harness::start(vec![backend(Script::Ok).await], limits(), None).await;
    let chunked = |body: &str| {
        format!("PUT /puppet/v3/report/a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes()
    };
    for body in
        ["zz\r\nhello\r\n0\r\n\r\n", "fffffffffffffffffff\r\nhello\r\n", "2\r\nhello\r\n0\r\n\r\n"]
    {
        let (status, text) = h.send(&chunked(body)).await;
        assert_eq!(status, 400, "{body:?}: {text}");
    }
    assert_eq!(h.members(), [(true, 0)]);
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_blames_nobody() {
    let h = Harness::start(vec![backend(Script::Ok).await], limits(), None).await;
    let mut stream = TcpStream::connect(h.addr).await.expect("connect");
    let head = "POST /puppet/v3/catalog/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nfirst bytes";
    stream.write_all(head.as_bytes()).await.expect("head");
    let (status, text) = h.reply(stream).await;
    assert_eq!(status, 408, "{text}");
    assert_eq!(h.members(), [(true, 0)]);
}

#[tokio::test]
async fn a_trickling_body_gets_408() {
    let trickle = RequestLimits { body_idle: Duration::from_millis(300), body_min_rate: 1000 };
    let h = Harness::start(vec![backend(Script::Ok).await], trickle, None).await;
    let mut stream = TcpStream::connect(h.addr).await.expect("connect");
    let head =
        "POST /puppet/v3/catalog/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("head");
    // One byte every 100 ms: never idle for 300 ms, far below 1000 bytes/s.
    let feeder = tokio::spawn(async move {
        for _ in 0..30 {
            if stream.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stream
    });
    let (status, text) = h.reply(feeder.await.expect("feeder")).await;
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("too slowly"), "{text}");
}

#[tokio::test]
async fn a_client_hanging_up_mid_body_blames_nobody() {
    let h = Harness::start(vec![backend(Script::Ok).await], limits(), None).await;
    for _ in 0..3 {
        let mut stream = TcpStream::connect(h.addr).await.expect("connect");
        let head = "POST /puppet/v3/catalog/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\npartial";
        stream.write_all(head.as_bytes()).await.expect("head");
        drop(stream);
    }
    assert_eq!(h.send(&post("facts")).await.0, 200, "the member still serves");
    assert_eq!(h.members(), [(true, 0)]);
}

#[tokio::test]
async fn bodies_over_max_body_get_413() {
    let h = Harness::start(vec![backend(Script::Ok).await], limits(), Some(10)).await;
    assert_eq!(h.send(&post("0123456789")).await.0, 200, "at the limit");
    assert_eq!(h.send(&post("0123456789a")).await.0, 413, "declared over the limit");
    let chunked = b"PUT /puppet/v3/report/a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n";
    assert_eq!(h.send(chunked).await.0, 413, "counted over the limit");
    assert_eq!(h.members(), [(true, 0)]);
}

#[tokio::test]
async fn requests_refused_at_the_edge_reach_no_backend() {
    let h = Harness::start(vec![refusing().await], limits(), None).await;
    let no_host = b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert_eq!(h.send(no_host).await.0, 400);
    let trace = b"TRACE /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let (status, text) = h.send(trace).await;
    assert_eq!(status, 405);
    assert!(text.to_ascii_lowercase().contains("allow: get"), "{text}");
    assert_eq!(h.members(), [(true, 0)], "the refusing member was never tried");
}
