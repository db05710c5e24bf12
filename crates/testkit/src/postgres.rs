//! A real PostgreSQL cluster of the test's own (Debian's `postgresql` package): `initdb` in a
//! temporary directory, the server on a free loopback port (or on port 5432 of a host of a
//! [`crate::netns::Network`]), run as the `postgres` user (the server refuses root), stopped and
//! removed when the test ends. Streaming replicas can be made from it and promoted, for
//! failover tests. Tools reach it through its Unix socket, which works from any namespace.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{process::ChildGuard, wait};

/// How long a cluster may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One PostgreSQL server with its data directory.
pub struct Postgres {
    name: String,
    /// Holds the data directory and the logs; removed on drop.
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<ChildGuard>,
    /// Where it listens: loopback, or a namespace and its address.
    place: Place,
}

/// Where a server listens.
#[derive(Clone)]
enum Place {
    Loopback,
    Host { ns: String, addr: Ipv4Addr },
}

impl Postgres {
    /// A new cluster (database `crossbar`, user `crossbar` with password `crossbar`), running.
    pub fn start(name: &str) -> Self {
        Self::start_at(name, Place::Loopback)
    }

    /// The same on port 5432 of `host` in `net`, reachable from the subnet.
    pub fn start_in(name: &str, net: &crate::netns::Network, host: &str) -> Self {
        Self::start_at(name, Place::Host { ns: net.ns(host), addr: net.addr(host) })
    }

    fn start_at(name: &str, place: Place) -> Self {
        let dir = owned_tempdir();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, "crossbar\n").unwrap();
        chown_to_postgres(&pwfile);
        let status = as_postgres(&bin("initdb"))
            .args(["-D", &data.display().to_string(), "-U", "crossbar", "--pwfile"])
            .arg(&pwfile)
            .args(["-A", "scram-sha-256", "--no-sync", "-E", "UTF8", "--locale", "C"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed for {name}");
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\nhost all all {subnet} scram-sha-256\nhost replication all {subnet} scram-sha-256\n",
                subnet = crate::netns::SUBNET_CIDR
            ),
        )
        .unwrap();
        let mut pg = Self { name: name.to_owned(), dir, port: 0, child: None, place };
        pg.run();
        pg.psql("postgres", "CREATE DATABASE crossbar");
        pg
    }

    /// A streaming replica of this server, running (hot standby, read-only until promoted).
    pub fn replica(&self, name: &str) -> Self {
        self.replica_at(name, Place::Loopback)
    }

    /// The same on `host` in `net`.
    pub fn replica_in(&self, name: &str, net: &crate::netns::Network, host: &str) -> Self {
        self.replica_at(name, Place::Host { ns: net.ns(host), addr: net.addr(host) })
    }

    fn replica_at(&self, name: &str, place: Place) -> Self {
        let dir = owned_tempdir();
        let data = dir.path().join("data");
        let status = in_place(&place, &bin("pg_basebackup"))
            .args(["-h", &self.host(), "-p", &self.port.to_string(), "-U", "crossbar"])
            .args([
                "-D",
                &data.display().to_string(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "--checkpoint=fast",
            ])
            .env("PGPASSWORD", "crossbar")
            .status()
            .unwrap();
        assert!(status.success(), "pg_basebackup of {} failed", self.name);
        let mut pg = Self { name: name.to_owned(), dir, port: 0, child: None, place };
        pg.run();
        pg
    }

    /// The address it listens on.
    pub fn host(&self) -> String {
        match &self.place {
            Place::Loopback => "127.0.0.1".to_owned(),
            Place::Host { addr, .. } => addr.to_string(),
        }
    }

    /// `postgresql://crossbar:crossbar@<address>:<port>/crossbar`.
    pub fn url(&self) -> String {
        format!("postgresql://crossbar:crossbar@{}:{}/crossbar", self.host(), self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (on a new free port the first time, on the same port after a stop)
    /// and waits until it accepts connections.
    fn run(&mut self) {
        for _attempt in 0..5 {
            if self.port == 0 {
                // A namespace's own port space is empty: PostgreSQL's usual port is free there.
                self.port = match self.place {
                    Place::Loopback => free_port(),
                    Place::Host { .. } => 5432,
                };
            }
            let mut command = in_place(&self.place, &bin("postgres"));
            command
                .args(["-D", &self.data().display().to_string()])
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-c",
                    &format!("listen_addresses={}", self.host()),
                ])
                .args(["-c", &format!("unix_socket_directories={}", self.dir.path().display())])
                .args(["-c", "fsync=off", "-c", "max_connections=200", "-c", "wal_level=replica"]);
            let mut child = ChildGuard::spawn(&self.name, command, self.dir.path());
            let ready =
                wait::until(&format!("{} to accept connections", self.name), START_TIMEOUT, || {
                    if !child.is_running() {
                        return Some(false);
                    }
                    self.accepts().then_some(true)
                });
            if ready {
                self.child = Some(child);
                return;
            }
            let log = child.stderr();
            if !log.contains("could not bind") && !log.contains("Address already in use") {
                panic!("{} did not start:\n{log}", self.name);
            }
            self.port = 0;
        }
        panic!("{}: no free port after 5 attempts", self.name);
    }

    fn accepts(&self) -> bool {
        as_postgres(&bin("pg_isready"))
            .args([
                "-h",
                &self.dir.path().display().to_string(),
                "-p",
                &self.port.to_string(),
                "-q",
            ])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs `sql` in `database` with psql as the superuser; returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = as_postgres(&bin("psql"))
            .args(["-h", &self.dir.path().display().to_string(), "-p", &self.port.to_string()])
            .args(["-U", "crossbar", "-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: psql {sql:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Stops the server cleanly (a fast shutdown: clients are disconnected).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.signal("INT");
            child.wait_exit(START_TIMEOUT);
        }
    }

    /// Kills the server at once, as a host dying would: SIGKILL to the postmaster and to every
    /// backend (a backend outliving its postmaster would keep answering its client).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let backends = children(child.id());
            child.kill();
            for pid in backends {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
        wait::until(&format!("{} to stop answering", self.name), START_TIMEOUT, || {
            (!self.accepts()).then_some(())
        });
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.run();
    }

    /// Promotes a replica to primary and waits until it accepts writes.
    pub fn promote(&self) {
        let status = as_postgres(&bin("pg_ctl"))
            .args(["promote", "-w", "-D", &self.data().display().to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl promote {} failed", self.name);
        wait::until(&format!("{} to leave recovery", self.name), START_TIMEOUT, || {
            (self.psql("postgres", "SELECT pg_is_in_recovery()") == "f").then_some(())
        });
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.child.as_ref().map(ChildGuard::stderr).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(output) = Command::new("pgrep").args(["-P", &pid.to_string()]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// The newest PostgreSQL's `bin/<program>` under `/usr/lib/postgresql`.
fn bin(program: &str) -> String {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (scripts/install-deps.sh installs it)")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let version = versions.last().expect("no PostgreSQL version under /usr/lib/postgresql");
    format!("/usr/lib/postgresql/{version}/bin/{program}")
}

/// `program` run in `place`'s namespace, as the `postgres` user.
fn in_place(place: &Place, program: &str) -> Command {
    match place {
        Place::Loopback => as_postgres(program),
        Place::Host { ns, .. } => {
            let mut command = Command::new("ip");
            command
                .args([
                    "netns", "exec", ns, "setpriv", "--reuid", "postgres", "--regid", "postgres",
                ])
                .args(["--clear-groups", "--"])
                .arg(program);
            command
        }
    }
}

/// `program` run as the `postgres` user when the test runs as root.
fn as_postgres(program: &str) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid", "postgres", "--regid", "postgres", "--clear-groups", "--"])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A temporary directory the server's user owns (mode 0700, as PostgreSQL requires).
fn owned_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("crossbar-pg-").tempdir().unwrap();
    chown_to_postgres(dir.path());
    dir
}

fn chown_to_postgres(path: &Path) {
    if !is_root() {
        return;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").arg(flag).arg("postgres").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("no postgres user")
    };
    std::os::unix::fs::chown(path, Some(id("-u")), Some(id("-g"))).unwrap();
}

/// A loopback port nothing listens on now (the server binds it next; [`Postgres::run`] retries
/// with another if something took it meanwhile).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
