//! Failures of the multi-host [`Site`], one after another, with real agents running on the
//! client host during each, and what each cost: how long until a request through the VIP
//! succeeded again, and which agent runs failed — those started after the recovery (the
//! target: none) and those in flight at the event (counted and reported). The e2e test
//! asserts on the outcomes; the demo prints them.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::{
    puppet::{compiled_by, output_text, Agent},
    site::{Site, LB_PORT},
    wait,
};

/// How often the probe asks, and how long it waits for an answer.
const PROBE_EVERY: Duration = Duration::from_millis(50);
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// How long an event may take to recover before it counts as not recovered.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// A request through the VIP every 50 ms from the client host, on a new connection each.
pub struct Probe {
    results: Arc<Mutex<Vec<(Instant, Instant, bool)>>>,
    running: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    pub fn start(site: &Site) -> Self {
        let results = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicBool::new(true));
        let client = site.tls_client(None);
        let (out, on) = (results.clone(), running.clone());
        let vip = SocketAddr::from((Site::vip(), LB_PORT));
        let thread = site.net.run_in("client", move || {
            while on.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = client
                    .request_to(vip, "/puppet-ca/v1/certificate/ca", PROBE_TIMEOUT)
                    .is_ok_and(|r| r.status == 200);
                if let Ok(mut results) = out.lock() {
                    results.push((started, Instant::now(), ok));
                }
                std::thread::sleep(PROBE_EVERY.saturating_sub(started.elapsed()));
            }
        });
        Self { results, running, thread: Some(thread) }
    }

    /// When the first request started at or after `since` succeeded, if one has.
    pub fn first_success_since(&self, since: Instant) -> Option<Instant> {
        let results = self.results.lock().ok()?;
        results.iter().find(|(started, _, ok)| *started >= since && *ok).map(|(_, ended, _)| *ended)
    }

    /// Requests started at or after `since` that failed.
    pub fn failures_since(&self, since: Instant, until: Instant) -> usize {
        self.results.lock().map_or(0, |r| {
            r.iter().filter(|(started, _, ok)| *started >= since && *started < until && !ok).count()
        })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One finished `puppet agent -t`.
#[derive(Debug, Clone)]
pub struct Run {
    pub agent: String,
    pub started: Instant,
    pub ended: Instant,
    pub ok: bool,
    pub compiled_by: Option<String>,
    /// The run's output when it failed.
    pub failure: Option<String>,
}

/// Agents running `puppet agent -t` back to back on the client host, each on its own thread.
pub struct AgentLoops {
    runs: Arc<Mutex<Vec<Run>>>,
    running: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl AgentLoops {
    pub fn start(agents: Vec<Agent>) -> Self {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicBool::new(true));
        let threads = agents
            .into_iter()
            .map(|agent| {
                let (runs, running) = (runs.clone(), running.clone());
                std::thread::spawn(move || {
                    while running.load(Ordering::Relaxed) {
                        let run = one_run(&agent);
                        if let Ok(mut runs) = runs.lock() {
                            runs.push(run);
                        }
                    }
                })
            })
            .collect();
        Self { runs, running, threads }
    }

    /// Every run finished so far.
    pub fn runs(&self) -> Vec<Run> {
        self.runs.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until every agent has finished a run that started after `since`.
    pub fn wait_for_runs_after(&self, since: Instant, agents: usize, timeout: Duration) {
        wait::until_true("every agent to finish a run after the event", timeout, || {
            let runs = self.runs();
            let mut names: Vec<&str> =
                runs.iter().filter(|r| r.started >= since).map(|r| r.agent.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            names.len() >= agents
        });
    }

    /// Stops the loops after their current runs.
    pub fn stop(mut self) -> Vec<Run> {
        self.running.store(false, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.runs()
    }
}

/// `puppet agent -t` once, timed, with the agent's HTTP timeouts short enough that a run
/// caught by a failure ends within the scenario.
pub fn one_run(agent: &Agent) -> Run {
    let started = Instant::now();
    let out =
        agent.run_with(LB_PORT, &["--http_connect_timeout", "5s", "--http_read_timeout", "60s"]);
    let ok = matches!(out.status.code(), Some(0 | 2));
    Run {
        agent: agent.certname.clone(),
        started,
        ended: Instant::now(),
        ok,
        compiled_by: compiled_by(&out),
        failure: (!ok).then(|| output_text(&out)),
    }
}

/// What an event cost.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub event: String,
    /// From the event to the first successful request through the VIP that started after it.
    pub recovered_after: Option<Duration>,
    /// Where the VIP was before and after.
    pub vip: (Option<&'static str>, Option<&'static str>),
    /// Runs that started after the recovery, and how many of them failed.
    pub runs_after: usize,
    pub failed_after: usize,
    /// Runs under way at the event, and how many of them failed.
    pub in_flight: usize,
    pub in_flight_failed: usize,
    /// The output of the first failed run started after the recovery, for diagnosis.
    pub first_failure: Option<String>,
}

impl Outcome {
    /// Measures an event that happened at `at`, once runs after it have finished.
    fn measure(
        event: &str,
        at: Instant,
        vip_before: Option<&'static str>,
        site: &Site,
        probe: &Probe,
        runs: &[Run],
    ) -> Self {
        let recovered = probe.first_success_since(at);
        let from = recovered.unwrap_or(at);
        let after: Vec<&Run> = runs.iter().filter(|r| r.started >= from).collect();
        let in_flight: Vec<&Run> = runs.iter().filter(|r| r.started < at && r.ended > at).collect();
        Self {
            event: event.to_owned(),
            recovered_after: recovered.map(|t| t.saturating_duration_since(at)),
            vip: (vip_before, site.vip_holder()),
            runs_after: after.len(),
            failed_after: after.iter().filter(|r| !r.ok).count(),
            in_flight: in_flight.len(),
            in_flight_failed: in_flight.iter().filter(|r| !r.ok).count(),
            first_failure: after.iter().find(|r| !r.ok).and_then(|r| r.failure.clone()),
        }
    }
}

/// The outcomes as a table.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from("| event | VIP before → after | recovered after | runs started after: failed | runs in flight: failed |\n|---|---|---|---|---|\n");
    for o in outcomes {
        let vip = format!("{} → {}", o.vip.0.unwrap_or("none"), o.vip.1.unwrap_or("none"));
        let recovered = o
            .recovered_after
            .map_or_else(|| "not within 60 s".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
        let _ = writeln!(
            out,
            "| {} | {vip} | {recovered} | {} of {} | {} of {} |",
            o.event, o.failed_after, o.runs_after, o.in_flight_failed, o.in_flight
        );
    }
    out
}

/// What the scenario needs while it runs.
struct Scenario<'a> {
    probe: Probe,
    loops: AgentLoops,
    agents: usize,
    outcomes: Vec<Outcome>,
    events: Vec<(Instant, String)>,
    extra_runs: Vec<Run>,
    log: &'a mut dyn FnMut(&str),
}

/// Everything a scenario did: each event's outcome, when it happened, and every run.
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub events: Vec<(Instant, String)>,
    pub runs: Vec<Run>,
}

impl Report {
    /// Runs and events in time order, from `origin`: which compiler served each run, and
    /// where each event fell among them.
    pub fn timeline(&self, origin: Instant) -> String {
        let mut lines: Vec<(Instant, String)> = self
            .runs
            .iter()
            .map(|r| {
                let what = if r.ok {
                    format!("ok      on {}", r.compiled_by.as_deref().unwrap_or("?"))
                } else {
                    "FAILED".to_owned()
                };
                (
                    r.started,
                    format!(
                        "{:<32} run {what} ({:.1} s)",
                        r.agent,
                        r.ended.duration_since(r.started).as_secs_f64()
                    ),
                )
            })
            .chain(self.events.iter().map(|(at, e)| (*at, format!("── {e}"))))
            .collect();
        lines.sort_by_key(|(at, _)| *at);
        lines
            .into_iter()
            .map(|(at, text)| {
                format!("{:>7.1} s  {text}\n", at.saturating_duration_since(origin).as_secs_f64())
            })
            .collect()
    }
}

impl Scenario<'_> {
    /// Waits for the recovery and for a run of every agent after it, then records the event.
    fn settle(
        &mut self,
        site: &Site,
        event: &str,
        at: Instant,
        before: Option<&'static str>,
        extra: Vec<Run>,
    ) {
        let deadline = Instant::now() + RECOVERY_LIMIT;
        while self.probe.first_success_since(at).is_none() && Instant::now() < deadline {
            std::thread::sleep(PROBE_EVERY);
        }
        let from = self.probe.first_success_since(at).unwrap_or(at);
        self.loops.wait_for_runs_after(from, self.agents, Duration::from_secs(180));
        self.events.push((at, event.to_owned()));
        self.extra_runs.extend(extra.iter().cloned());
        let mut runs = self.loops.runs();
        runs.extend(extra);
        let outcome = Outcome::measure(event, at, before, site, &self.probe, &runs);
        (self.log)(&format!(
            "{event}: VIP {} → {}, recovered after {}, runs after: {} failed of {}, in flight: {} failed of {}",
            outcome.vip.0.unwrap_or("none"),
            outcome.vip.1.unwrap_or("none"),
            outcome.recovered_after.map_or("—".into(), |d| format!("{:.2} s", d.as_secs_f64())),
            outcome.failed_after,
            outcome.runs_after,
            outcome.in_flight_failed,
            outcome.in_flight
        ));
        self.outcomes.push(outcome);
    }
}

/// New agents bootstrapping through the VIP (a CSR, autosigned, then the certificate), then
/// running once: what exercises the CA side.
pub fn new_agents(site: &Site, prefix: &str, count: usize) -> Vec<Run> {
    (0..count)
        .map(|i| {
            let agent = site.agent(&format!("{prefix}{i}.example.com"));
            let started = Instant::now();
            let boot = agent.bootstrap(LB_PORT);
            if !boot.status.success() {
                return Run {
                    agent: agent.certname,
                    started,
                    ended: Instant::now(),
                    ok: false,
                    compiled_by: None,
                    failure: Some(output_text(&boot)),
                };
            }
            Run { started, ..one_run(&agent) }
        })
        .collect()
}

/// Runs the failures of the multi-host design in turn, with `agents` running throughout;
/// `log` hears each step. Each failure is repaired before the next (the VIP stays where it
/// moved). Returns every outcome.
pub fn run_all(site: &mut Site, agents: Vec<Agent>, log: &mut dyn FnMut(&str)) -> Report {
    let count = agents.len();
    let probe = Probe::start(site);
    let loops = AgentLoops::start(agents);
    loops.wait_for_runs_after(Instant::now(), count, Duration::from_secs(180));
    let mut scenario = Scenario {
        probe,
        loops,
        agents: count,
        outcomes: Vec::new(),
        events: Vec::new(),
        extra_runs: Vec::new(),
        log,
    };

    // The LB holding the VIP: killed, cut off, frozen. After each, it comes back and the VIP
    // stays where it went (nopreempt).
    for (what, kind) in [("crossbar killed", 0), ("link cut", 1), ("crossbar frozen (SIGSTOP)", 2)]
    {
        let Some(master) = site.vip_holder() else { break };
        let event = format!("{master}: {what}");
        (scenario.log)(&format!("-- {event}"));
        match kind {
            0 => site.kill_lb(master),
            1 => site.net.cut(master),
            _ => site.signal_lb(master, "STOP"),
        }
        // The event is complete when the command returns: measure from there.
        let at = Instant::now();
        scenario.settle(site, &event, at, Some(master), Vec::new());
        (scenario.log)(&format!("-- {master} back"));
        match kind {
            0 => site.start_lb(master),
            1 => site.net.restore(master),
            _ => site.signal_lb(master, "CONT"),
        }
        let back_at = Instant::now();
        let holder = site.vip_holder();
        // Long enough for keepalived to have taken the VIP back if it were going to.
        std::thread::sleep(Duration::from_secs(5));
        scenario.settle(site, &format!("{master} back"), back_at, holder, Vec::new());
    }

    (scenario.log)("-- compiler1: link cut");
    site.net.cut("compiler1");
    let at = Instant::now();
    scenario.settle(site, "compiler1: link cut", at, site.vip_holder(), Vec::new());
    site.net.restore("compiler1");

    (scenario.log)("-- ca1: link cut (new agents bootstrap)");
    site.net.cut("ca1");
    let at = Instant::now();
    let fresh = new_agents(site, "after-ca1-cut", 2);
    scenario.settle(site, "ca1: link cut", at, site.vip_holder(), fresh);
    site.net.restore("ca1");

    (scenario.log)("-- db: link cut, db2 promoted (new agents bootstrap)");
    site.net.cut("db");
    let at = Instant::now();
    site.promote_replica();
    let fresh = new_agents(site, "after-db-failover", 2);
    scenario.settle(site, "db: link cut, db2 promoted", at, site.vip_holder(), fresh);

    let Scenario { probe, loops, outcomes, events, extra_runs, .. } = scenario;
    let mut runs = loops.stop();
    runs.extend(extra_runs);
    drop(probe);
    Report { outcomes, events, runs }
}

/// Revokes `certname` through ca1 (its offline CLI, on the database) and measures how long
/// each LB takes to refuse the agent's certificate at the handshake.
pub fn revoke_and_measure(
    site: &Site,
    agent: &Agent,
) -> Result<Vec<(&'static str, Option<Duration>)>, String> {
    let url = site.database_url();
    let cadir = site.path("ca1").display().to_string();
    site.crossbar_in(
        "ca1",
        &["ca", "revoke", "--database", &url, "--cadir", &cadir, "--certname", &agent.certname],
    )?;
    let revoked = Instant::now();
    let mut out = Vec::new();
    for host in ["lb1", "lb2"] {
        let addr = SocketAddr::from((site.net.addr(host), LB_PORT));
        let client = site.tls_client(Some(agent));
        let refused = site
            .net
            .run_in("client", move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline {
                    let refused = client
                        .request_to(addr, "/puppet-ca/v1/certificate/ca", Duration::from_secs(1))
                        .is_err_and(|e| {
                            e.to_lowercase().contains("revoked") || e.contains("alert")
                        });
                    if refused {
                        return Some(Instant::now());
                    }
                    std::thread::sleep(PROBE_EVERY);
                }
                None
            })
            .join()
            .map_err(|_| "the probe thread panicked".to_owned())?;
        out.push((host, refused.map(|t| t.saturating_duration_since(revoked))));
    }
    Ok(out)
}
