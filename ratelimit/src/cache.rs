//! Counters known to be over their limit until a known instant, so a client hammering a limit
//! costs no store round trip until then.
//!
//! Sound because counters only grow between now and that instant: a denial's `retry_after` is the
//! earliest moment a request of cost 1 could be admitted even if nobody else is, and other
//! requests (from any instance) can only add to the count. Entries are set only from cost-1
//! denials and are cleared whenever the policy changes (a raised limit must apply at once).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bounds memory under an attack from many keys; when full, expired entries are dropped first
/// and new entries are skipped (the store still decides them correctly).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default)]
pub struct OverLimitCache {
    entries: Mutex<HashMap<String, Instant>>,
}

impl OverLimitCache {
    /// How long `key` is still blocked, if it is.
    pub fn blocked_for(&self, key: &str, now: Instant) -> Option<Duration> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    pub fn block(&self, key: &str, until: Instant) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            let now = Instant::now();
            map.retain(|_, u| *u > now);
            if map.len() >= MAX_ENTRIES {
                return;
            }
        }
        map.insert(key.to_string(), until);
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let c = OverLimitCache::default();
        let now = Instant::now();
        c.block("k", now + Duration::from_millis(50));
        assert_eq!(c.blocked_for("k", now), Some(Duration::from_millis(50)));
        assert_eq!(c.blocked_for("k", now + Duration::from_millis(50)), None);
        assert_eq!(c.blocked_for("other", now), None);
        c.clear();
        assert!(c.is_empty());
    }
}
