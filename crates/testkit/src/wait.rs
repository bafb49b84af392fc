//! Waiting on observable state instead of guessed delays: a loaded CI machine can be
//! arbitrarily slow, so tests poll for the condition they need, with a generous deadline.

use std::time::{Duration, Instant};

/// How long a condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `cond` every few milliseconds until it holds; panics naming `what` after
/// [`DEADLINE`]. Blocks the calling thread: async tests that wait on a spawned task use a
/// multi-threaded runtime so the task keeps running meanwhile.
pub fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// [`until`] with a deadline of the caller's (guest boots and systemd take longer).
pub fn until_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
