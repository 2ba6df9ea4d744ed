//! `cache` on routes (spec §9) through a real Envoy, authz-service and ratelimit-service: hits
//! never reach the upstream (its request counter proves it) and carry `age`; answers expire by
//! `ttl` and by the upstream's shorter `max-age`; `no-store` and `private` answers are never
//! kept and a request with `Cache-Control: no-cache` reaches the upstream; on an authenticated
//! route each client has its own entries, and no header a client sends selects another's; a
//! rate-limited client is refused on a hit too; an edit that removes `cache` stops the replays.
//! The route's own work (prefix rewrite, header changes, credential removal) is done on the
//! requests that fill the cache as on any other.

use std::time::Duration;

use tests::authz::{bearer, token};
use tests::client::Reply;
use tests::gateway::{Full, Shape, API_KEY_HEADER};
use tests::wait::poll;
use tests::{wait_for, wait_for_route, HttpClient, CONVERGE_TIMEOUT};

const ROUTES: &str = r#"      - name: cached
        match: { prefix: /cached }
        rewrite: { prefix: /inside }
        service: api
        auth: [main, partners]
        rate_limit: none
        request_headers: { set: { x-route: cached } }
        response_headers: { set: { x-served-by: gateway } }
        cache: { ttl: 30s }
      - name: limited
        match: { prefix: /limited }
        service: api
        auth: main
        rate_limit: [{ limit: 2/minute, per: client }]
        cache: { ttl: 30s }
      - name: public
        match: { prefix: /public }
        service: api
        auth: none
        rate_limit: none
        cache: { ttl: 2s }
      - name: plain
        match: { prefix: /plain }
        service: api
        auth: none
        rate_limit: none
"#;

/// The route list without `cache` on `public`.
fn without_public_cache() -> String {
    ROUTES.replace("        cache: { ttl: 2s }\n", "")
}

/// `GET path` with `headers`; the upstream's request counter at the answer is `x-echo-hit`.
async fn get(client: &HttpClient, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client.get(path);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.ok().await
}

fn hit(r: &Reply) -> u64 {
    r.header("x-echo-hit")
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("no x-echo-hit in {} {:?}", r.status, r.body))
}

async fn start(routes: &str) -> (Full, HttpClient) {
    let gw = Full::start(
        &Shape::new("{ free: 100/minute, pro: 100/minute }", routes),
        None,
    )
    .await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/plain", 200).await;
    (gw, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_are_replayed_with_age_and_never_reach_the_upstream() {
    let (gw, client) = start(ROUTES).await;
    let first = get(&client, "/public/a?x=1", &[]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("age"), None, "a miss is not a replay");
    let before = gw.upstream.hits();
    for _ in 0..5 {
        let r = get(&client, "/public/a?x=1", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(hit(&r), hit(&first), "a replay is the first answer");
        assert!(r.header("age").is_some(), "a replay carries age");
        assert_eq!(r.body, first.body);
    }
    assert_eq!(gw.upstream.hits(), before, "hits never reach the upstream");
    // Another query is another entry.
    let other = get(&client, "/public/a?x=2", &[]).await;
    assert_eq!(gw.upstream.hits(), before + 1);
    assert_ne!(hit(&other), hit(&first));
    // An uncached route is forwarded every time.
    get(&client, "/plain", &[]).await;
    get(&client, "/plain", &[]).await;
    assert_eq!(gw.upstream.hits(), before + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_expire_by_ttl_and_by_a_shorter_max_age() {
    let (gw, client) = start(ROUTES).await;
    // ttl 2s: replayed at first, then fetched again.
    let first = get(&client, "/public/ttl", &[]).await;
    let cc = first
        .header("cache-control")
        .unwrap_or_default()
        .to_string();
    assert_eq!(cc, "max-age=2", "the gateway caps freshness at ttl");
    assert_eq!(hit(&get(&client, "/public/ttl", &[]).await), hit(&first));
    wait_for("the ttl to run out", Duration::from_secs(10), async || {
        let r = get(&client, "/public/ttl", &[]).await;
        (hit(&r) != hit(&first)).then_some(())
    })
    .await;

    // The upstream's max-age=1 is shorter than the ttl of the authenticated route (30s).
    let alice = bearer(&token("alice", "pro"));
    let short = [
        ("authorization", alice.as_str()),
        ("x-echo-cache-control", "max-age=1"),
    ];
    let first = get(&client, "/cached/short", &short).await;
    assert_eq!(first.header("cache-control"), Some("max-age=1"));
    let started = std::time::Instant::now();
    let again = wait_for(
        "max-age=1 to run out",
        Duration::from_secs(10),
        async || {
            let r = get(&client, "/cached/short", &short).await;
            (hit(&r) != hit(&first)).then_some(r)
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refetched after {:?}",
        started.elapsed()
    );
    assert_eq!(again.status, 200);
    let _ = gw;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_private_and_no_cache_reach_the_upstream() {
    let (gw, client) = start(ROUTES).await;
    for directive in ["no-store", "private, max-age=60"] {
        let h = [("x-echo-cache-control", directive)];
        let path = format!(
            "/public/{}",
            directive.split(',').next().unwrap_or_default()
        );
        let a = get(&client, &path, &h).await;
        let b = get(&client, &path, &h).await;
        assert_eq!(hit(&b), hit(&a) + 1, "`{directive}` is never cached");
        assert_eq!(b.header("age"), None);
    }
    // A cached answer, then a request that refuses it.
    let a = get(&client, "/public/fresh", &[]).await;
    assert_eq!(hit(&get(&client, "/public/fresh", &[]).await), hit(&a));
    let before = gw.upstream.hits();
    let b = get(&client, "/public/fresh", &[("cache-control", "no-cache")]).await;
    assert_eq!(b.status, 200);
    assert_eq!(
        gw.upstream.hits(),
        before + 1,
        "no-cache reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_never_receive_each_others_cached_answers() {
    let (gw, client) = start(ROUTES).await;
    let alice = bearer(&token("alice", "pro"));
    let bob = bearer(&token("bob", "pro"));
    let a1 = get(&client, "/cached/me", &[("authorization", &alice)]).await;
    assert_eq!(a1.status, 200, "{}", a1.body);
    // The route's own work was done on the request that filled the cache.
    assert_eq!(a1.upstream_path(), Some("/inside/me"));
    assert_eq!(a1.upstream_header("x-route"), Some("cached"));
    assert_eq!(a1.upstream_header("x-client-id"), Some("alice"));
    assert_eq!(a1.upstream_header("authorization"), None);
    assert_eq!(a1.upstream_header("x-gateway-cache-host"), None);
    assert_eq!(a1.upstream_header("x-gateway-cache-route"), None);
    let host = a1.upstream_header("host").unwrap_or_default().to_string();
    assert!(
        host.starts_with("127.0.0.1"),
        "the upstream sees the real Host: {host}"
    );
    assert_eq!(a1.header("x-served-by"), Some("gateway"));

    let a2 = get(&client, "/cached/me", &[("authorization", &alice)]).await;
    assert_eq!(hit(&a2), hit(&a1), "alice's second request is a hit");
    assert!(a2.header("age").is_some());

    let b1 = get(&client, "/cached/me", &[("authorization", &bob)]).await;
    assert_eq!(b1.status, 200);
    assert_ne!(hit(&b1), hit(&a1), "bob never gets alice's answer");
    assert_eq!(b1.upstream_header("x-client-id"), Some("bob"));

    // Bob naming alice in every header the gateway uses gets his own answer.
    let spoof = [
        ("authorization", bob.as_str()),
        ("x-client-id", "alice"),
        ("x-auth-provider", "main"),
        ("x-gateway-cache-host", "127.0.0.1"),
        ("x-gateway-cache-route", "0"),
        ("host", "p6d61696e.c616c696365.127.0.0.1"),
    ];
    let b2 = get(&client, "/cached/me", &spoof).await;
    assert_eq!(b2.status, 200, "{}", b2.body);
    assert_eq!(b2.upstream_header("x-client-id"), Some("bob"));
    assert_ne!(hit(&b2), hit(&a1));

    // An API key is another client, and its key never reaches the upstream.
    let p1 = get(&client, "/cached/me", &[(API_KEY_HEADER, &gw.partner_key)]).await;
    assert_eq!(p1.status, 200, "{}", p1.body);
    assert_eq!(p1.upstream_header("x-client-id"), Some("partner-1"));
    assert_eq!(p1.upstream_header(API_KEY_HEADER), None);
    assert_ne!(hit(&p1), hit(&a1));
    assert_ne!(hit(&p1), hit(&b1));

    // Without credentials: 401 on a hit path, nothing from the cache.
    let anon = get(&client, "/cached/me", &[]).await;
    assert_eq!(anon.status, 401);

    // On `auth: none`, a client-sent identity selects nothing: everyone shares the one entry.
    let shared = get(&client, "/public/shared", &[]).await;
    let spoofed = get(&client, "/public/shared", &[("x-client-id", "alice")]).await;
    assert_eq!(hit(&spoofed), hit(&shared));
    assert_eq!(spoofed.upstream_header("x-client-id"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_client_is_refused_on_a_hit() {
    let (gw, client) = start(ROUTES).await;
    let carol = bearer(&token("carol", "pro"));
    let first = get(&client, "/limited", &[("authorization", &carol)]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = get(&client, "/limited", &[("authorization", &carol)]).await;
    assert_eq!(second.status, 200);
    assert_eq!(hit(&second), hit(&first), "the second is a hit");
    let before = gw.upstream.hits();
    let third = get(&client, "/limited", &[("authorization", &carol)]).await;
    assert_eq!(third.status, 429, "the limit runs before the cache");
    assert_eq!(gw.upstream.hits(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_that_removes_cache_stops_the_replays() {
    let (gw, client) = start(&ROUTES.replace("ttl: 2s", "ttl: 1h")).await;
    let first = get(&client, "/public/edit", &[]).await;
    assert_eq!(hit(&get(&client, "/public/edit", &[]).await), hit(&first));

    let shape = Shape::new(
        "{ free: 100/minute, pro: 100/minute }",
        &without_public_cache(),
    );
    gw.stack.config.write(&gw.yaml(&shape));
    poll(CONVERGE_TIMEOUT, async || {
        let r = get(&client, "/public/edit", &[]).await;
        (hit(&r) != hit(&first)).then_some(())
    })
    .await
    .expect("the edit to reach Envoy");
    // From now on every request is forwarded.
    let before = gw.upstream.hits();
    let a = get(&client, "/public/edit", &[]).await;
    let b = get(&client, "/public/edit", &[]).await;
    assert_eq!(gw.upstream.hits(), before + 2);
    assert_ne!(hit(&a), hit(&b));
    assert_eq!(b.header("age"), None);
}
