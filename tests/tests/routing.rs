//! Routing as a client and an upstream see it (spec §2 match keys, rewrite, respond, header
//! changes; §3 not-found answers and request ids), on SotW and Delta Envoys.

use tests::{free_port, sotw_and_delta, wait_for_route, EchoUpstream, Stack, XdsMode};

sotw_and_delta!(routing);

async fn routing(mode: XdsMode) {
    let users = EchoUpstream::start("users").await;
    let orders = EchoUpstream::start("orders").await;
    let other = EchoUpstream::start("other").await;
    let port = free_port();
    let yaml = format!(
        r#"version: 1
services:
  users: {{ endpoints: [{users}] }}
  orders: {{ endpoints: [{orders}] }}
  other: {{ endpoints: [{other}] }}
gateways:
  edge:
    listeners:
      - {{ name: http, port: {port} }}
    routes:
      - name: health
        match: {{ path: /health }}
        respond: {{ status: 200, json: {{ status: ok }} }}
        auth: none
      - name: exact
        match: {{ path: /exact }}
        service: other
        auth: none
      - name: users
        match: {{ prefix: /api/v1/users }}
        rewrite: {{ prefix: /users }}
        service: users
        auth: none
      - name: items
        match: {{ regex: "^/items/[0-9]+$" }}
        service: orders
        auth: none
      - name: writes
        match: {{ prefix: /methods, methods: [POST, PUT] }}
        service: orders
        auth: none
      - name: tenant-exact
        match: {{ prefix: /tenant, headers: {{ x-tenant: acme }} }}
        service: users
        auth: none
      - name: tenant-regex
        match: {{ prefix: /tenant, headers: {{ x-tenant: {{ regex: "^beta-[a-z]+$" }} }} }}
        service: orders
        auth: none
      - name: query
        match: {{ prefix: /search, query: {{ debug: "1" }} }}
        service: orders
        auth: none
      - name: host
        match: {{ prefix: /by-host, hosts: [api.example.com] }}
        service: users
        auth: none
      - name: decorate
        match: {{ prefix: /decorate }}
        service: other
        auth: none
        request_headers: {{ set: {{ x-gateway: edge }}, remove: [x-debug] }}
        response_headers: {{ set: {{ x-served-by: gateway }}, remove: [x-upstream] }}
"#,
        users = users.endpoint(),
        orders = orders.endpoint(),
        other = other.endpoint(),
    );
    let stack = Stack::start(mode, &yaml).await;
    let c = stack.client(port);

    // `respond`: answered by Envoy itself, JSON, no upstream involved.
    let r = wait_for_route(&c, "/health", 200).await;
    assert_eq!(r.json(), &serde_json::json!({ "status": "ok" }), "{r:?}");
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{r:?}"
    );
    assert_eq!(users.hits() + orders.hits() + other.hits(), 0);

    // path: exact only.
    let r = c.get("/exact").ok().await;
    assert_eq!((r.status, r.upstream()), (200, Some("other")), "{r:?}");
    assert_eq!(c.get("/exact/more").ok().await.status, 404);
    assert_eq!(c.get("/exactly").ok().await.status, 404);

    // prefix: segment-aware, with rewrite.
    for (path, upstream_path) in [
        ("/api/v1/users", "/users"),
        ("/api/v1/users/42", "/users/42"),
        ("/api/v1/users/42/orders?x=1", "/users/42/orders"),
    ] {
        let r = c.get(path).ok().await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.upstream(), Some("users"), "{path}");
        assert_eq!(r.upstream_path(), Some(upstream_path), "{path}");
    }
    let r = c.get("/api/v1/users/42/orders?x=1").ok().await;
    assert_eq!(r.json()["query"], "x=1");
    assert_eq!(
        c.get("/api/v1/usersx").ok().await.status,
        404,
        "prefix must respect path segments"
    );
    assert_eq!(c.get("/api/v1/user").ok().await.status, 404);

    // regex: the whole path.
    assert_eq!(c.get("/items/17").ok().await.upstream(), Some("orders"));
    assert_eq!(c.get("/items/abc").ok().await.status, 404);
    assert_eq!(c.get("/items/17/x").ok().await.status, 404);

    // methods.
    assert_eq!(
        c.post("/methods").body("x").ok().await.upstream(),
        Some("orders")
    );
    let r = c.request(reqwest::Method::PUT, "/methods").ok().await;
    assert_eq!((r.status, r.json()["method"].as_str()), (200, Some("PUT")));
    assert_eq!(c.get("/methods").ok().await.status, 404);

    // headers: exact, then regex, then no match.
    let tenant = |v: &'static str| c.get("/tenant").header("x-tenant", v);
    assert_eq!(tenant("acme").ok().await.upstream(), Some("users"));
    assert_eq!(tenant("beta-corp").ok().await.upstream(), Some("orders"));
    assert_eq!(tenant("beta-42").ok().await.status, 404);
    assert_eq!(tenant("acme2").ok().await.status, 404);
    assert_eq!(c.get("/tenant").ok().await.status, 404);

    // query parameters.
    assert_eq!(
        c.get("/search?debug=1").ok().await.upstream(),
        Some("orders")
    );
    assert_eq!(
        c.get("/search?q=a&debug=1").ok().await.upstream(),
        Some("orders")
    );
    assert_eq!(c.get("/search?debug=2").ok().await.status, 404);
    assert_eq!(c.get("/search").ok().await.status, 404);

    // hosts (a Host with the port, as clients send for a non-default port, matches too).
    assert_eq!(
        c.get("/by-host")
            .host("api.example.com")
            .ok()
            .await
            .upstream(),
        Some("users")
    );
    let with_port = format!("api.example.com:{port}");
    assert_eq!(
        c.get("/by-host").host(&with_port).ok().await.upstream(),
        Some("users"),
        "Host {with_port}"
    );
    assert_eq!(
        c.get("/by-host")
            .host("other.example.com")
            .ok()
            .await
            .status,
        404
    );

    // Request and response header changes.
    let r = c
        .get("/decorate")
        .header("x-debug", "1")
        .header("x-gateway", "spoofed")
        .ok()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upstream_header("x-gateway"), Some("edge"));
    assert_eq!(
        r.upstream_header("x-debug"),
        None,
        "x-debug must be removed: {r:?}"
    );
    assert_eq!(r.header("x-served-by"), Some("gateway"));
    assert_eq!(
        r.header("x-upstream"),
        None,
        "x-upstream must be removed from the response"
    );

    // No route: 404 JSON with a request id that matches the header.
    let r = c.get("/nowhere").ok().await;
    assert_eq!(r.status, 404);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{r:?}"
    );
    assert_eq!(r.json()["error"], "not_found", "{r:?}");
    let id = r
        .header("x-request-id")
        .expect("404 carries x-request-id")
        .to_string();
    assert!(!id.is_empty());
    assert_eq!(r.json()["request_id"], id.as_str(), "{r:?}");

    // Request ids: a client's is kept end to end; otherwise one is generated and shared.
    let r = c
        .get("/api/v1/users/1")
        .header("x-request-id", "client-chosen-id-1")
        .ok()
        .await;
    assert_eq!(
        r.upstream_header("x-request-id"),
        Some("client-chosen-id-1")
    );
    assert_eq!(r.header("x-request-id"), Some("client-chosen-id-1"));
    let r = c.get("/api/v1/users/1").ok().await;
    let generated = r
        .upstream_header("x-request-id")
        .expect("upstream gets a generated x-request-id");
    assert!(!generated.is_empty());
    assert_eq!(
        r.header("x-request-id"),
        Some(generated),
        "the client sees the id the upstream saw"
    );
    let r = c
        .get("/nowhere")
        .header("x-request-id", "client-chosen-id-2")
        .ok()
        .await;
    assert_eq!(r.header("x-request-id"), Some("client-chosen-id-2"));
    assert_eq!(r.json()["request_id"], "client-chosen-id-2");
    let r = c.get("/health").ok().await;
    assert!(
        r.header("x-request-id").is_some(),
        "direct responses carry x-request-id too: {r:?}"
    );

    // The upstream sees the forwarding headers Envoy sets.
    let r = c.get("/api/v1/users/1").ok().await;
    assert_eq!(r.upstream_header("x-forwarded-proto"), Some("http"));
    assert!(r.upstream_header("x-forwarded-for").is_some(), "{r:?}");

    stack.wait_converged().await;
}
