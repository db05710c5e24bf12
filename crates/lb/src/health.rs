//! Member health as a pure state machine: active probe results and passive failures in,
//! transitions out. The probing task and the request path feed it; nothing here does I/O.

use std::time::{Duration, Instant};

use crate::config::HealthPolicy;

/// A change of a member's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Down,
    Up,
}

/// One member's health.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    healthy: bool,
    ok_streak: u32,
    fail_streak: u32,
    backoff: Duration,
    /// When a passively ejected member should be probed next.
    next_probe: Option<Instant>,
}

impl Health {
    /// A new member is healthy until shown otherwise, so a fresh LB serves at once.
    pub(crate) fn new() -> Self {
        Self {
            healthy: true,
            ok_streak: 0,
            fail_streak: 0,
            backoff: Duration::ZERO,
            next_probe: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// A probe's result at `now`. While the member is unhealthy, each failed probe backs the
    /// next one off (so a dead member is not probed in a tight loop).
    pub(crate) fn probe(
        &mut self,
        ok: bool,
        now: Instant,
        policy: &HealthPolicy,
    ) -> Option<Transition> {
        if ok {
            self.fail_streak = 0;
            self.ok_streak = self.ok_streak.saturating_add(1);
            if !self.healthy && self.ok_streak >= policy.rise.max(1) {
                self.healthy = true;
                self.backoff = Duration::ZERO;
                self.next_probe = None;
                return Some(Transition::Up);
            }
            return None;
        }
        self.ok_streak = 0;
        self.fail_streak = self.fail_streak.saturating_add(1);
        if self.healthy && self.fail_streak >= policy.fall.max(1) {
            self.healthy = false;
            return Some(Transition::Down);
        }
        if !self.healthy {
            self.back_off(now, policy);
        }
        None
    }

    fn back_off(&mut self, now: Instant, policy: &HealthPolicy) {
        self.backoff = if self.backoff.is_zero() {
            policy.min_backoff
        } else {
            (self.backoff * 2).min(policy.max_backoff)
        };
        self.next_probe = Some(now + self.backoff);
    }

    /// A request failed in a way that says the member is gone (refused, reset, timed out): it
    /// leaves rotation at once, and must pass `rise` probes to return. Re-probes back off.
    pub(crate) fn eject(&mut self, now: Instant, policy: &HealthPolicy) -> Option<Transition> {
        self.ok_streak = 0;
        self.back_off(now, policy);
        if self.healthy {
            self.healthy = false;
            return Some(Transition::Down);
        }
        None
    }

    /// When to probe next: the regular `interval`, or sooner after a passive ejection.
    pub(crate) fn next_probe_in(&self, now: Instant, interval: Duration) -> Duration {
        match self.next_probe {
            Some(at) => at.saturating_duration_since(now).min(interval),
            None => interval,
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            rise: 2,
            fall: 3,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(4),
        }
    }

    #[test]
    fn probes_need_fall_failures_to_go_down_and_rise_successes_to_come_back() {
        let p = policy();
        let mut h = Health::new();
        let results = [false, false, true, false, false, false, true, true];
        let expected =
            [None, None, None, None, None, Some(Transition::Down), None, Some(Transition::Up)];
        for (ok, want) in results.into_iter().zip(expected) {
            assert_eq!(h.probe(ok, Instant::now(), &p), want);
        }
        assert!(h.is_healthy());
    }

    #[test]
    fn ejection_is_immediate_and_backs_off() {
        let p = policy();
        let now = Instant::now();
        let mut h = Health::new();
        assert_eq!(h.eject(now, &p), Some(Transition::Down));
        assert!(!h.is_healthy());
        assert_eq!(h.next_probe_in(now, Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(h.eject(now, &p), None);
        assert_eq!(h.next_probe_in(now, Duration::from_secs(10)), Duration::from_secs(2));
        h.eject(now, &p);
        h.eject(now, &p);
        assert_eq!(h.next_probe_in(now, Duration::from_secs(10)), Duration::from_secs(4), "capped");
        assert_eq!(
            h.next_probe_in(now, Duration::from_secs(3)),
            Duration::from_secs(3),
            "never later than the interval"
        );
        assert_eq!(h.probe(true, now, &p), None, "one good probe is not enough");
        assert_eq!(h.probe(true, now, &p), Some(Transition::Up));
        assert_eq!(h.next_probe_in(now, Duration::from_secs(10)), Duration::from_secs(10));
    }

    #[test]
    fn failed_probes_of_a_down_member_back_off_instead_of_spinning() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = Health::new();
        h.eject(t0, &p);
        let interval = Duration::from_secs(60);
        let t1 = t0 + h.next_probe_in(t0, interval);
        assert_eq!(h.probe(false, t1, &p), None);
        assert_eq!(
            h.next_probe_in(t1, interval),
            Duration::from_secs(2),
            "the next probe waits, it does not fire at once"
        );
        let t2 = t1 + Duration::from_secs(2);
        h.probe(false, t2, &p);
        assert_eq!(h.next_probe_in(t2, interval), Duration::from_secs(4));
        assert_eq!(
            h.next_probe_in(t2, Duration::from_secs(1)),
            Duration::from_secs(1),
            "active checks keep their interval"
        );
    }

    #[test]
    fn a_failed_probe_resets_the_rise_streak() {
        let p = policy();
        let now = Instant::now();
        let mut h = Health::new();
        h.eject(now, &p);
        assert_eq!(h.probe(true, now, &p), None);
        assert_eq!(h.probe(false, now, &p), None);
        assert_eq!(h.probe(true, now, &p), None);
        assert_eq!(h.probe(true, now, &p), Some(Transition::Up));
    }
}
