//! What systemd asks of a `Type=notify` service, and nothing when not run by systemd:
//! readiness, reload and stop notifications, status lines for `systemctl status`, a watchdog fed
//! only while the serving runtimes make progress, and listeners handed over by socket
//! activation (`LISTEN_FDS`), matched to the configured addresses.

use std::{net::SocketAddr, time::Duration};

use sd_notify::NotifyState;

/// Sends notifications when `NOTIFY_SOCKET` is set; otherwise does nothing.
#[derive(Clone, Copy)]
pub struct Notifier;

impl Notifier {
    fn send(states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// Every listener bound, TLS and CRL loaded: serving.
    pub fn ready(status: &str) {
        Self::send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload starts (systemd ≥ 253 waits for the next `READY=1` with `Type=notify-reload`;
    /// `MONOTONIC_USEC` lets it tell this reload from an earlier one).
    pub fn reloading() {
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        states.push(NotifyState::Status("reloading the configuration"));
        Self::send(&states);
    }

    /// The reload is over, applied or refused.
    pub fn reloaded(outcome: &Result<(), String>) {
        let status = match outcome {
            Ok(()) => "configuration reloaded".to_owned(),
            Err(e) => format!("reload refused, running the previous configuration: {e}"),
        };
        Self::send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// Draining before exit.
    pub fn stopping() {
        Self::send(&[NotifyState::Stopping, NotifyState::Status("draining open requests")]);
    }

    pub fn status(status: &str) {
        Self::send(&[NotifyState::Status(status)]);
    }

    pub fn watchdog() {
        Self::send(&[NotifyState::Watchdog]);
    }

    /// The watchdog's period when systemd set one (`WatchdogSec=`).
    pub fn watchdog_period() -> Option<Duration> {
        sd_notify::watchdog_enabled()
    }
}

/// Listening sockets passed by socket activation, taken by the address they are bound to.
pub struct Activated {
    listeners: Vec<std::net::TcpListener>,
}

impl Activated {
    /// Takes the sockets of `LISTEN_FDS` (clearing the variables so children do not see them).
    /// Call before starting threads: it edits the environment.
    pub fn from_env() -> Self {
        let mut fds = listenfd::ListenFd::from_env();
        let listeners = (0..fds.len())
            .filter_map(|i| match fds.take_tcp_listener(i) {
                Ok(listener) => listener,
                Err(e) => {
                    eprintln!(
                        "crossbar: socket activation: descriptor {i} is not a TCP listener: {e}"
                    );
                    None
                }
            })
            .collect();
        Self { listeners }
    }

    /// No sockets (a command other than `serve`).
    pub fn none() -> Self {
        Self { listeners: Vec::new() }
    }

    /// The socket bound to `addr` (the same port, and the same address or a wildcard one), if
    /// systemd passed one.
    pub fn take(&mut self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        let index = self.listeners.iter().position(|l| {
            l.local_addr().is_ok_and(|bound| {
                bound.port() == addr.port()
                    && (bound.ip() == addr.ip()
                        || (bound.ip().is_unspecified() && addr.ip().is_unspecified()))
            })
        })?;
        Some(self.listeners.remove(index))
    }

    /// Sockets no configured listener wanted (a unit that does not match the config).
    pub fn leftover(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
    }
}
