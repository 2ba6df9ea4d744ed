//! Counters in Redis: one hash per counter, evaluated and charged by one Lua script
//! (`limit.lua`, run by EVALSHA) per request, on Redis's own clock.
//!
//! Single node: every counter of a request goes into one script call, so a request costs one
//! round trip however many limits apply. Redis Cluster: a script may only touch keys of one hash
//! slot, so counters are grouped by their hash tag and each group runs its own script, all
//! concurrently. When one group denies while another admitted, the admitted groups are refunded
//! (a second round trip, only in that case): the limit is never exceeded, and for that short
//! moment a concurrent request may see slightly less quota than it could have had.

use std::collections::BTreeMap;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{RedisError, Script};
use tokio::sync::Mutex;

use super::memory::Clock;
use super::{CounterStore, Hit, Outcome, StoreError};
use crate::limiter::Check;

const SCRIPT: &str = include_str!("limit.lua");

/// How long one connection attempt or one reply may take at most. The service's own per-request
/// deadline (the policy's `timeout`) is usually much shorter and wins; this only bounds work left
/// behind by requests that already gave up.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

enum Backend {
    Single(ConnectionManager),
    Cluster {
        client: Box<ClusterClient>,
        /// Connected on first use (and again after a failed attempt), so the service starts
        /// and answers by `on_error` while the cluster is still down.
        conn: Mutex<Option<ClusterConnection>>,
    },
}

pub struct RedisStore {
    backend: Backend,
    script: Script,
    /// Decides on this clock instead of Redis's `TIME` ([`RedisStore::with_clock`]).
    clock: Option<Clock>,
}

impl RedisStore {
    /// A single node, e.g. `redis://127.0.0.1:6379/0`. Connects lazily and reconnects on its
    /// own; never fails because the server is down, only on a malformed URL.
    pub fn single(url: &str) -> Result<Self, StoreError> {
        let client =
            ::redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            backend: Backend::Single(conn),
            script: Script::new(SCRIPT),
            clock: None,
        })
    }

    /// A Redis Cluster reached through any of `nodes` (`redis://host:port` each).
    pub fn cluster(nodes: &[String]) -> Result<Self, StoreError> {
        let client = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(IO_TIMEOUT)
            .response_timeout(IO_TIMEOUT)
            .retries(1)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            backend: Backend::Cluster {
                client: Box::new(client),
                conn: Mutex::new(None),
            },
            script: Script::new(SCRIPT),
            clock: None,
        })
    }

    /// From the `--redis` value: `redis://…` for one node; `redis+cluster://h1:p1,h2:p2` (or
    /// several comma-separated `redis://` URLs) for a cluster.
    pub fn from_url(spec: &str) -> Result<Self, StoreError> {
        if let Some(rest) = spec.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> = rest
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|n| format!("redis://{n}"))
                .collect();
            return Self::cluster(&nodes);
        }
        if spec.contains(',') {
            let nodes: Vec<String> = spec.split(',').map(str::to_string).collect();
            return Self::cluster(&nodes);
        }
        Self::single(spec)
    }

    /// Decides on `clock` (milliseconds since the epoch) instead of Redis's own `TIME`, so a
    /// test can step time. Only for tests: instances sharing one Redis must share its clock,
    /// which is why a deployment never sets one (no flag reaches this).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    async fn cluster_conn(
        client: &ClusterClient,
        slot: &Mutex<Option<ClusterConnection>>,
    ) -> Result<ClusterConnection, StoreError> {
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = client.get_async_connection().await.map_err(classify)?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn run(
        &self,
        conn: &mut impl ConnectionLike,
        hits: &[&Hit],
    ) -> Result<ScriptReply, StoreError> {
        let mut inv = self.script.prepare_invoke();
        for h in hits {
            inv.key(&h.key);
        }
        match &self.clock {
            Some(clock) => inv.arg(format!("check@{}", clock())),
            None => inv.arg("check"),
        };
        for h in hits {
            inv.arg(h.algorithm.code())
                .arg(h.limit.requests)
                .arg(h.limit.window_ms)
                .arg(h.cost);
        }
        let reply: Vec<i64> = inv.invoke_async(conn).await.map_err(classify)?;
        parse(&reply, hits.len())
    }

    async fn refund(&self, conn: &mut impl ConnectionLike, hits: &[&Hit], buckets: &[i64]) {
        let mut inv = self.script.prepare_invoke();
        for h in hits {
            inv.key(&h.key);
        }
        inv.arg("refund");
        for (h, b) in hits.iter().zip(buckets) {
            inv.arg(*b).arg(h.cost).arg(0).arg(0);
        }
        if let Err(e) = inv.invoke_async::<Vec<i64>>(conn).await {
            // The charge stays until the window passes: conservative, never over the limit.
            tracing::warn!(error = %e, "could not refund a partly admitted request");
        }
    }
}

/// One script call's verdict: all admitted, per key (check, bucket charged), Redis time.
type ScriptReply = (bool, Vec<(Check, i64)>, i64);

/// Reads the script's reply: `{now, all, then (admitted, used, reset, retry, bucket) per key}`.
fn parse(reply: &[i64], keys: usize) -> Result<ScriptReply, StoreError> {
    if reply.len() != 2 + 5 * keys {
        return Err(StoreError::BadReply(format!(
            "expected {} integers, got {}",
            2 + 5 * keys,
            reply.len()
        )));
    }
    let non_negative =
        |v: i64| u64::try_from(v).map_err(|_| StoreError::BadReply(format!("negative value {v}")));
    let mut checks = Vec::with_capacity(keys);
    for chunk in reply[2..].chunks_exact(5) {
        checks.push((
            Check {
                admitted: chunk[0] == 1,
                used: non_negative(chunk[1])?,
                reset_ms: non_negative(chunk[2])?,
                retry_after_ms: non_negative(chunk[3])?,
            },
            chunk[4],
        ));
    }
    Ok((reply[1] == 1, checks, reply[0]))
}

fn classify(e: RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_cluster_error()
    {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::BadReply(e.to_string())
    }
}

/// The hash tag of a key (the text between the first `{` and the next `}`), which decides its
/// Redis Cluster slot.
fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|a| key[a + 1..].find('}').map(|b| &key[a + 1..a + 1 + b]))
        .filter(|t| !t.is_empty())
        .unwrap_or(key)
}

impl CounterStore for RedisStore {
    async fn check(&self, hits: &[Hit]) -> Result<Outcome, StoreError> {
        match &self.backend {
            Backend::Single(conn) => {
                let all: Vec<&Hit> = hits.iter().collect();
                let (admitted, checks, now_ms) = self.run(&mut conn.clone(), &all).await?;
                Ok(Outcome {
                    admitted,
                    checks: checks.into_iter().map(|(c, _)| c).collect(),
                    now_ms,
                })
            }
            Backend::Cluster { client, conn } => {
                let c = Self::cluster_conn(client, conn).await?;
                // Group by hash tag: one script call per slot group, all in flight together.
                let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for (i, h) in hits.iter().enumerate() {
                    groups.entry(hash_tag(&h.key)).or_default().push(i);
                }
                let groups: Vec<Vec<usize>> = groups.into_values().collect();
                let results = futures::future::join_all(groups.iter().map(|idx| {
                    let mut c = c.clone();
                    let hs: Vec<&Hit> = idx.iter().map(|&i| &hits[i]).collect();
                    async move { self.run(&mut c, &hs).await.map(|r| (hs, r)) }
                }))
                .await;
                let mut checks = vec![None; hits.len()];
                let mut admitted = true;
                let mut now_ms = 0;
                let mut ok_groups = Vec::new();
                let mut first_err = None;
                for (idx, r) in groups.iter().zip(results) {
                    match r {
                        Ok((hs, (group_ok, group_checks, now))) => {
                            now_ms = now_ms.max(now);
                            admitted &= group_ok;
                            let buckets: Vec<i64> = group_checks.iter().map(|&(_, b)| b).collect();
                            for (&i, (check, _)) in idx.iter().zip(group_checks) {
                                checks[i] = Some(check);
                            }
                            if group_ok {
                                ok_groups.push((hs, buckets));
                            }
                        }
                        Err(e) => {
                            admitted = false;
                            first_err.get_or_insert(e);
                        }
                    }
                }
                if !admitted {
                    for (hs, buckets) in &ok_groups {
                        self.refund(&mut c.clone(), hs, buckets).await;
                    }
                }
                if let Some(e) = first_err {
                    if matches!(e, StoreError::Unavailable(_)) {
                        // Drop the handle so the next request rebuilds the slot map.
                        *conn.lock().await = None;
                    }
                    return Err(e);
                }
                Ok(Outcome {
                    admitted,
                    checks: checks
                        .into_iter()
                        .map(|c| c.ok_or_else(|| StoreError::BadReply("missing group".into())))
                        .collect::<Result<_, _>>()?,
                    now_ms,
                })
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Single(_) => "redis",
            Backend::Cluster { .. } => "redis-cluster",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags() {
        assert_eq!(hash_tag("rl:{c:alice}:plan"), "c:alice");
        assert_eq!(hash_tag("plain"), "plain");
        assert_eq!(hash_tag("a{}b"), "a{}b");
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        assert!(matches!(parse(&[], 1), Err(StoreError::BadReply(_))));
        assert!(matches!(
            parse(&[1, 1, 1, -5, 0, 0, 0], 1),
            Err(StoreError::BadReply(_))
        ));
        let (ok, checks, now) = parse(&[9, 1, 1, 3, 10, 0, 7], 1).unwrap();
        assert!(ok);
        assert_eq!(now, 9);
        assert_eq!(checks[0].0.used, 3);
        assert_eq!(checks[0].1, 7);
    }
}
