//! The three algorithms as pure functions over one counter's buckets: no I/O, no clock.
//!
//! A counter is a set of `(bucket index, count)` pairs. Bucket `i` holds the cost admitted in
//! `[i·g, (i+1)·g)` milliseconds, `g` being the algorithm's bucket width for the limit's window.
//! The in-memory store calls these functions directly; the Redis store runs the same arithmetic
//! in `store/limit.lua`, and one behaviour suite runs against both.
//!
//! - `SlidingWindow` (the default) keeps [`SLIDING_BUCKETS`] sub-buckets per window and counts
//!   every bucket that may hold an admission of the trailing window `(now − W, now]`, including
//!   the oldest, partly expired one. Counting a superset of the window is what makes it exact
//!   from above: in every trailing window at most `N` are admitted, because when the last
//!   request of any window was admitted, everything in that window was counted. The price is
//!   that a request may be denied up to one bucket (`W/60`) early. A bucket's admissions are
//!   known to be no later than its end, and no later than the counter's latest admission (the
//!   one instant a counter keeps besides its buckets, [`Counter::last_ms`]), so a bucket leaves
//!   the window `W` after the earlier of the two: a fresh counter's quota comes back exactly `W`
//!   after its first request, never a bucket later.
//! - `Approximate` is the two-window weighted counter (`prev·(W−elapsed)/W + cur`), cheaper in
//!   memory and able to admit somewhat more than `N` in a trailing window under boundary bursts.
//! - `Fixed` is a clock-aligned fixed window, for parity with envoyproxy/ratelimit.
//!
//! Only admitted requests are counted: a rejected request consumes nothing.

/// Sub-buckets per window for `SlidingWindow`: at most `W/60` of early denial, at most 61 bucket
/// fields plus the latest admission per counter (small enough for Redis's compact listpack
/// encoding).
pub const SLIDING_BUCKETS: u64 = 60;

/// What a store keeps of one counter: `(bucket index, count)` pairs in any order (dead buckets
/// are ignored) and, for `SlidingWindow`, the time of the latest admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter<'a> {
    pub buckets: &'a [(i64, u64)],
    /// Unix milliseconds of the latest admission, when the store recorded one. A store may keep
    /// a later instant than the true one (a refunded admission): that only counts buckets
    /// longer, never shorter.
    pub last_ms: Option<i64>,
}

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

/// Whether bucket `i` of a counter whose latest admission is `last_ms` still matters at
/// `now_ms`; one that does not can be deleted, and must be before the latest admission moves
/// on (a later `last_ms` counts an old bucket to its end, which would bring it back).
pub fn is_live(alg: Algorithm, limit: Limit, last_ms: Option<i64>, i: i64, now_ms: i64) -> bool {
    let g = bucket_ms(alg, limit.window_ms) as i64;
    match alg {
        // Counted until W after its last possible admission: until then some admission in it
        // may lie in the trailing window (now − W, now].
        Algorithm::SlidingWindow => {
            sliding_bucket_end(i, g, last_ms) + limit.window_ms as i64 > now_ms
        }
        Algorithm::Approximate => i >= now_ms.div_euclid(g) - 1,
        Algorithm::Fixed => i >= now_ms.div_euclid(g),
    }
}

/// The instant after which no admission counted in sliding-window bucket `i` (width `g`) is
/// later: the bucket's end, or the counter's latest admission when that falls inside it.
fn sliding_bucket_end(i: i64, g: i64, last_ms: Option<i64>) -> i64 {
    match last_ms {
        Some(t) if t >= i * g && t < (i + 1) * g => t,
        _ => (i + 1) * g,
    }
}

/// The latest admission a counter records after one at `now_ms` (stores keep it only for
/// `SlidingWindow`, the one algorithm that reads it).
pub fn last_after_admission(alg: Algorithm, now_ms: i64) -> Option<i64> {
    (alg == Algorithm::SlidingWindow).then_some(now_ms)
}

/// Evaluates one counter.
pub fn evaluate(
    alg: Algorithm,
    limit: Limit,
    counter: Counter<'_>,
    now_ms: i64,
    cost: u64,
) -> Check {
    let buckets = counter.buckets;
    let n = limit.requests;
    let w = limit.window_ms as i64;
    let g = bucket_ms(alg, limit.window_ms) as i64;
    match alg {
        Algorithm::SlidingWindow => {
            let leaves_at = |i: i64, last: Option<i64>| sliding_bucket_end(i, g, last) + w;
            let mut live: Vec<(i64, u64)> = buckets
                .iter()
                .copied()
                .filter(|&(i, c)| c > 0 && is_live(alg, limit, counter.last_ms, i, now_ms))
                .collect();
            live.sort_unstable();
            let used: u64 = live.iter().map(|&(_, c)| c).sum();
            let admitted = used.saturating_add(cost) <= n;
            let leaves = |i: i64, last: Option<i64>| (leaves_at(i, last) - now_ms).max(1) as u64;
            // After an admission the counter's latest admission is now, and the current bucket
            // is the oldest when nothing older is counted.
            let reset_ms = if admitted {
                let oldest = live.first().map_or(now_ms.div_euclid(g), |&(i, _)| i);
                leaves(oldest, Some(now_ms))
            } else {
                live.first()
                    .map_or(limit.window_ms, |&(i, _)| leaves(i, counter.last_ms))
            };
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
                    at = leaves(i, counter.last_ms);
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

    /// A counter as a store keeps it, charged the way a store charges it.
    #[derive(Default)]
    struct Store {
        buckets: Vec<(i64, u64)>,
        last_ms: Option<i64>,
    }

    impl Store {
        fn view(&self) -> Counter<'_> {
            Counter {
                buckets: &self.buckets,
                last_ms: self.last_ms,
            }
        }

        /// Evaluates a request at `t`; when admitted, drops dead buckets and charges it.
        fn check(&mut self, alg: Algorithm, limit: Limit, t: i64, cost: u64) -> Check {
            let c = evaluate(alg, limit, self.view(), t, cost);
            if c.admitted {
                let last = self.last_ms;
                self.buckets
                    .retain(|&(i, _)| is_live(alg, limit, last, i, t));
                let b = bucket_of(alg, limit, t);
                match self.buckets.iter_mut().find(|(i, _)| *i == b) {
                    Some((_, n)) => *n += cost,
                    None => self.buckets.push((b, cost)),
                }
                self.last_ms = last_after_admission(alg, t);
            }
            c
        }
    }

    /// Buckets alone, the latest admission unknown (the conservative reading).
    fn only(buckets: &[(i64, u64)]) -> Counter<'_> {
        Counter {
            buckets,
            last_ms: None,
        }
    }

    /// Drives one counter the way a store does: evaluate, then add the cost when admitted.
    fn run(alg: Algorithm, limit: Limit, times: &[i64]) -> Vec<i64> {
        let mut store = Store::default();
        times
            .iter()
            .copied()
            .filter(|&t| store.check(alg, limit, t, 1).admitted)
            .collect()
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
        let denied = evaluate(Algorithm::SlidingWindow, limit, only(&buckets), 500, 1);
        assert!(!denied.admitted);
        assert_eq!(denied.used, 2);
        // The bucket holding t=100 leaves the window at (100/g + 1)·g + 1000.
        let free_at = (100 / g + 1) * g + 1_000;
        assert_eq!(denied.retry_after_ms as i64, free_at - 500);
        // Just before: still denied; at that instant: admitted.
        assert!(
            !evaluate(
                Algorithm::SlidingWindow,
                limit,
                only(&buckets),
                free_at - 1,
                1
            )
            .admitted
        );
        assert!(evaluate(Algorithm::SlidingWindow, limit, only(&buckets), free_at, 1).admitted);
        buckets.push((bucket_of(Algorithm::SlidingWindow, limit, free_at), 1));
        let c = evaluate(Algorithm::SlidingWindow, limit, only(&buckets), free_at, 1);
        assert_eq!(c.used, 1);
    }

    #[test]
    fn cost_larger_than_the_limit_is_never_admitted() {
        for alg in [
            Algorithm::SlidingWindow,
            Algorithm::Approximate,
            Algorithm::Fixed,
        ] {
            let c = evaluate(alg, L, only(&[]), 1_000, 11);
            assert!(!c.admitted, "{alg:?}");
            assert_eq!(c.retry_after_ms, L.window_ms);
            assert!(evaluate(alg, L, only(&[]), 1_000, 10).admitted, "{alg:?}");
        }
    }

    #[test]
    fn fixed_window_is_clock_aligned() {
        let limit = Limit {
            requests: 1,
            window_ms: 1_000,
        };
        let b = [(bucket_of(Algorithm::Fixed, limit, 2_999), 1)];
        let c = evaluate(Algorithm::Fixed, limit, only(&b), 2_999, 1);
        assert!(!c.admitted);
        assert_eq!(c.retry_after_ms, 1);
        assert!(evaluate(Algorithm::Fixed, limit, only(&b), 3_000, 1).admitted);
    }

    #[test]
    fn approximate_weights_the_previous_window() {
        let limit = Limit {
            requests: 10,
            window_ms: 1_000,
        };
        // 10 in window 0; a quarter into window 1 the estimate is 7.5.
        let b = [(0, 10)];
        let c = evaluate(Algorithm::Approximate, limit, only(&b), 1_250, 2);
        assert!(c.admitted);
        let c = evaluate(Algorithm::Approximate, limit, only(&b), 1_250, 3);
        assert!(!c.admitted);
        // Estimate 7.5 + 3 ≤ 10 once prev·(1 − e) ≤ 7, e ≥ 0.3: 50 ms later.
        assert_eq!(c.retry_after_ms, 50);
        assert!(evaluate(Algorithm::Approximate, limit, only(&b), 1_300, 3).admitted);
    }

    #[test]
    fn reset_counts_the_oldest_counted_bucket() {
        let limit = Limit {
            requests: 5,
            window_ms: 60_000,
        };
        // Bucket 10 = [10 s, 11 s) leaves 60 s after its end: its admissions are before the
        // latest one (12.3 s, in bucket 12).
        let c = evaluate(
            Algorithm::SlidingWindow,
            limit,
            Counter {
                buckets: &[(10, 1), (12, 1)],
                last_ms: Some(12_300),
            },
            12_500,
            1,
        );
        assert!(c.admitted);
        assert_eq!(c.reset_ms, 71_000 - 12_500);
        // A fresh counter: the request just admitted comes back exactly one window later.
        let fresh = evaluate(Algorithm::SlidingWindow, limit, only(&[]), 10_005, 1);
        assert_eq!(fresh.reset_ms, 60_000);
        // The latest admission bounds its bucket: 60 s after 10.005 s, not after 11 s.
        let c = evaluate(
            Algorithm::SlidingWindow,
            limit,
            Counter {
                buckets: &[(10, 5)],
                last_ms: Some(10_005),
            },
            10_500,
            1,
        );
        assert!(!c.admitted);
        assert_eq!((c.reset_ms, c.retry_after_ms), (59_505, 59_505));
        // Without it, the bucket's end is all a store can go by.
        let c = evaluate(Algorithm::SlidingWindow, limit, only(&[(10, 5)]), 10_500, 1);
        assert_eq!(c.retry_after_ms, 71_000 - 10_500);
    }

    const ALGORITHMS: [Algorithm; 3] = [
        Algorithm::SlidingWindow,
        Algorithm::Approximate,
        Algorithm::Fixed,
    ];

    /// `N` requests on a fresh counter, then the first denial, wherever in a second and in a
    /// minute the burst starts: no answer says more than the window (`Retry-After: 61` on a
    /// fresh 60 s window was the bug), except `approximate`'s retry, which also waits for the
    /// previous window's weight to decay (so it can be later than one window); and every
    /// retry is exact: denied a millisecond before, admitted at it.
    #[test]
    fn a_fresh_window_never_reports_more_than_the_window() {
        let limit = Limit {
            requests: 5,
            window_ms: 60_000,
        };
        let w = limit.window_ms;
        for alg in ALGORITHMS {
            // The burst stays inside one minute (a fixed window would admit more across a
            // boundary, by design) and crosses a second boundary at +999.
            for offset in [0, 1, 499, 999, 1_000, 1_001, 30_000, 59_000, 59_994] {
                let t0 = 1_800_000_000_000 + offset;
                let mut store = Store::default();
                for k in 0..5 {
                    let c = store.check(alg, limit, t0 + k, 1);
                    assert!(c.admitted, "{alg:?} +{offset}");
                    assert!(
                        (1..=w).contains(&c.reset_ms),
                        "{alg:?} +{offset}: reset {} ms",
                        c.reset_ms
                    );
                }
                let t = t0 + 5;
                let c = store.check(alg, limit, t, 1);
                assert!(!c.admitted, "{alg:?} +{offset}");
                assert!(c.reset_ms <= w, "{alg:?} +{offset}: reset {}", c.reset_ms);
                let retry = c.retry_after_ms as i64;
                match alg {
                    Algorithm::SlidingWindow => {
                        // Back one window after the oldest bucket's last possible admission:
                        // the burst's last request, or the bucket's end if it spans two.
                        let g = bucket_ms(alg, w) as i64;
                        let end = ((t0.div_euclid(g) + 1) * g).min(t0 + 4);
                        assert_eq!(retry, end + w as i64 - t, "+{offset}");
                    }
                    Algorithm::Fixed => assert!(retry <= w as i64, "+{offset}: {retry}"),
                    // In the next window, once 5·(W − e)/W + 1 ≤ 5: e ≥ W/5.
                    Algorithm::Approximate => {
                        let next = (t0.div_euclid(w as i64) + 1) * w as i64;
                        assert_eq!(retry, next + w as i64 / 5 - t, "+{offset}");
                    }
                }
                let frozen = |at: i64| evaluate(alg, limit, store.view(), at, 1).admitted;
                assert!(!frozen(t + retry - 1), "{alg:?} +{offset}");
                assert!(frozen(t + retry), "{alg:?} +{offset}");
            }
        }
    }

    /// A bucket that has left the window stays gone when a later admission moves the latest
    /// admission past its end.
    #[test]
    fn a_bucket_that_left_does_not_come_back() {
        let limit = Limit {
            requests: 1,
            window_ms: 60_000,
        };
        let mut store = Store::default();
        assert!(
            store
                .check(Algorithm::SlidingWindow, limit, 10_200, 1)
                .admitted
        );
        assert!(
            !store
                .check(Algorithm::SlidingWindow, limit, 70_199, 1)
                .admitted
        );
        let c = store.check(Algorithm::SlidingWindow, limit, 70_200, 1);
        assert!(c.admitted && c.used == 0, "{c:?}");
        let c = store.check(Algorithm::SlidingWindow, limit, 70_300, 1);
        assert!(!c.admitted);
        assert_eq!(c.used, 1, "only the request at 70.2 s is counted");
        assert_eq!(c.retry_after_ms, 59_900);
    }

    /// Many arrival patterns, two window sizes: the sliding window never admits more than `N`
    /// in any trailing window, every answer's reset is at most one window, and every retry
    /// given to a denied request is exact when nothing is admitted meanwhile.
    #[test]
    fn sliding_window_is_exact_and_its_waits_are_true() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |m: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % m
        };
        let alg = Algorithm::SlidingWindow;
        for limit in [
            Limit {
                requests: 10,
                window_ms: 60_000,
            },
            Limit {
                requests: 7,
                window_ms: 1_000,
            },
        ] {
            let w = limit.window_ms;
            for _pattern in 0..40 {
                let mut store = Store::default();
                let mut t: i64 = 1_800_000_000_000 + next(w) as i64;
                let mut admitted = Vec::new();
                for _ in 0..400 {
                    // Bursts, pauses and everything between.
                    t += match next(4) {
                        0 => 0,
                        1 => next(w / 50 + 1) as i64,
                        2 => next(w / 4) as i64,
                        _ => next(2 * w) as i64,
                    };
                    let before = store.view();
                    let (buckets, last) = (before.buckets.to_vec(), before.last_ms);
                    let c = store.check(alg, limit, t, 1);
                    assert!(c.reset_ms <= w, "reset {} > {w}", c.reset_ms);
                    if c.admitted {
                        admitted.push(t);
                    } else {
                        let frozen = Counter {
                            buckets: &buckets,
                            last_ms: last,
                        };
                        let r = c.retry_after_ms as i64;
                        assert!(r <= w as i64);
                        assert!(!evaluate(alg, limit, frozen, t + r - 1, 1).admitted);
                        assert!(evaluate(alg, limit, frozen, t + r, 1).admitted);
                    }
                }
                let most = max_in_trailing_window(&admitted, w as i64);
                assert!(most <= limit.requests as usize, "{most} admitted in {w} ms");
            }
        }
    }
}
