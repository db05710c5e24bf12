//! The audit trail: one structured event for every CA write, saying who asked, what was done
//! and to which certificate. Each event is logged (`crossbar::audit`, one line, or one JSON
//! object with `[log] format = "json"`) and handed to the store, which keeps it when it can
//! (the database's `ca_audit` table).

use std::fmt;

use pki::{Certname, Serial};

/// Who asked for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An administrator's certificate (`pp_cli_auth`, or a name in `admin_certnames`) through
    /// an LB.
    Admin(String),
    /// The agent itself, with its own certificate (renewal) or without one (a CSR).
    Agent(String),
    /// The autosign setting or policy, deciding on a submitted CSR.
    Autosign,
    /// `crossbar ca …` on the CA host, by this Unix user.
    Offline(String),
    /// The CA itself (re-signing a CRL near its end).
    Ca,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admin(name) => write!(f, "admin {name}"),
            Self::Agent(name) => write!(f, "agent {name}"),
            Self::Autosign => f.write_str("autosign"),
            Self::Offline(user) => write!(f, "offline CLI ({user})"),
            Self::Ca => f.write_str("ca"),
        }
    }
}

impl Actor {
    /// The offline CLI, as the Unix user running it.
    pub fn offline() -> Self {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown user".into());
        Self::Offline(user)
    }
}

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A CSR saved as pending.
    Submit,
    /// Autosign refused a CSR (it stays pending).
    AutosignRefused,
    Sign,
    Renew,
    Revoke,
    Clean,
    /// A certificate and/or request removed without revocation (`certificate_status` DELETE).
    Delete,
    /// A pending request removed (`certificate_request` DELETE).
    DeleteRequest,
    /// The CRL re-signed before its nextUpdate.
    CrlRefresh,
    /// Expired certificates' entries removed from the CRL.
    CrlPrune,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::AutosignRefused => "autosign-refused",
            Self::Sign => "sign",
            Self::Renew => "renew",
            Self::Revoke => "revoke",
            Self::Clean => "clean",
            Self::Delete => "delete",
            Self::DeleteRequest => "delete-request",
            Self::CrlRefresh => "crl-refresh",
            Self::CrlPrune => "crl-prune",
        }
    }
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub actor: Actor,
    pub action: Action,
    pub certname: Option<Certname>,
    pub serial: Option<Serial>,
    /// Anything else worth keeping (the policy's reason, a CRL number).
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(actor: &Actor, action: Action, certname: Option<&Certname>) -> Self {
        Self {
            actor: actor.clone(),
            action,
            certname: certname.cloned(),
            serial: None,
            detail: None,
        }
    }

    pub fn serial(mut self, serial: Serial) -> Self {
        self.serial = Some(serial);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Logs the event.
    pub fn log(&self) {
        tracing::info!(
            target: "crossbar::audit",
            actor = %self.actor,
            action = self.action.as_str(),
            certname = self.certname.as_ref().map_or("-", Certname::as_str),
            serial = %self.serial.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            detail = self.detail.as_deref().unwrap_or(""),
            "CA write"
        );
    }
}

/// One event as a store kept it, for reading back (the admin page).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: f64,
    /// The CA node that did it.
    pub node: String,
    pub actor: String,
    pub action: String,
    pub certname: Option<String>,
    /// Hexadecimal.
    pub serial: Option<String>,
    pub detail: Option<String>,
}
