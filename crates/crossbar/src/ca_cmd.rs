//! `crossbar ca …`: offline on a CA directory, or online through a running crossbar.

mod offline;
mod online;
mod output;

use std::{path::Path, sync::Arc};

use anyhow::{bail, Context};
use pki::Certname;

use crate::cli::{CaCommand, Target};

/// Exit status when there is nothing to sign (as `puppetserver ca sign`).
pub const EXIT_NOTHING_TO_SIGN: u8 = 24;

pub async fn run(command: CaCommand) -> anyhow::Result<u8> {
    if let Some(client) = online(&command)? {
        return run_online(command, client).await;
    }
    // Offline work blocks (files, and the database client that blocks): not on the runtime.
    tokio::task::spawn_blocking(move || run_offline(command)).await?
}

async fn run_online(command: CaCommand, client: crate::client::AdminClient) -> anyhow::Result<u8> {
    match command {
        CaCommand::List { all, json, .. } => online::list(&client, all, json).await,
        CaCommand::Sign { certname, all, .. } => {
            online::sign(&client, &certnames(&certname)?, all).await
        }
        CaCommand::Revoke { certname, .. } => online::revoke(&client, &certnames(&certname)?).await,
        CaCommand::Clean { certname, .. } => online::clean(&client, &certnames(&certname)?).await,
        _ => bail!("this command works offline only"),
    }
}

fn run_offline(command: CaCommand) -> anyhow::Result<u8> {
    match command {
        CaCommand::Setup { cadir, ca_name, key, ttl, database } => {
            setup(&cadir, &ca_name, &key, &ttl, database.as_deref())
        }
        CaCommand::Generate {
            cadir,
            certname,
            dns_alt_names,
            out,
            file_name,
            ca_admin,
            key,
            database,
        } => {
            let target = Target {
                cadir: Some(cadir),
                config: None,
                database,
                server: None,
                cert: None,
                key: None,
                cacert: None,
            };
            let files = offline::Files { dir: &out, name: file_name.as_deref() };
            offline::generate(
                &open_offline(&target)?,
                &certname,
                &dns_alt_names,
                &files,
                ca_admin,
                &key,
            )
        }
        CaCommand::Import { cadir, from, database } => import(&cadir, &from, database.as_deref()),
        CaCommand::Export { cadir, database, to } => {
            let store =
                ca::db::PgStore::open(&db_settings(&database)?, &cadir).with_context(|| {
                    format!("cannot open the CA database {}", ca::db::redact(&database))
                })?;
            store.export(&to).with_context(|| format!("cannot export into {}", to.display()))?;
            println!("Exported the CA from {} into {}", ca::db::redact(&database), to.display());
            Ok(0)
        }
        CaCommand::List { all, json, target } => offline::list(&open_offline(&target)?, all, json),
        CaCommand::Sign { certname, all, target } => {
            offline::sign(&open_offline(&target)?, &certnames(&certname)?, all)
        }
        CaCommand::Revoke { certname, target } => {
            offline::revoke(&open_offline(&target)?, &certnames(&certname)?)
        }
        CaCommand::Clean { certname, target } => {
            offline::clean(&open_offline(&target)?, &certnames(&certname)?)
        }
        CaCommand::Prune { target } => offline::prune(&open_offline(&target)?),
    }
}

fn setup(
    cadir: &Path,
    ca_name: &str,
    key: &str,
    ttl: &str,
    database: Option<&str>,
) -> anyhow::Result<u8> {
    let key = key.parse().with_context(|| format!("--key {key:?}"))?;
    let ttl = pki::timefmt::parse_duration(ttl).with_context(|| format!("--ttl {ttl:?}"))?;
    if ttl.is_zero() || ttl > pki::issue::MAX_TTL {
        bail!("--ttl must be between 1s and 50y");
    }
    match database {
        Some(url) => {
            ca::db::PgStore::setup(&db_settings(url)?, cadir, ca_name, key, ttl).with_context(
                || format!("cannot set up a CA in {} and {}", cadir.display(), ca::db::redact(url)),
            )?;
            println!(
                "Generated a CA \"Puppet CA: {ca_name}\" in {} (state in {})",
                cadir.display(),
                ca::db::redact(url)
            );
        }
        None => {
            ca::setup::setup(cadir, ca_name, key, ttl)
                .with_context(|| format!("cannot set up a CA in {}", cadir.display()))?;
            println!("Generated a CA \"Puppet CA: {ca_name}\" in {}", cadir.display());
        }
    }
    Ok(0)
}

fn import(cadir: &Path, from: &Path, database: Option<&str>) -> anyhow::Result<u8> {
    let into = match database {
        Some(url) => {
            ca::db::PgStore::import(&db_settings(url)?, cadir, from).with_context(|| {
                format!("cannot import {} into {}", from.display(), ca::db::redact(url))
            })?;
            ca::db::redact(url)
        }
        None => {
            let store = ca::setup::import(cadir, from).with_context(|| {
                format!("cannot import {} into {}", from.display(), cadir.display())
            })?;
            store.dir().display().to_string()
        }
    };
    println!("Imported the CA from {} into {into}", from.display());
    Ok(0)
}

/// Settings for a database named on the command line.
fn db_settings(url: &str) -> anyhow::Result<ca::db::DbSettings> {
    ca::db::check_url(url)
        .map_err(|e| anyhow::anyhow!("--database {}: {e}", ca::db::redact(url)))?;
    Ok(ca::db::DbSettings {
        url: url.to_owned(),
        pool_size: 2,
        timeout: std::time::Duration::from_secs(10),
        outage_wait: ca::config::DEFAULT_OUTAGE_WAIT,
        tls_roots: None,
        password_file: None,
        node: format!("crossbar ca ({})", ca::audit::Actor::offline()),
    })
}

/// The admin client, when the command works through a running crossbar.
fn online(command: &CaCommand) -> anyhow::Result<Option<crate::client::AdminClient>> {
    let (CaCommand::List { target, .. }
    | CaCommand::Sign { target, .. }
    | CaCommand::Revoke { target, .. }
    | CaCommand::Clean { target, .. }) = command
    else {
        return Ok(None);
    };
    let Some(server) = &target.server else { return Ok(None) };
    let (Some(cert), Some(key), Some(cacert)) = (&target.cert, &target.key, &target.cacert) else {
        bail!("--server needs --cert, --key and --cacert");
    };
    Ok(Some(crate::client::AdminClient::new(server, cert, key, cacert)?))
}

/// The CA of `target`, offline: from `--config`'s `[ca]`, or `--cadir` (with `--database`).
fn open_offline(target: &Target) -> anyhow::Result<ca::CaService> {
    if let Some(path) = &target.config {
        let config = crate::config::load(path)?;
        let Some(mut ca) = config.ca else { bail!("--config {}: no [ca] section", path.display()) };
        if let Some(dir) = &target.cadir {
            ca.cadir = dir.clone();
        }
        let store = crate::serve::open_store(&ca)?;
        return ca::CaService::open(store, ca.settings).context("cannot load the CA");
    }
    let Some(dir) = &target.cadir else {
        bail!("give --cadir DIR (with --database URL when the CA's state is in PostgreSQL) or --config FILE (offline), or --server URL --cert --key --cacert (online)");
    };
    let store: Arc<dyn ca::CaStore> = match &target.database {
        Some(url) => Arc::new(
            ca::db::PgStore::open(&db_settings(url)?, dir)
                .with_context(|| format!("cannot open the CA database {}", ca::db::redact(url)))?,
        ),
        None => Arc::new(
            ca::fs::FsStore::open(dir)
                .with_context(|| format!("cannot open the CA directory {}", dir.display()))?
                .0,
        ),
    };
    ca::CaService::open(store, ca::CaSettings::default()).context("cannot load the CA")
}

fn certnames(raw: &[String]) -> anyhow::Result<Vec<Certname>> {
    raw.iter().map(|n| Certname::parse(n).with_context(|| format!("--certname {n:?}"))).collect()
}
