//! gateway-bench: what the gateway adds to a request. One Envoy forwards to one echo upstream
//! on three routes: `/plain` (no policy: the baseline), `/jwt` (ext_authz with an HS256 token)
//! and `/full` (the token plus a plan rate limit), the last with ratelimit-service on its
//! in-memory store and then, on the same port, on a real Redis. Every scenario gets a
//! closed-loop saturation run (throughput, as a ratio to the baseline); then every scenario gets
//! an open-loop run at one fixed moderate rate, half the slowest scenario's saturating rate
//! (p50/p90/p99/max, and what the gateway adds to the baseline's p50/p99 at that rate). The
//! baseline runs first and last in both phases, so the report shows how far the machine drifted.
//!
//! Compression rows: a JSON answer of `--body-bytes` (16 KiB of catalogue-like records) on the
//! plain route asked with `Accept-Encoding: identity`, and asked for gzip or zstd, which the
//! gateway's `compression` (on for every row; the other rows' answers are under its `min_bytes`)
//! then applies, every answer checked for its `content-encoding`. WebSocket rows: `--ws-sockets`
//! open sockets to a WebSocket echo-upstream, each with one message in flight, reached directly,
//! through a `websocket: true` route without policy and through one with the JWT on the upgrade.
//!
//! `scripts/bench gateway` builds release binaries and runs it; `--help` lists the knobs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tests::authz::{api_key, bearer, token, AuthzService, ISSUER, SECRET_ENV};
use tests::ratelimit::RateLimitService;
use tests::redis::{raw_command, RedisServer};
use tests::{free_port, wait_for, workspace_bin, HttpClient, Proc, Stack, XdsMode};

/// The target from the issue: at a moderate rate the full gateway adds less than this to p99.
const TARGET_ADDED_P99: Duration = Duration::from_millis(1);
/// The latency budget the target is a fraction of.
const BUDGET: Duration = Duration::from_millis(10);
/// Far above any healthy answer; a request that takes longer is counted as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Closed-loop traffic before each saturation run, so connections, pools and caches are warm.
const WARM_UP: Duration = Duration::from_secs(1);
/// The plan every token is on: so high that no request is ever limited (the grammar takes any
/// count ≥ 1; a 429 would be a cheaper answer than the admitted path we mean to measure).
const PLAN_RATE: &str = "100000000/minute";
/// CPU per request below which a process counts as idle and is left out of the report.
const IDLE_CPU_PER_REQUEST: Duration = Duration::from_micros(5);
/// How many errors are kept verbatim for the report.
const ERRORS_SHOWN: usize = 5;

#[derive(Debug, Parser)]
#[command(
    name = "gateway-bench",
    about = "Benchmarks plain Envoy against the full gateway (JWT + plan rate limit, memory and Redis)"
)]
struct Args {
    /// Seconds of closed-loop saturation per scenario (after a one-second warm-up).
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 5)]
    seconds: u64,
    /// Keep-alive HTTP/1.1 connections in the saturation runs, each with one request in flight.
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Fixed request rate (req/s) for the latency runs; default: half the saturating rate of the
    /// slowest scenario (the full gateway) measured in this run, so that every scenario runs at
    /// the same rate and none of them is past its saturation.
    #[arg(long, env = "BENCH_RATE")]
    rate: Option<f64>,
    /// Seconds of each fixed-rate run.
    #[arg(long, env = "BENCH_RATE_SECONDS", default_value_t = 10)]
    rate_seconds: u64,
    /// Connections the fixed-rate schedule is spread over (each takes every n-th slot); enough
    /// that one slow answer rarely delays the next slot of its connection.
    #[arg(long, env = "BENCH_CONNECTIONS", default_value_t = 64)]
    connections: usize,
    /// Distinct JWT subjects (each its own rate-limit counter); requests rotate over them.
    #[arg(long, env = "BENCH_CLIENTS", default_value_t = 16)]
    clients: usize,
    /// Also configure an API-key provider that accepts keys in the query, which puts the Lua
    /// filter that removes them in front of every route (baseline included), and send a query
    /// without a key on every request: compare Envoy's CPU per request with a run without it.
    #[arg(long, env = "BENCH_QUERY_KEYS")]
    query_keys: bool,
    /// Size of the JSON answer of the compression rows (`x-echo-pad-bytes`).
    #[arg(long, env = "BENCH_BODY_BYTES", default_value_t = 16 * 1024)]
    body_bytes: usize,
    /// Open WebSockets in the WebSocket runs, each with one message in flight.
    #[arg(long, env = "BENCH_WS_SOCKETS", default_value_t = 16)]
    ws_sockets: usize,
    /// Bytes of each WebSocket text message.
    #[arg(long, env = "BENCH_WS_BYTES", default_value_t = 256)]
    ws_bytes: usize,
    /// Seconds of each WebSocket run (after a one-second warm-up).
    #[arg(long, env = "BENCH_WS_SECONDS", default_value_t = 3)]
    ws_seconds: u64,
}

/// One row of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Baseline,
    Jwt,
    FullMemory,
    FullRedis,
    /// `--body-bytes` of JSON on the plain route, as the upstream sent it.
    Json,
    /// The same answer compressed by the gateway's `compression`, gzip.
    Gzip,
    /// The same, zstd.
    Zstd,
    BaselineAgain,
}

impl Scenario {
    /// The order of the report's rows.
    const REPORT_ORDER: [Scenario; 8] = [
        Scenario::Baseline,
        Scenario::Jwt,
        Scenario::FullMemory,
        Scenario::FullRedis,
        Scenario::Json,
        Scenario::Gzip,
        Scenario::Zstd,
        Scenario::BaselineAgain,
    ];
    /// Saturation runs: the baseline first and last, to show how far the machine drifted.
    const SATURATION_ORDER: [Scenario; 8] = Scenario::REPORT_ORDER;
    /// Fixed-rate runs: baseline first and last again; Redis next to it, since it is the store
    /// the saturation runs left running (one store switch fewer).
    const PACED_ORDER: [Scenario; 8] = [
        Scenario::Baseline,
        Scenario::FullRedis,
        Scenario::FullMemory,
        Scenario::Jwt,
        Scenario::Json,
        Scenario::Gzip,
        Scenario::Zstd,
        Scenario::BaselineAgain,
    ];

    /// The rate-limit store the scenario needs; `None` when it makes no rate-limit call.
    fn store(self) -> Option<Store> {
        match self {
            Scenario::FullMemory => Some(Store::Memory),
            Scenario::FullRedis => Some(Store::Redis),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline: Envoy → echo",
            Scenario::Jwt => "JWT (ext_authz)",
            Scenario::FullMemory => "JWT + plan limit, memory",
            Scenario::FullRedis => "JWT + plan limit, Redis",
            Scenario::Json => "JSON answer, uncompressed",
            Scenario::Gzip => "JSON answer, gzip",
            Scenario::Zstd => "JSON answer, zstd",
            Scenario::BaselineAgain => "baseline again (drift)",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Scenario::Baseline
            | Scenario::BaselineAgain
            | Scenario::Json
            | Scenario::Gzip
            | Scenario::Zstd => "/plain",
            Scenario::Jwt => "/jwt",
            Scenario::FullMemory | Scenario::FullRedis => "/full",
        }
    }

    fn authenticated(self) -> bool {
        matches!(
            self,
            Scenario::Jwt | Scenario::FullMemory | Scenario::FullRedis
        )
    }

    /// The `Accept-Encoding` sent and the `Content-Encoding` every answer must have; `None`
    /// for the rows without a large body.
    fn encoding(self) -> Option<(&'static str, Option<&'static str>)> {
        match self {
            Scenario::Json => Some(("identity", None)),
            Scenario::Gzip => Some(("gzip", Some("gzip"))),
            Scenario::Zstd => Some(("zstd", Some("zstd"))),
            _ => None,
        }
    }

    /// Served by the gateway with `compression`.
    fn compressing(self) -> bool {
        matches!(self, Scenario::Gzip | Scenario::Zstd)
    }

    /// The full gateway: the rows the target applies to.
    fn full(self) -> bool {
        matches!(self, Scenario::FullMemory | Scenario::FullRedis)
    }
}

/// What every request of a scenario carries: the Envoy listener, path and credentials.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    path: &'static str,
    /// Appended to `path` (`--query-keys`).
    query: &'static str,
    /// `Bearer <token>` per client; empty for the baseline.
    auth: Vec<HeaderValue>,
    /// `x-echo-pad-bytes`, `Accept-Encoding` and the `Content-Encoding` every answer must have.
    body: Option<(HeaderValue, &'static str, Option<&'static str>)>,
}

/// Answers other than 200, and transport failures.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    /// Body bytes of the 200 answers, as received (compressed where they were).
    body_bytes: u64,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    first_errors: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.body_bytes += other.body_bytes;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.errors += other.errors;
        for e in other.first_errors {
            if self.first_errors.len() < ERRORS_SHOWN {
                self.first_errors.push(e);
            }
        }
    }

    fn bad(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.errors
    }

    fn record(&mut self, answer: Result<(u16, usize), String>) {
        match answer {
            Ok((200, bytes)) => {
                self.ok += 1;
                self.body_bytes += bytes as u64;
            }
            Ok((s, _)) => *self.statuses.entry(s).or_default() += 1,
            Err(e) => {
                self.errors += 1;
                if self.first_errors.len() < ERRORS_SHOWN {
                    self.first_errors.push(e);
                }
            }
        }
    }

    fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{n} × {s}"))
            .collect();
        if self.errors > 0 {
            parts.push(format!(
                "{} transport errors (first: {:?})",
                self.errors, self.first_errors
            ));
        }
        parts.join(", ")
    }
}

/// Nearest-rank percentiles of a set of latencies.
#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Percentiles {
    fn of(mut v: Vec<Duration>) -> Percentiles {
        v.sort_unstable();
        let rank = |p: f64| {
            if v.is_empty() {
                return Duration::ZERO;
            }
            v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
        };
        Percentiles {
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: v.last().copied().unwrap_or_default(),
        }
    }
}

/// A closed-loop run.
struct Saturation {
    rps: f64,
    latency: Percentiles,
    tally: Tally,
    /// CPU time per request of each process, by name.
    cpu_per_request: Vec<(&'static str, Duration)>,
}

/// An open-loop run at a fixed rate.
struct Paced {
    rate: f64,
    /// Requests completed per second of the run (below `rate` when the scenario fell behind).
    achieved: f64,
    latency: Percentiles,
    /// How late the load generator itself sent requests whose connection was free (its timer
    /// and its share of the CPU); not counted as latency.
    generator_lag_p99: Duration,
    tally: Tally,
}

/// What has been measured of one scenario so far.
struct Row {
    scenario: Scenario,
    saturation: Option<Saturation>,
    paced: Option<Paced>,
    /// Envoy counters of the ext_authz and rate-limit filters that moved during its runs.
    envoy: BTreeMap<String, u64>,
}

impl Row {
    fn new(scenario: Scenario) -> Row {
        Row {
            scenario,
            saturation: None,
            paced: None,
            envoy: BTreeMap::new(),
        }
    }

    fn add_counters(&mut self, before: &HashMap<String, u64>, after: &HashMap<String, u64>) {
        for (name, v) in after {
            let d = v.saturating_sub(before.get(name).copied().unwrap_or(0));
            if d > 0 {
                *self.envoy.entry(name.clone()).or_default() += d;
            }
        }
    }

    fn finish(self) -> Option<Finished> {
        Some(Finished {
            scenario: self.scenario,
            saturation: self.saturation?,
            paced: self.paced?,
            envoy: self.envoy,
        })
    }
}

/// A scenario with both runs done.
struct Finished {
    scenario: Scenario,
    saturation: Saturation,
    paced: Paced,
    envoy: BTreeMap<String, u64>,
}

/// Where ratelimit-service keeps its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Memory,
    Redis,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.concurrency > 0 && args.connections > 0 && args.clients > 0,
        "--concurrency, --connections and --clients must be at least 1"
    );
    anyhow::ensure!(
        args.seconds > 0 && args.rate_seconds > 0,
        "runs need at least one second"
    );
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
    }
    // The load generator gets one thread: it must not compete with Envoy and the services for
    // more of the two cores than it needs, and a single thread keeps its timing predictable.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run(args))
}

/// The gateway.yaml: one upstream, three routes that differ only in policy, `compression` (only
/// the compression rows ask for it); WebSocket routes to the WebSocket echo.
fn config(ports: &Ports, keys_file: Option<&Path>) -> String {
    let Ports {
        echo,
        ws,
        http,
        authz,
        rls,
    } = *ports;
    let api_keys = keys_file.map_or(String::new(), |f| {
        format!(
            "  api_keys:\n    partners: {{ query: api_key, keys_file: {} }}\n",
            f.display()
        )
    });
    // `on_error: deny` on both services: a failed check must show up as a non-200 answer that
    // fails the run, never as a request that silently skipped its policy and looks cheap.
    // Access logging is off so the runs measure policy, not disk writes (it costs the same on
    // every route, and would write gigabytes over a run).
    format!(
        r#"version: 1
services:
  echo: {{ endpoints: [127.0.0.1:{echo}] }}
  ws: {{ endpoints: [127.0.0.1:{ws}] }}
auth:
  service: {{ address: 127.0.0.1:{authz}, timeout: 1s, on_error: deny }}
  jwt:
    main:
      issuer: {ISSUER}
      algorithms: [HS256]
      secret_env: {SECRET_ENV}
      headers: {{ x-user-id: sub }}
{api_keys}rate_limits:
  service: {{ address: 127.0.0.1:{rls}, timeout: 1s, on_error: deny }}
  plans: {{ bench: {PLAN_RATE} }}
  default_plan: bench
gateways:
  edge:
    listeners: [{{ name: http, port: {http} }}]
    access_log: off
    compression: {{ algorithms: [gzip, zstd] }}
    routes:
      - name: plain
        match: {{ prefix: /plain }}
        service: echo
        auth: none
        rate_limit: none
      - name: jwt
        match: {{ prefix: /jwt }}
        service: echo
        auth: main
        rate_limit: none
      - name: full
        match: {{ prefix: /full }}
        service: echo
        auth: main
        rate_limit: plan
      - {{ name: ws, match: {{ prefix: /ws }}, service: ws, auth: none, rate_limit: none, websocket: true, timeout: 0s }}
      - {{ name: ws-jwt, match: {{ prefix: /jwt-ws }}, service: ws, auth: main, rate_limit: none, websocket: true, timeout: 0s }}
"#
    )
}

/// The ports of one run.
#[derive(Clone, Copy)]
struct Ports {
    echo: u16,
    ws: u16,
    http: u16,
    authz: u16,
    rls: u16,
}

/// Starts an `echo-upstream` process and waits until it accepts connections.
async fn start_echo(name: &str, port: u16, websocket: bool, dir: &Path) -> Proc {
    let mut cmd = Command::new(workspace_bin("echo-upstream"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--name", name]);
    if websocket {
        cmd.arg("--websocket");
    }
    let mut echo = Proc::spawn(name, cmd, dir);
    wait_for(
        "echo-upstream to accept connections",
        Duration::from_secs(10),
        async || {
            echo.assert_running();
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    echo
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("gateway-bench-")
        .tempdir()
        .context("temp dir")?;
    let ports = Ports {
        echo: free_port(),
        ws: free_port(),
        http: free_port(),
        authz: free_port(),
        rls: free_port(),
    };
    let (echo_port, http, authz_port, rls_port) = (ports.echo, ports.http, ports.authz, ports.rls);

    // The upstream is the `echo-upstream` binary in its own process, not an in-process server:
    // sharing this runtime would make the generator's timing depend on the upstream's work and
    // the other way round. It is the same upstream for every scenario.
    let echo = start_echo("echo", echo_port, false, dir.path()).await;
    let ws_echo = start_echo("ws-echo", ports.ws, true, dir.path()).await;

    let keys_file = dir.path().join("api-keys.yaml");
    if args.query_keys {
        // One key, never sent: the provider only has to exist for the filter to be installed.
        api_key(&keys_file, "bench-partner", "bench");
    }
    let mut stack = Stack::start_in(
        dir,
        XdsMode::Sotw,
        &config(&ports, args.query_keys.then_some(keys_file.as_path())),
    )
    .await;
    let xds = stack.xds.grpc_addr();
    let mut authz = AuthzService::start_on("authz-bench", &xds, authz_port, stack.dir()).await;
    let mut rls = RateLimitService::start_on("rls-memory", &xds, None, rls_port, stack.dir()).await;
    let redis = RedisServer::start(stack.dir()).await;
    stack.wait_converged().await;

    let auth: Vec<HeaderValue> = (0..args.clients)
        .map(|i| {
            HeaderValue::from_str(&bearer(&token(&format!("bench-client-{i}"), "bench")))
                .context("token as a header value")
        })
        .collect::<anyhow::Result<_>>()?;
    let pad = HeaderValue::from(args.body_bytes);
    let target = |s: Scenario| Target {
        addr: SocketAddr::from(([127, 0, 0, 1], http)),
        path: s.path(),
        query: if args.query_keys {
            "?page=1&sort=asc"
        } else {
            ""
        },
        auth: if s.authenticated() {
            auth.clone()
        } else {
            Vec::new()
        },
        body: s
            .encoding()
            .map(|(accept, want)| (pad.clone(), accept, want)),
    };
    let client = HttpClient::new(http);

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "gateway-bench: one Envoy (--concurrency 1, one worker) → echo-upstream, {cpus} CPUs shared by \
         Envoy, echo-upstream, authz-service, ratelimit-service, Redis and this load generator (one thread)"
    );
    println!(
        "  saturation: {} keep-alive HTTP/1.1 connections, one request in flight each, {} s per scenario after {} s warm-up",
        args.concurrency,
        args.seconds,
        WARM_UP.as_secs()
    );
    println!(
        "  fixed rate: open loop on a timetable over {} connections, {} s per scenario; latency from the scheduled send \
         time whenever the connection was still busy (no coordinated omission)",
        args.connections, args.rate_seconds
    );
    println!(
        "  JWT: HS256 over {} subjects; plan limit {PLAN_RATE} (never reached); both services `on_error: deny`, so a \
         failed check is a non-200 and fails the run; access log off",
        args.clients
    );
    if args.query_keys {
        println!(
            "  --query-keys: an API-key provider reads `api_key` from the query, so every route \
             (baseline included) passes the Lua filter that removes it; every request carries \
             `?page=1&sort=asc`"
        );
    }
    println!();

    let mut pids = Pids {
        envoy: stack.envoy.proc().pid(),
        echo: echo.pid(),
        authz: authz.proc().pid(),
        rls: rls.proc().pid(),
        redis: redis_pid(redis.port()),
    };
    let mut store = Store::Memory;
    let mut rows: Vec<Row> = Scenario::REPORT_ORDER
        .iter()
        .map(|&s| Row::new(s))
        .collect();

    // Saturation first, for every scenario: the fixed rate is derived from the slowest one.
    for scenario in Scenario::SATURATION_ORDER {
        if let Some(want) = scenario.store().filter(|&w| w != store) {
            switch_store(&mut rls, want, &xds, &redis.url(), rls_port, stack.dir()).await;
            pids.rls = rls.proc().pid();
            store = want;
        }
        check_route(&client, scenario, &auth[0]).await?;
        eprintln!("gateway-bench: {} — saturating", scenario.label());
        let before = envoy_counters(&stack).await;
        let saturation = saturate(&target(scenario), &args, &pids).await?;
        ensure_clean(scenario, "saturation", &saturation.tally)?;
        let row = row_of(&mut rows, scenario);
        row.add_counters(&before, &envoy_counters(&stack).await);
        row.saturation = Some(saturation);
    }
    let slowest = rows
        .iter()
        .filter(|r| r.scenario.full())
        .filter_map(|r| r.saturation.as_ref().map(|s| s.rps))
        .fold(f64::INFINITY, f64::min);
    let rate = args.rate.unwrap_or((slowest / 2.0).max(1.0));

    for scenario in Scenario::PACED_ORDER {
        if let Some(want) = scenario.store().filter(|&w| w != store) {
            switch_store(&mut rls, want, &xds, &redis.url(), rls_port, stack.dir()).await;
            store = want;
        }
        check_route(&client, scenario, &auth[0]).await?;
        eprintln!(
            "gateway-bench: {} — {rate:.0} req/s for {} s",
            scenario.label(),
            args.rate_seconds
        );
        let before = envoy_counters(&stack).await;
        let paced = paced(&target(scenario), rate, &args).await?;
        ensure_clean(scenario, "fixed-rate", &paced.tally)?;
        let row = row_of(&mut rows, scenario);
        row.add_counters(&before, &envoy_counters(&stack).await);
        row.paced = Some(paced);
        if scenario == Scenario::FullRedis {
            // Proof that the Redis rows counted in Redis (counters live for about one window).
            let keys = raw_command(redis.port(), "DBSIZE").context("DBSIZE")?;
            let keys: u64 = keys.trim().trim_start_matches(':').parse().unwrap_or(0);
            anyhow::ensure!(keys > 0, "Redis holds no counters after the Redis run");
        }
    }
    let ws_pids = [
        ("envoy", stack.envoy.proc().pid()),
        ("echo", ws_echo.pid()),
        ("authz", authz.proc().pid()),
        ("loadgen", Some(std::process::id())),
    ];
    let mut ws_rows = Vec::new();
    for ws in WsScenario::ORDER {
        let port = if ws == WsScenario::Direct {
            ports.ws
        } else {
            http
        };
        let url = format!("ws://127.0.0.1:{port}{}", ws.path());
        let bearer = (ws == WsScenario::Jwt).then(|| auth[0].clone());
        eprintln!(
            "gateway-bench: WebSocket {} — {} s",
            ws.label(),
            args.ws_seconds
        );
        ws_rows.push((ws, ws_run(&url, bearer.as_ref(), &args, &ws_pids).await?));
    }
    // Everything stops here, before the report, so a failing run leaves no process behind.
    drop((stack, rls, authz, redis, echo, ws_echo));

    let rows: Vec<Finished> = rows.into_iter().filter_map(Row::finish).collect();
    report(&rows, &args);
    ws_report(&ws_rows, &args);
    Ok(())
}

/// Fails the run on the first non-200 answer or transport error: figures from a run in which
/// some requests were turned away (or skipped their policy) would compare different work.
fn ensure_clean(scenario: Scenario, phase: &str, tally: &Tally) -> anyhow::Result<()> {
    if tally.bad() > 0 {
        bail!(
            "{} ({phase} run): {} of {} answers were not 200: {}",
            scenario.label(),
            tally.bad(),
            tally.bad() + tally.ok,
            tally.describe()
        );
    }
    Ok(())
}

fn row_of(rows: &mut [Row], scenario: Scenario) -> &mut Row {
    rows.iter_mut()
        .find(|r| r.scenario == scenario)
        .expect("every scenario has a row")
}

/// Replaces the running ratelimit-service with one on `store`, on the same port (the one
/// gateway.yaml names), so Envoy, the upstream and authz-service stay exactly as they were.
async fn switch_store(
    rls: &mut RateLimitService,
    store: Store,
    xds: &str,
    redis_url: &str,
    port: u16,
    dir: &std::path::Path,
) {
    eprintln!("gateway-bench: ratelimit-service now on the {store:?} store");
    // Stop the old one first: the new one needs its port.
    rls.proc().kill();
    let (name, redis) = match store {
        Store::Memory => ("rls-memory", None),
        Store::Redis => ("rls-redis", Some(redis_url)),
    };
    *rls = RateLimitService::start_on(name, xds, redis, port, dir).await;
}

/// One request through the scenario's route, checked for what proves its policy ran: identity
/// headers reach the upstream only after ext_authz, quota headers come only from the limiter.
async fn check_route(
    client: &HttpClient,
    scenario: Scenario,
    auth: &HeaderValue,
) -> anyhow::Result<()> {
    let auth = auth.to_str().context("token header")?.to_string();
    let reply = wait_for(
        &format!("GET {} to answer 200", scenario.path()),
        tests::CONVERGE_TIMEOUT,
        async || {
            let mut req = client.get(scenario.path());
            if scenario.authenticated() {
                req = req.header("authorization", &auth);
            }
            let r = req.send().await.map_err(|e| e.to_string())?;
            if r.status == 200 {
                Ok(r)
            } else {
                Err(format!("{} {}", r.status, r.body))
            }
        },
    )
    .await;
    let identity = reply.upstream_header("x-client-id");
    let limit = reply.header("x-ratelimit-limit");
    let want_limit = PLAN_RATE.split('/').next();
    let fine = match scenario {
        Scenario::Baseline
        | Scenario::BaselineAgain
        | Scenario::Json
        | Scenario::Gzip
        | Scenario::Zstd => identity.is_none() && limit.is_none(),
        Scenario::Jwt => identity == Some("bench-client-0") && limit.is_none(),
        Scenario::FullMemory | Scenario::FullRedis => {
            identity == Some("bench-client-0") && limit == want_limit
        }
    };
    anyhow::ensure!(
        fine,
        "{} does not run the policy it should: upstream x-client-id {identity:?}, x-ratelimit-limit {limit:?}",
        scenario.path()
    );
    Ok(())
}

/// Opens a keep-alive HTTP/1.1 connection to Envoy.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One connection's worth of requests; reconnects when Envoy closed the previous one.
struct Conn {
    target: Target,
    sender: Option<SendRequest<Empty<Bytes>>>,
    /// Which client's token goes next.
    next: usize,
}

impl Conn {
    fn new(target: Target, first_client: usize) -> Conn {
        Conn {
            target,
            sender: None,
            next: first_client,
        }
    }

    /// Sends one GET and reads the whole answer; returns the status.
    async fn get(&mut self) -> Result<(u16, usize), String> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(format!("no answer within {REQUEST_TIMEOUT:?}"))
            }
        }
    }

    async fn exchange(&mut self) -> Result<(u16, usize), String> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            self.sender = Some(connect(self.target.addr).await?);
        }
        let sender = self.sender.as_mut().expect("connected above");
        sender.ready().await.map_err(|e| format!("ready: {e}"))?;
        let uri = format!("{}{}", self.target.path, self.target.query);
        let mut req = Request::get(uri).header(HOST, "bench.gateway.test");
        if !self.target.auth.is_empty() {
            let auth = &self.target.auth[self.next % self.target.auth.len()];
            self.next += 1;
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some((pad, accept, _)) = &self.target.body {
            req = req
                .header(tests::echo::PAD_HEADER, pad.clone())
                .header(ACCEPT_ENCODING, *accept);
        }
        let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = resp.status().as_u16();
        let encoding = resp
            .headers()
            .get(CONTENT_ENCODING)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if let Some((_, _, want)) = &self.target.body {
            if status == 200 && encoding.as_deref() != *want {
                return Err(format!("content-encoding {encoding:?}, expected {want:?}"));
            }
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body.len()))
    }
}

/// Closed loop: `--concurrency` connections, each sending its next request when the last one
/// is answered, for `--seconds` after a warm-up.
async fn saturate(target: &Target, args: &Args, pids: &Pids) -> anyhow::Result<Saturation> {
    // The warm-up's answers are not timed, but they must be 200s too.
    let (_, warm_up) = closed_loop(target, args.concurrency, WARM_UP).await?;
    let cpu_before = pids.cpu();
    let start = Instant::now();
    let (latencies, mut tally) =
        closed_loop(target, args.concurrency, Duration::from_secs(args.seconds)).await?;
    let took = start.elapsed();
    let cpu_after = pids.cpu();
    tally.merge(warm_up);
    let done = latencies.len().max(1) as u32;
    let cpu_per_request = cpu_before
        .iter()
        .zip(&cpu_after)
        .filter_map(|((name, b), (_, a))| {
            Some((*name, a.as_ref()?.saturating_sub(*b.as_ref()?) / done))
        })
        .collect();
    Ok(Saturation {
        rps: latencies.len() as f64 / took.as_secs_f64(),
        latency: Percentiles::of(latencies),
        tally,
        cpu_per_request,
    })
}

async fn closed_loop(
    target: &Target,
    connections: usize,
    run_for: Duration,
) -> anyhow::Result<(Vec<Duration>, Tally)> {
    let mut conns = Vec::with_capacity(connections);
    for w in 0..connections {
        let mut c = Conn::new(target.clone(), w);
        c.sender = Some(connect(target.addr).await.map_err(anyhow::Error::msg)?);
        conns.push(c);
    }
    let deadline = Instant::now() + run_for;
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in conns {
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let t = Instant::now();
                tally.record(c.get().await);
                latencies.push(t.elapsed());
            }
            (latencies, tally)
        });
    }
    let mut latencies = Vec::new();
    let mut tally = Tally::default();
    while let Some(res) = tasks.join_next().await {
        let (l, t) = res.context("load task")?;
        latencies.extend(l);
        tally.merge(t);
    }
    Ok((latencies, tally))
}

/// Open loop: request `k` is due at `start + k / rate`; connection `w` of `--connections` takes
/// slots `w`, `w + n`, `w + 2n`, … (like wrk2). A request's latency runs from its due time when
/// its connection was still busy with an earlier answer then (so a stall counts against every
/// request it delayed), and from the actual send when the connection was free (so the timer's
/// millisecond granularity and this process's scheduling are not charged to the gateway; their
/// size is reported as the generator lag).
async fn paced(target: &Target, rate: f64, args: &Args) -> anyhow::Result<Paced> {
    let n = args.connections;
    let slots = (rate * args.rate_seconds as f64).round().max(1.0) as u64;
    let mut conns = Vec::with_capacity(n);
    for w in 0..n {
        let mut c = Conn::new(target.clone(), w);
        c.sender = Some(connect(target.addr).await.map_err(anyhow::Error::msg)?);
        conns.push(c);
    }
    // A short lead so every task is parked on its first slot before the clock starts.
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for (w, mut c) in conns.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut lags = Vec::new();
            let mut tally = Tally::default();
            let mut free_at = start;
            let mut k = w as u64;
            while k < slots {
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                let from = if free_at <= due {
                    lags.push(sent - due);
                    sent
                } else {
                    due
                };
                tally.record(c.get().await);
                free_at = Instant::now();
                latencies.push(free_at - from);
                k += n as u64;
            }
            (latencies, lags, tally, free_at)
        });
    }
    let mut latencies = Vec::new();
    let mut lags = Vec::new();
    let mut tally = Tally::default();
    let mut end = start;
    while let Some(res) = tasks.join_next().await {
        let (l, g, t, last) = res.context("load task")?;
        latencies.extend(l);
        lags.extend(g);
        tally.merge(t);
        end = end.max(last);
    }
    let took = end
        .saturating_duration_since(start)
        .max(Duration::from_millis(1));
    Ok(Paced {
        rate,
        achieved: latencies.len() as f64 / took.as_secs_f64(),
        latency: Percentiles::of(latencies),
        generator_lag_p99: Percentiles::of(lags).p99,
        tally,
    })
}

/// The processes whose CPU time the saturation runs divide by requests served.
struct Pids {
    envoy: Option<u32>,
    echo: Option<u32>,
    authz: Option<u32>,
    rls: Option<u32>,
    redis: Option<u32>,
}

impl Pids {
    /// User + system CPU time so far of each process (and of this one), where readable.
    fn cpu(&self) -> Vec<(&'static str, Option<Duration>)> {
        vec![
            ("envoy", self.envoy.and_then(cpu_time)),
            ("echo", self.echo.and_then(cpu_time)),
            ("authz", self.authz.and_then(cpu_time)),
            ("ratelimit", self.rls.and_then(cpu_time)),
            ("redis", self.redis.and_then(cpu_time)),
            ("loadgen", cpu_time(std::process::id())),
        ]
    }
}

/// utime + stime of a process from `/proc/<pid>/stat` (Linux; `None` elsewhere).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing paren);
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the paren.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// `getconf CLK_TCK` (the unit of `/proc/<pid>/stat` times), 100 when it cannot be asked.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// redis-server's pid, from `INFO server`.
fn redis_pid(port: u16) -> Option<u32> {
    let info = raw_command(port, "INFO server").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Envoy's counters of the ext_authz filter (`http.<listener>.ext_authz.*`) and the rate-limit
/// filter (`cluster.<upstream>.ratelimit.*`), named from the filter on (`ext_authz.ok`): Envoy's
/// own count of the checks it made and how they ended. (Its latency timers are not shown:
/// `downstream_rq_time` and `upstream_rq_time` record whole milliseconds, too coarse for what
/// this benchmark compares.)
async fn envoy_counters(stack: &Stack) -> HashMap<String, u64> {
    let mut counters = HashMap::new();
    for line in stack.envoy.stats().await.lines() {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        let short = match (
            name.split_once(".ext_authz."),
            name.split_once(".ratelimit."),
        ) {
            (Some((scope, what)), _) if scope.starts_with("http.") => format!("ext_authz.{what}"),
            (_, Some((scope, what))) if scope.starts_with("cluster.") => {
                format!("ratelimit.{what}")
            }
            _ => continue,
        };
        if let Ok(v) = value.trim().parse::<u64>() {
            *counters.entry(short).or_default() += v;
        }
    }
    counters
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Signed difference in milliseconds.
fn added_ms(a: Duration, b: Duration) -> String {
    format!("{:+.2}", (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
}

fn report(rows: &[Finished], args: &Args) {
    let Some(base) = rows.iter().find(|r| r.scenario == Scenario::Baseline) else {
        return;
    };
    let rate = base.paced.rate;
    println!(
        "Saturating throughput (closed loop, {} connections, {} s)",
        args.concurrency, args.seconds
    );
    println!(
        "{:<27} {:>9} {:>11} {:>9} {:>9}   CPU per request, µs",
        "scenario", "req/s", "vs baseline", "p50 ms", "p99 ms"
    );
    for r in rows {
        let s = &r.saturation;
        let cpu: Vec<String> = s
            .cpu_per_request
            .iter()
            // An idle process (Redis in the runs that do not use it) is noise, not cost.
            .filter(|(_, d)| *d >= IDLE_CPU_PER_REQUEST)
            .map(|(name, d)| format!("{name} {:.0}", d.as_secs_f64() * 1e6))
            .collect();
        println!(
            "{:<27} {:>9.0} {:>10.2}× {:>9} {:>9}   {}",
            r.scenario.label(),
            s.rps,
            s.rps / base.saturation.rps,
            ms(s.latency.p50),
            ms(s.latency.p99),
            cpu.join(", ")
        );
    }
    println!();
    let how = if args.rate.is_some() {
        "set by --rate"
    } else {
        "half the slowest scenario's saturating rate"
    };
    println!(
        "Fixed rate {rate:.0} req/s ({how}), open loop over {} connections, {} s",
        args.connections, args.rate_seconds
    );
    println!(
        "{:<27} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}  target",
        "scenario",
        "done/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "added p50",
        "added p99",
        "gen lag",
    );
    let b = base.paced.latency;
    for r in rows {
        let p = &r.paced;
        let l = p.latency;
        let overloaded = p.rate > r.saturation.rps * 0.95 || p.achieved < p.rate * 0.95;
        let verdict = if r.scenario.full() {
            let added = l.p99.saturating_sub(b.p99);
            match (added < TARGET_ADDED_P99, overloaded) {
                (true, _) => "met".to_string(),
                (false, true) => "missed (rate above its saturation)".to_string(),
                (false, false) => "missed".to_string(),
            }
        } else if overloaded {
            "rate above its saturation".to_string()
        } else {
            String::new()
        };
        let (a50, a99) = if r.scenario == Scenario::Baseline {
            ("-".to_string(), "-".to_string())
        } else {
            (added_ms(l.p50, b.p50), added_ms(l.p99, b.p99))
        };
        println!(
            "{:<27} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}  {}",
            r.scenario.label(),
            p.achieved,
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max),
            a50,
            a99,
            ms(p.generator_lag_p99),
            verdict
        );
    }
    println!(
        "(added = minus the baseline's figure at the same rate; gen lag = p99 of how late this \
         process sent a request whose connection was free, not counted as latency)"
    );
    println!();

    println!(
        "Envoy's view: filter counters that moved during each scenario's runs (a denied, \
         over-limit or failed check would show here)"
    );
    for r in rows {
        let counters: Vec<String> = r.envoy.iter().map(|(n, v)| format!("{n} {v}")).collect();
        let shown = if counters.is_empty() {
            "no ext_authz or rate-limit calls".to_string()
        } else {
            counters.join(", ")
        };
        println!("{:<27} {shown}", r.scenario.label());
    }
    println!();

    let again = rows
        .iter()
        .find(|r| r.scenario == Scenario::BaselineAgain)
        .map(|r| {
            format!(
                "; the baseline measured again at the end: {:.2}× its first throughput, p99 {} ms",
                r.saturation.rps / base.saturation.rps,
                added_ms(r.paced.latency.p99, b.p99)
            )
        })
        .unwrap_or_default();
    let full: Vec<String> = rows
        .iter()
        .filter(|r| r.scenario.full())
        .map(|r| {
            let l = r.paced.latency;
            format!(
                "{} {:.2}× throughput, {} ms p50 / {} ms p99 added",
                if r.scenario == Scenario::FullRedis {
                    "Redis"
                } else {
                    "memory"
                },
                r.saturation.rps / base.saturation.rps,
                added_ms(l.p50, b.p50),
                added_ms(l.p99, b.p99)
            )
        })
        .collect();
    let met = rows
        .iter()
        .filter(|r| r.scenario.full())
        .all(|r| r.paced.latency.p99.saturating_sub(b.p99) < TARGET_ADDED_P99);
    println!(
        "summary: full gateway vs plain Envoy at {rate:.0} req/s: {}; target (added p99 < {} ms of a {} ms budget) {}{again}",
        full.join("; "),
        TARGET_ADDED_P99.as_millis(),
        BUDGET.as_millis(),
        if met { "MET" } else { "MISSED" },
    );
    let json = rows.iter().find(|r| r.scenario == Scenario::Json);
    let envoy_cpu = |r: &Finished| {
        r.saturation
            .cpu_per_request
            .iter()
            .find(|(n, _)| *n == "envoy")
            .map_or(0.0, |(_, d)| d.as_secs_f64() * 1e6)
    };
    let answer = |r: &Finished| {
        let t = &r.saturation.tally;
        t.body_bytes as f64 / t.ok.max(1) as f64
    };
    if let Some(json) = json {
        let parts: Vec<String> = rows
            .iter()
            .filter(|r| r.scenario.compressing())
            .map(|r| {
                format!(
                    "{} answers {:.0} of {:.0} bytes, {:.2}× plain Envoy's throughput ({:.2}× the \
                     uncompressed answer's), Envoy {:.0} µs per request ({:+.0} µs on the uncompressed)",
                    r.scenario.label().trim_start_matches("JSON answer, "),
                    answer(r),
                    answer(json),
                    r.saturation.rps / base.saturation.rps,
                    r.saturation.rps / json.saturation.rps,
                    envoy_cpu(r),
                    envoy_cpu(r) - envoy_cpu(json),
                )
            })
            .collect();
        println!(
            "compression ({} bytes of JSON asked): {}; the uncompressed answer {:.2}× plain Envoy's throughput",
            args.body_bytes,
            parts.join("; "),
            json.saturation.rps / base.saturation.rps
        );
    }
}

/// The WebSocket rows: the same WebSocket echo-upstream, reached three ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WsScenario {
    Direct,
    Envoy,
    Jwt,
}

impl WsScenario {
    const ORDER: [WsScenario; 3] = [WsScenario::Direct, WsScenario::Envoy, WsScenario::Jwt];

    fn label(self) -> &'static str {
        match self {
            WsScenario::Direct => "direct → WebSocket echo",
            WsScenario::Envoy => "Envoy, websocket route",
            WsScenario::Jwt => "websocket route + JWT",
        }
    }

    fn path(self) -> &'static str {
        match self {
            WsScenario::Direct | WsScenario::Envoy => "/ws",
            WsScenario::Jwt => "/jwt-ws",
        }
    }
}

/// A closed-loop WebSocket run.
struct WsRun {
    per_second: f64,
    latency: Percentiles,
    /// CPU time per echoed message of each process, by name.
    cpu_per_message: Vec<(&'static str, Duration)>,
}

/// `--ws-sockets` open sockets, each sending its next text message when the last one came back,
/// for a warm-up second and then `--ws-seconds`; every echo must equal what was sent.
async fn ws_run(
    url: &str,
    bearer: Option<&HeaderValue>,
    args: &Args,
    pids: &[(&'static str, Option<u32>)],
) -> anyhow::Result<WsRun> {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    use tokio_tungstenite::tungstenite::Message;

    let mut sockets = Vec::with_capacity(args.ws_sockets);
    for _ in 0..args.ws_sockets {
        let mut req = url.into_client_request().context("WebSocket request")?;
        if let Some(b) = bearer {
            req.headers_mut().insert(AUTHORIZATION, b.clone());
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .with_context(|| format!("WebSocket upgrade at {url}"))?;
        sockets.push(ws);
    }
    let text: String = "x".repeat(args.ws_bytes);
    let cpu =
        || -> Vec<Option<Duration>> { pids.iter().map(|(_, p)| p.and_then(cpu_time)).collect() };
    let warm_until = Instant::now() + WARM_UP;
    let deadline = warm_until + Duration::from_secs(args.ws_seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for mut ws in sockets {
        let text = text.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                ws.send(Message::text(text.clone()))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                match ws.next().await {
                    Some(Ok(Message::Text(back))) if back.as_str() == text => {}
                    other => return Err(format!("echo: {other:?}")),
                }
                if t >= warm_until {
                    latencies.push(t.elapsed());
                }
            }
            let _ = ws.close(None).await;
            Ok::<_, String>(latencies)
        });
    }
    tokio::time::sleep_until(warm_until.into()).await;
    let before = cpu();
    let mut latencies = Vec::new();
    while let Some(res) = tasks.join_next().await {
        latencies.extend(res.context("WebSocket task")?.map_err(anyhow::Error::msg)?);
    }
    let after = cpu();
    let took = Duration::from_secs(args.ws_seconds);
    let done = latencies.len().max(1) as u32;
    let cpu_per_message = pids
        .iter()
        .zip(before.iter().zip(&after))
        .filter_map(|((name, _), (b, a))| {
            Some((*name, a.as_ref()?.saturating_sub(*b.as_ref()?) / done))
        })
        .collect();
    Ok(WsRun {
        per_second: latencies.len() as f64 / took.as_secs_f64(),
        latency: Percentiles::of(latencies),
        cpu_per_message,
    })
}

fn ws_report(rows: &[(WsScenario, WsRun)], args: &Args) {
    let Some((_, direct)) = rows.iter().find(|(s, _)| *s == WsScenario::Direct) else {
        return;
    };
    println!();
    println!(
        "WebSocket echo (closed loop, {} open sockets, one {}-byte text message in flight each, {} s)",
        args.ws_sockets, args.ws_bytes, args.ws_seconds
    );
    println!(
        "{:<27} {:>9} {:>11} {:>9} {:>9}   CPU per message, µs",
        "scenario", "msg/s", "vs direct", "p50 ms", "p99 ms"
    );
    for (s, r) in rows {
        let cpu: Vec<String> = r
            .cpu_per_message
            .iter()
            .filter(|(_, d)| *d >= Duration::from_micros(1))
            .map(|(name, d)| format!("{name} {:.0}", d.as_secs_f64() * 1e6))
            .collect();
        println!(
            "{:<27} {:>9.0} {:>10.2}× {:>9} {:>9}   {}",
            s.label(),
            r.per_second,
            r.per_second / direct.per_second,
            ms(r.latency.p50),
            ms(r.latency.p99),
            cpu.join(", ")
        );
    }
}
