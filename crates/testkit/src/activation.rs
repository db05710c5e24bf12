//! Socket activation as systemd does it: listening sockets held by the test, handed to each
//! `crossbar serve` it starts (`LISTEN_FDS`, descriptors from 3, `LISTEN_PID` the child's), and
//! kept open while the child is replaced, so that connections made meanwhile wait in the
//! sockets' backlog.

use std::{
    net::{SocketAddr, TcpListener},
    os::fd::AsRawFd,
    path::Path,
    process::Command,
};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use crate::process::ChildGuard;

/// Listening sockets on loopback, on ports the kernel picks.
pub struct SocketHolder {
    sockets: Vec<TcpListener>,
}

impl SocketHolder {
    /// Binds `count` sockets on 127.0.0.1.
    pub fn bind(count: usize) -> Self {
        let sockets = (0..count).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        Self { sockets }
    }

    pub fn addr(&self, index: usize) -> SocketAddr {
        self.sockets[index].local_addr().unwrap()
    }

    /// Starts `bin args…` with the sockets as descriptors 3, 4, … and systemd's variables. The
    /// sockets are made inheritable only for the moment of the spawn.
    pub fn spawn(
        &self,
        name: &str,
        bin: &Path,
        args: &[&str],
        dir: &Path,
        env: &[(&str, &str)],
    ) -> ChildGuard {
        // bash moves them to 3, 4, … (through high numbers first, so that none is overwritten)
        // and sets LISTEN_PID to its own pid, which `exec` hands to crossbar.
        let mut script = String::new();
        for (i, socket) in self.sockets.iter().enumerate() {
            script.push_str(&format!("exec {}<&{}; ", 200 + i, socket.as_raw_fd()));
        }
        for i in 0..self.sockets.len() {
            script.push_str(&format!("exec {}<&{} {}<&-; ", 3 + i, 200 + i, 200 + i));
        }
        script.push_str(&format!(
            "LISTEN_PID=$$ LISTEN_FDS={} exec \"$0\" \"$@\"",
            self.sockets.len()
        ));
        let mut command = Command::new("bash");
        command.arg("-c").arg(script).arg(bin).args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        self.set_inheritable(true);
        let child = ChildGuard::spawn(name, command, dir);
        self.set_inheritable(false);
        child
    }

    fn set_inheritable(&self, inheritable: bool) {
        for socket in &self.sockets {
            let flags = if inheritable { FdFlag::empty() } else { FdFlag::FD_CLOEXEC };
            fcntl(socket.as_raw_fd(), FcntlArg::F_SETFD(flags)).unwrap();
        }
    }
}
