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
    no_errors_under_load_across_reloads,
    no_errors_under_load_across_listener_edits
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

/// One edit's worth of listener-level features (each changes the listener's HTTP connection
/// manager, so Envoy drains the old filter chain in place).
#[derive(Clone, Copy, Default)]
struct Features {
    ip_lists: bool,
    trusted_hops: bool,
    compression: bool,
    max_body: bool,
    https_redirect: bool,
    cors: bool,
    websocket: bool,
}

/// A feature's name and its switch in [`Features`].
type Switch = (&'static str, fn(&mut Features) -> &mut bool);

const FEATURES: [Switch; 7] = [
    ("ip_lists", |f| &mut f.ip_lists),
    ("trusted_hops", |f| &mut f.trusted_hops),
    ("compression", |f| &mut f.compression),
    ("max_body", |f| &mut f.max_body),
    ("https_redirect", |f| &mut f.https_redirect),
    ("cors", |f| &mut f.cors),
    ("websocket", |f| &mut f.websocket),
];

struct Ports {
    http: u16,
    https: u16,
    redirect: u16,
}

fn features_config(p: &Ports, api: &str, ws: &str, f: Features) -> String {
    let mut gw = String::new();
    if f.trusted_hops {
        gw.push_str("    client_ip: { trusted_hops: 1 }\n");
    }
    if f.compression {
        gw.push_str("    compression: { algorithms: [gzip], min_bytes: 16 }\n");
    }
    if f.max_body {
        gw.push_str("    max_body: 1KiB\n");
    }
    if f.cors {
        gw.push_str("    cors: { origins: [https://app.example.com], methods: [GET] }\n");
    }
    let lists = if f.ip_lists {
        ", allow_ips: [127.0.0.0/8], deny_ips: [10.0.0.0/8, 127.0.0.9]"
    } else {
        ""
    };
    let ws_route = if f.websocket {
        "      - { name: ws, match: { prefix: /ws }, service: ws, auth: none, websocket: true, timeout: 0s }\n"
    } else {
        ""
    };
    format!(
        "version: 1\nservices:\n  api: {{ endpoints: [{api}] }}\n  ws: {{ endpoints: [{ws}] }}\n\
         gateways:\n  edge:\n{gw}    listeners:\n\
         \x20     - {{ name: http, port: {} }}\n\
         \x20     - {{ name: redirect, port: {}, https_redirect: {} }}\n\
         \x20     - {{ name: https, port: {}, tls: {{ cert_file: certs/api.crt, key_file: certs/api.key }} }}\n\
         \x20   routes:\n{ws_route}\
         \x20     - {{ name: base, match: {{ prefix: / }}, service: api, auth: none{lists} }}\n",
        p.http, p.redirect, f.https_redirect, p.https
    )
}

/// True when `feature` is seen on (`on`) or off (each probe is a request the load does not
/// send).
async fn shows(c: &tests::HttpClient, p: &Ports, feature: &str, on: bool) -> bool {
    let status = |r: Result<tests::Reply, _>| r.map(|r: tests::Reply| r.status).unwrap_or(0);
    match feature {
        // A denied direct peer (deny_ips names 127.0.0.9): refused whatever the hops.
        "ip_lists" => {
            let from = std::net::IpAddr::from([127, 0, 0, 9]);
            let r = tests::HttpClient::from_source(p.http, from)
                .get("/base")
                .send()
                .await;
            (status(r) == 403) == on
        }
        // A denied address named by the balancer's entry: refused only with the lists and one
        // trusted hop (the caller passes `on` for both).
        "trusted_hops" => {
            let r = c
                .get("/base")
                .header("x-forwarded-for", "10.1.1.1")
                .send()
                .await;
            (status(r) == 403) == on
        }
        "compression" => {
            let r = c
                .get("/base")
                .header("accept-encoding", "gzip")
                .send()
                .await;
            let gz = r
                .ok()
                .is_some_and(|r| r.header("content-encoding") == Some("gzip"));
            gz == on
        }
        "max_body" => {
            let r = c.post("/base").body("x".repeat(4096)).send().await;
            (status(r) == 413) == on
        }
        "https_redirect" => {
            let r = tests::HttpClient::new(p.redirect).get("/base").send().await;
            let got = status(r);
            // Off, the plain listener serves the route itself.
            if on {
                got == 301
            } else {
                got == 200
            }
        }
        "cors" => {
            let r = c
                .request(reqwest::Method::OPTIONS, "/base")
                .header("origin", "https://app.example.com")
                .header("access-control-request-method", "GET")
                .send()
                .await;
            let allowed = r.ok().is_some_and(|r| {
                r.header("access-control-allow-origin") == Some("https://app.example.com")
            });
            allowed == on
        }
        "websocket" => {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let req = format!("ws://127.0.0.1:{}/ws", p.http)
                .into_client_request()
                .expect("request");
            let opened = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                tokio_tungstenite::connect_async(req),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            opened == on
        }
        other => unreachable!("no probe for {other}"),
    }
}

/// Four clients keep requesting the plain listener (with and without `Accept-Encoding`) while
/// live edits turn every listener-level feature of spec §8 on, one edit each, and then off
/// again in the reverse order:
/// IP lists, trusted hops, compression, max_body, https_redirect (on another listener), CORS,
/// WebSocket routes. Each edit is seen to apply, and not one of the clients' requests fails.
async fn no_errors_under_load_across_listener_edits(mode: XdsMode) {
    const CLIENTS: usize = 4;
    let api = EchoUpstream::start("api").await;
    let ws = tests::ws::WsEchoUpstream::start().await;
    let ports = Ports {
        http: free_port(),
        https: free_port(),
        redirect: free_port(),
    };
    let dir = tempfile::Builder::new()
        .prefix("gateway-e2e-")
        .tempdir()
        .expect("temp dir");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir certs");
    let ck = rcgen::generate_simple_self_signed(vec!["api.example.com".to_string()])
        .expect("generate certificate");
    std::fs::write(certs.join("api.crt"), ck.cert.pem()).expect("write cert");
    std::fs::write(certs.join("api.key"), ck.signing_key.serialize_pem()).expect("write key");
    let cfg = |f: Features| features_config(&ports, &api.endpoint(), &ws.endpoint(), f);
    let stack = Stack::start_in(dir, mode, &cfg(Features::default())).await;
    let c = stack.client(ports.http);
    wait_for_route(&c, "/base", 200).await;

    let load = Load::start(
        &c,
        vec![
            Probe::new("/base", 200),
            Probe::new("/base/other?q=1", 200).header("accept-encoding", "gzip"),
        ],
        CLIENTS,
    );
    let mut f = Features::default();
    let mut edits = 0;
    let order: Vec<_> = FEATURES
        .iter()
        .map(|x| (true, *x))
        .chain(FEATURES.iter().rev().map(|x| (false, *x)))
        .collect();
    for (on, (name, field)) in order {
        *field(&mut f) = on;
        stack.config.write(&cfg(f));
        edits += 1;
        let expect = match name {
            "trusted_hops" => f.ip_lists && f.trusted_hops,
            _ => on,
        };
        wait_for(
            &format!(
                "edit {edits} ({name} {}) to apply",
                if on { "on" } else { "off" }
            ),
            CONVERGE_TIMEOUT,
            async || shows(&c, &ports, name, expect).await,
        )
        .await;
        load.wait_more(100, &format!("after edit {edits}")).await;
    }
    load.wait_more(200, "after the last edit").await;
    let (sent, bad) = load.finish().await;
    assert_clean(sent, &bad, 1000);
    let st = stack.xds.status().await;
    assert!(st["last_error"].is_null(), "{st}");
    stack.wait_converged().await;
}
