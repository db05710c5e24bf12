//! Child processes that die with the test, with their output kept in files for diagnosis.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running child; killed (SIGKILL) and reaped on drop. Its stdout and stderr go to
/// `<dir>/<name>.out` and `<dir>/<name>.err`.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
    out: PathBuf,
    err: PathBuf,
}

impl ChildGuard {
    /// Spawns `command` with its output captured under `dir`.
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Self {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        command
            .stdout(Stdio::from(File::create(&out).unwrap()))
            .stderr(Stdio::from(File::create(&err).unwrap()))
            .stdin(Stdio::null());
        let child =
            command.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Self { child: Some(child), name: name.to_owned(), out, err }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until stdout has a line containing `needle` and returns it.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> String {
        let name = self.name.clone();
        crate::wait::until(&format!("{name} to print {needle:?}"), timeout, || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "{name} exited ({status}) before printing {needle:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            self.stdout().lines().find(|l| l.contains(needle)).map(str::to_owned)
        })
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (e.g. "TERM", "HUP") without waiting.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {} failed", self.id());
    }

    /// Waits for the process to exit by itself and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let name = self.name.clone();
        let child = self.child.as_mut().unwrap();
        let status = crate::wait::until(&format!("{name} to exit"), timeout, || {
            child.try_wait().ok().flatten()
        });
        self.child = None;
        status.code()
    }
}

/// Resident and peak resident memory of a process, in KiB, from `/proc/<pid>/status`.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    memory_kib(pid).map(|(rss, _)| rss)
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let tail = |text: String| {
                text.lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            eprintln!(
                "--- {} stderr (last lines) ---\n{}\n--- end ---",
                self.name,
                tail(self.stderr())
            );
        }
        self.kill();
    }
}
