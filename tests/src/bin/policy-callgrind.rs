//! policy-callgrind: instructions per call of authz-service and ratelimit-service, counted by
//! valgrind's callgrind: a figure that does not move with the machine's load, beside
//! gateway-bench's CPU times.
//!
//! The whole gateway runs as in the end-to-end tests (xds-server, a real Envoy, an echo
//! upstream), with both services under `valgrind --tool=callgrind`. Every request to `/full`
//! carries a cached HS256 token and passes a plan limit, so each one is one ext_authz Check and
//! one RLS call, as Envoy sends them (or, under `rate_limits.counted_by: authz-service`, one
//! Check that also counts the limit). After a warm-up, the counters of both services are zeroed,
//! `--calls` requests are sent, and the counters are dumped: their totals divided by the calls
//! are the instructions each service spends per call (gRPC server, decoding, decision,
//! encoding; everything but the kernel). Run with both services on their memory store and on a
//! real Redis (the Redis server itself is not counted), for each `counted_by`. The dumps stay in the
//! directory printed at the end, for `callgrind_annotate`.
//!
//! `scripts/bench callgrind` builds release binaries and runs it.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use clap::Parser;
use tests::authz::{bearer, token};
use tests::callgrind;
use tests::gateway::{Full, Shape};
use tests::redis::RedisServer;
use tests::wait_for_route;

#[derive(Debug, Parser)]
#[command(
    name = "policy-callgrind",
    about = "Instructions per call of authz-service and ratelimit-service under callgrind"
)]
struct Args {
    /// Requests counted per store (each one Check and one RLS call).
    #[arg(long, env = "BENCH_CALLS", default_value_t = 2000)]
    calls: usize,
    /// Requests before the counters are zeroed (connections, caches and code paths warm).
    #[arg(long, env = "BENCH_WARM_UP", default_value_t = 300)]
    warm_up: usize,
    /// Distinct JWT subjects the requests rotate over (each its own counter).
    #[arg(long, env = "BENCH_CLIENTS", default_value_t = 16)]
    clients: usize,
    /// `rate_limits.counted_by` of the runs, comma-separated: `ratelimit-service` (a Check and
    /// an RLS call per request) and/or `authz-service` (the limit counted inside the Check, one
    /// call per request).
    #[arg(
        long,
        env = "BENCH_COUNTED_BY",
        default_value = "ratelimit-service,authz-service",
        value_delimiter = ',',
        value_parser = ["ratelimit-service", "authz-service"]
    )]
    counted_by: Vec<String>,
}

/// One route with a JWT and the plan limit; the plan never limits.
const ROUTES: &str = r#"      - name: full
        match: { prefix: /full }
        service: api
        auth: main
        rate_limit: plan
"#;

#[derive(Debug, Clone, Copy)]
enum Store {
    Memory,
    Redis,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let version = Command::new("valgrind")
        .arg("--version")
        .output()
        .context("valgrind is needed (Debian package `valgrind`)")?;
    ensure!(version.status.success(), "valgrind --version failed");
    let out = std::env::temp_dir().join(format!("policy-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&out).context("callgrind output directory")?;
    // The harness starts authz-service and ratelimit-service under this (and nothing else: the
    // echo upstream is in process, xds-server and Envoy are not ours to count). Set before any
    // thread exists; %p gives each process its own file, and each dump a numbered one beside it.
    std::env::set_var(
        "GATEWAY_SERVICE_WRAPPER",
        format!(
            "valgrind --tool=callgrind --callgrind-out-file={}/callgrind.%p.out",
            out.display()
        ),
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("runtime")?
        .block_on(run(args, &out, &version.stdout))
}

async fn run(args: Args, out: &Path, version: &[u8]) -> anyhow::Result<()> {
    println!(
        "policy-callgrind: {} requests per store through Envoy to /full (cached HS256 token, plan \
         limit), each one ext_authz Check and, unless authz-service counts the limit, one RLS \
         call; {} (instructions counted in user space, the kernel's not)",
        args.calls,
        String::from_utf8_lossy(version).trim(),
    );
    let mut rows = Vec::new();
    for counted_by in &args.counted_by {
        let counted_by: &'static str = if counted_by == "authz-service" {
            "authz-service"
        } else {
            "ratelimit-service"
        };
        for store in [Store::Memory, Store::Redis] {
            rows.push((
                counted_by,
                store,
                measure(&args, store, counted_by, out).await?,
            ));
        }
    }
    println!();
    println!(
        "{:<18} {:<10} {:>22} {:>26}",
        "counted by", "store", "authz-service Ir/call", "ratelimit-service Ir/call"
    );
    for (counted_by, store, (authz, rls)) in &rows {
        // With the limit inside the Check, ratelimit-service gets no call to divide by.
        let rls = if *counted_by == "authz-service" {
            "no calls".to_string()
        } else {
            format!("{rls:.0}")
        };
        println!(
            "{:<18} {:<10} {:>22.0} {:>26}",
            counted_by,
            format!("{store:?}"),
            authz,
            rls
        );
    }
    println!();
    println!(
        "(dumps in {}; `callgrind_annotate <file>` shows where the instructions go)",
        out.display()
    );
    Ok(())
}

/// Instructions per call of (authz-service, ratelimit-service) with both services on `store` and
/// the limit counted by `counted_by`.
async fn measure(
    args: &Args,
    store: Store,
    counted_by: &'static str,
    out: &Path,
) -> anyhow::Result<(f64, f64)> {
    let redis_dir = tempfile::tempdir().context("temp dir")?;
    let redis = match store {
        Store::Memory => None,
        Store::Redis => Some(RedisServer::start(redis_dir.path()).await),
    };
    let mut shape = Shape::new("{ free: 100000000/minute, pro: 100000000/minute }", ROUTES);
    // A late or failed answer must fail the run, never pass uncounted.
    shape.rls_on_error = "deny";
    shape.counted_by = counted_by;
    eprintln!(
        "policy-callgrind: starting the gateway ({store:?} store, counted by {counted_by}) under \
         callgrind"
    );
    let mut gw = Full::start(&shape, redis.as_ref().map(|r| r.url()).as_deref()).await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/full", 401).await;
    let tokens: Vec<String> = (0..args.clients.max(1))
        .map(|i| bearer(&token(&format!("client-{i}"), "free")))
        .collect();
    let send = async |n: usize| -> anyhow::Result<()> {
        for i in 0..n {
            let r = client
                .get("/full")
                .header("authorization", &tokens[i % tokens.len()])
                .ok()
                .await;
            if r.status != 200 || r.header("x-ratelimit-limit").is_none() {
                bail!(
                    "request {i}: {} {:?} {}",
                    r.status,
                    r.headers,
                    r.body.chars().take(300).collect::<String>()
                );
            }
        }
        Ok(())
    };
    send(args.warm_up).await?;
    let pids = [
        gw.authz.proc().pid().context("authz-service pid")?,
        gw.rls.proc().pid().context("ratelimit-service pid")?,
    ];
    for pid in pids {
        callgrind::control("-z", pid)?;
    }
    let started = Instant::now();
    send(args.calls).await?;
    let elapsed = started.elapsed();
    for pid in pids {
        callgrind::control("-d", pid)?;
    }
    let per_call = |pid: u32| -> anyhow::Result<f64> {
        Ok(callgrind::totals(&callgrind::last_dump(out, pid)?)? as f64 / args.calls as f64)
    };
    let figures = (per_call(pids[0])?, per_call(pids[1])?);
    eprintln!(
        "policy-callgrind: {store:?}: {} requests in {:.1} s under callgrind",
        args.calls,
        elapsed.as_secs_f64()
    );
    drop(gw);
    drop(redis);
    Ok(figures)
}
