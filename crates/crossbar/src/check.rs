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
    println!(
        "     cert {} key {} client_ca {}",
        lb.tls.cert.display(),
        lb.tls.key.display(),
        lb.tls.client_ca.display()
    );
    match &lb.tls.crl {
        Some(path) => println!(
            "     crl file {} (checked every {:?})",
            path.display(),
            lb.tls_reload_interval
        ),
        None => println!("     crl: none"),
    }
    println!("routes (first match wins):");
    for route in lb.routes.routes() {
        println!("     {} -> {}", route.matcher, route.pool);
    }
    println!("     everything else -> {}", lb.routes.fallback());
    println!("pools:");
    for pool in &lb.pools {
        println!("     {}", pool.name);
        for member in &pool.members {
            println!("       {}{}", member.url, if member.standby { " (hot standby)" } else { "" });
        }
    }
    let local_ca_pool = has_local_ca && !lb.pools.iter().any(|p| p.name == lb::route::CA_POOL);
    if local_ca_pool {
        println!("     ca\n       (this process's CA)");
    }
    for needed in lb.routes.pools() {
        let configured = lb.pools.iter().any(|p| p.name == needed)
            || (needed == lb::route::CA_POOL && local_ca_pool);
        if !configured {
            println!("warning: routes send requests to pool '{needed}', which is not configured; they will get 502");
        }
    }
}
