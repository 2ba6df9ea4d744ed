//! At most one log line per interval for an event that can happen on every request: while Redis
//! is down, every request fails the same way, and one warning per request would flood the log
//! (and be a client's to write). The line that is written says how many were left out; the
//! metrics count every one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a store failure is logged at most.
pub const STORE_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Decides which occurrences of one event get a log line.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last line was written.
    last: Option<Instant>,
    /// Occurrences since then that were not written.
    suppressed: u64,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::default(),
        }
    }

    /// An occurrence at `now`: `Some(n)` when it is to be logged, `n` being the occurrences left
    /// out since the last line; `None` when it is to be left out (and counted).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        // The state is two plain values, valid whatever a panicking holder left behind.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let t = LogThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(t.admit(at(0)), Some(0), "the first occurrence is logged");
        for ms in 1..1000 {
            assert_eq!(t.admit(at(ms)), None);
        }
        assert_eq!(t.admit(at(9_999)), None);
        assert_eq!(t.admit(at(10_000)), Some(1000), "999 + the one at 9.999 s");
        assert_eq!(t.admit(at(10_001)), None);
        // After a quiet spell the next occurrence is logged at once.
        assert_eq!(t.admit(at(60_000)), Some(1));
        assert_eq!(t.admit(at(80_000)), Some(0));
    }

    #[test]
    fn an_earlier_instant_from_another_thread_is_left_out_not_a_panic() {
        let t = LogThrottle::new(Duration::from_secs(10));
        let now = Instant::now() + Duration::from_secs(1);
        assert_eq!(t.admit(now), Some(0));
        assert_eq!(t.admit(now - Duration::from_millis(500)), None);
    }
}
