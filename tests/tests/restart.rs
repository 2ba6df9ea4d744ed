//! Restarting xds-server (spec §6): traffic is not disturbed, Envoy reconnects, and it is
//! served identical versions (content hashes, not counters).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tests::stack::client_converged;
use tests::{
    free_port, sotw_and_delta, wait_for, wait_for_route, EchoUpstream, Stack, XdsMode,
    CONVERGE_TIMEOUT,
};

sotw_and_delta!(xds_server_restart_does_not_disturb_traffic);

/// Reconnection after a restart includes Envoy's retry back-off (0.25 s base, 5 s max).
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(20);

async fn xds_server_restart_does_not_disturb_traffic(mode: XdsMode) {
    let up = EchoUpstream::start("steady").await;
    let port = free_port();
    let yaml = format!(
        r#"version: 1
services:
  steady: {{ endpoints: [{up}] }}
gateways:
  edge:
    listeners:
      - {{ name: http, port: {port} }}
    routes:
      - name: health
        match: {{ path: /health }}
        respond: {{ status: 200, json: {{ status: ok }} }}
        auth: none
      - name: steady
        match: {{ prefix: /steady }}
        service: steady
        auth: none
"#,
        up = up.endpoint(),
    );
    let mut stack = Stack::start(mode, &yaml).await;
    let c = stack.client(port);
    wait_for_route(&c, "/steady", 200).await;
    stack.wait_converged().await;
    let node = stack.envoy.node_id().to_string();
    let before = stack.xds.status().await;
    let before_client = stack
        .xds
        .client(&node)
        .await
        .expect("Envoy listed in /status");
    assert_eq!(before_client["protocol"], mode.as_str(), "{before_client}");
    assert_eq!(before_client["gateway"], "edge", "{before_client}");

    // Continuous traffic from two clients for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for k in 0..2 {
        let (c, stop, sent) = (c.clone(), stop.clone(), sent.clone());
        clients.spawn(async move {
            let mut bad = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let path = if k == 0 { "/steady/x" } else { "/health" };
                match c.get(path).send().await {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => bad.push(format!("{path}: {} {}", r.status, r.body)),
                    Err(e) => bad.push(format!("{path}: {e}")),
                }
                sent.fetch_add(1, Ordering::SeqCst);
                // Pacing only: keeps the load steady without starving the two-core machine.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            bad
        });
    }
    let at_least = |n: u64| {
        let sent = sent.clone();
        async move {
            let target = sent.load(Ordering::SeqCst) + n;
            wait_for(
                &format!("{n} more requests"),
                Duration::from_secs(20),
                async || sent.load(Ordering::SeqCst) >= target,
            )
            .await;
        }
    };
    at_least(50).await;

    // Kill the control plane; Envoy keeps serving its last configuration.
    stack.xds.kill();
    assert!(
        stack.xds.try_status().await.is_err(),
        "xds-server still answers after being killed"
    );
    at_least(200).await;

    // Bring it back on the same ports: Envoy reconnects and ends up with the same versions.
    // SotW re-sends everything and Envoy ACKs it. Delta Envoy announces the versions it holds
    // (`initial_resource_versions`); the server, finding them current, sends nothing and lists
    // them as held.
    stack.xds.restart().await;
    let after_client = wait_for(
        "Envoy to reconnect and ACK everything",
        RECONNECT_TIMEOUT,
        async || {
            let cl = stack
                .xds
                .client(&node)
                .await
                .ok_or("not connected".to_string())?;
            if client_converged(&cl) {
                Ok(cl)
            } else {
                Err(cl.to_string())
            }
        },
    )
    .await;
    at_least(50).await;
    stop.store(true, Ordering::SeqCst);

    let after = stack.xds.status().await;
    assert_eq!(
        after["version"], before["version"],
        "a restart must serve the same version"
    );
    assert_eq!(after_client["protocol"], mode.as_str(), "{after_client}");
    let (after_acked, before_acked) = (acked(&after_client), acked(&before_client));
    assert_eq!(
        after_acked, before_acked,
        "Envoy must hold identical versions after the restart"
    );

    let mut failures = Vec::new();
    while let Some(res) = clients.join_next().await {
        failures.extend(res.expect("client task"));
    }
    let total = sent.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed across the restart; the first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );

    // The reconnected stream is live: an edit made after the restart reaches this Envoy.
    let edited = yaml.replace("prefix: /steady", "prefix: /steady-renamed");
    stack.config.write(&edited);
    wait_for_route(&c, "/steady-renamed/1", 200).await;
    wait_for("the old route to disappear", CONVERGE_TIMEOUT, async || {
        c.get("/steady/1")
            .send()
            .await
            .is_ok_and(|r| r.status == 404)
    })
    .await;
}

/// type URL → acked version, for comparing a client before and after a restart.
fn acked(client: &Value) -> Vec<(String, Value)> {
    let mut v: Vec<_> = client["types"]
        .as_object()
        .map(|t| {
            t.iter()
                .map(|(k, v)| (k.clone(), v["acked"].clone()))
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|x, y| x.0.cmp(&y.0));
    v
}
