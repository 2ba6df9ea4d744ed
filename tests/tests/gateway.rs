//! The whole gateway through a real Envoy: xds-server, authz-service (JWT) and ratelimit-service
//! (plan limits keyed on the identity authz-service verified), as a client and an upstream see it
//! (spec §3, §4).

use tests::authz::{bearer, token};
use tests::gateway::{Full, Shape, API_KEY_HEADER};
use tests::wait_for_route;

const ROUTES: &str = r#"      - name: orders
        match: { prefix: /orders }
        service: api
        auth: main
      - name: public
        match: { prefix: /public }
        service: api
        auth: none
        rate_limit: none
      - name: keyed
        match: { prefix: /keyed, query: { api_key: { regex: ".*" } } }
        service: api
        auth: none
        rate_limit: none
        request_headers: { set: { x-route: keyed } }
      - name: keyed-secure
        match: { prefix: /keyed }
        service: api
        auth: main
        request_headers: { set: { x-route: keyed-secure } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_identity_plan_limits_and_outages() {
    let mut gw = Full::start(
        &Shape::new("{ free: 2/minute, pro: 4/minute }", ROUTES),
        None,
    )
    .await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/public", 200).await;

    // No credentials: 401 with a challenge and the spec's body.
    let r = client.get("/orders").ok().await;
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
        .header("authorization", &bearer(&alice))
        .header("x-client-id", "mallory")
        .header("x-user-id", "mallory")
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-client-id"), Some("alice"));
    assert_eq!(r.upstream_header("x-user-id"), Some("alice"));
    assert_eq!(r.upstream_header("x-client-plan"), Some("free"));
    assert_eq!(r.upstream_header("x-auth-provider"), Some("main"));
    assert_eq!(r.upstream_header("authorization"), None);
    // Plan limit from the verified plan: free = 2/minute.
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("1"));
    let r = client
        .get("/orders")
        .header("authorization", &bearer(&alice))
        .ok()
        .await;
    assert_eq!(r.status, 200);
    let r = client
        .get("/orders")
        .header("authorization", &bearer(&alice))
        .ok()
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"], "too_many_requests");
    // Another client on another plan has its own bucket.
    let bob = token("bob", "pro");
    for _ in 0..4 {
        let r = client
            .get("/orders")
            .header("authorization", &bearer(&bob))
            .ok()
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), Some("4"));
    }

    // `auth: none` routes strip client-sent identity headers too, and no credential reaches the
    // upstream there either (spec §4): no token, no API key by header or by query.
    let r = client
        .get("/public/p?z=1&q=a%26b%20c&api_key=leaked&page=3&api%5Fkey=again&flag")
        .header("x-client-id", "mallory")
        .header("x-user-id", "mallory")
        .header("x-client-plan", "enterprise")
        .header("authorization", &bearer(&alice))
        .header(API_KEY_HEADER, "leaked")
        .ok()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-client-id"), None);
    assert_eq!(r.upstream_header("x-user-id"), None);
    assert_eq!(r.upstream_header("x-client-plan"), None);
    assert_eq!(r.upstream_header("authorization"), None);
    assert_eq!(r.upstream_header(API_KEY_HEADER), None);
    // Only the keys go: every other byte of the query arrives as sent (order, encoding, a
    // parameter without a value).
    assert_eq!(
        r.upstream_query(),
        Some("z=1&q=a%26b%20c&page=3&flag"),
        "{}",
        r.body
    );

    // Removing the key changes the path, but never the route the request was judged on: a
    // route that matched because the key was there stays the route that serves it.
    let r = client
        .get("/keyed/admin?api_key=anything")
        .header("x-client-id", "mallory")
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-route"), Some("keyed"), "{}", r.body);
    assert_eq!(r.upstream_header("x-client-id"), None);
    assert_eq!(r.upstream_query(), Some(""), "{}", r.body);
    assert_eq!(client.get("/keyed/admin").ok().await.status, 401);

    // authz-service unreachable under `on_error: deny`: the spec's 503, public routes unaffected.
    gw.authz.kill();
    let r = client
        .get("/orders")
        .header("authorization", &bearer(&bob))
        .ok()
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "unavailable");
    assert_eq!(client.get("/public").ok().await.status, 200);

    // The upstream down: the spec's 503 JSON with the request id, not Envoy's plain text.
    gw.upstream.stop().await;
    let r = client.get("/public").ok().await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "unavailable", "{}", r.body);
    assert_eq!(
        r.json()["request_id"],
        r.header("x-request-id").expect("x-request-id")
    );
}

/// API keys (header and query) carry their plan to the upstream and the limiter; `require`
/// failures are 403; a 429 carries every header and body field of spec §3, with remaining counts
/// that count down to it and a `Retry-After` that agrees with the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_roles_and_rate_limit_answers() {
    let shape = Shape::new(
        "{ free: 3/minute, pro: 5/minute }",
        r#"      - name: orders
        match: { prefix: /orders }
        service: api
        auth: [main, partners]
      - name: admin
        match: { prefix: /admin }
        service: api
        auth: main
        require: { roles: [admin] }
"#,
    );
    let gw = Full::start(&shape, None).await;
    let client = gw.stack.client(gw.ports.http);
    let key = gw.partner_key.as_str();
    wait_for_route(&client, "/orders", 401).await;

    // By header: identity and plan from the key, never the key itself or the client's claims.
    let r = client
        .get("/orders/1")
        .header(API_KEY_HEADER, key)
        .header("x-client-plan", "enterprise")
        .header("x-client-id", "mallory")
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-client-id"), Some("partner-1"));
    assert_eq!(r.upstream_header("x-client-plan"), Some("pro"));
    assert_eq!(r.upstream_header("x-auth-provider"), Some("partners"));
    assert_eq!(r.upstream_header(API_KEY_HEADER), None);
    assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("4"));

    // By query parameter: the same client (one bucket), and the key is gone from the URL, also
    // when its name is percent-encoded (as a client may send it).
    let r = client
        .get(&format!("/orders/2?api_key={key}&page=3"))
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-client-id"), Some("partner-1"));
    assert_eq!(r.upstream_path(), Some("/orders/2"));
    assert_eq!(r.upstream_query(), Some("page=3"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("3"));
    let r = client
        .get(&format!("/orders/2?page=3&api%5Fkey={key}&z=9"))
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-client-id"), Some("partner-1"));
    // Envoy's ext_authz re-serializes the query it removed a key from (parameters sorted), so
    // compare the parameters, not their order.
    let mut params: Vec<&str> = r.upstream_query().unwrap_or("").split('&').collect();
    params.sort_unstable();
    assert_eq!(params, ["page=3", "z=9"], "{}", r.body);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("2"));

    // A wrong key is a 401 that says nothing about which part was wrong.
    let r = client
        .get("/orders")
        .header(API_KEY_HEADER, "not-a-key")
        .ok()
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "unauthorized");
    assert!(r.header("www-authenticate").is_some());

    // Remaining counts down to 0, then 429 with the spec's headers and body. A query without a
    // key reaches the upstream byte for byte.
    for remaining in ["1", "0"] {
        let r = client
            .get("/orders?q=a%26b%20c&z=1&a=2&flag")
            .header(API_KEY_HEADER, key)
            .ok()
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
        assert_eq!(r.upstream_query(), Some("q=a%26b%20c&z=1&a=2&flag"));
    }
    let r = client.get("/orders").header(API_KEY_HEADER, key).ok().await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(r.json()["error"], "too_many_requests");
    let retry_after: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After is whole seconds");
    // The quota frees one window after the first requests: never more than 60 s from now.
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(r.json()["retry_after"], retry_after, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        r.header("x-ratelimit-reset"),
        Some(retry_after.to_string().as_str())
    );
    assert!(r
        .header("ratelimit")
        .is_some_and(|v| v.ends_with(&format!(";r=0;t={retry_after}"))));
    assert!(r
        .header("ratelimit-policy")
        .is_some_and(|v| v.contains("q=5;w=60")));
    assert_eq!(
        r.json()["request_id"],
        r.header("x-request-id").expect("x-request-id")
    );
    // A JWT client on the default plan is untouched by the partner's bucket.
    let carol = token("carol", "free");
    let r = client
        .get("/orders")
        .header("authorization", &bearer(&carol))
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));

    // Authenticated without the required role: 403 JSON, nothing reaches the upstream.
    let hits = gw.upstream.hits();
    let r = client
        .get("/admin")
        .header("authorization", &bearer(&carol))
        .ok()
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(
        r.json()["request_id"],
        r.header("x-request-id").expect("x-request-id")
    );
    assert_eq!(gw.upstream.hits(), hits);
    // An API key is not a provider of /admin: 401, not 403.
    let r = client.get("/admin").header(API_KEY_HEADER, key).ok().await;
    assert_eq!(r.status, 401, "{}", r.body);
}

/// Envoy copies into each Check only the headers authz-service reads (`allowed_headers`:
/// `authorization`, the API-key headers, `x-request-id`). What a client tries with that: a
/// credential under another header name counts for nothing, two copies of one are still refused
/// as ambiguous (Envoy sends both), and a browser's worth of other headers changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_carries_only_credential_headers_and_still_refuses_doubled_ones() {
    let shape = Shape::new(
        "{ free: 100/minute, pro: 100/minute }",
        r#"      - name: orders
        match: { prefix: /orders }
        service: api
        auth: [main, partners]
"#,
    );
    let gw = Full::start(&shape, None).await;
    let client = gw.stack.client(gw.ports.http);
    let key = gw.partner_key.as_str();
    let jwt = bearer(&token("alice", "free"));
    wait_for_route(&client, "/orders", 401).await;

    let r = client
        .get("/orders")
        .header(API_KEY_HEADER, key)
        .header("cookie", "session=1; theme=dark")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64)")
        .header("accept-language", "en-GB,en;q=0.9")
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-client-id"), Some("partner-1"));
    assert_eq!(r.upstream_header("cookie"), Some("session=1; theme=dark"));

    for (what, headers) in [
        (
            "the key twice",
            vec![(API_KEY_HEADER, key), (API_KEY_HEADER, key)],
        ),
        (
            "the token twice",
            vec![
                ("authorization", jwt.as_str()),
                ("authorization", jwt.as_str()),
            ],
        ),
        ("the key under another name", vec![("x-partner-key", key)]),
        (
            "the token under another name",
            vec![("x-authorization", jwt.as_str())],
        ),
    ] {
        let mut req = client.get("/orders");
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let r = req.ok().await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.upstream_header("x-client-id"), None, "{what}");
    }
}
