//! End-to-end tests: the real `crossbar` binary on port 0, real TLS, the real Debian Puppet 7
//! agent and `puppetserver ca` CLI, OpenSSL as an independent checker. One test binary, one
//! module per area (the rustls `api.rs` layout).

// A panic is a failed test; helpers unwrap freely.
#![allow(clippy::unwrap_used)]

mod admin_page;
mod attack;
mod ca_database;
mod ca_flows;
mod compilers;
mod crash;
mod hostile;
mod hosts;
mod lb;
mod package;
mod puppet8;
mod puppetserver_dir;
mod service;
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

/// The autosign token of the tests: what `csr_attributes.yaml` puts in challengePassword, with
/// characters PrintableString does not allow (Puppet writes it as one anyway).
const TOKEN_PASSWORD: &str = "S3cr3t_pass!";
/// A JWT-shaped autosign token (`.`, `-`, `_`, `!`).
const TOKEN_JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.x_Y-z!09";

/// Writes an autosign policy executable into `dir` that signs a request whose
/// challengePassword is one of the test tokens (read from the CSR on stdin with OpenSSL, an
/// independent parser), and refuses anything else.
fn token_policy(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("autosign-policy.sh");
    let script = format!(
        "#!/bin/sh\n# Signs when the CSR's challengePassword is a known token.\npassword=$(openssl req -noout -text 2>/dev/null | sed -n 's/^ *challengePassword *: *//p')\ncase \"$password\" in\n  '{TOKEN_PASSWORD}'|'{TOKEN_JWT}') exit 0 ;;\nesac\necho \"refused: $1 has challengePassword '$password'\" >&2\nexit 1\n"
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `csr_attributes.yaml` with a challengePassword and a `pp_role`.
fn csr_attributes(password: &str, role: &str) -> String {
    format!("custom_attributes:\n  1.2.840.113549.1.9.7: \"{password}\"\nextension_requests:\n  pp_role: {role}\n")
}

/// Runs the real `puppetserver ca` CLI (Debian's puppetserver 7 package); returns its output,
/// asserting it succeeded.
fn puppetserver_ca(args: &[&str]) -> String {
    let out = Command::new("puppetserver")
        .arg("ca")
        .args(args)
        .output()
        .expect("puppetserver CLI (the test command installs the puppetserver package)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "puppetserver ca {args:?} failed: {text}");
    text
}
