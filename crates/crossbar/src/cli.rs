//! The command line (the architecture's CLI contract).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "crossbar",
    version,
    about = "Load balancer and certificate authority for Puppet fleets"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the roles the config file declares ([ca], [lb], or both).
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and print the effective roles, routes, pools and members.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Certificate authority administration.
    #[command(subcommand)]
    Ca(CaCommand),
    /// The agent-fleet simulator (load generator) and crypto ceilings.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Write the man pages and shell completions (bash, zsh, fish) made from this command
    /// line's definition into a directory (for packaging).
    #[command(hide = true)]
    Docs {
        #[arg(long)]
        out: PathBuf,
    },
    /// A stub compiler (a test double for benchmarks of the LB): canned /puppet/v3 answers.
    StubCompiler(StubArgs),
}

/// `crossbar stub-compiler`: a test double for puppetserver in benchmarks of the LB.
#[derive(Debug, clap::Args)]
pub struct StubArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Wait before answering a catalog request (without --slots).
    #[arg(long, default_value = "0ms")]
    pub catalog_delay: String,
    /// Wait before answering any other request (with --slots: the work it takes at speed 1).
    #[arg(long, default_value = "0ms")]
    pub other_delay: String,
    /// Size of the canned catalog, in KiB.
    #[arg(long, default_value_t = 100)]
    pub catalog_kib: usize,
    /// Model puppetserver's JRuby pool: this many slots; requests beyond them wait inside the
    /// compiler, and catalog compile times are drawn (--compile-median, --compile-sigma,
    /// --slow-share).
    #[arg(long)]
    pub slots: Option<usize>,
    /// With --slots: this compiler's speed (0.5 takes twice as long).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// With --slots: median catalog compile time at speed 1.
    #[arg(long, default_value = "400ms")]
    pub compile_median: String,
    /// With --slots: sigma of the log-normal compile time.
    #[arg(long, default_value_t = 0.6)]
    pub compile_sigma: f64,
    /// With --slots: share of nodes whose environment compiles ten times slower.
    #[arg(long, default_value_t = 0.1)]
    pub slow_share: f64,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Issue agent certificates in bulk from a CA directory (before a benchmark).
    Certs {
        #[arg(long)]
        cadir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        agents: usize,
        #[arg(long, default_value = "ec-p256")]
        key: String,
        #[arg(long, default_value = "agent")]
        prefix: String,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Puppet runs: one connection per run, node (first run), pluginsync, catalog, report.
    Runs {
        #[command(flatten)]
        target: SimTarget,
        #[command(flatten)]
        agents: SimAgents,
        /// Time between an agent's runs (Puppet's runinterval); omit for back-to-back runs.
        #[arg(long)]
        interval: Option<String>,
        /// Spread first runs over the interval (Puppet's splay).
        #[arg(long)]
        splay: bool,
        /// The agents' Puppet: 7, or 8 (which also refreshes the CA certificate and CRL on each
        /// run, without its client certificate, and renews its certificate when due).
        #[arg(long, default_value = "7")]
        puppet: String,
        /// With --puppet 8: the share of runs (0 to 1) that renew their certificate first.
        #[arg(long, default_value_t = 0.0)]
        renew: f64,
        /// Runs started in this first stretch are made but not measured (a steady state: an LB
        /// that has seen the fleet before); --duration follows it.
        #[arg(long, default_value = "0s")]
        warmup: String,
        #[command(flatten)]
        output: SimOutput,
    },
    /// Kept-alive connections sending one request back to back.
    Throughput {
        #[command(flatten)]
        target: SimTarget,
        #[command(flatten)]
        agents: SimAgents,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(
            long,
            default_value = "/puppet/v3/file_metadatas/plugins?recurse=false&environment=production"
        )]
        path: String,
        #[command(flatten)]
        output: SimOutput,
    },
    /// A thundering herd: --agents agents each start one run within --window (after an LB
    /// failover), while --observers kept-alive agents measure what they suffer meanwhile.
    Herd {
        #[command(flatten)]
        target: SimTarget,
        #[command(flatten)]
        agents: SimAgents,
        #[arg(long, default_value = "1s")]
        window: String,
        /// Kept-alive agents (identities after the herd's) sending --path every --observe-every.
        #[arg(long, default_value_t = 16)]
        observers: usize,
        #[arg(long, default_value = "100ms")]
        observe_every: String,
        #[arg(
            long,
            default_value = "/puppet/v3/file_metadatas/plugins?recurse=false&environment=production"
        )]
        path: String,
        #[command(flatten)]
        output: SimOutput,
    },
    /// New connections with full TLS handshakes (client certificates), one request each.
    Handshakes {
        #[command(flatten)]
        target: SimTarget,
        #[command(flatten)]
        agents: SimAgents,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value = "/status/v1/simple")]
        path: String,
        #[command(flatten)]
        output: SimOutput,
    },
    /// Open one connection per agent, send one request, keep them all idle for --duration.
    Hold {
        #[command(flatten)]
        target: SimTarget,
        #[command(flatten)]
        agents: SimAgents,
        #[arg(long, default_value = "/status/v1/simple")]
        path: String,
        #[command(flatten)]
        output: SimOutput,
    },
    /// A bootstrap storm: new agents from CSR to certificate (keys made before the clock).
    Bootstrap {
        #[command(flatten)]
        target: SimTarget,
        #[arg(long)]
        agents: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value = "ec-p256")]
        key: String,
        #[arg(long, default_value = "new")]
        prefix: String,
        #[arg(long, default_value = "600s")]
        duration: String,
        /// How long an agent without its certificate waits before submitting again (Puppet's
        /// waitforcert; 2m by default in Puppet, shorter here so storms end sooner).
        #[arg(long, default_value = "2s")]
        waitforcert: String,
        #[command(flatten)]
        output: SimOutput,
    },
    /// Crypto ceilings: signatures/s for a key type, and in-memory TLS handshakes/s.
    Ceiling {
        #[arg(long, default_value = "rsa-4096")]
        key: String,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value = "5s")]
        duration: String,
        /// For the handshake ceiling: the LB's certificate and key, the CA bundle, the CRL, and
        /// one agent's certificate and key.
        #[arg(long, requires_all = ["tls_key", "ca", "client_cert", "client_key"])]
        tls_cert: Option<PathBuf>,
        #[arg(long)]
        tls_key: Option<PathBuf>,
        #[arg(long)]
        ca: Option<PathBuf>,
        #[arg(long)]
        crl: Option<PathBuf>,
        #[arg(long)]
        client_cert: Option<PathBuf>,
        #[arg(long)]
        client_key: Option<PathBuf>,
        #[arg(long, default_value = "localhost")]
        server_name: String,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// Where simulated agents connect.
#[derive(Debug, Args)]
pub struct SimTarget {
    /// The LB (TLS), as host:port.
    #[arg(long, conflicts_with = "direct")]
    pub lb: Option<String>,
    /// The name the LB's certificate carries.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// The CA bundle that verifies the LB (default: <certs>/ca_crt.pem).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// A backend straight over plain HTTP, as host:port (a baseline).
    #[arg(long)]
    pub direct: Option<String>,
    /// With --direct: send the X-Client-* headers an LB would set.
    #[arg(long)]
    pub identity_headers: bool,
}

/// Which simulated agents take part.
#[derive(Debug, Args)]
pub struct SimAgents {
    /// Directory of `crossbar sim certs`.
    #[arg(long)]
    pub certs: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub agents: usize,
    #[arg(long, default_value = "agent")]
    pub prefix: String,
    /// Allow TLS session resumption (off: every connection is a full handshake).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value = "30s")]
    pub duration: String,
}

/// Where the report goes besides stdout.
#[derive(Debug, Args)]
pub struct SimOutput {
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// A live progress line on stderr.
    #[arg(long)]
    pub progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new CA (key, self-signed certificate, empty CRL, serial, inventory).
    Setup {
        #[arg(long)]
        cadir: PathBuf,
        /// The CA is named after the load balancer: `Puppet CA: <NAME>`.
        #[arg(long)]
        ca_name: String,
        /// rsa-4096 (Puppet's default), rsa-2048, ec-p256 or ec-p384.
        #[arg(long, default_value = "rsa-4096")]
        key: String,
        /// Lifetime of the CA certificate (e.g. 15y).
        #[arg(long, default_value = "15y")]
        ttl: String,
        /// Keep the CA's state in this PostgreSQL database (a libpq-style URL); --cadir then
        /// gets only the CA's certificate and key.
        #[arg(long)]
        database: Option<String>,
    },
    /// Issue a server certificate (e.g. the LB's own) with its key, offline.
    Generate {
        #[arg(long)]
        cadir: PathBuf,
        #[arg(long)]
        certname: String,
        /// Extra DNS names (the certname is always included); IP addresses are allowed.
        #[arg(long, value_delimiter = ',')]
        dns_alt_names: Vec<String>,
        /// Where to write <certname>.pem, <certname>.key and ca_crt.pem.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Name the files <NAME>.pem and <NAME>.key instead (e.g. `lb`, as the packaged
        /// config expects).
        #[arg(long, value_name = "NAME")]
        file_name: Option<String>,
        /// Add pp_cli_auth, so this certificate may use the CA admin API (as puppetserver's own).
        #[arg(long)]
        ca_admin: bool,
        #[arg(long, default_value = "rsa-4096")]
        key: String,
        /// The CA's state is in this PostgreSQL database.
        #[arg(long)]
        database: Option<String>,
    },
    /// List requests (and with --all, certificates).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Sign pending requests.
    Sign {
        #[arg(long, value_delimiter = ',', required_unless_present = "all")]
        certname: Vec<String>,
        #[arg(long, conflicts_with = "certname")]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke certificates.
    Revoke {
        #[arg(long, value_delimiter = ',', required = true)]
        certname: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke and delete certificates.
    Clean {
        #[arg(long, value_delimiter = ',', required = true)]
        certname: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Remove expired certificates (and repeated entries) from the CRL, offline.
    Prune {
        #[command(flatten)]
        target: Target,
    },
    /// Adopt a puppetserver CA directory: copy it into a crossbar CA directory, or with
    /// --database move its state into PostgreSQL (serials kept).
    Import {
        #[arg(long)]
        cadir: PathBuf,
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        database: Option<String>,
    },
    /// Write a database CA in puppetserver's layout (which puppetserver itself can serve).
    Export {
        /// The CA's certificate and key.
        #[arg(long)]
        cadir: PathBuf,
        #[arg(long)]
        database: String,
        /// A new directory for the puppetserver CA.
        #[arg(long)]
        to: PathBuf,
    },
}

/// Offline on a CA directory, or online through a running crossbar with an admin certificate.
#[derive(Debug, Args)]
pub struct Target {
    /// Work on this CA directory directly.
    #[arg(long, conflicts_with = "server")]
    pub cadir: Option<PathBuf>,
    /// Offline: take the CA directory (or database) and the signing policy from this config's
    /// [ca] section.
    #[arg(long, conflicts_with = "server")]
    pub config: Option<PathBuf>,
    /// Offline with --cadir: the CA's state is in this PostgreSQL database.
    #[arg(long, requires = "cadir", conflicts_with = "server")]
    pub database: Option<String>,
    /// Base URL of a running crossbar, e.g. https://puppetlb.example.com:8140.
    #[arg(long, requires_all = ["cert", "key", "cacert"])]
    pub server: Option<String>,
    /// Client certificate with pp_cli_auth or listed in admin_certnames.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The CA bundle that verifies the server.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
}
