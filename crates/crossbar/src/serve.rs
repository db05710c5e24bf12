//! `crossbar serve`: binds the listeners of the declared roles (or takes them from systemd's
//! socket activation) and runs them; SIGHUP reloads the config file (a bad file keeps the
//! running configuration), SIGTERM/SIGINT stop accepting and drain. Under systemd it says when
//! it is ready, reloading and stopping, keeps a status line, and feeds the watchdog while the
//! LB itself is healthy.

use std::{io::Write, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    sync::watch,
};

use crate::{
    config::{self, Config},
    systemd::{Activated, Notifier},
};

/// How often the status line shown by `systemctl status` is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// How long startup waits for the LB to accept before saying ready anyway.
const READY_WAIT: Duration = Duration::from_secs(30);

/// How often the CA checks whether its CRL nears its nextUpdate, and the margin it keeps.
const CRL_CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);
const CRL_RENEW_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// The running roles, for reloads.
struct Running {
    ca: Option<RunningCa>,
    lb: Option<Arc<lb::LbState>>,
}

struct RunningCa {
    state: Arc<ca::api::ApiState>,
    addr: SocketAddr,
    cadir: std::path::PathBuf,
    /// The secret this process's LB sends it: the configured one, or one made at start.
    secret: String,
    /// The database URL, when the CA keeps its state in one.
    database: Option<String>,
}

pub async fn run(path: &Path, config: Config, mut activated: Activated) -> anyhow::Result<()> {
    // Before anything listens: a SIGHUP that comes right after READY=1 (`systemctl reload`
    // just after start) must reload, not end the process (SIGHUP's default action).
    let signals = Signals::install()?;
    // The LB stops first and drains; the CA stops after it, so that requests the LB is
    // finishing still reach a CA of this process.
    let (stop, stopped) = watch::channel(false);
    let (stop_lb, lb_stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut lb_task = None;
    let mut running = Running { ca: None, lb: None };
    let mut lb_config = config.lb;
    if let Some(mut ca_config) = config.ca {
        let listener = bind(ca_config.listen, "ca", &mut activated).await?;
        let admin = match ca_config.admin_listen {
            Some(addr) => Some(bind(addr, "ca admin_listen", &mut activated).await?),
            None => None,
        };
        let addr = listener.local_addr()?;
        let secret = local_secret(&mut ca_config, lb_config.is_some())?;
        if let Some(lb) = lb_config.as_mut() {
            add_local_ca_pool(lb, addr, &secret);
        }
        // Opening the store repairs what a crash left: announce the listener only after.
        let state = build_ca(&ca_config).await?;
        announce("ca", "http", addr);
        let cadir = ca_config.cadir.clone();
        let database = ca_config.database.as_ref().map(|d| d.url.clone());
        running.ca = Some(RunningCa { state: state.clone(), addr, cadir, secret, database });
        if let Some(admin) = admin {
            announce("ca-metrics", "http", admin.local_addr()?);
            let router = ca::api::admin_router(state.clone());
            let shutdown = wait_for(stopped.clone());
            tasks.spawn(async move {
                if let Err(e) = axum::serve(admin, router).with_graceful_shutdown(shutdown).await {
                    tracing::error!(error = %e, "CA admin listener failed");
                }
            });
        }
        let router = ca::api::router(state);
        let shutdown = wait_for(stopped.clone());
        tasks.spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "CA listener failed");
            }
        });
    }
    if let Some(lb_config) = lb_config {
        let listener = bind(lb_config.listen(), "lb", &mut activated).await?;
        let admin = match lb_config.admin_listen() {
            Some(addr) => Some(bind(addr, "lb admin_listen", &mut activated).await?),
            None => None,
        };
        let lb = lb::Lb::build(lb_config).context("cannot start the load balancer")?;
        announce("lb", "https", listener.local_addr()?);
        if let Some(admin) = &admin {
            announce("admin", "http", admin.local_addr()?);
        }
        running.lb = Some(lb.state());
        lb_task = Some(tokio::spawn(lb.run(listener, admin, wait_for(lb_stopped))));
    }
    for addr in activated.leftover() {
        tracing::warn!(%addr, "socket activation passed a socket no listener of the config uses");
    }
    notify_ready(&running).await;
    let status = tokio::spawn(report_status(running.lb.clone()));
    let watchdog = Notifier::watchdog_period()
        .map(|period| tokio::spawn(feed_watchdog(running.lb.clone(), period)));
    wait_for_stop(path, &running, signals).await;
    tracing::info!("shutting down: no new connections; draining");
    Notifier::stopping();
    status.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let _ = stop_lb.send(true);
    if let Some(lb) = lb_task {
        let _ = lb.await;
    }
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The signals `serve` answers, caught from the start.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }
}

/// Waits for SIGTERM or SIGINT, reloading on every SIGHUP meanwhile.
async fn wait_for_stop(path: &Path, running: &Running, signals: Signals) {
    let Signals { mut term, mut int, mut hup } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                Notifier::reloading();
                let outcome = reload(path, running);
                Notifier::reloaded(&outcome);
            }
        }
    }
}

/// Applies the config file again; the error says what was refused (the running configuration
/// stays for that part).
fn reload(path: &Path, running: &Running) -> Result<(), String> {
    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
    let config = match config::load(path) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "the new configuration is invalid; keeping the running one"
            );
            return Err(format!("{e:#}"));
        }
    };
    let mut refused = Vec::new();
    if let (Some(ca), Some(mut ca_config)) = (&running.ca, config.ca.clone()) {
        if ca_config.access.proxy_secret.is_none() && running.lb.is_some() {
            ca_config.access.proxy_secret = Some(ca.secret.clone());
        }
        match reload_ca(ca, &ca_config) {
            Ok(()) => tracing::info!("CA settings reloaded"),
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "CA reload failed; keeping the running settings"
                );
                refused.push(format!("[ca]: {e:#}"));
            }
        }
    }
    if running.ca.is_some() != config.ca.is_some() || running.lb.is_some() != config.lb.is_some() {
        tracing::warn!("adding or removing a role takes effect on restart");
    }
    if let (Some(state), Some(mut lb_config)) = (&running.lb, config.lb) {
        if let Some(ca) = &running.ca {
            add_local_ca_pool(&mut lb_config, ca.addr, &ca.secret);
        }
        if let Err(e) = state.reload(lb_config) {
            tracing::error!(error = %e, "LB reload failed; keeping the running configuration");
            refused.push(format!("[lb]: {e}"));
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused.join("; "))
    }
}

/// `READY=1` once the LB accepts (its first CRL in when it pulls one; the CA is up by now).
async fn notify_ready(running: &Running) {
    if let Some(lb) = &running.lb {
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        while !lb.is_accepting() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Notifier::ready(&status_line(running.lb.as_deref()));
}

fn status_line(lb: Option<&lb::LbState>) -> String {
    lb.map_or_else(|| "ca: serving".to_owned(), lb::LbState::status_line)
}

/// Keeps `systemctl status` current.
async fn report_status(lb: Option<Arc<lb::LbState>>) {
    let mut ticker = tokio::time::interval(STATUS_EVERY);
    loop {
        ticker.tick().await;
        Notifier::status(&status_line(lb.as_deref()));
    }
}

/// `WATCHDOG=1` at half the period, only while the LB itself is healthy (its listener accepts
/// and every worker runtime turns): a wedged process stops feeding and systemd restarts it.
/// This task runs on the main runtime, which also serves the CA and the admin listeners.
async fn feed_watchdog(lb: Option<Arc<lb::LbState>>, period: Duration) {
    let mut ticker = tokio::time::interval(period / 2);
    let mut starving = false;
    loop {
        ticker.tick().await;
        let problems = lb.as_ref().map(|lb| lb.problems()).unwrap_or_default();
        if problems.is_empty() {
            Notifier::watchdog();
            if starving {
                tracing::info!("feeding systemd's watchdog again");
            }
            starving = false;
        } else if !starving {
            tracing::error!(
                problems = problems.join("; "),
                "not feeding systemd's watchdog: this LB cannot serve"
            );
            starving = true;
        }
    }
}

/// In one process the LB reaches the local CA over HTTP like any backend (one code path); when
/// `[lb]` names no `ca` pool, the local CA is that pool, and the LB sends it the secret it asks.
fn add_local_ca_pool(lb: &mut lb::LbConfig, ca_addr: SocketAddr, secret: &str) {
    let host = if ca_addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        ca_addr.ip().to_string()
    };
    let url = format!("http://{host}:{}", ca_addr.port());
    if lb.add_local_ca_pool(&url, lb::Secret::new(secret)) {
        tracing::info!(%url, "pool 'ca' is this process's CA");
    }
}

/// The secret that proves an LB to this CA. With `[lb]` in the same process and no
/// `proxy_secret_file`, a random one made now, known to this process alone: no other local
/// process can pose as the LB.
fn local_secret(ca: &mut ca::config::CaConfig, with_lb: bool) -> anyhow::Result<String> {
    if let Some(secret) = &ca.access.proxy_secret {
        return Ok(secret.clone());
    }
    if !with_lb {
        tracing::warn!("[ca] has no proxy_secret_file: no LB can prove itself, so X-Client-* headers are never believed (admin requests and renewals through an LB are refused)");
    }
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for the proxy secret"))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if with_lb {
        ca.access.proxy_secret = Some(secret.clone());
    }
    Ok(secret)
}

/// Opens the CA's store: the database when `[ca] database` is set, else the directory (whose
/// crash leftovers are repaired). Blocking: call it on a blocking thread.
pub fn open_store(config: &ca::config::CaConfig) -> anyhow::Result<Arc<dyn ca::CaStore>> {
    if let Some(database) = &config.database {
        let store = ca::db::PgStore::open(database, &config.cadir).with_context(|| {
            format!("cannot open the CA database {}", ca::db::redact(&database.url))
        })?;
        return Ok(Arc::new(store));
    }
    let (store, recovery) = ca::fs::FsStore::open(&config.cadir)
        .with_context(|| format!("cannot open the CA directory {}", config.cadir.display()))?;
    if !recovery.is_clean() {
        tracing::warn!(?recovery, "repaired the CA directory after an unclean stop");
    }
    Ok(Arc::new(store))
}

async fn build_ca(config: &ca::config::CaConfig) -> anyhow::Result<Arc<ca::api::ApiState>> {
    let opened = config.clone();
    let store = tokio::task::spawn_blocking(move || open_store(&opened)).await??;
    let service = Arc::new(
        ca::CaService::open(store, config.settings.clone()).context("cannot load the CA")?,
    );
    let state = match &config.database {
        Some(db) => format!("database {}", ca::db::redact(&db.url)),
        None => format!("directory {}", config.cadir.display()),
    };
    tracing::info!(ca = service.signer().subject(), %state, autosign = %ca::config::describe_autosign(&config.autosign), "CA ready");
    tokio::spawn(keep_crl_fresh(service.clone()));
    Ok(Arc::new(ca::api::ApiState::new(service, config.autosign.clone(), config.access.clone())))
}

/// New CA settings on the running store (the CA's directory or database stay as they were).
fn reload_ca(running: &RunningCa, config: &ca::config::CaConfig) -> anyhow::Result<()> {
    let database = config.database.as_ref().map(|d| d.url.clone());
    if config.cadir != running.cadir || database != running.database {
        anyhow::bail!("[ca] cadir or database changed; they take effect on restart");
    }
    let running_service = running.state.service();
    let store = running_service.store().clone();
    let service = ca::CaService::open(store, config.settings.clone())
        .context("cannot load the CA")?
        .with_metrics(running_service.metrics().clone());
    running.state.replace(Arc::new(service), config.autosign.clone(), config.access.clone());
    Ok(())
}

async fn keep_crl_fresh(service: Arc<ca::CaService>) {
    let mut ticker = tokio::time::interval(CRL_CHECK_EVERY);
    loop {
        ticker.tick().await;
        let service = service.clone();
        match tokio::task::spawn_blocking(move || service.refresh_crl_if_expiring(CRL_RENEW_MARGIN))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "could not renew the CRL"),
            Err(e) => tracing::error!(error = %e, "CRL renewal task failed"),
        }
    }
}

/// The listener for `addr`: the socket systemd passed for it, or a new one.
async fn bind(
    addr: SocketAddr,
    role: &str,
    activated: &mut Activated,
) -> anyhow::Result<TcpListener> {
    if let Some(listener) = activated.take(addr) {
        listener
            .set_nonblocking(true)
            .context("socket activation: cannot make a socket non-blocking")?;
        tracing::info!(%addr, role, "using the socket systemd passed");
        return TcpListener::from_std(listener).context("socket activation: cannot use a socket");
    }
    listen(addr).with_context(|| format!("[{role}] listen = \"{addr}\": cannot bind"))
}

/// Connections the kernel may hold before they are accepted: after an LB failover thousands
/// of agents connect within a second, and tokio's default (1,024) would drop their SYNs, so
/// they would wait for a retransmission (1 s, then 3 s…). The kernel caps it at
/// `net.core.somaxconn` (4,096 by default), as it does systemd's `Backlog=`.
const LISTEN_BACKLOG: u32 = 65_535;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// One line on stdout per listener, so scripts and tests can find ports chosen by the kernel.
fn announce(role: &str, scheme: &str, addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "crossbar: {role} listening on {scheme}://{addr}");
    let _ = out.flush();
}

/// Resolves on SIGTERM or SIGINT.
pub async fn stop_signal() {
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
