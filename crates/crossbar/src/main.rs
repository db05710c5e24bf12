//! The `crossbar` binary: a thin shell over the `ca`, `lb` and `pki` crates.
//!
//! It parses the command line and the config file, sets up logging, binds listeners, handles
//! signals, and prints results. Everything else lives in the library crates.

// A binary exports nothing, so `pub` here only means "visible in this crate".
#![allow(unreachable_pub)]

mod ca_cmd;
mod check;
mod cli;
mod client;
mod config;
mod serve;
mod sim_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("crossbar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("crossbar: {}", chain_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the error already
/// shows (typed errors often print their source themselves).
fn chain_text(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

async fn run(command: cli::Command) -> anyhow::Result<u8> {
    match command {
        cli::Command::Serve { config: path } => {
            let config = config::load(&path)?;
            init_logging(&config.log_level);
            serve::run(&path, config).await?;
            Ok(0)
        }
        cli::Command::Check { config } => {
            let config = config::load(&config)?;
            check::print(&config);
            // Blocking work (files, and a database client that blocks): not on the runtime.
            tokio::task::spawn_blocking(move || check::load(&config)).await??;
            println!("configuration OK");
            Ok(0)
        }
        cli::Command::Ca(command) => {
            init_logging("warn");
            ca_cmd::run(command).await
        }
        cli::Command::Sim(command) => {
            init_logging("warn");
            sim_cmd::run(command).await
        }
        cli::Command::StubCompiler { listen, catalog_delay, other_delay, catalog_kib } => {
            init_logging("warn");
            sim_cmd::stub(listen, &catalog_delay, &other_delay, catalog_kib).await
        }
    }
}

/// Raises the soft limit on open files to the hard limit: an LB holding 10,000 agents, or a
/// simulator being them, needs more than the usual 1,024 (nginx's `worker_rlimit_nofile`).
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: log files and journals get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}
