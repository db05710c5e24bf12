//! The simulations: agent runs, fixed-request throughput, full TLS handshakes, idle
//! connections held open, and a bootstrap storm. Each returns a [`Report`].

use std::{
    io::Write,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use http::Method;
use tokio::{sync::Semaphore, task::JoinSet, time::sleep_until};

use crate::{
    agent::{self, Kind, Step},
    client::{self, Answer, Conn, Target},
    identity::{Identity, NewAgent},
    stats::{Report, Stats},
};

/// What every scenario shares.
#[derive(Clone)]
pub struct Common {
    pub target: Target,
    pub duration: Duration,
    /// A live progress line on stderr.
    pub progress: bool,
}

/// When simulated agents run.
#[derive(Debug, Clone, Copy)]
pub enum Schedule {
    /// Each agent starts its next run as soon as the last one ends.
    BackToBack,
    /// Every `every`; with `splay`, each agent's first run is at its own point of the first
    /// interval (Puppet's `splay`; from its certname, the same for every LB measured), else
    /// all start at once.
    Interval { every: Duration, splay: bool },
}

/// Most times one request follows `Retry-After` before it counts as failed (Puppet: 100).
const MAX_RETRIES: u32 = 100;

/// What the simulated agents are: Puppet 7 or 8, and for Puppet 8 the share of runs that
/// renew the agent's certificate (those of agents within `hostcert_renewal_interval` of their
/// certificate's end; about 1 in 60 a day in a fleet of 5-year certificates).
#[derive(Debug, Clone, Copy, Default)]
pub struct Agents {
    pub generation: agent::Generation,
    pub renew_fraction: f64,
    /// Runs started before this much time has passed are made but not measured.
    pub warmup: Duration,
}

/// Agents doing Puppet runs: one connection per run (a full TLS handshake), the run's requests
/// on it, closed at the end, as a Puppet agent does (a Puppet 8 agent first refreshes the CA
/// certificate and CRL on a connection without its certificate). No run starts after
/// `duration`; runs under way then may take as long again to end (so the last runs of an
/// overloaded fleet are measured, not cut off).
pub async fn runs(
    common: Common,
    agents: Vec<Identity>,
    schedule: Schedule,
    kind: Agents,
) -> Report {
    let warm = Arc::new(Stats::new());
    let start = tokio::time::Instant::now();
    let measured_from = start + kind.warmup;
    let deadline = measured_from + common.duration;
    let mut tasks = JoinSet::new();
    let agent_count = agents.len();
    let finish_by = deadline + common.duration;
    let stats = {
        // The measured statistics start with the measured stretch.
        let warm_progress = progress(&warm, common.progress && !kind.warmup.is_zero());
        let stats_at = Arc::new(tokio::sync::OnceCell::new());
        for agent in agents {
            let (warm, target, stats_at) = (warm.clone(), common.target.clone(), stats_at.clone());
            let clock = Clock { measured_from, deadline, finish_by };
            tasks.spawn(async move {
                agent_loop(&warm, &stats_at, &target, &agent, schedule, kind, clock).await
            });
        }
        tokio::time::sleep_until(measured_from).await;
        warm_progress.abort();
        stats_at.get_or_init(|| async { Arc::new(Stats::new()) }).await.clone()
    };
    let progress = progress(&stats, common.progress);
    while tasks.join_next().await.is_some() {}
    progress.abort();
    stats.report("runs", serde_json::json!({ "agents": agent_count, "schedule": format!("{schedule:?}"), "puppet": kind.generation.version(), "renew_fraction": kind.renew_fraction, "duration_s": common.duration.as_secs_f64(), "warmup_s": kind.warmup.as_secs_f64() }))
}

/// When a `runs` simulation measures: runs started from `measured_from` until `deadline` are
/// measured; any run under way may go on until `finish_by`.
#[derive(Debug, Clone, Copy)]
struct Clock {
    measured_from: tokio::time::Instant,
    deadline: tokio::time::Instant,
    finish_by: tokio::time::Instant,
}

async fn agent_loop(
    warm: &Stats,
    measured: &tokio::sync::OnceCell<Arc<Stats>>,
    target: &Target,
    agent: &Identity,
    schedule: Schedule,
    kind: Agents,
    clock: Clock,
) {
    let report = agent::report_json(&agent.certname);
    let mut next = tokio::time::Instant::now();
    if let Schedule::Interval { every, splay: true } = schedule {
        next += every.mul_f64(agent::splay_fraction(&agent.certname));
    }
    let mut first = true;
    let mut run_number = 0;
    loop {
        if next >= clock.deadline {
            return;
        }
        sleep_until(next).await;
        let started = tokio::time::Instant::now();
        let stats: &Stats = if started >= clock.measured_from {
            measured.get_or_init(|| async { Arc::new(Stats::new()) }).await
        } else {
            warm
        };
        let facts = agent::catalog_form(&agent.certname);
        let renew = fastrand::f64() < kind.renew_fraction;
        let mut plan = agent::plan(kind.generation, &agent.certname, first, renew, &facts, &report);
        plan.number(run_number);
        run_number += 1;
        let ok = one_run(stats, target, agent, &plan, clock.finish_by).await;
        stats.run_done(started.elapsed(), ok);
        first = false;
        next = match schedule {
            Schedule::BackToBack => tokio::time::Instant::now(),
            Schedule::Interval { every, .. } => started + every,
        };
    }
}

/// A thundering herd: every agent of `agents` starts one run at a random moment of `window`
/// (as after an LB failover or a network blip), while `observers` — agents already connected,
/// kept alive — send `path` every `observe_every` and measure what they suffer meanwhile (the
/// `request` kind's latency). The report's `completions_s` is the herd's timeline.
pub async fn herd(
    common: Common,
    agents: Vec<Identity>,
    window: Duration,
    observers: Vec<Identity>,
    observe_every: Duration,
    path: &str,
) -> Report {
    let stats = Arc::new(Stats::new());
    let deadline = tokio::time::Instant::now() + common.duration;
    let progress = progress(&stats, common.progress);
    let herd_size = agents.len();
    let done = Arc::new(tokio::sync::Notify::new());
    let mut watchers = JoinSet::new();
    let observer_count = observers.len();
    for observer in observers {
        let (stats, target, done) = (stats.clone(), common.target.clone(), done.clone());
        let step = Step::get(Kind::Fixed, path);
        watchers.spawn(async move {
            let finished = done.notified();
            tokio::pin!(finished);
            tokio::select! {
                () = &mut finished => {}
                () = observe(&stats, &target, &observer, &step, observe_every, deadline) => {}
            }
        });
    }
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for agent in agents {
        let (stats, target) = (stats.clone(), common.target.clone());
        let at = started + window.mul_f64(fastrand::f64());
        tasks.spawn(async move {
            sleep_until(at).await;
            let facts = agent::catalog_form(&agent.certname);
            let report = agent::report_json(&agent.certname);
            let plan = agent::plan(
                agent::Generation::default(),
                &agent.certname,
                false,
                false,
                &facts,
                &report,
            );
            let begun = Instant::now();
            let ok = one_run(&stats, &target, &agent, &plan, deadline).await;
            stats.run_done(begun.elapsed(), ok);
        });
    }
    while tasks.join_next().await.is_some() {}
    done.notify_waiters();
    while watchers.join_next().await.is_some() {}
    progress.abort();
    stats.report("herd", serde_json::json!({ "agents": herd_size, "window_s": window.as_secs_f64(), "observers": observer_count, "observe_every_ms": observe_every.as_millis() as u64, "path": path, "limit_s": common.duration.as_secs_f64() }))
}

/// One kept-alive agent sending `step` every `every` until `deadline`, reconnecting if the
/// connection drops.
async fn observe(
    stats: &Stats,
    target: &Target,
    agent: &Identity,
    step: &Step,
    every: Duration,
    deadline: tokio::time::Instant,
) {
    let mut next = tokio::time::Instant::now();
    while next < deadline {
        let Some(mut conn) = connect(stats, target, Some(&agent.config), &agent.certname).await
        else {
            next += every;
            sleep_until(next).await;
            continue;
        };
        while next < deadline {
            sleep_until(next).await;
            next += every;
            let started = Instant::now();
            match conn.send(step).await {
                Ok(answer) if answer.status.is_success() => stats.ok(step.kind, started.elapsed()),
                Ok(answer) => {
                    stats.failed(step.kind, &format!("status {}", answer.status.as_u16()))
                }
                Err(e) => {
                    stats.failed(step.kind, &first_words(&e.to_string()));
                    break;
                }
            }
        }
    }
}

async fn one_run(
    stats: &Stats,
    target: &Target,
    agent: &Identity,
    plan: &agent::RunPlan,
    deadline: tokio::time::Instant,
) -> bool {
    if !plan.refresh.is_empty() {
        // Puppet 8 refreshes with its CA context alone: no client certificate.
        let Some(mut conn) = connect(stats, target, None, &agent.certname).await else {
            return false;
        };
        for step in &plan.refresh {
            if !send_with_retry(stats, &mut conn, step, deadline).await {
                return false;
            }
        }
    }
    let Some(mut conn) = connect(stats, target, Some(&agent.config), &agent.certname).await else {
        return false;
    };
    for step in &plan.steps {
        if !send_with_retry(stats, &mut conn, step, deadline).await {
            return false;
        }
    }
    true
}

async fn connect(
    stats: &Stats,
    target: &Target,
    config: Option<&Arc<rustls::ClientConfig>>,
    certname: &str,
) -> Option<Conn> {
    match client::connect(target, config, certname).await {
        Ok((conn, took)) => {
            if matches!(target, Target::Tls { .. }) {
                stats.handshake(took);
            }
            Some(conn)
        }
        Err(e) => {
            stats.failed(Kind::Status, &format!("connect: {}", first_words(&e.to_string())));
            None
        }
    }
}

/// Sends a step, sleeping and resending on 503/429 with `Retry-After` as agents do. Returns
/// whether it finally succeeded.
async fn send_with_retry(
    stats: &Stats,
    conn: &mut Conn,
    step: &Step,
    deadline: tokio::time::Instant,
) -> bool {
    for _ in 0..MAX_RETRIES {
        let started = Instant::now();
        match conn.send(step).await {
            Ok(Answer { status, .. }) if step.succeeded(status) => {
                stats.ok(step.kind, started.elapsed());
                return true;
            }
            Ok(Answer { status, retry_after: Some(seconds), .. })
                if status.as_u16() == 503 || status.as_u16() == 429 =>
            {
                stats.failed(
                    step.kind,
                    &format!("status {} with Retry-After (retried)", status.as_u16()),
                );
                let wake = tokio::time::Instant::now() + Duration::from_secs(seconds);
                if wake >= deadline {
                    return false;
                }
                sleep_until(wake).await;
            }
            Ok(Answer { status, .. }) => {
                stats.failed(step.kind, &format!("status {}", status.as_u16()));
                return false;
            }
            Err(e) => {
                stats.failed(step.kind, &first_words(&e.to_string()));
                return false;
            }
        }
    }
    false
}

/// `connections` kept-alive connections each sending `step` back to back.
pub async fn throughput(
    common: Common,
    agents: Vec<Identity>,
    connections: usize,
    step: Step,
) -> Report {
    let stats = Arc::new(Stats::new());
    let deadline = tokio::time::Instant::now() + common.duration;
    let progress = progress(&stats, common.progress);
    let agents = Arc::new(agents);
    let mut tasks = JoinSet::new();
    for i in 0..connections {
        let (stats, target, agents, step) =
            (stats.clone(), common.target.clone(), agents.clone(), step.clone());
        tasks.spawn(async move {
            let identity = agents.get(i % agents.len().max(1));
            let config = identity.map(|a| &a.config);
            let certname = identity.map_or("anonymous", |a| a.certname.as_str());
            while tokio::time::Instant::now() < deadline {
                let Some(mut conn) = connect(&stats, &target, config, certname).await else {
                    continue;
                };
                while tokio::time::Instant::now() < deadline {
                    let started = Instant::now();
                    match conn.send(&step).await {
                        Ok(answer) if answer.status.is_success() => {
                            stats.ok(step.kind, started.elapsed())
                        }
                        Ok(answer) => {
                            stats.failed(step.kind, &format!("status {}", answer.status.as_u16()))
                        }
                        Err(e) => {
                            stats.failed(step.kind, &first_words(&e.to_string()));
                            break;
                        }
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    progress.abort();
    stats.report("throughput", serde_json::json!({ "connections": connections, "path": step.path, "duration_s": common.duration.as_secs_f64() }))
}

/// `concurrency` loops of: new connection, full TLS handshake with a client certificate, one
/// small request, close.
pub async fn handshakes(
    common: Common,
    agents: Vec<Identity>,
    concurrency: usize,
    path: &str,
) -> Report {
    let stats = Arc::new(Stats::new());
    let deadline = tokio::time::Instant::now() + common.duration;
    let progress = progress(&stats, common.progress);
    let agents = Arc::new(agents);
    let step = Step::get(Kind::Status, path);
    let mut tasks = JoinSet::new();
    for worker in 0..concurrency {
        let (stats, target, agents, step) =
            (stats.clone(), common.target.clone(), agents.clone(), step.clone());
        tasks.spawn(async move {
            let mut i = worker;
            while tokio::time::Instant::now() < deadline {
                let agent = agents.get(i % agents.len().max(1));
                i += concurrency;
                let Some(mut conn) = connect(
                    &stats,
                    &target,
                    agent.map(|a| &a.config),
                    agent.map_or("anonymous", |a| a.certname.as_str()),
                )
                .await
                else {
                    continue;
                };
                let started = Instant::now();
                match conn.send(&step).await {
                    Ok(answer) if answer.status.is_success() => {
                        stats.ok(Kind::Status, started.elapsed())
                    }
                    Ok(answer) => {
                        stats.failed(Kind::Status, &format!("status {}", answer.status.as_u16()))
                    }
                    Err(e) => stats.failed(Kind::Status, &first_words(&e.to_string())),
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    progress.abort();
    stats.report("handshakes", serde_json::json!({ "concurrency": concurrency, "path": path, "duration_s": common.duration.as_secs_f64() }))
}

/// Every agent connects and sends one request, then keeps its connection idle until `duration`
/// ends. Prints `holding N connections` on stdout once all are open (what a memory measurement
/// waits for).
pub async fn hold(common: Common, agents: Vec<Identity>, path: &str) -> Report {
    let stats = Arc::new(Stats::new());
    let progress = progress(&stats, common.progress);
    let step = Step::get(Kind::Status, path);
    // Open connections a few hundred at a time, so the listen backlog is not overrun.
    let opening = Arc::new(Semaphore::new(256));
    let mut tasks = JoinSet::new();
    let count = agents.len();
    for agent in agents {
        let (stats, target, step, opening) =
            (stats.clone(), common.target.clone(), step.clone(), opening.clone());
        tasks.spawn(async move {
            let permit = opening.acquire_owned().await.ok()?;
            let mut conn = connect(&stats, &target, Some(&agent.config), &agent.certname).await?;
            let started = Instant::now();
            let answer = conn.send(&step).await;
            drop(permit);
            match answer {
                Ok(a) if a.status.is_success() => stats.ok(Kind::Status, started.elapsed()),
                Ok(a) => stats.failed(Kind::Status, &format!("status {}", a.status.as_u16())),
                Err(e) => stats.failed(Kind::Status, &first_words(&e.to_string())),
            }
            Some(conn)
        });
    }
    let mut held = Vec::with_capacity(count);
    while let Some(result) = tasks.join_next().await {
        if let Ok(Some(conn)) = result {
            held.push(conn);
        }
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "holding {} connections", held.len());
        let _ = out.flush();
    }
    tokio::time::sleep(common.duration).await;
    progress.abort();
    let report = stats.report("hold", serde_json::json!({ "agents": count, "held": held.len(), "held_for_s": common.duration.as_secs_f64() }));
    drop(held);
    report
}

/// New agents from CSR to signed certificate through the target, `concurrency` at a time: an
/// anonymous TLS connection (the server verified), `PUT certificate_request`, `GET
/// certificate`. Keys and CSRs were made before the clock started.
pub async fn bootstrap(
    common: Common,
    agents: Vec<NewAgent>,
    concurrency: usize,
    wait_for_cert: Duration,
) -> Report {
    let stats = Arc::new(Stats::new());
    let deadline = tokio::time::Instant::now() + common.duration;
    let progress = progress(&stats, common.progress);
    let count = agents.len();
    let queue = Arc::new(std::sync::Mutex::new(agents.into_iter()));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (stats, target, queue) = (stats.clone(), common.target.clone(), queue.clone());
        tasks.spawn(async move {
            loop {
                let Some(agent) = queue.lock().ok().and_then(|mut q| q.next()) else { return };
                let ok = bootstrap_one(&stats, &target, &agent, wait_for_cert, deadline).await;
                stats.runs.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    stats.runs_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    progress.abort();
    stats.report("bootstrap", serde_json::json!({ "agents": count, "concurrency": concurrency, "waitforcert_s": wait_for_cert.as_secs_f64() }))
}

/// One agent's bootstrap, as Puppet's SSL state machine does it (7 and 8 alike): submit the
/// CSR (a 400 means "already submitted"), fetch the certificate; a 404, or a failure without
/// `Retry-After`, waits `wait_for_cert` and starts over, re-submitting the same CSR, until the
/// certificate comes or the deadline passes.
async fn bootstrap_one(
    stats: &Stats,
    target: &Target,
    agent: &NewAgent,
    wait_for_cert: Duration,
    deadline: tokio::time::Instant,
) -> bool {
    let put = Step {
        kind: Kind::Csr,
        method: Method::PUT,
        path: format!("/puppet-ca/v1/certificate_request/{}", agent.certname),
        content_type: Some("text/plain"),
        body: agent.csr_pem.clone(),
        headers: Step::get(Kind::Csr, "/").headers,
    };
    let get = Step::get(Kind::Cert, format!("/puppet-ca/v1/certificate/{}", agent.certname));
    loop {
        if let Some(mut conn) = connect(stats, target, None, &agent.certname).await {
            if submit(stats, &mut conn, &put, deadline).await
                && send_with_retry(stats, &mut conn, &get, deadline).await
            {
                return true;
            }
        }
        let wake = tokio::time::Instant::now() + wait_for_cert;
        if wake >= deadline {
            return false;
        }
        sleep_until(wake).await;
    }
}

/// The CSR submission: a 2xx, or a 400 (the CA already has a request or certificate for the
/// name), lets the agent go on to fetch its certificate.
async fn submit(
    stats: &Stats,
    conn: &mut Conn,
    put: &Step,
    deadline: tokio::time::Instant,
) -> bool {
    for _ in 0..MAX_RETRIES {
        let started = Instant::now();
        match conn.send(put).await {
            Ok(Answer { status, .. }) if status.is_success() => {
                stats.ok(put.kind, started.elapsed());
                return true;
            }
            Ok(Answer { status, .. }) if status == http::StatusCode::BAD_REQUEST => {
                stats.failed(
                    put.kind,
                    "status 400 (already submitted: the agent fetches its certificate)",
                );
                return true;
            }
            Ok(Answer { status, retry_after: Some(seconds), .. })
                if status.as_u16() == 503 || status.as_u16() == 429 =>
            {
                stats.failed(
                    put.kind,
                    &format!("status {} with Retry-After (retried)", status.as_u16()),
                );
                let wake = tokio::time::Instant::now() + Duration::from_secs(seconds);
                if wake >= deadline {
                    return false;
                }
                sleep_until(wake).await;
            }
            Ok(Answer { status, .. }) => {
                stats.failed(put.kind, &format!("status {}", status.as_u16()));
                return false;
            }
            Err(e) => {
                stats.failed(put.kind, &first_words(&e.to_string()));
                return false;
            }
        }
    }
    false
}

fn progress(stats: &Arc<Stats>, enabled: bool) -> tokio::task::JoinHandle<()> {
    let stats = stats.clone();
    tokio::spawn(async move {
        if !enabled {
            return;
        }
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}   ", stats.progress_line());
            let _ = err.flush();
        }
    })
}

/// The first words of an error, so that errors group by kind in the report.
fn first_words(text: &str) -> String {
    text.split(" (").next().unwrap_or(text).chars().take(80).collect()
}
