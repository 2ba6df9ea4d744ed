//! Where counters live: the [`CounterStore`] trait and its two implementations, the embedded
//! [`MemoryStore`] and [`RedisStore`] (single node or Redis Cluster).
//!
//! A store evaluates every counter of one request together and admits the request only if all
//! of them admit it; only then does it add the cost to each. Both stores use the arithmetic in
//! [`crate::limiter`] and take time from one clock (the process clock for memory, Redis `TIME`
//! for Redis), so instances sharing a Redis agree on every window.

mod memory;
mod redis;

pub use self::memory::{MemoryMetrics, MemoryStore, DEFAULT_MAX_COUNTERS};
pub use self::redis::RedisStore;

use std::future::Future;

use crate::limiter::{Algorithm, Check, Limit};

/// One counter a request is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The counter's key, with a Redis Cluster hash tag (`{…}`); see [`crate::policy`].
    pub key: String,
    pub algorithm: Algorithm,
    pub limit: Limit,
    /// At least 1.
    pub cost: u64,
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Every counter admitted the request, and each was charged its cost.
    pub admitted: bool,
    /// One per hit, in order.
    pub checks: Vec<Check>,
    /// The store's clock at the decision, in Unix milliseconds.
    pub now_ms: i64,
}

/// Why a store could not decide. Every variant is the store's fault (never the client's), and
/// the service answers it by the policy's `on_error`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// Connecting or talking to the store failed; a retry may help once it is back.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something we cannot read (wrong type, wrong length).
    #[error("unexpected reply from the store: {0}")]
    BadReply(String),
    /// No answer within the policy's timeout.
    #[error("store timed out")]
    Timeout,
    /// The memory store holds its maximum number of live counters and the request needs a new
    /// one. Counters that exist were checked (none denied) and charged; only the new keys could
    /// not be counted. A retry helps once counters expire.
    #[error("memory store full: no room for a new counter")]
    Full,
}

/// A place to keep counters. `check` must be atomic per request: concurrent calls never both
/// see quota that only one of them can have.
pub trait CounterStore: Send + Sync + 'static {
    /// Evaluates `hits` (non-empty, keys distinct) and charges them if all admit.
    fn check(&self, hits: &[Hit]) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// For logs and metrics: `memory`, `redis` or `redis-cluster`.
    fn kind(&self) -> &'static str;
}

/// The store a service runs with, chosen by its `--redis` flag.
pub enum Store {
    /// The embedded store, shared with the task that drops idle counters.
    Memory(std::sync::Arc<MemoryStore>),
    Redis(RedisStore),
}

impl Store {
    /// `None`: counters in memory, at most `max_counters`, idle ones dropped every 5 s (this
    /// spawns that task, so it must run inside a Tokio runtime). `Some(url)`: Redis (see
    /// [`RedisStore::from_url`]); nothing is connected until the first check.
    pub fn open(
        redis: Option<&str>,
        max_counters: usize,
        metrics: MemoryMetrics,
    ) -> Result<Self, StoreError> {
        match redis {
            Some(url) => RedisStore::from_url(url).map(Self::Redis),
            None => {
                let store =
                    std::sync::Arc::new(MemoryStore::new(max_counters).with_metrics(metrics));
                let sweeper = std::sync::Arc::downgrade(&store);
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                    loop {
                        tick.tick().await;
                        let Some(store) = sweeper.upgrade() else {
                            return;
                        };
                        store.sweep();
                    }
                });
                Ok(Self::Memory(store))
            }
        }
    }
}

impl CounterStore for Store {
    async fn check(&self, hits: &[Hit]) -> Result<Outcome, StoreError> {
        match self {
            Self::Memory(m) => m.check(hits).await,
            Self::Redis(r) => r.check(hits).await,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Memory(m) => m.kind(),
            Self::Redis(r) => r.kind(),
        }
    }
}
