//! What a simulation measured: latency histograms per request kind, counters, errors by kind;
//! a one-line progress view and the final report (JSON and Markdown).

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::agent::Kind;

/// Longest latency a histogram holds, in microseconds (10 minutes: an agent's read timeout).
const MAX_MICROS: u64 = 600_000_000;

/// Shared by every simulated agent.
pub struct Stats {
    started: Instant,
    kinds: Vec<KindStats>,
    pub handshakes: AtomicU64,
    pub runs: AtomicU64,
    pub runs_failed: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    handshake_time: Mutex<Histogram<u64>>,
    run_time: Mutex<Histogram<u64>>,
    /// When each successful run ended, seconds from the start.
    completions: Mutex<Vec<f64>>,
}

struct KindStats {
    ok: AtomicU64,
    failed: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    // Constant bounds hdrhistogram accepts (it refuses only low < 1, high < 2 * low, or more than
    // 5 significant figures).
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        let kinds = Kind::ALL
            .iter()
            .map(|_| KindStats {
                ok: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                latency: Mutex::new(histogram()),
            })
            .collect();
        Self {
            started: Instant::now(),
            kinds,
            handshakes: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            runs_failed: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            handshake_time: Mutex::new(histogram()),
            run_time: Mutex::new(histogram()),
            completions: Mutex::new(Vec::new()),
        }
    }

    fn kind(&self, kind: Kind) -> &KindStats {
        let index = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &self.kinds[index]
    }

    /// A request answered with a success status, taking `elapsed`.
    pub fn ok(&self, kind: Kind, elapsed: Duration) {
        let stats = self.kind(kind);
        stats.ok.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut h) = stats.latency.lock() {
            let _ = h.record((elapsed.as_micros() as u64).clamp(1, MAX_MICROS));
        }
    }

    /// A request that failed: a status, a connection error…
    pub fn failed(&self, kind: Kind, reason: &str) {
        self.kind(kind).failed.fetch_add(1, Ordering::Relaxed);
        self.error(&format!("{}: {reason}", kind.label()));
    }

    pub fn error(&self, what: &str) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(what.to_owned()).or_default() += 1;
        }
    }

    pub fn handshake(&self, elapsed: Duration) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut h) = self.handshake_time.lock() {
            let _ = h.record((elapsed.as_micros() as u64).clamp(1, MAX_MICROS));
        }
    }

    /// A whole agent run ended, taking `elapsed`: counted, and if it succeeded, its time and
    /// its end recorded.
    pub fn run_done(&self, elapsed: Duration, ok: bool) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.runs_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(mut h) = self.run_time.lock() {
            let _ = h.record((elapsed.as_micros() as u64).clamp(1, MAX_MICROS));
        }
        if let Ok(mut ends) = self.completions.lock() {
            ends.push(self.elapsed().as_secs_f64());
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn totals(&self) -> (u64, u64) {
        self.kinds.iter().fold((0, 0), |(ok, failed), k| {
            (ok + k.ok.load(Ordering::Relaxed), failed + k.failed.load(Ordering::Relaxed))
        })
    }

    /// `12.0s  runs 340 (28.3/s)  requests 2380 (198.3/s)  errors 0  handshakes 340`.
    pub fn progress_line(&self) -> String {
        let seconds = self.elapsed().as_secs_f64().max(1e-9);
        let (ok, failed) = self.totals();
        let runs = self.runs.load(Ordering::Relaxed);
        format!(
            "{seconds:6.1}s  runs {runs} ({:.1}/s)  requests {} ({:.1}/s)  errors {failed}  handshakes {}",
            runs as f64 / seconds,
            ok + failed,
            (ok + failed) as f64 / seconds,
            self.handshakes.load(Ordering::Relaxed)
        )
    }

    /// The final report.
    pub fn report(&self, scenario: &str, parameters: serde_json::Value) -> Report {
        let seconds = self.elapsed().as_secs_f64().max(1e-9);
        let (ok, failed) = self.totals();
        let kinds = Kind::ALL
            .iter()
            .zip(&self.kinds)
            .filter(|(_, s)| s.ok.load(Ordering::Relaxed) + s.failed.load(Ordering::Relaxed) > 0)
            .map(|(kind, s)| {
                let h = s.latency.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram());
                let ok = s.ok.load(Ordering::Relaxed);
                KindReport {
                    kind: kind.label().to_owned(),
                    ok,
                    failed: s.failed.load(Ordering::Relaxed),
                    per_second: ok as f64 / seconds,
                    latency_ms: Percentiles::of(&h),
                }
            })
            .collect();
        let handshakes = self.handshakes.load(Ordering::Relaxed);
        let handshake_ms =
            self.handshake_time.lock().map(|h| Percentiles::of(&h)).unwrap_or_default();
        let runs = self.run_time.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram());
        let mut completions = self.completions.lock().map(|c| c.clone()).unwrap_or_default();
        completions.sort_by(f64::total_cmp);
        Report {
            scenario: scenario.to_owned(),
            parameters,
            seconds,
            requests_ok: ok,
            requests_failed: failed,
            requests_per_second: ok as f64 / seconds,
            runs: self.runs.load(Ordering::Relaxed),
            runs_failed: self.runs_failed.load(Ordering::Relaxed),
            handshakes,
            handshakes_per_second: handshakes as f64 / seconds,
            handshake_ms,
            run_ms: Percentiles::of(&runs),
            run_cdf_ms: cdf(&runs),
            completions_s: completions,
            kinds,
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// The quantiles of `h` at 0.00, 0.01 … 0.99, 0.999 and 1.
fn cdf(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut quantiles: Vec<f64> = (0..100).map(|q| f64::from(q) / 100.0).collect();
    quantiles.extend([0.999, 1.0]);
    quantiles.into_iter().map(|q| [q, h.value_at_quantile(q) as f64 / 1000.0]).collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    pub kind: String,
    pub ok: u64,
    pub failed: u64,
    pub per_second: f64,
    pub latency_ms: Percentiles,
}

/// Everything a simulation reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub parameters: serde_json::Value,
    pub seconds: f64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub requests_per_second: f64,
    pub runs: u64,
    pub runs_failed: u64,
    pub handshakes: u64,
    pub handshakes_per_second: f64,
    pub handshake_ms: Percentiles,
    /// Successful agent runs, start to end.
    pub run_ms: Percentiles,
    /// The run-time distribution: `[quantile, milliseconds]` at every percent (for CDF charts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub run_cdf_ms: Vec<[f64; 2]>,
    /// When each successful run ended, seconds from the start, sorted (the herd's timeline).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub completions_s: Vec<f64>,
    pub kinds: Vec<KindReport>,
    pub errors: BTreeMap<String, u64>,
}

impl Report {
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## crossbar sim: {}\n", self.scenario);
        let _ = writeln!(out, "Parameters: `{}`\n", self.parameters);
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| duration | {:.1} s |", self.seconds);
        let _ = writeln!(
            out,
            "| requests | {} ok, {} failed ({:.1}/s) |",
            self.requests_ok, self.requests_failed, self.requests_per_second
        );
        let _ = writeln!(out, "| runs | {} ({} failed) |", self.runs, self.runs_failed);
        if self.runs > self.runs_failed {
            let r = &self.run_ms;
            let _ = writeln!(
                out,
                "| run time | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms |",
                r.p50, r.p99, r.max
            );
        }
        let _ = writeln!(
            out,
            "| TLS handshakes | {} ({:.1}/s, p50 {:.2} ms, p99 {:.2} ms) |\n",
            self.handshakes,
            self.handshakes_per_second,
            self.handshake_ms.p50,
            self.handshake_ms.p99
        );
        let _ = writeln!(out, "| request | ok | failed | per s | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|");
        for k in &self.kinds {
            let l = &k.latency_ms;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
                k.kind, k.ok, k.failed, k.per_second, l.p50, l.p90, l.p99, l.max
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "\nErrors:\n");
            for (what, count) in &self.errors {
                let _ = writeln!(out, "- {count} × {what}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_count_and_rank_latencies() {
        let stats = Stats::new();
        for ms in 1..=100 {
            stats.ok(Kind::Catalog, Duration::from_millis(ms));
        }
        stats.failed(Kind::Report, "status 503");
        stats.failed(Kind::Report, "status 503");
        let report = stats.report("test", serde_json::json!({}));
        assert_eq!((report.requests_ok, report.requests_failed), (100, 2));
        let catalog = report.kinds.iter().find(|k| k.kind == "catalog").expect("catalog");
        assert!((49.0..=51.0).contains(&catalog.latency_ms.p50), "{:?}", catalog.latency_ms);
        assert!((98.0..=100.5).contains(&catalog.latency_ms.p99), "{:?}", catalog.latency_ms);
        assert_eq!(report.errors.get("report: status 503"), Some(&2));
        assert!(report.to_markdown().contains("| catalog | 100 | 0 |"));
    }
}
