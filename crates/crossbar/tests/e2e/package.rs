//! The Debian package (`scripts/package.sh`, which the test command runs first) installed with
//! dpkg into a fresh Debian 12 root made with debootstrap (`scripts/debian12-root.sh`, copied
//! for each run): the system user, the file modes and conffiles, `crossbar --version`,
//! `man crossbar`, the completions; `crossbar check` on the packaged config before and after
//! the two setup commands the conffile names; the units verified by `systemd-analyze`, and its
//! security exposure score printed. Then the root boots with systemd (`systemd-nspawn`, its own
//! network namespace) and the packaged units run crossbar under all their hardening: socket
//! activation, readiness, a request through the LB, reload and stop.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// A copy of the pristine root, removed (with its /proc unmounted) on drop.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn fresh() -> Self {
        let base = std::env::var_os("CROSSBAR_DEBIAN12_ROOT")
            .map_or_else(|| PathBuf::from("/var/cache/crossbar/bookworm-base"), PathBuf::from);
        assert!(
            base.join(".crossbar-ready").is_file(),
            "no Debian 12 root at {} (the test command makes it: scripts/debian12-root.sh)",
            base.display()
        );
        let dir =
            tempfile::Builder::new().prefix("crossbar-deb12-").tempdir_in("/var/tmp").unwrap();
        let copied = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", base.display()))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(copied.success(), "copy the Debian 12 root");
        let mounted = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(dir.path().join("proc"))
            .status()
            .unwrap();
        assert!(mounted.success(), "mount /proc in the root");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Unmounts the host's /proc from the root before it boots: systemd in the container must
    /// see its own PID namespace only. With the host's still there, a mount made shared by
    /// other tests (`ip netns`) could show through, and systemd in the root took host
    /// processes for its service's and killed them on stop.
    fn unmount_proc(&self) {
        let unmounted = Command::new("umount").arg(self.path().join("proc")).status().unwrap();
        assert!(unmounted.success(), "unmount /proc from the root");
    }

    /// Runs `args` in the root.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("chroot").arg(self.path()).args(args).env("LC_ALL", "C").output().unwrap()
    }

    /// Runs `args` in the root; its stdout, asserting it succeeded.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path().join("proc")).status();
    }
}

/// The newest package `scripts/package.sh` built.
fn package() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the test command builds the package first: scripts/package.sh)",
                dir.display()
            )
        })
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop().expect("a crossbar .deb in target/debian")
}

#[test]
fn the_package_installs_into_a_fresh_debian_12_and_sets_up_in_two_commands() {
    let deb = package();
    let root = Root::fresh();
    std::fs::copy(&deb, root.path().join("tmp/crossbar.deb")).unwrap();
    let installed = root.ok(&["dpkg", "-i", "/tmp/crossbar.deb"]);
    assert!(installed.contains("Setting up crossbar"), "{installed}");

    let user = root.ok(&["getent", "passwd", "crossbar"]);
    let fields: Vec<&str> = user.trim().split(':').collect();
    assert_eq!((fields[5], fields[6]), ("/var/lib/crossbar", "/usr/sbin/nologin"), "{user}");
    assert!(fields[2].parse::<u32>().unwrap() < 1000, "a system user: {user}");
    let modes = root.ok(&[
        "stat",
        "-c",
        "%n %U %G %a",
        "/var/lib/crossbar",
        "/etc/crossbar/crossbar.toml",
        "/usr/bin/crossbar",
        "/usr/lib/systemd/system/crossbar.service",
    ]);
    for expected in [
        "/var/lib/crossbar crossbar crossbar 750",
        "/etc/crossbar/crossbar.toml root root 644",
        "/usr/bin/crossbar root root 755",
        "/usr/lib/systemd/system/crossbar.service root root 644",
    ] {
        assert!(modes.lines().any(|l| l == expected), "{expected:?} in\n{modes}");
    }
    let conffiles = root.ok(&["dpkg-query", "-W", "-f", "${Conffiles}", "crossbar"]);
    assert!(
        conffiles.contains("/etc/crossbar/crossbar.toml")
            && conffiles.contains("/etc/crossbar/autosign.conf"),
        "{conffiles}"
    );

    let version = root.ok(&["crossbar", "--version"]);
    assert_eq!(version.trim(), format!("crossbar {}", env!("CARGO_PKG_VERSION")));
    let man = root.ok(&["man", "-P", "cat", "crossbar"]);
    assert!(
        man.contains("SYNOPSIS") && man.contains("Load balancer and certificate authority"),
        "{man}"
    );
    let man_sign = root.ok(&["man", "-P", "cat", "crossbar-ca-sign"]);
    assert!(man_sign.contains("--certname"), "{man_sign}");
    for completion in [
        "/usr/share/bash-completion/completions/crossbar",
        "/usr/share/zsh/vendor-completions/_crossbar",
        "/usr/share/fish/vendor_completions.d/crossbar.fish",
    ] {
        assert!(root.path().join(completion.trim_start_matches('/')).is_file(), "{completion}");
    }

    // Before the CA exists, check says what to do; after the two commands, it passes.
    let before = root.run(&["crossbar", "check", "--config", "/etc/crossbar/crossbar.toml"]);
    assert!(!before.status.success());
    assert!(
        String::from_utf8_lossy(&before.stderr)
            .contains("crossbar ca setup --cadir /var/lib/crossbar/ca"),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    root.ok(&[
        "runuser",
        "-u",
        "crossbar",
        "--",
        "crossbar",
        "ca",
        "setup",
        "--cadir",
        "/var/lib/crossbar/ca",
        "--ca-name",
        "puppet.example.com",
        "--key",
        "ec-p256",
    ]);
    root.ok(&[
        "runuser",
        "-u",
        "crossbar",
        "--",
        "crossbar",
        "ca",
        "generate",
        "--cadir",
        "/var/lib/crossbar/ca",
        "--certname",
        "puppet.example.com",
        "--dns-alt-names",
        "puppet",
        "--ca-admin",
        "--out",
        "/var/lib/crossbar/tls",
        "--file-name",
        "lb",
        "--key",
        "ec-p256",
    ]);
    let checked = root.ok(&["crossbar", "check", "--config", "/etc/crossbar/crossbar.toml"]);
    assert!(checked.contains("configuration OK"), "{checked}");
    let key_mode = root.ok(&[
        "stat",
        "-c",
        "%U %a",
        "/var/lib/crossbar/ca/ca_key.pem",
        "/var/lib/crossbar/tls/lb.key",
    ]);
    assert_eq!(
        key_mode.lines().collect::<Vec<_>>(),
        ["crossbar 600", "crossbar 600"],
        "{key_mode}"
    );

    let verify = root.run(&[
        "systemd-analyze",
        "verify",
        "/usr/lib/systemd/system/crossbar.service",
        "/usr/lib/systemd/system/crossbar.socket",
    ]);
    let verify_text = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && verify_text.trim().is_empty(),
        "systemd-analyze verify: {verify_text}"
    );
    let security = root.ok(&[
        "systemd-analyze",
        "security",
        "--offline=true",
        "/usr/lib/systemd/system/crossbar.service",
    ]);
    let score = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("systemd-analyze security: {score}");
    let value: f64 = score.split_whitespace().find_map(|w| w.parse().ok()).expect("a score");
    assert!(value < 3.0, "the unit is hardened (exposure below 3.0, OK): {score}");

    let booted = Booted::start(&root);
    booted.ok(&["systemctl", "enable", "--now", "crossbar.socket", "crossbar.service"]);
    // Type=notify: active only once crossbar said READY=1.
    testkit::wait::until_true(
        "crossbar.service to be active",
        std::time::Duration::from_secs(60),
        || {
            booted
                .run(&["systemctl", "is-active", "crossbar.service"])
                .stdout
                .starts_with(b"active")
        },
    );
    let status = booted.ok(&["systemctl", "show", "-p", "StatusText", "crossbar.service"]);
    assert!(status.contains("StatusText=lb: ") && status.contains("CRL #0"), "{status}");
    let main_user = booted.ok(&["systemctl", "show", "-p", "User", "crossbar.service"]);
    assert_eq!(main_user.trim(), "User=crossbar");
    // A request through the LB under the unit's hardening: the CA's list, as an admin.
    let listed = booted.ok(&[
        "crossbar",
        "ca",
        "list",
        "--all",
        "--server",
        "https://puppet.example.com:8140",
        "--cert",
        "/var/lib/crossbar/tls/lb.pem",
        "--key",
        "/var/lib/crossbar/tls/lb.key",
        "--cacert",
        "/var/lib/crossbar/ca/ca_crt.pem",
    ]);
    assert!(listed.contains("puppet.example.com"), "{listed}");
    booted.ok(&["systemctl", "reload", "crossbar.service"]);
    testkit::wait::until_true(
        "the reload to be reported",
        std::time::Duration::from_secs(30),
        || {
            booted
                .run(&["systemctl", "show", "-p", "StatusText", "crossbar.service"])
                .stdout
                .windows(22)
                .any(|w| w == b"configuration reloaded")
        },
    );
    booted.ok(&["systemctl", "stop", "crossbar.service"]);
    let journal = booted.ok(&["journalctl", "-u", "crossbar.service", "--no-pager", "-o", "cat"]);
    assert!(
        journal.contains("using the socket systemd passed") && journal.contains("draining"),
        "{journal}"
    );
    assert!(
        !journal.contains("Operation not permitted"),
        "nothing refused by the sandbox: {journal}"
    );
}

/// The root booted with systemd as its init, in a network namespace of its own; commands run
/// in it with nsenter. Powered off on drop.
struct Booted {
    nspawn: testkit::process::ChildGuard,
    init: u32,
}

impl Booted {
    fn start(root: &Root) -> Self {
        // The agents' name for the server resolves inside.
        std::fs::write(
            root.path().join("etc/hosts"),
            "127.0.0.1 localhost puppet.example.com puppet\n",
        )
        .unwrap();
        root.unmount_proc();
        let mut command = Command::new("systemd-nspawn");
        command
            .args(["--register=no", "--keep-unit", "--private-network", "-q", "-D"])
            .arg(root.path())
            .arg("-b");
        let nspawn =
            testkit::process::ChildGuard::spawn("nspawn", command, root.path().parent().unwrap());
        let pid = nspawn.id();
        // nspawn's first child is a helper in the host's PID namespace that sets up the
        // container and exits; the container's init is the child that is PID 1 of its own
        // namespace (its `NSpid` ends in 1). Entering the helper instead would run the test's
        // commands half in the host.
        let init = testkit::wait::until(
            "the container's init",
            std::time::Duration::from_secs(30),
            || {
                let out = Command::new("pgrep").args(["-P", &pid.to_string()]).output().ok()?;
                String::from_utf8_lossy(&out.stdout).lines().find_map(|line| {
                    let child: u32 = line.trim().parse().ok()?;
                    let status = std::fs::read_to_string(format!("/proc/{child}/status")).ok()?;
                    let nspid = status.lines().find(|l| l.starts_with("NSpid:"))?;
                    let ids: Vec<&str> = nspid.split_whitespace().skip(1).collect();
                    (ids.len() > 1 && ids.last() == Some(&"1")).then_some(child)
                })
            },
        );
        let booted = Self { nspawn, init };
        testkit::wait::until_true(
            "systemd to finish booting",
            std::time::Duration::from_secs(60),
            || {
                let state = booted.run(&["systemctl", "is-system-running"]);
                let text = String::from_utf8_lossy(&state.stdout);
                text.starts_with("running") || text.starts_with("degraded")
            },
        );
        booted
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-m", "-u", "-i", "-n", "-p", "--"])
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} in the booted root failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        let _ = self.run(&["systemctl", "poweroff"]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.nspawn.is_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.nspawn.kill();
    }
}
