//! The seed's topology across hosts, with real pieces, each role on a host of its own (a
//! network namespace, [`crate::netns`]): `client` (real Puppet 7 agents), `lb1` and `lb2`
//! (crossbar `[lb]` and Debian's keepalived holding the VIP), `ca1` and `ca2` (crossbar `[ca]`
//! nodes, active/active on PostgreSQL), `db` (the PostgreSQL primary) and `db2` (its streaming
//! replica), `compiler1` and `compiler2` (real puppetserver 7). The e2e tests, the demo and the
//! benchmarks build it with [`Site::start`].
//!
//! keepalived runs `examples/seed-topology/keepalived.conf` as shipped, with only its example
//! addresses replaced by this subnet's.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    compiler::Compiler,
    fixture::Crossbar,
    netns::Network,
    postgres::Postgres,
    process::ChildGuard,
    puppet::{Agent, Install},
    tls::TlsClient,
    wait,
};

/// The hosts and the last octet of their addresses.
pub const HOSTS: &[(&str, u8)] = &[
    ("client", 100),
    ("lb1", 11),
    ("lb2", 12),
    ("ca1", 21),
    ("ca2", 22),
    ("db", 31),
    ("db2", 32),
    ("compiler1", 41),
    ("compiler2", 42),
];
/// The last octet of the VIP.
const VIP_OCTET: u8 = 50;
/// The agents' port on the LBs, and the LBs' admin port (on each LB host's loopback).
pub const LB_PORT: u16 = 8140;
const ADMIN_PORT: u16 = 8150;
const CA_PORT: u16 = 8141;
/// The name agents use for their server (the VIP), and the CA's name.
pub const SERVER: &str = "puppet";
const LB_NAME: &str = "puppetlb.example.com";
/// The shipped keepalived configuration.
const KEEPALIVED_EXAMPLE: &str = include_str!("../../../examples/seed-topology/keepalived.conf");

/// The running topology. Dropping it stops everything and removes the namespaces.
pub struct Site {
    bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub db: Postgres,
    pub db2: Postgres,
    pub cas: BTreeMap<&'static str, Crossbar>,
    pub lbs: BTreeMap<&'static str, Crossbar>,
    keepalived: BTreeMap<&'static str, ChildGuard>,
    pub compilers: Vec<Compiler>,
    /// Last, so that it is torn down after the processes above.
    pub net: Network,
}

impl Site {
    /// Builds the hosts and starts every role; returns once the VIP answers through an LB.
    /// `log` hears what is happening (the demo prints it).
    pub fn start(bin: &Path, log: &mut dyn FnMut(&str)) -> Result<Self, String> {
        let net = Network::new("s", HOSTS)?;
        let vip = Self::vip();
        net.hosts_file(&[(SERVER, vip), (LB_NAME, vip)]);
        let dir = tempfile::Builder::new()
            .prefix("crossbar-site-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        log("starting two real puppetserver 7 compilers (JVMs; about a minute)");
        let compilers: Vec<Compiler> = ["compiler1", "compiler2"]
            .iter()
            .map(|host| {
                Compiler::start_in(&Install::puppet7().in_netns(&net.ns(host)), dir.path(), host)
            })
            .collect();
        log("PostgreSQL primary on db, its streaming replica on db2");
        let db = Postgres::start_in("db", &net, "db");
        let db2 = db.replica_in("db2", &net, "db2");
        let mut site = Self {
            bin: bin.to_owned(),
            dir,
            db,
            db2,
            cas: BTreeMap::new(),
            lbs: BTreeMap::new(),
            keepalived: BTreeMap::new(),
            compilers,
            net,
        };
        log("the CA in the database (its key on ca1 and ca2 only), the LB's certificate");
        site.setup_ca()?;
        for host in ["ca1", "ca2"] {
            let ca = Crossbar::start_in(
                &site.net,
                host,
                &site.bin,
                site.dir.path(),
                host,
                &site.ca_config(host),
            );
            site.cas.insert(host, ca);
        }
        for compiler in &mut site.compilers {
            compiler.wait_ready();
        }
        log("the LBs, each with keepalived; the VIP goes to one of them");
        for host in ["lb1", "lb2"] {
            site.start_lb(host);
            site.start_keepalived(host)?;
        }
        site.wait_for_vip(Duration::from_secs(60))?;
        Ok(site)
    }

    /// The VIP agents use.
    pub fn vip() -> Ipv4Addr {
        Network::subnet_addr(VIP_OCTET)
    }

    /// Where the files of every host live.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `postgresql://…` naming both database hosts, writes going to whichever is the primary.
    pub fn database_url(&self) -> String {
        format!(
            "postgresql://crossbar:crossbar@{}:{},{}:{}/crossbar?target_session_attrs=read-write",
            self.net.addr("db"),
            self.db.port,
            self.net.addr("db2"),
            self.db2.port
        )
    }

    /// Runs `crossbar args…` in `host`; its stdout, or the error with both streams.
    pub fn crossbar_in(&self, host: &str, args: &[&str]) -> Result<String, String> {
        let out =
            self.net.command(host, &self.bin).args(args).output().map_err(|e| e.to_string())?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(format!("crossbar {args:?} in {host}: {}{}", text(&out.stdout), text(&out.stderr)))
        }
    }

    fn setup_ca(&self) -> Result<(), String> {
        let url = self.database_url();
        let ca1 = self.path("ca1").display().to_string();
        self.crossbar_in(
            "ca1",
            &["ca", "setup", "--database", &url, "--cadir", &ca1, "--ca-name", LB_NAME],
        )?;
        let names = format!(
            "{SERVER},lb1,lb2,{},{},{}",
            Self::vip(),
            self.net.addr("lb1"),
            self.net.addr("lb2")
        );
        let tls = self.path("tls").display().to_string();
        self.crossbar_in(
            "ca1",
            &[
                "ca",
                "generate",
                "--database",
                &url,
                "--cadir",
                &ca1,
                "--certname",
                LB_NAME,
                "--dns-alt-names",
                &names,
                "--out",
                &tls,
                "--ca-admin",
                "--key",
                "ec-p256",
            ],
        )?;
        std::fs::create_dir_all(self.path("ca2")).map_err(|e| e.to_string())?;
        for file in ["ca_crt.pem", "ca_key.pem"] {
            std::fs::copy(self.path("ca1").join(file), self.path("ca2").join(file))
                .map_err(|e| e.to_string())?;
        }
        std::fs::write(self.path("proxy-secret"), "site-lb-secret-0123456789abcdef\n")
            .map_err(|e| e.to_string())
    }

    fn ca_config(&self, host: &str) -> String {
        format!(
            "[ca]\nlisten = \"0.0.0.0:{CA_PORT}\"\ncadir = \"{cadir}\"\ndatabase = \"{url}\"\ndatabase_timeout = \"2s\"\nnode_name = \"{host}\"\nautosign = true\nproxy_secret_file = \"{secret}\"\n",
            cadir = self.path(host).display(),
            url = self.database_url(),
            secret = self.path("proxy-secret").display(),
        )
    }

    fn lb_config(&self, host: &str) -> String {
        let member =
            |h: &str, port: u16| format!("{{ url = \"http://{}:{port}\" }}", self.net.addr(h));
        format!(
            r#"[lb]
listen = "0.0.0.0:{LB_PORT}"
admin_listen = "127.0.0.1:{ADMIN_PORT}"
cert = "{tls}/{LB_NAME}.pem"
key = "{tls}/{LB_NAME}.key"
client_ca = "{tls}/ca_crt.pem"
crl = {{ pool = "ca", refresh = "1s", cache = "{cache}" }}
timeouts = {{ connect = "1s", response = "30s" }}

[lb.pools.ca]
balance = "round-robin"
health = {{ interval = "500ms", timeout = "500ms", rise = 2, fall = 2 }}
proxy_secret_file = "{secret}"
members = [ {ca1}, {ca2} ]

[lb.pools.compilers]
balance = "least-requests"
health = {{ interval = "500ms", timeout = "1s", rise = 2, fall = 2 }}
members = [ {c1}, {c2} ]
"#,
            tls = self.path("tls").display(),
            cache = self.path(&format!("{host}-crl.pem")).display(),
            secret = self.path("proxy-secret").display(),
            ca1 = member("ca1", CA_PORT),
            ca2 = member("ca2", CA_PORT),
            c1 = member("compiler1", self.compilers[0].port),
            c2 = member("compiler2", self.compilers[1].port),
        )
    }

    /// Starts (or starts again) the crossbar LB of `host`.
    pub fn start_lb(&mut self, host: &'static str) {
        let lb = Crossbar::start_in(
            &self.net,
            host,
            &self.bin,
            self.dir.path(),
            host,
            &self.lb_config(host),
        );
        self.lbs.insert(host, lb);
    }

    /// The shipped keepalived configuration for `host`: the example's addresses replaced by
    /// this subnet's (every one must be found, so that the example and the test cannot drift).
    pub fn keepalived_config(&self, host: &str) -> Result<String, String> {
        let (me, peer, priority) = match host {
            "lb1" => ("lb1", "lb2", "150"),
            _ => ("lb2", "lb1", "100"),
        };
        let replacements = [
            ("router_id puppetlb1", format!("router_id {me}")),
            ("priority 150", format!("priority {priority}")),
            ("unicast_src_ip 10.0.0.11", format!("unicast_src_ip {}", self.net.addr(me))),
            ("        10.0.0.12\n", format!("        {}\n", self.net.addr(peer))),
            ("10.0.0.10/24", format!("{}/24", Self::vip())),
        ];
        let mut config = KEEPALIVED_EXAMPLE.to_owned();
        for (from, to) in replacements {
            if !config.contains(from) {
                return Err(format!(
                    "examples/seed-topology/keepalived.conf no longer has {from:?}"
                ));
            }
            config = config.replacen(from, &to, 1);
        }
        Ok(config)
    }

    fn start_keepalived(&mut self, host: &'static str) -> Result<(), String> {
        let conf = self.path(&format!("keepalived-{host}.conf"));
        std::fs::write(&conf, self.keepalived_config(host)?).map_err(|e| e.to_string())?;
        let mut command = self.net.command(host, "keepalived");
        command
            .args(["--dont-fork", "--log-console", "--log-detail", "--vrrp", "--use-file"])
            .arg(&conf)
            .arg("--pid")
            .arg(self.path(&format!("keepalived-{host}.pid")))
            .arg("--vrrp_pid")
            .arg(self.path(&format!("keepalived-{host}-vrrp.pid")));
        let child = ChildGuard::spawn(&format!("keepalived-{host}"), command, self.dir.path());
        self.keepalived.insert(host, child);
        Ok(())
    }

    /// keepalived's log on `host` so far.
    pub fn keepalived_log(&self, host: &str) -> String {
        self.keepalived
            .get(host)
            .map(|k| format!("{}{}", k.stdout(), k.stderr()))
            .unwrap_or_default()
    }

    /// The LB host that holds the VIP now, if one does.
    pub fn vip_holder(&self) -> Option<&'static str> {
        let vip = Self::vip().to_string();
        ["lb1", "lb2"].into_iter().find(|host| {
            std::process::Command::new("ip")
                .args(["-n", &self.net.ns(host), "-4", "-o", "addr", "show", "dev", "eth0"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("inet {vip}/")))
        })
    }

    fn wait_for_vip(&self, timeout: Duration) -> Result<(), String> {
        let started = std::time::Instant::now();
        while started.elapsed() < timeout {
            if self.vip_holder().is_some() && self.probe_once(Self::vip()).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "no LB took the VIP within {timeout:?}; keepalived lb1:\n{}\nkeepalived lb2:\n{}",
            self.keepalived_log("lb1"),
            self.keepalived_log("lb2")
        ))
    }

    /// One anonymous request for the CA certificate to an LB address, from the client host.
    pub fn probe_once(&self, addr: Ipv4Addr) -> Result<u16, String> {
        let client = TlsClient::new(&self.path("tls/ca_crt.pem"), None);
        self.net
            .run_in("client", move || {
                client
                    .request_to(
                        SocketAddr::from((addr, LB_PORT)),
                        "/puppet-ca/v1/certificate/ca",
                        Duration::from_secs(1),
                    )
                    .map(|reply| reply.status)
            })
            .join()
            .map_err(|_| "the probe thread panicked".to_owned())?
    }

    /// A TLS client of the client host with `agent`'s identity (or none).
    pub fn tls_client(&self, agent: Option<&Agent>) -> TlsClient {
        let identity = agent.map(|a| (a.cert(), a.key()));
        TlsClient::new(
            &self.path("tls/ca_crt.pem"),
            identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
    }

    /// A real Puppet 7 agent on the client host, its server the VIP (by name).
    pub fn agent(&self, certname: &str) -> Agent {
        let install = Install::puppet7().in_netns(&self.net.ns("client"));
        Agent::of(&install, &self.path("agents"), certname).with_server(SERVER)
    }

    /// Kills the crossbar LB on `host` (SIGKILL).
    pub fn kill_lb(&mut self, host: &str) {
        if let Some(lb) = self.lbs.get_mut(host) {
            lb.child.kill();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the crossbar LB on `host`.
    pub fn signal_lb(&self, host: &str, signal: &str) {
        if let Some(lb) = self.lbs.get(host) {
            lb.child.signal(signal);
        }
    }

    /// Waits until the VIP is on `host`.
    pub fn wait_vip_on(&self, host: &str, timeout: Duration) {
        wait::until_true(&format!("the VIP on {host}"), timeout, || {
            self.vip_holder() == Some(host)
        });
    }

    /// Promotes the replica on db2 to primary.
    pub fn promote_replica(&self) {
        self.db2.promote();
    }
}
