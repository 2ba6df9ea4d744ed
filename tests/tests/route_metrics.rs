//! Per-route metrics on Envoy's `/stats/prometheus` (spec §10), through a real Envoy: request
//! counts by status class and latency histograms, labelled `envoy_route` by the route's name,
//! for forwarding routes and `respond:` routes alike, and for answers Envoy gives itself (an
//! authz refusal) on a forwarding route; a client cannot add to another route's series.

use std::collections::BTreeSet;
use std::time::Duration;

use tests::gateway::{Full, Shape};
use tests::prometheus::{parse, sum, Sample};
use tests::{wait_for, wait_for_route};

const ROUTES: &str = r#"      - name: orders
        match: { prefix: /orders }
        service: api
        auth: none
      - name: reports
        match: { prefix: /reports }
        service: api
        auth: none
      - name: status
        match: { prefix: /status }
        respond: { status: 200, json: { ok: true } }
        auth: none
      - name: private
        match: { prefix: /private }
        service: api
        auth: [partners]
      - name: public
        match: { prefix: / }
        service: api
        auth: none
"#;

/// The routes' own series: every request, whoever answered it.
const REQUESTS: &str = "envoy_gateway_route_requests";
const LATENCY_COUNT: &str = "envoy_gateway_route_request_ms_count";
const LATENCY_BUCKET: &str = "envoy_gateway_route_request_ms_bucket";

async fn gateway() -> Full {
    let gw = Full::start(
        &Shape::new("{ free: 1000/minute, pro: 1000/minute }", ROUTES),
        None,
    )
    .await;
    wait_for_route(&gw.stack.client(gw.ports.http), "/public", 200).await;
    gw
}

/// Envoy's scrape once `done` holds for it (histograms reach the scrape at Envoy's stats flush,
/// every 5 s, so a test waits for the counts it expects rather than for a fixed time).
async fn scrape_when(gw: &Full, what: &str, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let url = format!("{}/stats/prometheus", gw.stack.envoy.admin_url());
    let http = test_support::http_client();
    wait_for(what, Duration::from_secs(20), async || {
        let text = http.get(&url).send().await.ok()?.text().await.ok()?;
        let samples = parse(&text);
        done(&samples).then_some(samples)
    })
    .await
}

fn requests(s: &[Sample], route: &str, class: &str) -> Option<f64> {
    sum(
        s,
        REQUESTS,
        &[("envoy_route", route), ("envoy_response_code_class", class)],
    )
}

fn latency_count(s: &[Sample], route: &str) -> Option<f64> {
    sum(s, LATENCY_COUNT, &[("envoy_route", route)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_has_its_counts_by_status_class_and_latency() {
    let gw = gateway().await;
    let c = gw.stack.client(gw.ports.http);
    const N: usize = 3;
    for _ in 0..N {
        assert_eq!(c.get("/orders/1").ok().await.status, 200);
        let r = c.get("/reports").header("x-echo-status", "503").ok().await;
        assert_eq!(r.status, 503);
        assert_eq!(c.get("/status").ok().await.status, 200);
        // Refused by authz-service before any upstream: Envoy's own answer on a forwarding route.
        assert_eq!(c.get("/private").ok().await.status, 401);
    }
    let n = N as f64;
    let s = scrape_when(&gw, "per-route stats", |s| {
        ["orders", "reports", "status", "private"]
            .iter()
            .all(|r| latency_count(s, r) == Some(n))
    })
    .await;
    let text = format!("{s:#?}");
    // One family for both kinds of route, by status class.
    assert_eq!(requests(&s, "orders", "2"), Some(n), "{text}");
    assert_eq!(requests(&s, "status", "2"), Some(n), "{text}");
    assert_eq!(requests(&s, "reports", "5"), Some(n), "{text}");
    assert_eq!(requests(&s, "private", "4"), Some(n), "{text}");
    for (route, other) in [
        ("orders", "5"),
        ("status", "5"),
        ("reports", "2"),
        ("private", "2"),
    ] {
        assert_eq!(requests(&s, route, other), None, "{route} {other}: {text}");
    }
    // The latency histogram has every request in its +Inf bucket and a sum (milliseconds).
    for route in ["orders", "status", "reports", "private"] {
        let inf = sum(
            &s,
            LATENCY_BUCKET,
            &[("envoy_route", route), ("le", "+Inf")],
        );
        assert_eq!(inf, Some(n), "{route}: {text}");
        let total = sum(
            &s,
            "envoy_gateway_route_request_ms_sum",
            &[("envoy_route", route)],
        );
        assert!(total.is_some_and(|t| t >= 0.0), "{route}: {text}");
    }

    // Envoy's router stats stay for what was sent upstream (timeouts, retries, upstream time);
    // `respond:` and refused requests never reach the router's upstream, so they have none.
    let upstream_xx = |class: &str, route: &str| {
        sum(
            &s,
            "envoy_vhost_route_upstream_rq_xx",
            &[("envoy_route", route), ("envoy_response_code_class", class)],
        )
    };
    assert_eq!(upstream_xx("2", "orders"), Some(n), "{text}");
    assert_eq!(upstream_xx("5", "reports"), Some(n), "{text}");
    assert_eq!(upstream_xx("2", "status"), None, "{text}");
    assert_eq!(
        sum(
            &s,
            "envoy_vhost_route_upstream_rq_time_count",
            &[("envoy_route", "reports")]
        ),
        Some(n),
        "{text}"
    );
}

/// Abuse: whatever a client puts in the path, the query or headers, its request is counted on
/// the route Envoy matched, so it cannot add to another route's series or invent a label value
/// (which would also let it grow the scrape without bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_count_on_another_routes_series() {
    let gw = gateway().await;
    let c = gw.stack.client(gw.ports.http);
    // Counters are in the scrape at once; the readiness poll counted on `public` already.
    let before = scrape_when(&gw, "a scrape", |_| true).await;
    let public_before = requests(&before, "public", "2").unwrap_or(0.0);
    const N: usize = 3;
    for _ in 0..N {
        assert_eq!(c.get("/orders").ok().await.status, 200);
    }
    // Requests to the `respond:` route dressed up as `orders` (and as routes that do not exist).
    let spoofs = [
        "/status/orders",
        "/status?route=orders",
        "/status/../status/orders",
        "/status/%6Frders",
        "/status/envoy_route=orders",
    ];
    for (i, path) in spoofs.into_iter().enumerate() {
        let r = c
            .get(path)
            .header("x-envoy-route", "orders")
            .header("x-route-name", "orders")
            .header("x-envoy-original-path", "/orders")
            .header("x-forwarded-prefix", &format!("/invented-{i}"))
            .ok()
            .await;
        assert_eq!(r.status, 200, "{path}");
    }
    // Unmatched-looking paths land on the catch-all route, under its own name.
    for i in 0..10 {
        let r = c
            .get(&format!("/invented-route-{i}"))
            .header("x-route-name", &format!("invented-{i}"))
            .ok()
            .await;
        assert_eq!(r.status, 200);
    }
    let spoofed = spoofs.len() as f64;
    let s = scrape_when(&gw, "spoofed requests counted", |s| {
        latency_count(s, "status") == Some(spoofed)
            && latency_count(s, "public") >= Some(public_before + 10.0)
    })
    .await;
    let text = format!("{s:#?}");
    assert_eq!(requests(&s, "orders", "2"), Some(N as f64), "{text}");
    assert_eq!(requests(&s, "status", "2"), Some(spoofed), "{text}");
    assert_eq!(
        requests(&s, "public", "2"),
        Some(public_before + 10.0),
        "{text}"
    );
    let labels: BTreeSet<&str> = s
        .iter()
        .filter(|x| x.name.starts_with("envoy_gateway_route_"))
        .filter_map(|x| x.labels.get("envoy_route").map(String::as_str))
        .collect();
    let allowed: BTreeSet<&str> = ["orders", "reports", "status", "private", "public"].into();
    assert!(labels.is_subset(&allowed), "{labels:?}");
}
