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

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
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
            eprintln!("crossbar: {e:#}");
            ExitCode::FAILURE
        }
    }
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
            println!("configuration OK");
            Ok(0)
        }
        cli::Command::Ca(command) => {
            init_logging("warn");
            ca_cmd::run(command).await
        }
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
