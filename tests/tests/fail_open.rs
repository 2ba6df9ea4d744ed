//! `auth.service.on_error: allow` through a real Envoy (spec §4): with authz-service stopped, the
//! upstream receives no identity at all on any route (not one client-sent copy of an identity
//! header, on authenticated and `auth: none` routes alike) and Envoy's
//! `x-envoy-auth-failure-mode-allowed: true` says the request was not authenticated; a client
//! can neither send that marker nor be limited as the client it claims to be. With
//! authz-service back, the upstream sees the verified identity and no marker.

use tests::authz::{bearer, token_with_claims, AuthzService, ISSUER};
use tests::gateway::{Full, Shape, API_KEY_HEADER};
use tests::{wait_for, wait_for_route, HttpClient, CONVERGE_TIMEOUT};

/// Set by Envoy's ext_authz on a request it let through because authz-service failed.
const MARKER: &str = "x-envoy-auth-failure-mode-allowed";

/// A second provider (same issuer and secret as `main`) with more claim headers.
const TEAM_PROVIDER: &str = r#"    team:
      issuer: https://issuer.gateway.test
      algorithms: [HS256]
      secret_env: GATEWAY_E2E_SECRET
      headers: { x-user-id: sub, x-user-roles: roles, x-tenant-id: tenant_id }
"#;

const ROUTES: &str = r#"      - name: me
        match: { prefix: /me }
        service: api
        auth: [team, partners]
        rate_limit: none
      - name: by-user
        match: { prefix: /by-user }
        service: api
        auth: main
        rate_limit: [{ limit: 1/minute, per: "header:x-user-id" }]
      - name: public
        match: { prefix: /public }
        service: api
        auth: none
        rate_limit: none
"#;

/// Every identity header a client may try to set, with a value no credential produces, and a
/// forged failure-mode marker.
const SPOOFED: &[(&str, &str)] = &[
    ("x-user-id", "mallory"),
    ("x-client-id", "mallory"),
    ("x-client-plan", "enterprise"),
    ("x-auth-provider", "forged"),
    ("x-user-roles", "admin"),
    ("x-tenant-id", "evil-corp"),
    (MARKER, "forged"),
];

/// The identity headers the upstream may receive (from authz-service only).
const IDENTITY: &[&str] = &[
    "x-user-id",
    "x-client-id",
    "x-client-plan",
    "x-auth-provider",
    "x-user-roles",
    "x-tenant-id",
];

fn alice() -> String {
    token_with_claims(
        ISSUER,
        "alice",
        &["plan=pro", r#"roles=["reader"]"#, "tenant_id=acme"],
    )
}

/// GET `path` with every [`SPOOFED`] header and `extra` headers; asserts a 200 from the echo
/// upstream and returns what it received.
async fn spoofed_get(client: &HttpClient, path: &str, extra: &[(&str, &str)]) -> tests::Reply {
    let mut req = client.get(path);
    for (h, v) in SPOOFED.iter().chain(extra) {
        req = req.header(h, v);
    }
    let r = req.ok().await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    assert!(r.upstream().is_some(), "GET {path}: {}", r.body);
    r
}

/// The upstream received no identity header and no credential.
fn assert_anonymous(r: &tests::Reply, what: &str) {
    for h in IDENTITY {
        assert_eq!(
            r.upstream_header(h),
            None,
            "{what}: {h} reached the upstream"
        );
    }
    assert_eq!(r.upstream_header("authorization"), None, "{what}");
    assert_eq!(r.upstream_header(API_KEY_HEADER), None, "{what}");
}

/// With authz-service up: the verified identity, never a spoofed value, and no marker.
async fn assert_verified(client: &HttpClient, key: &str, when: &str) {
    let r = spoofed_get(client, "/me/1", &[("authorization", &bearer(&alice()))]).await;
    let expect = [
        ("x-user-id", "alice"),
        ("x-client-id", "alice"),
        ("x-client-plan", "pro"),
        ("x-auth-provider", "team"),
        ("x-user-roles", "reader"),
        ("x-tenant-id", "acme"),
    ];
    for (h, v) in expect {
        assert_eq!(r.upstream_header(h), Some(v), "{when}, token: {}", r.body);
    }
    assert_eq!(r.upstream_header(MARKER), None, "{when}, token: {}", r.body);
    assert_eq!(r.upstream_header("authorization"), None, "{when}");

    let r = spoofed_get(client, "/me/2", &[(API_KEY_HEADER, key)]).await;
    assert_eq!(
        r.upstream_header("x-client-id"),
        Some("partner-1"),
        "{when}"
    );
    assert_eq!(r.upstream_header("x-client-plan"), Some("pro"), "{when}");
    assert_eq!(r.upstream_header("x-auth-provider"), Some("partners"));
    for h in ["x-user-id", "x-user-roles", "x-tenant-id", MARKER] {
        assert_eq!(r.upstream_header(h), None, "{when}, API key: {h}");
    }
    assert_eq!(r.upstream_header(API_KEY_HEADER), None, "{when}");

    let r = spoofed_get(client, "/public", &[]).await;
    assert_anonymous(&r, &format!("{when}, auth: none"));
    assert_eq!(r.upstream_header(MARKER), None, "{when}, auth: none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_forwards_no_identity_and_marks_the_request() {
    let shape = Shape {
        authz_on_error: "allow",
        jwt_extra: TEAM_PROVIDER.to_string(),
        ..Shape::new("{ free: 100/minute, pro: 100/minute }", ROUTES)
    };
    let mut gw = Full::start(&shape, None).await;
    let client = gw.stack.client(gw.ports.http);
    let key = gw.partner_key.clone();
    wait_for_route(&client, "/public", 200).await;
    assert_verified(&client, &key, "authz-service up").await;

    // authz-service gone: Envoy lets requests through, unauthenticated.
    gw.authz.kill();
    let authz_port = gw.ports.authz;
    wait_for(
        "Envoy to fail open without authz-service",
        CONVERGE_TIMEOUT,
        async || {
            let r = client.get("/me").send().await.ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await;
    // With credentials, without, and with a forged marker: nothing the client claims arrives,
    // the credential does not either, and the marker is Envoy's own.
    let alice = bearer(&alice());
    for (what, extra) in [
        ("token", vec![("authorization", alice.as_str())]),
        ("API key", vec![(API_KEY_HEADER, key.as_str())]),
        ("no credential", vec![]),
    ] {
        let r = spoofed_get(&client, "/me/3", &extra).await;
        assert_anonymous(&r, &format!("fail-open, {what}"));
        assert_eq!(
            r.upstream_header(MARKER),
            Some("true"),
            "fail-open, {what}: {}",
            r.body
        );
    }
    // `auth: none` routes never ask authz-service: no identity and no marker, forged or not.
    let r = spoofed_get(&client, "/public", &[("authorization", &alice)]).await;
    assert_anonymous(&r, "fail-open, auth: none");
    assert_eq!(r.upstream_header(MARKER), None, "{}", r.body);

    // A limit keyed on an identity header counts a fail-open request as "no value", whatever
    // the client claims: two requests claiming two users share one bucket, and the user they
    // name keeps her own quota.
    let r = spoofed_get(&client, "/by-user", &[]).await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("1"));
    let r = client.get("/by-user").header("x-user-id", "bob").ok().await;
    assert_eq!(
        r.status, 429,
        "the claimed id is not the bucket: {}",
        r.body
    );

    // authz-service back: the verified identity again, and no marker.
    let log_dir = gw.stack.dir().to_path_buf();
    let xds = gw.stack.xds.grpc_addr();
    gw.authz = AuthzService::start_on("authz-again", &xds, authz_port, &log_dir).await;
    wait_for(
        "Envoy to reach authz-service again",
        CONVERGE_TIMEOUT,
        async || {
            let r = client.get("/me").send().await.ok()?;
            (r.status == 401).then_some(())
        },
    )
    .await;
    assert_verified(&client, &key, "authz-service back").await;
    // mallory's fail-open request was not counted as hers, nor as anyone's but "no value".
    let mallory = bearer(&token_with_claims(ISSUER, "mallory", &["plan=free"]));
    let r = client
        .get("/by-user")
        .header("authorization", &mallory)
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-user-id"), Some("mallory"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
}
