//! Raw HTTP/1.1 over TLS, with or without a client certificate: for requests no well-behaved
//! client would send.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    sync::Arc,
    time::Duration,
};

use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, ClientConnection, StreamOwned,
};

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A client that trusts `ca_bundle` and optionally presents a certificate.
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    pub fn new(ca_bundle: &Path, identity: Option<(&Path, &Path)>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for der in pki::pemfile::blocks(&std::fs::read(ca_bundle).unwrap(), "CERTIFICATE").unwrap()
        {
            roots.add(CertificateDer::from(der)).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = pki::pemfile::blocks(&std::fs::read(cert).unwrap(), "CERTIFICATE")
                    .unwrap()
                    .into_iter()
                    .map(CertificateDer::from)
                    .collect();
                let key_der = pki::pemfile::single_block(
                    &std::fs::read(key).unwrap(),
                    &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"],
                )
                .unwrap();
                builder
                    .with_client_auth_cert(chain, PrivateKeyDer::try_from(key_der).unwrap())
                    .unwrap()
            }
        };
        Self { config: Arc::new(config) }
    }

    /// Connects and completes the handshake, or returns the error (e.g. a revoked client).
    pub fn connect(&self, port: u16) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        self.handshake(tcp)
    }

    /// One request on a new connection to `addr`, every step within `timeout` (a probe).
    pub fn request_to(
        &self,
        addr: std::net::SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        // The server is verified by the address it was reached at (an IP address name).
        let name = ServerName::IpAddress(addr.ip().into());
        let mut stream = self.handshake_as(tcp, name)?;
        send(&mut stream, &request("GET", path, &[], b""))
    }

    fn handshake(
        &self,
        tcp: TcpStream,
    ) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
        self.handshake_as(tcp, ServerName::try_from("localhost").unwrap())
    }

    fn handshake_as(
        &self,
        tcp: TcpStream,
        name: ServerName<'static>,
    ) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
        let conn = ClientConnection::new(self.config.clone(), name).map_err(|e| e.to_string())?;
        let mut stream = StreamOwned::new(conn, tcp);
        // TLS 1.3 servers reject a client certificate after the client's Finished: exchange data
        // so that such a rejection surfaces here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).map_err(|e| e.to_string())?;
        }
        Ok(stream)
    }

    /// Whether a full request/response works on a new connection (a rejected client
    /// certificate shows up as an error on the first read with TLS 1.3).
    pub fn handshake_and_request(&self, port: u16, path: &str) -> Result<Reply, String> {
        let mut stream = self.connect(port)?;
        send(&mut stream, &request("GET", path, &[], b""))
    }

    /// Sends raw request bytes (which should say `Connection: close`) and reads the reply.
    pub fn raw(&self, port: u16, bytes: &[u8]) -> Reply {
        let mut stream = self.connect(port).unwrap();
        send(&mut stream, bytes).unwrap()
    }
}

/// A request with `Connection: close`, `Host` and `Content-Length` set.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends one request on a kept-alive connection and reads exactly one reply (by
/// `Content-Length` or chunked framing), leaving the connection open.
pub fn exchange(
    stream: &mut StreamOwned<ClientConnection, TcpStream>,
    bytes: &[u8],
) -> Result<Reply, String> {
    stream.write_all(bytes).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    read_reply(stream)
}

/// Reads exactly one reply from a kept-alive connection (by `Content-Length` or chunked
/// framing), leaving the connection open.
pub fn read_reply(stream: &mut impl Read) -> Result<Reply, String> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).map_err(|e| e.to_string())?;
        raw.push(byte[0]);
    }
    let head = parse(&raw)?;
    let mut body = Vec::new();
    if let Some(len) = head.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    } else if head.header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        while !body.ends_with(b"0\r\n\r\n") {
            stream.read_exact(&mut byte).map_err(|e| e.to_string())?;
            body.push(byte[0]);
        }
        body = dechunk(&body)?;
    }
    Ok(Reply { body, ..head })
}

/// A keep-alive GET.
pub fn keepalive_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

fn send(
    stream: &mut StreamOwned<ClientConnection, TcpStream>,
    bytes: &[u8],
) -> Result<Reply, String> {
    stream.write_all(bytes).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // Peers often close without close_notify; what we have is the whole reply.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    parse(&raw)
}

fn parse(raw: &[u8]) -> Result<Reply, String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no header end in reply")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty reply")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Reply { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..line_end]).split(';').next().unwrap_or("").trim(),
            16,
        )
        .map_err(|e| e.to_string())?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("short chunk")?);
        data = data.get(size + 2..).ok_or("short chunk")?;
    }
}
