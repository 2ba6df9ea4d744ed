//! The embedded store: counters in a process-local map. Exact for one service instance; several
//! instances each enforce the full limit on their own (use Redis to share limits).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{CounterStore, Hit, Outcome, StoreError};
use crate::limiter;

/// Milliseconds since the Unix epoch; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

#[derive(Debug, Default)]
struct Counter {
    /// (bucket, cost); at most 61 live entries.
    buckets: Vec<(i64, u64)>,
    /// Unix ms after which the whole counter is dead.
    expires_at: i64,
}

pub struct MemoryStore {
    /// One lock for all counters keeps a request's check-and-charge atomic across its counters;
    /// the critical section is a few hundred nanoseconds, far below the gRPC cost around it.
    counters: Mutex<HashMap<String, Counter>>,
    clock: Clock,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_clock(Arc::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        }))
    }
}

impl MemoryStore {
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            counters: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Drops counters whose window has passed. Called periodically; returns how many are left.
    pub fn sweep(&self) -> usize {
        let now = (self.clock)();
        let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, c| c.expires_at > now);
        map.len()
    }

    pub fn len(&self) -> usize {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_now(&self, hits: &[Hit], now: i64) -> Outcome {
        let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut checks = Vec::with_capacity(hits.len());
        for h in hits {
            let buckets = map
                .get(&h.key)
                .filter(|c| c.expires_at > now)
                .map_or(&[][..], |c| c.buckets.as_slice());
            checks.push(limiter::evaluate(
                h.algorithm,
                h.limit,
                buckets,
                now,
                h.cost,
            ));
        }
        let admitted = checks.iter().all(|c| c.admitted);
        if admitted {
            for h in hits {
                let c = map.entry(h.key.clone()).or_default();
                if c.expires_at <= now {
                    c.buckets.clear();
                }
                let lo = limiter::oldest_live_bucket(h.algorithm, h.limit, now);
                c.buckets.retain(|&(i, _)| i >= lo);
                let b = limiter::bucket_of(h.algorithm, h.limit, now);
                match c.buckets.iter_mut().find(|(i, _)| *i == b) {
                    Some((_, n)) => *n = n.saturating_add(h.cost),
                    None => c.buckets.push((b, h.cost)),
                }
                let ttl = limiter::ttl_ms(h.algorithm, h.limit);
                c.expires_at = now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
            }
        }
        Outcome {
            admitted,
            checks,
            now_ms: now,
        }
    }
}

impl CounterStore for MemoryStore {
    async fn check(&self, hits: &[Hit]) -> Result<Outcome, StoreError> {
        Ok(self.check_now(hits, (self.clock)()))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
