//! Hosts made of Linux network namespaces, joined by a bridge, on a private subnet that exists
//! only inside them: the multi-host topology the e2e tests, the demo and the benchmarks share.
//!
//! Each host is a namespace `<prefix>-<host>` with a loopback and an `eth0` into a bridge that
//! lives in a namespace of its own (`<prefix>-sw`), so nothing is added to the host's network
//! and nothing outside the namespaces is ever addressed. Programs run in a host with
//! [`Network::command`]; code runs in one with [`Network::run_in`] (a thread that enters the
//! namespace). `ip netns exec` also mounts `/etc/netns/<ns>/hosts` over `/etc/hosts`, which
//! [`Network::hosts_file`] writes so that names resolve inside.
//!
//! Torn down on drop (every process in the namespaces killed, the namespaces and their
//! `/etc/netns` entries removed), and on SIGINT or SIGTERM (Ctrl-C): the first
//! [`Network::new`] of a process makes those tear down every topology of the process before it
//! exits with status 130. Namespaces left by a run that could not clean up (SIGKILL, a power
//! cut) carry their creator's pid in the prefix and are removed by the next [`Network::new`]
//! once that pid is gone.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Once,
};

use tokio::signal::unix::{signal, SignalKind};

/// The private subnet of every topology (each has its own bridge, so they do not meet).
pub const SUBNET: [u8; 3] = [10, 77, 0];
/// The same, as a CIDR block.
pub const SUBNET_CIDR: &str = "10.77.0.0/24";

/// A set of hosts on one bridge.
pub struct Network {
    prefix: String,
    hosts: Vec<(String, Ipv4Addr)>,
}

impl Network {
    /// Creates `hosts` (name, last octet of its address) as namespaces on one bridge. Needs
    /// root (`ip netns`). `tag` names the topology (a few letters).
    pub fn new(tag: &str, hosts: &[(&str, u8)]) -> Result<Self, String> {
        remove_orphans();
        teardown_on_interrupt();
        let prefix = format!("xb{}{tag}", std::process::id());
        let hosts = hosts
            .iter()
            .map(|(name, octet)| {
                ((*name).to_owned(), Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], *octet))
            })
            .collect();
        let network = Self { prefix, hosts };
        network.build()?;
        Ok(network)
    }

    /// Whether this process may make namespaces (root, with `ip` and a kernel that allows it).
    pub fn available() -> bool {
        // One name per call: two tests asking at once must not collide on it.
        static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = format!("xb{}probe{n}", std::process::id());
        let made = ip(&["netns", "add", &probe]).is_ok();
        if made {
            let _ = ip(&["netns", "del", &probe]);
        }
        made
    }

    fn build(&self) -> Result<(), String> {
        let sw = self.ns("sw");
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for (index, (host, addr)) in self.hosts.iter().enumerate() {
            let ns = self.ns(host);
            let port = format!("p{index}");
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // Both ends are made inside the host's namespace, the peer moved to the switch: no
            // interface ever appears in the caller's namespace.
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &sw,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// The namespace of `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// The address of `host`.
    pub fn addr(&self, host: &str) -> Ipv4Addr {
        self.hosts
            .iter()
            .find(|(name, _)| name == host)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("no host {host} in this topology"))
    }

    /// An address on the subnet that no host has (a VIP): `.<octet>`.
    pub fn subnet_addr(octet: u8) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], octet)
    }

    /// `program` to run in `host`'s namespace.
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(host)]).arg(program);
        command
    }

    /// Runs `work` on a thread inside `host`'s namespace (sockets it opens are the host's).
    pub fn run_in<T: Send + 'static>(
        &self,
        host: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = PathBuf::from("/var/run/netns").join(self.ns(host));
        std::thread::spawn(move || {
            enter(&path);
            work()
        })
    }

    /// Writes `/etc/netns/<ns>/hosts` for every host: `ip netns exec` mounts it over
    /// `/etc/hosts`, so `names` (name → address) resolve inside.
    pub fn hosts_file(&self, names: &[(&str, Ipv4Addr)]) {
        let mut text = String::from("127.0.0.1 localhost\n");
        for (host, addr) in &self.hosts {
            text.push_str(&format!("{addr} {host}\n"));
        }
        for (name, addr) in names {
            text.push_str(&format!("{addr} {name}\n"));
        }
        for (host, _) in &self.hosts {
            let dir = PathBuf::from("/etc/netns").join(self.ns(host));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("hosts"), &text).unwrap();
        }
    }

    /// Cuts `host` off the network (its link down): as the machine dying, for everyone else.
    pub fn cut(&self, host: &str) {
        ip(&["-n", &self.ns(host), "link", "set", "eth0", "down"]).unwrap();
    }

    /// Puts `host` back on the network.
    pub fn restore(&self, host: &str) {
        ip(&["-n", &self.ns(host), "link", "set", "eth0", "up"]).unwrap();
    }

    /// Tears everything down now (also done on drop).
    pub fn destroy(&self) {
        for (host, _) in &self.hosts {
            remove(&self.ns(host));
        }
        remove(&self.ns("sw"));
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Kills what runs in `ns`, deletes it and its `/etc/netns` entry.
fn remove(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = ip(&["netns", "del", ns]);
    let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
}

/// Removes the namespaces of topologies whose creating process is gone.
fn remove_orphans() {
    for (name, pid) in namespaces_by_creator() {
        if !PathBuf::from("/proc").join(pid.to_string()).exists() {
            remove(&name);
        }
    }
}

/// Every namespace a topology made, with the pid of the process that made it.
fn namespaces_by_creator() -> Vec<(String, u32)> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let name = line.split_whitespace().next()?;
            let rest = name.strip_prefix("xb")?;
            let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((name.to_owned(), pid.parse().ok()?))
        })
        .collect()
}

/// On SIGINT or SIGTERM, removes every namespace this process made (killing what runs in
/// them) and exits with status 130: a Ctrl-C of a test, the demo or a benchmark leaves no
/// host behind. Installed once per process, by the first [`Network::new`].
fn teardown_on_interrupt() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
            Ok(runtime) => runtime,
            Err(e) => return eprintln!("netns: no teardown on Ctrl-C (runtime: {e})"),
        };
        // Registered before `new` returns, so that a signal from then on is caught.
        let signals = {
            let _context = runtime.enter();
            signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)))
        };
        let (mut interrupt, mut terminate) = match signals {
            Ok(signals) => signals,
            Err(e) => return eprintln!("netns: no teardown on Ctrl-C (signals: {e})"),
        };
        std::thread::spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            });
            eprintln!("netns: interrupted: tearing down this process's hosts");
            let me = std::process::id();
            for (name, _) in namespaces_by_creator().into_iter().filter(|(_, pid)| *pid == me) {
                remove(&name);
            }
            std::process::exit(130);
        });
    });
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &std::path::Path) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
}
