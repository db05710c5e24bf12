//! `crossbar sim …` and `crossbar stub-compiler`: the simulator's command line.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{anyhow, bail, Context};
use rustls::pki_types::ServerName;
use sim::{
    client::{self, Target},
    identity,
    scenario::{self, Common, Schedule},
    stats::Report,
};

use crate::cli::{SimAgents, SimCommand, SimOutput, SimTarget, StubArgs};

pub async fn run(command: SimCommand) -> anyhow::Result<u8> {
    match command {
        SimCommand::Certs { cadir, out, agents, key, prefix, threads } => {
            let key = key.parse().with_context(|| format!("--key {key:?}"))?;
            let issued = tokio::task::spawn_blocking(move || {
                identity::issue(&cadir, &out, &prefix, agents, key, threads)
            })
            .await??;
            println!("issued {issued} agent certificates");
            Ok(0)
        }
        SimCommand::Runs { target, agents, interval, splay, puppet, renew, warmup, output } => {
            let schedule = match interval {
                Some(every) => Schedule::Interval { every: duration("--interval", &every)?, splay },
                None => Schedule::BackToBack,
            };
            let generation =
                puppet.parse().map_err(|e: String| anyhow::anyhow!("--puppet: {e}"))?;
            if !(0.0..=1.0).contains(&renew) {
                anyhow::bail!("--renew {renew}: a fraction of runs, from 0 to 1");
            }
            let kind = scenario::Agents {
                generation,
                renew_fraction: renew,
                warmup: duration("--warmup", &warmup)?,
            };
            let (common, identities) = prepare(&target, &agents, output.progress)?;
            finish(&scenario::runs(common, identities, schedule, kind).await, &output)
        }
        SimCommand::Throughput { target, agents, connections, path, output } => {
            let (common, identities) = prepare(&target, &agents, output.progress)?;
            let step = sim::agent::Step::get(sim::agent::Kind::Fixed, path);
            finish(&scenario::throughput(common, identities, connections, step).await, &output)
        }
        SimCommand::Herd { target, mut agents, window, observers, observe_every, path, output } => {
            let window = duration("--window", &window)?;
            let every = duration("--observe-every", &observe_every)?;
            let herd_size = agents.agents;
            agents.agents += observers;
            let (common, mut identities) = prepare(&target, &agents, output.progress)?;
            let watching = identities.split_off(herd_size.min(identities.len()));
            let report = scenario::herd(common, identities, window, watching, every, &path).await;
            finish(&report, &output)
        }
        SimCommand::Handshakes { target, agents, concurrency, path, output } => {
            let (common, identities) = prepare(&target, &agents, output.progress)?;
            finish(&scenario::handshakes(common, identities, concurrency, &path).await, &output)
        }
        SimCommand::Hold { target, agents, path, output } => {
            let (common, identities) = prepare(&target, &agents, output.progress)?;
            finish(&scenario::hold(common, identities, &path).await, &output)
        }
        SimCommand::Bootstrap {
            target,
            agents,
            concurrency,
            key,
            prefix,
            duration: limit,
            waitforcert,
            output,
        } => {
            let key = key.parse().with_context(|| format!("--key {key:?}"))?;
            let wait_for_cert = duration("--waitforcert", &waitforcert)?;
            let common = Common {
                target: target_of(&target, None)?,
                duration: duration("--duration", &limit)?,
                progress: output.progress,
            };
            eprintln!("making {agents} keys and CSRs before the clock starts…");
            let new =
                tokio::task::spawn_blocking(move || identity::new_agents(&prefix, agents, key, 2))
                    .await??;
            finish(&scenario::bootstrap(common, new, concurrency, wait_for_cert).await, &output)
        }
        SimCommand::Ceiling {
            key,
            threads,
            duration: span,
            tls_cert,
            tls_key,
            ca,
            crl,
            client_cert,
            client_key,
            server_name,
            json,
        } => {
            let key = key.parse().with_context(|| format!("--key {key:?}"))?;
            let span = duration("--duration", &span)?;
            let mut rates = tokio::task::spawn_blocking(move || {
                let mut rates = sim::ceiling::signatures(key, threads, span)?;
                rates.extend(sim::ceiling::signatures(key, 1, span)?);
                rates.extend(sim::ceiling::handshake_operations(span)?);
                Ok::<_, String>(rates)
            })
            .await?
            .map_err(|e| anyhow!(e))?;
            if let (Some(cert), Some(key), Some(ca), Some(client_cert), Some(client_key)) =
                (tls_cert, tls_key, ca, client_cert, client_key)
            {
                let material = sim::ceiling::HandshakeMaterial {
                    server_chain: certs(&cert)?,
                    server_key: private_key(&key)?,
                    ca_bundle: certs(&ca)?,
                    crls: match &crl {
                        Some(path) => crls(path)?,
                        None => Vec::new(),
                    },
                    client_chain: certs(&client_cert)?,
                    client_key: private_key(&client_key)?,
                    server_name,
                };
                rates.push(
                    tokio::task::spawn_blocking(move || {
                        sim::ceiling::handshakes(material, threads, span)
                    })
                    .await?
                    .map_err(|e| anyhow!(e))?,
                );
            }
            for rate in &rates {
                println!("{:>12.1}/s  {} ({} threads)", rate.per_second, rate.what, rate.threads);
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&rates)?)
                    .with_context(|| format!("--json {}", path.display()))?;
            }
            Ok(0)
        }
    }
}

/// `crossbar stub-compiler`: serves until SIGTERM/SIGINT.
pub async fn stub(args: StubArgs) -> anyhow::Result<u8> {
    let jruby = match args.slots {
        None => None,
        Some(0) => bail!("--slots 0: a compiler needs at least one JRuby slot"),
        Some(slots) => {
            if !(args.speed > 0.0 && args.speed.is_finite()) {
                bail!("--speed {}: a positive factor (1 is normal, 0.5 half speed)", args.speed);
            }
            if !(0.0..=1.0).contains(&args.slow_share) {
                bail!("--slow-share {}: a share of nodes, from 0 to 1", args.slow_share);
            }
            if !(0.0..=3.0).contains(&args.compile_sigma) {
                bail!("--compile-sigma {}: from 0 to 3", args.compile_sigma);
            }
            Some(sim::stub::JrubyModel {
                slots,
                speed: args.speed,
                compile_median: duration("--compile-median", &args.compile_median)?,
                compile_sigma: args.compile_sigma,
                slow_share: args.slow_share,
            })
        }
    };
    let settings = sim::stub::StubSettings {
        catalog_delay: duration("--catalog-delay", &args.catalog_delay)?,
        other_delay: duration("--other-delay", &args.other_delay)?,
        catalog_bytes: args.catalog_kib * 1024,
        jruby,
    };
    let listen = args.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("--listen {listen}: cannot bind"))?;
    println!("stub compiler (a test double) listening on http://{}", listener.local_addr()?);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    sim::stub::serve(listener, settings, crate::serve::stop_signal()).await;
    Ok(0)
}

fn prepare(
    target: &SimTarget,
    agents: &SimAgents,
    progress: bool,
) -> anyhow::Result<(Common, Vec<identity::Identity>)> {
    let common = Common {
        target: target_of(target, agents.certs.as_deref())?,
        duration: duration("--duration", &agents.duration)?,
        progress,
    };
    let identities = match (&agents.certs, &common.target) {
        (Some(dir), Target::Tls { roots, .. }) => {
            identity::load(dir, &agents.prefix, agents.agents, roots, agents.resume)?
        }
        (Some(dir), Target::Plain { .. }) => {
            let roots = client::roots(&dir.join("ca_crt.pem"))?;
            identity::load(dir, &agents.prefix, agents.agents, &roots, agents.resume)?
        }
        (None, Target::Plain { .. }) => Vec::new(),
        (None, Target::Tls { .. }) => {
            bail!("--lb needs --certs (agent identities from `crossbar sim certs`)")
        }
    };
    Ok((common, identities))
}

fn target_of(target: &SimTarget, certs: Option<&Path>) -> anyhow::Result<Target> {
    match (&target.lb, &target.direct) {
        (Some(lb), None) => {
            let bundle = match (&target.cacert, certs) {
                (Some(path), _) => path.clone(),
                (None, Some(dir)) => dir.join("ca_crt.pem"),
                (None, None) => bail!("--lb needs --cacert (or --certs with a ca_crt.pem)"),
            };
            let roots = client::roots(&bundle)?;
            let server_name = ServerName::try_from(target.server_name.clone())
                .map_err(|e| anyhow!("--server-name: {e}"))?;
            Ok(Target::Tls { addr: address("--lb", lb)?, server_name, roots })
        }
        (None, Some(direct)) => Ok(Target::Plain {
            addr: address("--direct", direct)?,
            identity_headers: target.identity_headers,
        }),
        _ => bail!("give --lb HOST:PORT or --direct HOST:PORT"),
    }
}

fn address(flag: &str, text: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .with_context(|| format!("{flag} {text:?}"))?
        .next()
        .ok_or_else(|| anyhow!("{flag} {text:?}: no address"))
}

fn duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    pki::timefmt::parse_duration(text).with_context(|| format!("{flag} {text:?}"))
}

fn finish(report: &Report, output: &SimOutput) -> anyhow::Result<u8> {
    if output.progress {
        eprintln!();
    }
    let markdown = report.to_markdown();
    println!("{markdown}");
    if let Some(path) = &output.json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("--json {}", path.display()))?;
    }
    if let Some(path) = &output.markdown {
        std::fs::write(path, markdown).with_context(|| format!("--markdown {}", path.display()))?;
    }
    Ok(0)
}

fn certs(path: &Path) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    Ok(pki::pemfile::blocks(&pem, "CERTIFICATE")
        .with_context(|| format!("{}", path.display()))?
        .into_iter()
        .map(Into::into)
        .collect())
}

fn crls(
    path: &Path,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    Ok(pki::pemfile::blocks(&pem, "X509 CRL")
        .with_context(|| format!("{}", path.display()))?
        .into_iter()
        .map(Into::into)
        .collect())
}

fn private_key(path: &Path) -> anyhow::Result<rustls::pki_types::PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    let der =
        pki::pemfile::single_block(&pem, &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"])
            .with_context(|| format!("{}", path.display()))?;
    rustls::pki_types::PrivateKeyDer::try_from(der).map_err(|e| anyhow!("{}: {e}", path.display()))
}
