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
mod docs;
mod serve;
mod sim_cmd;
mod systemd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    raise_fd_limit();
    // Before any thread starts: taking the sockets edits the environment.
    let activated = match &cli.command {
        cli::Command::Serve { .. } => systemd::Activated::from_env(),
        _ => systemd::Activated::none(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("crossbar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, activated)) {
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

async fn run(command: cli::Command, activated: systemd::Activated) -> anyhow::Result<u8> {
    match command {
        cli::Command::Serve { config: path } => {
            let config = config::load(&path)?;
            init_logging(&config.log_level, config.log_format);
            serve::run(&path, config, activated).await?;
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
            init_logging("warn", config::LogFormat::Text);
            ca_cmd::run(command).await
        }
        cli::Command::Sim(command) => {
            init_logging("warn", config::LogFormat::Text);
            sim_cmd::run(command).await
        }
        cli::Command::Docs { out } => {
            docs::write(&out)?;
            println!("man pages and completions written under {}", out.display());
            Ok(0)
        }
        cli::Command::StubCompiler(args) => {
            init_logging("warn", config::LogFormat::Text);
            sim_cmd::stub(args).await
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

/// Logs to stderr (the journal under systemd): text, or one JSON object per line with the
/// event's fields at the top level, its target (`crossbar::access`, `crossbar::audit`, …) and an
/// RFC 3339 UTC timestamp.
fn init_logging(default: &str, format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        config::LogFormat::Json => {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .init();
        }
        config::LogFormat::Text => {
            // Colour only on a terminal: log files and journals get plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).with_target(false).init();
        }
    }
}
