//! `rate_limits.counted_by: authz-service` through a real Envoy: authz-service counts the plan
//! limit inside the Check and answers the 429 itself, with the headers and body of spec §3, the
//! access log's outcome (§10) and the exactness of §5; Envoy makes no call to
//! ratelimit-service for such routes. With Redis, the counters are the very ones
//! ratelimit-service keeps: switching `counted_by` back keeps every client's count.

use std::time::Duration;

use tests::authz::{bearer, token};
use tests::gateway::{Full, Shape};
use tests::prometheus::{parse, sum};
use tests::redis::RedisServer;
use tests::{wait_for, wait_for_route};

const ROUTES: &str = r#"      - name: api
        match: { prefix: /api }
        service: api
        auth: [main, partners]
      - name: public
        match: { prefix: /public }
        service: api
        auth: none
"#;

fn shape(counted_by: &'static str) -> Shape {
    Shape {
        counted_by,
        ..Shape::new("{ free: 2/minute, pro: 3/minute }", ROUTES)
    }
}

async fn metrics(admin_port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// `ratelimit_decisions_total` for `limit` and `outcome` on the service at `admin_port`.
async fn decisions(admin_port: u16, limit: &str, outcome: &str) -> f64 {
    let m = metrics(admin_port).await;
    sum(
        &parse(&m),
        "ratelimit_decisions_total",
        &[("limit", limit), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_service_counts_the_plan_and_answers_the_429_itself() {
    let gw = Full::start(&shape("authz-service"), None).await;
    let c = gw.stack.client(gw.ports.http);
    wait_for_route(&c, "/public", 200).await;
    let alice = bearer(&token("alice", "free"));

    for (i, remaining) in ["1", "0"].into_iter().enumerate() {
        let r = c
            .get("/api/a")
            .header("authorization", &alice)
            .header("x-request-id", &format!("alice-{i}"))
            .ok()
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-ratelimit-limit"), Some("2"), "{r:?}");
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining), "{r:?}");
        assert!(r.header("ratelimit-policy").is_some(), "{r:?}");
        assert_eq!(r.upstream_header("x-client-plan"), Some("free"), "{r:?}");
    }
    let l = gw.log_line("alice-0").await;
    assert_eq!(l["rate_limit"], "ok", "{l}");

    // Abuse: a client-sent plan header, a forged quota header and a fresh request id change
    // nothing; the plan comes from the verified token only.
    let r = c
        .get("/api/a")
        .header("authorization", &alice)
        .header("x-client-plan", "pro")
        .header("x-ratelimit-remaining", "100")
        .header("x-request-id", "alice-over")
        .ok()
        .await;
    assert_eq!(r.status, 429, "{r:?}");
    let body = r.json();
    assert_eq!(body["error"], "too_many_requests", "{body}");
    assert_eq!(body["request_id"], "alice-over", "{body}");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    assert!((1..=60).contains(&retry), "{r:?}");
    assert_eq!(body["retry_after"], retry, "{body}");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    let l = gw.log_line("alice-over").await;
    assert_eq!(l["rate_limit"], "over_limit", "{l}");
    assert_eq!(l["client_id"], "alice", "{l}");
    assert_eq!(l["plan"], "free", "{l}");

    // A plan the config does not define is limited as the default plan.
    let eve = bearer(&token("eve", "enterprise"));
    for expected in [200, 200, 429] {
        let r = c.get("/api/a").header("authorization", &eve).ok().await;
        assert_eq!(r.status, expected, "{r:?}");
    }
    // Another client, and an API key, have buckets of their own; bad credentials are refused
    // before anything is counted.
    let bob = bearer(&token("bob", "pro"));
    for _ in 0..3 {
        let r = c.get("/api/a").header("authorization", &bob).ok().await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"), "{r:?}");
    }
    let r = c
        .get("/api/a")
        .header("authorization", "Bearer junk")
        .ok()
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = c
        .get("/api/a")
        .header(tests::gateway::API_KEY_HEADER, &gw.partner_key)
        .ok()
        .await;
    assert_eq!(r.status, 200, "{r:?}");

    // Every decision was authz-service's: Envoy never asked ratelimit-service.
    assert_eq!(
        decisions(gw.authz.admin_port, "free", "admitted").await,
        4.0
    );
    assert_eq!(decisions(gw.authz.admin_port, "free", "denied").await, 2.0);
    assert_eq!(decisions(gw.authz.admin_port, "pro", "admitted").await, 4.0);
    // (It only counted the anonymous limit of `/public`.)
    let rls = metrics(gw.rls.admin_port).await;
    for plan in ["free", "pro"] {
        assert_eq!(
            sum(
                &parse(&rls),
                "ratelimit_decisions_total",
                &[("limit", plan)]
            )
            .unwrap_or(0.0),
            0.0,
            "ratelimit-service was asked about {plan}: {rls}"
        );
    }
    // The anonymous limit on `auth: none` routes stays ratelimit-service's.
    let r = c.get("/public/x").ok().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-ratelimit-limit"), Some("1000"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_both_services_keep_one_count_per_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).await;
    let gw = Full::start(&shape("authz-service"), Some(&redis.url())).await;
    let c = gw.stack.client(gw.ports.http);
    wait_for_route(&c, "/public", 200).await;
    let carol = bearer(&token("carol", "pro"));
    for _ in 0..2 {
        let r = c.get("/api/a").header("authorization", &carol).ok().await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(decisions(gw.authz.admin_port, "pro", "admitted").await, 2.0);

    // Back to ratelimit-service: once Envoy asks it (a probe client shows when), carol has one
    // request left of her three, not three.
    gw.stack.config.write(&gw.yaml(&shape("ratelimit-service")));
    let probe = bearer(&token("probe", "free"));
    wait_for(
        "Envoy to ask ratelimit-service",
        Duration::from_secs(20),
        async || {
            let r = c.get("/api/p").header("authorization", &probe).ok().await;
            (decisions(gw.rls.admin_port, "free", "admitted").await
                + decisions(gw.rls.admin_port, "free", "denied").await
                > 0.0)
                .then_some(r)
        },
    )
    .await;
    let r = c.get("/api/a").header("authorization", &carol).ok().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"), "{r:?}");
    let r = c.get("/api/a").header("authorization", &carol).ok().await;
    assert_eq!(r.status, 429, "{r:?}");
}
