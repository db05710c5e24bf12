//! Counters the LB keeps, and their Prometheus text form. Every handle is created up front and
//! updated with atomics: the request path never looks a metric up or takes a lock.

use std::{
    fmt::Write,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

use crate::{proxy::Proxy, tls::TlsSnapshot};

/// Why a TLS handshake failed, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
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
    pub const ALL: [Self; 8] = [
        Self::Revoked,
        Self::UnknownIssuer,
        Self::Expired,
        Self::BadCertificate,
        Self::Protocol,
        Self::Timeout,
        Self::Closed,
        Self::Other,
    ];

    pub fn label(self) -> &'static str {
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

    /// Classifies a handshake error by its text (rustls errors are not structured past `io`).
    pub fn classify(error: &str) -> Self {
        let e = error.to_ascii_lowercase();
        if e.contains("revoked") {
            Self::Revoked
        } else if e.contains("unknownissuer")
            || e.contains("unknown issuer")
            || e.contains("unknownca")
        {
            Self::UnknownIssuer
        } else if e.contains("expired") || e.contains("notvalidyet") {
            Self::Expired
        } else if e.contains("certificate") {
            Self::BadCertificate
        } else if e.contains("eof") || e.contains("reset") || e.contains("broken pipe") {
            Self::Closed
        } else if e.contains("alert")
            || e.contains("handshake")
            || e.contains("protocol")
            || e.contains("message")
        {
            Self::Protocol
        } else {
            Self::Other
        }
    }
}

/// Upper bounds of the request duration histogram, in seconds.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// A cumulative histogram of request durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn encode(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (le, bucket) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Listener-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub handshakes: AtomicU64,
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    pub connections_open: AtomicI64,
    /// Open connections idle between requests, held without hyper (see [`crate::idle`]).
    pub connections_parked: AtomicI64,
    pub connections_closed_revoked: AtomicU64,
    pub crl_pulls: AtomicU64,
    pub crl_pull_failures: AtomicU64,
}

impl Metrics {
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        let index = HandshakeFailure::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(HandshakeFailure::ALL.len() - 1);
        self.handshake_failures[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything.
    pub fn encode(&self, proxy: &Proxy, tls: &TlsSnapshot, now_unix: i64) -> String {
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
        encode_pools(&mut out, proxy);
        out
    }
}

fn encode_pools(out: &mut String, proxy: &Proxy) {
    let mut pools: Vec<_> = proxy.pools().collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    header(
        out,
        "crossbar_requests_total",
        "counter",
        "Answered requests by pool, member and status class.",
    );
    for pool in &pools {
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
    for pool in &pools {
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
    for pool in &pools {
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
    for pool in &pools {
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
        for pool in &pools {
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
    fn handshake_errors_are_classified() {
        let cases = [
            ("invalid peer certificate: Revoked", HandshakeFailure::Revoked),
            ("invalid peer certificate: UnknownIssuer", HandshakeFailure::UnknownIssuer),
            ("invalid peer certificate: Expired", HandshakeFailure::Expired),
            ("invalid peer certificate: BadEncoding", HandshakeFailure::BadCertificate),
            ("tls handshake eof", HandshakeFailure::Closed),
            ("received fatal alert: DecryptError", HandshakeFailure::Protocol),
            ("something else", HandshakeFailure::Other),
        ];
        for (text, expected) in cases {
            assert_eq!(HandshakeFailure::classify(text), expected, "{text}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(40));
        h.observe(Duration::from_secs(2));
        let mut out = String::new();
        h.encode(&mut out, "d", "pool=\"p\"");
        assert!(out.contains("d_bucket{pool=\"p\",le=\"0.005\"} 1\n"));
        assert!(out.contains("d_bucket{pool=\"p\",le=\"0.05\"} 2\n"));
        assert!(out.contains("d_bucket{pool=\"p\",le=\"2.5\"} 3\n"));
        assert!(out.contains("d_bucket{pool=\"p\",le=\"+Inf\"} 3\n"));
        assert!(out.contains("d_count{pool=\"p\"} 3\n"));
    }
}
