//! Deciding whether a new CSR is signed at once: Puppet's `autosign` setting.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use pki::Certname;
use tokio::{io::AsyncWriteExt, process::Command};

/// Default bound on an autosign policy executable.
pub const DEFAULT_POLICY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `autosign` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Autosign {
    Off,
    On,
    /// Puppet's path form, looked at on every decision: an executable is a policy, another file
    /// a glob whitelist (`autosign.conf`), a missing file means no.
    Path {
        path: PathBuf,
        timeout: Duration,
    },
    /// Always an executable policy.
    Policy {
        path: PathBuf,
        timeout: Duration,
    },
}

impl Autosign {
    /// Whether to sign `name` now. Failures of the policy or the file mean "no" and are logged.
    pub async fn decide(&self, name: &Certname, submitted: &[u8]) -> bool {
        match self {
            Self::Off => false,
            Self::On => true,
            Self::Policy { path, timeout } => run_policy(path, *timeout, name, submitted).await,
            Self::Path { path, timeout } => match tokio::fs::metadata(path).await {
                Err(_) => false,
                Ok(meta) if meta.permissions().mode() & 0o111 != 0 => {
                    run_policy(path, *timeout, name, submitted).await
                }
                Ok(_) => whitelist_allows(path, name).await,
            },
        }
    }
}

async fn whitelist_allows(path: &Path, name: &Certname) -> bool {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot read the autosign whitelist; not signing");
            return false;
        }
    };
    let rules = pki::autosign::parse(&text);
    for rule in &rules {
        if let pki::autosign::Rule::Invalid(line) = rule {
            tracing::error!(file = %path.display(), line, "invalid autosign whitelist line (no '#' or spaces inside an entry); it matches nothing");
        }
    }
    pki::autosign::matches(&rules, name.as_str())
}

/// Runs `path <certname>` with the CSR on stdin; exit 0 signs. Bounded by `timeout`, after
/// which the process is killed.
async fn run_policy(path: &Path, timeout: Duration, name: &Certname, submitted: &[u8]) -> bool {
    match tokio::time::timeout(timeout, policy_verdict(path, name, submitted)).await {
        Ok(Ok(allowed)) => allowed,
        Ok(Err(e)) => {
            tracing::error!(policy = %path.display(), certname = %name, error = %e, "autosign policy failed to run; not signing");
            false
        }
        Err(_) => {
            tracing::error!(policy = %path.display(), certname = %name, ?timeout, "autosign policy timed out and was killed; not signing");
            false
        }
    }
}

async fn policy_verdict(path: &Path, name: &Certname, submitted: &[u8]) -> std::io::Result<bool> {
    let mut child = Command::new(path)
        .arg(name.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A policy that exits without reading stdin closes the pipe; that is not an error.
        let _ = stdin.write_all(submitted).await;
    }
    let output = child.wait_with_output().await?;
    let allowed = output.status.success();
    tracing::info!(
        policy = %path.display(),
        certname = %name,
        status = %output.status,
        stdout = %String::from_utf8_lossy(&output.stdout).trim(),
        stderr = %String::from_utf8_lossy(&output.stderr).trim(),
        "autosign policy decided {}", if allowed { "to sign" } else { "not to sign" }
    );
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[tokio::test]
    async fn every_form_of_the_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = Certname::parse("web1.example.com").expect("name");
        let other = Certname::parse("db1.example.org").expect("name");
        let csr = b"-----BEGIN CERTIFICATE REQUEST-----\n";
        let globs = dir.path().join("autosign.conf");
        std::fs::write(&globs, "# comment\n*.example.com\n").expect("write");
        let quick = Duration::from_secs(10);
        let check_stdin = script(
            dir.path(),
            "check",
            r#"test "$1" = web1.example.com && grep -q 'BEGIN CERTIFICATE REQUEST'"#,
        );
        let refuse = script(dir.path(), "refuse", "exit 1");
        let hang = script(dir.path(), "hang", "exec sleep 30");
        let cases: Vec<(Autosign, &Certname, bool)> = vec![
            (Autosign::Off, &name, false),
            (Autosign::On, &name, true),
            (Autosign::Path { path: globs.clone(), timeout: quick }, &name, true),
            (Autosign::Path { path: globs.clone(), timeout: quick }, &other, false),
            (Autosign::Path { path: dir.path().join("missing"), timeout: quick }, &name, false),
            (Autosign::Path { path: check_stdin.clone(), timeout: quick }, &name, true),
            (Autosign::Policy { path: check_stdin, timeout: quick }, &other, false),
            (Autosign::Policy { path: refuse, timeout: quick }, &name, false),
            (Autosign::Policy { path: dir.path().join("missing"), timeout: quick }, &name, false),
            (Autosign::Policy { path: hang, timeout: Duration::from_millis(300) }, &name, false),
        ];
        for (setting, certname, expected) in cases {
            assert_eq!(setting.decide(certname, csr).await, expected, "{setting:?} for {certname}");
        }
    }
}
