//! Rate-limit keys: a request without the value its limit is keyed on (no header, no identity)
//! is counted in one shared bucket, which no value a client sends can reach; and clients of two
//! auth providers with the same id (client id or tenant id) never share a bucket. First through the policy into every
//! store (one suite, memory and Redis), then through a real Envoy, authz-service and
//! ratelimit-service.

use std::sync::Arc;

use proto::pb::envoy::extensions::common::ratelimit::v3::{
    rate_limit_descriptor::Entry, RateLimitDescriptor,
};
use proto::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use proto::ratelimit::{key, Per, Rate, RateLimitPolicy, Rule, DOMAIN};
use ratelimit_service::policy::Policy;
use ratelimit_service::store::{CounterStore, MemoryStore, RedisStore};
use tests::authz::{bearer, token, token_with_claims, ISSUER};
use tests::gateway::{Full, Shape, API_KEY_HEADER};
use tests::redis::RedisServer;
use tests::{wait_for_route, HttpClient, Reply};

// ---- Through the policy into each store ----------------------------------------------------

/// Distinct rule ids per run, so that runs against one Redis never meet.
fn policy(run: &str) -> Policy {
    let rule = |n: usize, per: Per| Rule {
        id: format!("{run}#{n}"),
        per: per as i32,
        rate: Some(Rate {
            requests: 2,
            window_ms: 60_000,
        }),
        header: String::new(),
    };
    Policy::compile(&RateLimitPolicy {
        domain: DOMAIN.into(),
        timeout_ms: 1_000,
        rules: vec![rule(0, Per::Header), rule(1, Per::Client)],
        ..Default::default()
    })
    .expect("valid policy")
}

fn request(entries: &[(&str, &str)]) -> RateLimitRequest {
    RateLimitRequest {
        domain: DOMAIN.into(),
        descriptors: vec![RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }],
        hits_addend: 0,
    }
}

/// Whether the store admits one request with these descriptor entries.
async fn admits<S: CounterStore>(s: &S, p: &Policy, entries: &[(&str, &str)]) -> bool {
    let plan = p.plan(&request(entries));
    assert_eq!(plan.hits.len(), 1, "{entries:?} names a counter");
    s.check(&plan.hits).await.expect("store answers").admitted
}

async fn keys_suite<S: CounterStore>(s: &S, run: &str) {
    let p = policy(run);
    let (header_rule, client_rule) = (format!("{run}#0"), format!("{run}#1"));
    let no_header = [(key::RULE, header_rule.as_str())];
    // Every request without the header shares one bucket of 2.
    assert!(admits(s, &p, &no_header).await);
    assert!(admits(s, &p, &no_header).await);
    assert!(
        !admits(s, &p, &no_header).await,
        "the shared bucket is used up"
    );
    // A header value spelling the shared bucket's tag, or anything like it, is a bucket of its
    // own: it neither escapes into fresh quota of the shared bucket nor borrows from it.
    for forged in ["%-", "%25-", "-", ""] {
        let with = [(key::RULE, header_rule.as_str()), (key::HEADER, forged)];
        if forged.is_empty() {
            // An empty value is no value: the shared bucket, still used up.
            assert!(!admits(s, &p, &with).await);
            continue;
        }
        assert!(admits(s, &p, &with).await, "{forged:?}");
        assert!(admits(s, &p, &with).await, "{forged:?}");
        assert!(!admits(s, &p, &with).await, "{forged:?} is limited too");
    }
    assert!(!admits(s, &p, &no_header).await);

    // One id, two providers: two buckets. Ids and providers that embed the separator forge
    // neither bucket.
    let c = client_rule.as_str();
    let jwt = [
        (key::RULE, c),
        (key::PROVIDER, "main"),
        (key::CLIENT, "partner-2"),
    ];
    let api_key = [
        (key::RULE, c),
        (key::PROVIDER, "partners"),
        (key::CLIENT, "partner-2"),
    ];
    let forgers: [&[(&str, &str)]; 2] = [
        &[(key::RULE, c), (key::CLIENT, "partners:partner-2")],
        &[
            (key::RULE, c),
            (key::PROVIDER, "main:partners"),
            (key::CLIENT, "partner-2"),
        ],
    ];
    assert!(admits(s, &p, &jwt).await);
    assert!(admits(s, &p, &jwt).await);
    assert!(!admits(s, &p, &jwt).await);
    assert!(
        admits(s, &p, &api_key).await,
        "the API key has its own bucket"
    );
    assert!(admits(s, &p, &api_key).await);
    assert!(!admits(s, &p, &api_key).await);
    for forger in forgers {
        assert!(admits(s, &p, forger).await, "{forger:?}");
    }
    // No identity on the same rule: the rule's shared bucket, nobody else's.
    let anonymous = [(key::RULE, c)];
    assert!(admits(s, &p, &anonymous).await);
    assert!(admits(s, &p, &anonymous).await);
    assert!(!admits(s, &p, &anonymous).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_the_memory_store() {
    keys_suite(&MemoryStore::default(), "mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).await;
    let store = Arc::new(RedisStore::from_url(&redis.url()).expect("redis url"));
    keys_suite(&*store, &format!("redis-{}", std::process::id())).await;
}

// ---- Through Envoy ---------------------------------------------------------------------------

const ROUTES: &str = r#"      - name: teams
        match: { prefix: /teams }
        service: api
        auth: none
        rate_limit: [{ limit: 2/minute, per: "header:x-team" }]
      - name: crowd
        match: { prefix: /crowd }
        service: api
        auth: none
        rate_limit: [{ limit: 2/minute, per: client }]
      - name: partners
        match: { prefix: /partners }
        service: api
        auth: [main, partners]
        rate_limit: [{ limit: 2/minute, per: client }]
      - name: tenants
        match: { prefix: /tenants }
        service: api
        auth: [main, other]
        rate_limit: [{ limit: 2/minute, per: tenant }]
      - name: open
        match: { prefix: /open }
        service: api
        auth: none
        rate_limit: none
"#;

/// A second JWT provider: another issuer (same secret) whose tokens may claim any tenant.
const OTHER_ISSUER: &str = "https://other.gateway.test";
const OTHER_PROVIDER: &str = r#"    other:
      issuer: https://other.gateway.test
      algorithms: [HS256]
      secret_env: GATEWAY_E2E_SECRET
"#;

async fn get(client: &HttpClient, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client.get(path);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.send().await.expect("request")
}

/// `n` requests are admitted, the next one is refused with the spec's 429.
async fn admits_then_429(client: &HttpClient, path: &str, headers: &[(&str, &str)], n: usize) {
    for i in 0..n {
        let r = get(client, path, headers).await;
        assert_eq!(r.status, 200, "{path} {headers:?} #{i}: {}", r.body);
    }
    let r = get(client, path, headers).await;
    assert_eq!(r.status, 429, "{path} {headers:?} #{n}: {}", r.body);
    assert_eq!(r.json()["error"], "too_many_requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_values_and_providers_through_envoy() {
    let shape = Shape {
        jwt_extra: OTHER_PROVIDER.to_string(),
        ..Shape::new("{ free: 100/minute, pro: 100/minute }", ROUTES)
    };
    let gw = Full::start(&shape, None).await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/open", 200).await;

    // `per: header:x-team`, 2 a minute: without the header the third request is refused.
    admits_then_429(&client, "/teams", &[], 2).await;
    // The shared bucket's tag as a header value is a team of its own, limited like any team.
    admits_then_429(&client, "/teams", &[("x-team", "%-")], 2).await;
    assert_eq!(get(&client, "/teams", &[]).await.status, 429);
    // Other teams were untouched by all of it.
    let r = get(&client, "/teams", &[("x-team", "red")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("1"));

    // `per: client` on a public route: no identity, so everyone shares one bucket.
    admits_then_429(&client, "/crowd", &[], 2).await;

    // A JWT with `sub: partner-1` and the API key `partner-1`: two providers, two buckets.
    let jwt = bearer(&token("partner-1", "pro"));
    admits_then_429(&client, "/partners", &[("authorization", &jwt)], 2).await;
    let r = get(&client, "/partners", &[(API_KEY_HEADER, &gw.partner_key)]).await;
    assert_eq!(r.status, 200, "the API key has its own bucket: {}", r.body);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("1"));
    admits_then_429(
        &client,
        "/partners",
        &[(API_KEY_HEADER, &gw.partner_key)],
        1,
    )
    .await;

    // `per: tenant`: acme's quota is spent by acme's clients of one provider only; a token of
    // another issuer claiming `tenant_id: acme` has a bucket of its own and leaves acme's alone.
    let acme = bearer(&token_with_claims(ISSUER, "alice", &["tenant_id=acme"]));
    let impostor = bearer(&token_with_claims(
        OTHER_ISSUER,
        "mallory",
        &["tenant_id=acme"],
    ));
    admits_then_429(&client, "/tenants", &[("authorization", &impostor)], 2).await;
    let colleague = bearer(&token_with_claims(ISSUER, "bob", &["tenant_id=acme"]));
    for who in [&acme, &colleague] {
        let r = get(&client, "/tenants", &[("authorization", who)]).await;
        assert_eq!(r.status, 200, "acme's quota is untouched: {}", r.body);
    }
    // Alice and Bob share acme's bucket of 2, now used up.
    for who in [&acme, &colleague] {
        let r = get(&client, "/tenants", &[("authorization", who)]).await;
        assert_eq!(r.status, 429, "{}", r.body);
    }
}
