//! Counters the LB keeps, and their Prometheus text form. Every handle is created up front and
//! updated with atomics: the request path never looks a metric up or takes a lock.

use std::{
    fmt::Write,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
};

use crate::{body::ClientFault, edge::Refusal, pool::Pool, tls::TlsSnapshot};

/// Why a TLS handshake failed, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    Revoked,
    UnknownIssuer,
    Expired,
    BadCertificate,
    Protocol,
    Timeout,
    Closed,
    Other,
}

impl HandshakeFailure {
    pub(crate) const ALL: [Self; 8] = [
        Self::Revoked,
        Self::UnknownIssuer,
        Self::Expired,
        Self::BadCertificate,
        Self::Protocol,
        Self::Timeout,
        Self::Closed,
        Self::Other,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Expired => "expired",
            Self::BadCertificate => "bad_certificate",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::Other => "other",
        }
    }

    /// Classifies a failed handshake from the error rustls gave (inside tokio-rustls' I/O
    /// error), or from the I/O error itself when the peer went away.
    pub(crate) fn classify(error: &std::io::Error) -> Self {
        use rustls::{CertificateError as C, Error as E};
        if let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<E>()) {
            return match tls {
                E::InvalidCertificate(C::Revoked) => Self::Revoked,
                E::InvalidCertificate(C::UnknownIssuer) => Self::UnknownIssuer,
                E::InvalidCertificate(
                    C::Expired
                    | C::ExpiredContext { .. }
                    | C::NotValidYet
                    | C::NotValidYetContext { .. },
                ) => Self::Expired,
                E::InvalidCertificate(_) | E::NoCertificatesPresented => Self::BadCertificate,
                E::AlertReceived(_)
                | E::InappropriateMessage { .. }
                | E::InappropriateHandshakeMessage { .. }
                | E::InvalidMessage(_)
                | E::PeerIncompatible(_)
                | E::PeerMisbehaved(_)
                | E::DecryptError
                | E::NoApplicationProtocol
                | E::UnsupportedNameType => Self::Protocol,
                _ => Self::Other,
            };
        }
        use std::io::ErrorKind as K;
        match error.kind() {
            K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                Self::Closed
            }
            _ => Self::Other,
        }
    }
}

/// Listener-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) handshakes: AtomicU64,
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    pub(crate) connections_open: AtomicI64,
    /// Open connections idle between requests, held without hyper (see [`crate::idle`]).
    pub(crate) connections_parked: AtomicI64,
    pub(crate) connections_closed_revoked: AtomicU64,
    pub(crate) crl_pulls: AtomicU64,
    pub(crate) crl_pull_failures: AtomicU64,
    /// When the CRL was last pulled, and what came of it (for the admin page).
    pub(crate) crl_last_pull: std::sync::Mutex<Option<(time::OffsetDateTime, String)>>,
    accept_errors: AtomicU64,
    refusals: [AtomicU64; Refusal::ALL.len()],
    client_faults: [AtomicU64; ClientFault::ALL.len()],
}

/// Adds one to the counter of `value` in `counters`, indexed like `all`.
fn count<T: PartialEq>(counters: &[AtomicU64], all: &[T], value: &T) {
    if let Some(i) = all.iter().position(|v| v == value) {
        counters[i].fetch_add(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub(crate) fn handshake_failed(&self, reason: HandshakeFailure) {
        count(&self.handshake_failures, &HandshakeFailure::ALL, &reason);
    }

    /// Failed handshakes so far, by reason.
    pub(crate) fn handshake_failures(&self) -> Vec<(&'static str, u64)> {
        HandshakeFailure::ALL
            .iter()
            .zip(&self.handshake_failures)
            .map(|(reason, count)| (reason.label(), count.load(Ordering::Relaxed)))
            .collect()
    }

    /// Remembers the outcome of a CRL pull.
    pub(crate) fn crl_pulled(&self, outcome: impl Into<String>) {
        if let Ok(mut last) = self.crl_last_pull.lock() {
            *last = Some((time::OffsetDateTime::now_utc(), outcome.into()));
        }
    }

    pub(crate) fn accept_failed(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, refusal: Refusal) {
        count(&self.refusals, &Refusal::ALL, &refusal);
    }

    pub(crate) fn client_fault(&self, fault: ClientFault) {
        count(&self.client_faults, &ClientFault::ALL, &fault);
    }

    /// The Prometheus text exposition of everything.
    pub(crate) fn encode(&self, pools: &[&Arc<Pool>], tls: &TlsSnapshot, now_unix: i64) -> String {
        let mut out = String::with_capacity(8192);
        counter(
            &mut out,
            "crossbar_tls_handshakes_total",
            "Completed TLS handshakes.",
            "",
            self.handshakes.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "crossbar_tls_handshake_failures_total",
            "counter",
            "Failed TLS handshakes by reason.",
        );
        for (reason, count) in HandshakeFailure::ALL.iter().zip(&self.handshake_failures) {
            let _ = writeln!(
                out,
                "crossbar_tls_handshake_failures_total{{reason=\"{}\"}} {}",
                reason.label(),
                count.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "crossbar_accept_errors_total",
            "Failed accepts (out of file descriptors or memory pauses accepting).",
            "",
            self.accept_errors.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "crossbar_client_errors_total",
            "counter",
            "Requests refused for the client's own fault, by reason (none reached a backend's health).",
        );
        let refusals = Refusal::ALL.iter().map(|r| r.label()).zip(&self.refusals);
        let faults = ClientFault::ALL.iter().map(|f| f.label()).zip(&self.client_faults);
        for (reason, count) in refusals.chain(faults) {
            let _ = writeln!(
                out,
                "crossbar_client_errors_total{{reason=\"{reason}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        gauge(
            &mut out,
            "crossbar_connections_open",
            "Client connections open.",
            "",
            self.connections_open.load(Ordering::Relaxed) as f64,
        );
        gauge(
            &mut out,
            "crossbar_connections_idle",
            "Client connections parked: idle longer than timeouts.idle_park, held without HTTP buffers until their next request.",
            "",
            self.connections_parked.load(Ordering::Relaxed) as f64,
        );
        counter(
            &mut out,
            "crossbar_connections_closed_revoked_total",
            "Live connections closed because their client certificate was revoked.",
            "",
            self.connections_closed_revoked.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "crossbar_crl_pulls_total",
            "CRLs fetched from the CA pool and installed.",
            "",
            self.crl_pulls.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "crossbar_crl_pull_failures_total",
            "CRL pulls that failed or were refused.",
            "",
            self.crl_pull_failures.load(Ordering::Relaxed),
        );
        if let Some(crl) = &tls.crl {
            gauge(
                &mut out,
                "crossbar_crl_number",
                "CRL number of the CA's CRL in use.",
                "",
                crl.number as f64,
            );
            let age = now_unix - crl.this_update.unix_timestamp();
            gauge(
                &mut out,
                "crossbar_crl_age_seconds",
                "Seconds since the CRL in use was issued (thisUpdate).",
                "",
                age as f64,
            );
            if let Some(next) = crl.next_update {
                gauge(
                    &mut out,
                    "crossbar_crl_expires_in_seconds",
                    "Seconds until the CRL in use reaches nextUpdate.",
                    "",
                    (next.unix_timestamp() - now_unix) as f64,
                );
            }
        }
        encode_pools(&mut out, pools);
        out
    }
}

fn encode_pools(out: &mut String, pools: &[&Arc<Pool>]) {
    header(
        out,
        "crossbar_requests_total",
        "counter",
        "Answered requests by pool, member and status class.",
    );
    for pool in pools {
        for member in pool.members() {
            for (class, count) in
                ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().zip(&member.stats.by_class)
            {
                let _ = writeln!(
                    out,
                    "crossbar_requests_total{{pool=\"{}\",member=\"{}\",code=\"{class}\"}} {}",
                    pool.name,
                    member.url(),
                    count.load(Ordering::Relaxed)
                );
            }
        }
    }
    header(
        out,
        "crossbar_request_duration_seconds",
        "histogram",
        "Time to the end of the response, by pool.",
    );
    for pool in pools {
        pool.stats.duration.encode(
            out,
            "crossbar_request_duration_seconds",
            &format!("pool=\"{}\"", pool.name),
        );
    }
    header(
        out,
        "crossbar_shed_total",
        "counter",
        "Requests answered 503 + Retry-After without a backend answer, by pool and reason.",
    );
    for pool in pools {
        for (reason, count) in [
            ("no_member", &pool.stats.shed_no_member),
            ("queue_full", &pool.stats.shed_queue_full),
            ("queue_timeout", &pool.stats.shed_queue_timeout),
            ("backend_failed", &pool.stats.shed_backend_failed),
        ] {
            let _ = writeln!(
                out,
                "crossbar_shed_total{{pool=\"{}\",reason=\"{reason}\"}} {}",
                pool.name,
                count.load(Ordering::Relaxed)
            );
        }
    }
    header(out, "crossbar_queue_depth", "gauge", "Requests waiting for a member, by pool.");
    for pool in pools {
        let _ = writeln!(out, "crossbar_queue_depth{{pool=\"{}\"}} {}", pool.name, pool.queued());
    }
    for (name, help, value) in [
        (
            "crossbar_member_in_flight",
            "Requests in flight on a member.",
            &(|m: &crate::pool::Member| m.in_flight() as u64)
                as &dyn Fn(&crate::pool::Member) -> u64,
        ),
        (
            "crossbar_member_healthy",
            "1 when a member is in rotation by health.",
            &|m: &crate::pool::Member| u64::from(m.is_healthy()),
        ),
        (
            "crossbar_member_drained",
            "1 when an operator drained a member.",
            &|m: &crate::pool::Member| u64::from(m.is_drained()),
        ),
        (
            "crossbar_member_ejections_total",
            "Times a member was taken out by a failed request.",
            &|m: &crate::pool::Member| m.stats.ejections.load(Ordering::Relaxed),
        ),
    ] {
        header(out, name, if name.ends_with("_total") { "counter" } else { "gauge" }, help);
        for pool in pools {
            for member in pool.members() {
                let _ = writeln!(
                    out,
                    "{name}{{pool=\"{}\",member=\"{}\"}} {}",
                    pool.name,
                    member.url(),
                    value(member)
                );
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, labels: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name}{labels} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, labels: &str, value: f64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name}{labels} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_are_classified_from_typed_errors() {
        use rustls::{AlertDescription, CertificateError as C, Error as E};
        use std::io::{Error, ErrorKind};
        let tls = |e: E| Error::new(ErrorKind::InvalidData, e);
        let cases = [
            (tls(E::InvalidCertificate(C::Revoked)), HandshakeFailure::Revoked),
            (tls(E::InvalidCertificate(C::UnknownIssuer)), HandshakeFailure::UnknownIssuer),
            (tls(E::InvalidCertificate(C::Expired)), HandshakeFailure::Expired),
            (tls(E::InvalidCertificate(C::NotValidYet)), HandshakeFailure::Expired),
            (tls(E::InvalidCertificate(C::BadEncoding)), HandshakeFailure::BadCertificate),
            (tls(E::AlertReceived(AlertDescription::DecryptError)), HandshakeFailure::Protocol),
            (tls(E::DecryptError), HandshakeFailure::Protocol),
            (tls(E::General("odd".into())), HandshakeFailure::Other),
            (Error::new(ErrorKind::UnexpectedEof, "tls handshake eof"), HandshakeFailure::Closed),
            (Error::from(ErrorKind::ConnectionReset), HandshakeFailure::Closed),
            (Error::other("something else"), HandshakeFailure::Other),
        ];
        for (error, expected) in cases {
            assert_eq!(HandshakeFailure::classify(&error), expected, "{error}");
        }
    }
}
