//! The CA's counters, and their Prometheus text (`[ca] admin_listen`, `/metrics`): requests by
//! endpoint and status, certificates signed, renewed and revoked, autosign decisions by outcome,
//! the signing latency, store errors; the pending CSRs and the CRL are read at scrape time.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use crate::{audit::Action, audit::Actor, store::StoreError};

/// Upper bounds of the signing latency buckets, in seconds.
const SIGNING_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Everything counted since the process started.
#[derive(Default)]
pub struct CaMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    signed: AtomicU64,
    renewed: AtomicU64,
    revoked: AtomicU64,
    autosign_signed: AtomicU64,
    autosign_refused: AtomicU64,
    store_errors: Mutex<BTreeMap<&'static str, u64>>,
    signing: Histogram,
}

/// What is read from the store when scraped.
pub struct Gauges {
    pub pending: Option<usize>,
    pub crl_number: Option<u64>,
    /// Seconds since the epoch.
    pub crl_next_update: Option<i64>,
}

impl CaMetrics {
    /// One answered request: `endpoint` names the route (`PUT certificate_request`).
    pub fn request(&self, endpoint: &str, status: u16) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((endpoint.to_owned(), status)).or_default() += 1;
        }
    }

    /// One CA write, as the audit trail records it.
    pub fn event(&self, action: Action, actor: &Actor) {
        let counter = match (action, actor) {
            (Action::Sign, Actor::Autosign) => {
                self.autosign_signed.fetch_add(1, Ordering::Relaxed);
                &self.signed
            }
            (Action::Sign, _) => &self.signed,
            (Action::Renew, _) => &self.renewed,
            (Action::Revoke | Action::Clean, _) => &self.revoked,
            (Action::AutosignRefused, _) => &self.autosign_refused,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// How long one signing took, from the request to the stored certificate.
    pub fn signing_took(&self, took: Duration) {
        self.signing.observe(took.as_secs_f64());
    }

    /// A store failure seen by a request.
    pub fn store_error(&self, error: &StoreError) {
        let kind = match error {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Io { .. } => "io",
            StoreError::Corrupt { .. } | StoreError::Incomplete { .. } => "corrupt",
            StoreError::Database(_) => "database",
            StoreError::Conflict { .. }
            | StoreError::RequestChanged(_)
            | StoreError::SerialTaken(_) => return,
            StoreError::AlreadyExists(_) => "other",
        };
        if let Ok(mut errors) = self.store_errors.lock() {
            *errors.entry(kind).or_default() += 1;
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            "crossbar_ca_requests_total",
            "counter",
            "CA API requests answered, by endpoint and status.",
        );
        let mut text = String::new();
        if let Ok(requests) = self.requests.lock() {
            for ((endpoint, status), count) in requests.iter() {
                let _ = writeln!(text, "crossbar_ca_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {count}");
            }
        }
        out.push_str(&text);
        let counters = [
            (
                "crossbar_ca_certificates_signed_total",
                "Certificates signed (autosigned, by an admin, or generated).",
                &self.signed,
            ),
            (
                "crossbar_ca_certificates_renewed_total",
                "Certificates renewed (Puppet 8's certificate_renewal).",
                &self.renewed,
            ),
            (
                "crossbar_ca_certificates_revoked_total",
                "Certificates revoked (revoke and clean).",
                &self.revoked,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let name = "crossbar_ca_autosign_decisions_total";
        let _ = writeln!(
            out,
            "# HELP {name} Autosign decisions on submitted CSRs, by outcome.\n# TYPE {name} counter\n{name}{{outcome=\"signed\"}} {}\n{name}{{outcome=\"refused\"}} {}",
            self.autosign_signed.load(Ordering::Relaxed),
            self.autosign_refused.load(Ordering::Relaxed)
        );
        let name = "crossbar_ca_store_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Store failures seen by requests, by kind.\n# TYPE {name} counter"
        );
        if let Ok(errors) = self.store_errors.lock() {
            for kind in ["unavailable", "database", "io", "corrupt", "other"] {
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{kind}\"}} {}",
                    errors.get(kind).copied().unwrap_or(0)
                );
            }
        }
        self.signing.encode(
            &mut out,
            "crossbar_ca_signing_duration_seconds",
            "Time to sign and store a certificate.",
        );
        let gauge = |out: &mut String, name: &str, help: &str, value: Option<String>| {
            if let Some(value) = value {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
            }
        };
        gauge(
            &mut out,
            "crossbar_ca_requests_pending",
            "CSRs waiting to be signed.",
            gauges.pending.map(|v| v.to_string()),
        );
        gauge(
            &mut out,
            "crossbar_ca_crl_number",
            "The CRL's number.",
            gauges.crl_number.map(|v| v.to_string()),
        );
        gauge(
            &mut out,
            "crossbar_ca_crl_next_update_seconds",
            "The CRL's nextUpdate, in seconds since the epoch.",
            gauges.crl_next_update.map(|v| v.to_string()),
        );
        out
    }
}

/// A fixed-bucket histogram of seconds.
#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; SIGNING_BUCKETS.len()],
    count: AtomicU64,
    /// The sum, in microseconds.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        if let Some(bucket) = SIGNING_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        // Whole microseconds: a signing never takes anywhere near u64::MAX of them.
        let micros = (seconds * 1e6).round().clamp(0.0, 1e15) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn encode(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in SIGNING_BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_requests_are_counted_and_encoded() {
        let metrics = CaMetrics::default();
        metrics.event(Action::Sign, &Actor::Autosign);
        metrics.event(Action::Sign, &Actor::Admin("ops".into()));
        metrics.event(Action::AutosignRefused, &Actor::Autosign);
        metrics.event(Action::Revoke, &Actor::Ca);
        metrics.event(Action::Submit, &Actor::Agent("a".into()));
        metrics.request("PUT certificate_request", 200);
        metrics.request("PUT certificate_request", 200);
        metrics.signing_took(Duration::from_micros(1500));
        metrics.store_error(&StoreError::Unavailable("down".into()));
        let text = metrics.encode(&Gauges {
            pending: Some(3),
            crl_number: Some(7),
            crl_next_update: None,
        });
        for line in [
            "crossbar_ca_requests_total{endpoint=\"PUT certificate_request\",status=\"200\"} 2",
            "crossbar_ca_certificates_signed_total 2",
            "crossbar_ca_certificates_revoked_total 1",
            "crossbar_ca_autosign_decisions_total{outcome=\"signed\"} 1",
            "crossbar_ca_autosign_decisions_total{outcome=\"refused\"} 1",
            "crossbar_ca_store_errors_total{kind=\"unavailable\"} 1",
            "crossbar_ca_signing_duration_seconds_bucket{le=\"0.001\"} 0",
            "crossbar_ca_signing_duration_seconds_bucket{le=\"0.002\"} 1",
            "crossbar_ca_signing_duration_seconds_count 1",
            "crossbar_ca_requests_pending 3",
            "crossbar_ca_crl_number 7",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("crl_next_update"), "an unknown gauge is left out");
    }
}
