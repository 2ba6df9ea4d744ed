//! Rate limits through a real Envoy: xds-server puts the rate-limit filter and per-route
//! descriptors into Envoy's config, Envoy asks a real ratelimit-service, and a client sees the
//! spec's 429 (§3) and quota headers, on SotW and Delta Envoys. When the service is down,
//! `on_error` decides: `allow` lets requests through, `deny` answers the spec's 503.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::pb::google::protobuf::Any;

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
    // The first 429 of a fresh 3/minute window: never more than the window (it said 61, a
    // sub-bucket past the first request), and every header that tells the wait agrees.
    let retry = r.json()["retry_after"].as_u64().expect("retry_after");
    assert!((1..=60).contains(&retry), "retry_after {retry}");
    assert_eq!(r.header("retry-after"), Some(retry.to_string().as_str()));
    assert_eq!(
        r.header("x-ratelimit-reset"),
        Some(retry.to_string().as_str())
    );
    let field = r.header("ratelimit").expect("RateLimit");
    assert!(
        field.ends_with(&format!(";r=0;t={retry}")),
        "RateLimit: {field}"
    );
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

/// Ordered rollout: an edit that adds a limited route reaches every connected ratelimit-service
/// before any Envoy gets the route. A deliberately slow policy client (it takes a second to apply
/// each policy) is connected beside the real service; the new route must not answer before that
/// client has applied the policy that knows the route's rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_limit_reaches_the_services_before_its_route_reaches_envoy() {
    let upstream = EchoUpstream::start("api").await;
    let (port, rls_port) = (free_port(), free_port());
    let dir = tempfile::Builder::new()
        .prefix("gateway-rl-order-")
        .tempdir()
        .expect("tempdir");
    let addr = format!("127.0.0.1:{}", upstream.port());
    let base = config(&addr, port, rls_port, "allow");
    let stack = Stack::start_in(dir, XdsMode::Sotw, &base).await;
    let _rls = RateLimitService::start_on(
        "rls-order",
        &stack.xds.grpc_addr(),
        None,
        rls_port,
        stack.dir(),
    )
    .await;
    let applied = SlowPolicyClient::start(&stack.xds.grpc_addr());
    wait_for(
        "the slow client's first policy",
        Duration::from_secs(15),
        async || applied.lock().expect("lock").len() == 1,
    )
    .await;
    stack.wait_converged().await;
    let client = stack.client(port);
    wait_for_route(&client, "/open", 200).await;

    let edited = format!(
        "{base}      - name: fresh\n        match: {{ prefix: /fresh }}\n        service: api\n        auth: none\n        rate_limit: [{{ limit: 7/minute, per: ip }}]\n"
    );
    stack.config.write(&edited);
    let first = wait_for_route(&client, "/fresh", 200).await;
    let routed_at = Instant::now();
    let applied_at = applied
        .lock()
        .expect("lock")
        .get(1)
        .copied()
        .expect("the route answered before the slow client had even applied the new policy");
    assert!(applied_at <= routed_at);
    assert_eq!(first.header("x-ratelimit-limit"), Some("7"));
}

/// An ADS client in ratelimit-service's node group that takes [`SLOW_APPLY`] to apply each
/// policy, on its own thread and runtime; returns the instants its applies finished.
struct SlowPolicyClient;

const SLOW_APPLY: Duration = Duration::from_secs(1);

impl SlowPolicyClient {
    fn start(xds: &str) -> Arc<Mutex<Vec<Instant>>> {
        struct Slow(Arc<Mutex<Vec<Instant>>>);
        impl xds_client::Apply for Slow {
            fn apply(&mut self, _version: &str, _resources: &[Any]) -> Result<(), String> {
                // Blocking on purpose: this client is slow at applying, not at talking.
                std::thread::sleep(SLOW_APPLY);
                self.0.lock().expect("lock").push(Instant::now());
                Ok(())
            }
        }
        let applied = Arc::new(Mutex::new(Vec::new()));
        let opts = xds_client::Options::new(
            xds,
            "slow-policy-client",
            proto::group::RATELIMIT,
            proto::type_url::RATELIMIT_POLICY,
        );
        let slow = Slow(applied.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let (state, _) = tokio::sync::watch::channel(xds_client::State::default());
            let (_stop, shutdown) = tokio::sync::watch::channel(false);
            rt.block_on(xds_client::run(opts, slow, state, shutdown));
        });
        applied
    }
}
