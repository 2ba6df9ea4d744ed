//! ext_authz Check over real gRPC on a real socket: identity out, API keys, denials as the spec
//! says, and malformed input always answered with a deny, never a gRPC error.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use authz_service::apikey::{Edit, KeyRecord, KeysFile};
use authz_service::grpc::AuthzServer;
use authz_service::policy::Policy;
use authz_service::service::{AuthzService, Shared};
use common::*;
use jsonwebtoken::Algorithm;
use proto::authz::{jwt_provider::Keys, AuthPolicy, RoutePolicy};
use proto::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use proto::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use proto::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckRequest, CheckResponse,
};
use proto::pb::google::protobuf::value::Kind;
use serde_json::{json, Value};
use tonic::transport::Channel;

struct Keys3 {
    active: String,
    revoked: String,
    expired: String,
}

fn keys_file() -> (Vec<u8>, Keys3) {
    let mut f = KeysFile::default();
    let rec = |id: &str| KeyRecord {
        id: id.into(),
        sha256: [0; 32],
        plan: "pro".into(),
        roles: vec!["partner".into()],
        scopes: vec![],
        tenant: "acme".into(),
        created: 0,
        expires: None,
        revoked: None,
    };
    let active = f.create(rec("partner-a")).unwrap();
    let revoked = f.create(rec("partner-r")).unwrap();
    let expired = f
        .create(KeyRecord {
            expires: Some(1),
            ..rec("partner-x")
        })
        .unwrap();
    f.revoke("partner-r", 5).unwrap();
    (
        f.render().into_bytes(),
        Keys3 {
            active,
            revoked,
            expired,
        },
    )
}

fn test_policy(keys: Vec<u8>) -> AuthPolicy {
    let rsa = jwks(&[jwk("rsa2048.pem", Algorithm::RS256, Some("r1"), true)]);
    let mut fwd = jwt_provider("fwd", &["HS256"], Keys::SecretEnv(SECRET_VAR.into()));
    fwd.forward_token = true;
    fwd.issuer = "https://fwd.test".into();
    let mut p = AuthPolicy {
        jwt: vec![jwt_provider("main", &["RS256"], Keys::Jwks(rsa)), fwd],
        api_keys: vec![api_provider("partners", keys)],
        routes: vec![
            route("users", &["main", "partners"]),
            route("fwd", &["fwd"]),
            route("health", &[]),
            RoutePolicy {
                require_roles: vec!["admin".into()],
                require_scopes: vec!["orders:write".into()],
                ..route("admin", &["main", "partners"])
            },
        ],
        default_plan: "free".into(),
        plans: vec!["free".into(), "pro".into()],
        ..Default::default()
    };
    p.identity_headers = identity_headers(&p);
    // What xds-server ships for one API-key provider on `x-api-key` and `?api_key=`.
    p.credential_headers = vec!["x-api-key".into()];
    p.credential_query = vec!["api_key".into()];
    p
}

async fn start(shared: Arc<Shared>) -> AuthorizationClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            // The production endpoint, with its lenient decoder.
            .add_service(AuthzServer::new(AuthzService::new(shared)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn setup() -> (AuthorizationClient<Channel>, Keys3, Arc<Shared>) {
    let (file, keys) = keys_file();
    let shared = Shared::new();
    shared
        .policy
        .store(Some(Arc::new(compile(&test_policy(file)))));
    (start(shared.clone()).await, keys, shared)
}

async fn check(c: &mut AuthorizationClient<Channel>, req: CheckRequest) -> CheckResponse {
    // Never a gRPC error, whatever the input.
    c.check(req)
        .await
        .expect("Check must answer, not fail")
        .into_inner()
}

struct Denied {
    status: i32,
    headers: HashMap<String, String>,
    body: Value,
}

fn denied(r: &CheckResponse) -> Denied {
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => Denied {
            status: d.status.as_ref().map_or(0, |s| s.code),
            headers: d
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref().map(|h| (h.key.clone(), h.value.clone())))
                .collect(),
            body: serde_json::from_str(&d.body).unwrap(),
        },
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[derive(Debug)]
struct Allowed {
    set: HashMap<String, String>,
    removed: Vec<String>,
    removed_query: Vec<String>,
    metadata: HashMap<String, String>,
}

fn allowed(r: &CheckResponse) -> Allowed {
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(0));
    let metadata = r
        .dynamic_metadata
        .as_ref()
        .map(|m| {
            m.fields
                .iter()
                .map(|(k, v)| match &v.kind {
                    Some(Kind::StringValue(s)) => (k.clone(), s.clone()),
                    other => panic!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    match &r.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            let mut set = HashMap::new();
            for h in &ok.headers {
                let hv = h.header.as_ref().unwrap();
                assert!(
                    set.insert(hv.key.clone(), hv.value.clone()).is_none(),
                    "set twice: {}",
                    hv.key
                );
            }
            for r in &ok.headers_to_remove {
                assert!(!set.contains_key(r), "{r} is both set and removed");
            }
            Allowed {
                set,
                removed: ok.headers_to_remove.clone(),
                removed_query: ok.query_parameters_to_remove.clone(),
                metadata,
            }
        }
        other => panic!("expected an allow, got {other:?}"),
    }
}

#[tokio::test]
async fn jwt_identity_goes_upstream_and_spoofed_headers_do_not() {
    let (mut c, _, _) = setup().await;
    let t = token(
        "rsa2048.pem",
        Algorithm::RS256,
        "r1",
        &claims(json!({
            "sub": "alice", "plan": "pro", "roles": ["user", "admin"],
            "org": {"tenant": "t-1"}, "https://example.com/email": "a@example.com"
        })),
    );
    let auth = format!("Bearer {t}");
    let r = check(
        &mut c,
        check_request(
            Some("users"),
            &[
                ("authorization", &auth),
                ("x-user-id", "mallory"),
                ("x-client-plan", "enterprise"),
                ("x-user-email", "spoof@evil.test"),
                ("x-request-id", "rid-1"),
            ],
            "/users/1",
        ),
    )
    .await;
    let a = allowed(&r);
    let want: HashMap<String, String> = [
        ("x-user-id", "alice"),
        ("x-user-roles", "user,admin"),
        ("x-tenant-id", "t-1"),
        ("x-user-email", "a@example.com"),
        ("x-client-id", "alice"),
        ("x-client-plan", "pro"),
        ("x-auth-provider", "main"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(a.set, want);
    // Everything set overwrites the client's copy; the rest of the credentials are removed.
    for h in ["authorization", "x-api-key"] {
        assert!(
            a.removed.contains(&h.to_string()),
            "{h} not removed: {:?}",
            a.removed
        );
    }
    // No key in the query: Envoy is not asked to touch the query string.
    assert!(a.removed_query.is_empty(), "{a:?}");
    assert_eq!(a.metadata["client_id"], "alice");
    assert_eq!(a.metadata["plan"], "pro");
    assert_eq!(a.metadata["tenant"], "t-1");
    assert_eq!(a.metadata["provider"], "main");
}

#[tokio::test]
async fn missing_claims_headers_are_removed_and_the_default_plan_applies() {
    let (mut c, _, _) = setup().await;
    let t = token(
        "rsa2048.pem",
        Algorithm::RS256,
        "r1",
        &claims(json!({"sub": "bob"})),
    );
    let auth = format!("Bearer {t}");
    let a = allowed(
        &check(
            &mut c,
            check_request(
                Some("users"),
                &[("authorization", &auth), ("x-user-roles", "admin")],
                "/",
            ),
        )
        .await,
    );
    assert_eq!(a.set["x-client-plan"], "free");
    assert!(!a.set.contains_key("x-user-roles"));
    assert!(a.removed.contains(&"x-user-roles".to_string()));
    assert!(a.removed.contains(&"x-tenant-id".to_string()));
    assert!(
        !a.metadata.contains_key("tenant"),
        "empty values are left out"
    );
}

/// A credential naming a plan `rate_limits.plans` does not define is accepted, limited as the
/// default plan, and the upstream is told the default plan: never the name the credential gave.
#[tokio::test]
async fn an_unknown_plan_is_applied_and_forwarded_as_the_default_plan() {
    let mut f = KeysFile::default();
    let gold = f
        .create(KeyRecord {
            id: "partner-g".into(),
            sha256: [0; 32],
            plan: "gold".into(),
            roles: vec![],
            scopes: vec![],
            tenant: String::new(),
            created: 0,
            expires: None,
            revoked: None,
        })
        .unwrap();
    let shared = Shared::new();
    shared.policy.store(Some(Arc::new(compile(&test_policy(
        f.render().into_bytes(),
    )))));
    let mut c = start(shared.clone()).await;
    let plan_of = async |c: &mut AuthorizationClient<Channel>, headers: &[(&str, &str)]| {
        let a = allowed(&check(c, check_request(Some("users"), headers, "/")).await);
        assert_eq!(
            a.set.get("x-client-plan"),
            a.metadata.get("plan"),
            "the upstream and the limiter are told the same plan: {a:?}"
        );
        a.set["x-client-plan"].clone()
    };
    let bearer = |plan: Value| {
        format!(
            "Bearer {}",
            token(
                "rsa2048.pem",
                Algorithm::RS256,
                "r1",
                &claims(json!({ "plan": plan })),
            )
        )
    };

    // A defined plan is the client's; anything else is the default plan. Plan names are exact:
    // another spelling of a defined plan is not that plan.
    assert_eq!(
        plan_of(&mut c, &[("authorization", &bearer(json!("pro")))]).await,
        "pro"
    );
    let gold_token = bearer(json!("gold"));
    for spoofed in ["gold", "pro", "enterprise"] {
        // Twice the same token: the second answer comes from the verified-token cache, and is
        // counted all the same. A client-sent x-client-plan changes nothing.
        let headers = [
            ("authorization", gold_token.as_str()),
            ("x-client-plan", spoofed),
        ];
        assert_eq!(plan_of(&mut c, &headers).await, "free");
    }
    for other in [json!("PRO"), json!("pro "), json!(3)] {
        assert_eq!(
            plan_of(&mut c, &[("authorization", &bearer(other.clone()))]).await,
            "free",
            "{other}"
        );
    }
    assert_eq!(plan_of(&mut c, &[("x-api-key", &gold)]).await, "free");
    // No plan named (or an empty one) is the default plan too, and is not an unknown plan.
    assert_eq!(
        plan_of(&mut c, &[("authorization", &bearer(Value::Null))]).await,
        "free"
    );
    assert_eq!(
        plan_of(&mut c, &[("authorization", &bearer(json!("")))]).await,
        "free"
    );

    let m = shared.metrics.render();
    assert!(
        m.contains(r#"authz_unknown_plan_total{provider="main"} 6"#),
        "3 gold, PRO, \"pro \" and 3: {m}"
    );
    assert!(
        m.contains(r#"authz_unknown_plan_total{provider="partners"} 1"#),
        "{m}"
    );
    assert!(
        !m.contains("gold"),
        "never labelled by a client's value: {m}"
    );
}

/// A policy whose default plan is not among its plans (an xds-server that does not ship the
/// list) is refused: taken as is, every client would be demoted to the default plan.
#[test]
fn a_policy_without_its_default_plan_among_its_plans_is_refused() {
    let (file, _) = keys_file();
    let mut p = test_policy(file);
    compile(&p);
    for plans in [vec![], vec!["pro".to_string()]] {
        p.plans = plans;
        let e = Policy::compile(&p, &mut TestEnv::new())
            .err()
            .expect("refused");
        assert!(e.to_string().contains("default plan \"free\""), "{e}");
    }
    // No plans and no default plan: a config without plans.
    p.plans.clear();
    p.default_plan.clear();
    compile(&p);
}

#[tokio::test]
async fn forward_token_keeps_authorization() {
    let (mut c, _, _) = setup().await;
    let t = hs_token(
        Algorithm::HS256,
        &claims(json!({"iss": "https://fwd.test"})),
    );
    let auth = format!("Bearer {t}");
    let a = allowed(
        &check(
            &mut c,
            check_request(Some("fwd"), &[("authorization", &auth)], "/"),
        )
        .await,
    );
    assert!(!a.removed.contains(&"authorization".to_string()));
    assert_eq!(a.set["x-auth-provider"], "fwd");
    // The route does not accept API keys, but a key the client sent along still never
    // reaches the upstream (spec §4).
    let a = allowed(
        &check(
            &mut c,
            check_request(
                Some("fwd"),
                &[("authorization", &auth), ("x-api-key", "gwk_stray")],
                "/?api_key=gwk_stray",
            ),
        )
        .await,
    );
    assert!(a.removed.contains(&"x-api-key".to_string()));
    assert_eq!(a.removed_query, ["api_key"]);
}

#[tokio::test]
async fn api_keys_from_header_or_query() {
    let (mut c, keys, _) = setup().await;
    let a = allowed(
        &check(
            &mut c,
            check_request(Some("users"), &[("x-api-key", &keys.active)], "/"),
        )
        .await,
    );
    assert_eq!(a.set["x-client-id"], "partner-a");
    assert_eq!(a.set["x-client-plan"], "pro");
    assert_eq!(a.set["x-auth-provider"], "partners");
    assert_eq!(a.metadata["tenant"], "acme");
    assert!(a.removed.contains(&"x-api-key".to_string()));
    assert!(a.removed.contains(&"authorization".to_string()));

    let path = format!("/users?page=2&api_key={}&x=1", keys.active);
    let a = allowed(&check(&mut c, check_request(Some("users"), &[], &path)).await);
    assert_eq!(a.set["x-client-id"], "partner-a");
    assert_eq!(a.removed_query, ["api_key"]);
    // A percent-encoded name is read as the key, and removed as spelled (Envoy matches the
    // names it is given undecoded).
    let path = format!("/users?page=2&api%5Fkey={}", keys.active);
    let a = allowed(&check(&mut c, check_request(Some("users"), &[], &path)).await);
    assert_eq!(a.set["x-client-id"], "partner-a");
    assert_eq!(a.removed_query, ["api%5Fkey"]);

    // Unknown, revoked and expired keys get the very same answer.
    let mut bodies = Vec::new();
    for k in [&keys.revoked, &keys.expired, &"gwk_unknown".to_string()] {
        let d = denied(
            &check(
                &mut c,
                check_request(
                    Some("users"),
                    &[("x-api-key", k), ("x-request-id", "r")],
                    "/",
                ),
            )
            .await,
        );
        assert_eq!(d.status, 401);
        bodies.push(d.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_eq!(bodies[0]["message"], "the API key is invalid");

    // A key given twice in the query is ambiguous.
    let path = format!("/?api_key={0}&api_key={0}", keys.active);
    let d = denied(&check(&mut c, check_request(Some("users"), &[], &path)).await);
    assert_eq!(d.status, 401);
}

#[tokio::test]
async fn denials_follow_the_spec() {
    let (mut c, keys, _) = setup().await;
    // No credentials: 401, JSON body with the request id, a challenge for each provider kind.
    let d = denied(
        &check(
            &mut c,
            check_request(Some("users"), &[("x-request-id", "abc-123")], "/"),
        )
        .await,
    );
    assert_eq!(d.status, 401);
    assert_eq!(d.body["error"], "unauthorized");
    assert_eq!(d.body["request_id"], "abc-123");
    assert_eq!(d.headers["content-type"], "application/json");
    assert_eq!(
        d.headers["www-authenticate"],
        r#"Bearer realm="gateway", ApiKey realm="gateway", header="x-api-key""#
    );
    // A bad token says invalid_token.
    let d = denied(
        &check(
            &mut c,
            check_request(Some("users"), &[("authorization", "Bearer x.y.z")], "/"),
        )
        .await,
    );
    assert_eq!(d.status, 401);
    assert!(d.headers["www-authenticate"].contains(r#"error="invalid_token""#));
    // Expired tokens say so.
    let t = token(
        "rsa2048.pem",
        Algorithm::RS256,
        "r1",
        &claims(json!({"exp": now() - 3600})),
    );
    let d = denied(
        &check(
            &mut c,
            check_request(
                Some("users"),
                &[("authorization", &format!("Bearer {t}"))],
                "/",
            ),
        )
        .await,
    );
    assert_eq!(d.body["message"], "the token has expired");

    // Authenticated but lacking a role or scope: 403.
    let t = token(
        "rsa2048.pem",
        Algorithm::RS256,
        "r1",
        &claims(json!({"roles": ["admin"], "scope": "orders:read"})),
    );
    let d = denied(
        &check(
            &mut c,
            check_request(
                Some("admin"),
                &[
                    ("authorization", &format!("Bearer {t}")),
                    ("x-request-id", "q"),
                ],
                "/",
            ),
        )
        .await,
    );
    assert_eq!(d.status, 403);
    assert_eq!(
        d.body,
        json!({"error": "forbidden", "message": "access denied", "request_id": "q"})
    );
    assert!(!d.headers.contains_key("www-authenticate"));
    let t = token(
        "rsa2048.pem",
        Algorithm::RS256,
        "r1",
        &claims(json!({"roles": "admin user", "scope": "orders:read orders:write"})),
    );
    allowed(
        &check(
            &mut c,
            check_request(
                Some("admin"),
                &[("authorization", &format!("Bearer {t}"))],
                "/",
            ),
        )
        .await,
    );
    // API keys carry roles but no such scope.
    let d = denied(
        &check(
            &mut c,
            check_request(Some("admin"), &[("x-api-key", &keys.active)], "/"),
        )
        .await,
    );
    assert_eq!(d.status, 403);
}

#[tokio::test]
async fn public_routes_strip_identity_headers_and_credentials() {
    let (mut c, keys, shared) = setup().await;
    let public = check_request(
        Some("health"),
        &[
            ("x-client-id", "spoof"),
            ("x-api-key", &keys.active),
            ("authorization", "Bearer x"),
        ],
        "/health?api_key=k",
    );
    let a = allowed(&check(&mut c, public.clone()).await);
    assert!(a.set.is_empty());
    for h in ["x-client-id", "x-user-id", "x-api-key"] {
        assert!(a.removed.contains(&h.to_string()), "{h}: {a:?}");
    }
    assert_eq!(a.removed_query, ["api_key"]);
    assert!(
        !a.removed.contains(&"authorization".to_string()),
        "the policy does not ask for it"
    );
    assert!(a.metadata.is_empty());

    // The policy asks for it (no provider forwards tokens): Authorization goes on public routes
    // too (spec §4).
    let (file, _) = keys_file();
    let mut p = test_policy(file);
    p.public_strips_authorization = true;
    shared.policy.store(Some(Arc::new(compile(&p))));
    let a = allowed(&check(&mut c, public).await);
    assert!(a.removed.contains(&"authorization".to_string()), "{a:?}");
}

#[tokio::test]
async fn malformed_input_is_a_deny_never_an_error() {
    let (mut c, keys, shared) = setup().await;
    // Unknown or missing route.
    for route in [Some("nope"), None] {
        let d = denied(
            &check(
                &mut c,
                check_request(route, &[("x-api-key", &keys.active)], "/"),
            )
            .await,
        );
        assert_eq!(d.status, 403);
    }
    // No attributes at all.
    let d = denied(&check(&mut c, CheckRequest::default()).await);
    assert_eq!(d.status, 403);
    // Non-UTF-8 credentials in raw header maps (Envoy's encode_raw_headers).
    let mut req = check_request(Some("users"), &[], "/");
    let http = req
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    http.header_map = Some(HeaderMap {
        headers: vec![HeaderValue {
            key: "x-api-key".into(),
            raw_value: vec![0xff, 0xfe, b'k'],
            ..Default::default()
        }],
    });
    assert_eq!(denied(&check(&mut c, req.clone()).await).status, 401);
    // The same key as valid raw bytes is accepted.
    let http = req
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    http.header_map.as_mut().unwrap().headers[0].raw_value = keys.active.clone().into_bytes();
    allowed(&check(&mut c, req.clone()).await);
    // Two copies of a credential header are ambiguous.
    let http = req
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    let dup = http.header_map.as_ref().unwrap().headers[0].clone();
    http.header_map.as_mut().unwrap().headers.push(dup);
    assert_eq!(denied(&check(&mut c, req).await).status, 401);
    // Garbage everywhere.
    for (k, v) in [
        ("authorization", "Bearer"),
        ("authorization", "Bearer ...."),
        ("authorization", "Bearer \u{1F600}.\u{1F600}.\u{1F600}"),
        ("authorization", &"A".repeat(100_000)),
        ("x-api-key", "\u{0}"),
    ] {
        let d = denied(
            &check(
                &mut c,
                check_request(Some("users"), &[(k, v)], "/%zz?api_key=%zz"),
            )
            .await,
        );
        assert_eq!(d.status, 401, "{k}: {v:.20}");
    }
    // A long or hostile request id is echoed safely (JSON-escaped, truncated).
    let rid = format!("\"}}<script>{}", "x".repeat(500));
    let d = denied(
        &check(
            &mut c,
            check_request(Some("users"), &[("x-request-id", &rid)], "/"),
        )
        .await,
    );
    assert_eq!(d.body["request_id"].as_str().unwrap().chars().count(), 128);

    // Before the first policy: 503, still a response.
    shared.policy.store(None);
    let d = denied(&check(&mut c, check_request(Some("users"), &[], "/")).await);
    assert_eq!(d.status, 503);
    assert_eq!(d.body["error"], "unavailable");
}

#[tokio::test]
async fn decisions_are_counted() {
    let (mut c, keys, shared) = setup().await;
    check(
        &mut c,
        check_request(Some("users"), &[("x-api-key", &keys.active)], "/"),
    )
    .await;
    check(
        &mut c,
        check_request(Some("users"), &[("x-api-key", &keys.revoked)], "/"),
    )
    .await;
    let m = shared.metrics.render();
    assert!(
        m.contains(r#"authz_decisions_total{decision="allow",provider="partners",reason="ok"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"authz_decisions_total{decision="deny",provider="partners",reason="revoked_key"} 1"#
        ),
        "{m}"
    );
    assert!(m.contains("authz_check_duration_seconds_bucket"), "{m}");
    // The same token twice: verified once, then answered by the cache.
    let t = token("rsa2048.pem", Algorithm::RS256, "r1", &claims(json!({})));
    let auth = format!("Bearer {t}");
    for _ in 0..2 {
        allowed(
            &check(
                &mut c,
                check_request(Some("users"), &[("authorization", &auth)], "/"),
            )
            .await,
        );
    }
    let m = shared.metrics.render();
    assert!(
        m.contains(r#"authz_token_cache_total{result="hit"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"authz_token_cache_total{result="miss"} 1"#),
        "{m}"
    );
}

/// A revoked, an expired and an unknown API key get byte-for-byte the same answer (spec §3: no
/// message tells whether a key exists), while the metrics and the debug line of each denial tell
/// them apart, as they tell an expired JWT from a forged one. No log line, at any level, holds a
/// key, a token or a secret.
#[tokio::test]
async fn refused_keys_answer_alike_and_differ_only_in_metrics_and_logs() {
    use prost::Message;
    let logs = test_support::capture_logs();
    let (mut c, keys, shared) = setup().await;
    let unknown = format!("gwk_{}", "Q".repeat(43));
    let mut answers = Vec::new();
    for key in [&keys.revoked, &keys.expired, &unknown] {
        let headers = [("x-api-key", key.as_str()), ("x-request-id", "rid-key")];
        let r = check(&mut c, check_request(Some("users"), &headers, "/")).await;
        assert_eq!(denied(&r).status, 401);
        answers.push(r.encode_to_vec());
    }
    assert_eq!(
        answers[0], answers[1],
        "revoked and expired keys answer alike"
    );
    assert_eq!(
        answers[0], answers[2],
        "revoked and unknown keys answer alike"
    );

    let expired_jwt = token(
        "rsa2048.pem",
        Algorithm::RS256,
        "r1",
        &claims(json!({ "iat": now() - 7200, "exp": now() - 3600 })),
    );
    let mut forged = token("rsa2048.pem", Algorithm::RS256, "r1", &claims(json!({})));
    let at = forged.len() - 20;
    let flipped = if &forged[at..=at] == "A" { "B" } else { "A" };
    forged.replace_range(at..=at, flipped);
    let forwarded = hs_token(
        Algorithm::HS256,
        &claims(json!({ "iss": "https://fwd.test" })),
    );
    for (route, token, rid) in [
        ("users", &expired_jwt, "rid-expired-jwt"),
        ("users", &forged, "rid-forged-jwt"),
    ] {
        let headers = [
            ("authorization", format!("Bearer {token}")),
            ("x-request-id", rid.into()),
        ];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            denied(&check(&mut c, check_request(Some(route), &headers, "/")).await).status,
            401
        );
    }
    // Accepted credentials are not logged either.
    let auth = format!("Bearer {forwarded}");
    allowed(
        &check(
            &mut c,
            check_request(Some("fwd"), &[("authorization", &auth)], "/"),
        )
        .await,
    );
    allowed(
        &check(
            &mut c,
            check_request(Some("users"), &[("x-api-key", &keys.active)], "/"),
        )
        .await,
    );

    let m = shared.metrics.render();
    for (provider, reason) in [
        ("partners", "revoked_key"),
        ("partners", "expired_key"),
        ("partners", "unknown_key"),
        ("main", "expired"),
        ("main", "bad_signature"),
    ] {
        let series = format!(
            r#"authz_decisions_total{{decision="deny",provider="{provider}",reason="{reason}"}} 1"#
        );
        assert!(m.contains(&series), "{series} missing from\n{m}");
    }

    let text = logs.text();
    for (rid, reason) in [
        ("rid-key", "revoked_key"),
        ("rid-key", "expired_key"),
        ("rid-key", "unknown_key"),
        ("rid-expired-jwt", "expired"),
        ("rid-forged-jwt", "bad_signature"),
    ] {
        let (rid, reason) = (
            format!("request_id=\"{rid}\""),
            format!("reason=\"{reason}\""),
        );
        assert!(
            text.lines().any(|l| l.contains("DEBUG")
                && l.contains("request denied")
                && l.contains(&rid)
                && l.contains(&reason)
                && l.contains("status=401")),
            "no denial line with {rid} and {reason} in\n{text}"
        );
    }
    let secret = String::from_utf8_lossy(SECRET).into_owned();
    let mut never = vec![secret.as_str()];
    for token in [&expired_jwt, &forged, &forwarded] {
        // The whole token, and each part (the signature alone is what a forger wants).
        never.push(token);
        never.extend(token.split('.'));
    }
    for key in [&keys.active, &keys.revoked, &keys.expired, &unknown] {
        never.push(key);
        never.push(&key["gwk_".len()..]);
    }
    for s in never {
        assert!(
            !text.contains(s),
            "a credential reached the log: {s}\n{text}"
        );
    }
}

/// Sends already-encoded request bytes (which need not decode) and reads a CheckResponse.
#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}
impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = CheckResponse;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<CheckResponse>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

#[tokio::test]
async fn a_request_that_does_not_decode_is_denied_not_an_error() {
    use prost::Message;
    let (_client, _keys, shared) = setup().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthzServer::new(AuthzService::new(shared)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut req = CheckRequest::default();
    let attrs = req.attributes.get_or_insert_with(Default::default);
    attrs
        .context_extensions
        .insert("route".into(), "health".into());
    let http = attrs
        .request
        .get_or_insert_with(Default::default)
        .http
        .get_or_insert_with(Default::default);
    http.path = "/zzzz".into();
    http.method = "GET".into();
    let mut bytes = req.encode_to_vec();
    // A byte that is not UTF-8 in the path, as Envoy may copy it from the request line.
    let at = bytes.iter().rposition(|&b| b == b'z').expect("path byte");
    bytes[at] = 0xff;
    assert!(CheckRequest::decode(bytes.as_slice()).is_err());
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.auth.v3.Authorization/Check",
    );
    let resp = grpc
        .unary(tonic::Request::new(bytes), path, RawCodec)
        .await
        .expect("a CheckResponse, never a gRPC error")
        .into_inner();
    let code = resp.status.as_ref().map_or(0, |s| s.code);
    assert_ne!(code, 0, "denied even on a public route: {resp:?}");
}

/// A policy that does not list a provider's key header or parameter among what to remove (as one
/// from an xds-server that predates the lists would decode) is refused, never taken as "remove
/// nothing": that would forward API keys to every upstream.
#[test]
fn a_policy_missing_a_removal_list_is_refused() {
    let (file, _) = keys_file();
    let full = test_policy(file);
    let mut env = TestEnv::new();
    assert!(authz_service::policy::Policy::compile(&full, &mut env).is_ok());

    type Strip = fn(&mut AuthPolicy);
    let cases: [(&str, Strip); 3] = [
        ("x-api-key", |p| p.credential_headers.clear()),
        ("api_key", |p| p.credential_query.clear()),
        ("x-client-id", |p| {
            p.identity_headers.retain(|h| h != "x-client-id")
        }),
    ];
    for (name, strip) in cases {
        let mut p = full.clone();
        strip(&mut p);
        let err = authz_service::policy::Policy::compile(&p, &mut env)
            .err()
            .unwrap_or_else(|| panic!("a policy without {name} compiled"));
        assert!(err.to_string().contains(name), "{err}");
    }
}

/// A cached token's OK answer is encoded once and kept with its identity. What a hostile
/// client could hope for is an answer made for another request: someone else's identity, a
/// query removal that is not its own, or headers from a policy that has since changed. None
/// of it happens: the kept answer is exactly what a fresh one would be, for its own identity
/// and policy, and an answer that depends on the request is never kept.
#[tokio::test]
async fn a_cached_tokens_kept_answer_is_exactly_a_fresh_one_and_never_another_requests() {
    use authz_service::response::{check_response, Answer};

    let (mut c, _, shared) = setup().await;
    let svc = AuthzService::new(shared.clone());
    let tok = |sub: &str| {
        let claims = claims(json!({"sub": sub, "plan": "pro", "roles": ["user"]}));
        format!(
            "Bearer {}",
            token("rsa2048.pem", Algorithm::RS256, "r1", &claims)
        )
    };
    let (alice, bob) = (tok("alice"), tok("bob"));
    let req = |auth: &str, path: &str| {
        check_request(
            Some("users"),
            &[("authorization", auth), ("x-user-id", "mallory")],
            path,
        )
    };
    // The answer the endpoint sends, and the message it would have built afresh.
    let both = |r: CheckRequest| {
        let svc = svc.clone();
        async move {
            let fresh = {
                let (d, id, limited) = svc.decide(&r).await;
                check_response(&d, &id, limited)
            };
            let sent = svc
                .answer(tonic::Request::new(Box::new(r)))
                .await
                .unwrap()
                .into_inner();
            (sent, fresh)
        }
    };

    // The first Check verifies the token and keeps its answer; the later ones send it.
    for _ in 0..3 {
        let (sent, fresh) = both(req(&alice, "/users/1")).await;
        assert!(matches!(sent, Answer::Encoded(_)), "{sent:?}");
        assert_eq!(sent.into_message().unwrap(), fresh);
        let a = allowed(&check(&mut c, req(&alice, "/users/1")).await);
        assert_eq!(a.set["x-user-id"], "alice");
        assert!(a.removed_query.is_empty(), "{a:?}");
    }
    // Another token has its own.
    let a = allowed(&check(&mut c, req(&bob, "/users/1")).await);
    assert_eq!(
        (a.set["x-user-id"].as_str(), a.set["x-client-id"].as_str()),
        ("bob", "bob")
    );
    assert_eq!(a.metadata["client_id"], "bob");

    // A key in the query makes an answer of that request's own, built afresh: on a token
    // whose answer is kept, and on one whose first Check carries it, whose next Check without
    // one keeps an answer without the removal.
    let carol = tok("carol");
    for auth in [&alice, &carol] {
        let (sent, fresh) = both(req(auth, "/users/1?api_key=k&x=1")).await;
        assert!(matches!(sent, Answer::Message(_)), "{sent:?}");
        assert_eq!(sent.into_message().unwrap(), fresh);
        let a = allowed(&check(&mut c, req(auth, "/users/1?api_key=k")).await);
        assert_eq!(a.removed_query, ["api_key"]);
    }
    let (sent, fresh) = both(req(&carol, "/users/1")).await;
    assert!(matches!(sent, Answer::Encoded(_)), "{sent:?}");
    let sent = sent.into_message().unwrap();
    assert_eq!(sent, fresh);
    let a = allowed(&sent);
    assert!(a.removed_query.is_empty(), "{a:?}");
    assert_eq!(a.set["x-user-id"], "carol");

    // A provider that forwards the token keeps an answer that does not remove it.
    let fwd = format!(
        "Bearer {}",
        hs_token(
            Algorithm::HS256,
            &claims(json!({"iss": "https://fwd.test"}))
        )
    );
    for _ in 0..2 {
        let r = check_request(Some("fwd"), &[("authorization", &fwd)], "/");
        let (sent, fresh) = both(r.clone()).await;
        assert!(matches!(sent, Answer::Encoded(_)), "{sent:?}");
        assert_eq!(sent.into_message().unwrap(), fresh);
        let a = allowed(&check(&mut c, r).await);
        assert!(!a.removed.contains(&"authorization".to_string()), "{a:?}");
        assert_eq!(a.set["x-auth-provider"], "fwd");
    }

    // A denial is never a kept answer, even on a route the same token passes elsewhere.
    let mut admin = req(&alice, "/admin");
    admin.attributes.as_mut().unwrap().context_extensions =
        HashMap::from([("route".into(), "admin".into())]);
    let (sent, _) = both(admin.clone()).await;
    assert!(matches!(sent, Answer::Message(_)), "{sent:?}");
    assert_eq!(denied(&check(&mut c, admin).await).status, 403);

    // A new policy (the claim header renamed) answers the same token with the new headers.
    let (file, _) = keys_file();
    let mut p = test_policy(file);
    p.jwt[0].headers[0].header = "x-subject".into();
    p.identity_headers = identity_headers(&p);
    shared.policy.store(Some(Arc::new(compile(&p))));
    let a = allowed(&check(&mut c, req(&alice, "/users/1")).await);
    assert_eq!(a.set.get("x-subject").map(String::as_str), Some("alice"));
    assert!(!a.set.contains_key("x-user-id"), "{a:?}");
    assert!(a.removed.contains(&"x-user-id".to_string()), "{a:?}");
}
