//! `crossbar check`: what the config file means, printed.

use anyhow::Context;

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
    if let Some(db) = &ca.database {
        println!(
            "     state in the database {} (pool {}, timeout {:?}); cadir holds the CA's certificate and key",
            ca::db::redact(&db.url),
            db.pool_size,
            db.timeout
        );
    }
    let proxies: Vec<String> = ca.access.trusted_proxies.iter().map(ToString::to_string).collect();
    let secret = if ca.access.proxy_secret.is_some() {
        "a proxy secret"
    } else {
        "nothing (no LB is believed)"
    };
    let from = if proxies.is_empty() { "any address".to_owned() } else { proxies.join(", ") };
    println!("     X-Client-* headers believed from LBs that send {secret}, from {from}");
    let mut admins: Vec<&str> = ca.access.admin_certnames.iter().map(String::as_str).collect();
    admins.sort_unstable();
    println!("     admin certnames: {}", admins.join(", "));
}

fn print_lb(lb: &lb::LbConfig, has_local_ca: bool) {
    for line in lb.describe() {
        println!("{line}");
    }
    if has_local_ca && !lb.has_pool(lb::CA_POOL) {
        println!("     ca: this process's CA (sent a secret made at start)");
    }
}

/// Loads what `serve` would load, without starting anything or changing a file: the CA
/// directory and key, the LB's certificate, key, CA bundle and CRL.
pub fn load(config: &Config) -> anyhow::Result<()> {
    if let Some(ca) = &config.ca {
        let at = || format!("[ca] cadir = \"{}\"", ca.cadir.display());
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
