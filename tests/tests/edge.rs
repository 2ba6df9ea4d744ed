//! Edge hardening through a real Envoy, as a client and an upstream see it: paths and hosts that
//! upstream frameworks normalize never slip past a protected route to a public one (401 or a 400
//! JSON body), spoofable and underscore-spelled headers never reach an upstream, CORS preflight
//! twins keep their route's policies, the access log never holds an API key, and a client that
//! sends its headers byte by byte is cut off by the header timeout.

use std::time::{Duration, Instant};

use tests::gateway::{Full, Shape, API_KEY_HEADER};
use tests::wait_for_route;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The header timeout the test's gateway sets: short, so the slow client is cut off quickly.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// A protected prefix and a protected host above a public catch-all; a method-limited public
/// route for the CORS preflight twin. Gateway-level keys follow the route list (they are keys
/// of the same gateway mapping).
const ROUTES: &str = r#"      - name: admin
        match: { prefix: /api/admin }
        service: api
        auth: main
      - name: admin-host
        match: { prefix: /, hosts: [admin.example.com] }
        service: api
        auth: main
      - name: reports
        match: { prefix: /reports, methods: [GET] }
        service: api
        auth: none
      - name: public
        match: { prefix: / }
        service: api
        auth: none
    cors: { origins: [https://app.example.com], methods: [GET] }
    timeouts: { request_headers: 1s }
"#;

/// The gateway of every test here, ready to route.
async fn start() -> Full {
    let gw = Full::start(
        &Shape::new("{ free: 100/minute, pro: 100/minute }", ROUTES),
        None,
    )
    .await;
    wait_for_route(&gw.stack.client(gw.ports.http), "/public", 200).await;
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalized_paths_and_hosts_never_bypass_a_protected_route() {
    let gw = start().await;
    let c = gw.stack.client(gw.ports.http);

    // Control: public paths with ordinary dots and spaces still work.
    for path in [
        "/public/x",
        "/api/files/my%20doc.pdf",
        "/api/v1.2/x",
        "/api/admin.json",
    ] {
        let r = c.get(path).ok().await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    // Control: the protected prefix is protected.
    assert_eq!(c.get("/api/admin/users").ok().await.status, 401);

    // Every normalization variant of the protected prefix: 401 (it took the protected
    // route) or the 400 JSON refusal, and never the upstream.
    let variants = [
        "/API/ADMIN/users",
        "/Api/Admin/users",
        "/api/admin;x=1/users",
        "/api/admin;/users",
        "/api/admin%3B/users",
        "/api/admin%3b/users",
        "/api/admin./users",
        "/api/admin%2e/users",
        "/api/admin%20/users",
        "/api/%20admin/users",
        "/api/admin%09/users",
        "/api/admin%0a/users",
        "/api/admin%7F/users",
    ];
    for path in variants {
        let hits = gw.upstream.hits();
        let id = format!("bypass-{}", hits);
        let r = c.get(path).header("x-request-id", &id).ok().await;
        match r.status {
            401 => {}
            400 => {
                assert_eq!(r.json()["error"], "bad_request", "{path}: {r:?}");
                assert_eq!(r.json()["request_id"], id.as_str(), "{path}: {r:?}");
                assert!(
                    r.header("content-type")
                        .unwrap_or("")
                        .starts_with("application/json"),
                    "{path}: {r:?}"
                );
            }
            other => panic!("{path}: {other}, expected 401 or 400: {r:?}"),
        }
        assert_eq!(gw.upstream.hits(), hits, "{path} reached the upstream");
    }
    // The query is not part of the path: `;` there is fine.
    assert_eq!(c.get("/public?q=a;b").ok().await.status, 200);

    // Host variants of the protected host: the hosts route takes them (401).
    for host in [
        "admin.example.com",
        "ADMIN.example.com",
        "admin.example.com.",
        "admin.example.com:",
        "admin.example.com.:8080",
    ] {
        let hits = gw.upstream.hits();
        let r = c.get("/public").host(host).ok().await;
        assert_eq!(r.status, 401, "Host: {host}: {r:?}");
        assert_eq!(
            gw.upstream.hits(),
            hits,
            "Host: {host} reached the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofable_and_underscore_headers_never_reach_the_upstream() {
    let gw = start().await;
    let c = gw.stack.client(gw.ports.http);
    // Underscore spellings of identity headers and the spoofable rewrite/override headers
    // never reach the upstream; their dash spellings of identity headers are removed as before.
    let spoofed = [
        "x-real-ip",
        "x-forwarded-host",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
    ];
    let mut req = c
        .get("/public/spoof")
        .header("x_user_roles", "admin")
        .header("x_user_id", "mallory")
        .header("x_client_id", "mallory");
    for h in spoofed {
        req = req.header(h, "/api/admin");
    }
    let r = req.ok().await;
    assert_eq!(r.status, 200, "{r:?}");
    for h in ["x_user_roles", "x_user_id", "x_client_id"]
        .into_iter()
        .chain(spoofed)
    {
        assert_eq!(
            r.upstream_header(h),
            None,
            "{h} reached the upstream: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_or_judged_by_their_routes_policies() {
    let gw = start().await;
    let c = gw.stack.client(gw.ports.http);
    // With an Origin, Envoy answers it and the upstream sees nothing.
    let hits = gw.upstream.hits();
    let r = c
        .request(reqwest::Method::OPTIONS, "/reports")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .header("authorization", "Bearer forged")
        .header("x-user-id", "mallory")
        .header(API_KEY_HEADER, &gw.partner_key)
        .ok()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(gw.upstream.hits(), hits, "a preflight reached the upstream");
    // Without an Origin it is no preflight: it takes a route with that route's policies (the
    // public catch-all here): credentials and identity headers removed, the anonymous limit
    // applied.
    let r = c
        .request(reqwest::Method::OPTIONS, "/reports")
        .header("access-control-request-method", "GET")
        .header("authorization", "Bearer forged")
        .header("x-user-id", "mallory")
        .header("x-client-id", "mallory")
        .header(API_KEY_HEADER, &gw.partner_key)
        .ok()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    for h in ["authorization", "x-user-id", "x-client-id", API_KEY_HEADER] {
        assert_eq!(
            r.upstream_header(h),
            None,
            "{h} reached the upstream: {r:?}"
        );
    }
    assert_eq!(r.header("x-ratelimit-limit"), Some("1000"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_never_holds_an_api_key() {
    let gw = start().await;
    let c = gw.stack.client(gw.ports.http);
    // A request refused before the key is removed (401 on a JWT-only route) is logged
    // without its query.
    let id = "refused-with-key";
    let r = c
        .get(&format!(
            "/api/admin/users?api_key={}&page=2",
            gw.partner_key
        ))
        .header("x-request-id", id)
        .ok()
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    let log_path = gw
        .stack
        .dir()
        .join(format!("envoy-{}.stdout.log", gw.stack.envoy.node_id()));
    // Envoy flushes its access log about once a second.
    let line = tests::wait_for("the access log line", Duration::from_secs(10), async || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.lines().find(|l| l.contains(id)).map(str::to_string)
    })
    .await;
    assert!(line.contains("/api/admin/users"), "{line}");
    assert!(
        !line.contains(&gw.partner_key) && !line.contains("api_key"),
        "the access log holds the key: {line}"
    );
}

/// Spec §3: a client-sent `x-request-id` is kept. A UUID is the id clients send most, and Envoy
/// by default rewrites its 15th character (the version nibble) to record a tracing decision;
/// the id must reach the upstream, the response, the access log and an error body unchanged,
/// whatever that character is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_uuid_request_id_is_kept_unchanged() {
    let gw = start().await;
    let c = gw.stack.client(gw.ports.http);
    // A version-4 UUID, one whose version nibble is what Envoy would write for "sampled", and
    // one that is not a version-4 UUID at all.
    let ids = [
        "3f2b8c1e-9a7d-4c5e-b1f0-6d2e8a4c9b70",
        "3f2b8c1e-9a7d-9c5e-b1f0-6d2e8a4c9b71",
        "3f2b8c1e-9a7d-1c5e-b1f0-6d2e8a4c9b72",
    ];
    for id in ids {
        let r = c.get("/public/x").header("x-request-id", id).ok().await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.upstream_header("x-request-id"),
            Some(id),
            "upstream: {r:?}"
        );
        assert_eq!(r.header("x-request-id"), Some(id), "response: {r:?}");
        // An error body built by Envoy carries the same id.
        let r = c
            .get("/api/admin/users")
            .header("x-request-id", id)
            .ok()
            .await;
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(r.json()["request_id"], id, "{r:?}");
    }
    let log_path = gw
        .stack
        .dir()
        .join(format!("envoy-{}.stdout.log", gw.stack.envoy.node_id()));
    for id in ids {
        let needle = format!("\"request_id\":\"{id}\"");
        let lines = tests::wait_for(
            "the access log lines",
            Duration::from_secs(10),
            async || {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let n = log.lines().filter(|l| l.contains(&needle)).count();
                (n == 2).then_some(n)
            },
        )
        .await;
        assert_eq!(lines, 2, "both requests with {id} are logged under it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_headers_slowly_is_cut_off() {
    let gw = start().await;
    let started = Instant::now();
    let cut_off = slow_headers(gw.ports.http, Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(
        cut_off,
        "a slow client still held its connection after {took:?}"
    );
    // Envoy's timers run on its event loop's cached clock, which can fire a few milliseconds
    // before the timeout measured from here has passed.
    assert!(
        took >= HEADER_TIMEOUT - Duration::from_millis(50) && took < HEADER_TIMEOUT * 5,
        "cut off after {took:?}, the header timeout is {HEADER_TIMEOUT:?}"
    );
}

/// Sends a request's headers one byte every 100 ms, never finishing them, until Envoy answers or
/// closes the connection (true) or `limit` passes (false).
async fn slow_headers(port: u16, limit: Duration) -> bool {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to Envoy");
    let head = b"GET /public HTTP/1.1\r\nhost: localhost\r\nx-slow: ";
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 512];
    let mut i = 0;
    while Instant::now() < deadline {
        let byte = head.get(i).copied().unwrap_or(b'a');
        i += 1;
        if stream.write_all(&[byte]).await.is_err() {
            return true;
        }
        // Either Envoy says something (its 408, or the close) within the next 100 ms, or the
        // client sends its next byte.
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                return true;
            }
            Err(_) => {}
        }
    }
    false
}
