//! The embedded store: counters in a process-local map. Exact for one service instance; several
//! instances each enforce the full limit on their own (use Redis to share limits).
//!
//! The map holds at most `max_counters` counters, so distinct keys (a per-IP limit under an IPv6
//! spray) cannot grow it without bound. When a request needs a counter that does not exist and
//! the map is full, expired counters are dropped first. If it is still full, no live counter is
//! ever evicted: evicting one would hand its owner a fresh quota (breaking "never more than N in
//! any trailing window") and would let a spray reset a chosen client's counter. Instead:
//!
//! - counters that exist decide as always: if any of them denies, the request is denied (429);
//! - otherwise they are charged, no new counter is created, and the request fails with
//!   [`StoreError::Full`], which the policy's `on_error` answers like any store failure
//!   (`allow`: admitted; `deny`: refused with 503).
//!
//! So while the store is full only keys without a counter go uncounted (under `allow`) or are
//! refused (under `deny`); every existing counter stays exact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{IntCounter, IntGauge};

use super::{CounterStore, Hit, Outcome, StoreError};
use crate::limiter;

/// Milliseconds since the Unix epoch; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The default bound on counters (`--memory-max-counters`). A per-IP counter with one request in
/// it took 280 bytes (key, map slot, one sub-bucket; measured over a million of them, before a
/// counter also kept its 16-byte latest admission), and one with all 61 sub-buckets in use takes
/// about 1 KiB more, so a store full of fresh counters holds about 300 MB.
pub const DEFAULT_MAX_COUNTERS: usize = 1_000_000;

/// The least time between two sweeps made because the store is full: a sweep walks every
/// counter under the lock, so a spray that keeps the store full must not trigger one per request.
const FULL_SWEEP_GAP_MS: i64 = 250;

#[derive(Debug, Default)]
struct Counter {
    /// (bucket, cost); at most 61 live entries.
    buckets: Vec<(i64, u64)>,
    /// The latest admission (`limiter::Counter::last_ms`), for `SlidingWindow`.
    last_ms: Option<i64>,
    /// Unix ms after which the whole counter is dead.
    expires_at: i64,
}

#[derive(Debug)]
struct Counters {
    map: HashMap<String, Counter>,
    /// No counter expires before this (a lower bound: charges only ever push expiry later).
    earliest_expiry: i64,
    /// When the last sweep ran.
    swept_at: i64,
}

impl Counters {
    /// Drops expired counters; recomputes the earliest expiry.
    fn sweep(&mut self, now: i64) {
        let mut earliest = i64::MAX;
        self.map.retain(|_, c| {
            let live = c.expires_at > now;
            if live {
                earliest = earliest.min(c.expires_at);
            }
            live
        });
        self.earliest_expiry = earliest;
        self.swept_at = now;
    }
}

/// The store's Prometheus handles (registered by [`crate::metrics::Metrics`]).
#[derive(Debug, Clone, Default)]
pub struct MemoryMetrics {
    /// Counters held now.
    pub counters: Option<IntGauge>,
    /// Requests that needed a new counter while the store was full.
    pub full: Option<IntCounter>,
}

pub struct MemoryStore {
    /// One lock for all counters keeps a request's check-and-charge atomic across its counters;
    /// the critical section is a few hundred nanoseconds, far below the gRPC cost around it.
    counters: Mutex<Counters>,
    max_counters: usize,
    clock: Clock,
    metrics: MemoryMetrics,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_COUNTERS)
    }
}

impl MemoryStore {
    /// A store of at most `max_counters` (at least 1) counters on the system clock.
    pub fn new(max_counters: usize) -> Self {
        Self::with_clock_and_bound(
            Arc::new(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64)
            }),
            max_counters,
        )
    }

    pub fn with_clock(clock: Clock) -> Self {
        Self::with_clock_and_bound(clock, DEFAULT_MAX_COUNTERS)
    }

    pub fn with_clock_and_bound(clock: Clock, max_counters: usize) -> Self {
        Self {
            counters: Mutex::new(Counters {
                map: HashMap::new(),
                earliest_expiry: i64::MAX,
                swept_at: i64::MIN,
            }),
            max_counters: max_counters.max(1),
            clock,
            metrics: MemoryMetrics::default(),
        }
    }

    /// Reports the number of counters and full-store events to `metrics`.
    pub fn with_metrics(mut self, metrics: MemoryMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn max_counters(&self) -> usize {
        self.max_counters
    }

    /// Drops counters whose window has passed. Called periodically; returns how many are left.
    pub fn sweep(&self) -> usize {
        let now = (self.clock)();
        let mut c = self.lock();
        c.sweep(now);
        self.report(&c);
        c.map.len()
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, c: &Counters) {
        if let Some(g) = &self.metrics.counters {
            g.set(i64::try_from(c.map.len()).unwrap_or(i64::MAX));
        }
    }

    fn check_now(&self, hits: &[Hit], now: i64) -> Result<Outcome, StoreError> {
        let mut c = self.lock();
        let mut checks = Vec::with_capacity(hits.len());
        for h in hits {
            let counter = c.map.get(&h.key).filter(|c| c.expires_at > now).map_or(
                limiter::Counter::default(),
                |c| limiter::Counter {
                    buckets: &c.buckets,
                    last_ms: c.last_ms,
                },
            );
            checks.push(limiter::evaluate(
                h.algorithm,
                h.limit,
                counter,
                now,
                h.cost,
            ));
        }
        let admitted = checks.iter().all(|c| c.admitted);
        if !admitted {
            return Ok(Outcome {
                admitted,
                checks,
                now_ms: now,
            });
        }
        let new = |c: &Counters| hits.iter().filter(|h| !c.map.contains_key(&h.key)).count();
        let fits = |c: &Counters| c.map.len().saturating_add(new(c)) <= self.max_counters;
        if !fits(&c)
            && now >= c.earliest_expiry
            && now >= c.swept_at.saturating_add(FULL_SWEEP_GAP_MS)
        {
            c.sweep(now);
        }
        let room = fits(&c);
        for h in hits {
            let ttl = i64::try_from(limiter::ttl_ms(h.algorithm, h.limit)).unwrap_or(i64::MAX);
            let expires_at = now.saturating_add(ttl);
            let counter = match c.map.get_mut(&h.key) {
                Some(counter) => counter,
                None if room => c.map.entry(h.key.clone()).or_default(),
                None => continue,
            };
            if counter.expires_at <= now {
                counter.buckets.clear();
                counter.last_ms = None;
            }
            let last = counter.last_ms;
            counter
                .buckets
                .retain(|&(i, _)| limiter::is_live(h.algorithm, h.limit, last, i, now));
            let b = limiter::bucket_of(h.algorithm, h.limit, now);
            match counter.buckets.iter_mut().find(|(i, _)| *i == b) {
                Some((_, n)) => *n = n.saturating_add(h.cost),
                None => counter.buckets.push((b, h.cost)),
            }
            counter.last_ms = limiter::last_after_admission(h.algorithm, now);
            counter.expires_at = expires_at;
            c.earliest_expiry = c.earliest_expiry.min(expires_at);
        }
        self.report(&c);
        if !room {
            if let Some(f) = &self.metrics.full {
                f.inc();
            }
            return Err(StoreError::Full);
        }
        Ok(Outcome {
            admitted,
            checks,
            now_ms: now,
        })
    }
}

impl CounterStore for MemoryStore {
    async fn check(&self, hits: &[Hit]) -> Result<Outcome, StoreError> {
        self.check_now(hits, (self.clock)())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;
    use crate::limiter::{Algorithm, Limit};

    const T0: i64 = 1_800_000_000_000;

    fn store(max: usize) -> (MemoryStore, Arc<AtomicI64>) {
        let now = Arc::new(AtomicI64::new(T0));
        let clock = now.clone();
        let metrics = MemoryMetrics {
            counters: Some(IntGauge::new("c", "c").unwrap()),
            full: Some(IntCounter::new("f", "f").unwrap()),
        };
        let s =
            MemoryStore::with_clock_and_bound(Arc::new(move || clock.load(Ordering::Relaxed)), max)
                .with_metrics(metrics);
        (s, now)
    }

    fn hit(key: &str, requests: u64, window_ms: u64) -> Hit {
        Hit {
            key: key.to_string(),
            algorithm: Algorithm::SlidingWindow,
            limit: Limit {
                requests,
                window_ms,
            },
            cost: 1,
        }
    }

    fn check(s: &MemoryStore, hits: &[Hit]) -> Result<Outcome, StoreError> {
        s.check_now(hits, (s.clock)())
    }

    fn ip(n: u32) -> String {
        format!(
            "rl:{{i:2001:db8::{:x}:{:x}}}:rule:r#0:s60000",
            n >> 16,
            n & 0xffff
        )
    }

    #[test]
    fn a_spray_of_new_keys_stays_at_the_bound_and_cannot_free_an_existing_counter() {
        const MAX: usize = 1_000;
        let (s, now) = store(MAX);
        // Over its limit before the spray: 3 of 3 used.
        let over = [hit("rl:{c:p:over}:rule:r#1:s60000", 3, 60_000)];
        for _ in 0..3 {
            assert!(check(&s, &over).unwrap().admitted);
        }
        assert!(!check(&s, &over).unwrap().admitted);
        // Under its limit: 10 per minute, 2 used.
        let under = hit("rl:{c:p:under}:rule:r#1:s60000", 10, 60_000);
        for _ in 0..2 {
            assert!(check(&s, std::slice::from_ref(&under)).unwrap().admitted);
        }

        let (mut full, mut under_charged) = (0, 2);
        for n in 0..100_000u32 {
            now.fetch_add(n as i64 % 2, Ordering::Relaxed);
            match check(&s, &[hit(&ip(n), 5, 60_000)]) {
                Ok(o) => assert!(o.admitted),
                Err(StoreError::Full) => full += 1,
                Err(e) => panic!("{e}"),
            }
            if n % 10_000 == 0 && n > 0 {
                // The over-limit client stays limited: its counter is never evicted.
                let o = check(&s, &over).unwrap();
                assert!(!o.admitted, "after {n} sprayed keys");
                assert_eq!(o.checks[0].used, 3);
                // A request of the under-limit client that also needs a new counter is charged
                // to the counter that exists, though the new key finds no room.
                if under_charged < 10 {
                    let r = check(&s, &[under.clone(), hit(&ip(u32::MAX - n), 5, 60_000)]);
                    assert_eq!(r, Err(StoreError::Full));
                    under_charged += 1;
                }
            }
            assert!(s.len() <= MAX);
        }
        assert_eq!(s.len(), MAX);
        assert_eq!(full, 100_000 - (MAX - 2));
        assert_eq!(s.metrics.counters.as_ref().unwrap().get(), MAX as i64);
        let full_events = full + (under_charged - 2);
        assert_eq!(s.metrics.full.as_ref().unwrap().get(), full_events as u64);
        // Never more than 10 in the window for the existing counter.
        assert_eq!(under_charged, 10);
        let o = check(&s, std::slice::from_ref(&under)).unwrap();
        assert!(!o.admitted);
        assert_eq!(o.checks[0].used, 10);
    }

    #[test]
    fn expired_counters_make_room_first() {
        let (s, now) = store(10);
        for n in 0..10 {
            assert!(check(&s, &[hit(&ip(n), 5, 1_000)]).unwrap().admitted);
        }
        let live = hit("rl:{c:p:live}:rule:r#1:s60000", 5, 60_000);
        assert_eq!(
            check(&s, std::slice::from_ref(&live)),
            Err(StoreError::Full)
        );
        // Once the one-second counters have expired, a new key gets a counter at once.
        now.fetch_add(2_000 + FULL_SWEEP_GAP_MS, Ordering::Relaxed);
        assert!(check(&s, std::slice::from_ref(&live)).unwrap().admitted);
        assert_eq!(s.len(), 1, "the expired counters are gone");
        assert_eq!(check(&s, &[live]).unwrap().checks[0].used, 1);
    }

    #[test]
    fn a_full_store_sweeps_at_most_once_per_gap() {
        let (s, now) = store(2);
        assert!(check(&s, &[hit(&ip(0), 5, 1_000)]).unwrap().admitted);
        assert!(check(&s, &[hit(&ip(1), 5, 60_000)]).unwrap().admitted);
        now.fetch_add(1_500, Ordering::Relaxed);
        // ip(0) expired: the sweep frees its place.
        assert!(check(&s, &[hit(&ip(2), 5, 1_000)]).unwrap().admitted);
        now.fetch_add(1_000, Ordering::Relaxed);
        // ip(2) expired too, but the last sweep was less than the gap ago.
        assert_eq!(check(&s, &[hit(&ip(3), 5, 60_000)]), Err(StoreError::Full));
        now.fetch_add(FULL_SWEEP_GAP_MS, Ordering::Relaxed);
        assert!(check(&s, &[hit(&ip(3), 5, 60_000)]).unwrap().admitted);
    }
}
