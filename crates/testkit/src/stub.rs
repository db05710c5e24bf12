//! A stub backend: a **test double** standing in for a compiler in tests about the LB itself
//! (the headers a backend receives, overload shedding), never where a test is about Puppet.
//! HTTP/1.1 with keep-alive, a thread per connection; `/status/v1/simple` answers `running`,
//! `/echo` answers with the request target (`target: /echo…`) and headers (one `name: value` per line), anything else
//! answers `stub` after the configured delay.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

/// A running stub.
pub struct StubBackend {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    unhealthy: AtomicBool,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    served: AtomicUsize,
    connections: AtomicUsize,
}

impl StubBackend {
    /// Listens on a port the kernel picks; non-health requests wait `delay` before answering.
    pub fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let counters = shared.clone();
                std::thread::spawn(move || serve(stream, addr, delay, &counters));
            }
        });
        Self { addr, counters }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The most requests it ever handled at once.
    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// Makes `/status/v1/simple` answer 503 `stopping` (or `running` again).
    pub fn set_healthy(&self, healthy: bool) {
        self.counters.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Requests answered (health checks excluded).
    pub fn served(&self) -> usize {
        self.counters.served.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, me: SocketAddr, delay: Duration, counters: &Counters) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end().to_owned();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            headers.push(header);
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let health = path.starts_with("/status/v1/simple");
        let sick = health && counters.unhealthy.load(Ordering::SeqCst);
        let reply = if sick {
            "stopping".to_owned()
        } else if health {
            "running".to_owned()
        } else {
            let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(delay);
            counters.in_flight.fetch_sub(1, Ordering::SeqCst);
            counters.served.fetch_add(1, Ordering::SeqCst);
            if path.starts_with("/echo") {
                format!("target: {path}\n{}", headers.join("\n"))
            } else {
                "stub".to_owned()
            }
        };
        let status = if sick { "503 Service Unavailable" } else { "200 OK" };
        let response = format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nX-Puppet-Version: 7.23.0\r\nX-Stub: {me}\r\nContent-Length: {}\r\n\r\n{reply}", reply.len());
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
