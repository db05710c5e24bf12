//! Helpers for this crate's async unit tests.

use std::time::Duration;

/// Waits (yielding to the runtime) until `condition` holds; panics after five seconds.
pub(crate) async fn until(mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
