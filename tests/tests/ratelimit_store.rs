//! One behaviour suite for every counter store: the embedded memory store, a real single-node
//! `redis-server`, and a real three-master Redis Cluster. Each backend runs every scenario in
//! turn (on distinct keys), so a cluster is started once per backend, not once per scenario.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ratelimit_service::limiter::{Algorithm, Limit};
use ratelimit_service::store::{CounterStore, Hit, MemoryStore, RedisStore};
use tests::redis::{RedisCluster, RedisServer};
use tests::wait_for;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A key no other scenario (or earlier run against the same server) uses, with its own tag.
fn key(tag: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("rl:{{{tag}-{pid}-{n}}}:suite")
}

fn hit(key: &str, alg: Algorithm, requests: u64, window_ms: u64, cost: u64) -> Hit {
    Hit {
        key: key.to_string(),
        algorithm: alg,
        limit: Limit {
            requests,
            window_ms,
        },
        cost,
    }
}

async fn check<S: CounterStore>(s: &S, hits: &[Hit]) -> ratelimit_service::store::Outcome {
    s.check(hits).await.expect("store answers")
}

async fn admits_up_to_the_limit_then_denies<S: CounterStore>(s: &S) {
    let k = key("basic");
    let h = [hit(&k, Algorithm::SlidingWindow, 5, 10_000, 1)];
    for expected_remaining in (0..5).rev() {
        let o = check(s, &h).await;
        assert!(o.admitted);
        assert_eq!(
            o.checks[0].remaining(h[0].limit, 1, true),
            expected_remaining
        );
        assert!(o.checks[0].reset_ms > 0 && o.checks[0].reset_ms <= 10_000);
    }
    let o = check(s, &h).await;
    assert!(!o.admitted);
    assert_eq!(o.checks[0].used, 5);
    assert_eq!(o.checks[0].remaining(h[0].limit, 1, false), 0);
    let retry = o.checks[0].retry_after_ms;
    // Close to a whole window (the first admission was moments ago; a slow machine may take
    // seconds), never beyond it.
    assert!(retry > 5_000 && retry <= 10_000, "retry after {retry} ms");
}

/// A fresh counter's quota comes back one window after its requests, never a sub-bucket later
/// (`Retry-After: 61` on a fresh `N/minute` was the bug): the first admission reports exactly
/// the window, and the first denial no more than the window, no less than the time until the
/// first request is a window old.
async fn a_fresh_window_reports_at_most_the_window<S: CounterStore>(s: &S) {
    let k = key("fresh");
    let w = 60_000;
    let h = [hit(&k, Algorithm::SlidingWindow, 3, w, 1)];
    let first = check(s, &h).await;
    assert!(first.admitted);
    assert_eq!(first.checks[0].reset_ms, w, "a fresh counter");
    for _ in 0..2 {
        let o = check(s, &h).await;
        assert!(o.admitted);
        assert!(o.checks[0].reset_ms <= w, "{:?}", o.checks[0]);
    }
    let o = check(s, &h).await;
    assert!(!o.admitted);
    let (reset, retry) = (o.checks[0].reset_ms, o.checks[0].retry_after_ms);
    let first_leaves = (first.now_ms + w as i64 - o.now_ms) as u64;
    assert!(
        (first_leaves..=w).contains(&retry) && reset == retry,
        "retry {retry} ms, reset {reset} ms, the first request leaves in {first_leaves} ms"
    );
}

async fn rejected_requests_consume_nothing<S: CounterStore>(s: &S) {
    let k = key("rejected");
    let h = [hit(&k, Algorithm::SlidingWindow, 3, 1_000, 1)];
    for _ in 0..3 {
        assert!(check(s, &h).await.admitted);
    }
    for _ in 0..20 {
        let o = check(s, &h).await;
        assert!(!o.admitted);
        assert_eq!(o.checks[0].used, 3, "a denial must not be counted");
    }
    // Once the window has passed the counter has its whole quota back, however often it was
    // denied: a request costing all of it is admitted. (Polling with cost 1 would be admitted as
    // soon as the oldest sub-bucket leaves, which may hold only part of the three.)
    let whole = [hit(&k, Algorithm::SlidingWindow, 3, 1_000, 3)];
    wait_for("the window to pass", Duration::from_secs(5), async || {
        check(s, &whole).await.admitted
    })
    .await;
    assert!(!check(s, &h).await.admitted, "that took the whole quota");
}

async fn a_request_counts_against_all_its_limits_or_none<S: CounterStore>(s: &S) {
    // Different tags: in a cluster these are different slots (two scripts and a refund).
    let (a, b) = (key("a"), key("b"));
    let both = [
        hit(&a, Algorithm::SlidingWindow, 2, 10_000, 1),
        hit(&b, Algorithm::SlidingWindow, 10, 10_000, 1),
    ];
    assert!(check(s, &both).await.admitted);
    assert!(check(s, &both).await.admitted);
    let o = check(s, &both).await;
    assert!(!o.admitted);
    assert!(!o.checks[0].admitted);
    assert!(o.checks[1].admitted, "b alone would admit");
    let only_b = check(s, &both[1..]).await;
    assert!(only_b.admitted);
    assert_eq!(
        only_b.checks[0].used, 2,
        "the denied request was charged to b"
    );
}

async fn several_limits_on_one_key<S: CounterStore>(s: &S) {
    // 2/second and 3/day on one client: same tag, so one script call even in a cluster.
    let tag = key("multi");
    let (sec, day) = (format!("{tag}:s"), format!("{tag}:d"));
    let hits = [
        hit(&sec, Algorithm::SlidingWindow, 2, 1_000, 1),
        hit(&day, Algorithm::SlidingWindow, 3, 86_400_000, 1),
    ];
    assert!(check(s, &hits).await.admitted);
    assert!(check(s, &hits).await.admitted);
    let o = check(s, &hits).await;
    assert!(!o.admitted && !o.checks[0].admitted && o.checks[1].admitted);
    wait_for(
        "the one-second window to pass",
        Duration::from_secs(5),
        async || check(s, &hits).await.admitted,
    )
    .await;
    let o = check(s, &hits).await;
    assert!(!o.admitted, "the daily limit of 3 is used up");
    assert!(!o.checks[1].admitted);
    assert!(o.checks[1].retry_after_ms > 86_000_000);
}

async fn costs_are_charged_whole<S: CounterStore>(s: &S) {
    let k = key("cost");
    let with_cost = |c| [hit(&k, Algorithm::SlidingWindow, 5, 10_000, c)];
    let o = check(s, &with_cost(3)).await;
    assert!(o.admitted);
    assert_eq!(o.checks[0].remaining(with_cost(3)[0].limit, 3, true), 2);
    let o = check(s, &with_cost(3)).await;
    assert!(!o.admitted);
    assert_eq!(o.checks[0].used, 3);
    assert!(check(s, &with_cost(2)).await.admitted);
    assert!(!check(s, &with_cost(1)).await.admitted);
}

async fn concurrent_checks_never_over_admit<S: CounterStore>(s: Arc<S>) {
    let k = key("concurrent");
    let h = hit(&k, Algorithm::SlidingWindow, 50, 10_000, 1);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (s, h) = (s.clone(), h.clone());
            tokio::spawn(async move {
                let mut n = 0;
                for _ in 0..5 {
                    if s.check(std::slice::from_ref(&h))
                        .await
                        .expect("store")
                        .admitted
                    {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.expect("task");
    }
    assert_eq!(admitted, 50, "160 concurrent attempts against 50/10s");
}

async fn fixed_and_approximate_windows<S: CounterStore>(s: &S) {
    for alg in [Algorithm::Fixed, Algorithm::Approximate] {
        let k = key(alg.name());
        // An hour-long window: a clock-aligned boundary inside the test is practically impossible.
        let h = [hit(&k, alg, 4, 3_600_000, 1)];
        for _ in 0..4 {
            assert!(check(s, &h).await.admitted, "{alg:?}");
        }
        let o = check(s, &h).await;
        assert!(!o.admitted, "{alg:?}");
        assert!(o.checks[0].retry_after_ms > 0, "{alg:?}");
        assert!(o.checks[0].reset_ms <= 3_600_000, "{alg:?}");
    }
}

async fn windows_of_any_length<S: CounterStore>(s: &S) {
    let k = key("odd");
    let h = [hit(&k, Algorithm::SlidingWindow, 2, 1_500, 1)];
    assert!(check(s, &h).await.admitted);
    assert!(check(s, &h).await.admitted);
    let o = check(s, &h).await;
    assert!(!o.admitted);
    assert!(o.checks[0].retry_after_ms <= 1_500);
    wait_for(
        "the 1.5 s window to pass",
        Duration::from_secs(5),
        async || check(s, &h).await.admitted,
    )
    .await;
    // Windows far longer than the clock has run (a bucket, even a sub-bucket, longer than the
    // time since 1970: bucket index 0), up to the longest a rate may name (2^52 ms): counted
    // like any other, the key's expiry set as far ahead.
    for w in [36_500 * 86_400_000, 1u64 << 52] {
        for alg in [
            Algorithm::Fixed,
            Algorithm::Approximate,
            Algorithm::SlidingWindow,
        ] {
            let h = [hit(&key("long"), alg, 2, w, 1)];
            for n in 0..2 {
                let o = check(s, &h).await;
                assert!(o.admitted, "{} per {w} ms, request {n}", alg.name());
                assert_eq!(o.checks[0].used, n, "{} per {w} ms: {o:?}", alg.name());
            }
            let o = check(s, &h).await;
            assert!(!o.admitted, "{} per {w} ms, the third", alg.name());
            // (The approximate window's retry may fall in the next window, up to 2 W away.)
            let retry = o.checks[0].retry_after_ms;
            assert!(
                retry > 0 && retry <= 2 * w,
                "{} per {w} ms: {o:?}",
                alg.name()
            );
        }
    }
    // A different key is untouched by all of this.
    assert!(
        check(
            s,
            &[hit(&key("other"), Algorithm::SlidingWindow, 1, 1_500, 1)]
        )
        .await
        .admitted
    );
}

async fn suite<S: CounterStore>(s: Arc<S>) {
    admits_up_to_the_limit_then_denies(&*s).await;
    a_fresh_window_reports_at_most_the_window(&*s).await;
    rejected_requests_consume_nothing(&*s).await;
    a_request_counts_against_all_its_limits_or_none(&*s).await;
    several_limits_on_one_key(&*s).await;
    costs_are_charged_whole(&*s).await;
    concurrent_checks_never_over_admit(s.clone()).await;
    fixed_and_approximate_windows(&*s).await;
    windows_of_any_length(&*s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store() {
    suite(Arc::new(MemoryStore::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_single_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).await;
    let store = RedisStore::from_url(&redis.url()).expect("redis url");
    assert_eq!(store.kind(), "redis");
    suite(Arc::new(store)).await;
}

/// `hits` is answered with a bad reply: a key holds something that is not a counter.
async fn refused(store: &RedisStore, hits: &[Hit], what: &str) {
    let err = store.check(hits).await.expect_err(what);
    assert!(
        matches!(err, ratelimit_service::store::StoreError::BadReply(_)),
        "{what}: {err:?}"
    );
}

/// `SET key value` with a binary value (the text protocol of `raw_command` cannot carry one).
fn set_bytes(port: u16, key: &str, value: &[u8]) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut cmd = format!(
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
        key.len(),
        value.len()
    )
    .into_bytes();
    cmd.extend_from_slice(value);
    cmd.extend_from_slice(b"\r\n");
    s.write_all(&cmd).expect("write");
    let mut ok = [0u8; 5];
    s.read_exact(&mut ok).expect("read");
    assert_eq!(&ok, b"+OK\r\n");
}

/// A counter's key that holds something else: a hash of the earlier layout (one hash field per
/// bucket) starts again, once, as a counter; any other value (a list, a string that is not a
/// counter) is an error for that request, never taken for an empty counter (which would admit
/// without a count) and never overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_that_hold_something_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).await;
    let store = RedisStore::from_url(&redis.url()).expect("redis url");
    let port = redis.port();
    let raw = |cmd: &str| tests::redis::raw_command(port, cmd).expect("raw command");

    let old = key("old-layout");
    raw(&format!("HSET {old} 29000000 7"));
    let h = [hit(&old, Algorithm::SlidingWindow, 2, 60_000, 1)];
    let first = check(&store, &h).await;
    assert!(first.admitted);
    // `used` is what the window held before this request: nothing of the old hash's 7.
    assert_eq!(
        first.checks[0].used, 0,
        "the old hash's count is not carried over"
    );
    assert!(raw(&format!("TYPE {old}")).starts_with("+string"));
    assert!(check(&store, &h).await.admitted);
    assert!(!check(&store, &h).await.admitted, "the new counter counts");

    // The script reads a counter's first 56 bytes, then, when they are not of its layout, the
    // whole value as one of the layout before: values must be refused by what those bytes say
    // (a 100-byte text has no layout mark and decodes to numbers far out of range; 51 zero bytes
    // and an `a` to a bucket index 0 with 24,832 buckets), never looped over or overwritten.
    let long_text = format!("SET {{k}} {}", "x".repeat(100));
    for (name, setup) in [
        ("list", "RPUSH {k} a b"),
        ("text", "SET {k} not-a-counter"),
        ("long-text", long_text.as_str()),
        ("zero-padded", "SETRANGE {k} 51 a"),
    ] {
        let k = key(name);
        raw(&setup.replace("{k}", &k));
        let before = raw(&format!("DUMP {k}"));
        let h = [hit(&k, Algorithm::SlidingWindow, 100, 60_000, 1)];
        refused(&store, &h, name).await;
        assert_eq!(
            raw(&format!("DUMP {k}")),
            before,
            "{name} is left as it was"
        );
        // A request on a counter next to it is decided as usual.
        let fine = key("next-to-bad");
        let both = [hit(&fine, Algorithm::Fixed, 1, 60_000, 1)];
        assert!(check(&store, &both).await.admitted);
    }

    // A header of this layout whose string is cut short (no buckets, no end mark) although it
    // says it holds two buckets: a denial reads the buckets for its retry time and finds too few,
    // a request in a new bucket would write after them. Either is refused, nothing is written,
    // and a request naming it with a sound counter charges neither.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as f64;
    let short = key("cut-short");
    let mut header = Vec::new();
    // prev, last, t, total, base, expires: buckets two and one seconds ago (sub-buckets of a
    // second for a minute's window), the latest admission in the second.
    for x in [
        50.0,
        50.0,
        now - 1_500.0,
        100.0,
        (now / 1000.0).floor() - 2.0,
        now + 120_000.0,
    ] {
        header.extend_from_slice(&f64::to_le_bytes(x));
    }
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes());
    header.extend_from_slice(&0x4c52_4753u32.to_le_bytes());
    set_bytes(port, &short, &header);
    let before = raw(&format!("DUMP {short}"));
    let sound = key("next-to-short");
    for limit in [10, 1_000] {
        let h = [
            hit(&sound, Algorithm::SlidingWindow, 1_000, 60_000, 1),
            hit(&short, Algorithm::SlidingWindow, limit, 60_000, 1),
        ];
        refused(&store, &h, &format!("cut short, limit {limit}")).await;
        assert_eq!(
            raw(&format!("DUMP {short}")),
            before,
            "limit {limit}: left as it was"
        );
        assert_eq!(
            raw(&format!("EXISTS {sound}")),
            ":0\r\n",
            "limit {limit}: nothing charged"
        );
    }
}

/// A counter kept by the layout before this one (its buckets, then a 36-byte trailer: latest
/// admission, total, base index and expiry as doubles, the first and last bucket as u16 offsets)
/// keeps its counts when the script first reads it, and is rewritten in the new layout (header,
/// array, end mark): an upgrade never hands a client a fresh window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_counters_of_the_layout_before_keep_their_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).await;
    let port = redis.port();
    let now: i64 = 1_700_000_000_500;
    let store = RedisStore::from_url(&redis.url())
        .expect("redis url")
        .with_clock(Arc::new(move || now));
    // Sub-buckets of a second for a minute's window: `now` is in bucket `cur`.
    let cur = (now / 1000) as f64;
    let set = |key: &str, value: &[u8]| set_bytes(port, key, value);
    let old = |buckets: &[f64], base: f64, first: u16| -> Vec<u8> {
        let mut v: Vec<u8> = buckets.iter().flat_map(|b| b.to_le_bytes()).collect();
        let total: f64 = buckets[first as usize..].iter().sum();
        for x in [(now - 200) as f64, total, base, 0.0] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&first.to_le_bytes());
        v.extend_from_slice(&(buckets.len() as u16 - 1).to_le_bytes());
        v
    };
    let raw = |cmd: &str| tests::redis::raw_command(port, cmd).expect("raw command");
    // One bucket holding 3; and three buckets (a dead one, then 2 and 1) holding 3 live.
    let one = key("old-string-one");
    set(&one, &old(&[3.0], cur, 0));
    let three = key("old-string-three");
    set(&three, &old(&[4.0, 2.0, 1.0], cur - 2.0, 1));
    for (k, len) in [(&one, 60), (&three, 76)] {
        let h = [hit(k, Algorithm::SlidingWindow, 5, 60_000, 1)];
        let first = check(&store, &h).await;
        assert!(first.admitted, "{k}");
        assert_eq!(first.checks[0].used, 3, "{k}: the old counts are kept");
        assert_eq!(
            raw(&format!("STRLEN {k}")),
            format!(":{len}\r\n"),
            "{k}: rewritten"
        );
        assert_eq!(check(&store, &h).await.checks[0].used, 4, "{k}");
        let full = check(&store, &h).await;
        assert!(
            !full.admitted,
            "{k}: 3 kept + 2 admitted reach the limit of 5"
        );
        assert_eq!(full.checks[0].used, 5, "{k}");
    }
}

/// A clock that goes back and forth across a window boundary (Redis's `TIME` after a failover,
/// say): the Redis store keeps a dead bucket in its string until it rewrites it, and must answer
/// as the memory store, which has deleted it, does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_answers_as_memory_when_the_clock_steps_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).await;
    let now = Arc::new(AtomicU64::new(0));
    let clock = |n: &Arc<AtomicU64>| -> Arc<dyn Fn() -> i64 + Send + Sync> {
        let n = n.clone();
        Arc::new(move || n.load(Ordering::SeqCst) as i64)
    };
    let memory = MemoryStore::with_clock(clock(&now));
    let redis_store = RedisStore::from_url(&redis.url())
        .expect("redis url")
        .with_clock(clock(&now));
    for alg in [
        Algorithm::Fixed,
        Algorithm::Approximate,
        Algorithm::SlidingWindow,
    ] {
        let k = key(&format!("back-{}", alg.name()));
        for (at, cost) in [
            (2_000, 1),
            (1_500, 1),
            (2_100, 1),
            (1_600, 1),
            (2_200, 2),
            (900, 1),
        ] {
            now.store(at, Ordering::SeqCst);
            let h = [hit(&k, alg, 2, 1_000, cost)];
            let (m, r) = (check(&memory, &h).await, check(&redis_store, &h).await);
            assert_eq!(
                (m.admitted, m.checks[0].used, m.checks[0].reset_ms),
                (r.admitted, r.checks[0].used, r.checks[0].reset_ms),
                "{} at {at} ms, cost {cost}",
                alg.name()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = RedisCluster::start(dir.path(), 3).await;
    let store = RedisStore::from_url(&cluster.url()).expect("cluster url");
    assert_eq!(store.kind(), "redis-cluster");
    suite(Arc::new(store)).await;
}
