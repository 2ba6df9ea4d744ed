//! Faults under continuous authenticated traffic through a real Envoy (spec §5, §6): the
//! ratelimit-service killed and restarted (fail open with `on_error: allow`), Redis killed and
//! restarted, xds-server killed and restarted. Not one request may see anything but its expected
//! status, and after each recovery limits are enforced again.

use tests::authz::{bearer, token};
use tests::gateway::{Full, Shape, API_KEY_HEADER};
use tests::load::{assert_clean, Load, Probe};
use tests::ratelimit::RateLimitService;
use tests::redis::RedisServer;
use tests::{wait_for_route, HttpClient};

const ROUTES: &str = r#"      - name: orders
        match: { prefix: /orders }
        service: api
        auth: [main, partners]
      - name: tight
        match: { prefix: /tight }
        service: api
        auth: main
        rate_limit: [{ limit: 3/minute, per: client }]
      - name: public
        match: { prefix: /public }
        service: api
        auth: none
"#;

fn shape(routes: &str) -> Shape {
    Shape::new("{ free: 1000000/minute, pro: 1000000/minute }", routes)
}

/// A fresh client on `/tight` is admitted exactly 3 times, then gets 429: the limiter and its
/// store are in use (a fail-open path would admit the fourth).
async fn assert_enforced(client: &HttpClient, sub: &str) {
    let t = bearer(&token(sub, "free"));
    for i in 1..=3 {
        let r = client.get("/tight").header("authorization", &t).ok().await;
        assert_eq!(r.status, 200, "{sub} request {i}: {}", r.body);
        assert_eq!(
            r.header("x-ratelimit-limit"),
            Some("3"),
            "{sub} request {i}"
        );
    }
    let r = client.get("/tight").header("authorization", &t).ok().await;
    assert_eq!(r.status, 429, "{sub}: the fourth request must be limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_survives_every_backend_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = RedisServer::start(dir.path()).await;
    let mut gw = Full::start(&shape(ROUTES), Some(&redis.url())).await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/public", 200).await;
    assert_enforced(&client, "before-faults").await;

    let alice = bearer(&token("alice", "pro"));
    let load = Load::start(
        &client,
        vec![
            Probe::new("/orders/a", 200).header("authorization", &alice),
            Probe::new("/orders/k", 200).header(API_KEY_HEADER, &gw.partner_key),
            Probe::new("/public", 200),
            Probe::new("/orders/none", 401),
        ],
        4,
    );
    load.wait_more(100, "before any fault").await;

    // ratelimit-service gone: Envoy cannot reach it and fails open.
    let rls_port = gw.rls.grpc_port;
    gw.rls.proc().kill();
    load.wait_more(200, "with ratelimit-service down").await;
    let log_dir = gw.stack.dir().to_path_buf();
    let xds = gw.stack.xds.grpc_addr();
    gw.rls =
        RateLimitService::start_on("rls-again", &xds, Some(&redis.url()), rls_port, &log_dir).await;
    assert_enforced(&client, "after-rls-restart").await;
    load.wait_more(100, "after ratelimit-service came back")
        .await;

    // Redis gone: the service answers by `on_error: allow` inside its deadline.
    redis.kill();
    load.wait_more(200, "with Redis down").await;
    redis.restart(dir.path()).await;
    // The service reconnects on its own; counting resumes once it has.
    let redis_probe = bearer(&token("redis-probe", "free"));
    tests::wait_for(
        "ratelimit-service to use Redis again",
        std::time::Duration::from_secs(30),
        async || {
            let r = client
                .get("/tight")
                .header("authorization", &redis_probe)
                .send()
                .await
                .ok()?;
            r.header("x-ratelimit-limit").map(|_| ())
        },
    )
    .await;
    assert_enforced(&client, "after-redis-restart").await;
    load.wait_more(100, "after Redis came back").await;

    // xds-server gone: Envoy and both services keep their last configuration.
    gw.stack.xds.kill();
    load.wait_more(200, "with xds-server down").await;
    assert_enforced(&client, "while-xds-down").await;
    gw.stack.xds.restart().await;
    gw.stack.wait_converged().await;
    // Everyone is back on the stream: an edit reaches Envoy and the services.
    let extra = format!(
        "{ROUTES}      - name: late\n        match: {{ prefix: /late }}\n        service: api\n        auth: main\n        rate_limit: [{{ limit: 2/minute, per: client }}]\n"
    );
    gw.stack.config.write(&gw.yaml(&shape(&extra)));
    let probe = bearer(&token("late-probe", "free"));
    tests::wait_for(
        "the route added after the restart",
        tests::CONVERGE_TIMEOUT,
        async || {
            let r = client
                .get("/late")
                .header("authorization", &probe)
                .send()
                .await
                .ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await;
    let late = bearer(&token("late", "free"));
    for expect in [200, 200, 429] {
        let r = client
            .get("/late")
            .header("authorization", &late)
            .ok()
            .await;
        assert_eq!(r.status, expect, "{}", r.body);
        assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    }
    load.wait_more(100, "after xds-server came back").await;

    let (sent, bad) = load.finish().await;
    assert_clean(sent, &bad, 1000);
}
