//! authz-bench: drives `Authorization/Check` over real gRPC (loopback TCP, HTTP/2) against an
//! in-process authz-service and prints throughput and latency per credential kind, with a
//! baseline (a Check on an unknown route: parse, look up, deny) measured in the same run so the
//! figures can be read as ratios on any machine.
//!
//! The server runs on its own Tokio runtime and threads; the load generator on another. Both
//! share the machine, as Envoy and authz-service usually do.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authz_service::apikey::{Edit, KeyRecord, KeysFile};
use authz_service::service::{AuthzService, Shared};
use clap::Parser;
use common::*;
use jsonwebtoken::Algorithm;
use proto::authz::{jwt_provider::Keys, AuthPolicy};
use proto::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use proto::pb::envoy::service::auth::v3::check_response::HttpResponse;
use proto::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::json;
use tonic::transport::Channel;

/// Counts heap allocations, so allocations per decision are measured rather than guessed. The
/// counters are two relaxed atomic adds per allocation; every scenario pays them equally.
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

#[derive(Debug, Parser)]
#[command(about = "Load generator for authz-service's ext_authz Check")]
struct Args {
    /// Requests per scenario (uncached scenarios pre-mint one distinct token per request).
    #[arg(long, env = "BENCH_REQUESTS", default_value_t = 4000)]
    requests: usize,
    /// Requests in flight.
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Tokio worker threads of the service.
    #[arg(long, env = "BENCH_SERVER_WORKERS", default_value_t = 2)]
    server_workers: usize,
    /// Rate of the open-loop phase (requests per second).
    #[arg(long, env = "BENCH_RATE", default_value_t = 1000)]
    rate: u64,
    /// Length of the open-loop phase.
    #[arg(long, env = "BENCH_RATE_SECS", default_value_t = 3)]
    rate_secs: u64,
}

struct Stats {
    n: usize,
    wall: Duration,
    lat: Vec<Duration>,
    server_mean: Duration,
}

impl Stats {
    fn pct(&self, p: f64) -> Duration {
        let i = ((self.lat.len() as f64 * p).ceil() as usize).clamp(1, self.lat.len()) - 1;
        self.lat[i]
    }
    fn rps(&self) -> f64 {
        self.n as f64 / self.wall.as_secs_f64()
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn policy(keys_file: Vec<u8>) -> AuthPolicy {
    let rsa = jwks(&[jwk("rsa2048.pem", Algorithm::RS256, Some("r1"), true)]);
    let ec = jwks(&[jwk("ec256.pem", Algorithm::ES256, Some("e1"), true)]);
    let mut p = AuthPolicy {
        jwt: vec![
            jwt_provider("rsa", &["RS256"], Keys::Jwks(rsa)),
            jwt_provider("ec", &["ES256"], Keys::Jwks(ec)),
            jwt_provider("hs", &["HS256"], Keys::SecretEnv(SECRET_VAR.into())),
        ],
        api_keys: vec![api_provider("keys", keys_file)],
        routes: vec![
            route("rsa", &["rsa"]),
            route("ec", &["ec"]),
            route("hs", &["hs"]),
            route("keys", &["keys"]),
        ],
        default_plan: "free".into(),
        plans: vec!["free".into(), "pro".into()],
        ..Default::default()
    };
    p.identity_headers = identity_headers(&p);
    // What xds-server ships for one API-key provider on `x-api-key` and `?api_key=`.
    p.credential_headers = vec!["x-api-key".into()];
    p.credential_query = vec!["api_key".into()];
    p
}

fn bearer(route: &str, t: &str) -> CheckRequest {
    check_request(
        Some(route),
        &[
            ("authorization", &format!("Bearer {t}")),
            ("x-request-id", "bench"),
        ],
        "/orders/42",
    )
}

/// `n` distinct tokens (a unique `jti` each), so no request hits the verified-token cache.
fn distinct(n: usize, mint: impl Fn(&serde_json::Value) -> String) -> Vec<String> {
    (0..n)
        .map(|i| mint(&claims(json!({"jti": format!("bench-{i}"), "plan": "pro"}))))
        .collect()
}

async fn closed_loop(
    clients: &[AuthorizationClient<Channel>],
    reqs: Arc<Vec<CheckRequest>>,
    n: usize,
    concurrency: usize,
    shared: &Shared,
    expect_allow: bool,
) -> Stats {
    let before = server_time(shared);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let mut c = clients[w % clients.len()].clone();
        let reqs = reqs.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return lat;
                }
                let req = reqs[i % reqs.len()].clone();
                let t = Instant::now();
                let r = c.check(req).await.expect("Check answers").into_inner();
                lat.push(t.elapsed());
                let allowed = matches!(r.http_response, Some(HttpResponse::OkResponse(_)));
                assert_eq!(allowed, expect_allow, "unexpected decision: {r:?}");
            }
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await.expect("worker"));
    }
    let wall = start.elapsed();
    lat.sort();
    let (s0, c0) = before;
    let (s1, c1) = server_time(shared);
    Stats {
        n,
        wall,
        lat,
        server_mean: Duration::from_secs_f64((s1 - s0) / ((c1 - c0).max(1) as f64)),
    }
}

/// Open loop: one request every `1/rate` s whatever the answers. Latency is measured from the
/// actual send: Tokio's timer has millisecond granularity, so measuring from the scheduled time
/// would add up to a millisecond of timer lag to every sample.
async fn open_loop(
    client: &AuthorizationClient<Channel>,
    reqs: Arc<Vec<CheckRequest>>,
    rate: u64,
    secs: u64,
    shared: &Shared,
) -> Stats {
    let before = server_time(shared);
    let n = (rate * secs) as usize;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + period * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let mut c = client.clone();
        let req = reqs[i % reqs.len()].clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            c.check(req).await.expect("Check answers");
            sent.elapsed()
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.push(t.await.expect("request"));
    }
    let wall = start.elapsed();
    lat.sort();
    let (s0, c0) = before;
    let (s1, c1) = server_time(shared);
    Stats {
        n,
        wall,
        lat,
        server_mean: Duration::from_secs_f64((s1 - s0) / ((c1 - c0).max(1) as f64)),
    }
}

/// (sum of seconds, count) of the service's own Check histogram.
fn server_time(shared: &Shared) -> (f64, u64) {
    ["allow", "deny"].iter().fold((0.0, 0), |(s, c), d| {
        let h = shared.metrics.latency.with_label_values(&[d]);
        (s + h.get_sample_sum(), c + h.get_sample_count())
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::env::set_var(SECRET_VAR, std::str::from_utf8(SECRET)?);

    // The service, on its own runtime.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_workers)
        .thread_name("authz")
        .enable_all()
        .build()?;
    let mut file = KeysFile::default();
    let key = file.create(KeyRecord {
        id: "bench".into(),
        sha256: [0; 32],
        plan: "pro".into(),
        roles: vec![],
        scopes: vec![],
        tenant: String::new(),
        created: 0,
        expires: None,
        revoked: None,
    })?;
    let shared = Shared::new();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    {
        let shared = shared.clone();
        let p = policy(file.render().into_bytes());
        server_rt.spawn(async move {
            shared.policy.store(Some(Arc::new(compile(&p))));
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addr_tx.send(l.local_addr().expect("addr")).expect("send");
            let incoming = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
            tonic::transport::Server::builder()
                .add_service(authz_service::grpc::AuthzServer::new(AuthzService::new(
                    shared,
                )))
                .serve_with_incoming(incoming)
                .await
                .expect("serve");
        });
    }
    let addr = addr_rx.recv()?;

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    client_rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(AuthorizationClient::connect(format!("http://{addr}")).await?);
        }
        let n = args.requests;
        eprintln!("minting {n} distinct tokens per uncached scenario…");
        let rs = distinct(n, |c| token("rsa2048.pem", Algorithm::RS256, "r1", c));
        let es = distinct(n, |c| token("ec256.pem", Algorithm::ES256, "e1", c));
        let hs = distinct(n, |c| hs_token(Algorithm::HS256, c));
        let forged: Vec<String> = rs[..1]
            .iter()
            .map(|t| format!("{}AAAA", &t[..t.len() - 4]))
            .collect();

        let reqs = |v: Vec<CheckRequest>| Arc::new(v);
        let scenarios: Vec<(&str, Arc<Vec<CheckRequest>>, bool)> = vec![
            ("baseline (unknown route)", reqs(vec![check_request(Some("nope"), &[("x-request-id", "bench")], "/")]), false),
            ("api key", reqs(vec![check_request(Some("keys"), &[("x-api-key", &key), ("x-request-id", "bench")], "/orders/42")]), true),
            ("HS256 (uncached)", reqs(hs.iter().map(|t| bearer("hs", t)).collect()), true),
            ("RS256 (uncached)", reqs(rs.iter().map(|t| bearer("rsa", t)).collect()), true),
            ("RS256 (cached)", reqs(vec![bearer("rsa", &rs[0])]), true),
            ("ES256 (uncached)", reqs(es.iter().map(|t| bearer("ec", t)).collect()), true),
            ("denial (RS256 bad signature)", reqs(forged.iter().map(|t| bearer("rsa", t)).collect()), false),
        ];
        // Warm up connections and code paths.
        closed_loop(&clients, scenarios[1].1.clone(), 500, args.concurrency, &shared, true).await;

        println!(
            "authz-service Check over gRPC: {n} requests per scenario, {} in flight, {} service workers, {} CPUs",
            args.concurrency,
            args.server_workers,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "{:<30} {:>10} {:>10} {:>10} {:>14} {:>12}",
            "scenario", "req/s", "p50 µs", "p99 µs", "service µs", "p50 / base"
        );
        let mut base = None;
        for (name, r, allow) in &scenarios {
            let s = closed_loop(&clients, r.clone(), n, args.concurrency, &shared, *allow).await;
            let p50 = us(s.pct(0.50));
            let b = *base.get_or_insert(p50);
            println!(
                "{name:<30} {:>10.0} {:>10.0} {:>10.0} {:>14.1} {:>11.2}x",
                s.rps(),
                p50,
                us(s.pct(0.99)),
                us(s.server_mean),
                p50 / b
            );
        }

        println!("\nin-process decision (decide + the answer, kept for a cached token; no gRPC), one request at a time:");
        println!(
            "{:<30} {:>10} {:>10} {:>10} {:>12} {:>12}",
            "scenario", "req/s", "p50 µs", "p99 µs", "allocs/req", "bytes/req"
        );
        let svc = AuthzService::new(shared.clone());
        let direct_rs = distinct(n, |c| token("rsa2048.pem", Algorithm::RS256, "r1", c));
        let direct_es = distinct(n, |c| token("ec256.pem", Algorithm::ES256, "e1", c));
        let direct_hs = distinct(n, |c| hs_token(Algorithm::HS256, c));
        let direct: Vec<(&str, Vec<CheckRequest>)> = vec![
            ("baseline (unknown route)", scenarios[0].1.to_vec()),
            ("api key", scenarios[1].1.to_vec()),
            ("HS256 (uncached)", direct_hs.iter().map(|t| bearer("hs", t)).collect()),
            ("RS256 (uncached)", direct_rs.iter().map(|t| bearer("rsa", t)).collect()),
            ("RS256 (cached)", scenarios[4].1.to_vec()),
            ("ES256 (uncached)", direct_es.iter().map(|t| bearer("ec", t)).collect()),
            ("denial (RS256 bad signature)", scenarios[6].1.to_vec()),
        ];
        for (name, r) in direct {
            let mut lat = Vec::with_capacity(n);
            // Other threads (the idle gRPC server, Tokio's timers) allocate next to nothing
            // while this loop runs, so the region's count is the decisions' own.
            let region = stats_alloc::Region::new(GLOBAL);
            let start = Instant::now();
            for i in 0..n {
                let t = Instant::now();
                let (d, rid, limited) = svc.decide(&r[i % r.len()]).await;
                std::hint::black_box(authz_service::response::answer(&d, &rid, limited));
                lat.push(t.elapsed());
            }
            let wall = start.elapsed();
            let alloc = region.change();
            lat.sort();
            let s = Stats { n, wall, lat, server_mean: Duration::ZERO };
            println!(
                "{name:<30} {:>10.0} {:>10.1} {:>10.1} {:>12.1} {:>12.0}",
                s.rps(),
                us(s.pct(0.50)),
                us(s.pct(0.99)),
                alloc.allocations as f64 / n as f64,
                alloc.bytes_allocated as f64 / n as f64
            );
        }

        println!("\nopen loop at {} req/s for {} s:", args.rate, args.rate_secs);
        println!("{:<30} {:>10} {:>10} {:>10} {:>14}", "scenario", "req/s", "p50 µs", "p99 µs", "service µs");
        let m = (args.rate * args.rate_secs) as usize;
        let rs_open = distinct(m, |c| token("rsa2048.pem", Algorithm::RS256, "r1", c));
        let open: Vec<(&str, Arc<Vec<CheckRequest>>)> = vec![
            ("api key", scenarios[1].1.clone()),
            ("RS256 (uncached)", reqs(rs_open.iter().map(|t| bearer("rsa", t)).collect())),
        ];
        for (name, r) in open {
            let s = open_loop(&clients[0], r, args.rate, args.rate_secs, &shared).await;
            println!(
                "{name:<30} {:>10.0} {:>10.0} {:>10.0} {:>14.1}",
                s.rps(),
                us(s.pct(0.50)),
                us(s.pct(0.99)),
                us(s.server_mean)
            );
        }
        anyhow::Ok(())
    })?;
    server_rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
