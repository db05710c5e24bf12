//! `crossbar serve`: binds the listeners of the declared roles and runs them until SIGTERM or
//! SIGINT, then drains.

use std::{io::Write, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};

use crate::config::Config;

/// How often the CA checks whether its CRL nears its nextUpdate, and the margin it keeps.
const CRL_CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);
const CRL_RENEW_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);

pub async fn run(config: Config) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut lb_config = config.lb;
    if let Some(ca_config) = config.ca {
        let listener = bind(ca_config.listen, "ca").await?;
        let addr = listener.local_addr()?;
        announce("ca", "http", addr);
        if let Some(lb) = lb_config.as_mut() {
            add_local_ca_pool(lb, addr);
        }
        let router = build_ca(&ca_config)?;
        let shutdown = wait_for(stopped.clone());
        tasks.spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "CA listener failed");
            }
        });
    }
    if let Some(lb_config) = lb_config {
        let listener = bind(lb_config.listen, "lb").await?;
        announce("lb", "https", listener.local_addr()?);
        let lb = lb::Lb::build(lb_config).context("cannot start the load balancer")?;
        tasks.spawn(lb.run(listener, wait_for(stopped.clone())));
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// In one process the LB reaches the local CA over HTTP like any backend (one code path); when
/// `[lb]` names no `ca` pool, the local CA is that pool.
fn add_local_ca_pool(lb: &mut lb::LbConfig, ca_addr: SocketAddr) {
    if lb.pools.iter().any(|p| p.name == lb::route::CA_POOL) {
        return;
    }
    let host = if ca_addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        ca_addr.ip().to_string()
    };
    let url = format!("http://{host}:{}", ca_addr.port());
    tracing::info!(%url, "pool 'ca' is this process's CA");
    lb.pools.push(lb::config::PoolConfig {
        name: lb::route::CA_POOL.into(),
        members: vec![lb::config::FileMember { url, standby: false }],
    });
}

fn build_ca(config: &ca::config::CaConfig) -> anyhow::Result<axum::Router> {
    let (store, recovery) = ca::fs::FsStore::open(&config.cadir)
        .with_context(|| format!("cannot open the CA directory {}", config.cadir.display()))?;
    if !recovery.is_clean() {
        tracing::warn!(?recovery, "repaired the CA directory after an unclean stop");
    }
    let service = Arc::new(
        ca::CaService::open(Arc::new(store), config.settings.clone())
            .context("cannot load the CA")?,
    );
    tracing::info!(ca = service.signer().subject(), cadir = %config.cadir.display(), autosign = %ca::config::describe_autosign(&config.autosign), "CA ready");
    tokio::spawn(keep_crl_fresh(service.clone()));
    let state = Arc::new(ca::api::ApiState {
        service,
        autosign: config.autosign.clone(),
        access: config.access.clone(),
    });
    Ok(ca::api::router(state))
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

async fn bind(addr: SocketAddr, role: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("[{role}] listen = \"{addr}\": cannot bind"))
}

/// One line on stdout per listener, so scripts and tests can find ports chosen by the kernel.
fn announce(role: &str, scheme: &str, addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "crossbar: {role} listening on {scheme}://{addr}");
    let _ = out.flush();
}

async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
