//! A cumulative histogram of request durations, updated with atomics on the request path and
//! written in Prometheus' text form.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Upper bounds of the request duration histogram, in seconds.
pub(crate) const DURATION_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// A cumulative histogram of request durations.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// The upper bound of the bucket holding quantile `q`, in seconds (`None` before any
    /// request, or past the last bucket).
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * count as f64).ceil().max(1.0) as u64;
        let mut cumulative = 0;
        for (le, bucket) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            if cumulative >= rank {
                return Some(*le);
            }
        }
        None
    }

    pub(crate) fn encode(&self, out: &mut String, name: &str, labels: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_the_bounds_of_their_buckets() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..98 {
            h.observe(Duration::from_millis(3));
        }
        h.observe(Duration::from_millis(400));
        h.observe(Duration::from_secs(2));
        assert_eq!(h.quantile(0.5), Some(0.005));
        assert_eq!(h.quantile(0.99), Some(0.5));
        assert_eq!(h.quantile(1.0), Some(2.5));
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
