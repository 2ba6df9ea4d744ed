//! Hot reload (spec §6): edits apply without restarts, invalid files change nothing and are
//! reported with file:line:col, and traffic never sees an error while the config changes.

use tests::load::{assert_clean, Load, Probe};
use tests::{
    free_port, sotw_and_delta, wait_for, wait_for_route, EchoUpstream, Stack, XdsMode,
    CONVERGE_TIMEOUT,
};

sotw_and_delta!(
    hot_reload_valid_invalid_and_fixed,
    reload_adds_a_service,
    no_errors_under_load_across_reloads
);

const REJECTED: &str = r#"xds_config_reloads_total{result="rejected"}"#;
const OK: &str = r#"xds_config_reloads_total{result="ok"}"#;

/// A config with services `a` and `b` and one route per entry of `routes`: (name, prefix, service).
fn config(port: u16, a: &str, b: &str, routes: &[(&str, &str, &str)]) -> String {
    let mut y = format!(
        "version: 1\nservices:\n  a: {{ endpoints: [{a}] }}\n  b: {{ endpoints: [{b}] }}\n\
         gateways:\n  edge:\n    listeners:\n      - {{ name: http, port: {port} }}\n    routes:\n"
    );
    for (name, prefix, service) in routes {
        y.push_str(&format!(
            "      - name: {name}\n        match: {{ prefix: {prefix} }}\n        service: {service}\n        auth: none\n"
        ));
    }
    y
}

async fn hot_reload_valid_invalid_and_fixed(mode: XdsMode) {
    let a = EchoUpstream::start("a").await;
    let b = EchoUpstream::start("b").await;
    let port = free_port();
    // Both services are in use from the start, so these edits change routes only; adding a
    // service is `reload_adds_a_service`.
    let cfg = |routes: &[(&str, &str, &str)]| config(port, &a.endpoint(), &b.endpoint(), routes);
    let stack = Stack::start(mode, &cfg(&[("one", "/one", "a"), ("zero", "/zero", "b")])).await;
    let c = stack.client(port);
    wait_for_route(&c, "/one", 200).await;
    assert_eq!(c.get("/two").ok().await.status, 404);
    let st = stack.xds.status().await;
    assert!(st["last_error"].is_null(), "{st}");
    let v1 = st["version"].as_str().expect("status.version").to_string();

    // 1. An in-place edit adds a route.
    stack.config.write_in_place(&cfg(&[
        ("one", "/one", "a"),
        ("zero", "/zero", "b"),
        ("two", "/two", "b"),
    ]));
    let r = wait_for_route(&c, "/two", 200).await;
    assert_eq!(r.upstream(), Some("b"));
    let st = stack.xds.status().await;
    let v2 = st["version"].as_str().expect("status.version").to_string();
    assert_ne!(v1, v2, "a different config has a different version");
    stack.wait_converged().await;
    let ok_before = stack.xds.metric(OK).await.unwrap_or(0.0);
    let rejected_before = stack.xds.metric(REJECTED).await.unwrap_or(0.0);

    // 2. An invalid edit (a route naming a missing service) is rejected as a whole: the valid
    // route added in the same edit does not appear either.
    let bad = cfg(&[
        ("one", "/one", "a"),
        ("zero", "/zero", "b"),
        ("two", "/two", "b"),
        ("three", "/three", "a"),
        ("four", "/four", "missing"),
    ]);
    let bad_line = bad
        .lines()
        .position(|l| l.contains("service: missing"))
        .expect("bad line")
        + 1;
    stack.config.write(&bad);
    let err = wait_for(
        "/status to report the rejected config",
        CONVERGE_TIMEOUT,
        async || {
            let st = stack.xds.try_status().await.ok()?;
            (!st["last_error"].is_null()).then_some(st)
        },
    )
    .await;
    let errors = err["last_error"]["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("last_error.errors: {err}"));
    assert!(!errors.is_empty(), "{err}");
    let first = errors[0].as_str().expect("error text");
    assert!(
        first.contains(&format!("gateway.yaml:{bad_line}:")),
        "the error must name gateway.yaml, line {bad_line} and a column: {first:?}"
    );
    assert!(
        first.contains("missing"),
        "the error must say what is wrong: {first:?}"
    );
    assert_eq!(
        err["version"],
        v2.as_str(),
        "a rejected file must not change the served version"
    );
    assert!(
        err["reloads"]["rejected"].as_u64().unwrap_or(0) >= 1,
        "{err}"
    );
    let rejected_now = stack.xds.metric(REJECTED).await.unwrap_or(0.0);
    assert!(
        rejected_now > rejected_before,
        "{REJECTED} went {rejected_before} → {rejected_now}"
    );
    for (path, status) in [
        ("/one", 200),
        ("/two", 200),
        ("/three", 404),
        ("/four", 404),
    ] {
        assert_eq!(
            c.get(path).ok().await.status,
            status,
            "{path} after the rejected edit"
        );
    }
    stack.wait_converged().await;

    // 3. Fixing the file applies it and clears the error.
    stack.config.write(&cfg(&[
        ("one", "/one", "a"),
        ("zero", "/zero", "b"),
        ("two", "/two", "b"),
        ("three", "/three", "a"),
    ]));
    let r = wait_for_route(&c, "/three", 200).await;
    assert_eq!(r.upstream(), Some("a"));
    let st = wait_for(
        "/status to clear last_error",
        CONVERGE_TIMEOUT,
        async || {
            let st = stack.xds.try_status().await.ok()?;
            st["last_error"].is_null().then_some(st)
        },
    )
    .await;
    assert_ne!(st["version"], v2.as_str());
    let ok_now = stack.xds.metric(OK).await.unwrap_or(0.0);
    assert!(ok_now > ok_before, "{OK} went {ok_before} → {ok_now}");
    assert_eq!(c.get("/one").ok().await.status, 200);
    stack.wait_converged().await;
}

/// An edit that adds a service and a route to it: Envoy gets the new cluster, its endpoints and
/// the route (the cluster must be warmed before the route uses it).
async fn reload_adds_a_service(mode: XdsMode) {
    let a = EchoUpstream::start("a").await;
    let b = EchoUpstream::start("b").await;
    let port = free_port();
    let cfg = |routes: &[(&str, &str, &str)]| config(port, &a.endpoint(), &b.endpoint(), routes);
    let stack = Stack::start(mode, &cfg(&[("one", "/one", "a")])).await;
    let c = stack.client(port);
    wait_for_route(&c, "/one", 200).await;
    stack.wait_converged().await;

    stack
        .config
        .write(&cfg(&[("one", "/one", "a"), ("bee", "/bee", "b")]));
    let r = wait_for_route(&c, "/bee", 200).await;
    assert_eq!(r.upstream(), Some("b"));
    assert_eq!(c.get("/one").ok().await.upstream(), Some("a"));
    stack.wait_converged().await;
}

/// Four clients loop over every route known to be live while 20 edits each add a route (to a
/// new service, so clusters change too) and move `/base` between two services. Not one
/// response may be anything but 200.
async fn no_errors_under_load_across_reloads(mode: XdsMode) {
    const RELOADS: usize = 20;
    const CLIENTS: usize = 4;
    let a = EchoUpstream::start("a").await;
    let b = EchoUpstream::start("b").await;
    let port = free_port();
    let cfg = |n: usize| {
        let mut y = format!(
            "version: 1\nservices:\n  a: {{ endpoints: [{}] }}\n  b: {{ endpoints: [{}] }}\n",
            a.endpoint(),
            b.endpoint()
        );
        for i in 1..=n {
            y.push_str(&format!(
                "  s{i}: {{ endpoints: [{}] }}\n",
                if i.is_multiple_of(2) {
                    a.endpoint()
                } else {
                    b.endpoint()
                }
            ));
        }
        y.push_str(&format!(
            "gateways:\n  edge:\n    listeners:\n      - {{ name: http, port: {port} }}\n    routes:\n\
             \x20     - name: base\n        match: {{ prefix: /base }}\n        service: {}\n        auth: none\n",
            if n.is_multiple_of(2) { "a" } else { "b" }
        ));
        for i in 1..=n {
            y.push_str(&format!(
                "      - name: r{i}\n        match: {{ prefix: /r{i} }}\n        service: s{i}\n        auth: none\n"
            ));
        }
        y
    };
    let stack = Stack::start(mode, &cfg(0)).await;
    let c = stack.client(port);
    wait_for_route(&c, "/base", 200).await;

    let load = Load::start(&c, vec![Probe::new("/base", 200)], CLIENTS);

    for n in 1..=RELOADS {
        if n.is_multiple_of(2) {
            stack.config.write(&cfg(n));
        } else {
            stack.config.write_in_place(&cfg(n));
        }
        let path = format!("/r{n}");
        wait_for_route(&c, &path, 200).await;
        let expect_base = if n.is_multiple_of(2) { "a" } else { "b" };
        wait_for(
            &format!("/base to move to {expect_base}"),
            CONVERGE_TIMEOUT,
            async || {
                c.get("/base")
                    .send()
                    .await
                    .ok()
                    .and_then(|r| (r.upstream() == Some(expect_base)).then_some(()))
            },
        )
        .await;
        load.add(Probe::new(&path, 200));
    }
    load.wait_more(200, "after the last reload").await;
    let (sent, bad) = load.finish().await;
    assert_clean(sent, &bad, 500);
    let st = stack.xds.status().await;
    assert!(st["last_error"].is_null(), "{st}");
    stack.wait_converged().await;
}
