//! `crossbar check`: what the config file means, printed.

use crate::config::Config;

pub fn print(config: &Config) {
    if let Some(ca) = &config.ca {
        print_ca(ca);
    }
    if let Some(lb) = &config.lb {
        print_lb(lb, config.ca.is_some());
    }
}

fn print_ca(ca: &ca::config::CaConfig) {
    println!("[ca] listen {} cadir {}", ca.listen, ca.cadir.display());
    println!("     autosign: {}", ca::config::describe_autosign(&ca.autosign));
    let policy = &ca.settings.policy;
    println!(
        "     cert ttl: {}s; allow subject alt names: {}; allow authorization extensions: {}",
        ca.settings.cert_ttl.as_secs(),
        policy.allow_subject_alt_names,
        policy.allow_authorization_extensions
    );
    let proxies: Vec<String> = ca.access.trusted_proxies.iter().map(ToString::to_string).collect();
    println!("     trusted proxies: {}", proxies.join(", "));
    let mut admins: Vec<&str> = ca.access.admin_certnames.iter().map(String::as_str).collect();
    admins.sort_unstable();
    println!("     admin certnames: {}", admins.join(", "));
}

fn print_lb(lb: &lb::LbConfig, has_local_ca: bool) {
    println!("[lb] listen {}", lb.listen);
    match lb.admin_listen {
        Some(addr) => {
            println!("     admin endpoints on http://{addr} (/healthz, /metrics, /pools)")
        }
        None => println!("     no admin listener"),
    }
    println!(
        "     cert {} key {} client_ca {}",
        lb.tls.cert.display(),
        lb.tls.key.display(),
        lb.tls.client_ca.display()
    );
    match (&lb.tls.crl, &lb.crl_pull) {
        (Some(path), _) => println!(
            "     crl file {} (checked every {:?})",
            path.display(),
            lb.tls_reload_interval
        ),
        (None, Some(pull)) => println!(
            "     crl pulled from pool {} every {:?}{}",
            pull.pool,
            pull.refresh,
            pull.cache.as_ref().map(|c| format!(", cached in {}", c.display())).unwrap_or_default()
        ),
        (None, None) => println!("     crl: none (revoked certificates are accepted!)"),
    }
    println!("routes (first match wins):");
    for route in lb.routes.routes() {
        println!("     {} -> {}", route.matcher, route.pool);
    }
    println!("     everything else -> {}", lb.routes.fallback());
    println!("pools:");
    for pool in &lb.pools {
        print_pool(pool);
    }
    let local_ca_pool = has_local_ca && !lb.pools.iter().any(|p| p.name == lb::route::CA_POOL);
    if local_ca_pool {
        println!("     ca: this process's CA");
    }
    for needed in lb.routes.pools() {
        let configured = lb.pools.iter().any(|p| p.name == needed)
            || (needed == lb::route::CA_POOL && local_ca_pool);
        if !configured {
            println!("warning: routes send requests to pool '{needed}', which is not configured; they will get 502");
        }
    }
}

fn print_pool(pool: &lb::config::PoolConfig) {
    let s = &pool.settings;
    let check = match &s.check {
        Some(c) => format!(
            "GET {} expecting {:?} every {:?} (timeout {:?}, rise {}, fall {})",
            c.path, c.expect, c.interval, c.timeout, s.health.rise, s.health.fall
        ),
        None => "passive ejection only".to_owned(),
    };
    println!(
        "     {}: balance {}; health {}; queue {} for up to {:?}; Retry-After {}-{}s{}",
        pool.name,
        s.strategy,
        check,
        s.queue_max,
        s.queue_timeout,
        s.retry_after.0,
        s.retry_after.1,
        if s.eject_on_5xx { "; ejects on 5xx" } else { "" }
    );
    for member in &pool.members {
        let max = member.max_in_flight.map(|m| format!(" max_in_flight {m}")).unwrap_or_default();
        println!(
            "       {}{}{}",
            member.url,
            max,
            if member.standby { " (hot standby)" } else { "" }
        );
    }
}
