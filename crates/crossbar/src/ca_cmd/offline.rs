//! The CA commands working on a CA directory directly (the CA may be serving it meanwhile:
//! every write takes the directory's lock).

use std::path::Path;

use anyhow::Context;
use pki::{AltName, Certname};

use super::{output, EXIT_NOTHING_TO_SIGN};
use ca::service::State;

pub(super) fn list(ca: &ca::CaService, all: bool, json: bool) -> anyhow::Result<u8> {
    let only = if all { None } else { Some(State::Requested) };
    let statuses = ca.statuses(only)?;
    output::print_statuses(
        &statuses.iter().map(ca::service::CertStatus::to_json).collect::<Vec<_>>(),
        json,
    );
    Ok(0)
}

pub(super) fn sign(ca: &ca::CaService, names: &[Certname], all: bool) -> anyhow::Result<u8> {
    let names: Vec<Certname> = if all {
        ca.statuses(Some(State::Requested))?.into_iter().map(|s| s.name).collect()
    } else {
        names.to_vec()
    };
    if names.is_empty() {
        println!("No waiting certificate requests to sign");
        return Ok(EXIT_NOTHING_TO_SIGN);
    }
    let mut failed = 0;
    for name in &names {
        match ca.sign(name, None, &ca::audit::Actor::offline()) {
            Ok(issued) => println!(
                "Successfully signed certificate request for {name} (serial {})",
                issued.serial
            ),
            Err(e) => {
                eprintln!("Could not sign {name}: {e}");
                failed += 1;
            }
        }
    }
    Ok(u8::from(failed > 0))
}

pub(super) fn revoke(ca: &ca::CaService, names: &[Certname]) -> anyhow::Result<u8> {
    ca.revoke(names, &ca::audit::Actor::offline())?;
    for name in names {
        println!("Certificate for {name} has been revoked");
    }
    Ok(0)
}

pub(super) fn clean(ca: &ca::CaService, names: &[Certname]) -> anyhow::Result<u8> {
    let outcome = ca.clean(names, &ca::audit::Actor::offline())?;
    for name in names.iter().filter(|n| !outcome.missing.contains(n)) {
        println!("Certificate for {name} has been revoked and deleted");
    }
    for name in &outcome.missing {
        eprintln!("Could not find a certificate for {name}");
    }
    Ok(u8::from(!outcome.missing.is_empty()))
}

pub(super) fn prune(ca: &ca::CaService) -> anyhow::Result<u8> {
    let removed = ca.prune_crl(&ca::audit::Actor::offline())?;
    match removed {
        0 => println!("The CRL lists no expired certificate; left as it is"),
        n => println!("Removed {n} expired certificate(s) from the CRL"),
    }
    Ok(0)
}

/// Where `generate` writes: a directory, and the files' name (the certname unless given).
pub(super) struct Files<'a> {
    pub(super) dir: &'a Path,
    pub(super) name: Option<&'a str>,
}

/// Issues `<name>.pem` and `<name>.key` into `files.dir`, with a copy of the CA bundle.
pub(super) fn generate(
    ca: &ca::CaService,
    certname: &str,
    alt_names: &[String],
    files: &Files<'_>,
    ca_admin: bool,
    key: &str,
) -> anyhow::Result<u8> {
    let out = files.dir;
    let name = Certname::parse(certname).with_context(|| format!("--certname {certname:?}"))?;
    let base = files.name.map_or_else(|| name.to_string(), str::to_owned);
    if base.is_empty() || base.contains('/') || base.starts_with('.') {
        anyhow::bail!("--file-name {base:?}: a plain file name, please");
    }
    let key = key.parse().with_context(|| format!("--key {key:?}"))?;
    let alt_names = alt_names.iter().filter(|n| !n.is_empty()).map(|n| parse_alt_name(n)).collect();
    let (key_pem, issued) = ca.generate(&name, alt_names, ca_admin, key)?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {}: cannot create", out.display()))?;
    let bundle = ca.store().ca_bundle()?.bytes;
    let cert_path = out.join(format!("{base}.pem"));
    write(&cert_path, issued.pem.as_bytes(), 0o644)?;
    write(&out.join(format!("{base}.key")), key_pem.as_bytes(), 0o600)?;
    write(&out.join("ca_crt.pem"), &bundle, 0o644)?;
    println!(
        "Generated a certificate for {name} (serial {}) in {}",
        issued.serial,
        cert_path.display()
    );
    Ok(0)
}

fn parse_alt_name(text: &str) -> AltName {
    let bare = text.strip_prefix("DNS:").unwrap_or(text);
    match text.strip_prefix("IP:").unwrap_or(bare).parse() {
        Ok(ip) => AltName::Ip(ip),
        Err(_) => AltName::Dns(bare.to_owned()),
    }
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))
}
