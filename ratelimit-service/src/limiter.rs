//! The three algorithms as pure functions over one counter's buckets: no I/O, no clock.
//!
//! A counter is a set of `(bucket index, count)` pairs. Bucket `i` holds the cost admitted in
//! `[i·g, (i+1)·g)` milliseconds, `g` being the algorithm's bucket width for the limit's window.
//! The in-memory store calls these functions directly; the Redis store runs the same arithmetic
//! in `store/limit.lua`, and one behaviour suite runs against both.
//!
//! - `SlidingWindow` (the default) keeps [`SLIDING_BUCKETS`] sub-buckets per window and counts
//!   every bucket that intersects the trailing window `(now − W, now]`, including the oldest,
//!   partly expired one. Counting a superset of the window is what makes it exact from above: in
//!   every trailing window at most `N` are admitted, because when the last request of any window
//!   was admitted, everything in that window was counted. The price is that a request may be
//!   denied up to one bucket (`W/60`) early.
//! - `Approximate` is the two-window weighted counter (`prev·(W−elapsed)/W + cur`), cheaper in
//!   memory and able to admit somewhat more than `N` in a trailing window under boundary bursts.
//! - `Fixed` is a clock-aligned fixed window, for parity with envoyproxy/ratelimit.
//!
//! Only admitted requests are counted: a rejected request consumes nothing.

/// Sub-buckets per window for `SlidingWindow`: at most `W/60` of early denial, at most 61 hash
/// fields per counter (small enough for Redis's compact listpack encoding).
pub const SLIDING_BUCKETS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    SlidingWindow,
    Approximate,
    Fixed,
}

impl Algorithm {
    /// The short code used in counter keys and in the Redis script's arguments.
    pub fn code(self) -> &'static str {
        match self {
            Self::SlidingWindow => "s",
            Self::Approximate => "a",
            Self::Fixed => "f",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::SlidingWindow => "sliding_window",
            Self::Approximate => "approximate",
            Self::Fixed => "fixed",
        }
    }
}

/// `requests` per `window_ms` milliseconds. Both at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    pub requests: u64,
    pub window_ms: u64,
}

/// The verdict of one counter for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// This counter alone would admit the request.
    pub admitted: bool,
    /// Cost counted in the window before this request.
    pub used: u64,
    /// Milliseconds until more quota becomes available (a counted bucket leaves the window, or
    /// the window ends). After an admission this counts the request just admitted.
    pub reset_ms: u64,
    /// When not admitted: milliseconds until a request of the same cost could be admitted, if no
    /// other request is admitted meanwhile.
    pub retry_after_ms: u64,
}

impl Check {
    /// Quota left after this request, if the request as a whole is admitted (`admitted_all`) or
    /// not (then nothing was consumed).
    pub fn remaining(&self, limit: Limit, cost: u64, admitted_all: bool) -> u64 {
        let used = if admitted_all {
            self.used.saturating_add(cost)
        } else {
            self.used
        };
        limit.requests.saturating_sub(used)
    }
}

/// Bucket width in milliseconds.
pub fn bucket_ms(alg: Algorithm, window_ms: u64) -> u64 {
    match alg {
        Algorithm::SlidingWindow => (window_ms / SLIDING_BUCKETS).max(1),
        Algorithm::Approximate | Algorithm::Fixed => window_ms.max(1),
    }
}

/// The bucket an admission at `now_ms` is added to.
pub fn bucket_of(alg: Algorithm, limit: Limit, now_ms: i64) -> i64 {
    now_ms.div_euclid(bucket_ms(alg, limit.window_ms) as i64)
}

/// How long a counter must be kept after its newest bucket was written.
pub fn ttl_ms(alg: Algorithm, limit: Limit) -> u64 {
    match alg {
        Algorithm::SlidingWindow => limit.window_ms + bucket_ms(alg, limit.window_ms),
        Algorithm::Approximate => limit.window_ms.saturating_mul(2),
        Algorithm::Fixed => limit.window_ms,
    }
}

/// The oldest bucket index that still matters at `now_ms`; older ones can be deleted.
pub fn oldest_live_bucket(alg: Algorithm, limit: Limit, now_ms: i64) -> i64 {
    let g = bucket_ms(alg, limit.window_ms) as i64;
    match alg {
        Algorithm::SlidingWindow => (now_ms - limit.window_ms as i64).div_euclid(g),
        Algorithm::Approximate => now_ms.div_euclid(g) - 1,
        Algorithm::Fixed => now_ms.div_euclid(g),
    }
}

/// Evaluates one counter. `buckets` may be in any order and may hold dead buckets (ignored).
pub fn evaluate(
    alg: Algorithm,
    limit: Limit,
    buckets: &[(i64, u64)],
    now_ms: i64,
    cost: u64,
) -> Check {
    let n = limit.requests;
    let w = limit.window_ms as i64;
    let g = bucket_ms(alg, limit.window_ms) as i64;
    let lo = oldest_live_bucket(alg, limit, now_ms);
    match alg {
        Algorithm::SlidingWindow => {
            let mut live: Vec<(i64, u64)> = buckets
                .iter()
                .copied()
                .filter(|&(i, c)| i >= lo && c > 0)
                .collect();
            live.sort_unstable();
            let used: u64 = live.iter().map(|&(_, c)| c).sum();
            let admitted = used.saturating_add(cost) <= n;
            // Bucket i stops being counted at the first t with floor((t − W)/g) > i.
            let leaves = |i: i64| ((i + 1) * g + w - now_ms).max(1) as u64;
            let oldest = match live.first() {
                Some(&(i, _)) => i,
                // Nothing counted: after an admission the current bucket is the oldest.
                None => now_ms.div_euclid(g),
            };
            let reset_ms = leaves(oldest);
            let retry_after_ms = if admitted {
                0
            } else if cost > n {
                // Never admissible; tell the client to come back after a whole window.
                limit.window_ms
            } else {
                let mut left = used;
                let mut at = reset_ms;
                for &(i, c) in &live {
                    left -= c;
                    at = leaves(i);
                    if left + cost <= n {
                        break;
                    }
                }
                at
            };
            Check {
                admitted,
                used,
                reset_ms,
                retry_after_ms,
            }
        }
        Algorithm::Approximate => {
            // Integer arithmetic throughout (the Lua twin must agree bit for bit):
            // admitted ⇔ prev·(W − e)/W + cur + cost ≤ N ⇔ prev·(W − e) ≤ (N − cur − cost)·W.
            let cur = now_ms.div_euclid(g);
            let count = |idx: i64| -> i128 {
                buckets
                    .iter()
                    .filter(|&&(i, _)| i == idx)
                    .map(|&(_, c)| c as i128)
                    .sum()
            };
            let (prev, curc) = (count(cur - 1), count(cur));
            let (n, w, cost_i) = (n as i128, w as i128, cost as i128);
            let elapsed = (now_ms - cur * g) as i128;
            let weighted = prev * (w - elapsed);
            let avail = n - curc - cost_i;
            let admitted = avail >= 0 && weighted <= avail * w;
            let reset_ms = (w - elapsed).max(1) as u64;
            let retry_after_ms = if admitted {
                0
            } else if cost_i > n {
                limit.window_ms
            } else if avail >= 0 {
                // Later in this window, once the previous window's weight has decayed enough.
                let at = w - (avail * w) / prev;
                (at - elapsed).max(1) as u64
            } else {
                // In the next window, once this window's count has decayed enough.
                let at = w - ((n - cost_i) * w) / curc;
                reset_ms + at.max(0) as u64
            };
            Check {
                admitted,
                used: u64::try_from((weighted + w - 1) / w + curc).unwrap_or(u64::MAX),
                reset_ms,
                retry_after_ms,
            }
        }
        Algorithm::Fixed => {
            let cur = now_ms.div_euclid(g);
            let used: u64 = buckets
                .iter()
                .filter(|&&(i, _)| i == cur)
                .map(|&(_, c)| c)
                .sum();
            let admitted = used.saturating_add(cost) <= n;
            let reset_ms = ((cur + 1) * g - now_ms).max(1) as u64;
            Check {
                admitted,
                used,
                reset_ms,
                retry_after_ms: if admitted {
                    0
                } else if cost > n {
                    limit.window_ms
                } else {
                    reset_ms
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limit = Limit {
        requests: 10,
        window_ms: 60_000,
    };

    /// Drives one counter the way a store does: evaluate, then add the cost when admitted.
    fn run(alg: Algorithm, limit: Limit, times: &[i64]) -> Vec<i64> {
        let mut buckets: Vec<(i64, u64)> = Vec::new();
        let mut admitted = Vec::new();
        for &t in times {
            let c = evaluate(alg, limit, &buckets, t, 1);
            if c.admitted {
                let b = bucket_of(alg, limit, t);
                match buckets.iter_mut().find(|(i, _)| *i == b) {
                    Some((_, n)) => *n += 1,
                    None => buckets.push((b, 1)),
                }
                admitted.push(t);
            }
        }
        admitted
    }

    fn max_in_trailing_window(admitted: &[i64], w: i64) -> usize {
        let mut best = 0;
        let mut j = 0;
        for (i, &t) in admitted.iter().enumerate() {
            while admitted[j] <= t - w {
                j += 1;
            }
            best = best.max(i - j + 1);
        }
        best
    }

    #[test]
    fn sliding_window_never_exceeds_the_limit_under_a_boundary_burst() {
        // N requests just before each minute boundary, then a steady 3× rate: fixed windows admit
        // 2N in the trailing minute around each boundary; the sliding window must not.
        let mut times = Vec::new();
        for k in 1..20i64 {
            let b = k * 60_000;
            times.extend((0..10).map(|i| b - 10 + i));
            times.extend((0..30).map(|i| b + i * 2_000));
        }
        let sliding = run(Algorithm::SlidingWindow, L, &times);
        assert!(max_in_trailing_window(&sliding, 60_000) <= 10);
        let fixed = run(Algorithm::Fixed, L, &times);
        assert_eq!(max_in_trailing_window(&fixed, 60_000), 20);
    }

    #[test]
    fn sliding_window_admits_close_to_an_exact_log() {
        // Steady 2× overload, one request every 3 s against 10/minute.
        let times: Vec<i64> = (0..2_000).map(|i| i * 3_000 + 7).collect();
        let sliding = run(Algorithm::SlidingWindow, L, &times);
        let mut exact: Vec<i64> = Vec::new();
        for &t in &times {
            if exact.iter().filter(|&&a| a > t - 60_000).count() < 10 {
                exact.push(t);
            }
        }
        assert!(max_in_trailing_window(&sliding, 60_000) <= 10);
        assert!(
            sliding.len() * 100 >= exact.len() * 95,
            "{} vs {}",
            sliding.len(),
            exact.len()
        );
    }

    #[test]
    fn rejected_requests_consume_nothing_and_retry_after_is_exact() {
        let limit = Limit {
            requests: 2,
            window_ms: 1_000,
        };
        let g = bucket_ms(Algorithm::SlidingWindow, 1_000) as i64;
        let mut buckets = vec![(bucket_of(Algorithm::SlidingWindow, limit, 100), 2)];
        let denied = evaluate(Algorithm::SlidingWindow, limit, &buckets, 500, 1);
        assert!(!denied.admitted);
        assert_eq!(denied.used, 2);
        // The bucket holding t=100 leaves the window at (100/g + 1)·g + 1000.
        let free_at = (100 / g + 1) * g + 1_000;
        assert_eq!(denied.retry_after_ms as i64, free_at - 500);
        // Just before: still denied; at that instant: admitted.
        assert!(!evaluate(Algorithm::SlidingWindow, limit, &buckets, free_at - 1, 1).admitted);
        assert!(evaluate(Algorithm::SlidingWindow, limit, &buckets, free_at, 1).admitted);
        buckets.push((bucket_of(Algorithm::SlidingWindow, limit, free_at), 1));
        let c = evaluate(Algorithm::SlidingWindow, limit, &buckets, free_at, 1);
        assert_eq!(c.used, 1);
    }

    #[test]
    fn cost_larger_than_the_limit_is_never_admitted() {
        for alg in [
            Algorithm::SlidingWindow,
            Algorithm::Approximate,
            Algorithm::Fixed,
        ] {
            let c = evaluate(alg, L, &[], 1_000, 11);
            assert!(!c.admitted, "{alg:?}");
            assert_eq!(c.retry_after_ms, L.window_ms);
            assert!(evaluate(alg, L, &[], 1_000, 10).admitted, "{alg:?}");
        }
    }

    #[test]
    fn fixed_window_is_clock_aligned() {
        let limit = Limit {
            requests: 1,
            window_ms: 1_000,
        };
        let b = [(bucket_of(Algorithm::Fixed, limit, 2_999), 1)];
        let c = evaluate(Algorithm::Fixed, limit, &b, 2_999, 1);
        assert!(!c.admitted);
        assert_eq!(c.retry_after_ms, 1);
        assert!(evaluate(Algorithm::Fixed, limit, &b, 3_000, 1).admitted);
    }

    #[test]
    fn approximate_weights_the_previous_window() {
        let limit = Limit {
            requests: 10,
            window_ms: 1_000,
        };
        // 10 in window 0; a quarter into window 1 the estimate is 7.5.
        let b = [(0, 10)];
        let c = evaluate(Algorithm::Approximate, limit, &b, 1_250, 2);
        assert!(c.admitted);
        let c = evaluate(Algorithm::Approximate, limit, &b, 1_250, 3);
        assert!(!c.admitted);
        // Estimate 7.5 + 3 ≤ 10 once prev·(1 − e) ≤ 7, e ≥ 0.3: 50 ms later.
        assert_eq!(c.retry_after_ms, 50);
        assert!(evaluate(Algorithm::Approximate, limit, &b, 1_300, 3).admitted);
    }

    #[test]
    fn reset_counts_the_oldest_counted_bucket() {
        let limit = Limit {
            requests: 5,
            window_ms: 60_000,
        };
        let c = evaluate(
            Algorithm::SlidingWindow,
            limit,
            &[(10, 1)],
            10 * 1_000 + 5,
            1,
        );
        // Bucket 10 = [10 s, 11 s) leaves at 71 s.
        assert_eq!(c.reset_ms, 71_000 - 10_005);
        let fresh = evaluate(Algorithm::SlidingWindow, limit, &[], 10_005, 1);
        assert_eq!(fresh.reset_ms, 71_000 - 10_005);
    }
}
