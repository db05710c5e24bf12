//! What an `[lb]` configuration means, in lines a person reads (`crossbar check`).

use crate::{
    config::{LbConfig, PoolConfig},
    route::CA_POOL,
};

pub(crate) fn lines(lb: &LbConfig) -> Vec<String> {
    let mut out = vec![format!("[lb] listen {}", lb.listen)];
    out.push(match lb.admin_listen {
        Some(addr) => {
            format!("     admin endpoints on http://{addr} (/healthz, /readyz, /metrics, /pools)")
        }
        None => "     no admin listener".to_owned(),
    });
    let tls = &lb.tls;
    out.push(format!(
        "     cert {} key {} client_ca {}",
        tls.cert.display(),
        tls.key.display(),
        tls.client_ca.display()
    ));
    out.push(match (&tls.crl, &lb.crl_pull) {
        (Some(path), _) => {
            format!("     crl file {} (checked every {:?})", path.display(), lb.tls_reload_interval)
        }
        (None, Some(pull)) => format!(
            "     crl pulled from pool {} every {:?}{}",
            pull.pool,
            pull.refresh,
            pull.cache.as_ref().map(|c| format!(", cached in {}", c.display())).unwrap_or_default()
        ),
        (None, None) => "     crl: none (revoked certificates are accepted!)".to_owned(),
    });
    let s = &lb.serve;
    out.push(format!(
        "     limits: {} connections; request head {} bytes, {} headers; handshake {:?}, head {:?}, idle park {:?}, drain {:?}",
        s.max_connections, s.max_head_bytes, s.max_headers, s.handshake_timeout, s.header_read_timeout, s.idle_park, s.drain_grace
    ));
    let (r, u) = (&lb.requests, &lb.upstream);
    out.push(format!(
        "     bodies: 408 after {:?} without a byte or below {} bytes/s; backends: connect {:?}, response {:?}, idle {:?}",
        r.body_idle, r.body_min_rate, u.connect_timeout, u.response_timeout, u.idle_timeout
    ));
    out.push("routes (first match wins):".to_owned());
    for route in lb.routes.routes() {
        out.push(format!("     {} -> {}", route.matcher, route.pool));
    }
    out.push(format!("     everything else -> {}", lb.routes.fallback()));
    out.push("pools:".to_owned());
    for pool in &lb.pools {
        pool_lines(pool, &mut out);
    }
    let mut needed: Vec<&str> = lb.routes.pools().collect();
    needed.sort_unstable();
    needed.dedup();
    for needed in needed {
        if !lb.pools.iter().any(|p| p.name == needed) {
            let who = if needed == CA_POOL { " (unless this process runs the CA)" } else { "" };
            out.push(format!("warning: routes send requests to pool '{needed}', which is not configured{who}; they will get 502"));
        }
    }
    out
}

fn pool_lines(pool: &PoolConfig, out: &mut Vec<String>) {
    let s = &pool.settings;
    let check = match &s.check {
        Some(c) => format!(
            "GET {} expecting {:?} every {:?} (timeout {:?}, rise {}, fall {})",
            c.path, c.expect, c.interval, c.timeout, s.health.rise, s.health.fall
        ),
        None => "passive ejection only".to_owned(),
    };
    out.push(format!(
        "     {}: balance {}; health {}; queue {} for up to {:?}; Retry-After {}-{}s{}{}{}",
        pool.name,
        s.strategy,
        check,
        s.queue_max,
        s.queue_timeout,
        s.retry_after.0,
        s.retry_after.1,
        if s.eject_on_5xx { "; ejects on 5xx" } else { "" },
        s.max_body.map(|m| format!("; bodies up to {m} bytes")).unwrap_or_default(),
        if s.proxy_secret.is_some() { "; sends the proxy secret" } else { "" },
    ));
    for member in &pool.members {
        let max = member.max_in_flight.map(|m| format!(" max_in_flight {m}")).unwrap_or_default();
        let standby = if member.standby { " (hot standby)" } else { "" };
        out.push(format!("       {}{max}{standby}", member.url));
    }
}
