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
//! Shaping and tracing rows, each on an Envoy of its own gateway with the same routes as the
//! baseline's (`--concurrency 1` each, only the measured one busy), every answer checked: the
//! plain route of a gateway whose chain also holds the cache, ext_proc and compose filters; a
//! `cache` route warmed by one request, every measured answer a hit (`age`), the echo upstream's
//! request count unchanged over the run; `--transform-bytes` (10 KiB) of JSON as sent and through
//! a `transform.response.json` route (remove, set, rename, envelope; transform-service's CPU
//! counted), every answer enveloped; a three-part `compose` route on the echo upstream, every
//! answer `x-compose-complete: true`; the plain route of a gateway with `tracing` at
//! `sample: 100%` (every span Envoy sent received by an OTLP collector on a thread of this
//! process, at least one per answer) and at `sample: 0%` (none). Their ratios are to the same
//! baseline as the other rows.
//!
//! A default run takes about six minutes. `scripts/bench gateway` builds release binaries and
//! runs it; `--help` lists the knobs.

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
use tests::cpu::{cpu_time, cpu_time_of, redis_pid};
use tests::ratelimit::RateLimitService;
use tests::redis::{raw_command, RedisServer};
use tests::transform::TransformService;
use tests::{free_port, wait_for, workspace_bin, Envoy, HttpClient, Proc, Stack, XdsMode};

/// The target from the issue: at a moderate rate the full gateway adds less than this to p99.
const TARGET_ADDED_P99: Duration = Duration::from_millis(2);
/// And less than this to p50.
const TARGET_ADDED_P50: Duration = Duration::from_millis(1);
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
    about = "Benchmarks plain Envoy against the full gateway (JWT + plan rate limit, memory and Redis), compression, cache, transforms, compose, tracing and WebSocket routes"
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
    /// `rate_limits.counted_by` of the gateway: `authz-service` counts the plan limit inside
    /// the ext_authz call (one gRPC call per request), `ratelimit-service` in a second call.
    #[arg(long, env = "BENCH_COUNTED_BY", default_value = "authz-service")]
    counted_by: String,
    /// Size of the JSON answer of the compression rows (`x-echo-pad-bytes`).
    #[arg(long, env = "BENCH_BODY_BYTES", default_value_t = 16 * 1024)]
    body_bytes: usize,
    /// Only these rows (comma-separated: jwt, full-memory, full-redis, json, gzip, zstd,
    /// shaped, cache, transform-base, transform, compose, trace-100, trace-0, ws), besides the
    /// baseline and its repeat, which every run has; default: all of them.
    #[arg(long, env = "BENCH_ROWS", value_delimiter = ',')]
    rows: Vec<String>,
    /// Size of the JSON answer of the transform rows (`x-echo-pad-bytes`).
    #[arg(long, env = "BENCH_TRANSFORM_BYTES", default_value_t = 10 * 1024)]
    transform_bytes: usize,
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
    /// The peer shape: Envoy's own `jwt_authn` verifies the token and one RLS call to
    /// ratelimit-service (memory store) applies the plan limit; no ext_authz.
    Peer,
    /// The same on the Redis store.
    PeerRedis,
    /// The baseline with [`REALISTIC_HEADERS`] on every request.
    BaselineHeaders,
    /// The full gateway (memory) with [`REALISTIC_HEADERS`].
    FullHeaders,
    /// The peer shape (memory) with [`REALISTIC_HEADERS`].
    PeerHeaders,
    /// `--body-bytes` of JSON on the plain route, as the upstream sent it.
    Json,
    /// The same answer compressed by the gateway's `compression`, gzip.
    Gzip,
    /// The same, zstd.
    Zstd,
    /// The plain route of the shaping gateway, whose chain also holds the cache, ext_proc and
    /// compose filters (off on this route): what those cost a route that does not use them.
    ShapedPlain,
    /// A `cache` route, every measured answer a hit.
    Cached,
    /// `--transform-bytes` of JSON on the shaping gateway's plain route, as the upstream sent it.
    ShapedJson,
    /// The same answer through a `transform.response.json` route (transform-service, ext_proc).
    Transformed,
    /// A `compose` route of three parts on the echo upstream.
    Composed,
    /// The plain route of a gateway that traces at `sample: 100%`.
    Traced,
    /// The same gateway config at `sample: 0%`.
    Unsampled,
    BaselineAgain,
}

impl Scenario {
    /// The order of the report's rows.
    const REPORT_ORDER: [Scenario; 20] = [
        Scenario::Baseline,
        Scenario::Jwt,
        Scenario::FullMemory,
        Scenario::Peer,
        Scenario::FullRedis,
        Scenario::PeerRedis,
        Scenario::BaselineHeaders,
        Scenario::FullHeaders,
        Scenario::PeerHeaders,
        Scenario::Json,
        Scenario::Gzip,
        Scenario::Zstd,
        Scenario::ShapedPlain,
        Scenario::Cached,
        Scenario::ShapedJson,
        Scenario::Transformed,
        Scenario::Composed,
        Scenario::Traced,
        Scenario::Unsampled,
        Scenario::BaselineAgain,
    ];
    /// Saturation runs: the baseline first and last, to show how far the machine drifted.
    const SATURATION_ORDER: [Scenario; 20] = Scenario::REPORT_ORDER;
    /// Fixed-rate runs: baseline first and last again; Redis next to it, since it is the store
    /// the saturation runs left running (one store switch fewer).
    const PACED_ORDER: [Scenario; 20] = [
        Scenario::Baseline,
        Scenario::FullRedis,
        Scenario::PeerRedis,
        Scenario::Peer,
        Scenario::FullMemory,
        Scenario::Jwt,
        Scenario::BaselineHeaders,
        Scenario::FullHeaders,
        Scenario::PeerHeaders,
        Scenario::Json,
        Scenario::Gzip,
        Scenario::Zstd,
        Scenario::ShapedPlain,
        Scenario::Cached,
        Scenario::ShapedJson,
        Scenario::Transformed,
        Scenario::Composed,
        Scenario::Traced,
        Scenario::Unsampled,
        Scenario::BaselineAgain,
    ];

    /// The name `--rows` selects the scenario by; `None` for the baseline, which always runs.
    fn id(self) -> Option<&'static str> {
        Some(match self {
            Scenario::Baseline | Scenario::BaselineAgain => return None,
            Scenario::Jwt => "jwt",
            Scenario::FullMemory => "full-memory",
            Scenario::FullRedis => "full-redis",
            Scenario::Peer => "peer",
            Scenario::PeerRedis => "peer-redis",
            Scenario::BaselineHeaders => "headers-base",
            Scenario::FullHeaders => "headers-full",
            Scenario::PeerHeaders => "headers-peer",
            Scenario::Json => "json",
            Scenario::Gzip => "gzip",
            Scenario::Zstd => "zstd",
            Scenario::ShapedPlain => "shaped",
            Scenario::Cached => "cache",
            Scenario::ShapedJson => "transform-base",
            Scenario::Transformed => "transform",
            Scenario::Composed => "compose",
            Scenario::Traced => "trace-100",
            Scenario::Unsampled => "trace-0",
        })
    }

    /// Whether `--rows` asks for the scenario.
    fn selected(self, args: &Args) -> bool {
        args.rows.is_empty() || self.id().is_none_or(|id| args.rows.iter().any(|r| r == id))
    }

    /// The rate-limit store the scenario needs; `None` when it makes no rate-limit call.
    fn store(self) -> Option<Store> {
        match self {
            Scenario::FullMemory
            | Scenario::Peer
            | Scenario::FullHeaders
            | Scenario::PeerHeaders => Some(Store::Memory),
            Scenario::FullRedis | Scenario::PeerRedis => Some(Store::Redis),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline: Envoy → echo",
            Scenario::Jwt => "JWT (ext_authz)",
            Scenario::FullMemory => "JWT + plan limit, memory",
            Scenario::FullRedis => "JWT + plan limit, Redis",
            Scenario::Peer => "peer: jwt_authn + RLS, memory",
            Scenario::PeerRedis => "peer: jwt_authn + RLS, Redis",
            Scenario::BaselineHeaders => "baseline, 15 headers",
            Scenario::FullHeaders => "JWT + limit, 15 headers",
            Scenario::PeerHeaders => "peer, 15 headers",
            Scenario::Json => "JSON answer, uncompressed",
            Scenario::Gzip => "JSON answer, gzip",
            Scenario::Zstd => "JSON answer, zstd",
            Scenario::ShapedPlain => "shaping gateway, plain",
            Scenario::Cached => "cache hit",
            Scenario::ShapedJson => "JSON answer, as sent",
            Scenario::Transformed => "JSON answer, transformed",
            Scenario::Composed => "compose, 3 parts",
            Scenario::Traced => "tracing, sample 100%",
            Scenario::Unsampled => "tracing, sample 0%",
            Scenario::BaselineAgain => "baseline again (drift)",
        }
    }

    /// The gateway (and so the Envoy) that serves the scenario.
    fn gateway(self) -> Gw {
        match self {
            Scenario::Json
            | Scenario::Gzip
            | Scenario::Zstd
            | Scenario::ShapedPlain
            | Scenario::Cached
            | Scenario::ShapedJson
            | Scenario::Transformed
            | Scenario::Composed => Gw::Shaped,
            Scenario::Traced => Gw::Traced,
            Scenario::Unsampled => Gw::Unsampled,
            Scenario::Peer | Scenario::PeerRedis | Scenario::PeerHeaders => Gw::Peer,
            _ => Gw::Edge,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Scenario::Baseline
            | Scenario::BaselineAgain
            | Scenario::BaselineHeaders
            | Scenario::Json
            | Scenario::Gzip
            | Scenario::Zstd
            | Scenario::ShapedPlain
            | Scenario::ShapedJson
            | Scenario::Traced
            | Scenario::Unsampled => "/plain",
            Scenario::Jwt => "/jwt",
            Scenario::FullMemory
            | Scenario::FullRedis
            | Scenario::FullHeaders
            | Scenario::Peer
            | Scenario::PeerRedis
            | Scenario::PeerHeaders => "/full",
            Scenario::Cached => "/cached",
            Scenario::Transformed => "/transformed",
            Scenario::Composed => "/composed",
        }
    }

    fn authenticated(self) -> bool {
        matches!(
            self,
            Scenario::Jwt
                | Scenario::FullMemory
                | Scenario::FullRedis
                | Scenario::FullHeaders
                | Scenario::Peer
                | Scenario::PeerRedis
                | Scenario::PeerHeaders
        )
    }

    /// Whether every request carries [`REALISTIC_HEADERS`].
    fn realistic_headers(self) -> bool {
        matches!(
            self,
            Scenario::BaselineHeaders | Scenario::FullHeaders | Scenario::PeerHeaders
        )
    }

    /// The row this one is compared with in the summary: each full-gateway row with the peer
    /// shape on the same store and headers.
    fn peer(self) -> Option<Scenario> {
        match self {
            Scenario::FullMemory => Some(Scenario::Peer),
            Scenario::FullRedis => Some(Scenario::PeerRedis),
            Scenario::FullHeaders => Some(Scenario::PeerHeaders),
            _ => None,
        }
    }

    /// The baseline of the same headers.
    fn baseline(self) -> Scenario {
        if self.realistic_headers() {
            Scenario::BaselineHeaders
        } else {
            Scenario::Baseline
        }
    }

    /// `x-echo-pad-bytes` and `Accept-Encoding` of the rows with a large body.
    fn body(self, args: &Args) -> Option<(usize, &'static str)> {
        match self {
            Scenario::Json => Some((args.body_bytes, "identity")),
            Scenario::Gzip => Some((args.body_bytes, "gzip")),
            Scenario::Zstd => Some((args.body_bytes, "zstd")),
            Scenario::ShapedJson | Scenario::Transformed => {
                Some((args.transform_bytes, "identity"))
            }
            _ => None,
        }
    }

    /// What every answer of the scenario must show besides its 200: proof that it got the
    /// treatment the row is named after.
    fn expect(self) -> Expect {
        match self {
            Scenario::Json | Scenario::ShapedJson => Expect::Encoding(None),
            Scenario::Gzip => Expect::Encoding(Some("gzip")),
            Scenario::Zstd => Expect::Encoding(Some("zstd")),
            Scenario::Cached => Expect::CacheHit,
            Scenario::Transformed => Expect::Body {
                starts: ENVELOPE_START,
                tail: ENVELOPE_WITH,
            },
            Scenario::Composed => Expect::Header("x-compose-complete", Some("true")),
            Scenario::Traced => Expect::Contains(SAMPLED_TRACEPARENT),
            _ => Expect::Nothing,
        }
    }

    /// Served by the gateway with `compression`.
    fn compressing(self) -> bool {
        matches!(self, Scenario::Gzip | Scenario::Zstd)
    }

    /// The full gateway: the rows the target applies to.
    fn full(self) -> bool {
        matches!(
            self,
            Scenario::FullMemory | Scenario::FullRedis | Scenario::FullHeaders
        )
    }
}

/// The gateways of gateway.yaml, each served by its own Envoy. All four have the same routes
/// and filters as `edge`; `shaped` adds the cache, transform and compose routes, `traced` and
/// `unsampled` add `tracing` at 100% and 0%.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gw {
    Edge,
    Shaped,
    Traced,
    Unsampled,
    /// Not in gateway.yaml: the peer shape's Envoy, from a static bootstrap ([`peer_bootstrap`]).
    Peer,
}

impl Gw {
    /// The gateways of gateway.yaml (all but [`Gw::Peer`]).
    const ALL: [Gw; 4] = [Gw::Edge, Gw::Shaped, Gw::Traced, Gw::Unsampled];

    fn name(self) -> &'static str {
        match self {
            Gw::Edge => tests::stack::GATEWAY,
            Gw::Shaped => "shaped",
            Gw::Traced => "traced",
            Gw::Unsampled => "unsampled",
            Gw::Peer => "peer",
        }
    }

    /// `tracing.sample` and `service_name` of the gateway's spans.
    fn tracing(self) -> Option<(&'static str, &'static str)> {
        match self {
            Gw::Traced => Some(("100%", TRACED_SERVICE)),
            Gw::Unsampled => Some(("0%", UNSAMPLED_SERVICE)),
            Gw::Edge | Gw::Shaped | Gw::Peer => None,
        }
    }
}

/// The start of every transformed answer: the envelope's field (`envelope.field: data`).
const ENVELOPE_START: &str = r#"{"data":"#;
/// In the last bytes of every transformed answer: the envelope's `with` member.
const ENVELOPE_WITH: &str = r#""api_version":"bench""#;
/// In the echo's description of a traced request: the `traceparent` Envoy sent the upstream,
/// of a sampled trace (version 00, the flags `01` checked from the answer in `check_route`).
const SAMPLED_TRACEPARENT: &str = r#""traceparent":"00-"#;

/// What every answer of a scenario must show, besides its 200.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Nothing,
    /// This `Content-Encoding`, or none.
    Encoding(Option<&'static str>),
    /// This response header, with this value when one is given.
    Header(&'static str, Option<&'static str>),
    /// A body that starts with `starts` and has `tail` in its last [`TAIL_BYTES`].
    Body {
        starts: &'static str,
        tail: &'static str,
    },
    /// A body that contains this.
    Contains(&'static str),
    /// Replayed by Envoy's cache (`age` set). A miss is counted apart from the errors: Envoy's
    /// cache refills an entry now and then under concurrent load (seen: once per run, 1 in 60,000 to 240,000 hits).
    CacheHit,
}

/// What [`Expect::check`] returns for an answer that [`Expect::CacheHit`] wanted replayed but
/// the upstream served.
const CACHE_MISS: &str = "cache miss (no age header)";
/// Misses allowed per 10,000 answers of the cache row before the run fails: more would make the
/// row measure the upstream, not the replay.
const MISSES_PER_10K: u64 = 1;

/// How far from the end of a transformed body the envelope's `with` member must be.
const TAIL_BYTES: usize = 256;

impl Expect {
    /// `Err` with what was wrong when the answer does not show what it must.
    fn check(self, headers: &hyper::HeaderMap, body: &[u8]) -> Result<(), String> {
        let header = |n: &str| {
            headers
                .get(n)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let contains =
            |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
        match self {
            Expect::Nothing => Ok(()),
            Expect::CacheHit => header("age")
                .map(drop)
                .ok_or_else(|| CACHE_MISS.to_string()),
            Expect::Encoding(want) => {
                let got = header(CONTENT_ENCODING.as_str());
                if got.as_deref() == want {
                    Ok(())
                } else {
                    Err(format!("content-encoding {got:?}, expected {want:?}"))
                }
            }
            Expect::Header(name, want) => match (header(name), want) {
                (Some(got), Some(want)) if got != want => {
                    Err(format!("{name}: {got}, expected {want}"))
                }
                (Some(_), _) => Ok(()),
                (None, _) => Err(format!("no {name} header")),
            },
            Expect::Body { starts, tail } => {
                let end = &body[body.len().saturating_sub(TAIL_BYTES)..];
                if body.starts_with(starts.as_bytes()) && contains(end, tail) {
                    Ok(())
                } else {
                    Err(format!(
                        "body is not transformed: {:?}",
                        String::from_utf8_lossy(&body[..body.len().min(120)])
                    ))
                }
            }
            Expect::Contains(needle) => {
                if contains(body, needle) {
                    Ok(())
                } else {
                    Err(format!("no {needle} in the body"))
                }
            }
        }
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
    /// `x-echo-pad-bytes` and `Accept-Encoding`, for the rows with a large body.
    body: Option<(HeaderValue, &'static str)>,
    /// What every answer must show.
    expect: Expect,
    /// Sent on every request besides the above: [`REALISTIC_HEADERS`] or nothing.
    extra: &'static [(&'static str, &'static str)],
}

/// What a browser sends besides `Host` and `Authorization`: 15 headers, 1.1 KiB with the
/// cookies. None of them is read by the gateway's policy; all of them reach the upstream.
const REALISTIC_HEADERS: &[(&str, &str)] = &[
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    ),
    ("accept-language", "en-GB,en;q=0.9,de;q=0.8,fr;q=0.7"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    (
        "cookie",
        "session=3f9a1c27e4b84d0c9a2f6e51b7d8c403; csrftoken=Jm2kq8Vx0sLr7Tn4Pz6Wc1Yb9Hd3Fg5A; \
         _ga=GA1.2.1234567890.1733040000; _gid=GA1.2.987654321.1733040000; theme=dark; \
         consent=analytics%3Dtrue%26marketing%3Dfalse%26functional%3Dtrue; \
         recently_viewed=sku-10023%2Csku-20931%2Csku-33810%2Csku-41277%2Csku-58002; \
         ab_bucket=checkout-v2-b; locale=en_GB; tz=Europe%2FLondon; \
         cart=eyJpdGVtcyI6W3sic2t1Ijoic2t1LTEwMDIzIiwicXR5IjoyfSx7InNrdSI6InNrdS0yMDkzMSIsInF0eSI6MX1dfQ",
    ),
    ("referer", "https://shop.example.com/catalogue/outdoor/tents?page=2&sort=price"),
    ("origin", "https://shop.example.com"),
    (
        "sec-ch-ua",
        "\"Google Chrome\";v=\"131\", \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"",
    ),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", "\"Linux\""),
    ("sec-fetch-dest", "empty"),
    ("sec-fetch-mode", "cors"),
    ("sec-fetch-site", "same-origin"),
    ("cache-control", "no-cache"),
    ("priority", "u=1, i"),
];

/// Answers other than 200, and transport failures.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    /// Body bytes of the 200 answers, as received (compressed where they were).
    body_bytes: u64,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    first_errors: Vec<String>,
    /// Answers of the cache row that the upstream served ([`CACHE_MISS`]).
    misses: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.body_bytes += other.body_bytes;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.errors += other.errors;
        self.misses += other.misses;
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
            Err(e) if e == CACHE_MISS => {
                self.ok += 1;
                self.misses += 1;
            }
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
        if self.misses > 0 {
            parts.push(format!("{} cache misses", self.misses));
        }
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
    /// What the runs' checks beyond the answers found (one line per run).
    notes: Vec<String>,
}

impl Row {
    fn new(scenario: Scenario) -> Row {
        Row {
            scenario,
            saturation: None,
            paced: None,
            envoy: BTreeMap::new(),
            notes: Vec::new(),
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
            notes: self.notes,
        })
    }
}

/// A scenario with both runs done.
struct Finished {
    scenario: Scenario,
    saturation: Saturation,
    paced: Paced,
    envoy: BTreeMap<String, u64>,
    notes: Vec<String>,
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
    for r in &args.rows {
        anyhow::ensure!(
            r == "ws"
                || Scenario::REPORT_ORDER
                    .iter()
                    .any(|s| s.id() == Some(r.as_str())),
            "--rows: no row {r:?}"
        );
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
/// the compression rows ask for it); WebSocket routes to the WebSocket echo. The same routes
/// make four gateways, each served by its own Envoy ([`Gw`]): `edge` as they are, `shaped` with
/// the cache, transform and compose routes added, `traced` and `unsampled` with `tracing`.
fn config(ports: &Ports, keys_file: Option<&Path>, counted_by: &str) -> String {
    let Ports {
        echo,
        ws,
        authz,
        rls,
        transform,
        otlp,
        ..
    } = *ports;
    let api_keys = keys_file.map_or(String::new(), |f| {
        format!(
            "  api_keys:\n    partners: {{ query: api_key, keys_file: {} }}\n",
            f.display()
        )
    });
    let routes = r#"      - name: plain
        match: { prefix: /plain }
        service: echo
        auth: none
        rate_limit: none
      - name: jwt
        match: { prefix: /jwt }
        service: echo
        auth: main
        rate_limit: none
      - name: full
        match: { prefix: /full }
        service: echo
        auth: main
        rate_limit: plan
      - { name: ws, match: { prefix: /ws }, service: ws, auth: none, rate_limit: none, websocket: true, timeout: 0s }
      - { name: ws-jwt, match: { prefix: /jwt-ws }, service: ws, auth: main, rate_limit: none, websocket: true, timeout: 0s }
"#;
    // The cache keeps its entry for longer than any run; the transform does each kind of edit
    // (the echo's description has `headers`, `query` and `upstream` members); the three parts
    // are three calls to the echo upstream.
    let shaping = format!(
        r#"      - name: cached
        match: {{ prefix: /cached }}
        service: echo
        auth: none
        rate_limit: none
        cache: {{ ttl: 3600s }}
      - name: transformed
        match: {{ prefix: /transformed }}
        service: echo
        auth: none
        rate_limit: none
        transform:
          response:
            json:
              remove: [/headers, /query]
              set: {{ /meta/source: gateway }}
              rename: {{ /upstream: /served_by }}
              envelope: {{ field: data, with: {{ {} }} }}
      - name: composed
        match: {{ path: /composed, methods: [GET] }}
        auth: none
        rate_limit: none
        compose:
          user: {{ service: echo, path: /users/me }}
          orders: {{ service: echo, path: "/orders?limit=5" }}
          stock: {{ service: echo, path: /stock }}
"#,
        ENVELOPE_WITH.replace('"', "").replace(':', ": ")
    );
    let mut gateways = String::new();
    for gw in Gw::ALL {
        let tracing = gw.tracing().map_or(String::new(), |(sample, service)| {
            format!(
                "    tracing: {{ collector: 127.0.0.1:{otlp}, sample: {sample}, service_name: {service} }}\n"
            )
        });
        // Only the shaping gateway compresses: the others' rows compare policy, and the peer
        // shape's Envoy has no compressor either.
        let (extra, compression) = if gw == Gw::Shaped {
            (
                shaping.as_str(),
                "    compression: { algorithms: [gzip, zstd] }\n",
            )
        } else {
            ("", "")
        };
        // Route names are unique across gateways: every gateway but `edge` prefixes its own.
        let routes = if gw == Gw::Edge {
            routes.to_string()
        } else {
            routes.replace("name: ", &format!("name: {}-", gw.name()))
        };
        gateways.push_str(&format!(
            "  {name}:\n    listeners: [{{ name: {name}-http, port: {port} }}]\n    access_log: off\n\
             {compression}{tracing}    routes:\n{routes}{extra}",
            name = gw.name(),
            port = ports.http(gw),
        ));
    }
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
  counted_by: {counted_by}
transforms:
  service: {{ address: 127.0.0.1:{transform}, timeout: 1s }}
gateways:
{gateways}"#
    )
}

/// The peer shape, as Envoy Gateway builds it: a static Envoy whose own `jwt_authn` filter
/// verifies the bench's HS256 tokens (issuer, signature, expiry; the subject to `x-user-id` and
/// the payload to dynamic metadata) and whose rate-limit filter makes one RLS call to the same
/// ratelimit-service, with the plan rule's descriptor built from the payload. `/full` needs the
/// token; `/plain` is open. No ext_authz, no compressor, access log off, as in `edge`.
fn peer_bootstrap(ports: &Ports, admin: u16) -> String {
    use base64::Engine as _;
    use proto::ratelimit::{key, DOMAIN};
    use serde_json::json;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tests::authz::SECRET);
    let jwks = json!({ "keys": [{ "kty": "oct", "alg": "HS256", "k": k }] }).to_string();
    let socket =
        |port: u16| json!({ "socket_address": { "address": "127.0.0.1", "port_value": port } });
    let claim = |descriptor: &str, claim: &str| {
        json!({ "metadata": {
            "descriptor_key": descriptor,
            "metadata_key": {
                "key": "envoy.filters.http.jwt_authn",
                "path": [{ "key": "jwt_payload" }, { "key": claim }]
            },
            "source": "DYNAMIC"
        } })
    };
    let generic = |descriptor: &str, value: &str| json!({ "generic_key": { "descriptor_key": descriptor, "descriptor_value": value } });
    let static_cluster = |name: &str, port: u16| {
        json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [
                { "endpoint": { "address": socket(port) } }
            ] }] }
        })
    };
    let mut rls = static_cluster("ratelimit", ports.rls);
    rls["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http2_protocol_options": {} }
        }
    });
    json!({
        "node": { "id": "peer", "cluster": "peer" },
        "admin": { "address": socket(admin) },
        "static_resources": {
            "listeners": [{
                "name": "peer-http",
                "address": socket(ports.peer),
                "filter_chains": [{ "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "peer",
                        "route_config": { "virtual_hosts": [{
                            "name": "all",
                            "domains": ["*"],
                            "routes": [
                                {
                                    "match": { "prefix": "/full" },
                                    "route": {
                                        "cluster": "echo",
                                        "rate_limits": [{ "actions": [
                                            generic(key::RULE, &translate::ratelimit::rule_id("full", 0)),
                                            claim(key::CLIENT, "sub"),
                                            generic(key::PROVIDER, "main"),
                                            claim(key::PLAN, "plan"),
                                        ] }]
                                    }
                                },
                                { "match": { "prefix": "/plain" }, "route": { "cluster": "echo" } }
                            ]
                        }] },
                        "http_filters": [
                            {
                                "name": "envoy.filters.http.jwt_authn",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                                    "providers": { "main": {
                                        "issuer": ISSUER,
                                        "local_jwks": { "inline_string": jwks },
                                        "payload_in_metadata": "jwt_payload",
                                        "claim_to_headers": [{ "header_name": "x-user-id", "claim_name": "sub" }]
                                    } },
                                    "rules": [{ "match": { "prefix": "/full" }, "requires": { "provider_name": "main" } }]
                                }
                            },
                            {
                                "name": "envoy.filters.http.ratelimit",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                                    "domain": DOMAIN,
                                    "timeout": "1s",
                                    "failure_mode_deny": true,
                                    "rate_limit_service": {
                                        "transport_api_version": "V3",
                                        "grpc_service": { "envoy_grpc": { "cluster_name": "ratelimit" } }
                                    }
                                }
                            },
                            {
                                "name": "envoy.filters.http.router",
                                "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
                            }
                        ]
                    }
                }] }]
            }],
            "clusters": [static_cluster("echo", ports.echo), rls]
        }
    })
    .to_string()
}

/// The ports of one run.
#[derive(Clone, Copy)]
struct Ports {
    echo: u16,
    ws: u16,
    /// The listener of each gateway, in [`Gw::ALL`]'s order.
    http: [u16; 4],
    /// The peer shape's listener.
    peer: u16,
    authz: u16,
    rls: u16,
    transform: u16,
    /// The OTLP collector the tracing gateways export to.
    otlp: u16,
}

impl Ports {
    fn http(&self, gw: Gw) -> u16 {
        if gw == Gw::Peer {
            return self.peer;
        }
        let i = Gw::ALL
            .iter()
            .position(|&g| g == gw)
            .expect("every gateway");
        self.http[i]
    }
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
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("gateway-bench-")
        .tempdir()
        .context("temp dir")?;
    // The tracing gateways' collector, on a thread of its own so that receiving spans does not
    // delay the load generator's requests (its CPU is reported apart from the generator's).
    let collector = CollectorThread::start()?;
    let ports = Ports {
        echo: free_port(),
        ws: free_port(),
        http: [free_port(), free_port(), free_port(), free_port()],
        peer: free_port(),
        authz: free_port(),
        rls: free_port(),
        transform: free_port(),
        otlp: collector.collector.addr().port(),
    };
    let (echo_port, authz_port, rls_port) = (ports.echo, ports.authz, ports.rls);

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
        &config(
            &ports,
            args.query_keys.then_some(keys_file.as_path()),
            &args.counted_by,
        ),
    )
    .await;
    let xds = stack.xds.grpc_addr();
    let mut authz = AuthzService::start_on("authz-bench", &xds, authz_port, stack.dir()).await;
    let mut rls = RateLimitService::start_on("rls-memory", &xds, None, rls_port, stack.dir()).await;
    let redis = RedisServer::start(stack.dir()).await;
    let mut transform =
        TransformService::start_on("transform-bench", &xds, ports.transform, stack.dir(), true)
            .await;
    // One Envoy per gateway, all fed by the same xds-server; only the scenario's is busy.
    let mut others: Vec<(Gw, Envoy)> = Vec::new();
    for gw in [Gw::Shaped, Gw::Traced, Gw::Unsampled] {
        let envoy = Envoy::start(&stack.xds, gw.name(), XdsMode::Sotw, stack.dir()).await;
        others.push((gw, envoy));
    }
    stack.wait_converged().await;
    for (gw, envoy) in &others {
        wait_for(
            &format!("the {} Envoy to ACK everything", gw.name()),
            tests::CONVERGE_TIMEOUT,
            async || {
                stack
                    .xds
                    .client(envoy.node_id())
                    .await
                    .is_some_and(|c| tests::stack::client_converged(&c))
            },
        )
        .await;
    }
    // The peer shape's Envoy: no xDS, the same echo upstream and ratelimit-service.
    let peer_admin = free_port();
    let peer = Envoy::start_with_bootstrap(
        "peer",
        &peer_bootstrap(&ports, peer_admin),
        peer_admin,
        stack.dir(),
    )
    .await;
    others.push((Gw::Peer, peer));
    let mut envoy_pids: Vec<(Gw, Option<u32>)> = vec![(Gw::Edge, stack.envoy.proc().pid())];
    for (gw, envoy) in &mut others {
        envoy_pids.push((*gw, envoy.proc().pid()));
    }
    let envoy_of = |gw: Gw| -> &Envoy {
        others
            .iter()
            .find(|(g, _)| *g == gw)
            .map_or(&stack.envoy, |(_, e)| e)
    };

    let auth: Vec<HeaderValue> = (0..args.clients)
        .map(|i| {
            HeaderValue::from_str(&bearer(&token(&format!("bench-client-{i}"), "bench")))
                .context("token as a header value")
        })
        .collect::<anyhow::Result<_>>()?;
    let target = |s: Scenario| Target {
        addr: SocketAddr::from(([127, 0, 0, 1], ports.http(s.gateway()))),
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
            .body(&args)
            .map(|(bytes, accept)| (HeaderValue::from(bytes), accept)),
        expect: s.expect(),
        extra: if s.realistic_headers() {
            REALISTIC_HEADERS
        } else {
            &[]
        },
    };
    let client = |s: Scenario| HttpClient::new(ports.http(s.gateway()));
    let watch = Watch {
        echo: HttpClient::new(echo_port),
        collector: &collector.collector,
        traced: envoy_of(Gw::Traced),
    };

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "gateway-bench: Envoy (--concurrency 1, one worker) → echo-upstream, {cpus} CPUs shared by \
         Envoy, echo-upstream, authz-service, ratelimit-service, Redis, transform-service and this \
         load generator (one thread, and one for the OTLP collector)"
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
    println!(
        "  one Envoy per gateway, every gateway with the same routes: `shaped` adds a `cache` route, a \
         `transform.response.json` route ({} bytes of JSON) and a three-part `compose` route; `traced` and \
         `unsampled` trace at 100% and 0% to an OTLP collector in this process; the other rows are `edge`'s",
        args.transform_bytes
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
        envoy: envoy_pids[0].1,
        echo: echo.pid(),
        authz: authz.proc().pid(),
        rls: rls.proc().pid(),
        redis: redis_pid(redis.port()),
        transform: transform.proc().pid(),
        collector: collector.thread,
    };
    let envoy_pid = |gw: Gw| {
        envoy_pids
            .iter()
            .find(|(g, _)| *g == gw)
            .and_then(|(_, pid)| *pid)
    };
    let mut store = Store::Memory;
    let mut rows: Vec<Row> = Scenario::REPORT_ORDER
        .iter()
        .map(|&s| Row::new(s))
        .collect();

    // Saturation first, for every scenario: the fixed rate is derived from the slowest one.
    for scenario in Scenario::SATURATION_ORDER
        .into_iter()
        .filter(|s| s.selected(&args))
    {
        if let Some(want) = scenario.store().filter(|&w| w != store) {
            switch_store(
                &mut rls,
                &mut authz,
                want,
                &xds,
                &redis.url(),
                &ports,
                stack.dir(),
            )
            .await;
            pids.rls = rls.proc().pid();
            pids.authz = authz.proc().pid();
            store = want;
        }
        fresh_counters(scenario, redis.port())?;
        check_route(&client(scenario), scenario, &auth[0]).await?;
        eprintln!("gateway-bench: {} — saturating", scenario.label());
        pids.envoy = envoy_pid(scenario.gateway());
        let envoy = envoy_of(scenario.gateway());
        let before = envoy_counters(envoy).await;
        let seen = watch.before(scenario).await?;
        let saturation = saturate(&target(scenario), &args, &pids).await?;
        ensure_clean(scenario, "saturation", &saturation.tally)?;
        let note = watch.after(scenario, seen, saturation.tally.ok).await?;
        let row = row_of(&mut rows, scenario);
        row.add_counters(&before, &envoy_counters(envoy).await);
        row.saturation = Some(saturation);
        row.notes.extend(note);
    }
    // The full gateway's; without those rows (`--rows`), the slowest row's.
    let saturating = |full: bool| {
        rows.iter()
            .filter(|r| r.scenario.full() || !full)
            .filter_map(|r| r.saturation.as_ref().map(|s| s.rps))
            .fold(f64::INFINITY, f64::min)
    };
    let slowest = Some(saturating(true))
        .filter(|r| r.is_finite())
        .unwrap_or_else(|| saturating(false));
    let rate = args.rate.unwrap_or((slowest / 2.0).max(1.0));

    for scenario in Scenario::PACED_ORDER
        .into_iter()
        .filter(|s| s.selected(&args))
    {
        if let Some(want) = scenario.store().filter(|&w| w != store) {
            switch_store(
                &mut rls,
                &mut authz,
                want,
                &xds,
                &redis.url(),
                &ports,
                stack.dir(),
            )
            .await;
            store = want;
        }
        fresh_counters(scenario, redis.port())?;
        check_route(&client(scenario), scenario, &auth[0]).await?;
        eprintln!(
            "gateway-bench: {} — {rate:.0} req/s for {} s",
            scenario.label(),
            args.rate_seconds
        );
        let envoy = envoy_of(scenario.gateway());
        let before = envoy_counters(envoy).await;
        let seen = watch.before(scenario).await?;
        let paced = paced(&target(scenario), rate, &args).await?;
        ensure_clean(scenario, "fixed-rate", &paced.tally)?;
        let note = watch.after(scenario, seen, paced.tally.ok).await?;
        let row = row_of(&mut rows, scenario);
        row.add_counters(&before, &envoy_counters(envoy).await);
        row.paced = Some(paced);
        row.notes.extend(note);
        if scenario == Scenario::FullRedis {
            // Proof that the Redis rows counted in Redis (counters live for about one window).
            let keys = raw_command(redis.port(), "DBSIZE").context("DBSIZE")?;
            let keys: u64 = keys.trim().trim_start_matches(':').parse().unwrap_or(0);
            anyhow::ensure!(keys > 0, "Redis holds no counters after the Redis run");
        }
    }
    let ws_pids = [
        ("envoy", envoy_pids[0].1),
        ("echo", ws_echo.pid()),
        ("authz", authz.proc().pid()),
        ("loadgen", Some(std::process::id())),
    ];
    let mut ws_rows = Vec::new();
    let ws_selected = args.rows.is_empty() || args.rows.iter().any(|r| r == "ws");
    for ws in WsScenario::ORDER.into_iter().filter(|_| ws_selected) {
        let port = if ws == WsScenario::Direct {
            ports.ws
        } else {
            ports.http(Gw::Edge)
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
    // The sampled-out gateway never exported a span, over the whole run.
    let unsampled = watch.collector.count(UNSAMPLED_SERVICE);
    anyhow::ensure!(
        unsampled == 0,
        "the `sample: 0%` gateway exported {unsampled} spans"
    );
    // Everything stops here, before the report, so a failing run leaves no process behind.
    drop(watch);
    drop(others);
    drop((
        stack, rls, authz, redis, transform, echo, ws_echo, collector,
    ));

    let rows: Vec<Finished> = rows.into_iter().filter_map(Row::finish).collect();
    report(&rows, &args);
    ws_report(&ws_rows, &args);
    println!();
    println!("(whole run: {:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// The sampled gateway's `service_name`, as its spans name it.
const TRACED_SERVICE: &str = "bench-traced";
/// The sampled-out gateway's.
const UNSAMPLED_SERVICE: &str = "bench-unsampled";

/// What a run proves beyond its answers: that cache hits never reached the upstream, that the
/// traced gateway exported spans for its requests and the sampled-out one none.
struct Watch<'a> {
    /// The echo upstream, asked directly: its `x-echo-hit` counts every request it received.
    echo: HttpClient,
    collector: &'a tests::otlp::Collector,
    /// The `sample: 100%` gateway's Envoy, whose `spans_sent` the collector must catch up with.
    traced: &'a Envoy,
}

impl Watch<'_> {
    /// The count the scenario's check compares against after its run.
    async fn before(&self, scenario: Scenario) -> anyhow::Result<u64> {
        Ok(match scenario {
            Scenario::Cached => self.echo_hits().await?,
            Scenario::Traced => self.collector.count(TRACED_SERVICE),
            _ => 0,
        })
    }

    /// Fails the run when the scenario's side effects are not what its row claims; returns a
    /// line for the report.
    async fn after(
        &self,
        scenario: Scenario,
        before: u64,
        answers: u64,
    ) -> anyhow::Result<Option<String>> {
        match scenario {
            Scenario::Cached => {
                // This probe is the one request the upstream gets between the two counts.
                let reached = self.echo_hits().await?.saturating_sub(before + 1);
                anyhow::ensure!(
                    reached * 10_000 <= answers * MISSES_PER_10K,
                    "cache hit: {reached} of {answers} requests reached the echo upstream"
                );
                Ok(Some(format!(
                    "{answers} answers; the upstream received {reached} of them (cache refills), \
                     every other one a hit with `age`"
                )))
            }
            Scenario::Traced => {
                // Envoy exports in batches (every 5 spans or 5 s): wait until everything it says
                // it sent has arrived, and that is at least one span per answer.
                let got = wait_for(
                    "the collector to receive every span Envoy sent",
                    Duration::from_secs(30),
                    async || {
                        let sent = self
                            .traced
                            .stat("tracing.opentelemetry.spans_sent")
                            .await
                            .unwrap_or(0);
                        let got = self.collector.count(TRACED_SERVICE);
                        let new = got.saturating_sub(before);
                        if got >= sent && new >= answers {
                            Ok(new)
                        } else {
                            Err(format!(
                                "{new} spans for {answers} answers; Envoy sent {sent}, collector has {got}"
                            ))
                        }
                    },
                )
                .await;
                Ok(Some(format!(
                    "{answers} answers, {got} spans received ({:.1} per answer)",
                    got as f64 / answers.max(1) as f64
                )))
            }
            Scenario::Unsampled => {
                let got = self.collector.count(UNSAMPLED_SERVICE);
                anyhow::ensure!(got == 0, "the `sample: 0%` gateway exported {got} spans");
                Ok(Some(format!("{answers} answers, no span exported")))
            }
            _ => Ok(None),
        }
    }

    /// The echo upstream's request count, including this request.
    async fn echo_hits(&self) -> anyhow::Result<u64> {
        let r = self
            .echo
            .get("/count")
            .send()
            .await
            .context("ask the echo upstream")?;
        r.header(tests::echo::HIT_HEADER)
            .and_then(|h| h.parse().ok())
            .context("the echo upstream's x-echo-hit")
    }
}

/// [`tests::otlp::Collector`] served by a runtime on its own thread; stops when dropped.
struct CollectorThread {
    collector: tests::otlp::Collector,
    /// `(pid, tid)` of the thread, for its CPU time.
    thread: Option<(u32, u32)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl CollectorThread {
    fn start() -> anyhow::Result<CollectorThread> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("otlp-collector".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let collector = tests::otlp::Collector::start_counting().await;
                    let _ = ready_tx.send(Ok((collector, thread_id())));
                    let _ = stop_rx.await;
                });
            })
            .context("start the collector's thread")?;
        let (collector, thread) = ready_rx
            .recv()
            .context("the collector's thread ended")?
            .map_err(anyhow::Error::msg)?;
        Ok(CollectorThread {
            collector,
            thread: thread.map(|tid| (std::process::id(), tid)),
            stop: Some(stop),
            handle: Some(handle),
        })
    }
}

impl Drop for CollectorThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The calling thread's id, from `/proc/thread-self` (Linux; `None` elsewhere).
fn thread_id() -> Option<u32> {
    std::fs::read_link("/proc/thread-self")
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// Fails the run on the first non-200 answer or transport error: figures from a run in which
/// some requests were turned away (or skipped their policy) would compare different work.
fn ensure_clean(scenario: Scenario, phase: &str, tally: &Tally) -> anyhow::Result<()> {
    if tally.misses > 0 {
        eprintln!(
            "gateway-bench: {} ({phase} run): {} of {} answers were cache misses",
            scenario.label(),
            tally.misses,
            tally.ok
        );
    }
    if tally.bad() > 0 || tally.misses * 10_000 > tally.ok * MISSES_PER_10K {
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

/// Empties Redis before a row on the Redis store: the full gateway and the peer shape count on
/// the same keys (rule, client, provider), so the row after another would find the first's
/// sub-buckets still in the window and pay Redis for reading them. (So each Redis row starts
/// from fresh counters, a plan counter busy for a whole window holds more sub-buckets and
/// costs Redis more per decision.)
fn fresh_counters(scenario: Scenario, redis_port: u16) -> anyhow::Result<()> {
    if scenario.store() == Some(Store::Redis) {
        raw_command(redis_port, "FLUSHALL").context("FLUSHALL")?;
    }
    Ok(())
}

/// Replaces the running ratelimit-service and authz-service with ones on `store` (authz-service
/// counts the plan under `counted_by: authz-service`), on the same ports (the ones gateway.yaml
/// names), so Envoy and the upstream stay exactly as they were.
async fn switch_store(
    rls: &mut RateLimitService,
    authz: &mut AuthzService,
    store: Store,
    xds: &str,
    redis_url: &str,
    ports: &Ports,
    dir: &std::path::Path,
) {
    eprintln!("gateway-bench: ratelimit-service and authz-service now on the {store:?} store");
    // Stop the old ones first: the new ones need their ports.
    rls.proc().kill();
    authz.proc().kill();
    let (name, redis) = match store {
        Store::Memory => ("memory", None),
        Store::Redis => ("redis", Some(redis_url)),
    };
    *rls = RateLimitService::start_on(&format!("rls-{name}"), xds, redis, ports.rls, dir).await;
    let env: Vec<(String, String)> = redis
        .map(|url| ("AUTHZ_REDIS".to_string(), url.to_string()))
        .into_iter()
        .collect();
    *authz =
        AuthzService::start_with_env(&format!("authz-{name}"), xds, ports.authz, &env, dir).await;
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
    let untouched = identity.is_none() && limit.is_none();
    let fine = match scenario {
        Scenario::Baseline
        | Scenario::BaselineAgain
        | Scenario::BaselineHeaders
        | Scenario::Json
        | Scenario::Gzip
        | Scenario::Zstd
        | Scenario::ShapedPlain
        | Scenario::ShapedJson => untouched,
        Scenario::Jwt => identity == Some("bench-client-0") && limit.is_none(),
        Scenario::FullMemory | Scenario::FullRedis | Scenario::FullHeaders => {
            identity == Some("bench-client-0") && limit == want_limit
        }
        Scenario::Peer | Scenario::PeerRedis | Scenario::PeerHeaders => {
            // jwt_authn verified the token (and refuses a request without one); the limiter
            // answered.
            let anonymous = client
                .get(scenario.path())
                .send()
                .await
                .context("GET without a token")?;
            reply.upstream_header("x-user-id") == Some("bench-client-0")
                && limit == want_limit
                && anonymous.status == 401
        }
        Scenario::Cached => {
            // The first answer filled the cache (or was a hit already): the next one is a
            // replay of it, the upstream's request count unchanged.
            let again = client
                .get(scenario.path())
                .send()
                .await
                .context("GET /cached")?;
            let hit = |r: &tests::Reply| r.header(tests::echo::HIT_HEADER).map(str::to_string);
            untouched && again.header("age").is_some() && hit(&again) == hit(&reply)
        }
        Scenario::Transformed => {
            // Every edit of the route, on the echo's description of the request.
            let j = reply
                .json
                .as_ref()
                .context("the transformed answer is JSON")?;
            let data = &j["data"];
            j["api_version"] == "bench"
                && j["request_id"].is_string()
                && data["served_by"] == "echo"
                && data["meta"]["source"] == "gateway"
                && data["method"] == "GET"
                && data.get("upstream").is_none()
                && data.get("headers").is_none()
                && data.get("query").is_none()
        }
        Scenario::Composed => {
            let j = reply.json.as_ref().context("the composed answer is JSON")?;
            reply.header("x-compose-complete") == Some("true")
                && j["user"]["path"] == "/users/me"
                && j["orders"]["path"] == "/orders"
                && j["stock"]["path"] == "/stock"
                && j.get("errors").is_none()
        }
        // The upstream sees a trace from the gateway: sampled at 100%, not at 0%.
        Scenario::Traced => reply
            .upstream_header("traceparent")
            .is_some_and(|t| t.starts_with("00-") && t.ends_with("-01")),
        Scenario::Unsampled => reply
            .upstream_header("traceparent")
            .is_none_or(|t| t.ends_with("-00")),
    };
    anyhow::ensure!(
        fine,
        "{} does not do what its row measures: {} {:?} {}",
        scenario.path(),
        reply.status,
        reply.headers,
        reply.body.chars().take(600).collect::<String>()
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
        for (name, value) in self.target.extra {
            req = req.header(*name, *value);
        }
        if let Some((pad, accept)) = &self.target.body {
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
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if status == 200 {
            self.target.expect.check(&parts.headers, &body)?;
        }
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
    /// The Envoy of the scenario's gateway.
    envoy: Option<u32>,
    echo: Option<u32>,
    authz: Option<u32>,
    rls: Option<u32>,
    redis: Option<u32>,
    transform: Option<u32>,
    /// `(pid, tid)` of the OTLP collector's thread in this process.
    collector: Option<(u32, u32)>,
}

impl Pids {
    /// User + system CPU time so far of each process (and of this one, without the collector's
    /// thread, which is listed apart), where readable.
    fn cpu(&self) -> Vec<(&'static str, Option<Duration>)> {
        let collector = self
            .collector
            .and_then(|(pid, tid)| cpu_time_of(&format!("/proc/{pid}/task/{tid}/stat")));
        let loadgen = cpu_time(std::process::id())
            .map(|all| all.saturating_sub(collector.unwrap_or_default()));
        vec![
            ("envoy", self.envoy.and_then(cpu_time)),
            ("echo", self.echo.and_then(cpu_time)),
            ("authz", self.authz.and_then(cpu_time)),
            ("ratelimit", self.rls.and_then(cpu_time)),
            ("redis", self.redis.and_then(cpu_time)),
            ("transform", self.transform.and_then(cpu_time)),
            ("collector", collector),
            ("loadgen", loadgen),
        ]
    }
}

/// Envoy's counters of the ext_authz filter (`http.<listener>.ext_authz.*`) and the rate-limit
/// filter (`cluster.<upstream>.ratelimit.*`), named from the filter on (`ext_authz.ok`): Envoy's
/// own count of the checks it made and how they ended. (Its latency timers are not shown:
/// `downstream_rq_time` and `upstream_rq_time` record whole milliseconds, too coarse for what
/// this benchmark compares.)
async fn envoy_counters(envoy: &Envoy) -> HashMap<String, u64> {
    let mut counters = HashMap::new();
    for line in envoy.stats().await.lines() {
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
        // Each row against the baseline with the same headers.
        let b = rows
            .iter()
            .find(|x| x.scenario == r.scenario.baseline())
            .map_or(b, |x| x.paced.latency);
        let verdict = if r.scenario.full() {
            match (latency_met(rows, r) == Some(true), overloaded) {
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

    peer_report(rows);

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
        .filter_map(|r| {
            let base = rows.iter().find(|x| x.scenario == r.scenario.baseline())?;
            let (l, b) = (r.paced.latency, base.paced.latency);
            Some(format!(
                "{} {:.2}× throughput, {} ms p50 / {} ms p99 added",
                r.scenario.label(),
                r.saturation.rps / base.saturation.rps,
                added_ms(l.p50, b.p50),
                added_ms(l.p99, b.p99)
            ))
        })
        .collect();
    let met = rows
        .iter()
        .filter(|r| r.scenario.full())
        .all(|r| latency_met(rows, r) == Some(true));
    if full.is_empty() {
        println!("summary: no full-gateway row in this run (--rows){again}");
    } else {
        println!(
            "summary: full gateway vs plain Envoy (with the same headers) at {rate:.0} req/s: {}; \
             target (added p50 < {} ms and p99 < {} ms) {}{again}",
            full.join("; "),
            TARGET_ADDED_P50.as_millis(),
            TARGET_ADDED_P99.as_millis(),
            if met { "MET" } else { "MISSED" },
        );
    }
    let json = rows.iter().find(|r| r.scenario == Scenario::Json);
    let envoy_cpu = |r: &Finished| cpu_us(r, "envoy");
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
    shaping_report(rows, base, args);
}

/// Whether `r`'s fixed-rate run adds less than the targets to the baseline with the same
/// headers; `None` without that baseline row.
fn latency_met(rows: &[Finished], r: &Finished) -> Option<bool> {
    added_latency(rows, r).map(|(p50, p99)| p50 < TARGET_ADDED_P50 && p99 < TARGET_ADDED_P99)
}

/// What `r`'s fixed-rate run adds at p50 and p99 to the baseline with the same headers.
fn added_latency(rows: &[Finished], r: &Finished) -> Option<(Duration, Duration)> {
    let base = rows.iter().find(|x| x.scenario == r.scenario.baseline())?;
    let (l, b) = (r.paced.latency, base.paced.latency);
    Some((l.p50.saturating_sub(b.p50), l.p99.saturating_sub(b.p99)))
}

/// CPU per request of the processes that serve the gateway (Envoy, authz-service,
/// ratelimit-service, Redis): the echo upstream and the load generator are the same for every
/// row and are left out.
const GATEWAY_PROCESSES: [&str; 4] = ["envoy", "authz", "ratelimit", "redis"];

/// A process's CPU per request in a row's saturation run, µs (0 when idle or unread).
fn cpu_us(r: &Finished, name: &str) -> f64 {
    r.saturation
        .cpu_per_request
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0.0, |(_, d)| d.as_secs_f64() * 1e6)
}

/// Each full-gateway row against the peer shape on the same store and headers, and against
/// plain Envoy at the fixed rate: the issue's targets, each with its verdict.
fn peer_report(rows: &[Finished]) {
    let find = |s: Scenario| rows.iter().find(|r| r.scenario == s);
    let gateway_cpu = |r: &Finished| GATEWAY_PROCESSES.iter().map(|p| cpu_us(r, p)).sum::<f64>();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let compared: Vec<(&Finished, &Finished)> = rows
        .iter()
        .filter_map(|r| Some((r, find(r.scenario.peer()?)?)))
        .collect();
    if compared.is_empty() {
        return;
    }
    println!(
        "Against the peer shape (Envoy's jwt_authn + one RLS call to ratelimit-service, same store \
         and headers), CPU µs per request of {} (echo and load generator left out)",
        GATEWAY_PROCESSES.join(" + ")
    );
    println!(
        "{:<27} {:>8} {:>8} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}  targets",
        "row", "ours", "peer", "ratio", "req/s ×", "authz", "ratelimit", "added p50", "added p99"
    );
    for (ours, peer) in compared {
        let ratio = gateway_cpu(ours) / gateway_cpu(peer).max(f64::MIN_POSITIVE);
        let rps = ours.saturation.rps / peer.saturation.rps;
        let (authz, rls) = (cpu_us(ours, "authz"), cpu_us(ours, "ratelimit"));
        let rls_target = if ours.scenario == Scenario::FullRedis {
            40.0
        } else {
            25.0
        };
        let added = added_latency(rows, ours);
        let targets = [
            format!("CPU ≤ 1.0× peer {}", verdict(ratio <= 1.0)),
            format!("req/s ≥ peer {}", verdict(rps >= 1.0)),
            format!("authz ≤ 20 µs {}", verdict(authz <= 20.0)),
            // Under `counted_by: authz-service` Envoy never calls ratelimit-service on this
            // row: authz-service's figure then holds both jobs, judged on both budgets.
            if rls < 0.5 {
                format!(
                    "no ratelimit calls; authz with the limit ≤ {:.0} µs {}",
                    20.0 + rls_target,
                    verdict(authz <= 20.0 + rls_target)
                )
            } else {
                format!(
                    "ratelimit ≤ {rls_target:.0} µs {}",
                    verdict(rls <= rls_target)
                )
            },
            latency_met(rows, ours).map_or("no baseline row".to_string(), |ok| {
                format!(
                    "added p50 < {} ms, p99 < {} ms {}",
                    TARGET_ADDED_P50.as_millis(),
                    TARGET_ADDED_P99.as_millis(),
                    verdict(ok)
                )
            }),
        ];
        let (a50, a99) = added.map_or(("-".into(), "-".into()), |(p50, p99)| (ms(p50), ms(p99)));
        println!(
            "{:<27} {:>8.0} {:>8.0} {:>6.2}× {:>9.2}× {:>9.0} {:>9.0} {:>9} {:>9}  {}",
            ours.scenario.label(),
            gateway_cpu(ours),
            gateway_cpu(peer),
            ratio,
            rps,
            authz,
            rls,
            a50,
            a99,
            targets.join("; ")
        );
    }
    println!();
}

/// Summary lines of the cache, transform, compose and tracing rows, and what their checks found.
fn shaping_report(rows: &[Finished], base: &Finished, args: &Args) {
    let find = |s: Scenario| rows.iter().find(|r| r.scenario == s);
    let cpu = cpu_us;
    let vs = |r: &Finished, of: &Finished| r.saturation.rps / of.saturation.rps;
    let b99 = base.paced.latency.p99;
    let added99 = |r: &Finished| added_ms(r.paced.latency.p99, b99);
    let envoy = |r: &Finished| cpu(r, "envoy");
    if let Some(shaped) = find(Scenario::ShapedPlain) {
        println!(
            "shaping gateway (cache, ext_proc and compose filters in its chain, off on its plain route): \
             plain route {:.2}× plain Envoy's throughput, Envoy {:.0} µs per request (edge: {:.0} µs)",
            vs(shaped, base),
            envoy(shaped),
            envoy(base)
        );
        if let Some(c) = find(Scenario::Cached) {
            println!(
                "cache hit: {:.2}× plain Envoy's throughput ({:.2}× its own gateway's plain route), Envoy \
                 {:.0} µs per request ({:+.0} µs on the baseline), echo {:.0} µs, {} ms p99 added at the fixed rate",
                vs(c, base),
                vs(c, shaped),
                envoy(c),
                envoy(c) - envoy(base),
                cpu(c, "echo"),
                added99(c)
            );
        }
    }
    if let (Some(t), Some(j)) = (find(Scenario::Transformed), find(Scenario::ShapedJson)) {
        println!(
            "JSON transform ({} bytes asked, remove + set + rename + envelope): {:.2}× plain Envoy's \
             throughput, {:.2}× the same answer untransformed; Envoy {:.0} µs per request ({:+.0} µs on \
             the untransformed), transform-service {:.0} µs, {} ms p99 added at the fixed rate",
            args.transform_bytes,
            vs(t, base),
            vs(t, j),
            envoy(t),
            envoy(t) - envoy(j),
            cpu(t, "transform"),
            added99(t)
        );
    }
    if let Some(c) = find(Scenario::Composed) {
        println!(
            "compose (3 parts on the echo upstream): {:.2}× plain Envoy's throughput; Envoy {:.0} µs per \
             request ({:+.0} µs on the baseline), echo {:.0} µs (baseline {:.0}), {} ms p99 added at the fixed rate",
            vs(c, base),
            envoy(c),
            envoy(c) - envoy(base),
            cpu(c, "echo"),
            cpu(base, "echo"),
            added99(c)
        );
    }
    let tracing: Vec<String> = [Scenario::Traced, Scenario::Unsampled]
        .into_iter()
        .filter_map(find)
        .map(|r| {
            format!(
                "{} {:.2}× its throughput, Envoy {:+.0} µs per request, collector {:.0} µs, {} ms p99 added",
                r.scenario.label().trim_start_matches("tracing, "),
                vs(r, base),
                envoy(r) - envoy(base),
                cpu(r, "collector"),
                added99(r)
            )
        })
        .collect();
    if !tracing.is_empty() {
        println!(
            "tracing vs the same routes untraced (the baseline): {}",
            tracing.join("; ")
        );
    }
    let notes: Vec<&Finished> = rows.iter().filter(|r| !r.notes.is_empty()).collect();
    if !notes.is_empty() {
        println!();
        println!("Checks beyond the answers (saturation run; fixed-rate run)");
        for r in notes {
            println!("{:<27} {}", r.scenario.label(), r.notes.join("; "));
        }
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
