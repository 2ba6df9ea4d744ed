//! Property tests of spec §5 for every counter store (the memory store and a real `redis-server`
//! on a stepped clock, and Redis on its own clock, which only real pauses move): for random arrival sequences, an independent model records
//! the time of every admission and checks every window the algorithm promises.
//!
//! - `sliding_window`: in every trailing window `(t − W, t]` the admitted cost is at most `N`
//!   (exact from above), and a request is denied only when the admissions of the slightly longer
//!   window `(t − W − g, t]` plus its cost exceed `N` (at most one sub-bucket `g = W/60` early).
//! - `fixed`: in every clock-aligned window `[kW, (k+1)W)` exactly what fits in `N` is admitted.
//! - A request with several counters is admitted by all or none, and a cost above `N` never is.
//!
//! The model only knows the promise, not the buckets: it keeps a plain list of admission times.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use ratelimit_service::limiter::{Algorithm, Limit, SLIDING_BUCKETS};
use ratelimit_service::store::{CounterStore, Hit, MemoryStore, RedisStore};
use tests::redis::RedisServer;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// One counter of a case: its algorithm and limit.
#[derive(Debug, Clone)]
struct Counter {
    algorithm: Algorithm,
    limit: Limit,
}

/// One request: how long after the previous one it arrives, which counters it hits (a non-empty
/// subset, as a bit mask) and its cost.
#[derive(Debug, Clone)]
struct Arrival {
    gap_ms: u64,
    counters: u8,
    cost: u64,
}

#[derive(Debug, Clone)]
struct Case {
    counters: Vec<Counter>,
    arrivals: Vec<Arrival>,
}

fn counter(windows: impl Strategy<Value = u64>) -> impl Strategy<Value = Counter> {
    (
        prop_oneof![4 => Just(Algorithm::SlidingWindow), 1 => Just(Algorithm::Fixed)],
        1..=8u64,
        windows,
    )
        .prop_map(|(algorithm, requests, window_ms)| Counter {
            algorithm,
            limit: Limit {
                requests,
                window_ms,
            },
        })
}

/// Gaps that matter for a window `w`: bursts (0), sub-bucket steps, steps around the window's
/// length (a request just before or after an earlier one leaves) and long pauses.
fn gap(w: u64) -> impl Strategy<Value = u64> {
    let g = (w / SLIDING_BUCKETS).max(1);
    prop_oneof![
        3 => Just(0),
        3 => 0..=2 * g,
        2 => 0..=w / 3,
        1 => w.saturating_sub(2 * g)..=w + 2 * g,
        1 => w..=3 * w,
    ]
}

/// `windows`: the window lengths to draw; `max_arrivals`: how long a sequence may be.
fn case(
    windows: impl Strategy<Value = u64> + Clone,
    max_arrivals: usize,
) -> impl Strategy<Value = Case> {
    prop::collection::vec(counter(windows), 1..=2).prop_flat_map(move |counters| {
        let w = counters
            .iter()
            .map(|c| c.limit.window_ms)
            .min()
            .unwrap_or(1);
        let subsets = (1u8 << counters.len()) - 1;
        let arrival = (
            gap(w),
            1..=subsets,
            prop_oneof![6 => Just(1u64), 2 => 2..=3u64, 1 => 9..=10u64],
        )
            .prop_map(|(gap_ms, counters, cost)| Arrival {
                gap_ms,
                counters,
                cost,
            });
        (
            Just(counters),
            prop::collection::vec(arrival, 1..=max_arrivals),
        )
            .prop_map(|(counters, arrivals)| Case { counters, arrivals })
    })
}

/// The promise of one counter, checked against the admissions recorded so far.
struct Model {
    counter: Counter,
    /// (time, cost) of every admission, in order.
    admitted: Vec<(i64, u64)>,
}

impl Model {
    /// The cost admitted at times in `(from, to]`.
    fn admitted_in(&self, from: i64, to: i64) -> u64 {
        self.admitted
            .iter()
            .filter(|&&(t, _)| t > from && t <= to)
            .map(|&(_, c)| c)
            .sum()
    }

    /// Whether the promise *requires* admitting `cost` at `now` (a `false` allows a denial).
    fn must_admit(&self, now: i64, cost: u64) -> bool {
        let Limit {
            requests: n,
            window_ms: w,
        } = self.counter.limit;
        let w = w as i64;
        let used = match self.counter.algorithm {
            Algorithm::SlidingWindow => {
                let g = (w / SLIDING_BUCKETS as i64).max(1);
                self.admitted_in(now - w - g, now)
            }
            Algorithm::Fixed => {
                let start = now.div_euclid(w) * w;
                self.admitted_in(start - 1, now)
            }
            Algorithm::Approximate => unreachable!("no exact promise to check"),
        };
        used + cost <= n
    }

    /// Checks every window the algorithm bounds: the maximum over all of them is reached by one
    /// that ends at (sliding) or holds (fixed) an admission, so those are the ones to check.
    fn check_windows(&self) -> Result<(), TestCaseError> {
        let Limit {
            requests: n,
            window_ms: w,
        } = self.counter.limit;
        let w = w as i64;
        for &(t, _) in &self.admitted {
            let (from, to) = match self.counter.algorithm {
                Algorithm::SlidingWindow => (t - w, t),
                Algorithm::Fixed => (t.div_euclid(w) * w - 1, t.div_euclid(w) * w + w - 1),
                Algorithm::Approximate => unreachable!("no exact promise to check"),
            };
            let used = self.admitted_in(from, to);
            prop_assert!(
                used <= n,
                "{:?}: {used} admitted in ({from}, {to}], more than {n}; admissions {:?}",
                self.counter,
                self.admitted
            );
        }
        Ok(())
    }
}

/// Runs one case against `store`; `advance` moves time on by the arrival's gap (a clock step on
/// the memory store, a real pause on Redis) before each request.
async fn run_case<S: CounterStore>(
    store: &S,
    case: &Case,
    mut advance: impl AsyncFnMut(u64),
) -> Result<(), TestCaseError> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let keys: Vec<String> = (0..case.counters.len())
        .map(|i| format!("rl:{{props-{}-{n}}}:{i}", std::process::id()))
        .collect();
    let mut models: Vec<Model> = case
        .counters
        .iter()
        .map(|c| Model {
            counter: c.clone(),
            admitted: Vec::new(),
        })
        .collect();
    for a in &case.arrivals {
        advance(a.gap_ms).await;
        let chosen: Vec<usize> = (0..models.len())
            .filter(|i| a.counters & (1 << i) != 0)
            .collect();
        let hits: Vec<Hit> = chosen
            .iter()
            .map(|&i| Hit {
                key: keys[i].clone(),
                algorithm: models[i].counter.algorithm,
                limit: models[i].counter.limit,
                cost: a.cost,
            })
            .collect();
        let o = store
            .check(&hits)
            .await
            .map_err(|e| TestCaseError::fail(format!("store failed: {e}")))?;
        let now = o.now_ms;
        prop_assert_eq!(o.checks.len(), hits.len());
        prop_assert_eq!(o.admitted, o.checks.iter().all(|c| c.admitted));
        if chosen.iter().all(|&i| models[i].must_admit(now, a.cost)) {
            prop_assert!(
                o.admitted,
                "denied at {now} although the promise admits {a:?}"
            );
        }
        if chosen
            .iter()
            .any(|&i| a.cost > models[i].counter.limit.requests)
        {
            prop_assert!(!o.admitted, "admitted a cost above the limit: {a:?}");
        }
        if o.admitted {
            for &i in &chosen {
                models[i].admitted.push((now, a.cost));
            }
        }
        for &i in &chosen {
            models[i].check_windows()?;
        }
    }
    Ok(())
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        // Cases are cheap to regenerate; a failure prints its minimal input.
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn memory_store_admits_at_most_n_in_every_window() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Windows from one millisecond (one-millisecond sub-buckets) to a minute; 200 cases of up to
    // 150 requests each take well under a second.
    let windows = prop_oneof![1..=120u64, 60..=6_000u64, Just(60_000u64)];
    let result = runner(200).run(&(case(windows, 150), 0..120_000i64), |(case, start)| {
        // A clock that only moves when the case says so, from a random start so windows and
        // buckets fall anywhere on it.
        let clock = Arc::new(AtomicI64::new(1_700_000_000_000 + start));
        let c = clock.clone();
        let store = MemoryStore::with_clock(Arc::new(move || c.load(Ordering::SeqCst)));
        rt.block_on(run_case(&store, &case, async |gap| {
            clock.fetch_add(gap as i64, Ordering::SeqCst);
        }))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn redis_store_on_a_stepped_clock_admits_at_most_n_in_every_window() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = rt.block_on(RedisServer::start(dir.path()));
    // The script decides at the instant the store passes (`check@<ms>`) and then sets no expiry
    // (that runs on Redis's clock; the test below covers it), so cases step time exactly as on
    // the memory store, with the same windows, at Redis's speed.
    let windows = prop_oneof![1..=120u64, 60..=6_000u64, Just(60_000u64)];
    let result = runner(150).run(&(case(windows, 100), 0..120_000i64), |(case, start)| {
        let clock = Arc::new(AtomicI64::new(1_700_000_000_000 + start));
        let c = clock.clone();
        // The connection manager starts its task on the runtime.
        let store = rt.block_on(async {
            RedisStore::from_url(&redis.url())
                .expect("redis url")
                .with_clock(Arc::new(move || c.load(Ordering::SeqCst)))
        });
        rt.block_on(run_case(&store, &case, async |gap| {
            clock.fetch_add(gap as i64, Ordering::SeqCst);
        }))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn redis_store_admits_at_most_n_in_every_window() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = rt.block_on(RedisServer::start(dir.path()));
    let store = rt.block_on(async { RedisStore::from_url(&redis.url()).expect("redis url") });
    // Redis decides on its own clock (`TIME`), so time moves by real pauses: short windows (2 to
    // 6 ms sub-buckets) keep 12 cases of up to 25 requests within a few seconds.
    let windows = 120..=400u64;
    let result = runner(12).run(&case(windows, 25), |case| {
        rt.block_on(run_case(&store, &case, async |gap| {
            // The pause *is* the arrival process under test, not a wait for a condition.
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The Redis store answers exactly as the memory store (which is `limiter.rs`) on the same
/// stepped clock: every verdict, `used`, `reset` and `retry after`, for every algorithm, one or
/// two counters per request, bursts, bucket steps and pauses longer than the window. The script
/// has an inline path for the usual sliding-window admission and a general one for the rest;
/// both must be the limiter.
#[test]
fn redis_store_answers_as_the_memory_store_on_a_stepped_clock() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = rt.block_on(RedisServer::start(dir.path()));
    let counters = prop::collection::vec(
        (
            prop_oneof![
                4 => Just(Algorithm::SlidingWindow),
                1 => Just(Algorithm::Fixed),
                1 => Just(Algorithm::Approximate)
            ],
            1..=8u64,
            prop_oneof![1..=120u64, 60..=6_000u64, Just(60_000u64)],
        ),
        1..=2,
    );
    let cases = counters.prop_flat_map(|counters| {
        let w = counters.iter().map(|c| c.2).min().unwrap_or(1);
        let subsets = (1u8 << counters.len()) - 1;
        let arrival = (
            gap(w),
            1..=subsets,
            prop_oneof![6 => Just(1u64), 2 => 2..=3u64, 1 => 9..=10u64],
        );
        (
            Just(counters),
            prop::collection::vec(arrival, 1..=120),
            0..120_000i64,
        )
    });
    let result = runner(150).run(&cases, |(counters, arrivals, start)| {
        let clock = Arc::new(AtomicI64::new(1_700_000_000_000 + start));
        let (c, m) = (clock.clone(), clock.clone());
        let memory = MemoryStore::with_clock(Arc::new(move || m.load(Ordering::SeqCst)));
        let store = rt.block_on(async {
            RedisStore::from_url(&redis.url())
                .expect("redis url")
                .with_clock(Arc::new(move || c.load(Ordering::SeqCst)))
        });
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        rt.block_on(async {
            for (step, (gap_ms, chosen, cost)) in arrivals.iter().enumerate() {
                clock.fetch_add(*gap_ms as i64, Ordering::SeqCst);
                let hits: Vec<Hit> = counters
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| chosen & (1 << i) != 0)
                    .map(|(i, &(algorithm, requests, window_ms))| Hit {
                        key: format!("rl:{{same-{}-{n}}}:{i}", std::process::id()),
                        algorithm,
                        limit: Limit {
                            requests,
                            window_ms,
                        },
                        cost: *cost,
                    })
                    .collect();
                let want = memory.check(&hits).await.expect("the memory store");
                let got = store
                    .check(&hits)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("store failed: {e}")))?;
                prop_assert_eq!(got.admitted, want.admitted, "request {}", step);
                prop_assert_eq!(&got.checks, &want.checks, "request {}", step);
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
