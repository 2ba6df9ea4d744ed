//! ratelimit-service end to end: a real xds-server streams the limits of a gateway.yaml to a real
//! ratelimit-service process, which answers ShouldRateLimit over gRPC. Edits apply without a
//! restart, and the service keeps its last policy while xds-server is away.

use std::time::Duration;

use ratelimit_service::grpc::{RawDescriptor, RawEntry, RawRequest};
use serde_json::Value;
use tests::ratelimit::{
    descriptor, header, is_ok, raw_should_rate_limit, request, RateLimitService,
};
use tests::{wait_for, ConfigFile, XdsServer};

const CONVERGE: Duration = Duration::from_secs(15);

fn config(free: &str) -> String {
    format!(
        r#"
version: 1
services:
  api: {{ endpoints: [127.0.0.1:9] }}
auth:
  jwt:
    main: {{ issuer: https://issuer.test, algorithms: [HS256], secret_env: GATEWAY_TEST_SECRET }}
rate_limits:
  plans: {{ free: {free}, pro: 5/minute }}
  default_plan: free
  anonymous: 2/minute
gateways:
  edge:
    listeners: [{{ name: http, port: 18080 }}]
    routes:
      - name: public
        match: {{ prefix: /public }}
        service: api
        auth: none
      - name: orders
        match: {{ prefix: /orders }}
        service: api
        auth: main
        rate_limit: [plan, {{ limit: 100/30s, per: "header:x-team" }}]
"#
    )
}

async fn ask(
    rls: &RateLimitService,
    entries: &[&[(&str, &str)]],
) -> proto::pb::envoy::service::ratelimit::v3::RateLimitResponse {
    let mut c = rls.client().await;
    let descs = entries.iter().map(|e| descriptor(e)).collect();
    c.should_rate_limit(request(descs))
        .await
        .expect("ShouldRateLimit answers")
        .into_inner()
}

fn alice<'a>() -> [&'a [(&'a str, &'a str)]; 3] {
    [
        &[("request_id", "req-alice")],
        &[("rule", "orders#0"), ("client", "alice"), ("plan", "free")],
        &[("rule", "orders#1"), ("header", "team-a")],
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_from_gateway_yaml_edits_and_xds_outage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ConfigFile::new(dir.path().join("gateway.yaml"));
    cfg.write(&config("3/minute"));
    let mut xds = XdsServer::start(cfg.path(), dir.path()).await;
    let rls = RateLimitService::start("rls-e2e", &xds.grpc_addr(), None, dir.path()).await;

    // Plan limit: free = 3/minute, with the IETF and X- headers counting down.
    for remaining in ["2", "1", "0"] {
        let r = ask(&rls, &alice()).await;
        assert!(is_ok(&r));
        assert_eq!(header(&r, "x-ratelimit-remaining"), Some(remaining));
        assert_eq!(header(&r, "x-ratelimit-limit"), Some("3"));
        let policy = header(&r, "ratelimit-policy").expect("RateLimit-Policy");
        assert!(policy.contains(r#""free";q=3;w=60"#), "{policy}");
        assert!(policy.contains(r#""orders#1";q=100;w=30"#), "{policy}");
        assert!(header(&r, "ratelimit").is_some_and(|v| v.starts_with(r#""free";r="#)));
        assert!(header(&r, "retry-after").is_none());
    }
    let r = ask(&rls, &alice()).await;
    assert!(!is_ok(&r));
    let body: Value = serde_json::from_slice(&r.raw_body).expect("JSON 429 body");
    assert_eq!(body["error"], "too_many_requests");
    assert_eq!(body["request_id"], "req-alice");
    let retry = body["retry_after"].as_u64().expect("retry_after");
    assert!((1..=60).contains(&retry), "retry_after {retry}");
    assert_eq!(header(&r, "retry-after"), Some(retry.to_string().as_str()));
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert_eq!(header(&r, "x-ratelimit-remaining"), Some("0"));

    // Another plan, another client: its own bucket and limit.
    for _ in 0..5 {
        let r = ask(
            &rls,
            &[&[("rule", "orders#0"), ("client", "bob"), ("plan", "pro")]],
        )
        .await;
        assert!(is_ok(&r));
    }
    // Anonymous: by client IP.
    let anon: [&[(&str, &str)]; 1] = [&[("rule", "public#0"), ("remote_address", "192.0.2.7")]];
    assert!(is_ok(&ask(&rls, &anon).await));
    assert!(is_ok(&ask(&rls, &anon).await));
    assert!(!is_ok(&ask(&rls, &anon).await));

    // A header value that is not UTF-8 is still counted: it never turns into a gRPC error
    // (which Envoy would treat as "store down" and, failing open, let through).
    let raw = |value: &[u8]| RawRequest {
        domain: b"gateway".to_vec(),
        descriptors: vec![RawDescriptor {
            entries: vec![
                RawEntry {
                    key: b"rule".to_vec(),
                    value: b"orders#1".to_vec(),
                },
                RawEntry {
                    key: b"header".to_vec(),
                    value: value.to_vec(),
                },
            ],
            hits_addend: Some(proto::pb::google::protobuf::UInt64Value { value: 100 }),
            ..Default::default()
        }],
        hits_addend: 0,
    };
    let first = raw_should_rate_limit(&rls.grpc_url(), raw(b"team-\xff"))
        .await
        .expect("a non-UTF-8 value is answered, not refused");
    assert!(is_ok(&first), "100 of 100/30s");
    let second = raw_should_rate_limit(&rls.grpc_url(), raw(b"team-\xff"))
        .await
        .expect("answered");
    assert!(
        !is_ok(&second),
        "the same malformed value shares one counter"
    );

    // Raise the free plan in gateway.yaml: alice (3 used) gets a 4th request, no restart.
    cfg.write(&config("4/minute"));
    wait_for("the raised free plan to apply", CONVERGE, async || {
        is_ok(&ask(&rls, &alice()).await)
    })
    .await;
    let r = ask(&rls, &alice()).await;
    assert!(!is_ok(&r), "4 of 4 used");
    assert_eq!(header(&r, "x-ratelimit-limit"), Some("4"));

    // xds-server goes away: the service keeps enforcing its last policy.
    xds.kill();
    for _ in 0..3 {
        assert!(!is_ok(&ask(&rls, &alice()).await));
    }
    let r = ask(&rls, &[&[("rule", "orders#0"), ("client", "carol")]]).await;
    assert!(is_ok(&r), "an unknown plan falls back to the default plan");
    assert_eq!(header(&r, "x-ratelimit-limit"), Some("4"));

    // And reconnects once it is back.
    xds.restart().await;
    wait_for("ratelimit-service to reconnect", CONVERGE, async || {
        xds.client("rls-e2e").await.is_some()
    })
    .await;
    let metrics = rls.metrics().await;
    assert!(metrics.contains("ratelimit_decisions_total{limit=\"free\",outcome=\"denied\"}"));
    assert!(
        metrics.contains("ratelimit_decisions_total{limit=\"free\",outcome=\"denied_cached\"}"),
        "repeated denials are answered from the over-limit cache:\n{metrics}"
    );
}
