//! Per-route metrics on Envoy's `/stats/prometheus` (spec §10), through a real Envoy: request
//! counts by status class and latency histograms, labelled `envoy_route` by the route's name.

use std::time::Duration;

use tests::gateway::{Full, Shape};
use tests::{wait_for, wait_for_route};

const ROUTES: &str = r#"      - name: orders
        match: { prefix: /orders }
        service: api
        auth: none
      - name: reports
        match: { prefix: /reports }
        service: api
        auth: none
      - name: public
        match: { prefix: / }
        service: api
        auth: none
"#;

/// The value of the sample `name{labels}` (labels in Envoy's order) in a Prometheus scrape.
fn sample(scrape: &str, name_and_labels: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == name_and_labels).then(|| v.parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_has_its_counts_by_status_class_and_latency() {
    let gw = Full::start(
        &Shape::new("{ free: 1000/minute, pro: 1000/minute }", ROUTES),
        None,
    )
    .await;
    let c = gw.stack.client(gw.ports.http);
    wait_for_route(&c, "/public", 200).await;
    const N: usize = 3;
    for _ in 0..N {
        assert_eq!(c.get("/orders/1").ok().await.status, 200);
        let r = c.get("/reports").header("x-echo-status", "503").ok().await;
        assert_eq!(r.status, 503);
    }
    let url = format!("{}/stats/prometheus", gw.stack.envoy.admin_url());
    let http = test_support::http_client();
    let n = N as f64;
    // Histograms reach the scrape at Envoy's stats flush (every 5 s).
    let scrape = wait_for("per-route stats", Duration::from_secs(20), async || {
        let text = http.get(&url).send().await.ok()?.text().await.ok()?;
        let count = sample(
            &text,
            r#"envoy_vhost_route_upstream_rq_time_count{envoy_virtual_host="edge",envoy_route="orders"}"#,
        );
        (count == Some(n)).then_some(text)
    })
    .await;
    let xx = |class: &str, route: &str| {
        sample(
            &scrape,
            &format!(
                r#"envoy_vhost_route_upstream_rq_xx{{envoy_response_code_class="{class}",envoy_virtual_host="edge",envoy_route="{route}"}}"#
            ),
        )
    };
    assert_eq!(xx("2", "orders"), Some(n), "{scrape}");
    assert_eq!(xx("5", "reports"), Some(n), "{scrape}");
    assert_eq!(xx("5", "orders"), None, "{scrape}");
    assert_eq!(xx("2", "reports"), None, "{scrape}");
    let time_count = |route: &str| {
        sample(
            &scrape,
            &format!(
                r#"envoy_vhost_route_upstream_rq_time_count{{envoy_virtual_host="edge",envoy_route="{route}"}}"#
            ),
        )
    };
    assert_eq!(time_count("reports"), Some(n), "{scrape}");
}
