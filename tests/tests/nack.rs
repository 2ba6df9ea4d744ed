//! An Envoy that rejects (NACKs) a resource keeps its last good configuration; xds-server shows
//! Envoy's error on `/status`, counts it, and does not re-send the rejected version in a loop.

use std::net::TcpListener;

use tests::{
    free_port, sotw_and_delta, wait_for, wait_for_route, EchoUpstream, Stack, XdsMode,
    CONVERGE_TIMEOUT,
};

sotw_and_delta!(nacked_listener_keeps_last_good_config);

const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

fn config(a: &str, port: u16, extra_listener: Option<u16>, route: &str) -> String {
    let extra = extra_listener.map_or(String::new(), |p| {
        format!("      - {{ name: second, port: {p} }}\n")
    });
    format!(
        "version: 1\nservices:\n  a: {{ endpoints: [{a}] }}\ngateways:\n  edge:\n    listeners:\n      \
         - {{ name: http, port: {port} }}\n{extra}    routes:\n      - {{ name: r, match: {{ prefix: {route} }}, service: a, auth: none }}\n"
    )
}

async fn nacked_listener_keeps_last_good_config(mode: XdsMode) {
    let a = EchoUpstream::start("a").await;
    let port = free_port();
    let stack = Stack::start(mode, &config(&a.endpoint(), port, None, "/one")).await;
    let c = stack.client(port);
    wait_for_route(&c, "/one", 200).await;
    stack.wait_converged().await;

    // A second listener on a port another process holds: valid YAML, but Envoy cannot bind it
    // and rejects the listener update.
    let taken = TcpListener::bind("0.0.0.0:0").expect("bind a port to occupy");
    let taken_port = taken.local_addr().expect("local addr").port();
    stack
        .config
        .write(&config(&a.endpoint(), port, Some(taken_port), "/one"));
    let nack = wait_for("the listener NACK on /status", CONVERGE_TIMEOUT, || async {
        let st = stack.xds.status().await;
        let nack = st["clients"][0]["types"][LISTENER]["nacked"].clone();
        (!nack.is_null()).then_some(nack)
    })
    .await;
    let error = nack["error"].as_str().expect("nack.error");
    assert!(!error.is_empty(), "Envoy's error text is shown: {nack}");
    // The Envoy keeps serving its last good configuration.
    assert_eq!(c.get("/one").ok().await.status, 200);

    // Fix the file at once: a resend loop would produce many NACKs within the reload window.
    stack
        .config
        .write(&config(&a.endpoint(), port, None, "/two"));
    wait_for_route(&c, "/two", 200).await;
    let nacks = stack
        .xds
        .metric(&format!("xds_nacks_total{{type_url=\"{LISTENER}\"}}"))
        .await
        .expect("nack counter present");
    assert_eq!(nacks, 1.0, "the rejected version was sent exactly once");
    stack.wait_converged().await;
    drop(taken);
}
