//! Claim arrays reach the upstream unambiguously through a real Envoy: a token whose `roles`
//! array holds an element with a comma (`["user,admin"]`) must not read as the two roles `user`
//! and `admin` to an upstream that splits the header on commas, and the client's own copy of the
//! header is removed all the same.

use tests::authz::{bearer, token_with_claims, ISSUER};
use tests::gateway::{Full, Shape};
use tests::wait_for_route;

/// A second JWT provider (same secret and issuer as `main`) that maps `roles` to a header.
const ROLES_PROVIDER: &str = r#"    roles:
      issuer: https://issuer.gateway.test
      algorithms: [HS256]
      secret_env: GATEWAY_E2E_SECRET
      headers: { x-user-roles: roles }
"#;

const ROUTES: &str = r#"      - name: me
        match: { prefix: /me }
        service: api
        auth: roles
        rate_limit: none
      - name: public
        match: { prefix: /public }
        service: api
        auth: none
        rate_limit: none
"#;

/// A token from the test issuer with `roles` set to the JSON array `roles`.
fn token_with_roles(roles: &str) -> String {
    token_with_claims(ISSUER, "carol", &[&format!("roles={roles}")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_array_with_a_comma_in_an_element_is_not_forwarded() {
    let mut shape = Shape::new("{ free: 100/minute, pro: 100/minute }", ROUTES);
    shape.jwt_extra = ROLES_PROVIDER.to_string();
    let gw = Full::start(&shape, None).await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/public", 200).await;

    // A plain array is comma-joined as before.
    let plain = token_with_roles(r#"["user","reader"]"#);
    let r = client
        .get("/me")
        .header("authorization", &bearer(&plain))
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-user-roles"), Some("user,reader"));

    // An element with a comma: no value at all reaches the upstream, not even the client's own.
    let forged = token_with_roles(r#"["user,admin"]"#);
    let r = client
        .get("/me")
        .header("authorization", &bearer(&forged))
        .header("x-user-roles", "admin")
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-user-roles"), None, "{}", r.body);

    // Mixed with ordinary elements it is refused just the same.
    let mixed = token_with_roles(r#"["reader","user,admin"]"#);
    let r = client
        .get("/me")
        .header("authorization", &bearer(&mixed))
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-user-roles"), None, "{}", r.body);
}
