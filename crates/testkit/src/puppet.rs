//! The real Debian Puppet 7 agent, each instance with its own confdir, ssldir and vardir.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// One agent identity.
pub struct Agent {
    pub certname: String,
    pub dir: PathBuf,
}

impl Agent {
    pub fn new(root: &Path, certname: &str) -> Self {
        let dir = root.join(format!("agent-{certname}"));
        std::fs::create_dir_all(dir.join("conf")).unwrap();
        Self { certname: certname.to_owned(), dir }
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

    fn puppet(&self, action: &[&str], port: u16) -> Output {
        let d = &self.dir;
        let mut command = Command::new("puppet");
        command.args(action).args([
            "--server",
            "localhost",
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

/// Both streams of a finished command, for assertion messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
