//! Throwaway CAs and certificates, and a running `crossbar serve` that tests talk to.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use pki::{AltName, Certname, KeyAlgorithm};

use crate::process::ChildGuard;

/// The LB's name, as in the seed; its certificate also names `localhost` and `127.0.0.1`.
pub const LB_NAME: &str = "puppetlb.example.com";
/// A certificate listed in `admin_certnames` (no `pp_cli_auth`).
pub const ADMIN_NAME: &str = "admin.example.com";

/// A CA directory with the LB's certificate and an admin certificate, in a temp dir.
pub struct CaFixture {
    pub root: tempfile::TempDir,
    pub cadir: PathBuf,
    pub tls: PathBuf,
}

impl CaFixture {
    /// A new CA with `key` (EC P-256 keeps tests fast; the RSA path is tested too).
    pub fn new(key: KeyAlgorithm) -> Self {
        let root = tempfile::tempdir().unwrap();
        let cadir = root.path().join("ca");
        let tls = root.path().join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        ca::setup::setup(&cadir, LB_NAME, key, pki::issue::DEFAULT_CA_TTL).unwrap();
        let fixture = Self { root, cadir, tls };
        let alt = vec![AltName::Dns("localhost".into()), AltName::Ip("127.0.0.1".parse().unwrap())];
        fixture.issue(LB_NAME, alt, true);
        fixture.issue(ADMIN_NAME, vec![], false);
        fixture
    }

    /// Issues `<name>.pem`/`<name>.key` into the TLS dir.
    pub fn issue(&self, name: &str, alt: Vec<AltName>, cli_auth: bool) {
        let (store, _) = ca::fs::FsStore::open(&self.cadir).unwrap();
        let service = ca::CaService::open(Arc::new(store), ca::CaSettings::default()).unwrap();
        let (key, issued) = service
            .generate(&Certname::parse(name).unwrap(), alt, cli_auth, KeyAlgorithm::EcP256)
            .unwrap();
        std::fs::write(self.cert(name), issued.pem).unwrap();
        std::fs::write(self.key(name), key).unwrap();
    }

    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    pub fn cert(&self, name: &str) -> PathBuf {
        self.tls.join(format!("{name}.pem"))
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.tls.join(format!("{name}.key"))
    }

    pub fn ca_bundle(&self) -> PathBuf {
        self.cadir.join("ca_crt.pem")
    }

    pub fn crl(&self) -> PathBuf {
        self.cadir.join("ca_crl.pem")
    }

    /// `[ca]` and `[lb]` on port 0 in one process, with the given autosign value (TOML) and
    /// extra `[lb]` lines.
    pub fn single_node_config(&self, autosign: &str, extra_lb: &str) -> String {
        format!(
            r#"[ca]
listen = "127.0.0.1:0"
cadir = "{cadir}"
autosign = {autosign}
admin_certnames = ["{ADMIN_NAME}"]

[lb]
listen = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
client_ca = "{bundle}"
crl = "{crl}"
tls_reload_interval = "250ms"
{extra_lb}
"#,
            cadir = self.cadir.display(),
            cert = self.cert(LB_NAME).display(),
            key = self.key(LB_NAME).display(),
            bundle = self.ca_bundle().display(),
            crl = self.crl().display(),
        )
    }

    /// Puts the whole CA directory's files, with their contents, in a sorted list (the lock file
    /// excluded), to show that a request changed nothing.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        snapshot_into(&self.cadir, &self.cadir, &mut out);
        out.sort();
        out
    }
}

fn snapshot_into(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            snapshot_into(base, &path, out);
        } else if entry.file_name() != ".crossbar.lock" {
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            out.push((rel, std::fs::read(&path).unwrap()));
        }
    }
}

/// An admin token file in `dir` for the operator [`ADMIN_NAME`] (whom the single-node CA
/// lists in `admin_certnames`); returns the `[lb]` line naming it and the token.
pub fn admin_token(dir: &Path) -> (String, String) {
    let token = "5f0c3a9d1e7b24c68a9f03d2b1e4c7a65f0c3a9d1e7b24c6".to_owned();
    let path = dir.join("admin-tokens");
    std::fs::write(&path, format!("# operators of the admin page\n{ADMIN_NAME} {token}\n"))
        .unwrap();
    (format!("admin_token_file = \"{}\"", path.display()), token)
}

/// A running `crossbar serve`.
pub struct Crossbar {
    pub child: ChildGuard,
    pub lb: Option<SocketAddr>,
    pub ca: Option<SocketAddr>,
    /// The LB's admin listener.
    pub admin: Option<SocketAddr>,
    /// The CA's admin listener (`/metrics`).
    pub ca_metrics: Option<SocketAddr>,
}

impl Crossbar {
    /// Writes `config` to `<dir>/<name>.toml`, starts `bin serve`, and waits for its listeners.
    pub fn start(bin: &Path, dir: &Path, name: &str, config: &str) -> Self {
        Self::start_with(Command::new(bin), dir, name, config)
    }

    /// The same with `env` added to its environment.
    pub fn start_env(
        bin: &Path,
        dir: &Path,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(bin);
        command.envs(env.iter().copied());
        Self::start_with(command, dir, name, config)
    }

    /// The same in `host` of `net`.
    pub fn start_in(
        net: &crate::netns::Network,
        host: &str,
        bin: &Path,
        dir: &Path,
        name: &str,
        config: &str,
    ) -> Self {
        Self::start_with(net.command(host, bin), dir, name, config)
    }

    fn start_with(mut command: Command, dir: &Path, name: &str, config: &str) -> Self {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        command.arg("serve").arg("--config").arg(&path).env("RUST_LOG", "info");
        let mut child = ChildGuard::spawn(name, command, dir);
        let timeout = Duration::from_secs(30);
        let ca = config
            .contains("[ca]")
            .then(|| address(&child.wait_for_stdout("ca listening on", timeout)));
        let lb = config
            .contains("[lb]")
            .then(|| address(&child.wait_for_stdout("lb listening on", timeout)));
        let admin = section(config, "[lb]")
            .contains("admin_listen")
            .then(|| address(&child.wait_for_stdout("admin listening on", timeout)));
        let ca_metrics = section(config, "[ca]")
            .contains("admin_listen")
            .then(|| address(&child.wait_for_stdout("ca-metrics listening on", timeout)));
        Self { child, lb, ca, admin, ca_metrics }
    }

    pub fn lb_port(&self) -> u16 {
        self.lb.expect("this crossbar runs no LB").port()
    }

    pub fn lb_url(&self) -> String {
        format!("https://localhost:{}", self.lb_port())
    }
}

/// The lines of one top-level `[section]` of a TOML text (its sub-tables excluded).
fn section<'a>(config: &'a str, header: &str) -> &'a str {
    let Some(start) = config.find(header) else { return "" };
    let rest = &config[start + header.len()..];
    let end = rest.find("\n[").unwrap_or(rest.len());
    &rest[..end]
}

fn address(line: &str) -> SocketAddr {
    line.rsplit("://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// A CSR for `cn` with a fresh P-256 key, as an agent would submit it.
pub fn csr_pem(cn: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// One plain-HTTP request to `addr` (the CA listens on plain HTTP behind the LB); returns the
/// status and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    http_with(addr, method, path, &[], body)
}

/// [`http`] with request headers.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(&crate::tls::request(method, path, headers, body))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| raw[i + 4..].to_vec())
        .unwrap_or_default();
    Ok((status, body))
}
