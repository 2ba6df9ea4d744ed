//! Counters in Redis: one string per counter, evaluated and charged by one Lua script
//! (`limit.lua`, run by EVALSHA) on Redis's own clock.
//!
//! Single node: requests that wait at the same moment go into one script call (a batch, see
//! [`Batcher`]), which decides them one after another, each atomically, exactly as separate
//! calls would; every counter of a request is in the same call, so a request costs one round
//! trip however many limits apply. A request waits for at most the one call in flight. Redis
//! Cluster: a script may only touch keys of one hash slot, so counters are grouped by their
//! hash tag and each group runs its own script, all concurrently. When one group denies while
//! another admitted, the admitted groups are refunded (a second round trip, only in that
//! case): the limit is never exceeded, and for that short moment a concurrent request may see
//! slightly less quota than it could have had.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{RedisError, Script};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::memory::Clock;
use super::{CounterStore, Hit, Outcome, StoreError};
use crate::limiter::Check;

const SCRIPT: &str = include_str!("limit.lua");

/// How long one connection attempt or one reply may take at most. The service's own per-request
/// deadline (the policy's `timeout`) is usually much shorter and wins; this only bounds work left
/// behind by requests that already gave up.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests decided by one script call at most; more wait for the next call.
const MAX_BATCH: usize = 64;

enum Backend {
    Single {
        conn: ConnectionManager,
        /// The task that sends the batches, started by the first check (inside the runtime).
        batcher: std::sync::Mutex<Option<mpsc::UnboundedSender<Job>>>,
    },
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
    stats: Arc<BatchStats>,
}

/// Script calls made since the store was opened (each deciding a batch of requests).
#[derive(Debug, Default)]
pub struct BatchStats {
    pub calls: AtomicU64,
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
        Ok(Self::with_backend(Backend::Single {
            conn,
            batcher: std::sync::Mutex::new(None),
        }))
    }

    /// A Redis Cluster reached through any of `nodes` (`redis://host:port` each).
    pub fn cluster(nodes: &[String]) -> Result<Self, StoreError> {
        let client = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(IO_TIMEOUT)
            .response_timeout(IO_TIMEOUT)
            .retries(1)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self::with_backend(Backend::Cluster {
            client: Box::new(client),
            conn: Mutex::new(None),
        }))
    }

    fn with_backend(backend: Backend) -> Self {
        Self {
            backend,
            script: Script::new(SCRIPT),
            clock: None,
            stats: Arc::default(),
        }
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

    /// How many script calls the store has made (for the benchmarks).
    pub fn batch_stats(&self) -> &BatchStats {
        &self.stats
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

    /// The batch task's queue, starting the task when there is none (the first check, or the
    /// runtime that ran it has gone).
    fn queue(
        &self,
        conn: &ConnectionManager,
        slot: &std::sync::Mutex<Option<mpsc::UnboundedSender<Job>>>,
    ) -> mpsc::UnboundedSender<Job> {
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = guard.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let batcher = Batcher {
            conn: conn.clone(),
            script: self.script.clone(),
            clock: self.clock.clone(),
            stats: self.stats.clone(),
        };
        tokio::spawn(batcher.run(rx));
        *guard = Some(tx.clone());
        tx
    }

    async fn refund(&self, conn: &mut impl ConnectionLike, hits: &[Hit], buckets: &[i64]) {
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

/// One script call's verdict on one request: all admitted, per key (check, bucket charged),
/// Redis time.
type ScriptReply = (bool, Vec<(Check, i64)>, i64);

/// A request waiting for the batch task.
struct Job {
    hits: Vec<Hit>,
    reply: oneshot::Sender<Result<ScriptReply, StoreError>>,
}

/// Sends what waits as one script call, waits for its reply, and does it again: under load a
/// call carries every request that arrived during the previous one, which spares Redis a
/// script invocation, a TIME call and a reply per request; alone, a request is sent at once.
struct Batcher {
    conn: ConnectionManager,
    script: Script,
    clock: Option<Clock>,
    stats: Arc<BatchStats>,
}

impl Batcher {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
            // A caller past its deadline has gone: its request is not charged.
            jobs.retain(|j| !j.reply.is_closed());
            if jobs.is_empty() {
                continue;
            }
            let requests: Vec<&[Hit]> = jobs.iter().map(|j| j.hits.as_slice()).collect();
            let result = call(&self.script, self.clock.as_ref(), &mut self.conn, &requests).await;
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(replies) => {
                    for (job, r) in jobs.drain(..).zip(replies) {
                        let _ = job.reply.send(r);
                    }
                }
                Err(e) => {
                    for job in jobs.drain(..) {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// One script call deciding `requests` in order; one result per request.
async fn call(
    script: &Script,
    clock: Option<&Clock>,
    conn: &mut impl ConnectionLike,
    requests: &[&[Hit]],
) -> Result<Vec<Result<ScriptReply, StoreError>>, StoreError> {
    let mut inv = script.prepare_invoke();
    for h in requests.iter().flat_map(|r| r.iter()) {
        inv.key(&h.key);
    }
    match clock {
        Some(clock) => inv.arg(format!("check@{}", clock())),
        None => inv.arg("check"),
    };
    inv.arg(pack(requests)?);
    let (now, packed): (i64, Vec<u8>) = inv.invoke_async(conn).await.map_err(classify)?;
    parse(now, &packed, requests.iter().map(|r| r.len()))
}

/// The requests of one script call as its second argument (`limit.lua`): per request its number
/// of keys (little-endian u16), then per key the algorithm's one-byte code and limit, window and
/// cost as little-endian doubles (the script's numbers are doubles whatever form they arrive
/// in).
fn pack(requests: &[&[Hit]]) -> Result<Vec<u8>, StoreError> {
    let keys: usize = requests.iter().map(|r| r.len()).sum();
    let mut out = Vec::with_capacity(2 * requests.len() + 25 * keys);
    for r in requests {
        // One hit per limit of a route: a request is never near this.
        let n = u16::try_from(r.len()).map_err(|_| {
            StoreError::Unavailable(format!(
                "a request of {} counters is more than one script call carries",
                r.len()
            ))
        })?;
        out.extend_from_slice(&n.to_le_bytes());
        for h in r.iter() {
            out.push(h.algorithm.code().as_bytes()[0]);
            for v in [h.limit.requests, h.limit.window_ms, h.cost] {
                out.extend_from_slice(&(v as f64).to_le_bytes());
            }
        }
    }
    Ok(out)
}

/// Bytes of one key's verdict in the script's reply: admitted (u8), then used, reset, retry and
/// bucket (little-endian doubles).
const VERDICT_BYTES: usize = 1 + 4 * 8;

/// Reads the script's reply, Redis time `now` and `packed`: per request its status (i8), then
/// per key a verdict of [`VERDICT_BYTES`] (`limit.lua`).
fn parse(
    now: i64,
    packed: &[u8],
    keys: impl ExactSizeIterator<Item = usize> + Clone,
) -> Result<Vec<Result<ScriptReply, StoreError>>, StoreError> {
    let want = keys.clone().map(|k| 1 + VERDICT_BYTES * k).sum::<usize>();
    if packed.len() != want {
        return Err(StoreError::BadReply(format!(
            "expected {want} bytes, got {}",
            packed.len()
        )));
    }
    // A whole number in i64's range, as the script computes them; anything else is not its.
    let whole = |b: &[u8]| -> Result<i64, StoreError> {
        let v = f64::from_le_bytes(b.try_into().expect("eight bytes"));
        if v.fract() == 0.0 && (-9.0e15..=9.0e15).contains(&v) {
            Ok(v as i64)
        } else {
            Err(StoreError::BadReply(format!("not a whole number: {v}")))
        }
    };
    let non_negative = |b: &[u8]| -> Result<u64, StoreError> {
        let v = whole(b)?;
        u64::try_from(v).map_err(|_| StoreError::BadReply(format!("negative value {v}")))
    };
    // One request's verdicts; what is wrong in them fails that request only (the length check
    // above already framed every request).
    let request = |status: i8, verdicts: &[u8]| -> Result<ScriptReply, StoreError> {
        if status == -1 {
            return Err(StoreError::BadReply(
                "a counter's key holds a value that is not a counter".into(),
            ));
        }
        if status != 0 && status != 1 {
            return Err(StoreError::BadReply(format!("request status {status}")));
        }
        let mut checks = Vec::with_capacity(verdicts.len() / VERDICT_BYTES);
        for v in verdicts.chunks_exact(VERDICT_BYTES) {
            let admitted = match v[0] {
                0 => false,
                1 => true,
                other => return Err(StoreError::BadReply(format!("admitted {other}"))),
            };
            checks.push((
                Check {
                    admitted,
                    used: non_negative(&v[1..9])?,
                    reset_ms: non_negative(&v[9..17])?,
                    retry_after_ms: non_negative(&v[17..25])?,
                },
                whole(&v[25..33])?,
            ));
        }
        // Admitted exactly when every counter admitted it: a status that says otherwise is not
        // the script's, and is never taken for an admission.
        if (status == 1) != checks.iter().all(|(c, _)| c.admitted) {
            return Err(StoreError::BadReply(format!(
                "request status {status} disagrees with its counters"
            )));
        }
        Ok((status == 1, checks, now))
    };
    let mut rest = packed;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let (head, tail) = rest.split_at(1 + VERDICT_BYTES * k);
        rest = tail;
        out.push(request(head[0] as i8, &head[1..]));
    }
    Ok(out)
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
        // Refused here, before it joins a batch, so it fails alone (`pack` would fail the batch).
        if hits.len() > usize::from(u16::MAX) {
            return Err(StoreError::Unavailable(format!(
                "a request of {} counters is more than one script call carries",
                hits.len()
            )));
        }
        match &self.backend {
            Backend::Single { conn, batcher } => {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    hits: hits.to_vec(),
                    reply,
                };
                let stopped = || StoreError::Unavailable("the Redis batch task stopped".into());
                self.queue(conn, batcher).send(job).map_err(|_| stopped())?;
                let (admitted, checks, now_ms) = answer.await.map_err(|_| stopped())??;
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
                    let hs: Vec<Hit> = idx.iter().map(|&i| hits[i].clone()).collect();
                    async move {
                        let mut r = call(&self.script, self.clock.as_ref(), &mut c, &[&hs]).await?;
                        let one = r
                            .pop()
                            .ok_or_else(|| StoreError::BadReply("no reply".into()))?;
                        one.map(|r| (hs, r))
                    }
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
            Backend::Single { .. } => "redis",
            Backend::Cluster { .. } => "redis-cluster",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Algorithm;

    #[test]
    fn hash_tags() {
        assert_eq!(hash_tag("rl:{c:alice}:plan"), "c:alice");
        assert_eq!(hash_tag("plain"), "plain");
        assert_eq!(hash_tag("a{}b"), "a{}b");
    }

    /// A reply's packed part as `limit.lua` writes it: per request its status, then per key
    /// (admitted, used, reset, retry, bucket).
    fn packed(requests: &[(i8, &[[f64; 5]])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (status, keys) in requests {
            out.push(*status as u8);
            for k in *keys {
                out.push(k[0] as u8);
                for v in &k[1..] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let one = || [1usize].into_iter();
        let bad = |p: Vec<u8>| match parse(9, &p, one()) {
            Err(StoreError::BadReply(_)) => true,
            Ok(r) => matches!(r[..], [Err(StoreError::BadReply(_))]),
            Err(_) => false,
        };
        assert!(bad(Vec::new()));
        assert!(bad(packed(&[(1, &[[1.0, -5.0, 0.0, 0.0, 0.0]])])));
        assert!(bad(packed(&[(7, &[[1.0, 1.0, 0.0, 0.0, 0.0]])])));
        assert!(bad(packed(&[(1, &[[2.0, 1.0, 0.0, 0.0, 0.0]])])));
        // A status that disagrees with the counters' verdicts is never an admission.
        assert!(bad(packed(&[(1, &[[0.0, 1.0, 0.0, 0.0, 0.0]])])));
        assert!(bad(packed(&[(0, &[[1.0, 1.0, 0.0, 0.0, 0.0]])])));
        assert!(bad(packed(&[(1, &[[1.0, 1.5, 0.0, 0.0, 0.0]])])));
        assert!(bad(packed(&[(1, &[[1.0, f64::NAN, 0.0, 0.0, 0.0]])])));
        assert!(bad(packed(&[(1, &[[1.0, 1.0, 1e300, 0.0, 0.0]])])));
        let mut long = packed(&[(1, &[[1.0, 3.0, 10.0, 0.0, 7.0]])]);
        long.push(0);
        assert!(bad(long));
        let r = parse(9, &packed(&[(1, &[[1.0, 3.0, 10.0, 0.0, 7.0]])]), one()).unwrap();
        let (ok, checks, now) = r[0].clone().unwrap();
        assert!(ok);
        assert_eq!(now, 9);
        assert_eq!(checks[0].0.used, 3);
        assert_eq!(checks[0].0.reset_ms, 10);
        assert_eq!(checks[0].1, 7);
    }

    #[test]
    fn requests_are_packed_as_the_script_unpacks_them() {
        let hit = |alg, requests, window_ms, cost| Hit {
            key: "k".into(),
            algorithm: alg,
            limit: crate::limiter::Limit {
                requests,
                window_ms,
            },
            cost,
        };
        let a = [
            hit(Algorithm::SlidingWindow, 5, 60_000, 1),
            hit(Algorithm::Fixed, 7, 1_000, 2),
        ];
        let b = [hit(Algorithm::Approximate, 9, 3_600_000, 3)];
        let packed = pack(&[&a, &b]).unwrap();
        assert_eq!(packed.len(), 2 + 2 * 25 + 2 + 25);
        assert_eq!(&packed[..3], &[2, 0, b's']);
        let double = |at: usize| f64::from_le_bytes(packed[at..at + 8].try_into().unwrap());
        assert_eq!((double(3), double(11), double(19)), (5.0, 60_000.0, 1.0));
        assert_eq!(packed[27], b'f');
        assert_eq!(&packed[52..55], &[1, 0, b'a']);
        assert_eq!(double(71), 3.0);
        let many = vec![hit(Algorithm::Fixed, 1, 1, 1); 70_000];
        assert!(matches!(pack(&[&many]), Err(StoreError::Unavailable(_))));
    }

    #[tokio::test]
    async fn a_request_too_large_for_a_script_call_fails_alone_before_any_io() {
        // Nothing listens on port 1; a script call, even a failed one, would count in the stats.
        let store = RedisStore::single("redis://127.0.0.1:1/0").unwrap();
        let hit = Hit {
            key: "k".into(),
            algorithm: Algorithm::Fixed,
            limit: crate::limiter::Limit {
                requests: 1,
                window_ms: 1,
            },
            cost: 1,
        };
        let many = vec![hit; usize::from(u16::MAX) + 1];
        assert!(matches!(
            store.check(&many).await,
            Err(StoreError::Unavailable(m)) if m.contains("65536 counters")
        ));
        assert_eq!(store.batch_stats().calls.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_batch_reply_splits_per_request_and_a_bad_key_fails_only_its_own() {
        // Two requests: one with two keys (admitted), one whose key is not a counter.
        let reply = packed(&[
            (1, &[[1.0, 0.0, 9.0, 0.0, 3.0], [1.0, 2.0, 8.0, 0.0, 3.0]]),
            (-1, &[[0.0; 5]]),
        ]);
        let r = parse(5, &reply, [2usize, 1].into_iter()).unwrap();
        let (ok, checks, now) = r[0].clone().unwrap();
        assert!(ok && now == 5 && checks.len() == 2 && checks[1].0.used == 2);
        assert!(matches!(r[1], Err(StoreError::BadReply(_))));
        // A malformed verdict fails its own request, not the batch.
        let reply = packed(&[
            (1, &[[1.0, 0.0, 9.0, 0.0, 3.0]]),
            (1, &[[1.0, 0.5, 9.0, 0.0, 3.0]]),
        ]);
        let r = parse(5, &reply, [1usize, 1].into_iter()).unwrap();
        assert!(r[0].is_ok() && matches!(r[1], Err(StoreError::BadReply(_))));
    }
}
