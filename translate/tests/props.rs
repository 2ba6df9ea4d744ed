//! Property tests of translation over random valid `gateway.yaml` files (services, routes, JWT and
//! API-key auth, plans and per-route limits), built from the JSON Schema's own examples of each
//! value format and written out in random but equivalent YAML styles:
//!
//! - decoding keeps the config: every style decodes to the same `Config`, which holds what was
//!   written (services and their endpoints, routes in order with their actions and auth);
//! - translation is deterministic: the same file, loaded twice, gives the same snapshot version
//!   and the same bytes for every resource, every style gives that same snapshot, and every
//!   snapshot passes the consistency check the server runs before publishing (`snapshots` fails
//!   on a dangling reference).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use ads::snapshot::{short_hash, Snapshots};
use config::RouteAction;
use proptest::prelude::*;
use proptest::test_runner::Config as RunnerConfig;
use prost::Message;
use proto::pb::google::protobuf::Any;

// ---- the schema's examples ---------------------------------------------------------------------

/// `examples` of every value format under the schema's `$defs`, by format name.
static EXAMPLES: LazyLock<BTreeMap<String, Vec<String>>> = LazyLock::new(|| {
    let schema = config::schema::schema();
    let defs = schema["$defs"].as_object().expect("$defs");
    defs.iter()
        .filter_map(|(name, def)| {
            let ex = def.get("examples")?.as_array()?;
            let ex = ex.iter().filter_map(|e| Some(e.as_str()?.to_string()));
            Some((name.clone(), ex.collect()))
        })
        .collect()
});

/// One of the schema's examples of `format`.
fn example(format: &'static str) -> impl Strategy<Value = String> {
    let ex = EXAMPLES
        .get(format)
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| panic!("the schema has no examples of `{format}`"))
        .clone();
    prop::sample::select(ex)
}

// ---- a config as a YAML tree, and its renderings ------------------------------------------------

/// A YAML node. Mappings whose order means something (weighted services: the order of Envoy's
/// weighted clusters) are `Ordered`; the keys of any other mapping may be written in any order.
#[derive(Debug, Clone)]
enum Y {
    /// A string: plain or quoted.
    Str(String),
    /// A number or boolean: always plain.
    Raw(String),
    Seq(Vec<Y>),
    Map(Vec<(String, Y)>),
    Ordered(Vec<(String, Y)>),
}

fn s(v: impl Into<String>) -> Y {
    Y::Str(v.into())
}

fn map(entries: Vec<(&str, Y)>) -> Y {
    Y::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// A format example as a node: a size written as a bare integer is an integer to YAML.
fn scalar(v: &str) -> Y {
    if v.bytes().all(|b| b.is_ascii_digit()) {
        Y::Raw(v.to_string())
    } else {
        Y::Str(v.to_string())
    }
}

/// How to write a tree: a small deterministic generator of choices (flow or block, key order,
/// quoting), so one seed is one rendering.
struct Style(u64);

impl Style {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// Whether `v` reads back as the same string when written plain (in flow context too).
fn plain_ok(v: &str) -> bool {
    let first = v.bytes().next();
    // A digit may start a plain string only if YAML cannot read the whole as a number.
    let number = v.parse::<f64>().is_ok();
    matches!(first, Some(b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/'))
        && !number
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:".contains(&b))
        && !v.contains(": ")
        && !matches!(v, "true" | "false" | "null" | "yes" | "no" | "on" | "off")
}

fn write_scalar(v: &str, style: Option<&mut Style>) -> String {
    match style {
        None if plain_ok(v) => v.to_string(),
        None => format!("\"{v}\""),
        Some(st) => match st.next() % 3 {
            0 if plain_ok(v) => v.to_string(),
            1 => format!("'{v}'"),
            _ => format!("\"{v}\""),
        },
    }
}

/// Renders `y`: canonically (block style, keys in the given order, plain where possible) when
/// `style` is `None`, else in the styles it draws.
fn render(y: &Y, style: Option<&mut Style>) -> String {
    let mut out = String::new();
    let mut style = style;
    block(y, 0, &mut style, &mut out);
    out
}

fn entries<'a>(y: &'a Y, style: &mut Option<&mut Style>) -> Vec<&'a (String, Y)> {
    match y {
        Y::Map(es) => {
            let mut es: Vec<&(String, Y)> = es.iter().collect();
            if let Some(st) = style.as_deref_mut() {
                // Fisher-Yates.
                for i in (1..es.len()).rev() {
                    es.swap(i, (st.next() % (i as u64 + 1)) as usize);
                }
            }
            es
        }
        Y::Ordered(es) => es.iter().collect(),
        _ => unreachable!("not a mapping"),
    }
}

fn flow(y: &Y, style: &mut Option<&mut Style>) -> String {
    match y {
        Y::Str(v) => write_scalar(v, style.as_deref_mut()),
        Y::Raw(v) => v.clone(),
        Y::Seq(items) => {
            let items: Vec<String> = items.iter().map(|i| flow(i, style)).collect();
            format!("[{}]", items.join(", "))
        }
        Y::Map(_) | Y::Ordered(_) => {
            let es: Vec<String> = entries(y, style)
                .into_iter()
                .map(|(k, v)| format!("{k}: {}", flow(v, style)))
                .collect();
            format!("{{ {} }}", es.join(", "))
        }
    }
}

/// Writes `y` as the value of a key (or a sequence item) at `indent`.
fn block(y: &Y, indent: usize, style: &mut Option<&mut Style>, out: &mut String) {
    let pad = " ".repeat(indent);
    let as_flow = match (y, style.as_deref_mut()) {
        (Y::Str(_) | Y::Raw(_), _) => true,
        (Y::Seq(v), _) if v.is_empty() => true,
        (_, None) => false,
        (_, Some(st)) => st.next() % 3 == 0,
    };
    if as_flow {
        out.push_str(&flow(y, style));
        out.push('\n');
        return;
    }
    out.push('\n');
    match y {
        Y::Seq(items) => {
            for i in items {
                out.push_str(&format!("{pad}- "));
                match i {
                    // A mapping item in block style starts on the dash's line.
                    Y::Map(_) | Y::Ordered(_)
                        if style.as_deref_mut().is_none_or(|st| st.coin()) =>
                    {
                        let mut first = true;
                        for (k, v) in entries(i, style) {
                            if !first {
                                out.push_str(&format!("{pad}  "));
                            }
                            first = false;
                            out.push_str(&format!("{k}: "));
                            block(v, indent + 4, style, out);
                        }
                    }
                    _ => {
                        let s = flow(i, style);
                        out.push_str(&s);
                        out.push('\n');
                    }
                }
            }
        }
        Y::Map(_) | Y::Ordered(_) => {
            for (k, v) in entries(y, style) {
                out.push_str(&format!("{pad}{k}: "));
                block(v, indent + 2, style, out);
            }
        }
        Y::Str(_) | Y::Raw(_) => unreachable!("scalars are written flow"),
    }
}

/// The whole document (its top-level mapping at indent 0).
fn document(y: &Y, style: Option<&mut Style>) -> String {
    let text = render(y, style);
    text.strip_prefix('\n').unwrap_or(&text).to_string()
}

// ---- the generator ------------------------------------------------------------------------------

const SERVICE_NAMES: [&str; 4] = ["users", "orders", "payments-v1", "payments-v2"];

#[derive(Debug, Clone)]
enum Action {
    Service(usize),
    /// Two distinct services and their weights.
    Weighted(usize, usize, u32, u32),
    Respond(u16),
}

#[derive(Debug, Clone)]
struct RouteSpec {
    prefix: String,
    exact: bool,
    methods: Vec<String>,
    hosts: Vec<String>,
    action: Action,
    /// Indices into the providers; empty: `auth: none`.
    auth: Vec<usize>,
    /// A per-route limit (`{limit, per}`), when the file has `rate_limits`.
    limit: Option<(String, String)>,
    timeout: Option<String>,
    allow_ips: Vec<String>,
    max_body: Option<String>,
}

#[derive(Debug, Clone)]
struct Spec {
    /// Endpoints per service (by index into `SERVICE_NAMES`); at least one service.
    services: Vec<(usize, Vec<String>, Option<String>)>,
    jwt: Option<String>,
    api_keys: bool,
    auth_service: (String, bool),
    /// Plans (free, pro), anonymous rate, algorithm, on_error allow.
    limits: Option<(String, String, Option<String>, &'static str, bool)>,
    port: u16,
    routes: Vec<RouteSpec>,
}

impl Spec {
    fn providers(&self) -> Vec<&'static str> {
        let mut p = Vec::new();
        if self.jwt.is_some() {
            p.push("main");
        }
        if self.api_keys {
            p.push("partners");
        }
        p
    }
    fn service_name(&self, i: usize) -> &'static str {
        SERVICE_NAMES[self.services[i % self.services.len()].0]
    }
}

fn route_spec(n_services: usize, n_providers: usize) -> impl Strategy<Value = RouteSpec> {
    let action = prop_oneof![
        4 => (0..n_services).prop_map(Action::Service),
        2 => (0..n_services, 1..=99u32).prop_map(move |(a, w)| Action::Weighted(a, a + 1, w, 100 - w)),
        1 => prop::sample::select(vec![200u16, 204, 404]).prop_map(Action::Respond),
    ];
    let auth = if n_providers == 0 {
        Just(Vec::new()).boxed()
    } else {
        prop_oneof![
            1 => Just(Vec::new()),
            2 => prop::sample::subsequence((0..n_providers).collect::<Vec<_>>(), 1..=n_providers),
        ]
        .boxed()
    };
    let per = prop_oneof![
        Just("ip".to_string()),
        Just("route".to_string()),
        example("perHeader")
    ];
    (
        example("urlPath"),
        any::<bool>(),
        prop::sample::subsequence(EXAMPLES["method"].clone(), 0..=2),
        prop::sample::subsequence(EXAMPLES["hostMatch"].clone(), 0..=2),
        action,
        auth,
        prop::option::of((example("rate"), per)),
        prop::option::of(example("positiveDuration")),
        prop::sample::subsequence(EXAMPLES["cidr"].clone(), 0..=2),
        prop::option::of(example("size")),
    )
        .prop_map(
            |(prefix, exact, methods, hosts, action, auth, limit, timeout, allow_ips, max_body)| {
                RouteSpec {
                    prefix,
                    exact,
                    methods,
                    hosts,
                    action,
                    auth,
                    limit,
                    timeout,
                    allow_ips,
                    max_body,
                }
            },
        )
}

fn spec() -> impl Strategy<Value = Spec> {
    let service = || {
        (
            prop::sample::subsequence(EXAMPLES["hostPort"].clone(), 1..=2),
            prop::option::of(example("positiveDuration")),
        )
    };
    let services = prop::sample::subsequence(vec![0usize, 1, 2, 3], 1..=4)
        .prop_flat_map(move |names| {
            let n = names.len();
            (Just(names), prop::collection::vec(service(), n))
        })
        .prop_map(|(names, svcs)| {
            names
                .into_iter()
                .zip(svcs)
                .map(|(i, (eps, t))| (i, eps, t))
                .collect::<Vec<_>>()
        });
    let limits = prop::option::of((
        example("rate"),
        example("rate"),
        prop::option::of(example("rate")),
        prop::sample::select(vec!["sliding_window", "approximate", "fixed"]),
        any::<bool>(),
    ));
    (
        services,
        prop::option::of(example("envName")),
        any::<bool>(),
        (example("hostPort"), any::<bool>()),
        limits,
        1..=65535u16,
    )
        .prop_flat_map(|(services, jwt, api_keys, auth_service, limits, port)| {
            let n_services = services.len();
            let n_providers = usize::from(jwt.is_some()) + usize::from(api_keys);
            (
                Just((services, jwt, api_keys, auth_service, limits, port)),
                prop::collection::vec(route_spec(n_services, n_providers), 1..=6),
            )
        })
        .prop_map(
            |((services, jwt, api_keys, auth_service, limits, port), routes)| Spec {
                services,
                jwt,
                api_keys,
                auth_service,
                limits,
                port,
                routes,
            },
        )
}

/// The tree of `spec`'s gateway.yaml (its API-key provider reads `keys.yaml` beside it).
fn tree(spec: &Spec) -> Y {
    let services = spec
        .services
        .iter()
        .map(|(i, eps, timeout)| {
            let mut svc = vec![("endpoints", Y::Seq(eps.iter().map(s).collect()))];
            if let Some(t) = timeout {
                svc.push(("connect_timeout", s(t)));
            }
            (SERVICE_NAMES[*i].to_string(), map(svc))
        })
        .collect();
    let mut top = vec![
        ("version", Y::Raw("1".into())),
        ("services", Y::Map(services)),
    ];
    let providers = spec.providers();
    if !providers.is_empty() {
        let (address, allow) = &spec.auth_service;
        let mut auth = vec![(
            "service",
            map(vec![
                ("address", s(address)),
                ("on_error", s(if *allow { "allow" } else { "deny" })),
            ]),
        )];
        if let Some(env) = &spec.jwt {
            auth.push((
                "jwt",
                map(vec![(
                    "main",
                    map(vec![
                        ("issuer", s("https://id.example.com")),
                        ("algorithms", Y::Seq(vec![s("HS256")])),
                        ("secret_env", s(env)),
                    ]),
                )]),
            ));
        }
        if spec.api_keys {
            auth.push((
                "api_keys",
                map(vec![(
                    "partners",
                    map(vec![
                        ("header", s("x-api-key")),
                        ("keys_file", s("keys.yaml")),
                    ]),
                )]),
            ));
        }
        top.push(("auth", map(auth)));
    }
    if let Some((free, pro, anonymous, algorithm, allow)) = &spec.limits {
        let mut rl = vec![
            (
                "service",
                map(vec![("on_error", s(if *allow { "allow" } else { "deny" }))]),
            ),
            ("plans", map(vec![("free", s(free)), ("pro", s(pro))])),
            ("default_plan", s("free")),
            ("algorithm", s(*algorithm)),
        ];
        if let Some(a) = anonymous {
            rl.push(("anonymous", s(a)));
        }
        top.push(("rate_limits", map(rl)));
    }
    let routes = spec
        .routes
        .iter()
        .enumerate()
        .map(|(n, r)| {
            let path = format!("{}/r{n}", r.prefix.trim_end_matches('/'));
            let mut m = vec![(if r.exact { "path" } else { "prefix" }, s(path))];
            if !r.methods.is_empty() {
                m.push(("methods", Y::Seq(r.methods.iter().map(s).collect())));
            }
            if !r.hosts.is_empty() {
                m.push(("hosts", Y::Seq(r.hosts.iter().map(s).collect())));
            }
            let mut route = vec![("name", s(format!("r{n}"))), ("match", map(m))];
            match &r.action {
                Action::Service(i) => route.push(("service", s(spec.service_name(*i)))),
                Action::Weighted(a, b, wa, wb) if spec.services.len() > 1 => {
                    let (a, b) = (spec.service_name(*a), spec.service_name(*b));
                    route.push((
                        "services",
                        Y::Ordered(vec![
                            (a.to_string(), Y::Raw(wa.to_string())),
                            (b.to_string(), Y::Raw(wb.to_string())),
                        ]),
                    ));
                }
                Action::Weighted(a, ..) => route.push(("service", s(spec.service_name(*a)))),
                Action::Respond(status) => route.push((
                    "respond",
                    map(vec![
                        ("status", Y::Raw(status.to_string())),
                        ("json", map(vec![("route", s(format!("r{n}")))])),
                    ]),
                )),
            }
            route.push(match r.auth.as_slice() {
                [] => ("auth", s("none")),
                names => (
                    "auth",
                    Y::Seq(names.iter().map(|&i| s(providers[i])).collect()),
                ),
            });
            if !r.allow_ips.is_empty() {
                route.push(("allow_ips", Y::Seq(r.allow_ips.iter().map(s).collect())));
            }
            if let (Some((rate, per)), Some(_)) = (&r.limit, &spec.limits) {
                route.push((
                    "rate_limit",
                    Y::Seq(vec![map(vec![("limit", s(rate)), ("per", s(per))])]),
                ));
            }
            if !matches!(r.action, Action::Respond(_)) {
                if let Some(t) = &r.timeout {
                    route.push(("timeout", s(t)));
                }
            }
            if let Some(b) = &r.max_body {
                route.push(("max_body", scalar(b)));
            }
            map(route)
        })
        .collect();
    let listener = map(vec![
        ("name", s("http")),
        ("port", Y::Raw(spec.port.to_string())),
    ]);
    top.push((
        "gateways",
        map(vec![(
            "edge",
            map(vec![
                ("listeners", Y::Seq(vec![listener])),
                ("routes", Y::Seq(routes)),
            ]),
        )]),
    ));
    map(top)
}

/// An API-key file with one key (the digest of a key nobody uses).
const KEYS: &str = "version: 1\nkeys:\n  - id: \"k1\"\n    sha256: \"10286f1cbfc30a822bbf2b5c1eba1b8fd7f8d3d2dbec8ae69252ebc6b6f0ac89\"\n    plan: \"pro\"\n    roles: []\n    created: \"2026-01-01T00:00:00Z\"\n";

/// Writes `text` as `gateway.yaml` (with `keys.yaml` beside it) into `dir` and loads it.
fn load(dir: &Path, name: &str, text: &str) -> Result<config::Loaded, TestCaseError> {
    std::fs::write(dir.join("keys.yaml"), KEYS).expect("write keys");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    config::load(&path).map_err(|e| {
        TestCaseError::fail(format!("a generated config is refused:\n{e}\n---\n{text}"))
    })
}

/// Every resource of every group, by (group, type, name): its version and bytes.
fn resources(s: &Snapshots) -> BTreeMap<(String, String, String), (String, Vec<u8>)> {
    let mut all = BTreeMap::new();
    for (group, snap) in &s.groups {
        for (type_url, t) in &snap.types {
            for r in t.resources.values() {
                all.insert(
                    (group.clone(), type_url.clone(), r.name.clone()),
                    (r.version.clone(), r.any.to_vec()),
                );
            }
        }
    }
    all
}

fn runner_config(cases: u32) -> RunnerConfig {
    RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    }
}

proptest! {
    #![proptest_config(runner_config(96))]

    #[test]
    fn every_rendering_decodes_to_the_config_written(spec in spec(), seed in any::<u64>()) {
        let y = tree(&spec);
        let canonical = document(&y, None);
        let styled = document(&y, Some(&mut Style(seed)));
        let file = Path::new("/etc/gw/gateway.yaml");
        let a = config::parse(&canonical, file)
            .map_err(|e| TestCaseError::fail(format!("{e}\n---\n{canonical}")))?;
        let b = config::parse(&styled, file)
            .map_err(|e| TestCaseError::fail(format!("{e}\n---\n{styled}")))?;
        prop_assert_eq!(&a, &b, "two renderings decode differently:\n{}\n---\n{}", canonical, styled);

        // What was written is what was decoded.
        let names: Vec<&str> = spec.services.iter().map(|(i, ..)| SERVICE_NAMES[*i]).collect();
        prop_assert_eq!(a.services.keys().map(String::as_str).collect::<Vec<_>>(), {
            let mut n = names.clone();
            n.sort_unstable();
            n
        });
        for (i, eps, _) in &spec.services {
            let got: Vec<String> = a.services[SERVICE_NAMES[*i]]
                .endpoints
                .iter()
                .map(|e| e.to_string())
                .collect();
            prop_assert_eq!(&got, eps);
        }
        let gw = &a.gateways["edge"];
        prop_assert_eq!(gw.listeners[0].port, spec.port);
        prop_assert_eq!(gw.routes.len(), spec.routes.len());
        for (n, (r, want)) in gw.routes.iter().zip(&spec.routes).enumerate() {
            prop_assert_eq!(&r.name, &format!("r{n}"));
            match (&r.action, &want.action) {
                (RouteAction::Service(got), Action::Service(i)) => {
                    prop_assert_eq!(got, spec.service_name(*i));
                }
                (RouteAction::Weighted(got), Action::Weighted(a, b, wa, wb)) => {
                    let want = vec![
                        (spec.service_name(*a).to_string(), *wa),
                        (spec.service_name(*b).to_string(), *wb),
                    ];
                    prop_assert_eq!(got, &want);
                }
                (RouteAction::Service(_), Action::Weighted(..)) => prop_assert_eq!(spec.services.len(), 1),
                (RouteAction::Respond(got), Action::Respond(status)) => prop_assert_eq!(got.status, *status),
                (got, want) => prop_assert!(false, "route r{}: decoded {:?}, wrote {:?}", n, got, want),
            }
        }
    }

    #[test]
    fn translation_is_deterministic_and_consistent(spec in spec(), seed in any::<u64>()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let y = tree(&spec);
        let canonical = document(&y, None);
        let styled = document(&y, Some(&mut Style(seed)));
        let first = load(dir.path(), "a.yaml", &canonical)?;
        let again = load(dir.path(), "a.yaml", &canonical)?;
        let other = load(dir.path(), "a.yaml", &styled)?;
        // `snapshots` checks every gateway's resources for dangling references before encoding.
        let snap = |l: &config::Loaded| {
            translate::snapshots(l).map_err(|e| TestCaseError::fail(format!("{e}\n---\n{canonical}")))
        };
        let (s1, s2, s3) = (snap(&first)?, snap(&again)?, snap(&other)?);
        prop_assert!(s1.groups.contains_key("edge"));
        prop_assert_eq!(&s1.version, &s2.version);
        prop_assert_eq!(resources(&s1), resources(&s2));
        prop_assert_eq!(&s1.version, &s3.version, "a rendering changed the snapshot:\n{}", styled);
        for (group, snap) in &s1.groups {
            for t in snap.types.values() {
                for r in t.resources.values() {
                    // Versions are content hashes (spec §6), of the resource as encoded.
                    let any = Any::decode(r.any.clone()).expect("an Any");
                    prop_assert_eq!(&r.version, &short_hash([any.value.as_slice()]), "{} {}", group, r.name);
                }
            }
        }
    }
}
