//! A policy service that refuses (NACKs) a new policy holds the whole rollout back (spec §6, "a
//! rejected config changes nothing", across processes): Envoy keeps its routes, so a route that
//! needs the refused policy never reaches it to be denied as unknown; `/status` names the service
//! and its error, the reload counts as rejected, the refused version is not offered again, and
//! the next good edit rolls out as usual.

use serde_json::Value;
use tests::authz::{bearer, token, token_from, SECRET_ENV};
use tests::gateway::{Full, Shape};
use tests::{wait_for, wait_for_route, HttpClient, CONVERGE_TIMEOUT};

/// A variable that is set nowhere, authz-service's environment included: a JWT provider reading
/// its secret from it passes `config::load` (xds-server holds no secrets) but authz-service
/// cannot compile it and NACKs the policy.
const UNSET_ENV: &str = "GATEWAY_E2E_SECRET_NOBODY_SET";

const REJECTED: &str = "xds_config_reloads_total{result=\"rejected\"}";

const ROUTES: &str = r#"      - name: orders
        match: { prefix: /orders }
        service: api
        auth: main
      - name: public
        match: { prefix: /public }
        service: api
        auth: none
"#;

/// The base routes plus `/new`, protected by a second provider `second` whose secret is in
/// `secret_env`, issued by [`second_issuer`].
fn with_new_route(secret_env: &str) -> Shape {
    Shape {
        jwt_extra: format!(
            "    second:\n      issuer: {}\n      algorithms: [HS256]\n      secret_env: {secret_env}\n",
            second_issuer()
        ),
        ..Shape::new(
            "{ free: 1000/minute, pro: 1000/minute }",
            &format!(
                "{ROUTES}      - name: new\n        match: {{ prefix: /new }}\n        service: api\n        auth: second\n"
            ),
        )
    }
}

fn second_issuer() -> String {
    "https://second.gateway.test".to_string()
}

/// What `GET path` with `authorization` answers: the status and the body without its
/// per-request `request_id`.
async fn answer(client: &HttpClient, path: &str, authorization: &str) -> (u16, Value) {
    let r = client
        .get(path)
        .header("authorization", authorization)
        .ok()
        .await;
    let mut body: Value = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body));
    if let Some(o) = body.as_object_mut() {
        o.remove("request_id");
    }
    (r.status, body)
}

/// Waits until `/status` reports `n` rejected reloads, and returns it.
async fn wait_rejected(gw: &Full, n: u64) -> Value {
    wait_for(
        &format!("/status to count {n} rejected reload(s)"),
        CONVERGE_TIMEOUT,
        async || {
            let st = gw.stack.xds.try_status().await.ok()?;
            (st["reloads"]["rejected"].as_u64() == Some(n)).then_some(st)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_policy_changes_nothing_and_a_good_edit_rolls_out() {
    assert!(
        std::env::var_os(UNSET_ENV).is_none(),
        "{UNSET_ENV} must be unset for this test"
    );
    let gw = Full::start(
        &Shape::new("{ free: 1000/minute, pro: 1000/minute }", ROUTES),
        None,
    )
    .await;
    let client = gw.stack.client(gw.ports.http);
    let alice = bearer(&token("alice", "pro"));
    assert_eq!(answer(&client, "/orders", &alice).await.0, 200);
    // Whatever `/new` answers before the edit (no route there), it must go on answering.
    let new_before = answer(&client, "/new", &alice).await;
    assert_ne!(new_before.0, 200, "{new_before:?}");
    let before = gw.stack.xds.status().await;
    let version = before["version"].clone();
    let rejected_before = gw.stack.xds.metric(REJECTED).await.unwrap_or(0.0);

    // 1. authz-service cannot compile provider `second`: it NACKs, and nothing else changes.
    let bad = gw.yaml(&with_new_route(UNSET_ENV));
    gw.stack.config.write(&bad);
    let st = wait_rejected(&gw, 1).await;
    let error = &st["last_error"];
    let refused = error["refused_by"]
        .as_array()
        .unwrap_or_else(|| panic!("last_error.refused_by: {st}"));
    assert_eq!(refused.len(), 1, "{st}");
    assert_eq!(refused[0]["node_id"], "authz-full", "{st}");
    assert_eq!(refused[0]["group"], proto::group::AUTHZ, "{st}");
    assert_eq!(refused[0]["type_url"], proto::type_url::AUTH_POLICY, "{st}");
    let detail = refused[0]["error"].as_str().unwrap_or_default();
    assert!(
        detail.contains("second") && detail.contains(UNSET_ENV),
        "authz-service's own error is shown: {st}"
    );
    assert!(
        refused[0]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{st}"
    );
    let line = error["errors"][0].as_str().unwrap_or_default();
    assert!(
        line.contains("authz-full") && line.contains(UNSET_ENV),
        "the error line names the service and its error: {st}"
    );
    assert_eq!(
        st["version"], version,
        "a refused config is not the served one"
    );
    assert!(gw.stack.xds.metric(REJECTED).await.unwrap_or(0.0) > rejected_before);
    // Envoy got nothing new: it is at rest on what it had, and answers as before.
    gw.stack.wait_converged().await;
    assert_eq!(answer(&client, "/orders", &alice).await.0, 200);
    assert_eq!(
        answer(&client, "/new", &alice).await,
        new_before,
        "the route needing the refused policy must not reach Envoy"
    );
    assert_eq!(
        answer(
            &client,
            "/new",
            &bearer(&token_from(&second_issuer(), "bob", "pro"))
        )
        .await,
        answer(&client, "/new", &alice).await
    );

    // 2. The same config again (a touch, a re-save): refused at once, without offering
    // authz-service the version it already refused.
    gw.stack.config.write_in_place(&bad);
    let st = wait_rejected(&gw, 2).await;
    assert_eq!(
        st["last_error"]["refused_by"][0]["node_id"], "authz-full",
        "{st}"
    );
    let nacks = gw
        .stack
        .xds
        .metric(&format!(
            "xds_nacks_total{{type_url=\"{}\"}}",
            proto::type_url::AUTH_POLICY
        ))
        .await;
    assert_eq!(nacks, Some(1.0), "the refused policy was offered once");

    // 3. A good edit (the provider's secret where authz-service has it) rolls out normally.
    gw.stack.config.write(&gw.yaml(&with_new_route(SECRET_ENV)));
    let bob = bearer(&token_from(&second_issuer(), "bob", "pro"));
    wait_for(
        "/new to accept a token of provider second",
        CONVERGE_TIMEOUT,
        async || (answer(&client, "/new", &bob).await.0 == 200).then_some(()),
    )
    .await;
    let st = gw.stack.xds.status().await;
    assert!(st["last_error"].is_null(), "{st}");
    assert_ne!(st["version"], version, "{st}");
    assert_eq!(st["reloads"]["rejected"], 2, "{st}");
    wait_for_route(&client, "/public", 200).await;
    assert_eq!(answer(&client, "/orders", &alice).await.0, 200);
    gw.stack.wait_converged().await;
}
