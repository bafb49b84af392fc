//! Guest clocks: set from the host at boot (`start.rs`) and again whenever the host comes
//! back from a suspend, which guests do not notice (their clock would lag by the time the
//! host slept). A suspend shows as growth of `CLOCK_BOOTTIME - CLOCK_MONOTONIC`: boot time
//! counts suspended time, monotonic time does not.

use std::sync::Arc;
use std::time::Duration;

use banger_guest_proto::{Empty, SetClock, paths};

use super::Vms;
use super::agent::AgentConn;

/// How often the daemon looks for a suspend.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Growth of the gap that counts as a suspend (noise is microseconds).
const SUSPEND_THRESHOLD_MS: i64 = 2000;

fn clock_ms(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill; the clock ids are constants.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

/// Milliseconds the host has spent suspended since it booted.
fn suspended_ms() -> i64 {
    clock_ms(libc::CLOCK_BOOTTIME) - clock_ms(libc::CLOCK_MONOTONIC)
}

/// Whether the host slept between two readings of [`suspended_ms`].
pub fn slept_between(before_ms: i64, after_ms: i64) -> bool {
    after_ms - before_ms > SUSPEND_THRESHOLD_MS
}

/// Sets the guest's wall clock to the host's.
pub async fn push(vm: &str, conn: &AgentConn) {
    let clock = SetClock {
        unix_nanos: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    };
    if let Err(e) = conn.call::<_, Empty>(paths::CLOCK, &clock).await {
        tracing::warn!(vm, error = %e, "could not set the guest clock");
    }
}

impl Vms {
    /// Watches for host suspends for as long as the daemon runs.
    pub fn spawn_clock_watch(self: &Arc<Self>) {
        let vms = self.clone();
        tokio::spawn(async move {
            let mut before = suspended_ms();
            let mut tick = tokio::time::interval(CHECK_EVERY);
            loop {
                tick.tick().await;
                let now = suspended_ms();
                if slept_between(before, now) {
                    tracing::info!(
                        slept_ms = now - before,
                        "host was suspended: resetting guest clocks"
                    );
                    let live: Vec<_> = vms
                        .live
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .values()
                        .cloned()
                        .collect();
                    // Each VM on its own: one guest that does not answer must not delay
                    // the others' clocks.
                    for vm in live {
                        tokio::spawn(async move {
                            if let Ok(conn) = vm.agent(Duration::from_secs(1)).await {
                                push(&vm.name, &conn).await;
                            }
                        });
                    }
                }
                before = now;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suspend_is_growth_of_the_gap() {
        assert!(!slept_between(100, 100));
        assert!(!slept_between(100, 150));
        assert!(slept_between(100, 60_100));
        let a = suspended_ms();
        let b = suspended_ms();
        assert!(!slept_between(a, b), "no suspend between two readings");
    }
}
