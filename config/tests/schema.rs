//! The JSON Schema of gateway.yaml against the decoder, with an independent validator: the
//! committed `docs/` files are what the generator prints, every config the decoder accepts
//! validates, invalid ones are rejected by both, the string grammars agree, and every mapping of
//! the example configs accepts exactly the keys the decoder accepts there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use config::schema;
use serde_json::{json, Value};
use test_support::repo_root;
use yaml_rust2::{Yaml, YamlLoader};

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema::schema()).expect("the schema compiles")
}

/// The schema's complaints about `instance`, one per line (empty when it validates).
fn schema_errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at `{}`", e, e.instance_path()))
        .collect()
}

fn decode(src: &str) -> Result<config::Config, config::ConfigErrors> {
    config::parse(src, Path::new("/etc/gateway/gateway.yaml"))
}

fn yaml_to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) | Yaml::Real(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        other => format!("{other:?}"),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Yaml::Null | Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

/// A YAML document as the JSON an editor's language server checks against the schema.
fn to_json(src: &str) -> Value {
    let docs = YamlLoader::load_from_str(src).unwrap_or_else(|e| panic!("invalid YAML: {e}"));
    docs.first().map_or(Value::Null, yaml_to_json)
}

/// Every branch of the schema in one file the decoder accepts: IPv6 and DNS endpoints, every
/// key source, numbers where text is expected, regex matches, weighted and direct routes, every
/// form of `auth` and `rate_limit`.
const VARIANTS: &str = r#"
version: 1
services:
  a:
    endpoints: ["[::1]:8080", "users.internal.:443", a_b:1]
    protocol: grpc
    lb: maglev
    connect_timeout: 250ms
    health_check: { path: /healthz }
    tls: { sni: users.internal, ca_file: ca.pem }
    circuit_breaker: { max_retries: 0 }
    outlier_detection: {}
  b: { endpoints: [127.0.0.1:2] }
auth:
  service: { address: "authz:9001" }
  jwt:
    hs:
      issuer: https://id.example.com
      algorithms: [HS256, HS512]
      secret_env: JWT_SECRET
      clock_skew: 0s
      headers: { X-Tenant: /org/id }
      forward_token: true
    remote: { issuer: 1, audiences: [api, 2], algorithms: [ES256, EdDSA], jwks_url: "http://localhost:8080/jwks" }
  api_keys:
    partners: { keys_file: keys.yaml, header: X-Key, query: api_key }
  mtls:
    certs: { client_id: dns_san, plans: { a.example: pro }, default_plan: free }
rate_limits:
  service: { on_error: deny, timeout: 1s }
  plans: {}
  anonymous: 100/30s
  algorithm: fixed
gateways:
  edge:
    listeners:
      - { name: h, port: 8080, address: "::", https_redirect: true }
      - { name: s, port: 8443, address: "[::1]", tls: { cert_file: c.pem, key_file: k.pem, client_ca_file: ca.pem, client_cert: optional } }
    cors: { origins: ["*", "http://[::1]:3000"], max_age: 0s }
    access_log: off
    client_ip: { trusted_hops: 1 }
    tracing: { collector: "otel.internal:4317", sample: 0.5%, service_name: edge-gw }
    timeouts: { request_headers: 0s, stream_idle: 1h }
    limits: { connection_buffer: 65536, max_concurrent_streams: 10, initial_stream_window: 1MiB }
    routes:
      - name: t
        match:
          regex: "^/v[0-9]+/.*$"
          methods: [get]
          headers: { x-env: { regex: "prod|staging" }, x-version: 2 }
          query: { debug: "1", q: { regex: ".+" } }
          hosts: ["*.example.com", api.example.com]
        respond: { status: 404, body: not here }
        auth: [hs, partners]
        require: { roles: [admin], scopes: [] }
        rate_limit: none
      - name: u
        match: { prefix: /u/ }
        services: { a: 1, b: 3 }
        rewrite: { prefix: / }
        auth: remote
        rate_limit: [plan, { limit: 1/s }, { limit: 10/min, per: "header:x-tenant" }, { limit: 5/1h, per: tenant }]
        retries: { on: [5xx, 429, retriable-4xx], per_try_timeout: 100ms }
        timeout: 30s
        request_headers: { set: { x-n: 1, x-b: true } }
        response_headers: { remove: [server] }
      - name: v
        match: { path: /x }
        respond: { status: 200, json: [1, "two", { three: 3.5 }] }
        auth: none
        allow_ips: [10.0.0.0/8, 192.168.1.7, "2001:db8::/32", "::1"]
        deny_ips: [10.9.0.0/16]
      - name: w
        match: { prefix: /demo. }
        service: a
        auth: none
        grpc: { transcode: { descriptor: demo.pb, services: [demo.Greeter] }, web: true }
"#;

/// The example configs and the decoder's test data, by path.
fn example_configs() -> Vec<(PathBuf, String)> {
    let dirs = [
        repo_root().join("examples"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testdata"),
    ];
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                if let Ok(src) = std::fs::read_to_string(&path) {
                    files.push((path, src));
                }
            }
        }
    }
    files.sort();
    files
}

#[test]
fn the_schema_is_a_valid_draft_2020_12_schema() {
    let s = schema::schema();
    if let Err(e) = jsonschema::draft202012::meta::validate(&s) {
        panic!(
            "not a valid draft 2020-12 schema: {e} at {}",
            e.instance_path()
        );
    }
}

#[test]
fn committed_docs_are_what_the_generator_prints() {
    let files = [
        (
            "docs/gateway.schema.json",
            schema::schema_json(),
            schema::REGENERATE_JSON,
        ),
        (
            "docs/configuration.md",
            schema::markdown(),
            schema::REGENERATE_MARKDOWN,
        ),
    ];
    for (file, generated, command) in files {
        let committed = std::fs::read_to_string(repo_root().join(file)).unwrap_or_default();
        if committed != generated {
            let first_difference = committed
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .map_or_else(
                    || "a different length".to_string(),
                    |i| format!("line {}", i + 1),
                );
            panic!(
                "{file} is out of date with config/src/describe.rs (first difference: \
                 {first_difference}); regenerate it from the repository root with:\n    {command}"
            );
        }
    }
}

#[test]
fn every_config_the_decoder_accepts_validates() {
    let v = validator();
    let mut accepted = Vec::new();
    let mut configs = example_configs();
    configs.push((PathBuf::from("VARIANTS"), VARIANTS.to_string()));
    configs.push((PathBuf::from("minimal"), "version: 1\n".to_string()));
    configs.push((
        PathBuf::from("empty sections"),
        "version: 1\nservices: {}\nauth: {}\nrate_limits: {}\ngateways: {}\n".to_string(),
    ));
    for (path, src) in &configs {
        // A file the decoder rejects is not a gateway config (an API-key file) or is being
        // edited; the schema only promises to accept what the decoder accepts.
        if decode(src).is_err() {
            continue;
        }
        let errors = schema_errors(&v, &to_json(src));
        assert!(
            errors.is_empty(),
            "{} is accepted by the decoder but not by the schema:\n{}",
            path.display(),
            errors.join("\n")
        );
        accepted.push(path.clone());
    }
    for required in ["gateway.yaml", "spec-example.yaml", "VARIANTS"] {
        assert!(
            accepted.iter().any(|p| p.ends_with(required)),
            "{required} must be a valid config; accepted: {accepted:?}"
        );
    }
}

#[test]
fn invalid_configs_are_rejected_by_both() {
    const SERVICE: &str = "services:\n  users: { endpoints: [127.0.0.1:3001] }\n";
    const JWT: &str =
        "auth:\n  jwt:\n    main: { issuer: https://id, algorithms: [RS256], jwks_file: j.json }\n";
    let route = |route: &str| {
        format!(
            "version: 1\n{SERVICE}{JWT}gateways:\n  edge:\n    listeners: [{{ name: h, port: 8080 }}]\n    routes:\n      - {route}\n"
        )
    };
    // (what, config, what the decoder says)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            "version: 1\nservices:\n  users: { endpoints: [127.0.0.1:1], retries: 3 }\n".into(),
            "unknown key `retries`",
        ),
        (
            "unknown top-level key",
            "version: 1\nroutes: []\n".into(),
            "unknown key `routes`",
        ),
        (
            "duration without a unit",
            "version: 1\nservices:\n  a: { endpoints: [127.0.0.1:1], connect_timeout: 5 }\n".into(),
            "a unit is required",
        ),
        (
            "fractional duration",
            "version: 1\nservices:\n  a: { endpoints: [127.0.0.1:1], connect_timeout: 1.5s }\n".into(),
            "whole numbers only",
        ),
        (
            "zero timeout",
            "version: 1\nservices:\n  a: { endpoints: [127.0.0.1:1], connect_timeout: 0s }\n".into(),
            "must be longer than zero",
        ),
        (
            "bad enum value",
            "version: 1\nservices:\n  a: { endpoints: [127.0.0.1:1], lb: fastest }\n".into(),
            "expected one of round_robin",
        ),
        (
            "bad access_log",
            "version: 1\ngateways:\n  g: { listeners: [{ name: h, port: 1 }], access_log: xml }\n".into(),
            "expected one of json",
        ),
        (
            "tracing without a collector",
            "version: 1\ngateways:\n  g: { listeners: [{ name: h, port: 1 }], tracing: { sample: 10% } }\n".into(),
            "missing required key `collector`",
        ),
        (
            "tracing collector without a port",
            "version: 1\ngateways:\n  g: { listeners: [{ name: h, port: 1 }], tracing: { collector: otel } }\n".into(),
            "expected host:port",
        ),
        (
            "tracing sample over 100%",
            "version: 1\ngateways:\n  g: { listeners: [{ name: h, port: 1 }], tracing: { collector: otel:4317, sample: 150% } }\n".into(),
            "gateways.g.tracing.sample",
        ),
        (
            "tracing sample without %",
            "version: 1\ngateways:\n  g: { listeners: [{ name: h, port: 1 }], tracing: { collector: otel:4317, sample: 10 } }\n".into(),
            "write the `%`",
        ),
        (
            "the tracing collector's cluster name taken by a service",
            "version: 1\nservices:\n  tracing-collector: { endpoints: [127.0.0.1:1] }\n".into(),
            "reserved",
        ),
        (
            "bad rate",
            "version: 1\nrate_limits: { anonymous: 100/fortnight }\n".into(),
            "is not a unit or a duration",
        ),
        (
            "endpoint without a port",
            "version: 1\nservices:\n  a: { endpoints: [localhost] }\n".into(),
            "expected host:port",
        ),
        (
            "empty endpoints",
            "version: 1\nservices:\n  a: { endpoints: [] }\n".into(),
            "found an empty list",
        ),
        (
            "wrong version",
            "version: 2\n".into(),
            "the only supported version",
        ),
        (
            "missing version",
            "services: {}\n".into(),
            "missing required key `version`",
        ),
        (
            "quoted port",
            "version: 1\ngateways:\n  g: { listeners: [{ name: h, port: \"8080\" }] }\n".into(),
            "write numbers without quotes",
        ),
        (
            "HMAC with a JWKS",
            "version: 1\nauth:\n  jwt:\n    j: { issuer: i, algorithms: [HS256], jwks_file: j.json }\n".into(),
            "needs a shared secret",
        ),
        (
            "two key sources",
            "version: 1\nauth:\n  jwt:\n    j: { issuer: i, algorithms: [RS256], jwks_file: j.json, jwks_url: https://id/jwks }\n".into(),
            "cannot be combined",
        ),
        (
            "plain http JWKS URL",
            "version: 1\nauth:\n  jwt:\n    j: { issuer: i, algorithms: [RS256], jwks_url: http://id.example.com/jwks }\n".into(),
            "an https:// URL",
        ),
        (
            "provider named none",
            "version: 1\nauth:\n  api_keys:\n    none: { keys_file: k.yaml }\n".into(),
            "`none` cannot name a provider",
        ),
        (
            "reserved service name",
            "version: 1\nservices:\n  authz-service: { endpoints: [127.0.0.1:1] }\n".into(),
            "reserved",
        ),
        (
            "plans without a default plan",
            "version: 1\nrate_limits: { plans: { free: 1/s } }\n".into(),
            "missing `default_plan`",
        ),
        (
            "route without auth",
            route("{ name: r, match: { prefix: / }, service: users }"),
            "missing required key `auth`",
        ),
        (
            "route with two actions",
            route("{ name: r, match: { prefix: / }, service: users, respond: { status: 200 }, auth: none }"),
            "cannot be combined",
        ),
        (
            "route without an action",
            route("{ name: r, match: { prefix: / }, auth: none }"),
            "missing the action",
        ),
        (
            "empty auth list",
            route("{ name: r, match: { prefix: / }, service: users, auth: [] }"),
            "write `auth: none`",
        ),
        (
            "require on a public route",
            route("{ name: r, match: { prefix: / }, service: users, auth: none, require: { roles: [a] } }"),
            "claim checks need an authenticated route",
        ),
        (
            "rewrite of an exact path",
            route("{ name: r, match: { path: /a }, rewrite: { prefix: /b }, service: users, auth: main }"),
            "needs a `prefix` match",
        ),
        (
            "timeout on a direct response",
            route("{ name: r, match: { path: /a }, respond: { status: 200 }, timeout: 1s, auth: none }"),
            "only applies to routes that forward",
        ),
        (
            "json and body",
            route("{ name: r, match: { path: /a }, respond: { status: 200, json: {}, body: x }, auth: none }"),
            "cannot be combined",
        ),
        (
            "status out of range",
            route("{ name: r, match: { path: /a }, respond: { status: 100 }, auth: none }"),
            "200..=599",
        ),
        (
            "two path conditions",
            route("{ name: r, match: { path: /a, prefix: /b }, service: users, auth: main }"),
            "cannot be combined",
        ),
        (
            "none in a rate_limit list",
            route("{ name: r, match: { prefix: / }, service: users, auth: main, rate_limit: [none] }"),
            "rate_limit",
        ),
        (
            "bad per",
            format!(
                "{}rate_limits: {{}}\n",
                route("{ name: r, match: { prefix: / }, service: users, auth: main, rate_limit: [{ limit: 1/s, per: session }] }")
            ),
            "expected one of client",
        ),
        (
            "bad retry condition",
            route("{ name: r, match: { prefix: / }, service: users, auth: main, retries: { on: [sometimes] } }"),
            "an HTTP status code (100..=599) or one of",
        ),
        (
            "bad header name",
            route("{ name: r, match: { prefix: / }, service: users, auth: main, request_headers: { remove: [\"x y\"] } }"),
            "not a valid HTTP header name",
        ),
        (
            "origin with a path",
            "version: 1\ngateways:\n  g: { listeners: [{ name: h, port: 1 }], cors: { origins: [\"https://a.example/x\"] } }\n".into(),
            "an origin like",
        ),
    ];
    let v = validator();
    for (what, src, message) in cases {
        match decode(&src) {
            Ok(_) => panic!("{what}: the decoder accepted\n{src}"),
            Err(e) => assert!(
                e.0.iter().any(|e| e.message.contains(message)),
                "{what}: expected a decoder error containing {message:?}, got:\n{e}"
            ),
        }
        assert!(
            !v.is_valid(&to_json(&src)),
            "{what}: the schema accepted what the decoder rejects:\n{src}"
        );
    }
}

/// Decoder and schema on one string value written where `slot` stands in `config`.
fn agree(v: &jsonschema::Validator, config: &Value, slot: &str, looser: &[&str], values: &[&str]) {
    for value in values {
        let text = serde_json::to_string(config).unwrap_or_default().replace(
            &format!("\"{slot}\""),
            &serde_json::to_string(value).unwrap_or_default(),
        );
        let instance: Value = serde_json::from_str(&text).expect("valid JSON");
        // JSON is YAML: the decoder reads the same text the schema checks.
        let decoder = decode(&text).is_ok();
        let schema = v.is_valid(&instance);
        assert!(
            !decoder || schema,
            "{value:?}: the decoder accepts it, the schema does not ({slot})"
        );
        assert!(
            decoder || !schema || looser.contains(value),
            "{value:?}: the schema accepts it, the decoder does not ({slot})"
        );
    }
}

#[test]
fn the_string_grammars_agree_with_the_decoder() {
    let v = validator();
    let durations = [
        "0s",
        "5s",
        "250ms",
        "1m",
        "1h",
        "1d",
        "05s",
        "00s",
        "0ms",
        "10",
        "5sec",
        "1.5s",
        "s",
        "ms",
        "-1s",
        "+1s",
        "5 s",
        " 5s",
        "5s ",
        "1M",
        "1H",
        "5S",
        "1w",
        "",
        "1ms5",
        "99999999999999999999d",
        "999999999999999999d",
    ];
    // Numbers too large for the decoder's integers: a pattern cannot bound them.
    let overflow = ["99999999999999999999d", "999999999999999999d"];
    let cors = json!({
        "version": 1,
        "gateways": { "g": { "listeners": [{ "name": "h", "port": 1 }],
                             "cors": { "origins": ["*"], "max_age": "SLOT" } } }
    });
    agree(&v, &cors, "SLOT", &overflow, &durations);
    let timeout = json!({
        "version": 1,
        "services": { "a": { "endpoints": ["127.0.0.1:1"], "connect_timeout": "SLOT" } }
    });
    agree(&v, &timeout, "SLOT", &overflow, &durations);

    let rates = [
        "100/minute",
        "5/second",
        "5/s",
        "7/min",
        "1/h",
        "2/day",
        "1/d",
        "100/30s",
        "3/2m",
        "1/250ms",
        "007/s",
        "0/minute",
        "100",
        "100/fortnight",
        "100/0s",
        "-1/s",
        "+1/s",
        "x/s",
        "/s",
        "1/",
        "1/ms",
        "1/m",
        "1/00s",
        "1/1.5s",
        "1 /s",
        "1/ s",
        "1/seconds",
        "1/S",
        "18446744073709551616/s",
    ];
    let anonymous = json!({ "version": 1, "rate_limits": { "anonymous": "SLOT" } });
    agree(&v, &anonymous, "SLOT", &["18446744073709551616/s"], &rates);

    let host_ports = [
        "127.0.0.1:80",
        "localhost:8080",
        "users:3001",
        "[::1]:80",
        "[2001:db8::1]:443",
        "[::1]",
        "::1:80",
        "host:0",
        "host:65535",
        "host:65536",
        "host:080",
        "host:00080",
        "-bad:80",
        "bad-:80",
        "a_b:1",
        "a..b:1",
        "a.:1",
        ".a:1",
        "host:",
        "host:+1",
        "host:-1",
        "[zz]:1",
        "[::1]:0",
        "[::1]x:80",
        "h ost:1",
        "",
        ":80",
        "a.b.c.d.e:99",
        "1.2.3.4:5",
        "[ab]:1",
    ];
    // Bracketed text of hex digits and colons that is not an IPv6 address.
    let endpoints = json!({ "version": 1, "services": { "a": { "endpoints": ["SLOT"] } } });
    agree(&v, &endpoints, "SLOT", &["[ab]:1"], &host_ports);

    let sizes = [
        "1",
        "65536",
        "512KiB",
        "1MiB",
        "20MiB",
        "2GiB",
        "007KiB",
        "4294967295",
        "0",
        "00",
        "0KiB",
        "1MB",
        "1mib",
        "1Mi",
        "1.5MiB",
        "MiB",
        "",
        " 1MiB",
        "1MiB ",
        "1 MiB",
        "-1",
        "+1",
        "4GiB",
        "4294967296",
        "99999999999999999999",
    ];
    // Beyond Envoy's 32-bit limit: a pattern cannot bound a number.
    let too_large = ["4GiB", "4294967296", "99999999999999999999"];
    let gateway = json!({
        "version": 1,
        "gateways": { "g": { "listeners": [{ "name": "h", "port": 1 }], "max_body": "SLOT" } }
    });
    agree(&v, &gateway, "SLOT", &too_large, &sizes);
    let cidrs = [
        "10.0.0.0/8",
        "192.168.1.7",
        "0.0.0.0/0",
        "2001:db8::/32",
        "::1",
        "::/0",
        "::ffff:10.0.0.0/104",
        "10.0.0.0/08",
        "10.0.0.1/8",
        "10.0.0.0/33",
        "2001:db8::/129",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "10.0.0/8",
        "010.0.0.0/8",
        "256.0.0.0/8",
        "[::1]",
        "localhost",
        "",
        " 10.0.0.0/8",
        "2001:db8::1/32",
        "1:2",
    ];
    // What a pattern cannot see: host bits past the prefix, octet and prefix values, leading
    // zeros, IPv6 syntax.
    let cidr_looser = [
        "10.0.0.1/8",
        "10.0.0.0/33",
        "2001:db8::/129",
        "010.0.0.0/8",
        "256.0.0.0/8",
        "2001:db8::1/32",
        "1:2",
    ];
    let allow = json!({
        "version": 1,
        "services": { "a": { "endpoints": ["127.0.0.1:1"] } },
        "gateways": { "g": { "listeners": [{ "name": "h", "port": 1 }],
                             "routes": [{ "name": "r", "match": { "prefix": "/" }, "service": "a",
                                          "auth": "none", "allow_ips": ["SLOT"] }] } }
    });
    agree(&v, &allow, "SLOT", &cidr_looser, &cidrs);

    let percents = [
        "0%",
        "10%",
        "0.5%",
        "100%",
        "100.0%",
        "100.0000%",
        "0.0001%",
        "99.9999%",
        "007%",
        "05%",
        "100.0001%",
        "100.00000%",
        "101%",
        "1000%",
        "0100%",
        "0.00001%",
        "10",
        "10 %",
        " 10%",
        ".5%",
        "5.%",
        "-1%",
        "+1%",
        "1e1%",
        "%",
        "",
        "10%%",
        "1,5%",
    ];
    let mirror = json!({
        "version": 1,
        "services": { "a": { "endpoints": ["127.0.0.1:1"] } },
        "gateways": { "g": { "listeners": [{ "name": "h", "port": 1 }], "routes": [{
            "name": "r", "match": { "prefix": "/" }, "service": "a", "auth": "none",
            "mirror": { "service": "a", "percent": "SLOT" } }] } }
    });
    agree(&v, &mirror, "SLOT", &[], &percents);
    // A size may be a plain integer too.
    for (bytes, ok) in [(1, true), (65_536, true), (0, false), (-1, false)] {
        let mut config = gateway.clone();
        config["gateways"]["g"]["max_body"] = json!(bytes);
        let text = config.to_string();
        assert_eq!(decode(&text).is_ok(), ok, "{bytes}: the decoder");
        assert_eq!(v.is_valid(&config), ok, "{bytes}: the schema");
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    match s
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
    {
        Some(pointer) => root.pointer(pointer).unwrap_or(s),
        None => s,
    }
}

/// Whether `instance` has the JSON type `s` names.
fn fits(root: &Value, s: &Value, instance: &Value) -> bool {
    let s = resolve(root, s);
    let is = |t: &str| match t {
        "object" => instance.is_object(),
        "array" => instance.is_array(),
        "string" => instance.is_string(),
        "integer" => instance.is_i64() || instance.is_u64(),
        "number" => instance.is_number(),
        "boolean" => instance.is_boolean(),
        _ => false,
    };
    match s.get("type") {
        Some(Value::String(t)) => is(t),
        Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).any(is),
        _ => true,
    }
}

/// Every mapping of `instance` that the schema closes (an object with `properties`), by path.
fn closed_objects<'a>(
    root: &'a Value,
    s: &'a Value,
    instance: &Value,
    path: &mut Vec<Seg>,
    out: &mut Vec<(Vec<Seg>, &'a Value)>,
) {
    let s = resolve(root, s);
    if let Some(alternatives) = s.get("anyOf").and_then(Value::as_array) {
        if let Some(alt) = alternatives.iter().find(|a| fits(root, a, instance)) {
            closed_objects(root, alt, instance, path, out);
        }
        return;
    }
    match instance {
        Value::Object(entries) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                out.push((path.clone(), s));
                for (k, v) in entries {
                    if let Some(child) = props.get(k) {
                        path.push(Seg::Key(k.clone()));
                        closed_objects(root, child, v, path, out);
                        path.pop();
                    }
                }
            } else if let Some(child) = s.get("additionalProperties").filter(|c| c.is_object()) {
                for (k, v) in entries {
                    path.push(Seg::Key(k.clone()));
                    closed_objects(root, child, v, path, out);
                    path.pop();
                }
            }
        }
        Value::Array(items) => {
            if let Some(child) = s.get("items") {
                for (i, v) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    closed_objects(root, child, v, path, out);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

fn at_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::Index(i) => v.get_mut(*i),
    })
}

#[test]
fn every_mapping_accepts_exactly_the_decoders_keys() {
    // For every mapping of every example, a bogus key makes the decoder list the keys it accepts
    // there; they must be the properties the schema offers there, and the schema must refuse the
    // bogus key too.
    const BOGUS: &str = "zz_unknown_key";
    let root = schema::schema();
    let v = validator();
    let mut configs: Vec<(String, String)> = example_configs()
        .into_iter()
        .map(|(p, s)| (p.display().to_string(), s))
        .collect();
    configs.push(("VARIANTS".into(), VARIANTS.into()));
    let mut seen_titles = BTreeSet::new();
    for (name, src) in configs {
        if decode(&src).is_err() {
            continue;
        }
        let instance = to_json(&src);
        let mut objects = Vec::new();
        closed_objects(&root, &root, &instance, &mut Vec::new(), &mut objects);
        for (path, object) in objects {
            let title = object["title"].as_str().unwrap_or_default().to_string();
            let mut bad = instance.clone();
            if let Some(Value::Object(m)) = at_mut(&mut bad, &path) {
                m.insert(BOGUS.into(), json!(1));
            }
            let text = serde_json::to_string(&bad).unwrap_or_default();
            let errors = match decode(&text) {
                Ok(_) => panic!("{name} {path:?} ({title}): the decoder accepted `{BOGUS}`"),
                Err(e) => e.0,
            };
            let marker = format!("unknown key `{BOGUS}`; expected one of: ");
            let listed = errors
                .iter()
                .find_map(|e| e.message.split_once(&marker).map(|(_, keys)| keys))
                .unwrap_or_else(|| panic!("{name} {path:?}: no unknown-key error in {errors:?}"));
            assert_eq!(errors.len(), 1, "{name} {path:?}: {errors:?}");
            let decoder: BTreeSet<&str> = listed.split(", ").collect();
            let schema: BTreeSet<&str> = object["properties"]
                .as_object()
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            assert_eq!(
                schema, decoder,
                "{name} {path:?} ({title}): schema properties vs the keys the decoder accepts"
            );
            assert!(
                !v.is_valid(&bad),
                "{name} {path:?} ({title}): the schema accepts `{BOGUS}`"
            );
            seen_titles.insert(title);
        }
    }
    // Every object of the schema was exercised by some example.
    let mut all: BTreeSet<String> = root["$defs"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, d)| d.get("properties").is_some())
        .filter_map(|(_, d)| d["title"].as_str().map(str::to_string))
        .collect();
    all.insert(root["title"].as_str().unwrap_or_default().to_string());
    let missed: Vec<&String> = all.difference(&seen_titles).collect();
    assert!(missed.is_empty(), "no example exercises {missed:?}");
}
