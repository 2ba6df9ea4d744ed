//! Rate limits through a real Envoy: xds-server puts the rate-limit filter and per-route
//! descriptors into Envoy's config, Envoy asks a real ratelimit-service, and a client sees the
//! spec's 429 (§3) and quota headers, on SotW and Delta Envoys. When the service is down,
//! `on_error` decides: `allow` lets requests through, `deny` answers the spec's 503.

use std::time::Duration;

use tests::ratelimit::RateLimitService;
use tests::{free_port, sotw_and_delta, wait_for, wait_for_route, EchoUpstream, Stack, XdsMode};

sotw_and_delta!(rate_limits_through_envoy);

fn config(upstream: &str, port: u16, rls_port: u16, on_error: &str) -> String {
    format!(
        r#"version: 1
services:
  api: {{ endpoints: [{upstream}] }}
rate_limits:
  service: {{ address: 127.0.0.1:{rls_port}, timeout: 500ms, on_error: {on_error} }}
  anonymous: 3/minute
gateways:
  edge:
    listeners: [{{ name: http, port: {port} }}]
    routes:
      - name: public
        match: {{ prefix: /public }}
        service: api
        auth: none
      - name: teams
        match: {{ prefix: /teams }}
        service: api
        auth: none
        rate_limit: [{{ limit: 2/minute, per: "header:x-team" }}]
      - name: open
        match: {{ prefix: /open }}
        service: api
        auth: none
        rate_limit: none
"#
    )
}

async fn rate_limits_through_envoy(mode: XdsMode) {
    let upstream = EchoUpstream::start("api").await;
    let (port, rls_port) = (free_port(), free_port());
    let dir = tempfile::Builder::new()
        .prefix("gateway-rl-")
        .tempdir()
        .expect("tempdir");
    let addr = format!("127.0.0.1:{}", upstream.port());
    let stack = Stack::start_in(dir, mode, &config(&addr, port, rls_port, "allow")).await;
    let mut rls = RateLimitService::start_on(
        &format!("rls-{mode:?}"),
        &stack.xds.grpc_addr(),
        None,
        rls_port,
        stack.dir(),
    )
    .await;
    stack.wait_converged().await;
    let client = stack.client(port);
    wait_for_route(&client, "/open", 200).await;

    // Anonymous limit, per client IP: 3 per minute, with the remaining quota on every answer.
    for remaining in ["2", "1", "0"] {
        let r = client.get("/public/a").send().await.expect("request");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
        assert!(r
            .header("ratelimit-policy")
            .is_some_and(|p| p.contains("q=3;w=60")));
        assert!(r.header("ratelimit").is_some());
    }
    let r = client.get("/public/a").send().await.expect("request");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"], "too_many_requests");
    let retry = r.json()["retry_after"].as_u64().expect("retry_after");
    assert!((1..=61).contains(&retry), "retry_after {retry}");
    assert_eq!(r.header("retry-after"), Some(retry.to_string().as_str()));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let request_id = r.header("x-request-id").expect("x-request-id");
    assert_eq!(r.json()["request_id"], request_id);
    assert_eq!(r.headers.get_all("content-type").iter().count(), 1);
    assert!(r.upstream().is_none(), "a 429 never reaches the upstream");

    // A limit keyed on a header: each team has its own bucket; no header, no descriptor.
    for team in ["red", "red"] {
        let r = client
            .get("/teams")
            .header("x-team", team)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status, 200);
    }
    let r = client
        .get("/teams")
        .header("x-team", "red")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status, 429);
    let r = client
        .get("/teams")
        .header("x-team", "blue")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    // An unlimited route carries no quota headers.
    let r = client.get("/open").send().await.expect("request");
    assert_eq!(r.status, 200);
    assert!(r.header("x-ratelimit-limit").is_none());

    // The service goes away. `on_error: allow` fails open...
    rls.proc().kill();
    let r = client.get("/public/a").send().await.expect("request");
    assert_eq!(r.status, 200, "fail open: {}", r.body);

    // ...and `on_error: deny` answers 503 with the spec's JSON body.
    stack.config.write(&config(&addr, port, rls_port, "deny"));
    wait_for(
        "on_error: deny to reach Envoy",
        Duration::from_secs(15),
        async || {
            client
                .get("/public/a")
                .send()
                .await
                .is_ok_and(|r| r.status == 503)
        },
    )
    .await;
    let r = client.get("/public/a").send().await.expect("request");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "unavailable");
    assert!(r.json()["request_id"].is_string());
    assert_eq!(
        client.get("/open").send().await.expect("request").status,
        200
    );
}
