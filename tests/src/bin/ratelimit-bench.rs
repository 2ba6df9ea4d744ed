//! ratelimit-bench: ShouldRateLimit over real gRPC (loopback HTTP/2), closed loop, for the
//! in-memory store and a real Redis with 1, 3 and 10 limits per request, next to a baseline that
//! names no limit (the same gRPC round trip without any counting). Then Redis memory per active
//! counter. Then Redis's own CPU per decision (from `/proc`): the sliding-window script against
//! the fixed-window script, a script floor (what any script that reads and writes a counter per
//! decision costs, deciding nothing), the same for counters sharing one key (one read and one
//! write per call), a script call that reads and writes nothing, and the simplest fixed-window
//! decision, `INCR` + `EXPIRE`;
//! and, as a noise-free second figure (`--sections callgrind`), the same rows counted in
//! instructions, on a redis-server run by valgrind's callgrind.
//! The service runs in this process on release code; Redis is a real `redis-server`.
//!
//! `scripts/bench ratelimit` runs it; `--help` lists the knobs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use clap::Parser;
use proto::ratelimit::{Algorithm, Per, Rate, RateLimitPolicy, Rule, DOMAIN};
use ratelimit_service::cache::OverLimitCache;
use ratelimit_service::grpc::rls_server;
use ratelimit_service::metrics::Metrics;
use ratelimit_service::policy::Policy;
use ratelimit_service::service::RateLimiter;
use ratelimit_service::store::{CounterStore, MemoryStore, RedisStore};
use tests::ratelimit::{descriptor, is_ok, request};
use tests::redis::{raw_command, RedisServer};

#[derive(Debug, Parser)]
#[command(
    name = "ratelimit-bench",
    about = "Benchmarks ratelimit-service over gRPC"
)]
struct Args {
    /// Seconds per scenario (after a one-second warm-up).
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 3)]
    seconds: u64,
    /// Requests in flight at once.
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Distinct clients the requests are spread over.
    #[arg(long, env = "BENCH_KEYS", default_value_t = 1000)]
    keys: usize,
    /// Counters (clients) of the Redis CPU rows: as many as gateway-bench's JWT subjects, so
    /// each counter is busy, as a plan limit's is.
    #[arg(long, env = "BENCH_CPU_CLIENTS", default_value_t = 16)]
    cpu_clients: usize,
    /// Counters created for the memory-per-key figure.
    #[arg(long, env = "BENCH_MEMORY_KEYS", default_value_t = 10_000)]
    memory_keys: usize,
    /// Which parts to run: `grpc` (the service over gRPC), `cpu` (Redis CPU per decision),
    /// `memory` (Redis bytes per counter), `callgrind` (Redis instructions per decision, under
    /// valgrind; not run unless named), comma-separated.
    #[arg(
        long,
        env = "BENCH_SECTIONS",
        default_value = "grpc,cpu,memory",
        value_delimiter = ','
    )]
    sections: Vec<String>,
}

/// A policy with `limits` rules (`bench#0..`), all per client header, all high enough that every
/// request is admitted: the admitted path is the expensive one (it writes).
fn policy(limits: usize) -> Policy {
    policy_of(limits, Algorithm::SlidingWindow, 1_000)
}

/// `limits` rules per client header on `algorithm`, rule `n`'s window `(n + 1) × window_ms`.
fn policy_of(limits: usize, algorithm: Algorithm, window_ms: u64) -> Policy {
    let pb = RateLimitPolicy {
        domain: DOMAIN.into(),
        algorithm: algorithm as i32,
        fail_open: true,
        timeout_ms: 1_000,
        plans: vec![],
        default_plan: String::new(),
        rules: (0..limits)
            .map(|i| Rule {
                id: format!("bench#{i}"),
                per: Per::Header as i32,
                // Different windows, so each rule is its own counter with its own bucket layout.
                rate: Some(Rate {
                    requests: 1_000_000_000,
                    window_ms: window_ms * (i as u64 + 1),
                }),
                header: "x-client".into(),
            })
            .collect(),
    };
    Policy::compile(&pb).expect("bench policy is valid")
}

struct Figures {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn serve<S: CounterStore>(store: S, limits: usize) -> (String, tokio::task::JoinHandle<()>) {
    let limiter = Arc::new(RateLimiter::new(
        store,
        Arc::new(ArcSwapOption::from_pointee(policy(limits.max(1)))),
        Arc::new(OverLimitCache::default()),
        Arc::new(Metrics::new()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(rls_server(limiter))
            .serve_with_incoming(incoming)
            .await;
    });
    (format!("http://{addr}"), task)
}

/// Closed loop: `concurrency` workers, each sending its next request when the last returns.
async fn drive(url: &str, limits: usize, args: &Args) -> Figures {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect");
    let run = |dur: Duration| {
        let mut tasks = Vec::new();
        for w in 0..args.concurrency {
            let mut client =
                proto::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient::new(
                    channel.clone(),
                );
            let keys = args.keys;
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                let mut lat = Vec::new();
                let mut i = w;
                while start.elapsed() < dur {
                    let client_id = format!("client-{}", i % keys);
                    i += 7;
                    let descs = if limits == 0 {
                        vec![descriptor(&[("generic_key", "nothing")])]
                    } else {
                        (0..limits)
                            .map(|r| {
                                descriptor(&[
                                    ("rule", &format!("bench#{r}")),
                                    ("header", &client_id),
                                ])
                            })
                            .collect()
                    };
                    let t = Instant::now();
                    let r = client
                        .should_rate_limit(request(descs))
                        .await
                        .expect("ShouldRateLimit");
                    lat.push(t.elapsed());
                    assert!(is_ok(r.get_ref()), "bench limits are never reached");
                }
                lat
            }));
        }
        async move {
            let start = Instant::now();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.expect("worker"));
            }
            (all, start.elapsed())
        }
    };
    run(Duration::from_secs(1)).await;
    let (mut lat, took) = run(Duration::from_secs(args.seconds)).await;
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    Figures {
        rps: lat.len() as f64 / took.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn used_memory(port: u16) -> u64 {
    let info = raw_command(port, "INFO memory").expect("INFO memory");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).await;
    let run = |section: &str| args.sections.iter().any(|s| s == section);
    if run("grpc") {
        grpc_rows(&redis, &args).await;
    }
    if run("cpu") {
        redis_cpu(&redis, &args).await;
    }
    if run("memory") {
        redis_memory(&redis, &args).await;
    }
    if run("callgrind") {
        redis_instructions(&args).await;
    }
}

/// ShouldRateLimit over gRPC: memory and Redis with 1 to 10 limits, against the round trip alone.
async fn grpc_rows(redis: &RedisServer, args: &Args) {
    println!(
        "ratelimit-service: ShouldRateLimit over gRPC, {} in flight, {} clients, {} s per row",
        args.concurrency, args.keys, args.seconds
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>12}",
        "scenario", "req/s", "p50 µs", "p99 µs", "vs baseline"
    );
    let mut baseline = None;
    let scenarios: [(&str, bool, usize); 6] = [
        ("baseline (no limit named)", false, 0),
        ("memory, 1 limit", false, 1),
        ("memory, 10 limits", false, 10),
        ("redis, 1 limit", true, 1),
        ("redis, 3 limits", true, 3),
        ("redis, 10 limits", true, 10),
    ];
    for (name, use_redis, limits) in scenarios {
        let (url, task) = if use_redis {
            serve(RedisStore::from_url(&redis.url()).expect("url"), limits).await
        } else {
            serve(MemoryStore::default(), limits).await
        };
        let f = drive(&url, limits, args).await;
        task.abort();
        let base = *baseline.get_or_insert(f.rps);
        println!(
            "{name:<34} {:>10.0} {:>10.0} {:>10.0} {:>11.2}×",
            f.rps,
            f.p50_us,
            f.p99_us,
            f.rps / base
        );
    }
}

/// Redis memory per counter, fresh and busy.
async fn redis_memory(redis: &RedisServer, args: &Args) {
    // Memory: fresh counters, one sliding-window limit each, written through the real script.
    let before = used_memory(redis.port());
    raw_command(redis.port(), "FLUSHALL").expect("FLUSHALL");
    let before = before.min(used_memory(redis.port()));
    let store = RedisStore::from_url(&redis.url()).expect("url");
    let p = policy(1);
    for i in 0..args.memory_keys {
        let plan = p.plan(&request(vec![descriptor(&[
            ("rule", "bench#0"),
            ("header", &format!("memory-client-{i}")),
        ])]));
        store.check(&plan.hits).await.expect("check");
    }
    let after = used_memory(redis.port());
    println!(
        "redis memory: {} fresh counters (one sub-bucket written each): {:.0} B per key",
        args.memory_keys,
        after.saturating_sub(before) as f64 / args.memory_keys as f64
    );
    // Busy counters: 100 keys hit round-robin for 1.5 windows, so every sub-bucket of the
    // window holds a count (the most a sliding-window counter ever stores).
    raw_command(redis.port(), "FLUSHALL").expect("FLUSHALL");
    let before = used_memory(redis.port());
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < Duration::from_millis(1_500) {
        let plan = p.plan(&request(vec![descriptor(&[
            ("rule", "bench#0"),
            ("header", &format!("busy-client-{}", i % 100)),
        ])]));
        store.check(&plan.hits).await.expect("check");
        i += 1;
    }
    let sum = |what: &str| -> u64 {
        let script = format!(
            "EVAL \"local n=0 for _,k in ipairs(redis.call('KEYS','*')) do n=n+redis.call({what}) end return n\" 0"
        );
        raw_command(redis.port(), &script)
            .unwrap_or_default()
            .trim_start_matches(':')
            .trim()
            .parse()
            .unwrap_or(0)
    };
    // A counter is a 56-byte header, 8 bytes per earlier sub-bucket held and a 4-byte end mark
    // (store/limit.lua), the last sub-bucket's count in the header.
    let fields = sum("'STRLEN',k").saturating_sub(60 * 100) / 8 + 100;
    let usage = sum("'MEMORY','USAGE',k,'SAMPLES','0'");
    let after = used_memory(redis.port());
    println!(
        "redis memory: 100 busy counters ({:.0} sub-buckets each on average): {:.0} B per key by MEMORY USAGE, {:.0} B by used_memory",
        fields as f64 / 100.0,
        usage as f64 / 100.0,
        after.saturating_sub(before) as f64 / 100.0
    );
}

/// What one row of the Redis CPU and instruction figures runs.
#[derive(Clone, Copy)]
enum Decider {
    /// The store's script on this algorithm.
    Store(Algorithm),
    /// The least any script that reads and writes a counter per decision does ([`FLOOR`]).
    Floor,
    /// The least a script does whose counters share one key ([`SHARED_FLOOR`]).
    SharedFloor,
    /// A script that only takes the requests and answers them ([`CALL_ALONE`]).
    CallAlone,
    /// A fixed window the simplest way: `INCR` + `EXPIRE`, pipelined, no script.
    IncrExpire,
}

/// The rows of the Redis CPU and instruction figures.
const REDIS_ROWS: [(&str, Decider); 6] = [
    (
        "sliding window (limit.lua)",
        Decider::Store(Algorithm::SlidingWindow),
    ),
    ("fixed window (limit.lua)", Decider::Store(Algorithm::Fixed)),
    ("script floor (no decision)", Decider::Floor),
    ("shared-key floor", Decider::SharedFloor),
    ("script call alone", Decider::CallAlone),
    ("INCR + EXPIRE (no script)", Decider::IncrExpire),
];

/// A script that decides nothing but does what any script deciding a counter per request must:
/// takes the keys and the packed requests as `limit.lua` does, reads each counter's header
/// (GETRANGE), unpacks it, packs it back with one number changed, writes it (SETRANGE) and
/// answers one packed verdict per request.
const FLOOR: &str = r"
local pack, unpack = struct.pack, struct.unpack
local HDR, out, spec, pos = '<ddddddHHI4', {}, ARGV[2], 1
for k = 1, #KEYS do
  local keys, alg, n, w, cost
  keys, alg, n, w, cost, pos = unpack('<Hc1ddd', spec, pos)
  local v = redis.call('GETRANGE', KEYS[k], '0', '55')
  if #v < 56 then v = string.rep('\0', 56) end
  local a, b, c, d, e, f, g, h, i = unpack(HDR, v)
  redis.call('SETRANGE', KEYS[k], '0', pack(HDR, a + cost, b, c, d, e, f, g, h, i))
  out[k] = pack('<bBdddd', 1, 1, a, 1, 0, 5)
end
return {1, table.concat(out)}
";

/// [`FLOOR`] for counters that share one key, a hash of one field per counter: one HMGET of
/// every counter the call decides and one HSET of them all, instead of a read and a write per
/// counter. A lower bound of that design: its values here are headers alone (a sliding
/// window's also hold the bucket array, and a hash field cannot be read in part), it keeps no
/// expiry per counter (Redis 7.0 has no TTL per hash field, so a real design would add one of
/// its own), and every counter of the call is in the one hash, the most sharing there can be.
const SHARED_FLOOR: &str = r"
local pack, sunpack = struct.pack, struct.unpack
local HDR, out, spec, pos = '<ddddddHHI4', {}, ARGV[2], 1
local fields, set = {}, {}
for k = 3, #ARGV do fields[k - 2] = ARGV[k] end
local vals = redis.call('HMGET', KEYS[1], unpack(fields))
for k = 1, #fields do
  local keys, alg, n, w, cost
  keys, alg, n, w, cost, pos = sunpack('<Hc1ddd', spec, pos)
  local v = vals[k]
  if not v or #v < 56 then v = string.rep('\0', 56) end
  local a, b, c, d, e, f, g, h, i = sunpack(HDR, v)
  set[2 * k - 1] = fields[k]
  set[2 * k] = pack(HDR, a + cost, b, c, d, e, f, g, h, i)
  out[k] = pack('<bBdddd', 1, 1, a, 1, 0, 5)
end
redis.call('HSET', KEYS[1], unpack(set))
return {1, table.concat(out)}
";

/// What a script costs before it reads or writes anything: the keys and packed requests of
/// [`FLOOR`], each request unpacked and answered with a packed verdict, no Redis command.
const CALL_ALONE: &str = r"
local pack, unpack = struct.pack, struct.unpack
local out, spec, pos = {}, ARGV[2], 1
for k = 1, #KEYS do
  local keys, alg, n, w, cost
  keys, alg, n, w, cost, pos = unpack('<Hc1ddd', spec, pos)
  out[k] = pack('<bBdddd', 1, 1, 0, 1, 0, 5)
end
return {1, table.concat(out)}
";

/// Requests per call of the [`FLOOR`] script: about what the store's batches carry here.
const FLOOR_BATCH: usize = 14;

/// One row's figure per decision, the decisions it made, and how many one Redis call made.
type Row = (&'static str, f64, u64, String);

/// The rows of `REDIS_ROWS` on `redis`, each after a FLUSHALL and a second of traffic (so a
/// sliding window's counters hold sub-buckets): `meter(None)` is called as the measured run
/// starts and `meter(Some(decisions))` as it ends, which answers the row's figure per decision.
async fn redis_rows(
    redis: &RedisServer,
    args: &Args,
    mut meter: impl FnMut(Option<u64>) -> f64,
) -> Vec<Row> {
    let run = Duration::from_secs(args.seconds);
    let clients = args.cpu_clients.max(1);
    let mut rows = Vec::new();
    for (name, decider) in REDIS_ROWS {
        raw_command(redis.port(), "FLUSHALL").expect("FLUSHALL");
        decide(redis, decider, clients, Duration::from_secs(1)).await;
        meter(None);
        let (decisions, calls) = decide(redis, decider, clients, run).await;
        let figure = meter(Some(decisions));
        let per_call = calls.map_or_else(
            || "one pipeline each".to_string(),
            |c| format!("{:.1} per script call", decisions as f64 / c.max(1) as f64),
        );
        rows.push((name, figure, decisions, per_call));
    }
    rows
}

/// Redis's CPU per decision for one limit of a minute (a plan's), `--cpu-clients` counters, 16
/// in flight, `--seconds` each: the rows of `REDIS_ROWS`.
async fn redis_cpu(redis: &RedisServer, args: &Args) {
    let Some(pid) = tests::cpu::redis_pid(redis.port()) else {
        println!("redis CPU per decision: redis-server's pid is unknown; not measured");
        return;
    };
    let mut before = Duration::ZERO;
    let rows = redis_rows(redis, args, |decisions| {
        let now = tests::cpu::cpu_time(pid).expect("redis CPU time");
        match decisions {
            None => {
                before = now;
                0.0
            }
            Some(n) => (now - before).as_secs_f64() * 1e6 / n as f64,
        }
    })
    .await;
    let clients = args.cpu_clients.max(1);
    println!(
        "redis CPU per decision (one limit per minute, {clients} counters, 16 in flight, {} s each):",
        args.seconds
    );
    for (name, us, n, per_call) in &rows {
        println!("  {name:<28} {us:>6.1} µs  ({n} decisions, {per_call})");
    }
    println!("  {} (target: sliding window ≤ 1.5×)", ratios(&rows));
}

/// The rows of `redis_cpu` in redis-server's instructions per decision, counted by valgrind's
/// callgrind (user space only): unlike CPU time, the figure does not move with the machine's load.
async fn redis_instructions(args: &Args) {
    if std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("redis instructions per decision: needs valgrind (Debian package `valgrind`)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("callgrind");
    std::fs::create_dir_all(&out).expect("callgrind output directory");
    let wrapper = [
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}/callgrind.%p.out", out.display()),
    ];
    let redis = RedisServer::start_under(dir.path(), &wrapper).await;
    let pid = tests::cpu::redis_pid(redis.port()).expect("redis-server's pid");
    let rows = redis_rows(&redis, args, |decisions| match decisions {
        None => {
            tests::callgrind::control("-z", pid).expect("zero the counters");
            0.0
        }
        Some(n) => {
            tests::callgrind::control("-d", pid).expect("dump the counters");
            let dump = tests::callgrind::last_dump(&out, pid).expect("a dump");
            tests::callgrind::totals(&dump).expect("its total") as f64 / n as f64
        }
    })
    .await;
    let clients = args.cpu_clients.max(1);
    println!(
        "redis instructions per decision under callgrind (one limit per minute, {clients} \
         counters, 16 in flight, {} s each):",
        args.seconds
    );
    for (name, ir, n, per_call) in &rows {
        println!("  {name:<28} {ir:>8.0}  ({n} decisions, {per_call})");
    }
    println!("  {}", ratios(&rows));
}

/// Every script row's figure over the last row's (INCR + EXPIRE).
fn ratios(rows: &[Row]) -> String {
    let Some((_, simplest, _, _)) = rows.last() else {
        return String::new();
    };
    let each: Vec<String> = rows[..rows.len() - 1]
        .iter()
        .map(|(name, figure, _, _)| format!("{name} {:.2}×", figure / simplest))
        .collect();
    format!("over INCR + EXPIRE: {}", each.join(", "))
}

/// Decisions made in `run` by `decider`, rotating over `clients` counters, and its script calls:
/// 16 tasks through the store or each sending `INCR` + `EXPIRE`; the floor scripts as the store's
/// batches go, one call of [`FLOOR_BATCH`] requests after another.
async fn decide(
    redis: &RedisServer,
    decider: Decider,
    clients: usize,
    run: Duration,
) -> (u64, Option<u64>) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut store_of_run = None;
    match decider {
        Decider::Floor | Decider::SharedFloor | Decider::CallAlone => {
            let mut conn = redis::Client::open(redis.url())
                .expect("url")
                .get_multiplexed_async_connection()
                .await
                .expect("connect to Redis");
            let shared = matches!(decider, Decider::SharedFloor);
            let script = redis::Script::new(match decider {
                Decider::SharedFloor => SHARED_FLOOR,
                Decider::CallAlone => CALL_ALONE,
                _ => FLOOR,
            });
            let mut request = vec![1, 0, b's'];
            for v in [1e9f64, 60_000.0, 1.0] {
                request.extend_from_slice(&v.to_le_bytes());
            }
            let spec = request.repeat(FLOOR_BATCH);
            let (mut decisions, mut calls) = (0u64, 0u64);
            while start.elapsed() < run {
                let mut inv = script.prepare_invoke();
                if shared {
                    inv.key("rl:{c:floor}:plan").arg("check").arg(&spec);
                    for j in 0..FLOOR_BATCH {
                        inv.arg(format!("c:floor-{}", (decisions as usize + j) % clients));
                    }
                } else {
                    for j in 0..FLOOR_BATCH {
                        inv.key(format!(
                            "rl:{{c:floor-{}}}:plan",
                            (decisions as usize + j) % clients
                        ));
                    }
                    inv.arg("check").arg(&spec);
                }
                let _: (i64, Vec<u8>) = inv.invoke_async(&mut conn).await.expect("floor script");
                decisions += FLOOR_BATCH as u64;
                calls += 1;
            }
            return (decisions, Some(calls));
        }
        Decider::Store(algorithm) => {
            let store = Arc::new(RedisStore::from_url(&redis.url()).expect("url"));
            store_of_run = Some(store.clone());
            let p = Arc::new(policy_of(1, algorithm, 60_000));
            for w in 0..16 {
                let (store, p) = (store.clone(), p.clone());
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while start.elapsed() < run {
                        let client = format!("cpu-client-{}", (w + n as usize) % clients);
                        let plan = p.plan(&request(vec![descriptor(&[
                            ("rule", "bench#0"),
                            ("header", &client),
                        ])]));
                        store.check(&plan.hits).await.expect("check");
                        n += 1;
                    }
                    n
                }));
            }
        }
        Decider::IncrExpire => {
            let conn = redis::Client::open(redis.url())
                .expect("url")
                .get_multiplexed_async_connection()
                .await
                .expect("connect to Redis");
            for w in 0..16 {
                let mut conn = conn.clone();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while start.elapsed() < run {
                        let minute = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() / 60);
                        let key = format!("fw:cpu-client-{}:{minute}", (w + n as usize) % clients);
                        let (_count, _set): (i64, i64) = redis::pipe()
                            .cmd("INCR")
                            .arg(&key)
                            .cmd("EXPIRE")
                            .arg(&key)
                            .arg(60)
                            .query_async(&mut conn)
                            .await
                            .expect("INCR + EXPIRE");
                        n += 1;
                    }
                    n
                }));
            }
        }
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("worker");
    }
    let calls = store_of_run.map(|s| {
        s.batch_stats()
            .calls
            .load(std::sync::atomic::Ordering::Relaxed)
    });
    (total, calls)
}
