//! A bounded cache of verified tokens, keyed by the token's SHA-256 (the token itself is never
//! kept), each entry dropped at the token's `exp` at the latest.
//!
//! Sharded by the first digest byte so concurrent Checks rarely contend. A full shard first drops
//! its expired entries, then an arbitrary eighth of the rest: cheap, and a cache miss only costs
//! one verification.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

struct Entry<V> {
    value: Arc<V>,
    /// Seconds since the epoch after which the entry is dead (the token's `exp`).
    until: u64,
    /// Key-set generation the verdict was made with (remote JWKS); another generation misses.
    generation: u64,
}

pub struct TokenCache<V> {
    shards: Vec<Mutex<HashMap<[u8; 32], Entry<V>>>>,
    per_shard: usize,
}

impl<V> TokenCache<V> {
    /// `capacity` 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    fn shard(&self, key: &[u8; 32]) -> &Mutex<HashMap<[u8; 32], Entry<V>>> {
        &self.shards[key[0] as usize % SHARDS]
    }

    pub fn get(&self, key: &[u8; 32], now: u64, generation: u64) -> Option<Arc<V>> {
        if self.per_shard == 0 {
            return None;
        }
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        match shard.get(key) {
            Some(e) if now < e.until && e.generation == generation => Some(e.value.clone()),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: [u8; 32], value: Arc<V>, until: u64, now: u64, generation: u64) {
        if self.per_shard == 0 || until <= now {
            return;
        }
        let mut shard = self.shard(&key).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard {
            shard.retain(|_, e| now < e.until);
            if shard.len() >= self.per_shard {
                let drop_n = (self.per_shard / 8).max(1);
                let victims: Vec<[u8; 32]> = shard.keys().take(drop_n).copied().collect();
                for v in victims {
                    shard.remove(&v);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                value,
                until,
                generation,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        k[0] = (i % 251) as u8;
        k
    }

    #[test]
    fn entries_die_at_exp_and_on_a_new_generation() {
        let c = TokenCache::new(100);
        c.insert(key(1), Arc::new("a"), 1000, 10, 0);
        assert_eq!(c.get(&key(1), 999, 0).as_deref(), Some(&"a"));
        assert!(c.get(&key(1), 999, 1).is_none(), "other key generation");
        c.insert(key(1), Arc::new("a"), 1000, 10, 0);
        assert!(c.get(&key(1), 1000, 0).is_none(), "dead at exp");
        c.insert(key(2), Arc::new("b"), 5, 10, 0);
        assert!(
            c.get(&key(2), 1, 0).is_none(),
            "already expired: never stored"
        );
    }

    #[test]
    fn stays_bounded() {
        let c = TokenCache::new(160);
        for i in 0..10_000 {
            c.insert(key(i), Arc::new(i), u64::MAX, 0, 0);
        }
        assert!(c.len() <= 160, "{}", c.len());
        let off = TokenCache::new(0);
        off.insert(key(1), Arc::new(1), u64::MAX, 0, 0);
        assert!(off.is_empty());
    }
}
