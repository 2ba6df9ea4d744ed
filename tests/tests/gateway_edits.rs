//! 20 edits of gateway.yaml under continuous authenticated traffic through a real Envoy, with
//! authz-service and ratelimit-service following the same file (spec §6). Every edit adds a JWT
//! provider, a plan and a route that needs both, and every other edit also changes the existing
//! plans' limits. Established traffic must never see an unexpected status, and the new route must
//! go straight from 404 (not there yet) to 200: a 401, 403 or 5xx in between would mean a request
//! was judged against a half-applied configuration.

use tests::authz::{bearer, token, token_from};
use tests::gateway::{Full, Shape, API_KEY_HEADER};
use tests::load::{assert_clean, Load, Probe};
use tests::{wait_for, wait_for_route, CONVERGE_TIMEOUT};

const EDITS: usize = 20;

const BASE_ROUTES: &str = r#"      - name: orders
        match: { prefix: /orders }
        service: api
        auth: [main, partners]
      - name: public
        match: { prefix: /public }
        service: api
        auth: none
"#;

fn issuer(n: usize) -> String {
    format!("https://issuer-{n}.gateway.test")
}

/// The config after `n` edits.
fn shape(n: usize) -> Shape {
    // Limits high enough that no client of this test reaches them, but different per edit.
    let base = 1_000_000 + n / 2;
    let mut plans = format!("{{ free: {base}/minute, pro: {base}/minute");
    let mut routes = BASE_ROUTES.to_string();
    let mut jwt_extra = String::new();
    for i in 1..=n {
        plans.push_str(&format!(", tier{i}: 1000000/minute"));
        jwt_extra.push_str(&format!(
            "    p{i}:\n      issuer: {}\n      algorithms: [HS256]\n      secret_env: {}\n      headers: {{ x-user-id: sub }}\n",
            issuer(i),
            tests::authz::SECRET_ENV
        ));
        routes.push_str(&format!(
            "      - name: r{i}\n        match: {{ prefix: /r{i} }}\n        service: api\n        auth: p{i}\n"
        ));
    }
    plans.push_str(" }");
    Shape {
        plans,
        jwt_extra,
        ..Shape::new("", &routes)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_edits_under_authenticated_load() {
    let gw = Full::start(&shape(0), None).await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/public", 200).await;

    let alice = bearer(&token("alice", "pro"));
    let load = Load::start(
        &client,
        vec![
            Probe::new("/orders/jwt", 200).header("authorization", &alice),
            Probe::new("/orders/key", 200).header(API_KEY_HEADER, &gw.partner_key),
            Probe::new("/public", 200),
            Probe::new("/orders/anonymous", 401),
        ],
        4,
    );
    load.wait_more(100, "before the first edit").await;

    for n in 1..=EDITS {
        let yaml = gw.yaml(&shape(n));
        if n.is_multiple_of(2) {
            gw.stack.config.write(&yaml);
        } else {
            gw.stack.config.write_in_place(&yaml);
        }
        let path = format!("/r{n}");
        let auth = bearer(&token_from(
            &issuer(n),
            &format!("user-{n}"),
            &format!("tier{n}"),
        ));
        // 404 until Envoy has the route; from its first answer on, only 200.
        let r = wait_for(
            &format!("{path} to be served"),
            CONVERGE_TIMEOUT,
            async || {
                let r = client.get(&path).header("authorization", &auth).ok().await;
                (r.status != 404).then_some(r)
            },
        )
        .await;
        assert_eq!(
            r.status, 200,
            "edit {n}: first answer of {path}: {}",
            r.body
        );
        assert_eq!(
            r.upstream_header("x-client-plan"),
            Some(format!("tier{n}").as_str())
        );
        assert_eq!(
            r.upstream_header("x-auth-provider"),
            Some(format!("p{n}").as_str())
        );
        assert_eq!(r.header("x-ratelimit-limit"), Some("1000000"));
        load.add(Probe::new(&path, 200).header("authorization", &auth));
        // Changed plan limits reach the limiter (every other edit).
        let limit = (1_000_000 + n / 2).to_string();
        wait_for(
            &format!("edit {n}: plan pro at {limit}"),
            CONVERGE_TIMEOUT,
            async || {
                let r = client
                    .get("/orders/limit")
                    .header("authorization", &alice)
                    .send()
                    .await
                    .ok()?;
                (r.header("x-ratelimit-limit") == Some(limit.as_str())).then_some(())
            },
        )
        .await;
    }
    load.wait_more(200, "after the last edit").await;
    let (sent, bad) = load.finish().await;
    assert_clean(sent, &bad, 1000);
    let status = gw.stack.xds.status().await;
    assert!(status["last_error"].is_null(), "{status}");
    gw.stack.wait_converged().await;
}
