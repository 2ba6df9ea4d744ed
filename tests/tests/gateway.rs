//! The whole gateway through a real Envoy: xds-server, authz-service (JWT) and ratelimit-service
//! (plan limits keyed on the identity authz-service verified), as a client and an upstream see it
//! (spec §3, §4).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tests::ratelimit::RateLimitService;
use tests::{
    free_port, wait_for, wait_for_route, workspace_bin, EchoUpstream, Proc, Stack, XdsMode,
};

const SECRET_ENV: &str = "GATEWAY_E2E_SECRET";
const SECRET: &str = "an-end-to-end-test-secret-of-more-than-32-bytes";
const ISSUER: &str = "https://issuer.gateway.test";

fn config(upstream: &str, port: u16, authz_port: u16, rls_port: u16) -> String {
    format!(
        r#"version: 1
services:
  api: {{ endpoints: [{upstream}] }}
auth:
  service: {{ address: 127.0.0.1:{authz_port}, timeout: 1s, on_error: deny }}
  jwt:
    main:
      issuer: {ISSUER}
      algorithms: [HS256]
      secret_env: {SECRET_ENV}
      headers: {{ x-user-id: sub }}
rate_limits:
  service: {{ address: 127.0.0.1:{rls_port}, timeout: 500ms, on_error: allow }}
  plans: {{ free: 2/minute, pro: 4/minute }}
  default_plan: free
gateways:
  edge:
    listeners: [{{ name: http, port: {port} }}]
    routes:
      - name: orders
        match: {{ prefix: /orders }}
        service: api
        auth: main
      - name: public
        match: {{ prefix: /public }}
        service: api
        auth: none
        rate_limit: none
"#
    )
}

/// A dev token from `authz-service token`.
fn token(sub: &str, plan: &str) -> String {
    let out = Command::new(workspace_bin("authz-service"))
        .env(SECRET_ENV, SECRET)
        .args(["token", "--alg", "HS256", "--secret-env", SECRET_ENV])
        .args([
            "--issuer",
            ISSUER,
            "--sub",
            sub,
            "--claim",
            &format!("plan={plan}"),
        ])
        .output()
        .expect("run authz-service token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

async fn start_authz(xds: &str, port: u16, dir: &Path) -> Proc {
    let admin = free_port();
    let mut cmd = Command::new(workspace_bin("authz-service"));
    cmd.env(SECRET_ENV, SECRET)
        .args(["--xds", xds, "--node-id", "authz-e2e"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")]);
    let mut proc = Proc::spawn("authz-service", cmd, dir);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{admin}/readyz");
    wait_for(
        "authz-service to be ready",
        Duration::from_secs(30),
        async || {
            proc.assert_running();
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;
    proc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_identity_plan_limits_and_outages() {
    let upstream = EchoUpstream::start("api").await;
    let (port, authz_port, rls_port) = (free_port(), free_port(), free_port());
    let dir = tempfile::Builder::new()
        .prefix("gateway-full-")
        .tempdir()
        .expect("tempdir");
    let addr = format!("127.0.0.1:{}", upstream.port());
    let stack = Stack::start_in(
        dir,
        XdsMode::Sotw,
        &config(&addr, port, authz_port, rls_port),
    )
    .await;
    let mut authz = start_authz(&stack.xds.grpc_addr(), authz_port, stack.dir()).await;
    let _rls = RateLimitService::start_on(
        "rls-full",
        &stack.xds.grpc_addr(),
        None,
        rls_port,
        stack.dir(),
    )
    .await;
    stack.wait_converged().await;
    let client = stack.client(port);
    wait_for_route(&client, "/public", 200).await;

    // No credentials: 401 with a challenge and the spec's body.
    let r = client.get("/orders").send().await.expect("request");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(r.json()["error"], "unauthorized");
    assert_eq!(
        r.json()["request_id"],
        r.header("x-request-id").expect("x-request-id")
    );

    // A valid token: the upstream sees the verified identity, never the token or spoofed values.
    let alice = token("alice", "free");
    let r = client
        .get("/orders/1")
        .header("authorization", &format!("Bearer {alice}"))
        .header("x-client-id", "mallory")
        .header("x-user-id", "mallory")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-client-id"), Some("alice"));
    assert_eq!(r.upstream_header("x-user-id"), Some("alice"));
    assert_eq!(r.upstream_header("x-client-plan"), Some("free"));
    assert_eq!(r.upstream_header("x-auth-provider"), Some("main"));
    assert_eq!(r.upstream_header("authorization"), None);
    // Plan limit from the verified plan: free = 2/minute.
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("1"));
    let bearer = |t: &str| format!("Bearer {t}");
    let r = client
        .get("/orders")
        .header("authorization", &bearer(&alice))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    let r = client
        .get("/orders")
        .header("authorization", &bearer(&alice))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"], "too_many_requests");
    // Another client on another plan has its own bucket.
    let bob = token("bob", "pro");
    for _ in 0..4 {
        let r = client
            .get("/orders")
            .header("authorization", &bearer(&bob))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), Some("4"));
    }

    // `auth: none` routes strip client-sent identity headers too.
    let r = client
        .get("/public")
        .header("x-client-id", "mallory")
        .header("x-user-id", "mallory")
        .header("x-client-plan", "enterprise")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-client-id"), None);
    assert_eq!(r.upstream_header("x-user-id"), None);
    assert_eq!(r.upstream_header("x-client-plan"), None);

    // authz-service unreachable under `on_error: deny`: the spec's 503, public routes unaffected.
    authz.kill();
    let r = client
        .get("/orders")
        .header("authorization", &bearer(&bob))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "unavailable");
    assert_eq!(
        client.get("/public").send().await.expect("request").status,
        200
    );
}
