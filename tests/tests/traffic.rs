//! Traffic policies as a client sees them: a weighted canary split, retries and route timeouts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tests::{free_port, sotw_and_delta, wait_for_route, EchoUpstream, Stack, XdsMode};

sotw_and_delta!(weighted_split, retries, route_timeout);

/// 90/10 over 1000 requests: the share of v1 is within 5 standard deviations of 900
/// (σ = √(1000·0.9·0.1) ≈ 9.5, so 900 ± 47); a wrong weight or an ignored split fails it.
async fn weighted_split(mode: XdsMode) {
    const N: usize = 1000;
    const CONCURRENCY: usize = 8;
    let v1 = EchoUpstream::start("payments-v1").await;
    let v2 = EchoUpstream::start("payments-v2").await;
    let port = free_port();
    let yaml = format!(
        r#"version: 1
services:
  payments-v1: {{ endpoints: [{v1}] }}
  payments-v2: {{ endpoints: [{v2}] }}
gateways:
  edge:
    listeners:
      - {{ name: http, port: {port} }}
    routes:
      - name: payments
        match: {{ prefix: /api/v1/payments }}
        services: {{ payments-v1: 90, payments-v2: 10 }}
        auth: none
"#,
        v1 = v1.endpoint(),
        v2 = v2.endpoint(),
    );
    let stack = Stack::start(mode, &yaml).await;
    let c = Arc::new(stack.client(port));
    wait_for_route(&c, "/api/v1/payments", 200).await;
    let (base1, base2) = (v1.hits(), v2.hits());

    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let c = c.clone();
        tasks.spawn(async move {
            let mut counts = (0usize, 0usize);
            for _ in (worker..N).step_by(CONCURRENCY) {
                let r = c.get("/api/v1/payments/charge").ok().await;
                assert_eq!(r.status, 200, "{r:?}");
                match r.upstream() {
                    Some("payments-v1") => counts.0 += 1,
                    Some("payments-v2") => counts.1 += 1,
                    other => panic!("unexpected upstream {other:?}"),
                }
            }
            counts
        });
    }
    let (mut n1, mut n2) = (0, 0);
    while let Some(res) = tasks.join_next().await {
        let (a, b) = res.expect("worker");
        n1 += a;
        n2 += b;
    }
    assert_eq!(n1 + n2, N);
    assert_eq!((v1.hits() - base1) as usize, n1);
    assert_eq!((v2.hits() - base2) as usize, n2);
    let sigma = (N as f64 * 0.9 * 0.1).sqrt();
    let deviation = (n1 as f64 - N as f64 * 0.9).abs();
    assert!(
        deviation <= 5.0 * sigma,
        "v1 got {n1}/{N}, v2 {n2}; expected 900 ± {:.0}",
        5.0 * sigma
    );
}

/// A service with one live and one dead endpoint: round robin sends about half the first
/// attempts to the dead one, so without retries some requests fail and with
/// `retries: {on: [connect-failure]}` none does. A 503 from the upstream is retried too, which the
/// upstream observes as extra hits.
async fn retries(mode: XdsMode) {
    let live = EchoUpstream::start("live").await;
    let dead = free_port(); // nothing listens here
    let port = free_port();
    let yaml = format!(
        r#"version: 1
services:
  half-dead: {{ endpoints: [{live}, 127.0.0.1:{dead}], lb: round_robin, connect_timeout: 250ms }}
  single: {{ endpoints: [{live}] }}
gateways:
  edge:
    listeners:
      - {{ name: http, port: {port} }}
    routes:
      - name: with-retries
        match: {{ prefix: /retried }}
        service: half-dead
        retries: {{ attempts: 2, on: [connect-failure, reset, 503], per_try_timeout: 1s }}
        auth: none
      - name: without-retries
        match: {{ prefix: /plain }}
        service: half-dead
        auth: none
      - name: retry-503
        match: {{ prefix: /flaky }}
        service: single
        retries: {{ attempts: 2, on: [503] }}
        auth: none
      - name: no-retry-503
        match: {{ prefix: /steady }}
        service: single
        auth: none
"#,
        live = live.endpoint(),
    );
    let stack = Stack::start(mode, &yaml).await;
    let c = stack.client(port);
    wait_for_route(&c, "/retried", 200).await;

    let mut failures_with_retries = Vec::new();
    for i in 0..30 {
        let r = c.get(&format!("/retried/{i}")).ok().await;
        if r.status != 200 {
            failures_with_retries.push((r.status, r.body));
        }
    }
    assert!(
        failures_with_retries.is_empty(),
        "retried route failed: {failures_with_retries:?}"
    );

    let mut plain_failures = 0;
    for i in 0..30 {
        let r = c.get(&format!("/plain/{i}")).ok().await;
        if r.status != 200 {
            assert!(r.status >= 500, "{r:?}");
            plain_failures += 1;
        }
    }
    assert!(
        plain_failures > 0,
        "the dead endpoint was never picked, so the retry test proves nothing"
    );

    // An upstream 503 is retried (hits > 1) and, every attempt failing, the client gets 503.
    let before = live.hits();
    let r = c.get("/flaky").header("x-echo-status", "503").ok().await;
    assert_eq!(r.status, 503, "{r:?}");
    let attempts = live.hits() - before;
    assert!(
        attempts >= 2,
        "a 503 must be retried; upstream saw {attempts} attempt(s)"
    );
    assert!(
        attempts <= 3,
        "attempts: 2 allows at most 3 tries; upstream saw {attempts}"
    );

    let before = live.hits();
    let r = c.get("/steady").header("x-echo-status", "503").ok().await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        live.hits() - before,
        1,
        "a route without retries tries once"
    );
}

/// `timeout: 300ms`: a slower upstream answer becomes 504 at about that time; a fast one passes.
async fn route_timeout(mode: XdsMode) {
    let slow = EchoUpstream::start("slow").await;
    let port = free_port();
    let yaml = format!(
        r#"version: 1
services:
  slow: {{ endpoints: [{slow}] }}
gateways:
  edge:
    listeners:
      - {{ name: http, port: {port} }}
    routes:
      - name: bounded
        match: {{ prefix: /bounded }}
        service: slow
        timeout: 300ms
        auth: none
"#,
        slow = slow.endpoint(),
    );
    let stack = Stack::start(mode, &yaml).await;
    let c = stack.client(port);
    wait_for_route(&c, "/bounded", 200).await;

    let r = c.get("/bounded").header("x-echo-delay-ms", "50").ok().await;
    assert_eq!(r.status, 200, "{r:?}");

    let start = Instant::now();
    let r = c
        .get("/bounded")
        .header("x-echo-delay-ms", "3000")
        .ok()
        .await;
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        took >= Duration::from_millis(250),
        "timed out too early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "the route timeout was not applied: {took:?}"
    );
    assert!(r.header("x-request-id").is_some(), "{r:?}");
}
