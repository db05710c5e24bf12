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
        /// Add pp_cli_auth, so this certificate may use the CA admin API (as puppetserver's own).
        #[arg(long)]
        ca_admin: bool,
        #[arg(long, default_value = "rsa-4096")]
        key: String,
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
    /// Copy a puppetserver CA directory into a crossbar CA directory.
    Import {
        #[arg(long)]
        cadir: PathBuf,
        #[arg(long)]
        from: PathBuf,
    },
}

/// Offline on a CA directory, or online through a running crossbar with an admin certificate.
#[derive(Debug, Args)]
pub struct Target {
    /// Work on this CA directory directly.
    #[arg(long, conflicts_with = "server")]
    pub cadir: Option<PathBuf>,
    /// Offline: take the CA directory and the signing policy from this config's [ca] section.
    #[arg(long, conflicts_with = "server")]
    pub config: Option<PathBuf>,
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
