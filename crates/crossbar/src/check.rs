//! `crossbar check`: what the config file means, printed.

use anyhow::Context;

use crate::config::Config;

pub fn print(config: &Config) {
    if let Some(ca) = &config.ca {
        print_ca(ca, config.lb.is_some());
    }
    if let Some(lb) = &config.lb {
        print_lb(lb, config.ca.as_ref());
    }
}

fn print_ca(ca: &ca::config::CaConfig, with_lb: bool) {
    println!("[ca] listen {} cadir {}", ca.listen, ca.cadir.display());
    if let Some(admin) = ca.admin_listen {
        println!("     metrics on http://{admin}/metrics");
    }
    println!("     autosign: {}", ca::config::describe_autosign(&ca.autosign));
    let policy = &ca.settings.policy;
    println!(
        "     cert ttl: {}s; allow subject alt names: {}; allow authorization extensions: {}",
        ca.settings.cert_ttl.as_secs(),
        policy.allow_subject_alt_names,
        policy.allow_authorization_extensions
    );
    if let Some(db) = &ca.database {
        println!(
            "     state in the database {} (pool {}, timeout {:?}); cadir holds the CA's certificate and key",
            ca::db::redact(&db.url),
            db.pool_size,
            db.timeout
        );
    }
    let proxies: Vec<String> = ca.access.trusted_proxies.iter().map(ToString::to_string).collect();
    let from = if proxies.is_empty() { "any address".to_owned() } else { proxies.join(", ") };
    match (&ca.access.proxy_secret, with_lb) {
        (Some(_), _) => println!(
            "     X-Client-* headers believed from LBs that send the proxy secret, from {from}"
        ),
        (None, true) => println!(
            "     X-Client-* headers believed from this process's LB only (a secret made at start)"
        ),
        (None, false) => {
            println!("     X-Client-* headers believed from no LB (no proxy_secret_file)")
        }
    }
    let mut admins: Vec<&str> = ca.access.admin_certnames.iter().map(String::as_str).collect();
    admins.sort_unstable();
    println!("     admin certnames: {}", admins.join(", "));
}

fn print_lb(lb: &lb::LbConfig, local_ca: Option<&ca::config::CaConfig>) {
    // As `serve` does: without a pool "ca", the LB uses this process's CA.
    let mut lb = lb.clone();
    if let Some(ca) = local_ca {
        let ip = ca.listen.ip();
        let host = if ip.is_unspecified() { "127.0.0.1".to_owned() } else { ip.to_string() };
        let url = format!("http://{host}:{}", ca.listen.port());
        lb.add_local_ca_pool(&url, lb::Secret::new("a secret made at start"));
    }
    for line in lb.describe() {
        println!("{line}");
    }
}

/// Loads what `serve` would load, without starting anything or changing a file: the CA
/// directory and key, the LB's certificate, key, CA bundle and CRL.
pub fn load(config: &Config) -> anyhow::Result<()> {
    if let Some(ca) = &config.ca {
        let at = || {
            let hint = if ca.cadir.join("ca_crt.pem").exists() {
                String::new()
            } else {
                format!(" (no CA there yet: make one with `crossbar ca setup --cadir {} --ca-name NAME`)", ca.cadir.display())
            };
            format!("[ca] cadir = \"{}\"{hint}", ca.cadir.display())
        };
        let store =
            ca::fs::FsStore::inspect_files(&ca.cadir, ca.database.is_none()).with_context(at)?;
        ca::CaService::open(std::sync::Arc::new(store), ca.settings.clone()).with_context(at)?;
        if let Some(db) = &ca.database {
            ca::db::PgStore::inspect(db, &ca.cadir)
                .with_context(|| format!("[ca] database = \"{}\"", ca::db::redact(&db.url)))?;
        }
    }
    if let Some(lb) = &config.lb {
        lb::Lb::build(lb.clone()).context("[lb]")?;
    }
    Ok(())
}
