//! End to end through xds-server: a `gateway.yaml` in a temporary directory, a real xds-server
//! and authz-service connected over ADS on free ports, and policy changes (a revoked key, a
//! rotated JWKS file, a new provider, a policy the service cannot use) taking effect without a
//! restart. Every wait polls for the expected state; none is a bare sleep.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use authz_service::server::{self, ServeOptions};
use common::*;
use jsonwebtoken::Algorithm;
use proto::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use proto::pb::envoy::service::auth::v3::check_response::HttpResponse;
use serde_json::json;
use test_support::{free_addr, wait_for, wait_http_ok};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(20);
const HS_VAR: &str = "AUTHZ_E2E_HS_SECRET";

/// Replaces a file the way editors and our CLI do: write aside, then rename.
fn write_atomic(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn gateway_yaml(with_hs: bool, hs_var: &str) -> String {
    let hs_provider = if with_hs {
        format!(
            "    hs: {{ issuer: https://hs.test, algorithms: [HS256], secret_env: {hs_var} }}\n"
        )
    } else {
        String::new()
    };
    let hs_route = if with_hs {
        "      - { name: hs-route, match: { prefix: /hs }, service: users, auth: hs }\n"
    } else {
        ""
    };
    format!(
        r#"version: 1
services:
  users: {{ endpoints: [127.0.0.1:3001] }}
auth:
  jwt:
    main:
      issuer: {ISS}
      audiences: [{AUD}]
      algorithms: [RS256]
      jwks_file: jwks.json
      headers: {{ x-user-id: sub }}
{hs_provider}  api_keys:
    partners: {{ header: x-api-key, keys_file: keys.yaml }}
gateways:
  edge:
    listeners: [{{ name: http, port: 18080 }}]
    routes:
      - {{ name: health, match: {{ path: /health }}, respond: {{ status: 200 }}, auth: none }}
      - {{ name: users, match: {{ prefix: /users }}, service: users, auth: [main, partners] }}
{hs_route}"#
    )
}

/// 200 (allowed), 401, 403 or 503.
async fn status(
    c: &mut AuthorizationClient<Channel>,
    route: &str,
    headers: &[(&str, &str)],
) -> u32 {
    let r = c
        .check(check_request(Some(route), headers, "/"))
        .await
        .expect("Check answers")
        .into_inner();
    match r.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.map_or(0, |s| s.code as u32),
        _ => 0,
    }
}

fn apikey(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_authz-service"))
        .arg("apikey")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apikey {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_take_effect_without_restarts() {
    // The variable is read by authz-service when it compiles the policy (never by xds-server).
    std::env::set_var(HS_VAR, "e2e-secret-e2e-secret-e2e-secret-0123");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    let jwks_path = dir.path().join("jwks.json");
    let keys_path = dir.path().join("keys.yaml");
    let keys_arg = keys_path.to_str().unwrap();
    write_atomic(
        &jwks_path,
        &jwks(&[jwk("rsa2048.pem", Algorithm::RS256, Some("k1"), true)]),
    );
    let key = apikey(&[
        "create",
        "--keys-file",
        keys_arg,
        "--id",
        "partner-1",
        "--plan",
        "pro",
        "--roles",
        "a,b",
    ]);
    assert!(key.starts_with("gwk_"));
    std::fs::write(&config, gateway_yaml(false, HS_VAR)).unwrap();

    // xds-server, in process.
    let xds = free_addr();
    let xds_task = tokio::spawn(xds_server::server::serve(
        xds_server::server::ServeOptions {
            config: config.clone(),
            listen: xds,
            admin: free_addr(),
            tls: None,
        },
    ));

    // authz-service, connected over ADS.
    let running = server::start(ServeOptions {
        xds: xds.to_string(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        node_id: "authz-e2e".into(),
        tls: None,
        xds_tls: None,
    })
    .await
    .unwrap();
    let admin = format!("http://{}", running.admin_addr);
    let http = test_support::http_client();
    wait_http_ok("readiness", &format!("{admin}/readyz"), WAIT).await;
    let mut c = AuthorizationClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap();

    // The first policy: API key and JWT (k1) accepted.
    let t1 = token("rsa2048.pem", Algorithm::RS256, "k1", &claims(json!({})));
    let t2 = token("rsa2048-b.pem", Algorithm::RS256, "k2", &claims(json!({})));
    let bearer1 = format!("Bearer {t1}");
    let bearer2 = format!("Bearer {t2}");
    assert_eq!(status(&mut c, "users", &[("x-api-key", &key)]).await, 200);
    assert_eq!(
        status(&mut c, "users", &[("authorization", &bearer1)]).await,
        200
    );
    assert_eq!(
        status(&mut c, "users", &[("authorization", &bearer2)]).await,
        401
    );
    assert_eq!(status(&mut c, "health", &[]).await, 200);

    // 1. `apikey revoke` edits the keys file; xds-server re-publishes; the key stops working.
    apikey(&["revoke", "--keys-file", keys_arg, "--id", "partner-1"]);
    wait_for("the revoked key to be refused", WAIT, async || {
        status(&mut c.clone(), "users", &[("x-api-key", &key)]).await == 401
    })
    .await;
    // A new key works without a restart too.
    let key2 = apikey(&[
        "create",
        "--keys-file",
        keys_arg,
        "--id",
        "partner-2",
        "--plan",
        "free",
    ]);
    wait_for("the new key to be accepted", WAIT, async || {
        status(&mut c.clone(), "users", &[("x-api-key", &key2)]).await == 200
    })
    .await;

    // 2. The JWKS file rotates from k1 to k2.
    write_atomic(
        &jwks_path,
        &jwks(&[jwk("rsa2048-b.pem", Algorithm::RS256, Some("k2"), true)]),
    );
    wait_for("the rotated key to be accepted", WAIT, async || {
        status(&mut c.clone(), "users", &[("authorization", &bearer2)]).await == 200
    })
    .await;
    assert_eq!(
        status(&mut c, "users", &[("authorization", &bearer1)]).await,
        401
    );

    // 3. A new provider and a route using it.
    let hs = sign_raw(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &claims(json!({"iss": "https://hs.test", "aud": null})).to_string(),
        &jsonwebtoken::EncodingKey::from_secret(b"e2e-secret-e2e-secret-e2e-secret-0123"),
        Algorithm::HS256,
    );
    let hs_bearer = format!("Bearer {hs}");
    assert_eq!(
        status(&mut c, "hs-route", &[("authorization", &hs_bearer)]).await,
        403,
        "unknown route yet"
    );
    write_atomic(&config, gateway_yaml(true, HS_VAR).as_bytes());
    wait_for("the new provider to accept its token", WAIT, async || {
        status(&mut c.clone(), "hs-route", &[("authorization", &hs_bearer)]).await == 200
    })
    .await;

    // 4. A policy the service cannot use (its secret is not in the environment) is NACKed and
    //    the last good one stays in force.
    let applied_before = running.xds_state.borrow().version.clone();
    write_atomic(
        &config,
        gateway_yaml(true, "AUTHZ_E2E_ABSENT_SECRET").as_bytes(),
    );
    // The refusal is seen in the service's rejected count: xds-server answers the NACK by
    // offering the last good policy again (the rollout stops), which the service re-applies, so
    // its `last_error` may already be cleared again by the time anyone looks.
    let metrics_url = format!("{admin}/metrics");
    wait_for("authz-service to NACK the policy", WAIT, async || {
        let Ok(r) = http.get(&metrics_url).send().await else {
            return false;
        };
        r.text()
            .await
            .is_ok_and(|m| m.contains(r#"authz_policy_updates_total{result="rejected"} 1"#))
    })
    .await;
    assert_eq!(running.xds_state.borrow().version, applied_before);
    assert_eq!(
        status(&mut c, "hs-route", &[("authorization", &hs_bearer)]).await,
        200
    );
    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"authz_policy_updates_total{result="rejected"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("authz_ready 1"), "{metrics}");
    let health = http.get(format!("{admin}/healthz")).send().await.unwrap();
    assert!(health.status().is_success());

    // 5. xds-server goes away: the last good policy keeps being enforced.
    xds_task.abort();
    let _ = xds_task.await;
    let mut state = running.xds_state.clone();
    tokio::time::timeout(WAIT, state.wait_for(|s| !s.connected))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status(&mut c, "users", &[("authorization", &bearer2)]).await,
        200
    );
    assert_eq!(status(&mut c, "users", &[("x-api-key", &key)]).await, 401);
    running.stop().await;
}
