//! Plans a credential names but `rate_limits.plans` does not define, through a real Envoy: a
//! token's unknown plan is accepted and limited as the default plan, and the upstream is told the
//! default plan (never the name the token gave), so the upstream and the limiter agree; each such
//! request is counted and logged at most once a minute. A keys file naming an undefined plan
//! never gets that far: `xds-server validate` and a live reload refuse it with its position.

use std::path::Path;

use tests::authz::{api_key, bearer, token, token_with_claims, ISSUER};
use tests::gateway::{Full, Shape, API_KEY_HEADER};
use tests::xds::{parse_metric, validate};
use tests::{wait_for, wait_for_route, HttpClient, CONVERGE_TIMEOUT};

const ROUTES: &str = r#"      - name: orders
        match: { prefix: /orders }
        service: api
        auth: [main, partners]
      - name: public
        match: { prefix: /public }
        service: api
        auth: none
        rate_limit: none
"#;

/// The log line authz-service writes for an unknown plan (`authz_service::unknown_plan`).
const WARNING: &str = "rate_limits.plans does not define";

async fn authz_metrics(gw: &Full) -> String {
    let url = format!("http://127.0.0.1:{}/metrics", gw.authz.admin_port);
    reqwest::get(&url)
        .await
        .and_then(|r| r.error_for_status())
        .expect("authz-service /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// `(status, x-client-plan the upstream saw, x-ratelimit-limit)` of one request.
async fn send(
    client: &HttpClient,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Option<String>) {
    let mut req = client.get("/orders");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = req.ok().await;
    (
        r.status,
        r.upstream_header("x-client-plan").map(str::to_string),
        r.header("x-ratelimit-limit").map(str::to_string),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_an_unknown_plan_is_limited_and_forwarded_as_the_default_plan() {
    let mut gw = Full::start(
        &Shape::new("{ free: 3/minute, pro: 100/minute }", ROUTES),
        None,
    )
    .await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/public", 200).await;

    // A plan the config defines is the client's own.
    let pro = bearer(&token("paula", "pro"));
    assert_eq!(
        send(&client, &[("authorization", &pro)]).await,
        (200, Some("pro".into()), Some("100".into()))
    );

    // "gold" is no plan here: free's limit applies and the upstream is told `free`, whatever
    // x-client-plan the client sends along.
    let gold = bearer(&token("goldie", "gold"));
    for spoofed in ["gold", "pro", "free"] {
        assert_eq!(
            send(
                &client,
                &[("authorization", &gold), ("x-client-plan", spoofed)]
            )
            .await,
            (200, Some("free".into()), Some("3".into())),
            "spoofed x-client-plan: {spoofed}"
        );
    }
    let (status, _, limit) = send(&client, &[("authorization", &gold)]).await;
    assert_eq!(
        (status, limit.as_deref()),
        (429, Some("3")),
        "free's 3/minute applies"
    );

    // Another spelling of a defined plan is not that plan: it does not buy pro's limit.
    let shouted = bearer(&token_with_claims(ISSUER, "shouty", &["plan=PRO"]));
    assert_eq!(
        send(&client, &[("authorization", &shouted)]).await,
        (200, Some("free".into()), Some("3".into()))
    );
    // The pro client was never touched by any of this.
    assert_eq!(send(&client, &[("authorization", &pro)]).await.0, 200);

    // Every request is counted (the refused one too: authz-service accepted it), by provider.
    let m = authz_metrics(&gw).await;
    assert_eq!(
        parse_metric(&m, r#"authz_unknown_plan_total{provider="main"}"#),
        Some(5.0),
        "{m}"
    );
    assert!(
        !m.contains("gold"),
        "no metric is labelled by a client's value: {m}"
    );
    // Logged once per provider and plan name, not once per request.
    let log = plain(&gw.authz.proc().log());
    let lines = |name: &str| {
        log.lines()
            .filter(|l| l.contains(WARNING) && l.contains(&format!("plan={name} ")))
            .count()
    };
    assert_eq!(lines("gold"), 1, "{log}");
    assert_eq!(lines("PRO"), 1, "{log}");
}

/// `text` without terminal colour sequences (`ESC [ … m`), which the text log format may carry.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// Replaces `path` atomically, as an editor or `apikey` does.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_file_naming_an_undefined_plan_is_refused_by_validate_and_by_reload() {
    let gw = Full::start(
        &Shape::new("{ free: 100/minute, pro: 100/minute }", ROUTES),
        None,
    )
    .await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/public", 200).await;
    let partner = gw.partner_key.clone();
    assert_eq!(
        send(&client, &[(API_KEY_HEADER, &partner)]).await,
        (200, Some("pro".into()), Some("100".into()))
    );
    let version = gw.stack.xds.status().await["version"].clone();
    let before = std::fs::read_to_string(&gw.keys_file).expect("keys file");

    // A key on "gold" added next to the served file: the whole edit is refused, the new key does
    // not work, and the keys served before still do.
    let staged = gw.keys_file.with_file_name("staged-keys.yaml");
    std::fs::write(&staged, &before).expect("copy keys file");
    let gold = api_key(&staged, "partner-gold", "gold");
    let text = std::fs::read_to_string(&staged).expect("staged keys file");
    let line = 1 + text
        .lines()
        .position(|l| l.contains("plan: \"gold\""))
        .expect("the gold key's plan line");
    replace(&gw.keys_file, &text);
    let st = wait_for(
        "/status to report the keys file",
        CONVERGE_TIMEOUT,
        async || {
            let st = gw.stack.xds.try_status().await.ok()?;
            (!st["last_error"].is_null()).then_some(st)
        },
    )
    .await;
    let first = st["last_error"]["errors"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        first.contains(&format!("api-keys.yaml:{line}:")) && first.contains("unknown plan `gold`"),
        "the error names the file, line and plan: {st}"
    );
    assert_eq!(st["version"], version, "a rejected edit changes nothing");
    assert_eq!(send(&client, &[(API_KEY_HEADER, &gold)]).await.0, 401);
    assert_eq!(
        send(&client, &[(API_KEY_HEADER, &partner)]).await,
        (200, Some("pro".into()), Some("100".into()))
    );

    // `xds-server validate` says the same, with exit 1.
    let out = validate(gw.stack.config.path());
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.contains(&format!("api-keys.yaml:{line}:"))
                && l.contains("keys[1].plan: unknown plan `gold`")
                && l.contains("free, pro")),
        "{report}"
    );

    // Defining the plan makes the same file valid; the key then carries its own plan.
    let shape = Shape::new(
        "{ free: 100/minute, pro: 100/minute, gold: 7/minute }",
        ROUTES,
    );
    gw.stack.config.write(&gw.yaml(&shape));
    let r = wait_for(
        "the gold key to be accepted",
        CONVERGE_TIMEOUT,
        async || {
            let r = send(&client, &[(API_KEY_HEADER, &gold)]).await;
            (r.0 == 200).then_some(r)
        },
    )
    .await;
    assert_eq!(r, (200, Some("gold".into()), Some("7".into())));
    assert!(validate(gw.stack.config.path()).status.success());
}
