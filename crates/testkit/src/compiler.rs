//! A real puppetserver compiler (Debian package: 7 on the host, 8 in the Debian 13 root) set up
//! as the recipe in `shared/recipes/real-puppet.md` says: plain HTTP, CA service off,
//! `allow-header-cert-info`, private dirs, one JRuby. It listens on a port the kernel picks
//! (Jetty logs it).
//!
//! Or a whole puppetserver as a site without crossbar runs it ([`Compiler::start_with_ca`]):
//! TLS, its own CA service on a given CA directory, autosign on.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{process::ChildGuard, puppet::Install, wait};

/// How long a compiler may take to start (JVM + JRuby; ~25 s alone, longer two at a time).
pub const START_TIMEOUT: Duration = Duration::from_secs(240);

/// The manifest every test compiler serves: it names the compiler and echoes the trusted
/// `pp_role`, so a test sees who compiled and what identity arrived.
const SITE_PP: &str = r#"node default {
  notify { "compiled by ${settings::certname}": }
  notify { "pp_role ${trusted['extensions']['pp_role']}": }
}
"#;

/// One compiler.
pub struct Compiler {
    pub name: String,
    /// Its directory, as the host sees it.
    pub dir: PathBuf,
    pub port: u16,
    child: Option<ChildGuard>,
    /// Its installation, with the network namespace it runs in.
    install: Install,
    /// The CA directory it serves (TLS, CA service on); `None` for a compiler behind an LB.
    cadir: Option<PathBuf>,
}

impl Compiler {
    /// Prepares `<root>/<name>` and starts a Puppet 7 compiler (call [`Compiler::wait_ready`]).
    pub fn start(root: &Path, name: &str) -> Self {
        Self::start_in(&Install::puppet7(), root, name)
    }

    /// The same for `install`'s puppetserver; `root` must be a dir of [`Install::tempdir`].
    pub fn start_in(install: &Install, root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        prepare(install, &dir, name, None);
        let mut compiler = Self {
            name: name.to_owned(),
            dir,
            port: listen_port(install),
            child: None,
            install: install.clone(),
            cadir: None,
        };
        compiler.spawn();
        compiler
    }

    /// Prepares `<root>/<name>` and starts a Puppet 7 puppetserver with its CA service on
    /// `cadir` (made over to the `puppet` user), serving TLS as `localhost` with a certificate
    /// its CA issues at start, autosigning (call [`Compiler::wait_ready`]).
    pub fn start_with_ca(root: &Path, name: &str, cadir: &Path) -> Self {
        let install = Install::puppet7();
        let dir = root.join(name);
        prepare(&install, &dir, name, Some(cadir));
        let mut server = Self {
            name: name.to_owned(),
            dir,
            port: 0,
            child: None,
            install,
            cadir: Some(cadir.to_owned()),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let host_dir = self.dir.clone();
        let d = self.install.inner(&host_dir);
        let _ = std::fs::remove_file(host_dir.join("stdout.log"));
        let mut command = self.install.command("setpriv");
        command
            .args(["--reuid", "puppet", "--regid", "puppet", "--clear-groups", "--"])
            .args([
                "/usr/bin/java",
                "-Xms256m",
                "-Xmx512m",
                "-XX:TieredStopAtLevel=1",
                "-Dlogappender=STDOUT",
                "-Djruby.lib=/usr/share/jruby/lib",
            ])
            .args(["-jar", "/usr/share/puppetserver/puppetserver.jar", "--config"])
            .arg(d.join("conf.d"))
            .arg("--bootstrap-config")
            .arg(d.join("services.d"))
            .current_dir(&host_dir);
        self.child = Some(ChildGuard::spawn(&self.name, command, &host_dir));
    }

    /// Waits until Jetty has bound its port and `/status/v1/simple` answers `running`.
    pub fn wait_ready(&mut self) {
        if let Some(ns) = self.install.netns().map(str::to_owned) {
            return self.wait_ready_in(&ns);
        }
        let name = self.name.clone();
        let child = self.child.as_mut().expect("started");
        let line = child.wait_for_stdout("Started ServerConnector", START_TIMEOUT);
        self.port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().trim_end_matches('}').parse().ok())
            .unwrap_or_else(|| panic!("{name}: no port in {line:?}"));
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let port = self.port;
        let tls = self
            .cadir
            .as_ref()
            .map(|cadir| crate::tls::TlsClient::new(&cadir.join("ca_crt.pem"), None));
        wait::until_true(&format!("{name} to be running"), START_TIMEOUT, || match &tls {
            None => crate::fixture::http(addr, "GET", "/status/v1/simple", b"")
                .is_ok_and(|(status, body)| status == 200 && body == b"running"),
            Some(client) => client
                .handshake_and_request(port, "/status/v1/simple")
                .is_ok_and(|reply| reply.status == 200 && reply.body == b"running"),
        });
    }

    /// The same in a network namespace: port 8140 on every address, checked from inside.
    fn wait_ready_in(&mut self, ns: &str) {
        let name = self.name.clone();
        let child = self.child.as_mut().expect("started");
        child.wait_for_stdout("Started ServerConnector", START_TIMEOUT);
        let url = format!("http://127.0.0.1:{}/status/v1/simple", self.port);
        wait::until_true(&format!("{name} to be running"), START_TIMEOUT, || {
            Command::new("ip")
                .args(["netns", "exec", ns, "curl", "-sf", "--max-time", "2", &url])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout == b"running")
        });
    }

    /// Its URL on loopback (in a namespace, [`Compiler::url_on`] gives the subnet's).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its URL at `host`'s address (a compiler in a network namespace).
    pub fn url_on(&self, host: std::net::Ipv4Addr) -> String {
        format!("http://{host}:{}", self.port)
    }

    /// `kill -9`, as a crashing compiler.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts again on the same port (Jetty binds it again) and waits until it is running.
    pub fn restart(&mut self) {
        self.kill();
        set_port(&self.dir, &self.install, self.port, self.cadir.is_some());
        self.spawn();
        self.wait_ready();
    }

    /// Resident memory of the JVM, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.child.as_ref().and_then(|c| crate::process::rss_kib(c.id()))
    }
}

fn prepare(install: &Install, dir: &Path, name: &str, cadir: Option<&Path>) {
    for sub in ["etc", "code/environments/production/manifests", "var", "run", "log", "ssl"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let config = install.outer("/etc/puppet/puppetserver");
    let copy = Command::new("cp")
        .arg("-r")
        .arg(config.join("conf.d"))
        .arg(config.join("services.d"))
        .arg(dir)
        .status()
        .unwrap();
    assert!(copy.success(), "copy puppetserver's config (is the puppetserver package installed?)");
    set_port(dir, install, listen_port(install), cadir.is_some());
    if let Some(cadir) = cadir {
        prepare_ca(install, dir, name, cadir);
        return;
    }
    let ca_cfg = dir.join("services.d/ca.cfg");
    let ca = std::fs::read_to_string(&ca_cfg).unwrap();
    let ca = ca
        .replace(
            "\npuppetlabs.services.ca.certificate-authority-service/certificate-authority-service",
            "\n#puppetlabs.services.ca.certificate-authority-service/certificate-authority-service",
        )
        .replace(
            "#puppetlabs.services.ca.certificate-authority-disabled-service",
            "puppetlabs.services.ca.certificate-authority-disabled-service",
        );
    std::fs::write(&ca_cfg, ca).unwrap();
    let auth = dir.join("conf.d/auth.conf");
    let text = std::fs::read_to_string(&auth).unwrap().replacen(
        "authorization: {",
        "authorization: {\n    allow-header-cert-info: true",
        1,
    );
    std::fs::write(&auth, text).unwrap();
    jruby_config(install, dir);
    let d = install.inner(dir);
    let d = d.display();
    std::fs::write(
        dir.join("etc/puppet.conf"),
        format!("[main]\nssldir = {d}/ssl\ncertname = {name}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("code/environments/production/manifests/site.pp"), SITE_PP).unwrap();
    let chown = install
        .command("chown")
        .args(["-R", "puppet:puppet"])
        .arg(install.inner(dir))
        .status()
        .unwrap();
    assert!(chown.success());
}

/// The rest of a whole puppetserver's setup: CA service on (as packaged), auth.conf as
/// packaged, its CA directory and its own name and alt names.
fn prepare_ca(install: &Install, dir: &Path, name: &str, cadir: &Path) {
    jruby_config(install, dir);
    let d = install.inner(dir);
    let d = d.display();
    std::fs::write(
        dir.join("etc/puppet.conf"),
        format!(
            "[main]\nssldir = {d}/ssl\ncertname = {name}\ndns_alt_names = localhost,127.0.0.1\n[server]\ncadir = {}\nautosign = true\n",
            install.inner(cadir).display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("code/environments/production/manifests/site.pp"), SITE_PP).unwrap();
    for path in [install.inner(dir), install.inner(cadir)] {
        let chown =
            install.command("chown").args(["-R", "puppet:puppet"]).arg(path).status().unwrap();
        assert!(chown.success());
    }
}

/// puppetserver.conf: the package's JRuby paths (they differ between Debian releases), our own
/// dirs, one JRuby.
fn jruby_config(install: &Install, dir: &Path) {
    let packaged = std::fs::read_to_string(dir.join("conf.d/puppetserver.conf")).unwrap();
    let jruby: Vec<&str> = packaged
        .lines()
        .filter(|l| {
            ["ruby-load-path:", "gem-home:", "gem-path:"]
                .iter()
                .any(|k| l.trim_start().starts_with(k))
        })
        .collect();
    let d = install.inner(dir);
    let d = d.display();
    std::fs::write(
        dir.join("conf.d/puppetserver.conf"),
        format!(
            "jruby-puppet: {{\n{}\n    server-conf-dir: {d}/etc\n    server-code-dir: {d}/code\n    server-var-dir: {d}/var\n    server-run-dir: {d}/run\n    server-log-dir: {d}/log\n    max-active-instances: 1\n}}\nhttp-client: {{\n}}\nprofiler: {{\n}}\n",
            jruby.join("\n")
        ),
    )
    .unwrap();
}

/// The port a compiler takes: one the kernel picks on loopback, 8140 in a namespace of its own.
fn listen_port(install: &Install) -> u16 {
    if install.netns().is_some() {
        8140
    } else {
        0
    }
}

fn set_port(dir: &Path, install: &Install, port: u16, tls: bool) {
    // In a namespace, every address (the host's own subnet address and loopback).
    let host = if install.netns().is_some() { "0.0.0.0" } else { "127.0.0.1" };
    let listen = if tls {
        format!("ssl-host: {host}\n    ssl-port: {port}\n    client-auth: want")
    } else {
        format!("host: {host}\n    port: {port}")
    };
    std::fs::write(
        dir.join("conf.d/webserver.conf"),
        format!("webserver: {{\n    access-log-config: /etc/puppet/puppetserver/request-logging.xml\n    {listen}\n}}\n"),
    )
    .unwrap();
}
