//! Traces through a real Envoy (spec §10), read back from an in-test OTLP/gRPC collector: one
//! authenticated, rate-limited request is one trace across Envoy, authz-service and
//! ratelimit-service with correct parents, and the upstream gets a `traceparent` of it; a
//! client's `traceparent` is continued; `sample: 0%` exports no request spans; services without
//! `OTEL_EXPORTER_OTLP_ENDPOINT` export nothing and still answer; a garbage `traceparent` or a
//! huge `tracestate` breaks nothing.

use std::time::Duration;

use tests::authz::token;
use tests::gateway::{Full, Shape};
use tests::otlp::{Collector, Span};
use tests::{wait_for, wait_for_route};

/// Envoy's OpenTelemetry tracer flushes every 5 s (or every 5 spans); the services' batch
/// processor is told to send every 100 ms.
const SPANS_TIMEOUT: Duration = Duration::from_secs(30);
const ENVOY_SERVICE: &str = "edge-gateway";
const AUTHZ_SPAN: &str = "authz.check";
const RLS_SPAN: &str = "ratelimit.should_rate_limit";

fn routes(collector: &Collector, sample: &str) -> String {
    format!(
        r#"      - name: api
        match: {{ prefix: /api }}
        service: api
        auth: main
      - name: public
        match: {{ prefix: / }}
        service: api
        auth: none
    tracing: {{ collector: {}, sample: {sample}, service_name: {ENVOY_SERVICE} }}
"#,
        collector.addr()
    )
}

/// The gateway tracing at `sample`; the policy services export to `collector` when `export`.
async fn start(collector: &Collector, sample: &str, export: bool) -> Full {
    let mut shape = Shape::new(
        "{ free: 1000/minute, pro: 1000/minute }",
        &routes(collector, sample),
    );
    shape.service_env = vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into())];
    if export {
        shape
            .service_env
            .push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.endpoint()));
    }
    let gw = Full::start(&shape, None).await;
    wait_for_route(&gw.stack.client(gw.ports.http), "/public", 200).await;
    gw
}

/// How often Envoy's span exporter has flushed on its timer.
async fn flushes(envoy: &tests::Envoy) -> Option<u64> {
    envoy.stat("tracing.opentelemetry.timer_flushed").await
}

/// `(trace id, parent span id)` of a `traceparent` value, if it is a valid version-00 one.
fn traceparent(v: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [ver, trace, span, flags]
            if *ver == "00" && hex(trace, 32) && hex(span, 16) && hex(flags, 2) =>
        {
            Some((trace.to_string(), span.to_string()))
        }
        _ => None,
    }
}

/// The spans of `trace` once `done` holds for them.
async fn wait_spans(
    collector: &Collector,
    what: &str,
    trace: &str,
    done: impl Fn(&[Span]) -> bool,
) -> Vec<Span> {
    wait_for(what, SPANS_TIMEOUT, async || {
        let spans: Vec<Span> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace)
            .collect();
        if done(&spans) {
            Ok(spans)
        } else {
            Err(format!("spans so far: {spans:#?}"))
        }
    })
    .await
}

fn find(spans: &[Span], f: impl Fn(&Span) -> bool) -> Option<&Span> {
    spans.iter().find(|s| f(s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_across_envoy_and_both_services() {
    let collector = Collector::start().await;
    let gw = start(&collector, "100%", true).await;
    let c = gw.stack.client(gw.ports.http);

    let r = c
        .get("/api/orders")
        .header(
            "authorization",
            &format!("Bearer {}", token("alice", "pro")),
        )
        .ok()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("x-ratelimit-limit").is_some(),
        "not rate-limited: {r:?}"
    );
    let sent = r
        .upstream_header("traceparent")
        .expect("upstream traceparent");
    let (trace, upstream_parent) = traceparent(sent).expect("a valid traceparent");

    let spans = wait_spans(
        &collector,
        "Envoy's, authz's and rls's spans",
        &trace,
        |s| {
            let envoy = s.iter().filter(|s| s.service == ENVOY_SERVICE).count();
            envoy >= 4
                && find(s, |s| s.name == AUTHZ_SPAN).is_some()
                && find(s, |s| s.name == RLS_SPAN).is_some()
        },
    )
    .await;
    let by_id = |id: &str| find(&spans, |s| s.span_id == id);
    // Envoy's server span is the root: no client sent a trace.
    let root = find(&spans, |s| {
        s.service == ENVOY_SERVICE && s.parent_span_id.is_empty()
    })
    .unwrap_or_else(|| panic!("no root span from Envoy: {spans:#?}"));
    // The upstream's traceparent names Envoy's upstream span, a child of the root.
    let upstream_span = by_id(&upstream_parent).unwrap_or_else(|| {
        panic!("the upstream's parent {upstream_parent} was not exported: {spans:#?}")
    });
    assert_eq!(upstream_span.service, ENVOY_SERVICE);
    assert_eq!(upstream_span.parent_span_id, root.span_id, "{spans:#?}");
    for (name, service) in [
        (AUTHZ_SPAN, "authz-service"),
        (RLS_SPAN, "ratelimit-service"),
    ] {
        let s = find(&spans, |s| s.name == name).expect("span");
        assert_eq!(s.service, service, "{s:?}");
        // Its parent is Envoy's client span of that gRPC call, itself a child of the root.
        let parent = by_id(&s.parent_span_id)
            .unwrap_or_else(|| panic!("{name}'s parent is not in the trace: {spans:#?}"));
        assert_eq!(parent.service, ENVOY_SERVICE, "{parent:?}");
        assert_eq!(parent.parent_span_id, root.span_id, "{spans:#?}");
    }
    let authz = find(&spans, |s| s.name == AUTHZ_SPAN).expect("authz span");
    assert_eq!(authz.attr("route"), Some("api"), "{authz:?}");
    assert_eq!(authz.attr("provider"), Some("main"), "{authz:?}");
    assert_eq!(authz.attr("decision"), Some("allow"), "{authz:?}");
    assert_eq!(authz.attr("plan"), Some("pro"), "{authz:?}");
    let rls = find(&spans, |s| s.name == RLS_SPAN).expect("rls span");
    assert_eq!(rls.attr("decision"), Some("ok"), "{rls:?}");
    assert!(rls.attr("store_ms").is_some(), "{rls:?}");
    // Never a credential or a client id in any attribute.
    for s in &spans {
        for (k, v) in &s.attributes {
            assert!(
                !v.contains("Bearer") && !v.contains("alice") && !v.contains("eyJ"),
                "{k}={v} in {s:?}"
            );
        }
    }

    // A client's traceparent is continued: same trace, Envoy's root is its child.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = c
        .get("/public/continued")
        .header(
            "traceparent",
            &format!("00-{client_trace}-{client_span}-01"),
        )
        .header("tracestate", "vendor=value")
        .ok()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let (t, _) = traceparent(r.upstream_header("traceparent").expect("traceparent"))
        .expect("a valid traceparent");
    assert_eq!(t, client_trace, "{r:?}");
    let spans = wait_spans(&collector, "the continued trace", client_trace, |s| {
        find(s, |s| s.parent_span_id == client_span).is_some()
    })
    .await;
    assert!(
        find(&spans, |s| s.name == AUTHZ_SPAN).is_none(),
        "an auth: none route asks no authz-service: {spans:#?}"
    );

    // Abuse: a traceparent Envoy cannot read, or a huge tracestate, is no error: the request
    // is answered, and the next one is traced as usual.
    for (name, value) in [
        ("traceparent", "00-zzzz-not-a-trace".to_string()),
        ("traceparent", format!("ff-{client_trace}-{client_span}-01")),
        (
            "traceparent",
            format!("00-{}-{client_span}-01", "0".repeat(32)),
        ),
        (
            "traceparent",
            format!("00-{client_trace}-{client_span}-01-{}", "x".repeat(4000)),
        ),
        ("tracestate", format!("k={}", "v".repeat(8000))),
    ] {
        let r = c
            .get("/api/orders")
            .header(
                "authorization",
                &format!("Bearer {}", token("alice", "pro")),
            )
            .header(name, &value)
            .ok()
            .await;
        assert_eq!(r.status, 200, "{name}: {value:.40}: {r:?}");
    }
    let r = c
        .get("/api/orders")
        .header(
            "authorization",
            &format!("Bearer {}", token("alice", "pro")),
        )
        .ok()
        .await;
    let (trace, _) = traceparent(r.upstream_header("traceparent").expect("traceparent"))
        .expect("a valid traceparent");
    wait_spans(&collector, "the trace after the abuse", &trace, |s| {
        find(s, |s| s.name == AUTHZ_SPAN).is_some() && find(s, |s| s.name == RLS_SPAN).is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_0_exports_no_request_spans_and_services_without_the_variable_export_nothing() {
    let collector = Collector::start().await;
    let gw = start(&collector, "0%", false).await;
    let c = gw.stack.client(gw.ports.http);
    let bearer = format!("Bearer {}", token("bob", "free"));
    let before = flushes(&gw.stack.envoy).await.unwrap_or(0);
    for _ in 0..5 {
        let r = c.get("/api/x").header("authorization", &bearer).ok().await;
        assert_eq!(
            r.status, 200,
            "services without the variable still answer: {r:?}"
        );
        assert!(r.header("x-ratelimit-limit").is_some(), "{r:?}");
    }
    // A client's sampled traceparent keeps its trace id but not its say over sampling: at 0%
    // a client cannot make the gateway export (and flood the collector with) its requests.
    let client_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = c
        .get("/api/marker")
        .header("authorization", &bearer)
        .header(
            "traceparent",
            &format!("00-{client_trace}-b7ad6b7169203331-01"),
        )
        .ok()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let up = r.upstream_header("traceparent").expect("traceparent");
    assert_eq!(
        traceparent(up).map(|(t, _)| t).as_deref(),
        Some(client_trace),
        "{up}"
    );
    // Envoy's exporter flushes on a timer; once it has fired after the requests, anything
    // sampled would have been sent.
    wait_for("Envoy's span flush timer", SPANS_TIMEOUT, async || {
        flushes(&gw.stack.envoy).await.filter(|n| *n >= before + 2)
    })
    .await;
    let sent = gw
        .stack
        .envoy
        .stat("tracing.opentelemetry.spans_sent")
        .await;
    assert_eq!(sent.unwrap_or(0), 0, "Envoy sent spans at 0%");
    let spans = collector.spans();
    assert!(
        spans.is_empty(),
        "unsampled requests were exported: {spans:#?}"
    );

    // At 100% (a hot edit) Envoy exports again; the services, without the variable, do not.
    let mut shape = Shape::new(
        "{ free: 1000/minute, pro: 1000/minute }",
        &routes(&collector, "100%"),
    );
    shape.service_env = vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into())];
    gw.stack.config.write(&gw.yaml(&shape));
    let r = wait_for(
        "a traced request after the edit",
        SPANS_TIMEOUT,
        async || {
            let r = c.get("/api/y").header("authorization", &bearer).ok().await;
            // Sampled (flag 01): the edit has reached Envoy.
            let up = r
                .upstream_header("traceparent")
                .filter(|t| t.ends_with("-01"))?;
            let t = traceparent(up)?;
            Some(t).filter(|_| r.status == 200)
        },
    )
    .await;
    let spans = wait_spans(&collector, "Envoy's spans at 100%", &r.0, |s| s.len() >= 4).await;
    // The services would have sent theirs within 100 ms of the request, long before Envoy's
    // flush timer (5 s) sent these.
    let services: Vec<Span> = collector
        .spans()
        .into_iter()
        .filter(|s| s.service != ENVOY_SERVICE)
        .collect();
    assert!(
        services.is_empty(),
        "a service without OTEL_EXPORTER_OTLP_ENDPOINT exported: {services:#?} (Envoy: {spans:#?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_carries_trace_client_plan_provider_and_rate_limit_outcome() {
    let collector = Collector::start().await;
    let shape = Shape::new(
        "{ free: 1/minute, pro: 1/minute }",
        &routes(&collector, "100%"),
    );
    let gw = Full::start(&shape, None).await;
    let c = gw.stack.client(gw.ports.http);
    wait_for_route(&c, "/public", 200).await;
    let bearer = format!("Bearer {}", token("carol", "pro"));

    let r = c
        .get("/api/a")
        .header("authorization", &bearer)
        .header("x-request-id", "allowed-1")
        .ok()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let (trace, _) = traceparent(r.upstream_header("traceparent").expect("traceparent"))
        .expect("a valid traceparent");
    let l = gw.log_line("allowed-1").await;
    assert_eq!(l["trace_id"], trace.as_str(), "{l}");
    assert_eq!(l["client_id"], "carol", "{l}");
    assert_eq!(l["plan"], "pro", "{l}");
    assert_eq!(l["auth_provider"], "main", "{l}");
    assert_eq!(l["rate_limit"], "ok", "{l}");

    let r = c
        .get("/api/a")
        .header("authorization", &bearer)
        .header("x-request-id", "limited-1")
        .ok()
        .await;
    assert_eq!(r.status, 429, "{r:?}");
    let l = gw.log_line("limited-1").await;
    assert_eq!(l["client_id"], "carol", "{l}");
    assert_eq!(l["rate_limit"], "over_limit", "{l}");

    let r = c
        .get("/api/a")
        .header("authorization", "Bearer not-a-token")
        .header("x-request-id", "refused-1")
        .ok()
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    let l = gw.log_line("refused-1").await;
    assert!(l["client_id"].is_null(), "{l}");
    assert!(l["plan"].is_null(), "{l}");
    assert!(
        l["rate_limit"].is_null(),
        "a refused request is not counted: {l}"
    );

    // Abuse: identity headers on an `auth: none` route reach neither the upstream nor the log.
    let r = c
        .get("/public/x")
        .header("x-request-id", "spoofed-1")
        .header("x-client-id", "mallory")
        .header("x-client-plan", "pro")
        .header("x-auth-provider", "main")
        .ok()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let l = gw.log_line("spoofed-1").await;
    assert!(l["client_id"].is_null(), "{l}");
    assert!(l["plan"].is_null(), "{l}");
    assert!(l["auth_provider"].is_null(), "{l}");
    assert_eq!(l["rate_limit"], "ok", "anonymous limits still count: {l}");
}
