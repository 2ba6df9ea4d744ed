//! The exactness claim of `sliding_window`: three ratelimit-service processes sharing one real
//! Redis, concurrent gRPC clients hammering one limit for several windows. Every attempt's send
//! and receive times are recorded on this machine's clock, which is also Redis's clock.
//!
//! - **Never over the limit.** A request's decision happened at some instant inside its
//!   `[sent, received]` interval. For any admitted request `a`, all admitted requests `b` with
//!   `sent_b ≥ sent_a` and `received_b < sent_a + W` were decided inside one trailing window of
//!   length `W`, so there can be at most `N` of them. This can only under-count a violation
//!   (requests straddling the edge by their round-trip time), never invent one.
//! - **Not much under it.** An exact sliding log run over the same attempts (at their send
//!   times) admits some number; the service must admit at least 95 % of that.

use std::time::{Duration, Instant};

use tests::ratelimit::{descriptor, is_ok, request, RateLimitService};
use tests::redis::RedisServer;
use tests::{ConfigFile, XdsServer};

const N: usize = 20;
const WINDOW: Duration = Duration::from_secs(1);
const RUN: Duration = Duration::from_millis(4_500);
const CLIENTS_PER_INSTANCE: usize = 2;

const CONFIG: &str = r#"
version: 1
services:
  api: { endpoints: [127.0.0.1:9] }
rate_limits:
  # A store answer slower than the deadline (¾ of the timeout) is answered by `on_error`
  # (allow: admitted, uncounted), which is not what this test measures; on a busy 2-core machine
  # the default 50 ms is too tight for that. The metrics check below proves none happened.
  service: { address: 127.0.0.1:9002, timeout: 2s, on_error: allow }
  algorithm: sliding_window
gateways:
  edge:
    listeners: [{ name: http, port: 18081 }]
    routes:
      - name: shared
        match: { prefix: /shared }
        service: api
        auth: none
        rate_limit: [{ limit: 20/second, per: route }]
"#;

#[derive(Debug, Clone, Copy)]
struct Attempt {
    sent: Duration,
    received: Duration,
    admitted: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_redis_never_exceed_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).await;
    let cfg = ConfigFile::new(dir.path().join("gateway.yaml"));
    cfg.write(CONFIG);
    let xds = XdsServer::start(cfg.path(), dir.path()).await;
    let mut instances = Vec::new();
    for i in 0..3 {
        instances.push(
            RateLimitService::start(
                &format!("rls-{i}"),
                &xds.grpc_addr(),
                Some(&redis.url()),
                dir.path(),
            )
            .await,
        );
    }

    let origin = Instant::now();
    let mut tasks = Vec::new();
    for rls in &instances {
        for _ in 0..CLIENTS_PER_INSTANCE {
            let mut client = rls.client().await;
            tasks.push(tokio::spawn(async move {
                let mut log = Vec::new();
                while origin.elapsed() < RUN {
                    let sent = origin.elapsed();
                    let r = client
                        .should_rate_limit(request(vec![descriptor(&[("rule", "shared#0")])]))
                        .await
                        .expect("ShouldRateLimit");
                    let received = origin.elapsed();
                    log.push(Attempt {
                        sent,
                        received,
                        admitted: is_ok(r.get_ref()),
                    });
                }
                log
            }));
        }
    }
    let mut attempts = Vec::new();
    for t in tasks {
        attempts.extend(t.await.expect("client task"));
    }
    // Every decision came from Redis: none was answered by `on_error`.
    for rls in &instances {
        let metrics = rls.metrics().await;
        let fail_open =
            tests::xds::parse_metric(&metrics, r#"ratelimit_on_error_total{action="allow"}"#)
                .expect("ratelimit-service exports ratelimit_on_error_total");
        assert_eq!(
            fail_open, 0.0,
            "decisions answered by on_error, not the store"
        );
    }
    attempts.sort_by_key(|a| a.sent);
    let admitted: Vec<Attempt> = attempts.iter().copied().filter(|a| a.admitted).collect();

    let mut worst = 0;
    for (i, a) in admitted.iter().enumerate() {
        let inside = admitted[i..]
            .iter()
            .filter(|b| b.received < a.sent + WINDOW)
            .count();
        worst = worst.max(inside);
    }

    let mut exact: Vec<Duration> = Vec::new();
    for a in &attempts {
        let recent = exact.iter().filter(|&&t| t + WINDOW > a.sent).count();
        if recent < N {
            exact.push(a.sent);
        }
    }
    let mean = |adm: bool| {
        let v: Vec<f64> = attempts
            .iter()
            .filter(|a| a.admitted == adm)
            .map(|a| (a.received - a.sent).as_secs_f64() * 1e3)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    println!(
        "mean latency ms: admitted {:.2}, denied {:.2}",
        mean(true),
        mean(false)
    );
    println!(
        "{} attempts, {} admitted, exact sliding log would admit {}, at most {} in one window (limit {N})",
        attempts.len(),
        admitted.len(),
        exact.len(),
        worst
    );
    assert!(
        attempts.len() > 5 * exact.len(),
        "the load must be well over the limit to test it ({} attempts)",
        attempts.len()
    );
    assert!(worst <= N, "{worst} admitted within one {WINDOW:?} window");
    assert!(
        admitted.len() * 100 >= exact.len() * 95,
        "admitted {} of the {} an exact log admits",
        admitted.len(),
        exact.len()
    );
}
