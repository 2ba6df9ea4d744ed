//! Tests for gateway.yaml decoding and validation: the spec's example, one table row per kind of
//! error (with its line and column), accumulation, loading, and never panicking on garbage.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const SPEC_EXAMPLE: &str = include_str!("testdata/spec-example.yaml");

fn file() -> &'static Path {
    Path::new("/etc/gateway/gateway.yaml")
}

/// Every error as `(line, column, message)`.
fn errors(src: &str) -> Vec<(usize, usize, String)> {
    match parse(src, file()) {
        Ok(_) => Vec::new(),
        Err(ConfigErrors(errs)) => {
            assert!(!errs.is_empty(), "Err must never be empty");
            for e in &errs {
                assert_eq!(e.file, file());
            }
            errs.into_iter()
                .map(|e| (e.line, e.column, e.message))
                .collect()
        }
    }
}

/// The column (1-based) of `needle` on 1-based `line` of `src`.
fn col(src: &str, line: usize, needle: &str) -> usize {
    if src.is_empty() {
        return 1;
    }
    let text = src
        .lines()
        .nth(line - 1)
        .unwrap_or_else(|| panic!("no line {line} in:\n{src}"));
    let byte = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not on line {line}: {text}"));
    text[..byte].chars().count() + 1
}

/// Twelve lines of valid config; routes appended by [`with_routes`] start on line 13.
const BASE: &str = "\
version: 1
services:
  users: { endpoints: [127.0.0.1:3001] }
auth:
  jwt:
    main: { issuer: https://id.example.com, algorithms: [RS256], jwks_file: jwks.json }
  api_keys:
    partners: { keys_file: keys.yaml }
gateways:
  edge:
    listeners: [{ name: http, port: 8080 }]
    routes:
";

fn with_routes(routes: &str) -> String {
    format!("{BASE}{routes}")
}

const OK_ROUTE: &str =
    "      - name: r\n        match: { prefix: /api }\n        service: users\n        auth: main\n";

#[test]
fn the_spec_example_parses() {
    let config = parse(SPEC_EXAMPLE, file()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.version, 1);

    let users = &config.services["users"];
    assert_eq!(
        users.endpoints[1],
        HostPort {
            host: "127.0.0.1".into(),
            port: 3011
        }
    );
    assert_eq!(users.protocol, Protocol::Http1);
    assert_eq!(users.connect_timeout, Duration::from_secs(2));
    assert_eq!(users.health_check.as_ref().map(|h| h.unhealthy), Some(3));
    assert_eq!(
        users
            .outlier_detection
            .as_ref()
            .map(|o| o.max_ejection_percent),
        Some(50)
    );
    let tls = users.tls.as_ref().expect("tls");
    assert_eq!(tls.sni.as_deref(), Some("users.internal"));
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(Path::new("/etc/gateway/certs/internal-ca.pem"))
    );
    assert_eq!(
        config.services["orders"].circuit_breaker,
        CircuitBreaker::default()
    );

    let auth = config.auth.as_ref().expect("auth");
    assert_eq!(auth.service.timeout, Duration::from_millis(200));
    assert_eq!(auth.service.on_error, OnError::Deny);
    let main = &auth.jwt["main"];
    assert_eq!(
        main.algorithms,
        vec![JwtAlgorithm::RS256, JwtAlgorithm::ES256]
    );
    assert_eq!(
        main.keys,
        JwtKeys::File(PathBuf::from("/etc/gateway/keys/jwks.json"))
    );
    assert_eq!(
        main.headers[1],
        ("x-user-roles".to_string(), "roles".to_string())
    );
    assert!(!main.forward_token);
    let partners = &auth.api_keys["partners"];
    assert_eq!(partners.query.as_deref(), Some("api_key"));
    assert_eq!(
        partners.keys_file,
        PathBuf::from("/etc/gateway/keys/api-keys.yaml")
    );

    let rl = config.rate_limits.as_ref().expect("rate_limits");
    assert_eq!(
        rl.service.address,
        HostPort {
            host: "127.0.0.1".into(),
            port: 9002
        }
    );
    assert_eq!(
        rl.plans["pro"],
        Rate {
            requests: 1000,
            window: Duration::from_secs(60)
        }
    );
    assert_eq!(rl.default_plan.as_deref(), Some("free"));
    assert_eq!(rl.algorithm, Algorithm::SlidingWindow);

    let edge = &config.gateways["edge"];
    assert_eq!(edge.listeners[0].address, "0.0.0.0");
    assert_eq!(
        edge.listeners[1].tls.as_ref().map(|t| t.key_file.clone()),
        Some(PathBuf::from("/etc/gateway/certs/api.key"))
    );
    assert_eq!(
        edge.cors.as_ref().and_then(|c| c.max_age),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(edge.access_log, AccessLog::Json);

    let [health, users_route, payments] = &edge.routes[..] else {
        panic!("3 routes")
    };
    assert_eq!(
        health.action,
        RouteAction::Respond(Respond {
            status: 200,
            body: RespondBody::Json(serde_json::json!({"status": "ok"}))
        })
    );
    assert_eq!(health.auth, RouteAuth::None);
    assert_eq!(health.rate_limit, RouteRateLimit::Default);
    assert_eq!(users_route.matcher.methods, vec!["GET", "POST"]);
    assert_eq!(
        users_route.rewrite,
        Some(Rewrite {
            prefix: "/users".into()
        })
    );
    assert_eq!(
        users_route.auth,
        RouteAuth::Providers(vec!["main".into(), "partners".into()])
    );
    assert_eq!(
        users_route.rate_limit,
        RouteRateLimit::Limits(vec![LimitRef::Plan])
    );
    assert_eq!(
        users_route.retries.as_ref().map(|r| r.on.clone()),
        Some(vec![
            RetryOn::Condition("connect-failure".into()),
            RetryOn::Condition("reset".into()),
            RetryOn::Status(503)
        ])
    );
    assert_eq!(
        payments.action,
        RouteAction::Weighted(vec![("payments-v1".into(), 90), ("payments-v2".into(), 10)])
    );
    assert_eq!(
        payments.rate_limit,
        RouteRateLimit::Limits(vec![
            LimitRef::Plan,
            LimitRef::Limit {
                rate: Rate {
                    requests: 5,
                    window: Duration::from_secs(1)
                },
                per: Per::User
            }
        ])
    );
    assert_eq!(
        payments.request_headers.set,
        vec![("x-gateway".to_string(), "edge".to_string())]
    );
    assert_eq!(
        payments.response_headers.remove,
        vec!["server", "x-powered-by"]
    );
}

#[test]
fn a_minimal_config_gets_the_documented_defaults() {
    let config = parse(&with_routes(OK_ROUTE), file()).unwrap_or_else(|e| panic!("{e}"));
    let auth = config.auth.expect("auth");
    assert_eq!(
        auth.service.address,
        HostPort {
            host: "127.0.0.1".into(),
            port: 9001
        }
    );
    assert_eq!(auth.api_keys["partners"].header, "x-api-key");
    assert_eq!(auth.jwt["main"].clock_skew, Duration::from_secs(30));
    assert_eq!(auth.jwt["main"].client_claim, "sub");
    assert_eq!(
        config.gateways["edge"].routes[0].rate_limit,
        RouteRateLimit::Default
    );

    let src = "version: 1\nrate_limits: {}\n";
    let rl = parse(src, file())
        .unwrap_or_else(|e| panic!("{e}"))
        .rate_limits
        .expect("rl");
    assert_eq!(
        rl.service.address,
        HostPort {
            host: "127.0.0.1".into(),
            port: 9002
        }
    );
    assert_eq!(rl.service.timeout, Duration::from_millis(50));
    assert_eq!(rl.service.on_error, OnError::Allow);
    assert_eq!(rl.default_plan, None);
}

#[test]
fn relative_paths_join_the_config_directory() {
    let src = with_routes(OK_ROUTE);
    let config = parse(&src, Path::new("conf/gateway.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let keys = &config.auth.expect("auth").jwt["main"].keys;
    assert_eq!(keys, &JwtKeys::File(PathBuf::from("conf/jwks.json")));
}

/// One case: the source, then every expected error as (line, text on that line where the error
/// points, part of the message).
type Case = (
    &'static str,
    String,
    Vec<(usize, &'static str, &'static str)>,
);

fn route_cases() -> Vec<Case> {
    let r = |body: &str| with_routes(body);
    vec![
        (
            "unknown key in a route",
            r("      - name: r\n        match: { prefix: /api }\n        service: users\n        auth: main\n        colour: blue\n"),
            vec![(17, "colour", "unknown key `colour`; expected one of: name, match, service")],
        ),
        (
            "a route without auth",
            r("      - name: r\n        match: { prefix: /api }\n        service: users\n"),
            vec![(13, "name", "missing required key `auth`; write `auth: none` explicitly")],
        ),
        (
            "unknown service",
            r("      - name: r\n        match: { prefix: /api }\n        service: nope\n        auth: main\n"),
            vec![(15, "nope", "unknown service `nope`; defined services: users")],
        ),
        (
            "unknown provider",
            r("      - name: r\n        match: { prefix: /api }\n        service: users\n        auth: [main, ghost]\n"),
            vec![(16, "ghost", "unknown auth provider `ghost`; defined providers: main, partners")],
        ),
        (
            "fractional duration",
            r(&format!("{OK_ROUTE}        timeout: 1.5s\n")),
            vec![(17, "1.5s", "expected a duration like 250ms, 5s, 1m, 1h, 1d (a whole number and a unit), found \"1.5s\" (whole numbers only: write 1500ms rather than 1.5s)")],
        ),
        (
            "a timeout without a unit",
            r(&format!("{OK_ROUTE}        timeout: 30\n")),
            vec![(17, "30", "a unit is required")],
        ),
        (
            "duplicate route names",
            r(&format!("{OK_ROUTE}{OK_ROUTE}")),
            vec![(17, "r", "duplicate route name `r` (first used on line 13)")],
        ),
        (
            "two path conditions",
            r("      - name: r\n        match: { prefix: /a, path: /b }\n        service: users\n        auth: main\n"),
            vec![(14, "path", "`path` cannot be combined with `prefix`; give exactly one of `path`, `prefix` or `regex`")],
        ),
        (
            "no path condition",
            r("      - name: r\n        match: { methods: [GET] }\n        service: users\n        auth: main\n"),
            vec![(14, "{", "missing the path condition")],
        ),
        (
            "path not starting with a slash",
            r("      - name: r\n        match: { prefix: api }\n        service: users\n        auth: main\n"),
            vec![(14, "api", "expected a path starting with `/`, found \"api\"")],
        ),
        (
            "rewrite on a path route",
            r("      - name: r\n        match: { path: /a }\n        service: users\n        auth: main\n        rewrite: { prefix: /b }\n"),
            vec![(17, "rewrite", "a prefix rewrite needs a `prefix` match")],
        ),
        (
            "rewrite on a respond route",
            r("      - name: r\n        match: { prefix: /a }\n        respond: { status: 204 }\n        auth: none\n        rewrite: { prefix: /b }\n"),
            vec![(17, "rewrite", "only routes that forward")],
        ),
        (
            "invalid regex",
            r("      - name: r\n        match: { regex: \"/a(\" }\n        service: users\n        auth: main\n"),
            vec![(14, "\"/a(", "invalid regular expression \"/a(\"")],
        ),
        (
            "invalid header regex",
            r("      - name: r\n        match: { prefix: /a, headers: { x-env: { regex: \"[a\" } } }\n        service: users\n        auth: main\n"),
            vec![(14, "\"[a", "invalid regular expression")],
        ),
        (
            "no action",
            r("      - name: r\n        match: { prefix: /a }\n        auth: main\n"),
            vec![(13, "name", "missing the action; give exactly one of `service`, `services`, `respond` or `compose`")],
        ),
        (
            "two actions",
            r("      - name: r\n        match: { prefix: /a }\n        service: users\n        respond: { status: 200 }\n        auth: main\n"),
            vec![(16, "respond", "`respond` cannot be combined with `service`")],
        ),
        (
            "limit without a rate_limits section",
            r(&format!("{OK_ROUTE}        rate_limit: [plan, {{ limit: 5/second }}]\n")),
            vec![(17, "{", "a `limit` needs a `rate_limits` section")],
        ),
        (
            "bad per and bad rate",
            r(&format!("{OK_ROUTE}        rate_limit: [{{ limit: 0/second, per: planet }}]\n")),
            vec![
                (17, "{", "needs a `rate_limits` section"),
                (17, "0/second", "the count `0` is not a whole number ≥ 1"),
                (17, "planet", "expected one of client | user | ip | route | tenant | header:<name>"),
            ],
        ),
        (
            "bad rate_limit keyword",
            r(&format!("{OK_ROUTE}        rate_limit: plans\n")),
            vec![(17, "plans", "expected `plan`, `none`, or a list")],
        ),
        (
            "retry conditions",
            r(&format!("{OK_ROUTE}        retries: {{ attempts: 2, on: [5xx, 600, bogus, \"503\"] }}\n")),
            vec![
                (17, "600", "expected an integer in 100..=599, found the integer 600"),
                (17, "bogus", "or one of 5xx | gateway-error"),
                (17, "\"503\"", "found the quoted string \"503\""),
            ],
        ),
        (
            "respond status and body",
            r("      - name: r\n        match: { path: /a }\n        respond: { status: 700, json: {a: 1}, body: x }\n        auth: none\n"),
            vec![
                (15, "700", "expected an integer in 200..=599, found the integer 700"),
                (15, "body", "`body` cannot be combined with `json`"),
            ],
        ),
        (
            "weights",
            r("      - name: r\n        match: { prefix: /a }\n        services: { users: 0, gone: 1 }\n        auth: main\n"),
            vec![
                (15, "0", "expected an integer in 1..=4294967295, found the integer 0"),
                (15, "gone", "unknown service `gone`"),
            ],
        ),
        (
            "header names",
            r(&format!("{OK_ROUTE}        request_headers: {{ set: {{ \"bad header\": x }}, remove: [\":path\"] }}\n")),
            vec![
                (17, "\"bad header\"", "`bad header` is not a valid HTTP header name"),
                (17, "\":path\"", "`:path` is not a valid HTTP header name"),
            ],
        ),
        (
            "methods and hosts",
            r("      - name: r\n        match: { prefix: /a, methods: [\"GE T\"], hosts: [\"api.example.com:80\"] }\n        service: users\n        auth: main\n"),
            vec![
                (14, "\"GE T\"", "expected an HTTP method"),
                (14, "\"api.example.com:80\"", "expected a host name like api.example.com or *.example.com"),
            ],
        ),
        (
            "require on a public route",
            r("      - name: r\n        match: { prefix: /a }\n        service: users\n        auth: none\n        require: { roles: [admin] }\n"),
            vec![(17, "require", "claim checks need an authenticated route")],
        ),
        (
            "empty auth list and none among providers",
            r(&format!("{OK_ROUTE}{}", "      - name: s\n        match: { prefix: /b }\n        service: users\n        auth: []\n      - name: t\n        match: { prefix: /c }\n        service: users\n        auth: [none, main]\n")),
            vec![
                (20, "[]", "write `auth: none` for a public route"),
                (24, "none", "`none` cannot be combined with providers"),
            ],
        ),
        (
            "duplicate key in a route",
            r("      - name: r\n        match: { prefix: /a }\n        service: users\n        auth: main\n        service: users\n"),
            vec![(17, "service", "duplicate key `service` (first given on line 15)")],
        ),
    ]
}

fn file_cases() -> Vec<Case> {
    vec![
        ("version", "version: 2\n".into(), vec![(1, "2", "version: expected 1")]),
        ("missing version", "services: {}\n".into(), vec![(1, "services", "missing required key `version`")]),
        ("empty file", "".into(), vec![(1, "", "the file is empty")]),
        ("not a mapping", "- 1\n".into(), vec![(1, "-", "the top level: expected a mapping, found a list")]),
        (
            "unknown top-level key",
            "version: 1\nroutes: []\n".into(),
            vec![(2, "routes", "unknown key `routes`; expected one of: version, services, auth, rate_limits, gateways")],
        ),
        (
            "yaml syntax error",
            "version: 1\nservices: [a\ngateways: {}\n".into(),
            vec![(3, ":", "invalid YAML: illegal placement of ':' indicator")],
        ),
        (
            "endpoints",
            "version: 1\nservices:\n  a: { endpoints: [] }\n  b: { endpoints: [\"::1:80\", nohost, \"10.0.0.1:99999\"] }\n  c: { protocol: http2 }\n".into(),
            vec![
                (3, "[]", "expected at least one host:port, found an empty list"),
                (4, "\"::1:80\"", "an IPv6 address needs brackets"),
                (4, "nohost", "missing `:port`"),
                (4, "\"10.0.0.1:99999\"", "the port `99999` is not a number in 1..=65535"),
                (5, "{", "services.c: missing required key `endpoints`"),
            ],
        ),
        (
            "service enums and numbers",
            "version: 1\nservices:\n  a:\n    endpoints: [\"[::1]:80\"]\n    lb: fastest\n    connect_timeout: 5\n    outlier_detection: { max_ejection_percent: 101 }\n    circuit_breaker: { max_connections: \"10\" }\n".into(),
            vec![
                (5, "fastest", "expected one of round_robin | least_request | random | ring_hash | maglev, found \"fastest\""),
                (6, "5", "expected a duration like 250ms, 5s, 1m, 1h, 1d (a whole number and a unit), found the integer 5"),
                (7, "101", "expected an integer in 0..=100"),
                (8, "\"10\"", "max_connections: expected an integer, found the quoted string \"10\" (write numbers without quotes)"),
            ],
        ),
        (
            "listeners",
            "version: 1\ngateways:\n  edge:\n    listeners:\n      - { name: a, port: \"8080\" }\n      - { name: a, port: 70000, address: localhost }\n      - { name: b, port: 81 }\n      - { name: c, port: 81 }\n".into(),
            vec![
                (5, "\"8080\"", "(write numbers without quotes)"),
                (6, "a,", "duplicate listener name `a` (first used on line 5)"),
                (6, "70000", "expected an integer in 1..=65535"),
                (6, "localhost", "expected an IP address"),
                (8, "81", "port 81 is already used by another listener of this gateway (line 7)"),
            ],
        ),
        (
            "no listeners",
            "version: 1\ngateways:\n  edge: { routes: [] }\n  mobile: { listeners: [] }\n".into(),
            vec![
                (3, "{", "gateways.edge: missing required key `listeners`"),
                (4, "[]", "expected at least one listener"),
            ],
        ),
        (
            "jwt providers",
            "version: 1\nauth:\n  jwt:\n    a: { issuer: x, algorithms: [RS256] }\n    b: { issuer: x, algorithms: [RS256], jwks_file: j, jwks_url: https://x }\n    c: { issuer: x, algorithms: [HS256], jwks_url: ftp://x }\n    d: { issuer: x, algorithms: [RS256], secret_env: S }\n    e: { algorithms: [], secret_env: \"1S\" }\n    f: { issuer: x, algorithms: [rs256], jwks_file: j, colour: red }\n".into(),
            vec![
                (4, "{", "missing the signing keys; give exactly one of `jwks_file`, `jwks_url` or `secret_env`"),
                (5, "jwks_url", "`jwks_url` cannot be combined with `jwks_file`"),
                (6, "HS256", "HS256 needs a shared secret (`secret_env`)"),
                (6, "ftp://x", "expected an https:// URL (http:// only for localhost"),
                (7, "RS256", "RS256 needs public keys (`jwks_file` or `jwks_url`)"),
                (8, "{", "auth.jwt.e: missing required key `issuer`"),
                (8, "[]", "expected at least one algorithm"),
                (8, "\"1S\"", "expected an environment variable name"),
                (9, "rs256", "expected one of RS256 | RS384"),
                (9, "colour", "unknown key `colour`"),
            ],
        ),
        (
            "provider names clash",
            "version: 1\nauth:\n  jwt:\n    main: { issuer: x, algorithms: [RS256], jwks_file: j }\n  api_keys:\n    main: { keys_file: k }\n    none: { keys_file: k, header: \"a b\" }\n".into(),
            vec![
                (6, "main", "provider name `main` is already used on line 4"),
                (7, "none", "`none` cannot name a provider"),
                (7, "\"a b\"", "not a valid HTTP header name"),
            ],
        ),
        (
            "api keys in identity headers",
            "version: 1\nauth:\n  jwt:\n    main: { issuer: x, algorithms: [RS256], jwks_file: j, headers: { x-user-id: sub } }\n  api_keys:\n    a: { keys_file: k, header: x-client-id }\n    b: { keys_file: k, header: X-User-Id }\n    c: { keys_file: k, header: x-envoy-auth-failure-mode-allowed }\n".into(),
            vec![
                (6, "x-client-id", "auth.api_keys.a.header: `x-client-id` is an identity header, which the gateway removes from every request before authentication"),
                (7, "X-User-Id", "`x-user-id` is an identity header"),
                (8, "x-envoy-auth", "`x-envoy-auth-failure-mode-allowed` is an identity header"),
            ],
        ),
        (
            "jwt claim headers",
            "version: 1\nauth:\n  jwt:\n    main:\n      issuer: x\n      algorithms: [RS256]\n      jwks_file: j\n      headers: { X-User: sub, x-user: sub2 }\n".into(),
            vec![(8, "x-user:", "duplicate header `x-user` (first given on line 8; header names are case-insensitive)")],
        ),
        (
            "rate limits",
            "version: 1\nrate_limits:\n  plans: { free: 100/minute, pro: 100 }\n  default_plan: gold\n  anonymous: 60/fortnight\n  algorithm: leaky\n  service: { on_error: maybe }\n".into(),
            vec![
                (3, "100 }", "expected a rate like 100/minute"),
                (4, "gold", "unknown plan `gold`; expected one of the plans: free, pro"),
                (5, "60/fortnight", "the window `fortnight` is not a unit or a duration"),
                (6, "leaky", "one of sliding_window | approximate | fixed"),
                (7, "maybe", "one of allow | deny"),
            ],
        ),
        (
            "plans without a default",
            "version: 1\nrate_limits:\n  plans: { free: 100/minute }\n".into(),
            vec![(3, "plans", "missing `default_plan`")],
        ),
        (
            "cors",
            "version: 1\ngateways:\n  edge:\n    listeners: [{ name: a, port: 80 }]\n    cors: { origins: [app.example.com], max_age: soon }\n    access_log: yes\n".into(),
            vec![
                (5, "app.example.com", "expected `*` or an origin like https://app.example.com"),
                (5, "soon", "expected a duration"),
                (6, "yes", "expected one of json | text | off"),
            ],
        ),
        (
            "respond json cannot hold .nan",
            "version: 1\nservices: {}\ngateways:\n  e:\n    listeners: [{ name: a, port: 80 }]\n    routes:\n      - { name: r, match: { path: / }, respond: { status: 200, json: [1, .nan] }, auth: none }\n".into(),
            vec![(7, ".nan", "a value JSON can represent")],
        ),
        (
            "auth referenced with no auth section",
            "version: 1\nservices: { s: { endpoints: [\"a:1\"] } }\ngateways:\n  e:\n    listeners: [{ name: a, port: 80 }]\n    routes:\n      - { name: r, match: { path: / }, service: s, auth: main }\n".into(),
            vec![(7, "main", "unknown auth provider `main`; no providers are defined")],
        ),
    ]
}

fn check(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for (name, src, want) in cases {
        let got = errors(&src);
        let want: Vec<(usize, usize, &str)> = want
            .iter()
            .map(|(line, needle, msg)| (*line, col(&src, *line, needle), *msg))
            .collect();
        let matches = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.0 == w.0 && g.1 == w.1 && g.2.contains(w.2));
        if !matches {
            failures.push(format!("case `{name}`:\n  want {want:#?}\n  got  {got:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn route_errors_are_reported_at_the_offending_node() {
    check(route_cases());
}

#[test]
fn file_errors_are_reported_at_the_offending_node() {
    check(file_cases());
}

#[test]
fn valid_variants_parse() {
    let ok = [
        // `plan` with no rate_limits section is allowed: it simply means no limit.
        with_routes(&format!("{OK_ROUTE}        rate_limit: plan\n")),
        with_routes(&format!("{OK_ROUTE}        rate_limit: none\n")),
        with_routes("      - name: r\n        match: { regex: \"^/v[0-9]+/.*$\", headers: { X-Env: prod, x-id: { regex: \"[0-9]+\" } }, query: { debug: \"1\" }, hosts: [\"*.Example.com\"] }\n        service: users\n        auth: partners\n"),
        "version: 1\nrate_limits: { plans: { a: 1/s }, default_plan: a }\nservices: { s: { endpoints: [\"a:1\"] } }\ngateways:\n  e:\n    listeners: [{ name: a, port: 80, address: \"::\" }]\n    routes:\n      - { name: r, match: { prefix: / }, service: s, auth: none, rate_limit: [{ limit: 100/30s, per: \"header:X-Tenant\" }] }\n".to_string(),
        "version: 1\nauth:\n  jwt:\n    h: { issuer: x, algorithms: [HS256, HS512], secret_env: JWT_SECRET }\n".to_string(),
        // Anchors and aliases are expanded.
        "version: 1\nservices:\n  a: &svc { endpoints: [\"10.0.0.1:80\"], lb: random }\n  b: *svc\n".to_string(),
    ];
    for src in ok {
        if let Err(e) = parse(&src, file()) {
            panic!("{e}\nin:\n{src}");
        }
    }
    let src = with_routes("      - name: r\n        match: { prefix: /a, methods: [get, Patch], headers: { X-Env: prod } }\n        service: users\n        auth: main\n        rate_limit: [{ limit: 1/s, per: \"header:X-Tenant\" }]\n");
    let errs = errors(&src);
    assert_eq!(
        errs.len(),
        1,
        "only the missing rate_limits section: {errs:?}"
    );
    let src = with_routes("      - name: r\n        match: { prefix: /a, methods: [get, Patch], headers: { X-Env: prod }, hosts: [API.example.com] }\n        service: users\n        auth: main\n");
    let config = parse(&src, file()).unwrap_or_else(|e| panic!("{e}"));
    let m = &config.gateways["edge"].routes[0].matcher;
    assert_eq!(m.methods, vec!["GET", "PATCH"]);
    assert_eq!(m.headers[0].name, "x-env");
    assert_eq!(m.hosts, vec!["api.example.com"]);
}

#[test]
fn every_error_in_a_file_is_reported_in_source_order() {
    let src = "\
version: 3
services:
  a: { endpoints: [], lb: fast }
gateways:
  edge:
    listeners: [{ name: l, port: 0 }]
    routes:
      - { name: x, match: { prefix: /a }, service: b }
      - { name: x, match: { prefix: /b }, service: a, auth: none, timeout: 5 }
";
    let errs = errors(src);
    let lines: Vec<usize> = errs.iter().map(|e| e.0).collect();
    assert_eq!(lines, vec![1, 3, 3, 6, 8, 8, 9, 9], "{errs:#?}");
    let mut sorted = errs.clone();
    sorted.sort();
    assert_eq!(errs, sorted);
}

#[test]
fn errors_display_as_file_line_column() {
    let e = parse("version: 2\n", Path::new("gw.yaml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "gw.yaml:1:10: version: expected 1 (the only supported version), found 2"
    );
}

/// Parsers get property tests: every prefix of the example, and many random corruptions of it,
/// must produce `Ok` or `Err`, never a panic.
#[test]
fn garbage_never_panics() {
    for (i, _) in SPEC_EXAMPLE.char_indices() {
        let _ = parse(&SPEC_EXAMPLE[..i], file());
    }
    // A fixed-seed xorshift keeps the test deterministic without a dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet: Vec<char> = "{}[]:,-&*!|>'\"\n #?%@`\t0aZ/.~\u{e9}".chars().collect();
    let base: Vec<char> = SPEC_EXAMPLE.chars().collect();
    for _ in 0..2000 {
        let mut chars = base.clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % chars.len();
            let c = alphabet[(next() as usize) % alphabet.len()];
            match next() % 3 {
                0 => chars[at] = c,
                1 => chars.insert(at, c),
                _ => {
                    chars.remove(at);
                }
            }
        }
        let src: String = chars.into_iter().collect();
        if let Err(ConfigErrors(errs)) = parse(&src, file()) {
            assert!(!errs.is_empty());
            assert!(
                errs.iter().all(|e| e.line >= 1 && e.column >= 1),
                "{errs:?}"
            );
        }
    }
}

/// A JWKS with one 2048-bit RSA key (the checks look at the modulus' length and the exponent).
const VALID_JWKS: &str = concat!(
    r#"{"keys":[{"kty":"RSA","kid":"k1","e":"AQAB","n":""#,
    "w8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PD",
    "w8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PD",
    "w8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PD",
    "w8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PD",
    "w8PDww",
    r#""}]}"#
);

/// The key of `testdata/pem/p256.crt`.
const API_KEY_PEM: &[u8] = include_bytes!("testdata/pem/p256.key");

#[test]
fn load_reads_every_referenced_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, SPEC_EXAMPLE).expect("write");
    let referenced = [
        "certs/internal-ca.pem",
        "keys/jwks.json",
        "keys/api-keys.yaml",
        "certs/api.crt",
        "certs/api.key",
    ];
    for rel in referenced {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        // Every file is parsed too (JWKS, keys file, PEM), so each must be a real one.
        let contents: &[u8] = match rel {
            "keys/jwks.json" => VALID_JWKS.as_bytes(),
            "keys/api-keys.yaml" => b"version: 1\nkeys: []\n",
            "certs/internal-ca.pem" => include_bytes!("testdata/pem/other-p256.crt"),
            "certs/api.crt" => include_bytes!("testdata/pem/p256.crt"),
            _ => API_KEY_PEM,
        };
        std::fs::write(&p, contents).expect("write");
    }
    let loaded = load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.path, config_path);
    assert_eq!(loaded.files.len(), referenced.len());
    assert_eq!(loaded.files[&dir.path().join("certs/api.key")], API_KEY_PEM);
    assert_eq!(
        loaded.config,
        parse(SPEC_EXAMPLE, &config_path).unwrap_or_else(|e| panic!("{e}"))
    );

    // A missing referenced file is reported at the key that names it.
    std::fs::remove_file(dir.path().join("certs/api.key")).expect("rm");
    std::fs::remove_file(dir.path().join("keys/jwks.json")).expect("rm");
    let errs = load(&config_path).unwrap_err().0;
    let at: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(
        at,
        vec![
            (24, col(SPEC_EXAMPLE, 24, "keys/jwks.json")),
            (55, col(SPEC_EXAMPLE, 55, "certs/api.key"))
        ]
    );
    assert!(
        errs[0].message.starts_with("jwks_file: cannot read "),
        "{}",
        errs[0].message
    );
    assert_eq!(errs[0].file, config_path);
}

#[test]
fn load_reports_an_unreadable_config_at_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.yaml");
    let errs = load(&missing).unwrap_err().0;
    assert_eq!((errs.len(), errs[0].line, errs[0].column), (1, 1, 1));
    assert!(errs[0].message.contains("cannot read the config file"));
}

#[test]
fn max_body_takes_sizes_on_the_gateway_and_on_routes() {
    let src = BASE.replace(
        "    listeners:",
        "    max_body: 1MiB\n    listeners:",
    ) + &format!("{OK_ROUTE}        max_body: 20MiB\n")
        + "      - { name: b, match: { prefix: /b }, service: users, auth: none, max_body: 65536 }\n"
        + "      - { name: c, match: { prefix: /c }, service: users, auth: none, max_body: \"512KiB\" }\n"
        + "      - { name: d, match: { prefix: /d }, service: users, auth: none }\n";
    let config = parse(&src, file()).unwrap_or_else(|e| panic!("{e}\nin:\n{src}"));
    let gw = &config.gateways["edge"];
    assert_eq!(gw.max_body, Some(1 << 20));
    let limits: Vec<Option<u32>> = gw.routes.iter().map(|r| r.max_body).collect();
    assert_eq!(
        limits,
        [Some(20 << 20), Some(65_536), Some(512 << 10), None]
    );

    let hint = "expected a size like 512KiB, 1MiB, 20MiB or 65536";
    let cases: Vec<Case> = ["0", "1MB", "1.5MiB", "-1", "[1]", "true"]
        .into_iter()
        .map(|bad| {
            (
                "a bad size",
                with_routes(&format!("{OK_ROUTE}        max_body: {bad}\n")),
                vec![(17, bad, hint)],
            )
        })
        .chain([
            (
                "4GiB does not fit Envoy's 32-bit limit",
                with_routes(&format!("{OK_ROUTE}        max_body: 4GiB\n")),
                vec![(17, "4GiB", "route `r`: max_body: at most 4294967295 bytes")],
            ),
            (
                "a bad gateway size",
                BASE.replace("    listeners:", "    max_body: lots\n    listeners:") + OK_ROUTE,
                vec![(
                    11,
                    "lots",
                    "gateways.edge.max_body: expected a size like 512KiB",
                )],
            ),
        ])
        .collect();
    check(cases);
}

/// BASE with three more services: `hashed` (ring_hash), `maglev` and `shadow` (round robin).
fn with_hash_services(routes: &str) -> String {
    with_routes(routes).replace(
        "  users: { endpoints: [127.0.0.1:3001] }\n",
        "  users: { endpoints: [127.0.0.1:3001] }\n  hashed: { endpoints: [127.0.0.1:3002], lb: ring_hash }\n  maglev: { endpoints: [127.0.0.1:3003], lb: maglev }\n  shadow: { endpoints: [127.0.0.1:3004] }\n",
    )
}

#[test]
fn mirror_takes_a_service_and_a_percentage() {
    let src = with_routes(&format!(
        "{OK_ROUTE}        mirror: {{ service: users, percent: 0.5% }}\n      - {{ name: b, match: {{ prefix: /b }}, service: users, auth: none, mirror: {{ service: users }} }}\n      - {{ name: c, match: {{ prefix: /c }}, services: {{ users: 1 }}, auth: none, mirror: {{ service: users, percent: \"10%\" }} }}\n"
    ));
    let config = parse(&src, file()).unwrap_or_else(|e| panic!("{e}\nin:\n{src}"));
    let mirrors: Vec<Option<Mirror>> = config.gateways["edge"]
        .routes
        .iter()
        .map(|r| r.mirror.clone())
        .collect();
    let m = |per_million| {
        Some(Mirror {
            service: "users".to_string(),
            per_million,
        })
    };
    assert_eq!(mirrors, [m(5_000), m(1_000_000), m(100_000)]);

    let hint = "expected a percentage like 10%, 0.5% or 100%";
    let mirror = |body: &str| with_routes(&format!("{OK_ROUTE}        mirror: {body}\n"));
    let cases: Vec<Case> = ["101%", "0.00001%", "ten", "[1]", "-1%"]
        .into_iter()
        .map(|bad| {
            (
                "a bad percentage",
                mirror(&format!("{{ service: users, percent: {bad} }}")),
                vec![(17, bad, hint)],
            )
        })
        .chain([
            (
                "a percentage without its sign",
                mirror("{ service: users, percent: 10 }"),
                vec![(17, "10 }", "(write the `%`)")],
            ),
            (
                "an unknown mirror service",
                mirror("{ service: userz, percent: 10% }"),
                vec![(
                    17,
                    "userz",
                    "route `r`: mirror.service: unknown service `userz` (did you mean `users`?)",
                )],
            ),
            (
                "a mirror without a service",
                mirror("{ percent: 10% }"),
                vec![(17, "{", "route `r`: mirror: missing required key `service`")],
            ),
            (
                "a mirror on a route without a timeout",
                with_routes(&format!("{OK_ROUTE}        timeout: 0s\n        mirror: {{ service: users }}\n")),
                vec![(17, "timeout", "route `r`: `timeout: 0s` cannot be combined with `mirror`")],
            ),
            (
                "a mirror on a route that answers itself",
                with_routes("      - name: r\n        match: { prefix: / }\n        respond: { status: 200 }\n        auth: none\n        mirror: { service: users }\n"),
                vec![(17, "mirror", "`mirror` only applies to routes that forward")],
            ),
        ])
        .collect();
    check(cases);
}

#[test]
fn affinity_hashes_a_header_or_a_cookie_on_hashed_services_only() {
    let src = with_hash_services(
        "      - { name: h, match: { prefix: /h }, service: hashed, auth: none, affinity: { header: X-User-Id } }\n      - { name: c, match: { prefix: /c }, services: { hashed: 1, maglev: 1 }, auth: none, affinity: { cookie: route, ttl: 1h } }\n      - { name: s, match: { prefix: /s }, service: maglev, auth: none, affinity: { cookie: route, ttl: 0s } }\n",
    );
    let config = parse(&src, file()).unwrap_or_else(|e| panic!("{e}\nin:\n{src}"));
    let got: Vec<Option<Affinity>> = config.gateways["edge"]
        .routes
        .iter()
        .map(|r| r.affinity.clone())
        .collect();
    let cookie = |secs| {
        Some(Affinity::Cookie {
            name: "route".to_string(),
            ttl: Duration::from_secs(secs),
        })
    };
    assert_eq!(
        got,
        [
            Some(Affinity::Header("x-user-id".to_string())),
            cookie(3600),
            cookie(0)
        ]
    );

    let route = |action: &str, affinity: &str| {
        with_hash_services(&format!(
            "      - name: r\n        match: {{ prefix: / }}\n        {action}\n        auth: none\n        affinity: {affinity}\n"
        ))
    };
    // Three more service lines: the route starts on line 16, `affinity` is on line 20.
    let cases: Vec<Case> = vec![
        (
            "affinity on a round-robin service",
            route("service: users", "{ header: x-user-id }"),
            vec![(
                20,
                "affinity",
                "route `r`: affinity: needs `lb: ring_hash` or `lb: maglev` on every service of the route, but `users` (`lb: round_robin`) balances otherwise",
            )],
        ),
        (
            "affinity on a split with one round-robin service",
            route("services: { hashed: 9, shadow: 1 }", "{ header: x-user-id }"),
            vec![(20, "affinity", "but `shadow` (`lb: round_robin`) balances otherwise")],
        ),
        (
            "a cookie without ttl",
            route("service: hashed", "{ cookie: route }"),
            vec![(20, "{", "route `r`: affinity: a `cookie` needs `ttl`")],
        ),
        (
            "ttl with a header",
            route("service: hashed", "{ header: x-a, ttl: 1h }"),
            vec![(20, "ttl", "`ttl` is the lifetime of the cookie Envoy sets")],
        ),
        (
            "both a header and a cookie",
            route("service: hashed", "{ header: x-a, cookie: b }"),
            vec![(20, "cookie", "`cookie` cannot be combined with `header`")],
        ),
        (
            "neither",
            route("service: hashed", "{}"),
            vec![(20, "{}", "give exactly one of `header` or `cookie`")],
        ),
        (
            "a bad header name",
            route("service: hashed", "{ header: \"x a\" }"),
            vec![(20, "\"x a\"", "is not a valid HTTP header name")],
        ),
        (
            "a bad cookie name",
            route("service: hashed", "{ cookie: \"a;b\", ttl: 1h }"),
            vec![(20, "\"a;b\"", "expected a cookie name")],
        ),
        (
            "a bad ttl",
            route("service: hashed", "{ cookie: route, ttl: 1.5h }"),
            vec![(20, "1.5h", "affinity.ttl: expected a duration")],
        ),
        (
            "affinity on a route that answers itself",
            route("respond: { status: 200 }", "{ header: x-a }"),
            vec![(20, "affinity", "`affinity` only applies to routes that forward")],
        ),
    ];
    check(cases);
}

#[test]
fn client_ip_and_ip_lists_decode_and_bad_cidrs_are_positioned() {
    // Defaults: the TCP peer, and no lists.
    let config = parse(&with_routes(OK_ROUTE), file()).unwrap_or_else(|e| panic!("{e}"));
    let gw = &config.gateways["edge"];
    assert_eq!(gw.client_ip, ClientIp { trusted_hops: 0 });
    assert!(gw.routes[0].allow_ips.is_empty() && gw.routes[0].deny_ips.is_empty());

    let src = BASE.replace(
        "    listeners:",
        "    client_ip: { trusted_hops: 2 }\n    listeners:",
    ) + OK_ROUTE
        + "        allow_ips: [10.0.0.0/8, 192.168.1.7, \"2001:db8::/32\", \"::ffff:172.16.0.0/108\"]\n"
        + "        deny_ips: [10.9.0.0/16]\n";
    let config = parse(&src, file()).unwrap_or_else(|e| panic!("{e}\nin:\n{src}"));
    let gw = &config.gateways["edge"];
    assert_eq!(gw.client_ip.trusted_hops, 2);
    let shown = |v: &[Cidr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        shown(&gw.routes[0].allow_ips),
        [
            "10.0.0.0/8",
            "192.168.1.7/32",
            "2001:db8::/32",
            "172.16.0.0/12"
        ]
    );
    assert_eq!(shown(&gw.routes[0].deny_ips), ["10.9.0.0/16"]);

    let hint =
        "expected a CIDR like 10.0.0.0/8, 2001:db8::/32 or a single address like 192.168.1.7";
    let list = |key: &str, items: &str| with_routes(&format!("{OK_ROUTE}        {key}: {items}\n"));
    let cases: Vec<Case> = vec![
        (
            "bits past the prefix",
            list("allow_ips", "[10.0.0.0/8, 10.0.0.1/8]"),
            vec![(17, "10.0.0.1/8", "route `r`: allow_ips: expected a CIDR like 10.0.0.0/8, 2001:db8::/32 or a single address like 192.168.1.7, found \"10.0.0.1/8\": `10.0.0.1` has bits set past the /8 prefix; write 10.0.0.0/8 for the network")],
        ),
        (
            "prefix too long, v4 and v6, every one reported",
            list("deny_ips", "[10.0.0.0/33, \"2001:db8::/129\"]"),
            vec![
                (17, "10.0.0.0/33", "the prefix length `33` is not a number in 0..=32"),
                (17, "\"2001", "the prefix length `129` is not a number in 0..=128"),
            ],
        ),
        ("not an address", list("allow_ips", "[localhost]"), vec![(17, "localhost", hint)]),
        ("a number", list("allow_ips", "[10]"), vec![(17, "10]", hint)]),
        ("a short IPv4", list("allow_ips", "[10.0.0/8]"), vec![(17, "10.0.0/8", "`10.0.0` is not an IPv4 or IPv6 address")]),
        ("brackets", list("deny_ips", "[\"[::1]\"]"), vec![(17, "\"[::1]", "is not an IPv4 or IPv6 address")]),
        ("an empty list", list("allow_ips", "[]"), vec![(17, "[]", "expected a non-empty list of CIDRs")]),
        ("not a list", list("allow_ips", "10.0.0.0/8"), vec![(17, "10.0.0.0/8", "expected a list")]),
        (
            "negative hops",
            BASE.replace("    listeners:", "    client_ip: { trusted_hops: -1 }\n    listeners:") + OK_ROUTE,
            vec![(11, "-1", "gateways.edge.client_ip.trusted_hops: expected an integer in 0..=4294967295")],
        ),
        (
            "unknown client_ip key",
            BASE.replace("    listeners:", "    client_ip: { trusted_cidrs: [10.0.0.0/8] }\n    listeners:") + OK_ROUTE,
            vec![(11, "trusted_cidrs", "gateways.edge.client_ip: unknown key `trusted_cidrs`")],
        ),
    ];
    check(cases);
}

#[test]
fn compression_defaults_and_values() {
    // Absent: off. `{}`: the described defaults.
    let config = parse(&with_routes(OK_ROUTE), file()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.gateways["edge"].compression, None);
    let src = BASE.replace("    listeners:", "    compression: {}\n    listeners:") + OK_ROUTE;
    let config = parse(&src, file()).unwrap_or_else(|e| panic!("{e}"));
    let c = config.gateways["edge"].compression.clone().expect("on");
    use CompressionAlgorithm::*;
    assert_eq!(c.algorithms, [Zstd, Brotli, Gzip]);
    assert_eq!(c.min_bytes, 1024);
    assert!(c.content_types.contains(&"application/json".to_string()));

    let src = BASE.replace(
        "    listeners:",
        "    compression: { algorithms: [gzip, br], min_bytes: 256, content_types: [Application/JSON, text/plain] }\n    listeners:",
    ) + OK_ROUTE;
    let config = parse(&src, file()).unwrap_or_else(|e| panic!("{e}"));
    let c = config.gateways["edge"].compression.clone().expect("on");
    assert_eq!(c.algorithms, [Gzip, Brotli]);
    assert_eq!(c.min_bytes, 256);
    // One spelling: Envoy's matcher ignores case anyway.
    assert_eq!(c.content_types, ["application/json", "text/plain"]);

    let gw =
        |line: &str| BASE.replace("    listeners:", &format!("{line}\n    listeners:")) + OK_ROUTE;
    check(vec![
        (
            "an unknown algorithm",
            gw("    compression: { algorithms: [gzip, deflate] }"),
            vec![(
                11,
                "deflate",
                "compression.algorithms: expected one of zstd | br | gzip",
            )],
        ),
        (
            "a misspelt algorithm",
            gw("    compression: { algorithms: [brotli] }"),
            vec![(11, "brotli", "expected one of zstd | br | gzip")],
        ),
        (
            "an algorithm twice",
            gw("    compression: { algorithms: [gzip, br, gzip] }"),
            vec![(11, "gzip]", "`gzip` is listed twice")],
        ),
        (
            "no algorithm",
            gw("    compression: { algorithms: [] }"),
            vec![(11, "[]", "at least one")],
        ),
        (
            "a size with a unit it does not know",
            gw("    compression: { min_bytes: 1KB }"),
            vec![(
                11,
                "1KB",
                "compression.min_bytes: expected a size like 512KiB",
            )],
        ),
        (
            "a content type with parameters",
            gw("    compression: { content_types: [\"text/html; charset=utf-8\"] }"),
            vec![(
                11,
                "\"text/html",
                "expected a media type such as application/json",
            )],
        ),
        (
            "a content type without a subtype",
            gw("    compression: { content_types: [json] }"),
            vec![(11, "json", "expected a media type")],
        ),
        (
            "an unknown compression key",
            gw("    compression: { level: 9 }"),
            vec![(11, "level", "unknown key `level`")],
        ),
    ]);
}

#[test]
fn websocket_routes_and_their_impossible_combinations() {
    let src = with_routes(&format!(
        "{OK_ROUTE}        websocket: true\n        timeout: 0s\n      - {{ name: plain, match: {{ prefix: /p }}, service: users, auth: none }}\n"
    ));
    let config = parse(&src, file()).unwrap_or_else(|e| panic!("{e}"));
    let routes = &config.gateways["edge"].routes;
    assert!(routes[0].websocket);
    // `0s`: no overall timeout, for long-lived streams.
    assert_eq!(routes[0].timeout, Some(Duration::ZERO));
    assert!(!routes[1].websocket);

    check(vec![
        (
            "websocket on a respond route",
            with_routes("      - name: r\n        match: { prefix: /ws }\n        respond: { status: 200 }\n        auth: none\n        websocket: true\n"),
            vec![(17, "websocket", "`websocket` only applies to routes that forward")],
        ),
        (
            "websocket with a body limit",
            with_routes(&format!("{OK_ROUTE}        websocket: true\n        max_body: 1MiB\n")),
            vec![(18, "max_body", "`max_body` cannot be combined with `websocket: true`")],
        ),
        (
            "websocket not a boolean",
            with_routes(&format!("{OK_ROUTE}        websocket: yes please\n")),
            vec![(17, "yes please", "expected true or false")],
        ),
    ]);
    // `websocket: false` with a body limit is an ordinary route.
    let src = with_routes(&format!(
        "{OK_ROUTE}        websocket: false\n        max_body: 1MiB\n"
    ));
    parse(&src, file()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn timeouts_and_limits_default_to_the_edge_values_and_are_checked() {
    let config = parse(&with_routes(OK_ROUTE), file()).unwrap_or_else(|e| panic!("{e}"));
    let gw = &config.gateways["edge"];
    assert_eq!(
        gw.timeouts,
        ClientTimeouts {
            request_headers: Duration::from_secs(10),
            request: Duration::from_secs(300),
            stream_idle: Duration::from_secs(300),
            idle: Duration::from_secs(3600),
        }
    );
    assert_eq!(
        gw.limits,
        ConnectionLimits {
            buffer: 32 * 1024,
            max_concurrent_streams: 100,
            initial_stream_window: 64 * 1024,
            initial_connection_window: 1 << 20,
        }
    );
    let gateway =
        |keys: &str| BASE.replace("    listeners:", &format!("{keys}\n    listeners:")) + OK_ROUTE;
    check(vec![
        (
            "a window below HTTP/2's minimum",
            gateway("    limits: { initial_stream_window: 1KiB }"),
            vec![(
                11,
                "1KiB",
                "gateways.edge.limits.initial_stream_window: expected at least 65535",
            )],
        ),
        (
            "a window above HTTP/2's maximum",
            gateway("    limits: { initial_connection_window: 2GiB }"),
            vec![(11, "2GiB", "at most 2147483647 bytes")],
        ),
        (
            "no streams at all",
            gateway("    limits: { max_concurrent_streams: 0 }"),
            vec![(11, "0", "max_concurrent_streams")],
        ),
        (
            "a timeout without a unit",
            gateway("    timeouts: { request_headers: 10 }"),
            vec![(11, "10", "a unit is required")],
        ),
        (
            "an unknown timeout",
            gateway("    timeouts: { headers: 10s }"),
            vec![(11, "headers", "unknown key `headers`")],
        ),
    ]);
    // `0s` turns a timeout off, so it is accepted.
    let off = gateway("    timeouts: { request: 0s, stream_idle: 0s }");
    let config = parse(&off, file()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.gateways["edge"].timeouts.request, Duration::ZERO);
}

/// Every error as `file:line:col: message`, exactly as `xds-server validate` prints it.
fn error_lines(src: &str) -> Vec<String> {
    match parse(src, file()) {
        Ok(_) => Vec::new(),
        Err(ConfigErrors(errs)) => errs.iter().map(ToString::to_string).collect(),
    }
}

/// Every warning of a valid `src` as `file:line:col: warning: message`.
fn warning_lines(src: &str) -> Vec<String> {
    let (_, _, warnings) = parse_with_refs(src, file(), Path::new("/etc/gateway"))
        .unwrap_or_else(|e| panic!("{e}\nin:\n{src}"));
    warnings.iter().map(ToString::to_string).collect()
}

const ROUTE_KEYS: &str = "name, match, service, services, respond, compose, rewrite, auth, require, allow_ips, deny_ips, rate_limit, timeout, retries, max_body, websocket, request_headers, response_headers, mirror, affinity, cache, transform, grpc";

#[test]
fn a_misspelt_key_or_name_gets_did_you_mean() {
    let at = |line: usize, col: usize, message: &str| {
        format!("/etc/gateway/gateway.yaml:{line}:{col}: {message}")
    };
    let route = |body: &str| with_routes(&format!("      - name: r\n{body}"));
    let cases = [
        (
            route("        match: { prefix: /api }\n        servce: users\n        auth: main\n"),
            vec![at(15, 9, &format!("route `r`: unknown key `servce` (did you mean `service`?); expected one of: {ROUTE_KEYS}"))],
        ),
        (
            route("        match: { prefix: /api }\n        service: user\n        auth: mian\n"),
            vec![
                at(15, 18, "route `r`: service: unknown service `user` (did you mean `users`?); defined services: users"),
                at(16, 15, "route `r`: auth: unknown auth provider `mian` (did you mean `main`?); defined providers: main, partners"),
            ],
        ),
        (
            route("        match: { prefix: /api }\n        services: { Users: 1 }\n        auth: [main, Partners]\n"),
            vec![
                at(15, 21, "route `r`: services: unknown service `Users` (did you mean `users`?); defined services: users"),
                at(16, 22, "route `r`: auth: unknown auth provider `Partners` (did you mean `partners`?); defined providers: main, partners"),
            ],
        ),
        (
            route("        match: { prefix: /api }\n        service: users\n        auth: main\n        rate_limit: plans\n        retries: { on: [connect_failure] }\n"),
            vec![
                at(17, 21, "route `r`: rate_limit: expected `plan`, `none`, or a list of `plan` and {limit: <rate>, per: <key>} items, found \"plans\" (did you mean `plan`?)"),
                at(18, 25, "route `r`: retries.on: expected an HTTP status code (100..=599) or one of 5xx | gateway-error | reset | reset-before-request | connect-failure | envoy-ratelimited | retriable-4xx | refused-stream | retriable-status-codes | retriable-headers | http3-post-connect-failure, found \"connect_failure\" (did you mean `connect-failure`?)"),
            ],
        ),
        (
            "version: 1\nservices:\n  a: { endpoints: [\"a:1\"], lb: round-robin }\nrate_limits:\n  plans: { free: 1/s }\n  default_plan: fre\n  algorithm: fixd\n".to_string(),
            vec![
                at(3, 32, "services.a.lb: expected one of round_robin | least_request | random | ring_hash | maglev, found \"round-robin\" (did you mean `round_robin`?)"),
                at(6, 17, "rate_limits.default_plan: unknown plan `fre` (did you mean `free`?); expected one of the plans: free"),
                at(7, 14, "rate_limits.algorithm: expected one of sliding_window | approximate | fixed, found \"fixd\" (did you mean `fixed`?)"),
            ],
        ),
        // Nothing close: no suggestion, the message is as before.
        (
            route("        match: { prefix: /api }\n        service: users\n        auth: main\n        colour: blue\n"),
            vec![at(17, 9, &format!("route `r`: unknown key `colour`; expected one of: {ROUTE_KEYS}"))],
        ),
    ];
    for (src, want) in cases {
        assert_eq!(error_lines(&src), want, "in:\n{src}");
    }
}

/// One case per kind of absence a misspelt key explains: the misspelt key is the only error.
#[test]
fn a_misspelt_key_is_the_only_error_for_what_its_absence_causes() {
    let route = |body: &str| with_routes(&format!("      - name: r\n{body}"));
    let cases: Vec<(&str, String, (usize, &str, &str))> = vec![
        ("the action", route("        match: { prefix: /api }\n        servce: users\n        auth: main\n"), (15, "servce", "(did you mean `service`?)")),
        ("auth", route("        match: { prefix: /api }\n        service: users\n        auht: main\n"), (16, "auht", "(did you mean `auth`?)")),
        ("the path condition", route("        match: { perfix: /api }\n        service: users\n        auth: main\n"), (14, "perfix", "(did you mean `prefix`?)")),
        ("a required key", route("        mtach: { prefix: /api }\n        service: users\n        auth: main\n"), (14, "mtach", "(did you mean `match`?)")),
        ("a required key at the top", "verison: 1\n".to_string(), (1, "verison", "(did you mean `version`?)")),
        (
            "the signing keys",
            "version: 1\nauth:\n  jwt:\n    main: { issuer: x, algorithms: [RS256], jwks_fle: j }\n".to_string(),
            (4, "jwks_fle", "(did you mean `jwks_file`?)"),
        ),
        (
            "the other half of a client certificate",
            "version: 1\nservices:\n  a: { endpoints: [\"a:1\"], tls: { cert_file: c, key_fil: k } }\n".to_string(),
            (3, "key_fil", "(did you mean `key_file`?)"),
        ),
        (
            "the default plan",
            "version: 1\nrate_limits:\n  plans: { free: 1/s }\n  default_pan: free\n".to_string(),
            (4, "default_pan", "(did you mean `default_plan`?)"),
        ),
        // A misspelt section still declares its names: the references to them resolve.
        (
            "the services a route names",
            BASE.replace("services:", "servces:") + OK_ROUTE,
            (2, "servces", "the top level: unknown key `servces` (did you mean `services`?)"),
        ),
        (
            "the providers a route names",
            BASE.replace("  jwt:", "  jwts:") + OK_ROUTE,
            (5, "jwts", "auth: unknown key `jwts` (did you mean `jwt`?)"),
        ),
        (
            "the providers of a misspelt auth section",
            BASE.replace("auth:", "auht:") + OK_ROUTE,
            (4, "auht", "(did you mean `auth`?)"),
        ),
        (
            "the rate_limits section a limit needs",
            format!(
                "{}{OK_ROUTE}        rate_limit: [{{ limit: 5/second }}]\n",
                BASE.replace("gateways:", "rate_limit: {}\ngateways:")
            ),
            (9, "rate_limit", "(did you mean `rate_limits`?)"),
        ),
        (
            "the plans the default plan names",
            "version: 1\nrate_limits:\n  plan: { free: 1/s }\n  default_plan: free\n".to_string(),
            (3, "plan", "(did you mean `plans`?)"),
        ),
    ];
    let cases: Vec<Case> = cases
        .into_iter()
        .map(|(name, src, want)| (name, src, vec![want]))
        .collect();
    check(cases);
}

/// Without a close match the unknown key cannot be said to explain the absence: both are
/// reported, in source order (the absence at the start of the mapping).
#[test]
fn an_unknown_key_without_a_close_match_leaves_the_missing_one_reported() {
    let src = with_routes(
        "      - name: r\n        match: { prefix: /api }\n        backend: users\n        auth: main\n",
    );
    assert_eq!(
        error_lines(&src),
        [
            "/etc/gateway/gateway.yaml:13:9: route `r`: missing the action; give exactly one of `service`, `services`, `respond` or `compose`".to_string(),
            format!("/etc/gateway/gateway.yaml:15:9: route `r`: unknown key `backend`; expected one of: {ROUTE_KEYS}"),
        ]
    );
}

/// What a mapping lacks is listed at the mapping, in the order the description lists the keys
/// (a group of which one is required where its first key is), whatever order the decoder reads
/// them in.
#[test]
fn absences_at_one_position_are_listed_in_description_order() {
    let at = "/etc/gateway/gateway.yaml";
    assert_eq!(
        error_lines("version: 1\nauth: {jwt: {main: {}}}\n"),
        [
            format!("{at}:2:20: auth.jwt.main: missing required key `issuer`"),
            format!("{at}:2:20: auth.jwt.main: missing required key `algorithms`"),
            format!("{at}:2:20: auth.jwt.main: missing the signing keys; give exactly one of `jwks_file`, `jwks_url` or `secret_env`"),
        ]
    );
    let errs = error_lines(&with_routes("      - { name: r }\n"));
    let said: Vec<&str> = errs
        .iter()
        .map(|e| e.split_once("route `r`: ").map_or(e.as_str(), |(_, m)| m))
        .map(|m| m.split(';').next().unwrap_or(m))
        .collect();
    assert_eq!(
        said,
        [
            "missing required key `match`",
            "missing the action",
            "missing required key `auth`"
        ],
        "{errs:#?}"
    );
    assert!(errs.iter().all(|e| e.contains(":13:9: ")), "{errs:#?}");
}

#[test]
fn a_header_named_like_a_key_one_level_up_is_a_warning() {
    let jwt = |headers: &str, extra: &str| {
        format!(
            "version: 1\nauth:\n  jwt:\n    main:\n      issuer: x\n      algorithms: [HS256]\n      secret_env: S\n{extra}      headers:\n        x-user-id: sub\n{headers}"
        )
    };
    let at = "/etc/gateway/gateway.yaml";
    assert_eq!(
        warning_lines(&jwt("        plan_claim: tier\n", "")),
        [format!(
            "{at}:10:9: warning: auth.jwt.main.headers: `plan_claim: tier` is a header here, but \
             `plan_claim` is also a key one level up; did you mean it there, outside `headers:`? \
             As written, the upstream header `plan_claim` is set from the claim `tier`, and the \
             key `plan_claim` stays `plan` (its default)"
        )]
    );
    // Header names ignore case; the key given at its own level too is named by its line.
    assert_eq!(
        warning_lines(&jwt(
            "        Client_Claim: uid\n",
            "      client_claim: uid\n"
        )),
        [format!(
            "{at}:11:9: warning: auth.jwt.main.headers: `Client_Claim: uid` is a header here, but \
             `client_claim` is also a key one level up; did you mean it there, outside `headers:`? \
             As written, the upstream header `Client_Claim` is set from the claim `uid`, and the \
             key `client_claim` is given on line 8 as well"
        )]
    );
    let route = with_routes(
        "      - name: r\n        match:\n          prefix: /api\n          headers:\n            x-env: prod\n            hosts: api.example.com\n        service: users\n        auth: main\n        response_headers:\n          set:\n            x-a: b\n            remove: server\n",
    );
    assert_eq!(
        warning_lines(&route),
        [
            format!(
                "{at}:18:13: warning: route `r`: match.headers: `hosts: api.example.com` is a \
                 header here, but `hosts` is also a key one level up; did you mean it there, \
                 outside `headers:`? As written, the route takes only requests whose header \
                 `hosts` is `api.example.com`, and the key `hosts` is not set"
            ),
            format!(
                "{at}:24:13: warning: route `r`: response_headers.set: `remove: server` is a \
                 header here, but `remove` is also a key one level up; did you mean it there, \
                 outside `set:`? As written, the header `remove` is set to `server`, and the key \
                 `remove` is not set"
            ),
        ]
    );
    // Headers that are no key of the mapping around them, as in every example, say nothing.
    assert_eq!(
        warning_lines(&jwt("        x-plan: plan\n", "")),
        Vec::<String>::new()
    );
    assert_eq!(warning_lines(SPEC_EXAMPLE), Vec::<String>::new());
    // A config with errors has its errors, not its warnings.
    let broken = jwt("        plan_claim: tier\n", "      colour: red\n");
    assert!(parse(&broken, file()).is_err());
}

// ---- https_redirect, client certificates, auth.mtls (spec §8) ----

/// A gateway with a plain and a TLS listener (`{redirect}` and `{tls}` fill in keys) and an
/// mtls provider; line numbers below count from 1 here.
fn tls_config(listeners: &str, auth: &str) -> String {
    format!(
        "version: 1
services:
  users: {{ endpoints: [127.0.0.1:3001] }}
auth:
  mtls:
    partners: {{ client_id: uri_san, plans: {{ \"spiffe://p/a\": pro }}, default_plan: free }}
rate_limits: {{ plans: {{ free: 1/s, pro: 2/s }}, default_plan: free }}
gateways:
  edge:
    listeners:
{listeners}    routes:
      - {{ name: r, match: {{ prefix: / }}, service: users, auth: {auth} }}
"
    )
}

const PLAIN_REDIRECT: &str = "      - { name: http, port: 8080, https_redirect: true }\n";
const TLS_CA: &str = "      - { name: https, port: 8443, tls: { cert_file: a.crt, key_file: a.key, client_ca_file: ca.crt } }\n";

#[test]
fn https_redirect_and_client_certificates_decode() {
    let src = tls_config(&format!("{PLAIN_REDIRECT}{TLS_CA}"), "[partners]");
    let c = parse(&src, file()).unwrap_or_else(|e| panic!("{e}"));
    let gw = &c.gateways["edge"];
    assert!(gw.listeners[0].https_redirect);
    assert!(!gw.listeners[1].https_redirect);
    let certs = gw.listeners[1]
        .tls
        .as_ref()
        .and_then(|t| t.client_certs.clone());
    assert_eq!(
        certs,
        Some(ClientCerts {
            ca_file: PathBuf::from("/etc/gateway/ca.crt"),
            required: true
        }),
        "required is the default"
    );
    let p = &c.auth.as_ref().unwrap().mtls["partners"];
    assert_eq!(p.client_id, CertField::UriSan);
    assert_eq!(p.plans, [("spiffe://p/a".to_string(), "pro".to_string())]);
    assert_eq!(p.default_plan.as_deref(), Some("free"));

    let optional = TLS_CA.replace("ca.crt }", "ca.crt, client_cert: optional }");
    let c = parse(&tls_config(&optional, "none"), file()).unwrap_or_else(|e| panic!("{e}"));
    let l = &c.gateways["edge"].listeners[0];
    assert_eq!(
        l.tls
            .as_ref()
            .unwrap()
            .client_certs
            .as_ref()
            .map(|c| c.required),
        Some(false)
    );
    assert!(!l.https_redirect, "off by default");
    let m = parse(
        &tls_config(TLS_CA, "none").replace("client_id: uri_san, ", ""),
        file(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        m.auth.unwrap().mtls["partners"].client_id,
        CertField::Subject
    );
}

#[test]
fn impossible_tls_combinations_are_errors_with_positions() {
    let tls_plain =
        "      - { name: https, port: 8443, tls: { cert_file: a.crt, key_file: a.key } }\n";
    let tls2 = "      - { name: https2, port: 9443, tls: { cert_file: a.crt, key_file: a.key } }\n";
    // https_redirect without a TLS listener, and with two.
    for (listeners, found) in [
        (PLAIN_REDIRECT.to_string(), 0),
        (format!("{PLAIN_REDIRECT}{tls_plain}{tls2}"), 2),
    ] {
        let src = tls_config(&listeners, "none");
        let errs = errors(&src);
        assert_eq!(
            errs,
            [(
                11,
                col(&src, 11, "https_redirect: true") + "https_redirect: ".len(),
                format!("gateways.edge.listeners[0].https_redirect: needs exactly one TLS listener on the gateway to redirect to, found {found}")
            )],
            "{src}"
        );
    }
    // On the TLS listener itself.
    let own = "      - { name: https, port: 8443, https_redirect: true, tls: { cert_file: a.crt, key_file: a.key } }\n";
    let src = tls_config(own, "none");
    let errs = errors(&src);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0, errs[0].1), (11, col(&src, 11, "true")));
    assert!(
        errs[0].2.contains("a TLS listener cannot redirect"),
        "{errs:?}"
    );

    // client_cert without client_ca_file; a misspelt mode.
    let src = tls_config(
        "      - { name: https, port: 8443, tls: { cert_file: a.crt, key_file: a.key, client_cert: optional } }\n",
        "none",
    );
    let errs = errors(&src);
    assert_eq!(
        errs,
        [(11, col(&src, 11, "optional"), "gateways.edge.listeners[0].tls.client_cert: needs `client_ca_file`, the CAs client certificates are verified against".to_string())]
    );
    let src = tls_config(
        &TLS_CA.replace("ca.crt }", "ca.crt, client_cert: requird }"),
        "none",
    );
    let errs = errors(&src);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].2.contains("did you mean `required`"), "{errs:?}");

    // An mtls provider on a gateway without a client_ca_file listener: at the provider's name.
    let src = tls_config(tls_plain, "[partners]");
    let errs = errors(&src);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0, errs[0].1), (13, col(&src, 13, "partners")));
    assert!(
        errs[0].2.starts_with("route `r`: auth: `partners` is an auth.mtls provider, which needs a verified client certificate"),
        "{errs:?}"
    );
    // A plan that rate_limits does not define.
    let src = tls_config(TLS_CA, "[partners]").replace(": pro }", ": gold }");
    let errs = errors(&src);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0, errs[0].1), (6, col(&src, 6, "gold")));
    assert!(
        errs[0]
            .2
            .starts_with("auth.mtls.partners.plans.spiffe://p/a: unknown plan `gold`"),
        "{errs:?}"
    );
    // Provider names are one namespace across jwt, api_keys and mtls.
    let src = tls_config(TLS_CA, "[partners]").replace(
        "  mtls:\n",
        "  api_keys:\n    partners: { keys_file: k.yaml }\n  mtls:\n",
    );
    let errs = errors(&src);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].2.contains("is already used on line 6"), "{errs:?}");
}

#[test]
fn cache_decodes_and_refuses_impossible_combinations() {
    let route = |extra: &str| {
        with_routes(&format!(
            "      - name: r\n        match: {{ prefix: /api }}\n{extra}        auth: none\n        cache: {{ ttl: 30s }}\n"
        ))
    };
    let config =
        parse(&route("        service: users\n"), file()).unwrap_or_else(|e| panic!("{e}"));
    let r = &config.gateways["edge"].routes[0];
    assert_eq!(
        r.cache,
        Some(Cache {
            ttl: Duration::from_secs(30)
        })
    );
    let start = BASE.lines().count() + 1;
    let cases: Vec<Case> = vec![
        (
            "cache on a route that answers itself",
            route("        respond: { status: 200 }\n"),
            vec![(
                start + 4,
                "cache",
                "route `r`: cache: only routes that forward",
            )],
        ),
        (
            "cache with websocket",
            route("        service: users\n        websocket: true\n"),
            vec![(
                start + 5,
                "cache",
                "cannot be combined with `websocket: true`",
            )],
        ),
        (
            "a zero ttl",
            route("        service: users\n").replace("ttl: 30s", "ttl: 0s"),
            vec![(start + 4, "0s", "cache.ttl")],
        ),
        (
            "no ttl",
            route("        service: users\n").replace("{ ttl: 30s }", "{}"),
            vec![(start + 4, "{}", "`ttl`")],
        ),
        (
            "an unknown key",
            route("        service: users\n").replace("{ ttl: 30s }", "{ ttl: 30s, vary: x }"),
            vec![(start + 4, "vary", "unknown key `vary`")],
        ),
    ];
    check(cases);
}

#[test]
fn transform_keeps_edit_order_values_and_number_text() {
    let src = with_routes(
        "      - name: r
        match: { prefix: /m }
        service: users
        auth: none
        transform:
          request:
            json: { remove: [/debug], set: { /source: mobile } }
          response:
            json:
              remove: [/internal_id, /audit, /a~1b]
              set: { /meta/z: 1, /meta/a: { big: 9223372036854775809, d: 1.10, h: 0x10, l: [true, null, x] } }
              rename: { /full_name: /name }
              envelope: { field: data, with: { z: 1, api_version: \"1.0\" } }
            xml: true
",
    );
    let config = parse(&src, file()).unwrap_or_else(|e| panic!("{e}\nin:\n{src}"));
    let t = config.gateways["edge"].routes[0].transform.clone().unwrap();
    assert_eq!(
        t.request,
        Some(JsonEdits {
            remove: vec!["/debug".into()],
            set: vec![("/source".into(), "\"mobile\"".into())],
            ..Default::default()
        })
    );
    let r = t.response.unwrap();
    assert_eq!(r.remove, ["/internal_id", "/audit", "/a~1b"]);
    assert_eq!(
        r.set,
        [
            ("/meta/z".to_string(), "1".to_string()),
            (
                "/meta/a".to_string(),
                r#"{"big":9223372036854775809,"d":1.10,"h":16,"l":[true,null,"x"]}"#.to_string()
            )
        ]
    );
    assert_eq!(r.rename, [("/full_name".to_string(), "/name".to_string())]);
    assert_eq!(
        r.envelope,
        Some(Envelope {
            field: "data".into(),
            with: vec![
                ("z".into(), "1".into()),
                ("api_version".into(), "\"1.0\"".into())
            ],
        })
    );
    assert!(t.xml);
    // XML alone is a transform too.
    let xml_only = with_routes(
        "      - { name: r, match: { prefix: /m }, service: users, auth: none, transform: { response: { xml: true } } }\n",
    );
    let config = parse(&xml_only, file()).unwrap_or_else(|e| panic!("{e}"));
    let t = config.gateways["edge"].routes[0].transform.clone().unwrap();
    assert!(t.xml && t.response.is_none() && t.request.is_none());
}

#[test]
fn transform_errors_are_reported_at_the_offending_node() {
    let route = |transform: &str| {
        with_routes(&format!(
            "      - name: r\n        match: {{ prefix: /m }}\n        service: users\n        auth: none\n        transform:\n{transform}"
        ))
    };
    // The route starts on line 13; `transform:` is line 17, its first inner line 18.
    let cases: Vec<Case> = vec![
        (
            "a pointer without a slash",
            route("          response: { json: { remove: [internal_id] } }\n"),
            vec![(18, "internal_id", "`internal_id` is not a JSON Pointer: a JSON Pointer starts with `/`")],
        ),
        (
            "a bad escape",
            route("          response: { json: { rename: { /a~2: /b } } }\n"),
            vec![(18, "/a~2", "`~` must be followed by `0`")],
        ),
        (
            "the whole body",
            route("          request: { json: { set: { \"\": 1 } } }\n"),
            vec![(18, "\"\"", "names the whole body")],
        ),
        (
            "a set inside a removed member",
            route("          response: { json: { remove: [/a], set: { /a/b: 1 } } }\n"),
            vec![(18, "/a/b", "`/a/b` is inside `/a`, which `remove` deletes first")],
        ),
        (
            "a rename of a removed member",
            route("          response: { json: { remove: [/a], rename: { /a: /b } } }\n"),
            vec![(18, "/a:", "nothing left to rename")],
        ),
        (
            "a rename into itself",
            route("          response: { json: { rename: { /a: /a/b } } }\n"),
            vec![(18, "/a/b", "is the member itself or inside it")],
        ),
        (
            "an envelope member that the envelope already has",
            route("          response: { json: { envelope: { field: data, with: { request_id: x } } } }\n"),
            vec![(18, "request_id", "`request_id` is already a member")],
        ),
        (
            "an envelope without a field",
            route("          response: { json: { envelope: { with: { a: 1 } } } }\n"),
            vec![(18, "{ with", "missing required key `field`")],
        ),
        (
            "xml on a request",
            route("          request: { xml: true }\n"),
            vec![(18, "{ xml", "missing required key `json`"), (18, "xml", "unknown key `xml`")],
        ),
        (
            "nothing to do",
            route("          {}\n"),
            vec![(18, "{}", "nothing to transform")],
        ),
        (
            "an infinite number",
            route("          request: { json: { set: { /n: .inf } } }\n"),
            vec![(18, ".inf", "a value JSON can represent")],
        ),
        (
            "a transform on a route that answers itself",
            with_routes("      - name: r\n        match: { prefix: / }\n        respond: { status: 200 }\n        auth: none\n        transform: { response: { xml: true } }\n"),
            vec![(17, "transform", "`transform` only applies to routes that forward")],
        ),
    ];
    check(cases);
}

#[test]
fn grpc_decodes_and_refuses_impossible_combinations() {
    let base = BASE.replace(
        "  users: { endpoints: [127.0.0.1:3001] }\n",
        "  users: { endpoints: [127.0.0.1:3001] }\n  greeter: { endpoints: [127.0.0.1:50051], protocol: grpc }\n",
    );
    let route = |extra: &str, grpc: &str| {
        format!(
            "{base}      - name: r\n        match: {{ prefix: /v1 }}\n{extra}        auth: none\n        grpc: {grpc}\n"
        )
    };
    const BOTH: &str =
        "{ transcode: { descriptor: demo.pb, services: [demo.Greeter] }, web: true }";
    let config =
        parse(&route("        service: greeter\n", BOTH), file()).unwrap_or_else(|e| panic!("{e}"));
    let r = &config.gateways["edge"].routes[0];
    assert_eq!(
        r.grpc,
        Some(Grpc {
            transcode: Some(Transcode {
                descriptor: PathBuf::from("/etc/gateway/demo.pb"),
                services: vec!["demo.Greeter".to_string()],
            }),
            web: true,
        })
    );
    let web_only = parse(
        &route("        service: greeter\n", "{ web: true }"),
        file(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        web_only.gateways["edge"].routes[0].grpc,
        Some(Grpc {
            transcode: None,
            web: true
        })
    );
    let start = base.lines().count() + 1;
    let cases: Vec<Case> = vec![
        (
            "grpc on a route that answers itself",
            route("        respond: { status: 200 }\n", BOTH),
            vec![(
                start + 4,
                "grpc",
                "route `r`: grpc: only routes that forward",
            )],
        ),
        (
            "grpc.web with websocket",
            route(
                "        service: greeter\n        websocket: true\n",
                "{ web: true }",
            ),
            vec![(
                start + 5,
                "grpc",
                "cannot be combined with `websocket: true`",
            )],
        ),
        (
            "grpc with cache",
            route(
                "        service: greeter\n        cache: { ttl: 5s }\n",
                "{ web: true }",
            ),
            vec![(start + 5, "grpc", "cannot be combined with `cache`")],
        ),
        (
            "grpc to an HTTP/1.1 service",
            route("        service: users\n", "{ web: true }"),
            vec![(start + 4, "grpc", "`users` has `protocol: http1`")],
        ),
        (
            "grpc that does nothing",
            route("        service: greeter\n", "{ web: false }"),
            vec![(start + 4, "{ web", "does nothing")],
        ),
        (
            "no services to transcode",
            route(
                "        service: greeter\n",
                "{ transcode: { descriptor: demo.pb, services: [] } }",
            ),
            vec![(start + 4, "[]", "a non-empty list")],
        ),
        (
            "no descriptor",
            route(
                "        service: greeter\n",
                "{ transcode: { services: [demo.Greeter] } }",
            ),
            vec![(start + 4, "{ services", "`descriptor`")],
        ),
    ];
    check(cases);
}

#[test]
fn compose_routes_and_their_impossible_combinations() {
    let compose = "      - name: home\n        match: { path: /home, methods: [GET, HEAD] }\n        auth: main\n        timeout: 2s\n        compose:\n          user: { service: users, path: /users/me }\n          orders: { service: users, path: \"/orders?limit=5\" }\n";
    let config = parse(&with_routes(compose), file()).unwrap_or_else(|e| panic!("{e}"));
    let r = &config.gateways["edge"].routes[0];
    assert_eq!(
        r.action,
        RouteAction::Compose(vec![
            ComposePart {
                name: "user".into(),
                service: "users".into(),
                path: "/users/me".into()
            },
            ComposePart {
                name: "orders".into(),
                service: "users".into(),
                path: "/orders?limit=5".into()
            },
        ])
    );
    assert_eq!(r.timeout, Some(Duration::from_secs(2)));

    let head = "      - name: home\n        match: { path: /home }\n        auth: none\n";
    let with = |rest: &str| with_routes(&format!("{head}{rest}"));
    let part = "        compose: { a: { service: users, path: /a } }\n";
    check(vec![
        (
            "compose with service",
            with(&format!("        service: users\n{part}")),
            vec![(17, "compose", "`compose` cannot be combined with `service`")],
        ),
        (
            "compose with respond",
            with(&format!("{part}        respond: {{ status: 200 }}\n")),
            vec![(17, "respond", "`respond` cannot be combined with `compose`")],
        ),
        (
            "compose with websocket",
            with(&format!("{part}        websocket: true\n")),
            vec![(17, "websocket", "`websocket` only applies to routes that forward")],
        ),
        (
            "compose with retries",
            with(&format!("{part}        retries: {{ attempts: 2 }}\n")),
            vec![(17, "retries", "`retries` only applies to routes that forward")],
        ),
        (
            "compose with mirror",
            with(&format!("{part}        mirror: {{ service: users }}\n")),
            vec![(17, "mirror", "`mirror` only applies to routes that forward")],
        ),
        (
            "compose with rewrite",
            with(&format!("{part}        rewrite: {{ prefix: /x }}\n")),
            vec![
                (17, "rewrite", "a prefix rewrite needs a `prefix` match"),
                (17, "rewrite", "only routes that forward"),
            ],
        ),
        (
            "compose with request headers",
            with(&format!("{part}        request_headers: {{ set: {{ x-a: b }} }}\n")),
            vec![(17, "request_headers", "`request_headers` cannot be combined with `compose`")],
        ),
        (
            "compose without a timeout",
            with(&format!("{part}        timeout: 0s\n")),
            vec![(17, "0s", "a `compose` route needs a bounded answer")],
        ),
        (
            "compose on a POST route",
            with_routes(&format!(
                "      - name: home\n        match: {{ path: /home, methods: [GET, POST] }}\n        auth: none\n{part}"
            )),
            vec![(14, "POST", "answers only GET and HEAD, but `POST` is listed")],
        ),
        (
            "a part naming an unknown service",
            with("        compose: { a: { service: user, path: /a } }\n"),
            vec![(16, "user,", "unknown service `user` (did you mean `users`?)")],
        ),
        (
            "a relative part path",
            with("        compose: { a: { service: users, path: a/b } }\n"),
            vec![(16, "a/b", "expected an absolute path")],
        ),
        (
            "a part path starting with //",
            with("        compose: { a: { service: users, path: //evil.example/x } }\n"),
            vec![(16, "//evil", "expected an absolute path")],
        ),
        (
            "a part path with a space",
            with("        compose: { a: { service: users, path: \"/a b\" } }\n"),
            vec![(16, "\"/a b\"", "expected an absolute path")],
        ),
        (
            "a part named errors",
            with("        compose: { errors: { service: users, path: /a } }\n"),
            vec![(16, "errors", "`errors` is the answer's own member")],
        ),
        (
            "a part name that is not a plain word",
            with("        compose: { \"a b\": { service: users, path: /a } }\n"),
            vec![(16, "\"a b\"", "expected letters, digits")],
        ),
        (
            "a part without a path",
            with("        compose: { a: { service: users } }\n"),
            vec![(16, "{ service", "missing required key `path`")],
        ),
        (
            "an empty compose",
            with("        compose: {}\n"),
            vec![(16, "{}", "at least one")],
        ),
        (
            "a service named like the compose cluster",
            BASE.replace(
                "  users: { endpoints: [127.0.0.1:3001] }\n",
                "  users: { endpoints: [127.0.0.1:3001] }\n  gateway-compose-fallback: { endpoints: [127.0.0.1:3002] }\n",
            ) + OK_ROUTE,
            vec![(4, "gateway-compose-fallback", "reserved")],
        ),
    ]);
}

/// `counted_by: authz-service`: a route may not split `plan` and a per-ip or per-header limit
/// between the two services; every other combination is accepted.
#[test]
fn counted_by_authz_refuses_plan_with_an_address_keyed_limit() {
    let with = |counted_by: &str, limits: &str| {
        format!(
            "version: 1
services:
  users: {{ endpoints: [127.0.0.1:3001] }}
auth:
  jwt:
    main: {{ issuer: https://id.example.com, algorithms: [RS256], jwks_file: jwks.json }}
rate_limits:
  plans: {{ free: 10/minute }}
  default_plan: free
  counted_by: {counted_by}
gateways:
  edge:
    listeners: [{{ name: http, port: 8080 }}]
    routes:
      - name: r
        match: {{ prefix: /a }}
        service: users
        auth: main
        rate_limit: {limits}
"
        )
    };
    let mixed = "[plan, { limit: 5/second, per: ip }]";
    let errs = errors(&with("authz-service", mixed));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, 19, "{errs:?}");
    assert!(
        errs[0]
            .2
            .contains("cannot combine `plan` with a limit per ip or per header"),
        "{errs:?}"
    );
    let header = "[plan, { limit: 5/second, per: \"header:x-tenant\" }]";
    assert_eq!(errors(&with("authz-service", header)).len(), 1);
    for (counted_by, limits) in [
        ("ratelimit-service", mixed),
        ("authz-service", "[plan, { limit: 5/second, per: user }]"),
        ("authz-service", "[{ limit: 5/second, per: ip }]"),
        ("authz-service", "plan"),
    ] {
        assert_eq!(
            errors(&with(counted_by, limits)),
            vec![],
            "{counted_by} {limits}"
        );
    }
    let errs = errors(&with("authz", "plan"));
    assert!(errs[0].2.contains("rate_limits.counted_by"), "{errs:?}");
}
