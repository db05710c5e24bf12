//! `crossbar-site`: the seed's topology across hosts (network namespaces), with real Puppet
//! pieces, shown: what `scripts/demo.sh` runs. It builds the site of `testkit::site`, bootstraps
//! real agents through the VIP, makes every single machine fail in turn while agents run, and
//! prints which compiler served each run and what each failure cost.
//!
//! ```text
//! crossbar-site --crossbar target/release/crossbar [--agents 2] [--wait]
//! ```
//!
//! Needs root (network namespaces). Everything is torn down when it exits.

#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, IsTerminal, Write},
    path::PathBuf,
    time::Instant,
};

use testkit::{
    failover,
    netns::Network,
    puppet::{compiled_by, output_text},
    site::{Site, LB_PORT},
};

struct Args {
    crossbar: PathBuf,
    agents: usize,
    wait: bool,
}

fn args() -> Result<Args, String> {
    let mut args =
        Args { crossbar: PathBuf::from("target/release/crossbar"), agents: 2, wait: false };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--crossbar" => args.crossbar = argv.next().ok_or("--crossbar needs a path")?.into(),
            "--agents" => {
                args.agents =
                    argv.next().and_then(|n| n.parse().ok()).ok_or("--agents needs a number")?;
            }
            "--wait" => args.wait = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("crossbar-site: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if !Network::available() {
        eprintln!("crossbar-site: network namespaces cannot be made here (run as root)");
        return std::process::ExitCode::from(3);
    }
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crossbar-site: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    say("\n== the hosts: client, lb1, lb2 (VIP 10.77.0.50), ca1, ca2, db, db2, compiler1, compiler2");
    let mut site = Site::start(&args.crossbar, &mut |m| say(&format!("   {m}")))?;
    say(&format!(
        "   up in {:.0} s; the VIP is on {}",
        started.elapsed().as_secs_f64(),
        site.vip_holder().unwrap_or("no LB")
    ));

    say("\n== real Puppet 7 agents on the client host bootstrap through the VIP and run");
    let agents: Vec<_> =
        (1..=args.agents).map(|i| site.agent(&format!("agent{i}.example.com"))).collect();
    for agent in &agents {
        let out = agent.bootstrap(LB_PORT);
        if !out.status.success() {
            return Err(format!("{} could not bootstrap: {}", agent.certname, output_text(&out)));
        }
        let run = agent.run(LB_PORT);
        say(&format!(
            "   {}: certificate signed by the CA nodes (state in PostgreSQL); run {} on {}",
            agent.certname,
            if matches!(run.status.code(), Some(0 | 2)) { "succeeded" } else { "FAILED" },
            compiled_by(&run).unwrap_or_else(|| "?".into())
        ));
    }

    say("\n== every single machine fails in turn, while the agents run back to back");
    let loops_started = Instant::now();
    let report = failover::run_all(&mut site, agents, &mut |m| say(&format!("   {m}")));
    say("\n== every run (which compiler served it) and every failure, in time order");
    say(&report.timeline(loops_started));
    say("== what each failure cost (time to the first good request through the VIP; runs)");
    say(&failover::table(&report.outcomes));
    let missed: Vec<_> =
        report.outcomes.iter().filter(|o| o.failed_after > 0).map(|o| o.event.clone()).collect();

    say("== a revocation made on ca1 (offline CLI on the database), enforced by both LBs");
    let revoked = site.agent("agent1.example.com");
    for (lb, after) in failover::revoke_and_measure(&site, &revoked)? {
        match after {
            Some(d) => say(&format!(
                "   {lb} refuses agent1 at the handshake {:.2} s after the revocation",
                d.as_secs_f64()
            )),
            None => say(&format!("   {lb} still accepts agent1 after 30 s")),
        }
    }

    if args.wait && std::io::stdin().is_terminal() {
        say(&format!(
            "\nThe site is up (files in {}; hosts are `ip netns` {}-*). Press Enter to tear it down.",
            site.dir.path().display(),
            site.net.ns("client").trim_end_matches("-client")
        ));
        let _ = std::io::stdin().lock().lines().next();
    }
    if missed.is_empty() {
        Ok(())
    } else {
        Err(format!("runs failed after: {}", missed.join(", ")))
    }
}
