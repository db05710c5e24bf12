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
    match command {
        CaCommand::Setup { cadir, ca_name, key, ttl } => setup(&cadir, &ca_name, &key, &ttl),
        CaCommand::Generate { cadir, certname, dns_alt_names, out, ca_admin, key } => {
            offline::generate(&cadir, &certname, &dns_alt_names, &out, ca_admin, &key)
        }
        CaCommand::Import { cadir, from } => {
            let store = ca::setup::import(&cadir, &from).with_context(|| {
                format!("cannot import {} into {}", from.display(), cadir.display())
            })?;
            println!("Imported the CA from {} into {}", from.display(), store.dir().display());
            Ok(0)
        }
        CaCommand::List { all, json, target } => match mode(&target)? {
            Mode::Offline(ca) => offline::list(&ca, all, json),
            Mode::Online(client) => online::list(&client, all, json).await,
        },
        CaCommand::Sign { certname, all, target } => {
            let names = certnames(&certname)?;
            match mode(&target)? {
                Mode::Offline(ca) => offline::sign(&ca, &names, all),
                Mode::Online(client) => online::sign(&client, &names, all).await,
            }
        }
        CaCommand::Revoke { certname, target } => {
            let names = certnames(&certname)?;
            match mode(&target)? {
                Mode::Offline(ca) => offline::revoke(&ca, &names),
                Mode::Online(client) => online::revoke(&client, &names).await,
            }
        }
        CaCommand::Clean { certname, target } => {
            let names = certnames(&certname)?;
            match mode(&target)? {
                Mode::Offline(ca) => offline::clean(&ca, &names),
                Mode::Online(client) => online::clean(&client, &names).await,
            }
        }
    }
}

fn setup(cadir: &Path, ca_name: &str, key: &str, ttl: &str) -> anyhow::Result<u8> {
    let key = key.parse().with_context(|| format!("--key {key:?}"))?;
    let ttl = pki::timefmt::parse_duration(ttl).with_context(|| format!("--ttl {ttl:?}"))?;
    if ttl.is_zero() || ttl > pki::issue::MAX_TTL {
        bail!("--ttl must be between 1s and 50y");
    }
    ca::setup::setup(cadir, ca_name, key, ttl)
        .with_context(|| format!("cannot set up a CA in {}", cadir.display()))?;
    println!("Generated a CA \"Puppet CA: {ca_name}\" in {}", cadir.display());
    Ok(0)
}

enum Mode {
    Offline(Box<ca::CaService>),
    Online(crate::client::AdminClient),
}

fn mode(target: &Target) -> anyhow::Result<Mode> {
    if let Some(path) = &target.config {
        let config = crate::config::load(path)?;
        let Some(ca) = config.ca else { bail!("--config {}: no [ca] section", path.display()) };
        let dir = target.cadir.clone().unwrap_or(ca.cadir);
        return Ok(Mode::Offline(Box::new(open_offline(&dir, ca.settings)?)));
    }
    match (&target.cadir, &target.server) {
        (Some(dir), None) => Ok(Mode::Offline(Box::new(open_offline(dir, ca::CaSettings::default())?))),
        (None, Some(server)) => {
            let (Some(cert), Some(key), Some(cacert)) = (&target.cert, &target.key, &target.cacert) else {
                bail!("--server needs --cert, --key and --cacert");
            };
            Ok(Mode::Online(crate::client::AdminClient::new(server, cert, key, cacert)?))
        }
        _ => bail!("give --cadir DIR or --config FILE (offline), or --server URL --cert --key --cacert (online)"),
    }
}

fn open_offline(dir: &Path, settings: ca::CaSettings) -> anyhow::Result<ca::CaService> {
    let (store, _) = ca::fs::FsStore::open(dir)
        .with_context(|| format!("cannot open the CA directory {}", dir.display()))?;
    ca::CaService::open(Arc::new(store), settings).context("cannot load the CA")
}

fn certnames(raw: &[String]) -> anyhow::Result<Vec<Certname>> {
    raw.iter().map(|n| Certname::parse(n).with_context(|| format!("--certname {n:?}"))).collect()
}
