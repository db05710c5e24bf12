//! The real Debian Puppet agents, each instance with its own confdir, ssldir and vardir:
//! Puppet 7 from the host (Debian 12), Puppet 8 from a Debian 13 root (see [`Install`]).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// Default place of the Debian 13 root with Puppet 8 (`scripts/puppet8-root.sh` makes it).
pub const PUPPET8_ROOT: &str = "/var/cache/crossbar/trixie-puppet8";

/// Where a Puppet installation lives: the host's (Debian 12: Puppet 7), or a Debian 13 root
/// (Puppet 8) whose commands run with `chroot`, every path inside the root. A chroot shares the
/// host's network, so both reach crossbar on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Install {
    root: Option<PathBuf>,
    /// The network namespace its commands run in (a host of a [`crate::netns::Network`]).
    netns: Option<String>,
}

impl Install {
    /// Debian 12's Puppet 7 on the host.
    pub fn puppet7() -> Self {
        Self { root: None, netns: None }
    }

    /// The same installation, its commands run in the network namespace `ns`.
    pub fn in_netns(&self, ns: &str) -> Self {
        Self { root: self.root.clone(), netns: Some(ns.to_owned()) }
    }

    /// The network namespace its commands run in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Debian 13's Puppet 8 in its root (`CROSSBAR_PUPPET8_ROOT`, or [`PUPPET8_ROOT`]).
    pub fn puppet8() -> Self {
        let root = std::env::var_os("CROSSBAR_PUPPET8_ROOT")
            .map_or_else(|| PathBuf::from(PUPPET8_ROOT), PathBuf::from);
        assert!(
            root.join(".crossbar-ready").is_file() && root.join("proc/self").exists(),
            "no Debian 13 root with Puppet 8 at {} (the test command makes it: scripts/puppet8-root.sh)",
            root.display()
        );
        Self { root: Some(root), netns: None }
    }

    /// 7 or 8.
    pub fn major(&self) -> u8 {
        if self.root.is_some() {
            8
        } else {
            7
        }
    }

    /// A temp dir the installation's processes can use (inside the root for Puppet 8).
    pub fn tempdir(&self) -> tempfile::TempDir {
        match &self.root {
            None => tempfile::tempdir().unwrap(),
            Some(root) => tempfile::tempdir_in(root.join("tmp")).unwrap(),
        }
    }

    /// How the installation's processes name the host path `path`.
    pub fn inner(&self, path: &Path) -> PathBuf {
        match &self.root {
            None => path.to_owned(),
            Some(root) => Path::new("/").join(path.strip_prefix(root).unwrap_or_else(|_| {
                panic!("{} is outside the Puppet 8 root {}", path.display(), root.display())
            })),
        }
    }

    /// The host path of the installation's path `path` (e.g. a package's config file).
    pub fn outer(&self, path: &str) -> PathBuf {
        match &self.root {
            None => PathBuf::from(path),
            Some(root) => root.join(path.trim_start_matches('/')),
        }
    }

    /// A command that runs `program` in this installation.
    pub fn command(&self, program: &str) -> Command {
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip".into(), "netns".into(), "exec".into(), ns.into()]);
        }
        if let Some(root) = &self.root {
            argv.extend(["chroot".into(), root.into()]);
        }
        argv.push(program.into());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command
    }
}

/// One agent identity.
pub struct Agent {
    pub certname: String,
    /// The agent's directory, as the host sees it.
    pub dir: PathBuf,
    install: Install,
    /// The name the agent knows its server by (`localhost` unless set).
    server: String,
}

impl Agent {
    /// A Puppet 7 agent with its state under `root`.
    pub fn new(root: &Path, certname: &str) -> Self {
        Self::of(&Install::puppet7(), root, certname)
    }

    /// An agent of `install` with its state under `root` (a dir of [`Install::tempdir`]).
    pub fn of(install: &Install, root: &Path, certname: &str) -> Self {
        let dir = root.join(format!("agent-{certname}"));
        std::fs::create_dir_all(dir.join("conf")).unwrap();
        Self {
            certname: certname.to_owned(),
            dir,
            install: install.clone(),
            server: "localhost".into(),
        }
    }

    /// The same agent, knowing its server as `name` (e.g. `puppet`, resolved by the host's
    /// `/etc/hosts`).
    pub fn with_server(mut self, name: &str) -> Self {
        self.server = name.to_owned();
        self
    }

    /// Writes `csr_attributes.yaml` (e.g. `extension_requests: { pp_role: web }`).
    pub fn csr_attributes(&self, yaml: &str) {
        std::fs::write(self.dir.join("conf/csr_attributes.yaml"), yaml).unwrap();
    }

    /// `puppet ssl bootstrap` against the LB on `port` (named `localhost`), not waiting.
    pub fn bootstrap(&self, port: u16) -> Output {
        self.puppet(&["ssl", "bootstrap"], port)
    }

    /// `puppet agent -t`.
    pub fn run(&self, port: u16) -> Output {
        self.puppet(&["agent", "-t", "--detailed-exitcodes"], port)
    }

    /// `puppet agent -t` with extra settings (`--hostcert_renewal_interval`, say).
    pub fn run_with(&self, port: u16, extra: &[&str]) -> Output {
        let action: Vec<&str> = ["agent", "-t", "--detailed-exitcodes"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        self.puppet(&action, port)
    }

    fn puppet(&self, action: &[&str], port: u16) -> Output {
        let d = self.install.inner(&self.dir);
        let mut command = self.install.command("puppet");
        command.args(action).args([
            "--server",
            &self.server,
            "--serverport",
            &port.to_string(),
            "--certname",
            &self.certname,
            "--waitforcert",
            "0",
        ]);
        for (flag, sub) in [
            ("--confdir", "conf"),
            ("--ssldir", "ssl"),
            ("--vardir", "var"),
            ("--rundir", "run"),
            ("--logdir", "log"),
            ("--codedir", "code"),
        ] {
            command.arg(flag).arg(d.join(sub));
        }
        command.output().unwrap_or_else(|e| panic!("cannot run puppet (is the puppet-agent package installed? the test command installs it): {e}"))
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join(format!("ssl/certs/{}.pem", self.certname))
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join(format!("ssl/private_keys/{}.pem", self.certname))
    }

    pub fn has_cert(&self) -> bool {
        self.cert().is_file()
    }
}

/// Which compiler compiled a run's catalog (the test manifest notifies `compiled by <name>`).
pub fn compiled_by(out: &Output) -> Option<String> {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split("compiled by ").nth(1))
        .map(|s| s.split(['\u{1b}', '\'']).next().unwrap_or(s).trim().to_owned())
}

/// Both streams of a finished command, for assertion messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
