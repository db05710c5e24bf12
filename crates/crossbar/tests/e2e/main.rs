//! End-to-end tests: the real `crossbar` binary on port 0, real TLS, the real Debian Puppet 7
//! agent and `puppetserver ca` CLI, OpenSSL as an independent checker. One test binary, one
//! module per area (the rustls `api.rs` layout).

// A panic is a failed test; helpers unwrap freely.
#![allow(clippy::unwrap_used)]

mod attack;
mod ca_flows;
mod compilers;
mod crash;
mod hostile;
mod lb;
mod puppetserver_dir;
mod tls_reload;

use std::{path::Path, process::Command};

/// The binary under test.
fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_crossbar"))
}

/// Runs `crossbar` with `args`, returning (exit code, stdout, stderr).
fn crossbar<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--server … --cert … --key … --cacert …` for an online `crossbar ca` command.
fn online(url: &str, cert: &Path, key: &Path, cacert: &Path) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    vec![
        "--server".into(),
        url.into(),
        "--cert".into(),
        path(cert),
        "--key".into(),
        path(key),
        "--cacert".into(),
        path(cacert),
    ]
}

/// `openssl verify -crl_check_all` of `cert` against the CA bundle and CRL chain.
fn openssl_verify(ca_bundle: &Path, crl: &Path, cert: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["verify", "-crl_check_all", "-CAfile"])
        .arg(ca_bundle)
        .arg("-CRLfile")
        .arg(crl)
        .arg(cert)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// The serial of a PEM certificate file, as big-endian bytes.
fn serial_of(cert: &Path) -> Vec<u8> {
    let der = pki::pemfile::blocks(&std::fs::read(cert).unwrap(), "CERTIFICATE").unwrap().remove(0);
    pki::describe::certificate(&der).unwrap().cert.unwrap().serial_bytes
}
