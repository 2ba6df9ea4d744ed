//! The Grafana dashboards (deploy/grafana/) against a live scrape: the test stack (Envoy,
//! xds-server, authz-service, ratelimit-service) gets the traffic that makes every series a panel
//! draws exist (forwarded, answered by a `respond:` route, refused by authz-service,
//! rate-limited, a 5xx, a reload, a rejected edit, a NACK), and every metric, label value and
//! grouping label any PromQL expression names must be in the scrapes. Also: the Prometheus
//! config (deploy/prometheus/) scrapes every process of docker-compose.yml that serves metrics,
//! on the port and path it serves them, from a network it shares.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use tests::gateway::{Full, Shape, API_KEY_HEADER};
use tests::prometheus::{parse, Sample};
use tests::{repo_root, wait_for, wait_for_route, CONVERGE_TIMEOUT};
use yaml_rust2::{Yaml, YamlLoader};

// ---- a small PromQL reader ----

/// What one PromQL expression asks of the scrape.
#[derive(Debug, Default, PartialEq)]
struct Query {
    /// Every metric the expression selects, with its equality matchers (`label="value"`).
    selectors: Vec<(String, Vec<(String, String)>)>,
    /// Labels named by `by (…)` / `without (…)` / `on (…)` / `ignoring (…)`.
    grouping: BTreeSet<String>,
}

/// Aggregation operators: followed by `by (…)` or by their argument list, never metrics.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords that are neither metrics nor functions.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Punct(char),
    /// `=`, `!=`, `=~`, `!~` and the comparison and arithmetic operators.
    Op(String),
    Number,
}

fn tokens(expr: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '[' {
            // A range or subquery duration: `[5m]`, `[1h:1m]`.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' {
                    i += 1;
                }
                if i < chars.len() {
                    s.push(chars[i]);
                }
                i += 1;
            }
            i += 1;
            out.push(Token::Str(s));
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Number);
        } else if "(){},".contains(c) {
            out.push(Token::Punct(c));
            i += 1;
        } else {
            let start = i;
            while i < chars.len() && "=!~<>+-*/%^".contains(chars[i]) {
                i += 1;
            }
            if i == start {
                panic!("PromQL `{expr}`: unexpected `{c}`");
            }
            out.push(Token::Op(chars[start..i].iter().collect()));
        }
    }
    out
}

/// The matchers of a `{…}` starting at `t[*i]` (the `{`); `*i` ends after the `}`. Only `=`
/// matchers are kept: a regex or negative matcher names no one value to look for.
fn matchers(t: &[Token], i: &mut usize, expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    *i += 1;
    loop {
        match t.get(*i) {
            Some(Token::Punct('}')) => {
                *i += 1;
                return out;
            }
            Some(Token::Punct(',')) => *i += 1,
            Some(Token::Ident(label)) => {
                let (Some(Token::Op(op)), Some(Token::Str(value))) = (t.get(*i + 1), t.get(*i + 2))
                else {
                    panic!(
                        "PromQL `{expr}`: a matcher of `{label}` without an operator and a string"
                    );
                };
                if op == "=" {
                    out.push((label.clone(), value.clone()));
                }
                *i += 3;
            }
            other => panic!("PromQL `{expr}`: unexpected {other:?} in a selector"),
        }
    }
}

/// The labels of a `(a, b)` list at `t[*i]` (the `(`); `*i` ends after the `)`.
fn label_list(t: &[Token], i: &mut usize, expr: &str) -> Vec<String> {
    assert_eq!(
        t.get(*i),
        Some(&Token::Punct('(')),
        "PromQL `{expr}`: `by` without a list"
    );
    let mut out = Vec::new();
    *i += 1;
    loop {
        match t.get(*i) {
            Some(Token::Punct(')')) => {
                *i += 1;
                return out;
            }
            Some(Token::Punct(',')) => *i += 1,
            Some(Token::Ident(label)) => {
                out.push(label.clone());
                *i += 1;
            }
            other => panic!("PromQL `{expr}`: unexpected {other:?} in a label list"),
        }
    }
}

/// What `expr` selects: a name that is not a function (followed by `(`), an aggregation or a
/// keyword is a metric; label names only appear in `{…}` and in grouping lists, which are read
/// as such.
fn query(expr: &str) -> Query {
    let t = tokens(expr);
    let mut q = Query::default();
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Token::Ident(word) if ["by", "without", "on", "ignoring"].contains(&word.as_str()) => {
                i += 1;
                q.grouping.extend(label_list(&t, &mut i, expr));
            }
            Token::Ident(word) if ["group_left", "group_right"].contains(&word.as_str()) => {
                i += 1;
                if t.get(i) == Some(&Token::Punct('(')) {
                    q.grouping.extend(label_list(&t, &mut i, expr));
                }
            }
            Token::Ident(word)
                if KEYWORDS.contains(&word.as_str())
                    || AGGREGATIONS.contains(&word.as_str())
                    || t.get(i + 1) == Some(&Token::Punct('(')) =>
            {
                i += 1;
            }
            Token::Ident(metric) => {
                i += 1;
                let m = if t.get(i) == Some(&Token::Punct('{')) {
                    matchers(&t, &mut i, expr)
                } else {
                    Vec::new()
                };
                q.selectors.push((metric.clone(), m));
            }
            Token::Punct('{') => {
                panic!("PromQL `{expr}`: a selector without a metric name");
            }
            _ => i += 1,
        }
    }
    q
}

#[test]
fn the_promql_reader_finds_metrics_matchers_and_grouping_labels() {
    let q = query(
        r#"histogram_quantile(0.99, sum by (envoy_route, le) (rate(envoy_x_bucket{a="1", b=~"2|3"}[5m])))"#,
    );
    assert_eq!(
        q.selectors,
        [(
            "envoy_x_bucket".to_string(),
            vec![("a".to_string(), "1".to_string())]
        )]
    );
    assert_eq!(
        q.grouping,
        ["envoy_route".to_string(), "le".to_string()].into()
    );
    let q = query("sum(rate(a_total[1m])) / ignoring(kind) sum without (x) (increase(b[1h])) > 0");
    let names: Vec<&str> = q.selectors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a_total", "b"]);
    assert_eq!(q.grouping, ["kind".to_string(), "x".to_string()].into());
    assert!(query("sum by (x) (count(up == 1))")
        .selectors
        .iter()
        .any(|(n, _)| n == "up"));
}

// ---- the dashboards ----

/// Every PromQL expression of every dashboard under deploy/grafana/, with where it is.
fn dashboard_queries() -> Vec<(String, String)> {
    fn walk(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(targets) = m.get("targets").and_then(|t| t.as_array()) {
                    let title = m.get("title").and_then(|t| t.as_str()).unwrap_or("?");
                    for t in targets {
                        if let Some(expr) = t.get("expr").and_then(|e| e.as_str()) {
                            out.push((format!("{at}: panel `{title}`"), expr.to_string()));
                        }
                    }
                }
                m.values().for_each(|x| walk(x, at, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, at, out)),
            _ => {}
        }
    }
    let mut files = Vec::new();
    let mut dirs = vec![repo_root().join("deploy/grafana")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("deploy/grafana") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                files.push(p);
            }
        }
    }
    assert!(!files.is_empty(), "no dashboard under deploy/grafana");
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("dashboard");
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", f.display()));
        let at = f
            .strip_prefix(repo_root())
            .unwrap_or(&f)
            .display()
            .to_string();
        walk(&json, &at, &mut out);
    }
    out
}

const ROUTES: &str = r#"      - name: orders
        match: { prefix: /orders }
        service: api
        auth: none
      - name: status
        match: { prefix: /status }
        respond: { status: 200, json: { ok: true } }
        auth: none
      - name: me
        match: { prefix: /me }
        service: api
        auth: [partners]
"#;

const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

async fn get(url: &str) -> String {
    let http = test_support::http_client();
    let r = http
        .get(url)
        .send()
        .await
        .expect("a metrics endpoint answers");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.text().await.expect("metrics body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboards_query_is_in_a_live_scrape() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 8, "{queries:?}");
    // The partner key's plan `pro` allows 3 a minute: the 4th call is rate-limited.
    let shape = Shape::new("{ free: 1000/minute, pro: 3/minute }", ROUTES);
    let gw = Full::start(&shape, None).await;
    let c = gw.stack.client(gw.ports.http);
    wait_for_route(&c, "/status", 200).await;

    assert_eq!(c.get("/orders").ok().await.status, 200);
    let r = c.get("/orders").header("x-echo-status", "503").ok().await;
    assert_eq!(r.status, 503);
    assert_eq!(c.get("/status").ok().await.status, 200);
    assert_eq!(
        c.get("/me").ok().await.status,
        401,
        "refused by authz-service"
    );
    let key = gw.partner_key.clone();
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(c.get("/me").header(API_KEY_HEADER, &key).ok().await.status);
        }
        v
    };
    assert_eq!(statuses, [200, 200, 200, 429]);

    // A reload, a rejected edit and a NACK (a listener on a port another socket holds: valid
    // YAML that Envoy cannot bind), then the config as it was.
    let xds = &gw.stack.xds;
    let reloads = |result: &'static str| async move {
        xds.metric(&format!("xds_config_reloads_total{{result=\"{result}\"}}"))
            .await
            .unwrap_or(0.0)
    };
    let ok_before = reloads("ok").await;
    let rejected_before = reloads("rejected").await;
    let yaml = gw.yaml(&shape);
    gw.stack.config.write(&format!(
        "{yaml}      - {{ name: extra, match: {{ prefix: /extra }}, service: api, auth: none }}\n"
    ));
    wait_for_route(&c, "/extra", 200).await;
    gw.stack
        .config
        .write("version: 1\nservices: [this is not a mapping\n");
    wait_for("the rejected edit counted", CONVERGE_TIMEOUT, async || {
        reloads("rejected").await > rejected_before
    })
    .await;
    let taken = TcpListener::bind("0.0.0.0:0").expect("a port to occupy");
    let taken_port = taken.local_addr().expect("local addr").port();
    let http_listener = format!("listeners: [{{ name: http, port: {} }}]", gw.ports.http);
    assert!(yaml.contains(&http_listener), "{yaml}");
    gw.stack.config.write(&yaml.replace(
        &http_listener,
        &format!(
            "listeners: [{{ name: http, port: {} }}, {{ name: second, port: {taken_port} }}]",
            gw.ports.http
        ),
    ));
    let nack = format!("xds_nacks_total{{type_url=\"{LISTENER_TYPE}\"}}");
    wait_for("Envoy's NACK counted", CONVERGE_TIMEOUT, async || {
        xds.metric(&nack).await.is_some_and(|n| n >= 1.0)
    })
    .await;
    gw.stack.config.write(&yaml);
    wait_for_route(&c, "/extra", 404).await;
    gw.stack.wait_converged().await;
    drop(taken);
    assert!(reloads("ok").await >= ok_before + 3.0);

    // Envoy's histograms reach its scrape at the stats flush (every 5 s).
    let envoy_url = format!("{}/stats/prometheus", gw.stack.envoy.admin_url());
    wait_for(
        "Envoy's per-route histograms flushed",
        Duration::from_secs(20),
        async || {
            get(&envoy_url)
                .await
                .contains("envoy_gateway_route_request_ms_bucket{envoy_route=\"status\"")
        },
    )
    .await;
    let scrapes: Vec<(&str, String)> = vec![
        ("envoy", get(&envoy_url).await),
        ("xds-server", xds.metrics().await),
        (
            "authz-service",
            get(&format!("http://127.0.0.1:{}/metrics", gw.authz.admin_port)).await,
        ),
        ("ratelimit-service", gw.rls.metrics().await),
    ];
    let samples: Vec<Sample> = scrapes.iter().flat_map(|(_, t)| parse(t)).collect();
    let names: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();

    let mut missing = Vec::new();
    let mut checked = BTreeSet::new();
    for (at, expr) in &queries {
        let q = query(expr);
        assert!(!q.selectors.is_empty(), "{at}: `{expr}` selects no metric");
        let selected: Vec<&Sample> = samples
            .iter()
            .filter(|s| q.selectors.iter().any(|(n, _)| *n == s.name))
            .collect();
        for (metric, want) in &q.selectors {
            checked.insert(metric.clone());
            if !names.contains(metric.as_str()) {
                missing.push(format!("{at}: `{metric}` is in no scrape"));
                continue;
            }
            let want: Vec<(&str, &str)> =
                want.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            if !samples.iter().any(|s| s.name == *metric && s.has(&want)) {
                missing.push(format!("{at}: no `{metric}` sample has {want:?}"));
            }
        }
        for label in &q.grouping {
            if !selected.iter().any(|s| s.labels.contains_key(label)) {
                missing.push(format!(
                    "{at}: `{expr}` groups by `{label}`, which its metrics lack"
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboards query what the stack does not emit:\n{}\n(metrics scraped: {names:?})",
        missing.join("\n")
    );
    // Every process's metrics are on the dashboard somewhere.
    for (process, text) in &scrapes {
        let theirs: BTreeSet<String> = parse(text).into_iter().map(|s| s.name).collect();
        assert!(
            theirs.iter().any(|n| checked.contains(n)),
            "no panel shows a metric of {process}"
        );
    }
}

// ---- Prometheus's scrape config against the compose file ----

/// Our services' binaries: each serves `/metrics` on the port of its `--admin` flag.
const SERVICES: &[&str] = &[
    "xds-server",
    "authz-service",
    "ratelimit-service",
    "transform-service",
];

/// Compose services that serve no metrics of the gateway's, and why Prometheus leaves them out.
const NOT_SCRAPED: &[(&str, &str)] = &[
    ("certs", "a one-shot job that writes certificates and exits"),
    (
        "redis",
        "no exporter in the demo; ratelimit-service counts its store errors and latency",
    ),
    (
        "users",
        "a demo upstream (echo-upstream), not part of the gateway",
    ),
    (
        "orders-v1",
        "a demo upstream (echo-upstream), not part of the gateway",
    ),
    (
        "orders-v2",
        "a demo upstream (echo-upstream), not part of the gateway",
    ),
    (
        "chat",
        "a demo upstream (echo-upstream), not part of the gateway",
    ),
    ("prometheus", "the scraper itself"),
    ("grafana", "the dashboard UI"),
    ("otel-collector", "the trace pipeline, not the gateway"),
    ("jaeger", "the trace store and UI, not the gateway"),
];

/// Where a compose service serves metrics: its port and path.
fn metrics_endpoint(name: &str, svc: &Yaml) -> Option<(u16, String)> {
    let image = svc["image"].as_str().unwrap_or_default();
    let command: Vec<&str> = svc["command"]
        .as_vec()
        .map(|v| v.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default();
    if image.starts_with("envoyproxy/envoy:") {
        // The admin port of the bootstrap the container is started with.
        let mount = svc["volumes"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(Yaml::as_str)
            .find(|v| v.contains(":/etc/envoy/bootstrap.json"))
            .unwrap_or_else(|| panic!("{name}: no bootstrap mounted"));
        let host = mount.split(':').next().expect("a host path");
        let text = std::fs::read_to_string(repo_root().join(host)).expect("the bootstrap");
        let b: serde_json::Value = serde_json::from_str(&text).expect("bootstrap JSON");
        let port = b["admin"]["address"]["socket_address"]["port_value"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: no admin port in {host}"));
        return Some((
            u16::try_from(port).expect("a port"),
            "/stats/prometheus".into(),
        ));
    }
    let program = command.first().copied().unwrap_or_default();
    // `xds-server certs …` and the like are one-shot subcommands; only `serve` (or a service
    // started without a subcommand) runs a side port.
    let serves = command
        .get(1)
        .is_none_or(|a| a.starts_with('-') || *a == "serve");
    if SERVICES.contains(&program) && serves {
        let at = command
            .iter()
            .position(|a| *a == "--admin")
            .unwrap_or_else(|| {
                panic!(
                    "{name}: {program} without --admin serves metrics on its default port; name it"
                )
            });
        let addr = command.get(at + 1).expect("--admin's value");
        let port = addr.rsplit(':').next().and_then(|p| p.parse().ok());
        return Some((
            port.unwrap_or_else(|| panic!("{name}: --admin {addr}")),
            "/metrics".into(),
        ));
    }
    None
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn load_yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .remove(0)
}

#[test]
fn prometheus_scrapes_every_process_the_compose_file_runs() {
    let compose = load_yaml(&repo_root().join("docker-compose.yml"));
    let prom = load_yaml(&repo_root().join("deploy/prometheus/prometheus.yml"));
    let services = compose["services"].as_hash().expect("services");
    let networks = |name: &str| -> BTreeSet<String> {
        strings(&compose["services"][name]["networks"])
            .into_iter()
            .collect()
    };
    let scraper = networks("prometheus");
    assert!(!scraper.is_empty(), "prometheus joins no network");

    // Every scrape: (metrics path, target host, port, resolves every replica).
    let mut scraped: BTreeMap<String, Vec<(String, u16, bool)>> = BTreeMap::new();
    for job in prom["scrape_configs"].as_vec().expect("scrape_configs") {
        let path = job["metrics_path"]
            .as_str()
            .unwrap_or("/metrics")
            .to_string();
        for sc in job["static_configs"].as_vec().into_iter().flatten() {
            for t in strings(&sc["targets"]) {
                let (host, port) = t.rsplit_once(':').expect("host:port");
                let port = port.parse().expect("a port");
                scraped
                    .entry(host.to_string())
                    .or_default()
                    .push((path.clone(), port, false));
            }
        }
        for sd in job["dns_sd_configs"].as_vec().into_iter().flatten() {
            assert_eq!(
                sd["type"].as_str().unwrap_or("SRV"),
                "A",
                "{job:?}: A records name every replica"
            );
            let port = sd["port"].as_i64().expect("a port for A records");
            for host in strings(&sd["names"]) {
                let port = u16::try_from(port).expect("a port");
                scraped
                    .entry(host)
                    .or_default()
                    .push((path.clone(), port, true));
            }
        }
    }

    let mut expected = BTreeSet::new();
    for (name, svc) in services {
        let name = name.as_str().expect("a service name");
        let Some((port, path)) = metrics_endpoint(name, svc) else {
            assert!(
                NOT_SCRAPED.iter().any(|(n, _)| *n == name),
                "compose runs `{name}`, which serves no metrics Prometheus knows of: scrape it or list why not"
            );
            continue;
        };
        expected.insert(name.to_string());
        let replicas = svc["deploy"]["replicas"].as_i64().unwrap_or(1);
        let targets = scraped.get(name).cloned().unwrap_or_default();
        assert!(
            targets.iter().any(|(p, t, every)| *p == path && *t == port && (replicas == 1 || *every)),
            "Prometheus does not scrape {name} ({replicas} replica(s)) on :{port}{path}: {targets:?}"
        );
        assert!(
            !networks(name).is_disjoint(&scraper),
            "prometheus shares no network with {name}"
        );
    }
    // And nothing else: a target no compose service answers to is a dead panel.
    let extra: Vec<&String> = scraped.keys().filter(|h| !expected.contains(*h)).collect();
    assert!(
        extra.is_empty(),
        "Prometheus scrapes what compose does not run: {extra:?}"
    );
}
