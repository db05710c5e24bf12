//! Waiting on a condition with a deadline: the only way tests wait.

use std::time::{Duration, Instant};

/// How often a condition is re-checked.
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub fn until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// Like [`until`] for a boolean condition.
pub fn until_true(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    until(what, timeout, || check().then_some(()));
}
