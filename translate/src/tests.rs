//! Table-driven translation tests: a small `gateway.yaml` in, the relevant Envoy fields out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use proto::pb::envoy::config::cluster::v3::{cluster, Cluster};
use proto::pb::envoy::config::core::v3::{
    address, data_source, header_value_option::HeaderAppendAction, health_check,
    substitution_format_string, transport_socket, ApiVersion, DataSource, HeaderValue,
    HeaderValueOption,
};
use proto::pb::envoy::config::endpoint::v3::lb_endpoint;
use proto::pb::envoy::config::listener::v3::Listener;
use proto::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    route,
    route_action::{hash_policy, ClusterSpecifier},
    route_match::PathSpecifier,
    HeaderMatcher, QueryParameterMatcher, Route, RouteAction, RouteMatch, VirtualHost,
};
use proto::pb::envoy::extensions::access_loggers::stream::v3::{
    stdout_access_log, StdoutAccessLog,
};
use proto::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::PathWithEscapedSlashesAction, HttpConnectionManager,
};
use proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, secret, DownstreamTlsContext, UpstreamTlsContext,
};
use proto::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{explicit_http_config::ProtocolConfig, UpstreamProtocolOptions},
    HttpProtocolOptions,
};
use proto::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatcher, StringMatcher,
};
use proto::pb::google::protobuf::{self, value::Kind, Any, Struct};

use super::*;
use config::Loaded;

const FILE: &str = "/etc/gw/gateway.yaml";

/// Parses `yaml` as if it were `/etc/gw/gateway.yaml` and "reads" every file it references: each
/// file's contents are `contents of <path>`, so tests can tell which file ended up where.
fn load(yaml: &str) -> Loaded {
    let config = config::parse(yaml, Path::new(FILE))
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
    let mut files = BTreeMap::new();
    let mut add = |p: &PathBuf| {
        files.insert(
            p.clone(),
            format!("contents of {}", p.display()).into_bytes(),
        );
    };
    for svc in config.services.values() {
        if let Some(ca) = svc.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            add(ca);
        }
        if let Some(c) = svc.tls.as_ref().and_then(|t| t.client_cert.as_ref()) {
            add(&c.cert_file);
            add(&c.key_file);
        }
    }
    for gw in config.gateways.values() {
        for t in gw
            .routes
            .iter()
            .filter_map(|r| r.grpc.as_ref()?.transcode.as_ref())
        {
            add(&t.descriptor);
        }
        for l in &gw.listeners {
            if let Some(tls) = &l.tls {
                add(&tls.cert_file);
                add(&tls.key_file);
                if let Some(c) = &tls.client_certs {
                    add(&c.ca_file);
                }
            }
        }
    }
    Loaded {
        path: PathBuf::from(FILE),
        config,
        files,
        warnings: Vec::new(),
    }
}

/// Translates and returns the `edge` gateway, checking the set is consistent on the way.
fn edge(yaml: &str) -> GatewayResources {
    let mut all = translate(&load(yaml)).expect("translates");
    let r = all.remove("edge").expect("gateway edge");
    r.check().expect("consistent");
    r
}

/// A config with the given services and `edge` gateway routes (and one plain listener).
fn with_routes(services: &str, routes: &str) -> String {
    format!(
        "version: 1\nservices:\n{services}\ngateways:\n  edge:\n    listeners: [{{ name: http, port: 8080 }}]\n    routes:\n{routes}"
    )
}

const USERS: &str = "  users: { endpoints: [127.0.0.1:3001] }";

/// The `edge` route named `name` (the last one: preflight twins come first).
fn route_named<'a>(r: &'a GatewayResources, name: &str) -> &'a Route {
    r.routes[0].virtual_hosts[0]
        .routes
        .iter()
        .rev()
        .find(|rt| rt.name == name)
        .expect("route exists")
}

/// The routes translated from the file: after the gateway's own first route, which refuses
/// ambiguous paths.
fn file_routes(vh: &VirtualHost) -> &[Route] {
    assert_eq!(vh.routes[0].name, super::route::AMBIGUOUS_PATH_ROUTE);
    &vh.routes[1..]
}

fn action(rt: &Route) -> &RouteAction {
    match &rt.action {
        Some(route::Action::Route(a)) => a,
        other => panic!("not a forwarding route: {other:?}"),
    }
}

fn unpack<M: Message + Default>(any: &Any, type_url: &str) -> M {
    assert_eq!(any.type_url, type_url);
    M::decode(any.value.as_slice()).expect("decodes")
}

fn hcm(l: &Listener) -> HttpConnectionManager {
    listener::decode_hcm(&l.filter_chains[0].filters[0]).expect("an HCM")
}

fn exact(v: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(v.into())),
        ..Default::default()
    }
}

fn regex(v: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
            regex: v.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn header(name: &str, m: StringMatcher) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(m)),
        ..Default::default()
    }
}

fn dur(secs: i64, nanos: i32) -> Option<protobuf::Duration> {
    Some(protobuf::Duration {
        seconds: secs,
        nanos,
    })
}

fn set(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn struct_strings(s: &Struct) -> BTreeMap<String, String> {
    s.fields
        .iter()
        .map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(s)) => (k.clone(), s.clone()),
            other => panic!("{k} is not a string: {other:?}"),
        })
        .collect()
}

#[test]
fn match_kinds() {
    let cases: Vec<(&str, RouteMatch)> = vec![
        (
            "{ path: /health }",
            RouteMatch {
                case_sensitive: Some(protobuf::BoolValue { value: false }),
                path_specifier: Some(PathSpecifier::Path("/health".into())),
                ..Default::default()
            },
        ),
        (
            "{ prefix: /api }",
            RouteMatch {
                case_sensitive: Some(protobuf::BoolValue { value: false }),
                path_specifier: Some(PathSpecifier::PathSeparatedPrefix("/api".into())),
                ..Default::default()
            },
        ),
        (
            "{ prefix: /static/ }",
            RouteMatch {
                case_sensitive: Some(protobuf::BoolValue { value: false }),
                path_specifier: Some(PathSpecifier::Prefix("/static/".into())),
                ..Default::default()
            },
        ),
        (
            "{ prefix: / }",
            RouteMatch {
                case_sensitive: Some(protobuf::BoolValue { value: false }),
                path_specifier: Some(PathSpecifier::Prefix("/".into())),
                ..Default::default()
            },
        ),
        (
            r#"{ regex: "/v[0-9]+/items" }"#,
            RouteMatch {
                path_specifier: Some(PathSpecifier::SafeRegex(RegexMatcher {
                    regex: "/v[0-9]+/items".into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
        ),
        (
            "{ path: /x, methods: [GET] }",
            RouteMatch {
                case_sensitive: Some(protobuf::BoolValue { value: false }),
                path_specifier: Some(PathSpecifier::Path("/x".into())),
                headers: vec![header(":method", exact("GET"))],
                ..Default::default()
            },
        ),
        (
            "{ path: /x, methods: [GET, POST] }",
            RouteMatch {
                case_sensitive: Some(protobuf::BoolValue { value: false }),
                path_specifier: Some(PathSpecifier::Path("/x".into())),
                headers: vec![header(":method", regex("^(GET|POST)$"))],
                ..Default::default()
            },
        ),
        (
            r#"{ path: /x, headers: { x-tenant: acme, x-version: { regex: "v[12]" } } }"#,
            RouteMatch {
                case_sensitive: Some(protobuf::BoolValue { value: false }),
                path_specifier: Some(PathSpecifier::Path("/x".into())),
                headers: vec![
                    header("x-tenant", exact("acme")),
                    header("x-version", regex("v[12]")),
                ],
                ..Default::default()
            },
        ),
        (
            r#"{ path: /x, query: { debug: "1", page: { regex: "[0-9]+" } } }"#,
            RouteMatch {
                case_sensitive: Some(protobuf::BoolValue { value: false }),
                path_specifier: Some(PathSpecifier::Path("/x".into())),
                query_parameters: vec![
                    QueryParameterMatcher {
                        name: "debug".into(),
                        query_parameter_match_specifier: Some(
                            QueryParameterMatchSpecifier::StringMatch(exact("1")),
                        ),
                    },
                    QueryParameterMatcher {
                        name: "page".into(),
                        query_parameter_match_specifier: Some(
                            QueryParameterMatchSpecifier::StringMatch(regex("[0-9]+")),
                        ),
                    },
                ],
                ..Default::default()
            },
        ),
        (
            r#"{ path: /x, hosts: [api.example.com, "*.example.org"] }"#,
            RouteMatch {
                case_sensitive: Some(protobuf::BoolValue { value: false }),
                path_specifier: Some(PathSpecifier::Path("/x".into())),
                headers: vec![header(
                    ":authority",
                    regex(r"(?i)^(api\.example\.com|[^:/]+\.example\.org)(:[0-9]*)?$"),
                )],
                ..Default::default()
            },
        ),
    ];
    for (m, want) in cases {
        let yaml = with_routes(
            USERS,
            &format!("      - {{ name: r, match: {m}, service: users, auth: none }}\n"),
        );
        let r = edge(&yaml);
        assert_eq!(
            route_named(&r, "r").r#match.as_ref(),
            Some(&want),
            "match {m}"
        );
    }
}

#[test]
fn routes_keep_file_order_and_names() {
    let yaml = with_routes(
        USERS,
        "      - { name: b, match: { path: /b }, service: users, auth: none }\n\
         \x20     - { name: a, match: { prefix: / }, service: users, auth: none }\n",
    );
    let r = edge(&yaml);
    assert_eq!(r.routes.len(), 1);
    assert_eq!(r.routes[0].name, "edge");
    let vh = &r.routes[0].virtual_hosts[0];
    assert_eq!(vh.domains, ["*"]);
    let names: Vec<&str> = file_routes(vh).iter().map(|rt| rt.name.as_str()).collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(
        action(&file_routes(vh)[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster("users".into()))
    );
}

#[test]
fn rewrites() {
    // (match prefix, rewrite prefix, expected prefix_rewrite, expected regex_rewrite (pattern, substitution))
    let cases = [
        ("/api/v1/users", "/users", "/users", None),
        ("/api", "/", "", Some((r"(?i)^/api/?", "/"))),
        ("/api", "/v2/", "", Some((r"(?i)^/api/?", "/v2/"))),
        ("/api.v1", "/", "", Some((r"(?i)^/api\.v1/?", "/"))),
        ("/api/", "/", "/", None),
        ("/api/", "/v2", "/v2/", None),
    ];
    for (prefix, to, want_prefix, want_regex) in cases {
        let yaml = with_routes(
            USERS,
            &format!("      - {{ name: r, match: {{ prefix: {prefix} }}, rewrite: {{ prefix: {to} }}, service: users, auth: none }}\n"),
        );
        let r = edge(&yaml);
        let a = action(route_named(&r, "r"));
        assert_eq!(a.prefix_rewrite, want_prefix, "{prefix} → {to}");
        let got = a.regex_rewrite.as_ref().map(|rr| {
            (
                rr.pattern.as_ref().unwrap().regex.as_str(),
                rr.substitution.as_str(),
            )
        });
        assert_eq!(got, want_regex, "{prefix} → {to}");
    }
}

#[test]
fn weighted_split() {
    let services = "  v1: { endpoints: [127.0.0.1:1] }\n  v2: { endpoints: [127.0.0.1:2] }\n  unused: { endpoints: [127.0.0.1:3] }";
    let yaml = with_routes(
        services,
        "      - { name: pay, match: { prefix: /pay }, services: { v1: 90, v2: 10 }, auth: none }\n",
    );
    let r = edge(&yaml);
    let Some(ClusterSpecifier::WeightedClusters(w)) =
        &action(route_named(&r, "pay")).cluster_specifier
    else {
        panic!("not weighted");
    };
    let got: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.as_ref().unwrap().value))
        .collect();
    assert_eq!(got, [("v1", 90), ("v2", 10)]);
    // Only the clusters this gateway routes to.
    let names: Vec<&str> = r.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["v1", "v2"]);
    let eps: Vec<&str> = r
        .endpoints
        .iter()
        .map(|e| e.cluster_name.as_str())
        .collect();
    assert_eq!(eps, ["v1", "v2"]);
}

#[test]
fn respond() {
    let inline = |s: &str| {
        Some(DataSource {
            specifier: Some(data_source::Specifier::InlineString(s.into())),
            ..Default::default()
        })
    };
    // (respond yaml, status, body, content-type)
    let cases = [
        (
            "{ status: 200, json: { status: ok, checks: [1, 2], b: true, a: null } }",
            200,
            inline(r#"{"a":null,"b":true,"checks":[1,2],"status":"ok"}"#),
            Some("application/json"),
        ),
        (
            "{ status: 418, body: short and stout }",
            418,
            inline("short and stout"),
            Some("text/plain"),
        ),
        ("{ status: 204 }", 204, None, None),
    ];
    for (resp, status, body, ct) in cases {
        let yaml = with_routes(
            USERS,
            &format!("      - {{ name: r, match: {{ path: /x }}, respond: {resp}, auth: none }}\n"),
        );
        let r = edge(&yaml);
        let rt = route_named(&r, "r");
        let Some(route::Action::DirectResponse(d)) = &rt.action else {
            panic!("not a direct response")
        };
        assert_eq!(d.status, status, "{resp}");
        assert_eq!(d.body, body, "{resp}");
        let want: Vec<HeaderValueOption> =
            ct.map(|ct| set("content-type", ct)).into_iter().collect();
        assert_eq!(rt.response_headers_to_add, want, "{resp}");
        // A respond-only gateway needs no clusters.
        assert!(r.clusters.is_empty());
    }
}

#[test]
fn retries_and_timeout() {
    let yaml = with_routes(
        USERS,
        "      - name: r\n        match: { prefix: /r }\n        service: users\n        auth: none\n        timeout: 5s\n\
         \x20       retries: { attempts: 2, on: [connect-failure, reset, 503, 502], per_try_timeout: 1500ms }\n\
         \x20     - { name: plain, match: { prefix: /p }, service: users, auth: none }\n",
    );
    let r = edge(&yaml);
    let a = action(route_named(&r, "r"));
    assert_eq!(a.timeout, dur(5, 0));
    let rp = a.retry_policy.as_ref().unwrap();
    assert_eq!(rp.retry_on, "connect-failure,reset,retriable-status-codes");
    assert_eq!(rp.retriable_status_codes, [503, 502]);
    assert_eq!(rp.num_retries.as_ref().unwrap().value, 2);
    assert_eq!(rp.per_try_timeout, dur(1, 500_000_000));

    let plain = action(route_named(&r, "plain"));
    assert_eq!(plain.timeout, None, "Envoy's default route timeout applies");
    assert_eq!(plain.retry_policy, None);
}

#[test]
fn header_changes() {
    let yaml = with_routes(
        USERS,
        "      - name: r\n        match: { prefix: /r }\n        service: users\n        auth: none\n\
         \x20       request_headers: { set: { x-gateway: edge, x-b: \"2\" }, remove: [x-debug] }\n\
         \x20       response_headers: { set: { x-served-by: gw }, remove: [server, x-powered-by] }\n",
    );
    let r = edge(&yaml);
    let rt = route_named(&r, "r");
    assert_eq!(
        rt.request_headers_to_add,
        [set("x-gateway", "edge"), set("x-b", "2")]
    );
    // The route's own removals only: identity headers go before routing (the HCM's early
    // header mutation), and without providers there is no credential to remove.
    assert_eq!(rt.request_headers_to_remove, ["x-debug"]);
    assert_eq!(rt.response_headers_to_add, [set("x-served-by", "gw")]);
    assert_eq!(rt.response_headers_to_remove, ["server", "x-powered-by"]);
}

/// Spec §4 on `auth: none` routes: no token and no API key (header or query) reaches an upstream.
/// Authorization goes when the gateway verifies tokens and forwards none of them.
#[test]
fn public_routes_drop_credentials() {
    use proto::pb::envoy::extensions::filters::http::lua::v3::Lua;
    use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
    let yaml = |forward: bool, query: &str| {
        format!(
            "version: 1\nservices:\n{USERS}\nauth:\n  jwt:\n    main: {{ issuer: https://i.test, algorithms: [HS256], secret_env: S, forward_token: {forward} }}\n\
             \x20 api_keys:\n    partners: {{ header: x-partner-key, {query}keys_file: keys.yaml }}\n\
             gateways:\n  edge:\n    listeners: [{{ name: http, port: 8080 }}]\n    routes:\n\
             \x20     - {{ name: open, match: {{ prefix: /o }}, service: users, auth: none }}\n\
             \x20     - {{ name: closed, match: {{ prefix: /c }}, service: users, auth: main }}\n"
        )
    };
    let r = edge(&yaml(false, "query: api_key, "));
    assert_eq!(
        route_named(&r, "open").request_headers_to_remove,
        ["x-partner-key", "authorization"]
    );
    // Authenticated routes too: the router runs after ext_authz has read them, and when
    // authz-service fails open under `on_error: allow` nothing else would remove them.
    assert_eq!(
        route_named(&r, "closed").request_headers_to_remove,
        ["x-partner-key", "authorization"]
    );
    let filters = hcm(&r.listeners[0]).http_filters;
    let names: Vec<&str> = filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.lua",
            "envoy.filters.http.router"
        ],
        "the query parameter is removed after ext_authz has read it"
    );
    let Some(http_filter::ConfigType::TypedConfig(any)) = &filters[1].config_type else {
        panic!("typed config")
    };
    let lua: Lua = unpack(any, proto::type_url::LUA);
    assert_eq!(
        lua.clear_route_cache,
        Some(protobuf::BoolValue { value: false }),
        "the stripped path must not re-select the route"
    );
    let Some(data_source::Specifier::InlineString(script)) =
        lua.default_source_code.and_then(|d| d.specifier)
    else {
        panic!("inline script")
    };
    assert!(
        script.contains("local names = { [\"api_key\"] = true }\n"),
        "{script}"
    );
    assert!(script.contains("function envoy_on_request(handle)"));

    // API keys only: the gateway still authenticates, so Authorization goes too; without any
    // provider it is left to the upstream.
    let keys_only = format!(
        "version: 1\nservices:\n{USERS}\nauth:\n  api_keys:\n    partners: {{ keys_file: keys.yaml }}\n\
         gateways:\n  edge:\n    listeners: [{{ name: http, port: 8080 }}]\n    routes:\n\
         \x20     - {{ name: open, match: {{ prefix: /o }}, service: users, auth: none }}\n"
    );
    assert!(route_named(&edge(&keys_only), "open")
        .request_headers_to_remove
        .contains(&"authorization".to_string()));
    let no_auth = with_routes(
        USERS,
        "      - { name: open, match: { prefix: /o }, service: users, auth: none }\n",
    );
    assert!(!route_named(&edge(&no_auth), "open")
        .request_headers_to_remove
        .contains(&"authorization".to_string()));

    // forward_token: the user lets upstreams see tokens; no query key: no extra filter.
    let r = edge(&yaml(true, ""));
    for route in ["open", "closed"] {
        assert_eq!(
            route_named(&r, route).request_headers_to_remove,
            ["x-partner-key"],
            "{route}"
        );
    }
    let names: Vec<String> = hcm(&r.listeners[0])
        .http_filters
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        names,
        ["envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    );
}

#[test]
fn consistent_hash_services_get_a_hash_policy() {
    for (lb, hashed) in [
        ("ring_hash", true),
        ("maglev", true),
        ("round_robin", false),
        ("least_request", false),
        ("random", false),
    ] {
        let yaml = with_routes(
            &format!("  users: {{ endpoints: [127.0.0.1:3001], lb: {lb} }}"),
            "      - { name: r, match: { prefix: /r }, service: users, auth: none }\n",
        );
        let r = edge(&yaml);
        let want = match lb {
            "round_robin" => cluster::LbPolicy::RoundRobin,
            "least_request" => cluster::LbPolicy::LeastRequest,
            "random" => cluster::LbPolicy::Random,
            "ring_hash" => cluster::LbPolicy::RingHash,
            _ => cluster::LbPolicy::Maglev,
        };
        assert_eq!(r.clusters[0].lb_policy, want as i32, "{lb}");
        let hp = &action(route_named(&r, "r")).hash_policy;
        if hashed {
            assert_eq!(hp.len(), 1, "{lb}");
            assert_eq!(
                hp[0].policy_specifier,
                Some(hash_policy::PolicySpecifier::ConnectionProperties(
                    hash_policy::ConnectionProperties { source_ip: true }
                ))
            );
        } else {
            assert!(hp.is_empty(), "{lb}");
        }
    }
}

#[test]
fn affinity_hashes_the_header_or_the_cookie() {
    let yaml = with_routes(
        "  users: { endpoints: [127.0.0.1:3001, 127.0.0.1:3002, 127.0.0.1:3003], lb: ring_hash }\n  v2: { endpoints: [127.0.0.1:3004], lb: maglev }",
        "      - { name: h, match: { prefix: /h }, service: users, auth: none, affinity: { header: X-User-Id } }\n      - { name: c, match: { prefix: /c }, services: { users: 1, v2: 1 }, auth: none, affinity: { cookie: route, ttl: 1h } }\n      - { name: s, match: { prefix: /s }, service: users, auth: none, affinity: { cookie: sid, ttl: 0s } }\n",
    );
    let r = edge(&yaml);
    let source_ip =
        hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
            source_ip: true,
        });
    // The header alone decides when present (terminal); without it, the client IP.
    let hp = &action(route_named(&r, "h")).hash_policy;
    assert_eq!(hp.len(), 2);
    assert_eq!(
        hp[0].policy_specifier,
        Some(hash_policy::PolicySpecifier::Header(hash_policy::Header {
            header_name: "x-user-id".to_string(),
            regex_rewrite: None,
        }))
    );
    assert!(hp[0].terminal);
    assert_eq!(hp[1].policy_specifier, Some(source_ip));
    // A cookie always yields a value: it is the only key.
    for (route, name, secs) in [("c", "route", 3600), ("s", "sid", 0)] {
        let hp = &action(route_named(&r, route)).hash_policy;
        let [only] = hp.as_slice() else {
            panic!("{route}: one hash policy, got {hp:?}")
        };
        let Some(hash_policy::PolicySpecifier::Cookie(c)) = &only.policy_specifier else {
            panic!("{route}: a cookie policy, got {only:?}")
        };
        assert_eq!(c.name, name);
        assert_eq!(
            c.ttl,
            Some(protobuf::Duration {
                seconds: secs,
                nanos: 0
            }),
            "{route}"
        );
        assert_eq!(c.path, "/");
        assert_eq!(
            c.attributes
                .iter()
                .map(|a| (a.name.as_str(), a.value.as_str()))
                .collect::<Vec<_>>(),
            [("SameSite", "Lax")]
        );
    }
}

#[test]
fn mirror_sends_its_share_to_the_mirror_cluster() {
    use proto::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
    let yaml = with_routes(
        "  users: { endpoints: [127.0.0.1:3001] }\n  shadow: { endpoints: [127.0.0.1:3002] }\n  unused: { endpoints: [127.0.0.1:3003] }",
        "      - { name: r, match: { prefix: /r }, service: users, auth: none, mirror: { service: shadow, percent: 0.5% } }\n      - { name: all, match: { prefix: /all }, service: users, auth: none, mirror: { service: shadow } }\n      - { name: plain, match: { prefix: /p }, service: users, auth: none }\n",
    );
    let r = edge(&yaml);
    // The mirror's cluster is on this Envoy (a service no route uses is not).
    let names: Vec<&str> = r.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["shadow", "users"]);
    for (route, numerator) in [("r", 5_000), ("all", 1_000_000)] {
        let [m] = action(route_named(&r, route))
            .request_mirror_policies
            .as_slice()
        else {
            panic!("{route}: one mirror policy")
        };
        assert_eq!(m.cluster, "shadow");
        let f = m
            .runtime_fraction
            .as_ref()
            .and_then(|f| f.default_value.as_ref());
        assert_eq!(f.map(|f| f.numerator), Some(numerator), "{route}");
        assert_eq!(
            f.map(|f| f.denominator),
            Some(DenominatorType::Million as i32)
        );
        // The spec's `-shadow` Host suffix: Envoy's default.
        assert!(!m.disable_shadow_host_suffix_append);
    }
    assert!(action(route_named(&r, "plain"))
        .request_mirror_policies
        .is_empty());

    // A route naming a mirror cluster that is missing is an inconsistency `check` catches.
    let mut broken = r.clone();
    broken.clusters.retain(|c| c.name != "shadow");
    broken.endpoints.retain(|e| e.cluster_name != "shadow");
    assert_eq!(
        broken.check(),
        Err(Inconsistency::MissingCluster {
            route: "r".to_string(),
            cluster: "shadow".to_string()
        })
    );
}

const CORS_GATEWAY: &str = r#"
version: 1
services:
  users: { endpoints: [127.0.0.1:3001] }
gateways:
  edge:
    listeners: [{ name: http, port: 8080 }]
    cors: { origins: [https://app.example.com, "*"], methods: [GET, POST], headers: [authorization, content-type], max_age: 1h }
    routes:
      - { name: users, match: { prefix: /users, methods: [GET, POST] }, service: users, auth: none }
      - { name: any, match: { prefix: /any }, service: users, auth: none }
      - { name: ping, match: { path: /ping, methods: [GET] }, respond: { status: 200 }, auth: none }
"#;

#[test]
fn cors() {
    let r = edge(CORS_GATEWAY);
    let h = hcm(&r.listeners[0]);
    let filters: Vec<&str> = h.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        filters,
        ["envoy.filters.http.cors", "envoy.filters.http.router"]
    );

    let vh = &r.routes[0].virtual_hosts[0];
    assert_eq!(vh.typed_per_filter_config.len(), 1);
    let policy: CorsPolicy = unpack(
        &vh.typed_per_filter_config["envoy.filters.http.cors"],
        proto::type_url::CORS_POLICY,
    );
    assert_eq!(
        policy,
        CorsPolicy {
            allow_origin_string_match: vec![exact("https://app.example.com"), regex(".*")],
            allow_methods: "GET,POST".into(),
            allow_headers: "authorization,content-type".into(),
            max_age: "3600".into(),
            forward_not_matching_preflights: Some(protobuf::BoolValue { value: false }),
            ..Default::default()
        }
    );

    // A method-restricted route gets a preflight twin just before it; an unrestricted one does not.
    let names: Vec<&str> = file_routes(vh).iter().map(|rt| rt.name.as_str()).collect();
    assert_eq!(names, ["users", "users", "any", "ping"]);
    let twin = &file_routes(vh)[0];
    let m = twin.r#match.as_ref().unwrap();
    assert_eq!(
        m.path_specifier,
        Some(PathSpecifier::PathSeparatedPrefix("/users".into()))
    );
    assert_eq!(
        m.headers,
        [
            header(":method", exact("OPTIONS")),
            HeaderMatcher {
                name: "access-control-request-method".into(),
                header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
                ..Default::default()
            },
            // Without an Origin the CORS filter lets a preflight through to the policies.
            header("origin", regex(".+")),
        ]
    );
    // The twin forwards like its route: Envoy's CORS filter skips direct-response routes.
    assert_eq!(twin.action, file_routes(vh)[1].action);
}

#[test]
fn no_cors_means_router_only() {
    let r = edge(&with_routes(
        USERS,
        "      - { name: r, match: { prefix: /r, methods: [GET] }, service: users, auth: none }\n",
    ));
    let h = hcm(&r.listeners[0]);
    let filters: Vec<&str> = h.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(filters, ["envoy.filters.http.router"]);
    let vh = &r.routes[0].virtual_hosts[0];
    assert!(vh.typed_per_filter_config.is_empty());
    assert_eq!(file_routes(vh).len(), 1, "no preflight twin without cors");
}

const TLS_GATEWAY: &str = r#"
version: 1
services:
  users: { endpoints: [127.0.0.1:3001] }
gateways:
  edge:
    listeners:
      - { name: http, port: 8080 }
      - { name: https, address: 127.0.0.1, port: 8443, tls: { cert_file: certs/api.crt, key_file: /keys/api.key } }
    routes:
      - { name: r, match: { prefix: / }, service: users, auth: none }
"#;

#[test]
fn tls_listener_and_secret() {
    let r = edge(TLS_GATEWAY);
    let names: Vec<&str> = r.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["http", "https"]);
    assert!(r.listeners[0].filter_chains[0].transport_socket.is_none());

    let l = &r.listeners[1];
    let Some(address::Address::SocketAddress(sa)) = &l.address.as_ref().unwrap().address else {
        panic!()
    };
    assert_eq!(sa.address, "127.0.0.1");
    assert_eq!(
        sa.port_specifier,
        Some(proto::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(8443))
    );

    let ts = l.filter_chains[0].transport_socket.as_ref().unwrap();
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!()
    };
    let ctx: DownstreamTlsContext = unpack(any, proto::type_url::DOWNSTREAM_TLS_CONTEXT);
    let common = ctx.common_tls_context.unwrap();
    assert!(
        common.tls_certificates.is_empty(),
        "certificates travel over SDS, not inline in the listener"
    );
    assert_eq!(common.tls_certificate_sds_secret_configs.len(), 1);
    let sds = &common.tls_certificate_sds_secret_configs[0];
    assert_eq!(sds.name, "edge/https");
    assert_eq!(sds.sds_config, Some(ads()));
    assert_eq!(
        sds.sds_config.as_ref().unwrap().resource_api_version,
        ApiVersion::V3 as i32
    );

    assert_eq!(r.secrets.len(), 1);
    assert_eq!(r.secrets[0].name, "edge/https");
    let Some(secret::Type::TlsCertificate(cert)) = &r.secrets[0].r#type else {
        panic!()
    };
    let inline = |s: &str| {
        Some(DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(s.as_bytes().to_vec())),
            ..Default::default()
        })
    };
    assert_eq!(
        cert.certificate_chain,
        inline("contents of /etc/gw/certs/api.crt")
    );
    assert_eq!(cert.private_key, inline("contents of /keys/api.key"));
}

#[test]
fn missing_file_is_an_error() {
    let mut loaded = load(TLS_GATEWAY);
    loaded.files.remove(Path::new("/keys/api.key"));
    assert_eq!(
        translate(&loaded),
        Err(TranslateError::MissingFile {
            what: "TLS key file",
            path: "/keys/api.key".into()
        })
    );
}

fn upstream_tls(c: &Cluster) -> UpstreamTlsContext {
    let ts = c.transport_socket.as_ref().expect("a transport socket");
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!()
    };
    unpack(any, proto::type_url::UPSTREAM_TLS_CONTEXT)
}

#[test]
fn upstream_client_certificates_travel_over_sds() {
    let yaml = with_routes(
        "  users: { endpoints: [10.0.0.1:443], tls: { sni: users.internal, ca_file: certs/ca.pem, cert_file: certs/gw.crt, key_file: certs/gw.key } }\n  plain: { endpoints: [10.0.0.2:80] }",
        "      - { name: r, match: { prefix: / }, service: users, auth: none }\n      - { name: p, match: { prefix: /p }, service: plain, auth: none }\n",
    );
    let r = edge(&yaml);
    let users = r.clusters.iter().find(|c| c.name == "users").unwrap();
    let common = upstream_tls(users).common_tls_context.unwrap();
    assert!(
        common.tls_certificates.is_empty(),
        "the client certificate is not inline in the cluster"
    );
    let [sds] = common.tls_certificate_sds_secret_configs.as_slice() else {
        panic!("one SDS certificate")
    };
    assert_eq!(sds.name, "edge/services/users/client-cert");
    assert_eq!(sds.sds_config, Some(ads()));
    // The CA and the SAN check stay in the cluster.
    assert!(common.validation_context_type.is_some());

    let [secret] = r.secrets.as_slice() else {
        panic!("one secret: {:?}", r.secrets)
    };
    assert_eq!(secret.name, sds.name);
    let Some(secret::Type::TlsCertificate(cert)) = &secret.r#type else {
        panic!()
    };
    let inline = |s: &str| {
        Some(DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(s.as_bytes().to_vec())),
            ..Default::default()
        })
    };
    assert_eq!(
        cert.certificate_chain,
        inline("contents of /etc/gw/certs/gw.crt")
    );
    assert_eq!(cert.private_key, inline("contents of /etc/gw/certs/gw.key"));
    assert_eq!(
        r.cluster_secrets,
        [(
            "users".to_string(),
            "edge/services/users/client-cert".to_string()
        )]
    );

    let mut broken = r.clone();
    broken.secrets.clear();
    assert_eq!(
        broken.check(),
        Err(Inconsistency::MissingClusterSecret {
            cluster: "users".to_string(),
            secret: "edge/services/users/client-cert".to_string()
        })
    );
}

#[test]
fn upstream_tls_with_ca_and_sni() {
    let yaml = with_routes(
        "  users: { endpoints: [10.0.0.1:443], tls: { sni: users.internal, ca_file: certs/ca.pem } }",
        "      - { name: r, match: { prefix: / }, service: users, auth: none }\n",
    );
    let ctx = upstream_tls(&edge(&yaml).clusters[0]);
    assert_eq!(ctx.sni, "users.internal");
    let common = ctx.common_tls_context.unwrap();
    assert_eq!(common.alpn_protocols, ["http/1.1"]);
    let Some(ValidationContextType::ValidationContext(v)) = common.validation_context_type else {
        panic!("no validation")
    };
    assert_eq!(
        v.trusted_ca,
        Some(DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(
                b"contents of /etc/gw/certs/ca.pem".to_vec()
            )),
            ..Default::default()
        })
    );
    assert_eq!(v.match_typed_subject_alt_names.len(), 1);
    assert_eq!(
        v.match_typed_subject_alt_names[0].matcher,
        Some(exact("users.internal"))
    );
}

#[test]
fn upstream_tls_without_ca() {
    let yaml = with_routes(
        "  users: { endpoints: [10.0.0.1:443], protocol: grpc, tls: { sni: users.internal } }",
        "      - { name: r, match: { prefix: / }, service: users, auth: none }\n",
    );
    let ctx = upstream_tls(&edge(&yaml).clusters[0]);
    assert_eq!(ctx.sni, "users.internal");
    let common = ctx.common_tls_context.unwrap();
    assert_eq!(common.alpn_protocols, ["h2"]);
    assert_eq!(common.validation_context_type, None);
}

#[test]
fn upstream_protocols() {
    for (protocol, http2) in [("http1", false), ("http2", true), ("grpc", true)] {
        let yaml = with_routes(
            &format!("  users: {{ endpoints: [127.0.0.1:3001], protocol: {protocol} }}"),
            "      - { name: r, match: { prefix: / }, service: users, auth: none }\n",
        );
        let c = &edge(&yaml).clusters[0];
        if !http2 {
            assert!(c.typed_extension_protocol_options.is_empty(), "{protocol}");
            continue;
        }
        assert_eq!(c.typed_extension_protocol_options.len(), 1, "{protocol}");
        let opts: HttpProtocolOptions = unpack(
            &c.typed_extension_protocol_options
                ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"],
            proto::type_url::HTTP_PROTOCOL_OPTIONS,
        );
        let Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) = opts.upstream_protocol_options
        else {
            panic!()
        };
        assert!(
            matches!(
                e.protocol_config,
                Some(ProtocolConfig::Http2ProtocolOptions(_))
            ),
            "{protocol}"
        );
    }
}

#[test]
fn ip_endpoints_use_eds() {
    let yaml = with_routes(
        "  users: { endpoints: [127.0.0.1:3001, \"[::1]:3002\"], connect_timeout: 250ms }",
        "      - { name: r, match: { prefix: / }, service: users, auth: none }\n",
    );
    let r = edge(&yaml);
    let c = &r.clusters[0];
    assert_eq!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        ))
    );
    assert_eq!(
        c.eds_cluster_config.as_ref().unwrap().eds_config,
        Some(ads())
    );
    assert!(c.load_assignment.is_none());
    assert_eq!(c.connect_timeout, dur(0, 250_000_000));

    assert_eq!(r.endpoints.len(), 1);
    let cla = &r.endpoints[0];
    assert_eq!(cla.cluster_name, "users");
    assert_eq!(cla.endpoints.len(), 1, "one locality");
    assert_eq!(
        endpoint_addrs(cla),
        [("127.0.0.1".to_string(), 3001), ("::1".to_string(), 3002)]
    );
}

fn endpoint_addrs(
    cla: &proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment,
) -> Vec<(String, u32)> {
    cla.endpoints[0]
        .lb_endpoints
        .iter()
        .map(|e| {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                panic!()
            };
            let Some(address::Address::SocketAddress(sa)) = &ep.address.as_ref().unwrap().address
            else {
                panic!()
            };
            let Some(proto::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                p,
            )) = sa.port_specifier
            else {
                panic!()
            };
            (sa.address.clone(), p)
        })
        .collect()
}

#[test]
fn dns_endpoints_use_strict_dns() {
    let yaml = with_routes(
        "  users: { endpoints: [users.internal:8080, 127.0.0.1:3001] }",
        "      - { name: r, match: { prefix: / }, service: users, auth: none }\n",
    );
    let r = edge(&yaml);
    let c = &r.clusters[0];
    assert_eq!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32
        ))
    );
    assert!(c.eds_cluster_config.is_none());
    assert!(r.endpoints.is_empty(), "EDS cannot carry host names");
    let cla = c.load_assignment.as_ref().unwrap();
    assert_eq!(cla.cluster_name, "users");
    assert_eq!(
        endpoint_addrs(cla),
        [
            ("users.internal".to_string(), 8080),
            ("127.0.0.1".to_string(), 3001)
        ]
    );
}

#[test]
fn health_check_circuit_breaker_outlier_detection() {
    let yaml = with_routes(
        "  users:\n    endpoints: [127.0.0.1:3001]\n    protocol: http2\n\
         \x20   health_check: { path: /healthz, interval: 3s, timeout: 500ms, healthy: 1, unhealthy: 4 }\n\
         \x20   circuit_breaker: { max_connections: 10, max_pending: 20, max_requests: 30, max_retries: 4 }\n\
         \x20   outlier_detection: { consecutive_5xx: 7, interval: 2s, ejection_time: 1m, max_ejection_percent: 25 }",
        "      - { name: r, match: { prefix: / }, service: users, auth: none }\n",
    );
    let c = &edge(&yaml).clusters[0];
    assert_eq!(c.health_checks.len(), 1);
    let hc = &c.health_checks[0];
    assert_eq!(hc.interval, dur(3, 0));
    assert_eq!(hc.no_traffic_interval, dur(3, 0));
    assert_eq!(hc.timeout, dur(0, 500_000_000));
    assert_eq!(hc.healthy_threshold.as_ref().unwrap().value, 1);
    assert_eq!(hc.unhealthy_threshold.as_ref().unwrap().value, 4);
    let Some(health_check::HealthChecker::HttpHealthCheck(h)) = &hc.health_checker else {
        panic!()
    };
    assert_eq!(h.path, "/healthz");
    assert_eq!(
        h.codec_client_type,
        proto::pb::envoy::r#type::v3::CodecClientType::Http2 as i32
    );

    let t = &c.circuit_breakers.as_ref().unwrap().thresholds;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].priority, 0, "default priority");
    let v = |x: &Option<protobuf::UInt32Value>| x.as_ref().unwrap().value;
    assert_eq!(
        (
            v(&t[0].max_connections),
            v(&t[0].max_pending_requests),
            v(&t[0].max_requests),
            v(&t[0].max_retries)
        ),
        (10, 20, 30, 4)
    );

    let od = c.outlier_detection.as_ref().unwrap();
    assert_eq!(v(&od.consecutive_5xx), 7);
    assert_eq!(od.interval, dur(2, 0));
    assert_eq!(od.base_ejection_time, dur(60, 0));
    assert_eq!(v(&od.max_ejection_percent), 25);
}

#[test]
fn defaults_without_optional_service_settings() {
    let c = &edge(&with_routes(
        USERS,
        "      - { name: r, match: { prefix: / }, service: users, auth: none }\n",
    ))
    .clusters[0];
    assert!(c.health_checks.is_empty());
    assert!(c.outlier_detection.is_none());
    assert!(c.transport_socket.is_none());
    assert_eq!(c.connect_timeout, dur(2, 0));
    let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_retries.as_ref().unwrap().value, 3);
}

#[test]
fn connection_manager_settings() {
    let r = edge(TLS_GATEWAY);
    for l in &r.listeners {
        let h = hcm(l);
        assert_eq!(h.stat_prefix, l.name);
        assert_eq!(
            listener::rds_name(&l.filter_chains[0].filters[0]).as_deref(),
            Some("edge")
        );
        assert_eq!(
            h.use_remote_address,
            Some(protobuf::BoolValue { value: true })
        );
        assert_eq!(
            h.generate_request_id,
            Some(protobuf::BoolValue { value: true })
        );
        assert!(h.preserve_external_request_id);
        assert!(h.always_set_request_id_in_response);
        // A client's UUID is kept as it came: no tracing decision packed into it.
        let ext = h
            .request_id_extension
            .as_ref()
            .expect("request_id_extension");
        let any = ext.typed_config.as_ref().expect("typed_config");
        assert_eq!(any.type_url, proto::type_url::UUID_REQUEST_ID);
        let uuid = proto::pb::envoy::extensions::request_id::uuid::v3::UuidRequestIdConfig::decode(
            any.value.as_slice(),
        )
        .expect("UuidRequestIdConfig");
        assert_eq!(
            uuid.pack_trace_reason,
            Some(protobuf::BoolValue { value: false })
        );
        assert_eq!(
            uuid.use_request_id_for_trace_sampling,
            Some(protobuf::BoolValue { value: true })
        );
        assert_eq!(h.normalize_path, Some(protobuf::BoolValue { value: true }));
        assert!(h.merge_slashes);
        assert_eq!(
            h.path_with_escaped_slashes_action,
            PathWithEscapedSlashesAction::UnescapeAndRedirect as i32
        );
    }
}

/// A local reply mapper as (flags, status, JSON body fields, content type).
type MapperSummary = (Vec<String>, u32, BTreeMap<String, String>, String);

#[test]
fn local_replies_are_json_by_response_flag() {
    let r = edge(TLS_GATEWAY);
    let lrc = hcm(&r.listeners[0])
        .local_reply_config
        .expect("local reply config");
    assert!(
        lrc.body_format.is_none(),
        "replies we do not map (respond:, policy denials) keep their bodies"
    );
    // After the CEL mappers (tested in `edge`), one per flag-selected reply.
    let got: Vec<MapperSummary> = lrc.mappers[super::listener::cel_replies().len()..]
        .iter()
        .map(|m| {
            use proto::pb::envoy::config::accesslog::v3::access_log_filter::FilterSpecifier;
            // By response flag, or (for ext_authz's UAEX) by flag and status 503 together.
            let f = match &m.filter.as_ref().unwrap().filter_specifier {
                Some(FilterSpecifier::ResponseFlagFilter(f)) => f,
                Some(FilterSpecifier::AndFilter(and)) => {
                    let Some(FilterSpecifier::ResponseFlagFilter(f)) =
                        &and.filters[0].filter_specifier
                    else {
                        panic!("the first condition is the response flag")
                    };
                    let Some(FilterSpecifier::StatusCodeFilter(sc)) =
                        &and.filters[1].filter_specifier
                    else {
                        panic!("the second condition is the status")
                    };
                    assert_eq!(
                        sc.comparison
                            .as_ref()
                            .unwrap()
                            .value
                            .as_ref()
                            .unwrap()
                            .default_value,
                        503
                    );
                    f
                }
                _ => panic!("mappers select by response flag"),
            };
            let fmt = m.body_format_override.as_ref().unwrap();
            let Some(substitution_format_string::Format::JsonFormat(s)) = &fmt.format else {
                panic!()
            };
            (
                f.flags.clone(),
                m.status_code.as_ref().unwrap().value,
                struct_strings(s),
                fmt.content_type.clone(),
            )
        })
        .collect();
    let body = |error: &str, message: &str| {
        BTreeMap::from([
            ("error".to_string(), error.to_string()),
            ("message".to_string(), message.to_string()),
            ("request_id".to_string(), "%REQ(X-REQUEST-ID)%".to_string()),
        ])
    };
    let flags = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        [
            (
                flags(&["NR"]),
                404,
                body("not_found", "no route matches"),
                "application/json".to_string()
            ),
            (
                flags(&["UT"]),
                504,
                body("gateway_timeout", "upstream timed out"),
                "application/json".to_string()
            ),
            (
                flags(&["RLSE"]),
                503,
                body("unavailable", "rate-limit service unavailable"),
                "application/json".to_string()
            ),
            (
                flags(&["UAEX"]),
                503,
                body("unavailable", "authorization service unavailable"),
                "application/json".to_string()
            ),
            (
                flags(&["UH", "UF", "UO", "URX", "UC", "UR"]),
                503,
                body("unavailable", "upstream unavailable"),
                "application/json".to_string()
            ),
        ]
    );
    // `local_reply_config` is field 38 of the HCM, `mappers` field 1, `body_format_override`
    // field 4, `json_format` field 2: the hand-spliced bytes decode to what prost would build.
    let l = &r.listeners[0];
    let cfg = load(TLS_GATEWAY);
    let gw = &cfg.config.gateways["edge"];
    let policies = Policies {
        early_remove: authz::early_removed_headers(&cfg.config),
        ..Policies::default()
    };
    let mut expected = listener::hcm_base("edge", gw, &gw.listeners[0], &policies);
    expected.local_reply_config = Some(lrc.clone());
    assert_eq!(hcm(l), expected);
}

fn access_log_of(mode: &str) -> Option<StdoutAccessLog> {
    let yaml = format!(
        "version: 1\nservices:\n{USERS}\ngateways:\n  edge:\n    listeners: [{{ name: http, port: 8080 }}]\n    access_log: {mode}\n    routes:\n      - {{ name: r, match: {{ prefix: / }}, service: users, auth: none }}\n"
    );
    let h = hcm(&edge(&yaml).listeners[0]);
    // The per-route stats logger comes first on every listener, whatever the mode.
    assert_eq!(h.access_log[0].name, "envoy.access_loggers.stats");
    assert!(h.access_log.len() <= 2);
    h.access_log.get(1).map(|al| {
        assert_eq!(al.name, "envoy.access_loggers.stdout");
        let Some(proto::pb::envoy::config::accesslog::v3::access_log::ConfigType::TypedConfig(any)) = &al.config_type
        else {
            panic!()
        };
        unpack(any, proto::type_url::STDOUT_ACCESS_LOG)
    })
}

#[test]
fn access_log_modes() {
    let Some(stdout_access_log::AccessLogFormat::LogFormat(json)) =
        access_log_of("json").unwrap().access_log_format
    else {
        panic!()
    };
    let Some(substitution_format_string::Format::JsonFormat(s)) = &json.format else {
        panic!("json format")
    };
    let fields = struct_strings(s);
    for (k, v) in [
        ("timestamp", "%START_TIME%"),
        ("request_id", "%REQ(X-REQUEST-ID)%"),
        ("method", "%REQ(:METHOD)%"),
        // Without the query, which may carry an API key.
        ("path", "%PATH(NQ:ORIG_OR_PATH)%"),
        ("status", "%RESPONSE_CODE%"),
        ("latency_ms", "%DURATION%"),
        ("route", "%ROUTE_NAME%"),
        ("upstream", "%UPSTREAM_CLUSTER%"),
        ("upstream_host", "%UPSTREAM_HOST%"),
        ("user_agent", "%REQ(USER-AGENT)%"),
        ("response_flags", "%RESPONSE_FLAGS%"),
        ("bytes_sent", "%BYTES_SENT%"),
    ] {
        assert_eq!(fields.get(k).map(String::as_str), Some(v), "json field {k}");
    }

    let Some(stdout_access_log::AccessLogFormat::LogFormat(text)) =
        access_log_of("text").unwrap().access_log_format
    else {
        panic!()
    };
    let Some(substitution_format_string::Format::TextFormatSource(src)) = &text.format else {
        panic!("text format")
    };
    let Some(data_source::Specifier::InlineString(line)) = &src.specifier else {
        panic!()
    };
    assert!(
        line.ends_with('\n')
            && line.contains("%REQ(X-REQUEST-ID)%")
            && line.contains("%RESPONSE_CODE%")
    );

    assert_eq!(access_log_of("off"), None);
}

/// Spec §10: one stats access logger on every gateway listener (the redirecting one too) counts
/// each request by route and status class, whoever answered it; its labels are Envoy's values
/// only (the matched route's name, the status), never a header or the path a client chose; and
/// the cache's internal listener has none, so a cached route's request is counted once.
#[test]
fn every_listener_counts_requests_per_route_from_envoys_values_only() {
    use proto::pb::envoy::extensions::access_loggers::stats::v3::Config as StatsLog;
    let yaml = format!(
        "version: 1\nservices:\n{USERS}\ngateways:\n  edge:\n    listeners:\n      - {{ name: http, port: 8080, https_redirect: true }}\n      - {{ name: https, port: 8443, tls: {{ cert_file: certs/api.crt, key_file: certs/api.key }} }}\n    routes:\n      - {{ name: r, match: {{ prefix: / }}, service: users, auth: none, cache: {{ ttl: 10s }} }}\n"
    );
    let r = edge(&yaml);
    let mut gateway_listeners = 0;
    for l in &r.listeners {
        let h = hcm(l);
        let stats: Vec<StatsLog> = h
            .access_log
            .iter()
            .filter(|al| al.name == "envoy.access_loggers.stats")
            .map(|al| {
                let Some(
                    proto::pb::envoy::config::accesslog::v3::access_log::ConfigType::TypedConfig(
                        any,
                    ),
                ) = &al.config_type
                else {
                    panic!("typed config")
                };
                unpack(any, proto::type_url::STATS_ACCESS_LOG)
            })
            .collect();
        if l.name == crate::cache::LISTENER {
            assert!(stats.is_empty(), "the cache's listener counts nothing");
            continue;
        }
        gateway_listeners += 1;
        assert_eq!(stats.len(), 1, "{}", l.name);
        let s = &stats[0];
        assert_eq!(
            s.stats_scope.as_ref().map(|sc| sc.prefix.as_str()),
            Some("gateway")
        );
        let [counter] = &s.counters[..] else {
            panic!("one counter")
        };
        let stat = counter.stat.as_ref().unwrap();
        assert_eq!(stat.name, "route_requests");
        let tags: Vec<(&str, &str)> = stat
            .tags
            .iter()
            .map(|t| (t.name.as_str(), t.value_format.as_str()))
            .collect();
        assert_eq!(
            tags,
            [
                ("envoy_route", "%ROUTE_NAME%"),
                ("envoy_response_code_class", "%CEL(response.code / 100)%")
            ]
        );
        assert_eq!(counter.value_fixed.map(|v| v.value), Some(1));
        let [histogram] = &s.histograms[..] else {
            panic!("one histogram")
        };
        let stat = histogram.stat.as_ref().unwrap();
        assert_eq!(stat.name, "route_request_ms");
        assert_eq!(stat.tags.len(), 1);
        assert_eq!(stat.tags[0].value_format, "%ROUTE_NAME%");
        assert_eq!(histogram.value_format, "%DURATION%");
        assert!(s.gauges.is_empty());
    }
    assert_eq!(gateway_listeners, 2);
}

const BIG: &str = r#"
version: 1
services:
  users: { endpoints: [127.0.0.1:3001, 127.0.0.1:3011], lb: ring_hash, health_check: { path: /health }, outlier_detection: {}, tls: { sni: users.internal, ca_file: certs/ca.pem } }
  orders: { endpoints: [orders.internal:3002], protocol: grpc }
  payments-v1: { endpoints: [127.0.0.1:3003] }
  payments-v2: { endpoints: [127.0.0.1:3005] }
gateways:
  edge:
    listeners:
      - { name: http, port: 8080 }
      - { name: https, port: 8443, tls: { cert_file: certs/api.crt, key_file: certs/api.key } }
    cors: { origins: [https://app.example.com], methods: [GET, POST], headers: [authorization, content-type], max_age: 1h }
    access_log: json
    routes:
      - { name: health, match: { path: /health }, respond: { status: 200, json: { status: ok, a: 1, b: [1, { y: 1, x: 2 }] } }, auth: none }
      - name: users
        match: { prefix: /api/v1/users, methods: [GET, POST], headers: { x-a: b }, query: { q: "1" }, hosts: [api.example.com] }
        rewrite: { prefix: /users }
        service: users
        auth: none
        timeout: 5s
        retries: { attempts: 2, on: [connect-failure, reset, 503], per_try_timeout: 1s }
      - name: payments
        match: { prefix: /api/v1/payments }
        services: { payments-v1: 90, payments-v2: 10 }
        auth: none
        request_headers: { set: { x-gateway: edge, x-other: "1" }, remove: [x-debug] }
        response_headers: { remove: [server, x-powered-by] }
  mobile:
    listeners: [{ name: http, port: 9090 }]
    access_log: text
    routes:
      - { name: orders, match: { prefix: /orders }, service: orders, auth: none }
"#;

/// Every resource of every gateway, encoded the way the snapshot encodes them.
fn encode_all(loaded: &Loaded) -> BTreeMap<String, Vec<(String, Vec<u8>)>> {
    translate(loaded)
        .unwrap()
        .into_iter()
        .map(|(name, r)| {
            r.check().unwrap();
            let mut out = Vec::new();
            out.extend(
                r.clusters
                    .iter()
                    .map(|c| (format!("cluster {}", c.name), c.encode_to_vec())),
            );
            out.extend(
                r.endpoints
                    .iter()
                    .map(|e| (format!("cla {}", e.cluster_name), e.encode_to_vec())),
            );
            out.extend(
                r.listeners
                    .iter()
                    .map(|l| (format!("listener {}", l.name), l.encode_to_vec())),
            );
            out.extend(
                r.routes
                    .iter()
                    .map(|rc| (format!("routes {}", rc.name), rc.encode_to_vec())),
            );
            out.extend(
                r.secrets
                    .iter()
                    .map(|s| (format!("secret {}", s.name), s.encode_to_vec())),
            );
            (name, out)
        })
        .collect()
}

#[test]
fn encoding_is_deterministic() {
    // Every translation builds fresh HashMaps, each with its own random seed, so map iteration
    // order differs between runs just as it would between processes.
    let first = encode_all(&load(BIG));
    for _ in 0..20 {
        // Reparse too: the config's own values must not carry hidden order either.
        assert_eq!(encode_all(&load(BIG)), first);
    }
    assert_eq!(first.keys().collect::<Vec<_>>(), ["edge", "mobile"]);
    let mobile: Vec<&str> = first["mobile"].iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(mobile, ["cluster orders", "listener http", "routes mobile"]);
}

#[test]
fn consistency_check_finds_dangling_references() {
    let good = translate(&load(BIG)).unwrap().remove("edge").unwrap();
    good.check().unwrap();

    let mut r = good.clone();
    r.clusters.retain(|c| c.name != "payments-v2");
    assert!(r.check().unwrap_err().to_string().contains("payments-v2"));

    let mut r = good.clone();
    r.endpoints.retain(|e| e.cluster_name != "users");
    assert!(r.check().unwrap_err().to_string().contains("users"));

    let mut r = good.clone();
    r.routes.clear();
    assert!(r
        .check()
        .unwrap_err()
        .to_string()
        .contains("route configuration edge"));

    let mut r = good;
    r.secrets.clear();
    assert!(r.check().unwrap_err().to_string().contains("edge/https"));
    assert_eq!(
        r.check(),
        Err(Inconsistency::MissingSecret {
            listener: "https".into(),
            secret: "edge/https".into()
        }),
        "the error is typed, not only worded"
    );
}

/// The check reads `listener_refs`; they must say what the encoded listeners ask Envoy for.
#[test]
fn listener_refs_describe_the_encoded_listeners() {
    for (gateway, r) in translate(&load(BIG)).unwrap() {
        assert_eq!(r.listener_refs.len(), r.listeners.len(), "{gateway}");
        for (l, refs) in r.listeners.iter().zip(&r.listener_refs) {
            assert_eq!(refs.listener, l.name);
            let chain = &l.filter_chains[0];
            assert_eq!(
                listener::rds_name(&chain.filters[0]),
                refs.route_config,
                "{gateway}/{}",
                l.name
            );
            let secrets: Vec<String> = chain
                .transport_socket
                .iter()
                .filter_map(|ts| match &ts.config_type {
                    Some(transport_socket::ConfigType::TypedConfig(any)) => Some(any),
                    _ => None,
                })
                .map(|any| DownstreamTlsContext::decode(any.value.as_slice()).unwrap())
                .flat_map(|ctx| {
                    ctx.common_tls_context
                        .unwrap()
                        .tls_certificate_sds_secret_configs
                })
                .map(|s| s.name)
                .collect();
            assert_eq!(secrets, refs.secrets, "{gateway}/{}", l.name);
        }
    }
}

#[test]
fn translate_errors_say_whose_fault_they_are() {
    use ads::error::{Classify, ErrorSource};
    let bug = TranslateError::Inconsistent {
        gateway: "edge".into(),
        problem: Inconsistency::MissingEndpoints {
            cluster: "users".into(),
        },
    };
    assert_eq!(bug.source_kind(), ErrorSource::Internal);
    assert_eq!(
        std::error::Error::source(&bug).map(ToString::to_string),
        Some("EDS cluster users has no ClusterLoadAssignment".to_string())
    );
    let config = TranslateError::UnknownService {
        route: "r".into(),
        service: "s".into(),
    };
    assert_eq!(config.source_kind(), ErrorSource::Config);
}

#[test]
fn durations_convert_exactly() {
    assert_eq!(
        duration(Duration::from_millis(1500)),
        protobuf::Duration {
            seconds: 1,
            nanos: 500_000_000
        }
    );
    assert_eq!(
        duration(Duration::from_secs(86_400)),
        protobuf::Duration {
            seconds: 86_400,
            nanos: 0
        }
    );
}

#[test]
fn unknown_service_is_an_error() {
    let mut loaded = load(&with_routes(
        USERS,
        "      - { name: r, match: { prefix: / }, service: users, auth: none }\n",
    ));
    loaded.config.services.clear();
    assert_eq!(
        translate(&loaded),
        Err(TranslateError::UnknownService {
            route: "r".into(),
            service: "users".into()
        })
    );
}

/// Rate limits: the filter sits before the router and points at the ratelimit-service cluster;
/// each limited route sends one descriptor per limit (rule id first) plus the request id.
#[test]
fn rate_limit_filter_cluster_and_descriptors() {
    use proto::pb::envoy::config::route::v3::rate_limit::action::ActionSpecifier;
    use proto::pb::envoy::extensions::filters::http::ratelimit::v3::RateLimit as Filter;
    let yaml = r#"version: 1
services:
  users: { endpoints: [127.0.0.1:3001] }
auth:
  jwt:
    main: { issuer: https://i.test, algorithms: [HS256], secret_env: GW_SECRET }
rate_limits:
  service: { address: 127.0.0.1:9102, timeout: 40ms, on_error: deny }
  plans: { free: 10/minute }
  default_plan: free
  anonymous: 5/minute
gateways:
  edge:
    listeners: [{ name: http, port: 8080 }]
    routes:
      - name: health
        match: { path: /health }
        respond: { status: 200 }
        auth: none
      - name: public
        match: { prefix: /public }
        service: users
        auth: none
      - name: orders
        match: { prefix: /orders }
        service: users
        auth: main
        rate_limit: [plan, { limit: 100/30s, per: "header:x-team" }]
      - name: free-for-all
        match: { prefix: /open }
        service: users
        auth: none
        rate_limit: none
"#;
    let r = edge(yaml);
    let rls = r
        .clusters
        .iter()
        .find(|c| c.name == "ratelimit-service")
        .expect("a cluster for ratelimit-service");
    assert!(
        rls.typed_extension_protocol_options
            .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
        "gRPC needs HTTP/2"
    );
    let filters = hcm(&r.listeners[0]).http_filters;
    let names: Vec<&str> = filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.ratelimit",
            "envoy.filters.http.router"
        ]
    );
    use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
    let Some(http_filter::ConfigType::TypedConfig(any)) = &filters[1].config_type else {
        panic!("typed config")
    };
    let f: Filter = unpack(any, proto::type_url::RATELIMIT_FILTER);
    assert_eq!(f.domain, "gateway");
    assert!(f.failure_mode_deny, "on_error: deny");
    assert_eq!(f.timeout, dur(0, 40_000_000));
    assert_eq!(f.status_on_error.map(|s| s.code), Some(503));

    let keys = |route: &str| -> Vec<Vec<String>> {
        action(route_named(&r, route))
            .rate_limits
            .iter()
            .map(|rl| {
                rl.actions
                    .iter()
                    .map(|a| match a.action_specifier.as_ref().unwrap() {
                        ActionSpecifier::GenericKey(g) => {
                            format!("{}={}", g.descriptor_key, g.descriptor_value)
                        }
                        ActionSpecifier::Metadata(m) => {
                            format!(
                                "{}<-metadata{}",
                                m.descriptor_key,
                                if m.skip_if_absent { "?" } else { "" }
                            )
                        }
                        ActionSpecifier::RemoteAddress(_) => "remote_address".into(),
                        ActionSpecifier::RequestHeaders(h) => {
                            format!("{}<-{}", h.descriptor_key, h.header_name)
                        }
                        other => panic!("unexpected action {other:?}"),
                    })
                    .collect()
            })
            .collect()
    };
    let request_id = vec!["request_id<-x-request-id".to_string()];
    assert_eq!(
        keys("public"),
        [
            vec!["rule=public#0".to_string(), "remote_address".into()],
            request_id.clone()
        ]
    );
    assert_eq!(
        keys("orders"),
        [
            vec![
                "rule=orders#0".to_string(),
                "client<-metadata?".into(),
                "provider<-metadata?".into(),
                "plan<-metadata?".into()
            ],
            vec!["rule=orders#1".to_string(), "header<-x-team".into()],
            request_id
        ]
    );
    assert!(keys("free-for-all").is_empty());

    // A gateway whose routes carry no limit gets neither filter nor cluster.
    let plain = edge(&with_routes(
        USERS,
        "      - { name: a, match: { prefix: / }, service: users, auth: none, rate_limit: none }",
    ));
    assert!(plain.clusters.iter().all(|c| c.name != "ratelimit-service"));
    assert_eq!(hcm(&plain.listeners[0]).http_filters.len(), 1);
}

#[test]
fn policy_service_names_are_reserved() {
    for yaml in [
        with_routes(
            "  ratelimit-service: { endpoints: [127.0.0.1:1] }",
            "      - { name: a, match: { prefix: / }, service: ratelimit-service, auth: none }",
        ),
        "version: 1\nservices:\n  users: { endpoints: [127.0.0.1:1] }\ngateways:\n  authz-service:\n    listeners: [{ name: http, port: 8080 }]\n    routes:\n      - { name: a, match: { prefix: / }, service: users, auth: none }\n".to_string(),
    ] {
        let err = config::parse(&yaml, Path::new(FILE)).expect_err("reserved name");
        assert!(err.to_string().contains("reserved"), "{err}");
    }
}

const MAX_BODY: &str = r#"
version: 1
services:
  users: { endpoints: [127.0.0.1:3001] }
auth:
  jwt:
    main: { issuer: i, jwks_url: "https://auth.example.com/jwks", algorithms: [RS256] }
gateways:
  edge:
    max_body: 1MiB
    listeners: [{ name: http, port: 8080 }]
    routes:
      - { name: plain, match: { prefix: /plain }, service: users, auth: main }
      - { name: upload, match: { prefix: /upload }, service: users, auth: main, max_body: 20MiB }
      - { name: bytes, match: { prefix: /bytes }, service: users, auth: none, max_body: 65536 }
      - { name: chat, match: { prefix: /ws }, service: users, auth: main, websocket: true }
"#;

/// The per-route setting of the Lua filter that counts the body after the buffer filter.
fn max_body_lua_per_route(
    rt: &Route,
) -> Option<proto::pb::envoy::extensions::filters::http::lua::v3::lua_per_route::Override> {
    rt.typed_per_filter_config
        .get("envoy.filters.http.lua.max_body")
        .map(|any| {
            unpack::<proto::pb::envoy::extensions::filters::http::lua::v3::LuaPerRoute>(
                any,
                proto::type_url::LUA_PER_ROUTE,
            )
        })
        .and_then(|l| l.r#override)
}

/// The buffer filter's per-route setting of `rt`, if it has one.
fn buffer_per_route(
    rt: &Route,
) -> Option<proto::pb::envoy::extensions::filters::http::buffer::v3::BufferPerRoute> {
    rt.typed_per_filter_config
        .get("envoy.filters.http.buffer")
        .map(|any| unpack(any, proto::type_url::BUFFER_PER_ROUTE))
}

#[test]
fn max_body_is_the_buffer_filter_with_per_route_limits() {
    use proto::pb::envoy::extensions::filters::http::buffer::v3::{
        buffer_per_route::Override, Buffer,
    };
    use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
    let limit = |bytes: u32| {
        Some(Override::Buffer(Buffer {
            max_request_bytes: Some(protobuf::UInt32Value { value: bytes }),
        }))
    };
    /// Each route's expected setting.
    type Routes<'a> = &'a [(&'a str, Option<Override>)];
    let cases: &[(&str, Option<u32>, Routes<'_>)] = &[
        (
            MAX_BODY,
            Some(1 << 20),
            &[
                // The gateway's limit applies: no per-route setting.
                ("plain", None),
                ("upload", limit(20 << 20)),
                ("bytes", limit(65_536)),
                // An upgrade's body never ends: the buffer filter would hold it forever.
                ("chat", Some(Override::Disabled(true))),
            ],
        ),
        (
            // Only routes limit: the filter is in the chain and off where no limit is set.
            &MAX_BODY.replace("    max_body: 1MiB\n", ""),
            Some(u32::MAX),
            &[
                ("plain", Some(Override::Disabled(true))),
                ("upload", limit(20 << 20)),
                ("bytes", limit(65_536)),
                ("chat", Some(Override::Disabled(true))),
            ],
        ),
    ];
    for (yaml, filter_limit, routes) in cases {
        let r = edge(yaml);
        let h = hcm(&r.listeners[0]);
        let names: Vec<&str> = h.http_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "envoy.filters.http.ext_authz",
                "envoy.filters.http.buffer",
                "envoy.filters.http.lua.max_body",
                "envoy.filters.http.router"
            ]
        );
        // The Lua filter counts what the buffer filter let through (its last piece of body),
        // with the same limit, and is off and on per route like it.
        let Some(http_filter::ConfigType::TypedConfig(any)) = &h.http_filters[2].config_type else {
            panic!("the Lua filter has a typed config")
        };
        let lua: proto::pb::envoy::extensions::filters::http::lua::v3::Lua =
            unpack(any, proto::type_url::LUA);
        let source = match lua.default_source_code.and_then(|d| d.specifier) {
            Some(data_source::Specifier::InlineString(s)) => s,
            other => panic!("inline source, got {other:?}"),
        };
        assert!(
            source.contains(&format!("local limit = {}\n", filter_limit.unwrap())),
            "{source}"
        );
        let Some(http_filter::ConfigType::TypedConfig(any)) = &h.http_filters[1].config_type else {
            panic!("the buffer filter has a typed config")
        };
        let buffer: Buffer = unpack(any, proto::type_url::BUFFER);
        assert_eq!(buffer.max_request_bytes.map(|v| v.value), *filter_limit);
        for (name, want) in *routes {
            let rt = route_named(&r, name);
            let got = buffer_per_route(rt).and_then(|b| b.r#override);
            assert_eq!(&got, want, "{name}");
            use proto::pb::envoy::extensions::filters::http::lua::v3::lua_per_route::Override as Lua;
            let lua = max_body_lua_per_route(rt);
            match want {
                None => assert_eq!(lua, None, "{name}"),
                Some(Override::Disabled(_)) => assert_eq!(lua, Some(Lua::Disabled(true)), "{name}"),
                Some(Override::Buffer(b)) => {
                    let bytes = b.max_request_bytes.unwrap().value;
                    let Some(Lua::SourceCode(DataSource {
                        specifier: Some(data_source::Specifier::InlineString(src)),
                        ..
                    })) = lua
                    else {
                        panic!("{name}: an inline script, got {lua:?}")
                    };
                    assert!(
                        src.contains(&format!("local limit = {bytes}\n")),
                        "{name}: {src}"
                    );
                }
            }
        }
        // The 413 the filter sends becomes the spec's JSON body (§3).
        let lrc = h.local_reply_config.expect("local reply config");
        let last = lrc.mappers.last().expect("mappers");
        assert_eq!(last.status_code.as_ref().map(|s| s.value), Some(413));
        let fmt = last.body_format_override.as_ref().expect("a body");
        let Some(substitution_format_string::Format::JsonFormat(s)) = &fmt.format else {
            panic!("a JSON body")
        };
        assert_eq!(struct_strings(s)["error"], "payload_too_large");
    }

    // No limit anywhere: no filter, no 413 mapper, nothing per route.
    let none = MAX_BODY
        .replace("    max_body: 1MiB\n", "")
        .replace(", max_body: 20MiB", "")
        .replace(", max_body: 65536", "");
    let r = edge(&none);
    let h = hcm(&r.listeners[0]);
    assert!(h
        .http_filters
        .iter()
        .all(|f| f.name != "envoy.filters.http.buffer"));
    let lrc = h.local_reply_config.expect("local reply config");
    assert!(lrc
        .mappers
        .iter()
        .all(|m| m.status_code.as_ref().map(|s| s.value) != Some(413)));
    assert!(buffer_per_route(route_named(&r, "upload")).is_none());
}

#[test]
fn route_configurations_with_two_per_filter_configs_encode_canonically() {
    // ext_authz and the buffer filter both configure the `upload` route: a two-entry map, which
    // prost would encode in a random order.
    let first = translate(&load(MAX_BODY)).unwrap()["edge"].routes[0].clone();
    let bytes = crate::route::encode(&first);
    assert_eq!(
        proto::pb::envoy::config::route::v3::RouteConfiguration::decode(bytes.as_slice()).unwrap(),
        first,
        "the hand-encoded bytes decode to the same message"
    );
    for _ in 0..20 {
        let again = translate(&load(MAX_BODY)).unwrap()["edge"].routes[0].clone();
        assert_eq!(crate::route::encode(&again), bytes);
    }
}

#[test]
fn edge_defaults_on_every_listener() {
    let r = edge(TLS_GATEWAY);
    for l in &r.listeners {
        assert_eq!(
            l.per_connection_buffer_limit_bytes.map(|v| v.value),
            Some(32 * 1024)
        );
        let h = hcm(l);
        assert!(h.strip_trailing_host_dot);
        let common = h.common_http_protocol_options.as_ref().unwrap();
        assert_eq!(common.idle_timeout, dur(3600, 0));
        assert_eq!(
            common.headers_with_underscores_action,
            proto::pb::envoy::config::core::v3::http_protocol_options::HeadersWithUnderscoresAction::DropHeader as i32
        );
        let h2 = h.http2_protocol_options.as_ref().unwrap();
        assert_eq!(h2.max_concurrent_streams.map(|v| v.value), Some(100));
        assert_eq!(h2.initial_stream_window_size.map(|v| v.value), Some(65_536));
        assert_eq!(
            h2.initial_connection_window_size.map(|v| v.value),
            Some(1 << 20)
        );
        assert_eq!(h.request_headers_timeout, dur(10, 0));
        assert_eq!(h.request_timeout, dur(300, 0));
        assert_eq!(h.stream_idle_timeout, dur(300, 0));
        // The spoofable headers go before any filter runs.
        let [early] = h.early_header_mutation_extensions.as_slice() else {
            panic!("one early header mutation")
        };
        use proto::pb::envoy::config::common::mutation_rules::v3::header_mutation::Action;
        use proto::pb::envoy::extensions::http::early_header_mutation::header_mutation::v3::HeaderMutation;
        let m: HeaderMutation = unpack(
            early.typed_config.as_ref().unwrap(),
            proto::type_url::EARLY_HEADER_MUTATION,
        );
        let removed: Vec<String> = m
            .mutations
            .into_iter()
            .filter_map(|m| match m.action {
                Some(Action::Remove(h)) => Some(h),
                _ => None,
            })
            .collect();
        // So do the identity headers and the fail-open marker, on every gateway (this one has
        // no `auth`): only authz-service and Envoy may set them.
        for h in [
            "x-real-ip",
            "x-forwarded-host",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "x-client-id",
            "x-client-plan",
            "x-auth-provider",
            "x-envoy-auth-failure-mode-allowed",
        ] {
            assert!(
                removed.iter().any(|r| r == h),
                "{h} is not removed: {removed:?}"
            );
        }
    }
}

#[test]
fn timeouts_and_limits_are_overridable() {
    let yaml = TLS_GATEWAY.replace(
        "    routes:",
        "    timeouts: { request_headers: 2s, request: 0s, stream_idle: 1h, idle: 10m }\n    limits: { connection_buffer: 1MiB, max_concurrent_streams: 7, initial_stream_window: 128KiB, initial_connection_window: 2MiB }\n    routes:",
    );
    let r = edge(&yaml);
    let l = &r.listeners[0];
    assert_eq!(
        l.per_connection_buffer_limit_bytes.map(|v| v.value),
        Some(1 << 20)
    );
    let h = hcm(l);
    assert_eq!(h.request_headers_timeout, dur(2, 0));
    // Zero is Envoy's "off".
    assert_eq!(h.request_timeout, dur(0, 0));
    assert_eq!(h.stream_idle_timeout, dur(3600, 0));
    assert_eq!(
        h.common_http_protocol_options.unwrap().idle_timeout,
        dur(600, 0)
    );
    let h2 = h.http2_protocol_options.unwrap();
    assert_eq!(h2.max_concurrent_streams.map(|v| v.value), Some(7));
    assert_eq!(
        h2.initial_stream_window_size.map(|v| v.value),
        Some(128 * 1024)
    );
    assert_eq!(
        h2.initial_connection_window_size.map(|v| v.value),
        Some(2 << 20)
    );
}

#[test]
fn the_first_route_refuses_ambiguous_paths_without_ext_authz() {
    let r = edge(&with_routes(
        USERS,
        "      - { name: r, match: { prefix: / }, service: users, auth: none }\n",
    ));
    let first = &r.routes[0].virtual_hosts[0].routes[0];
    assert_eq!(first.name, super::route::AMBIGUOUS_PATH_ROUTE);
    let m = first.r#match.as_ref().unwrap();
    assert_eq!(
        m.path_specifier,
        Some(PathSpecifier::SafeRegex(RegexMatcher {
            regex: super::route::AMBIGUOUS_PATH.into(),
            ..Default::default()
        }))
    );
    let Some(route::Action::DirectResponse(d)) = &first.action else {
        panic!("a direct response")
    };
    assert_eq!(d.status, 400);
    // No auth section: no ext_authz filter to disable.
    assert!(first.typed_per_filter_config.is_empty());
    // With auth: ext_authz is off on it.
    let r = edge(&format!(
        "{JWT_GATEWAY}      - {{ name: r, match: {{ prefix: / }}, service: users, auth: j }}\n"
    ));
    let first = &r.routes[0].virtual_hosts[0].routes[0];
    assert_eq!(first.name, super::route::AMBIGUOUS_PATH_ROUTE);
    let per: proto::pb::envoy::extensions::filters::http::ext_authz::v3::ExtAuthzPerRoute = unpack(
        &first.typed_per_filter_config[super::authz::FILTER],
        super::authz::PER_ROUTE_TYPE_URL,
    );
    assert!(matches!(
        per.r#override,
        Some(proto::pb::envoy::extensions::filters::http::ext_authz::v3::ext_authz_per_route::Override::Disabled(true))
    ));
}

/// A gateway with one JWT provider `j`, up to its route list.
const JWT_GATEWAY: &str = "version: 1
services:
  users: { endpoints: [127.0.0.1:3001] }
auth:
  jwt: { j: { issuer: i, algorithms: [HS256], secret_env: S } }
gateways:
  edge:
    listeners: [{ name: http, port: 8080 }]
    routes:
";

#[test]
fn public_routes_covering_protected_ones_warn() {
    // (routes, warnings naming (public, protected))
    let cases: &[(&str, &[(&str, &str)])] = &[
        // A public catch-all before or after a protected prefix.
        ("{ name: pub, match: { prefix: / }, auth: none }\n{ name: adm, match: { prefix: /api/admin }, auth: j }", &[("pub", "adm")]),
        ("{ name: adm, match: { prefix: /api/admin }, auth: j }\n{ name: pub, match: { prefix: /api }, auth: none }", &[("pub", "adm")]),
        ("{ name: adm, match: { path: /API/Admin }, auth: j }\n{ name: pub, match: { prefix: /api }, auth: none }", &[("pub", "adm")]),
        // Disjoint paths, segment boundaries, narrower public conditions: nothing.
        ("{ name: pub, match: { prefix: /public }, auth: none }\n{ name: adm, match: { prefix: /api/admin }, auth: j }", &[]),
        ("{ name: pub, match: { prefix: /api/ad }, auth: none }\n{ name: adm, match: { prefix: /api/admin }, auth: j }", &[]),
        ("{ name: pub, match: { prefix: /, methods: [GET] }, auth: none }\n{ name: adm, match: { prefix: /api/admin }, auth: j }", &[]),
        ("{ name: pub, match: { prefix: /, hosts: [www.example.com] }, auth: none }\n{ name: adm, match: { prefix: /api/admin }, auth: j }", &[]),
        ("{ name: pub, match: { regex: \"/.*\" }, auth: none }\n{ name: adm, match: { prefix: /api/admin }, auth: j }", &[]),
        ("{ name: adm, match: { prefix: /api/admin }, auth: j }\n{ name: adm2, match: { prefix: / }, auth: j }", &[]),
    ];
    for (routes, want) in cases {
        let items: String = routes
            .lines()
            .map(|l| {
                format!(
                    "      - {}\n",
                    l.replace(" }, auth", " }, service: users, auth")
                )
            })
            .collect();
        let yaml = format!("{JWT_GATEWAY}{items}");
        let got = warnings(&load(&yaml).config);
        assert_eq!(got.len(), want.len(), "{routes}: {got:?}");
        for ((public, protected), w) in want.iter().zip(&got) {
            assert!(
                w.contains(&format!("`{public}`")) && w.contains(&format!("`{protected}`")),
                "{routes}: {w}"
            );
        }
    }
}

// ---- https_redirect and client certificates (spec §8) ----

const MTLS_GATEWAY: &str = r#"
version: 1
services:
  users: { endpoints: [127.0.0.1:3001] }
auth:
  mtls:
    partners: { client_id: uri_san }
gateways:
  edge:
    listeners:
      - { name: http, port: 8080, https_redirect: true }
      - { name: https, port: 8443, tls: { cert_file: api.crt, key_file: api.key, client_ca_file: ca.crt, client_cert: optional } }
    routes:
      - { name: r, match: { prefix: / }, service: users, auth: [partners] }
"#;

#[test]
fn https_redirect_listener_has_its_own_route_and_only_the_router() {
    use proto::pb::envoy::config::route::v3::redirect_action::{
        RedirectResponseCode, SchemeRewriteSpecifier,
    };
    use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
        RouteSpecifier, StripPortMode,
    };
    for (tls_port, expected) in [(8443, 8443), (443, 0)] {
        let r = edge(&MTLS_GATEWAY.replace("port: 8443", &format!("port: {tls_port}")));
        let h = hcm(&r.listeners[0]);
        let filters: Vec<&str> = h.http_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            filters,
            ["envoy.filters.http.router"],
            "nothing runs before the redirect"
        );
        assert_eq!(
            h.strip_port_mode,
            Some(StripPortMode::StripAnyHostPort(true))
        );
        let Some(RouteSpecifier::RouteConfig(rc)) = &h.route_specifier else {
            panic!("an inline route config: {:?}", h.route_specifier)
        };
        let routes = &rc.virtual_hosts[0].routes;
        assert_eq!(routes.len(), 2);
        let Some(route::Action::Redirect(redirect)) = &routes[0].action else {
            panic!("{:?}", routes[0])
        };
        assert_eq!(
            redirect.scheme_rewrite_specifier,
            Some(SchemeRewriteSpecifier::HttpsRedirect(true))
        );
        assert_eq!(
            redirect.port_redirect, expected,
            "443 is left out of the Location"
        );
        assert_eq!(
            redirect.response_code,
            RedirectResponseCode::MovedPermanently as i32
        );
        assert!(!redirect.strip_query);
        assert_eq!(
            routes[0].r#match.as_ref().unwrap().headers[0].name,
            ":authority"
        );
        assert_eq!(routes[1].name, super::route::BAD_HOST_ROUTE);
        // The TLS listener keeps the gateway's shared route configuration.
        assert_eq!(r.listener_refs[0].route_config, None);
        assert_eq!(r.listener_refs[1].route_config.as_deref(), Some("edge"));
        assert_eq!(
            listener::rds_name(&r.listeners[1].filter_chains[0].filters[0]).as_deref(),
            Some("edge")
        );
        assert!(hcm(&r.listeners[1]).http_filters.len() > 1);
    }
}

#[test]
fn client_certificates_are_asked_for_and_forwarded() {
    use proto::pb::envoy::extensions::filters::http::ext_authz::v3::ExtAuthz;
    use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::ForwardClientCertDetails;
    for (mode, required) in [("optional", false), ("required", true)] {
        let r =
            edge(&MTLS_GATEWAY.replace("client_cert: optional", &format!("client_cert: {mode}")));
        let l = &r.listeners[1];
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &l.filter_chains[0]
            .transport_socket
            .as_ref()
            .unwrap()
            .config_type
        else {
            panic!()
        };
        let ctx: DownstreamTlsContext = unpack(any, proto::type_url::DOWNSTREAM_TLS_CONTEXT);
        assert_eq!(
            ctx.require_client_certificate.map(|b| b.value),
            Some(required)
        );
        let common = ctx.common_tls_context.unwrap();
        let Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) =
            &common.validation_context_type
        else {
            panic!("the CA over SDS: {:?}", common.validation_context_type)
        };
        assert_eq!(sds.name, "edge/https/client-ca");
        assert_eq!(sds.sds_config, Some(ads()));
        assert_eq!(
            r.listener_refs[1].secrets,
            ["edge/https", "edge/https/client-ca"]
        );
        let names: Vec<&str> = r.secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["edge/https", "edge/https/client-ca"]);
        let Some(secret::Type::ValidationContext(vc)) = &r.secrets[1].r#type else {
            panic!()
        };
        assert_eq!(
            vc.trusted_ca.as_ref().and_then(|d| d.specifier.clone()),
            Some(data_source::Specifier::InlineBytes(
                b"contents of /etc/gw/ca.crt".to_vec()
            ))
        );
        assert_eq!(
            vc.trust_chain_verification, 0,
            "VERIFY_TRUST_CHAIN, never ACCEPT_UNTRUSTED"
        );

        let h = hcm(l);
        assert_eq!(
            h.forward_client_cert_details,
            ForwardClientCertDetails::SanitizeSet as i32
        );
        let set = h.set_current_client_cert_details.unwrap();
        assert!(set.subject.unwrap().value && set.uri && set.dns && !set.cert);
        let authz = h
            .http_filters
            .iter()
            .find(|f| f.name == super::authz::FILTER)
            .expect("ext_authz");
        let Some(proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(any)) = &authz.config_type else {
            panic!()
        };
        let f: ExtAuthz = unpack(any, super::authz::FILTER_TYPE_URL);
        assert!(f.include_peer_certificate);
    }
    // Without client_ca_file: a client's x-forwarded-client-cert is dropped, none is set, no
    // certificate is asked for, and ext_authz gets none.
    let r = edge(TLS_GATEWAY);
    for l in &r.listeners {
        let h = hcm(l);
        assert_eq!(
            h.forward_client_cert_details,
            ForwardClientCertDetails::Sanitize as i32
        );
        assert!(h.set_current_client_cert_details.is_none());
    }
    assert_eq!(r.secrets.len(), 1);
}

const IP_LISTS: &str = r#"
version: 1
services:
  users: { endpoints: [127.0.0.1:3001] }
auth:
  jwt:
    main: { issuer: i, jwks_url: "https://auth.example.com/jwks", algorithms: [RS256] }
gateways:
  edge:
    client_ip: { trusted_hops: 2 }
    cors: { origins: ["*"] }
    listeners: [{ name: http, port: 8080 }]
    routes:
      - name: admin
        match: { prefix: /admin, methods: [GET] }
        service: users
        auth: main
        allow_ips: [10.0.0.0/8, "2001:db8::/32"]
        deny_ips: [10.9.0.0/16]
      - { name: blocked, match: { prefix: /blocked }, service: users, auth: none, deny_ips: [203.0.113.7] }
      - { name: inner, match: { prefix: /inner }, respond: { status: 200 }, auth: none, allow_ips: ["::1"] }
      - { name: open, match: { prefix: / }, service: users, auth: none }
"#;

/// The RBAC per-route policy of `rt`, if it has one.
fn rbac_per_route(
    rt: &Route,
) -> Option<proto::pb::envoy::extensions::filters::http::rbac::v3::RbacPerRoute> {
    rt.typed_per_filter_config
        .get("envoy.filters.http.rbac")
        .map(|any| unpack(any, proto::type_url::RBAC_PER_ROUTE))
}

#[test]
fn ip_lists_are_an_rbac_policy_per_route_before_every_other_filter() {
    use proto::pb::envoy::config::accesslog::v3::access_log_filter::FilterSpecifier;
    use proto::pb::envoy::config::core::v3::CidrRange;
    use proto::pb::envoy::config::rbac::v3::{
        permission, principal, rbac::Action, Permission, Principal,
    };
    use proto::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
    use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;

    let r = edge(IP_LISTS);
    let h = hcm(&r.listeners[0]);
    assert_eq!(h.xff_num_trusted_hops, 2);
    assert_eq!(
        h.use_remote_address,
        Some(protobuf::BoolValue { value: true })
    );
    let names: Vec<&str> = h.http_filters.iter().map(|f| f.name.as_str()).collect();
    // Before CORS (no preflight answer for a refused address) and before ext_authz (never
    // asked about one).
    assert_eq!(
        names,
        [
            "envoy.filters.http.rbac",
            "envoy.filters.http.cors",
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.router"
        ]
    );
    let Some(http_filter::ConfigType::TypedConfig(any)) = &h.http_filters[0].config_type else {
        panic!("the RBAC filter has a typed config")
    };
    let filter: Rbac = unpack(any, proto::type_url::RBAC);
    assert_eq!(filter.rules, None, "no rules: routes without lists pass");

    let ip = |addr: &str, len: u32| Principal {
        identifier: Some(principal::Identifier::RemoteIp(CidrRange {
            address_prefix: addr.into(),
            prefix_len: Some(protobuf::UInt32Value { value: len }),
        })),
    };
    let or = |ids: Vec<Principal>| Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
    };
    let not = |p: Principal| Principal {
        identifier: Some(principal::Identifier::NotId(Box::new(p))),
    };
    // The one ALLOW policy of a route, with its principal.
    let policy_of = |name: &str| {
        let per_route = rbac_per_route(route_named(&r, name)).expect("a per-route policy");
        let rules = per_route.rbac.and_then(|b| b.rules).expect("rules");
        assert_eq!(rules.action, Action::Allow as i32, "{name}");
        assert_eq!(rules.policies.len(), 1, "{name}");
        let policy = rules.policies["ip-lists"].clone();
        assert_eq!(
            policy.permissions,
            [Permission {
                rule: Some(permission::Rule::Any(true))
            }]
        );
        assert_eq!(policy.principals.len(), 1, "{name}");
        policy.principals[0].clone()
    };
    // Allowed and not denied: deny wins. IPv4 networks also match their IPv4-mapped form.
    assert_eq!(
        policy_of("admin"),
        Principal {
            identifier: Some(principal::Identifier::AndIds(principal::Set {
                ids: vec![
                    or(vec![
                        ip("10.0.0.0", 8),
                        ip("::ffff:10.0.0.0", 104),
                        ip("2001:db8::", 32)
                    ]),
                    not(or(vec![ip("10.9.0.0", 16), ip("::ffff:10.9.0.0", 112)])),
                ],
            })),
        }
    );
    assert_eq!(
        policy_of("blocked"),
        not(or(vec![
            ip("203.0.113.7", 32),
            ip("::ffff:203.0.113.7", 128)
        ]))
    );
    // A `respond:` route is refused before Envoy answers for it too.
    assert_eq!(policy_of("inner"), or(vec![ip("::1", 128)]));
    assert_eq!(rbac_per_route(route_named(&r, "open")), None);
    // The preflight twin of `admin` refuses the same addresses.
    let vh = &r.routes[0].virtual_hosts[0];
    let twin = &file_routes(vh)[0];
    assert_eq!(twin.name, "admin");
    assert_eq!(
        rbac_per_route(twin),
        rbac_per_route(route_named(&r, "admin"))
    );

    // The filter's 403 gets the spec's JSON body, selected by its details (RBAC sets no
    // response flag), right after the other detail-selected replies.
    let lrc = h.local_reply_config.expect("local reply config");
    let m = &lrc.mappers[super::listener::cel_replies().len()];
    let Some(FilterSpecifier::ExtensionFilter(ext)) =
        &m.filter.as_ref().expect("a filter").filter_specifier
    else {
        panic!("a CEL filter")
    };
    let Some(proto::pb::envoy::config::accesslog::v3::extension_filter::ConfigType::TypedConfig(
        any,
    )) = &ext.config_type
    else {
        panic!("a typed CEL filter")
    };
    let cel: proto::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter =
        unpack(any, proto::type_url::CEL_ACCESS_LOG_FILTER);
    assert_eq!(
        cel.expression,
        "response.code_details.startsWith('rbac_access_denied')"
    );
    assert_eq!(m.status_code.as_ref().map(|s| s.value), Some(403));
    let fmt = m.body_format_override.as_ref().expect("a body");
    let Some(substitution_format_string::Format::JsonFormat(s)) = &fmt.format else {
        panic!("a JSON body")
    };
    let body = struct_strings(s);
    assert_eq!(body["error"], "forbidden");
    assert_eq!(body["request_id"], "%REQ(X-REQUEST-ID)%");

    // Three per-filter configs on one route still encode canonically.
    let first = r.routes[0].clone();
    for _ in 0..10 {
        let again = translate(&load(IP_LISTS)).unwrap()["edge"].routes[0].clone();
        assert_eq!(crate::route::encode(&again), crate::route::encode(&first));
    }
}

#[test]
fn without_ip_lists_there_is_no_rbac_filter_and_hops_default_to_zero() {
    let r = edge(TLS_GATEWAY);
    let h = hcm(&r.listeners[0]);
    assert_eq!(h.xff_num_trusted_hops, 0, "the TCP peer is the client");
    assert!(h
        .http_filters
        .iter()
        .all(|f| f.name != "envoy.filters.http.rbac"));
    let lrc = h.local_reply_config.expect("local reply config");
    assert_eq!(
        lrc.mappers.len(),
        super::listener::cel_replies().len() + super::listener::LOCAL_REPLIES.len(),
        "no RBAC mapper"
    );
    assert!(r.routes[0].virtual_hosts[0]
        .routes
        .iter()
        .all(|rt| rbac_per_route(rt).is_none()));
}

const COMPRESSION: &str = r#"
version: 1
services:
  users: { endpoints: [127.0.0.1:3001] }
gateways:
  edge:
    compression: { algorithms: [br, gzip, zstd], min_bytes: 2KiB, content_types: [application/json, text/html] }
    listeners: [{ name: http, port: 8080 }]
    routes:
      - { name: api, match: { prefix: /api }, service: users, auth: none }
"#;

#[test]
fn compression_is_one_negotiating_lua_filter_then_a_compressor_per_algorithm() {
    use proto::pb::envoy::extensions::filters::http::compressor::v3::Compressor;
    use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
    let r = edge(COMPRESSION);
    let h = hcm(&r.listeners[0]);
    let names: Vec<&str> = h.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.lua.accept_encoding",
            "envoy.filters.http.compressor.br",
            "envoy.filters.http.compressor.gzip",
            "envoy.filters.http.compressor.zstd",
            "envoy.filters.http.router"
        ]
    );
    let typed = |i: usize| match &h.http_filters[i].config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => any.clone(),
        other => panic!("filter {i} has a typed config, got {other:?}"),
    };
    let lua: proto::pb::envoy::extensions::filters::http::lua::v3::Lua =
        unpack(&typed(0), proto::type_url::LUA);
    let Some(data_source::Specifier::InlineString(source)) =
        lua.default_source_code.and_then(|d| d.specifier)
    else {
        panic!("an inline script")
    };
    // The server's order decides ties, so the script knows it.
    assert!(
        source.contains("local offered = { \"br\", \"gzip\", \"zstd\" }\n"),
        "{source}"
    );
    assert_eq!(
        lua.clear_route_cache,
        Some(protobuf::BoolValue { value: false })
    );
    let libraries = [
        ("brotli", proto::type_url::BROTLI_COMPRESSOR),
        ("gzip", proto::type_url::GZIP_COMPRESSOR),
        ("zstd", proto::type_url::ZSTD_COMPRESSOR),
    ];
    for (i, (library, type_url)) in libraries.into_iter().enumerate() {
        let c: Compressor = unpack(&typed(i + 1), proto::type_url::COMPRESSOR);
        let lib = c.compressor_library.expect("a library");
        assert_eq!(lib.name, library);
        assert_eq!(lib.typed_config.expect("typed").type_url, type_url);
        let resp = c.response_direction_config.expect("response direction");
        // Only the filter nearest the upstream removes Accept-Encoding: the earlier ones must
        // still see it.
        assert_eq!(resp.remove_accept_encoding_header, i == 2, "{library}");
        let common = resp.common_config.expect("common");
        assert_eq!(common.min_content_length.map(|v| v.value), Some(2048));
        assert_eq!(
            common.content_type_matcher,
            ["application/json", "text/html"]
                .map(|t| StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(t.into())),
                    ignore_case: true,
                })
                .to_vec()
        );
        assert!(
            c.request_direction_config.is_none(),
            "requests are never compressed"
        );
    }

    // Without the key: no filter.
    let r = edge(&COMPRESSION.replace(
        "    compression: { algorithms: [br, gzip, zstd], min_bytes: 2KiB, content_types: [application/json, text/html] }\n",
        "",
    ));
    let h = hcm(&r.listeners[0]);
    assert!(h
        .http_filters
        .iter()
        .all(|f| !f.name.contains("compressor") && !f.name.contains("lua")));
}

const WEBSOCKET: &str = r#"
version: 1
services:
  chat: { endpoints: [127.0.0.1:3001] }
gateways:
  edge:
    listeners: [{ name: http, port: 8080 }]
    routes:
      - { name: chat, match: { prefix: /ws }, service: chat, auth: none, websocket: true, timeout: 0s }
      - { name: api, match: { prefix: /api }, service: chat, auth: none }
"#;

#[test]
fn websocket_routes_enable_the_upgrade_the_listener_disables() {
    let action = |r: &GatewayResources, name: &str| match &route_named(r, name).action {
        Some(route::Action::Route(a)) => a.clone(),
        other => panic!("{name} forwards, got {other:?}"),
    };
    let r = edge(WEBSOCKET);
    let h = hcm(&r.listeners[0]);
    assert_eq!(h.upgrade_configs.len(), 1);
    assert_eq!(h.upgrade_configs[0].upgrade_type, "websocket");
    assert_eq!(
        h.upgrade_configs[0].enabled,
        Some(protobuf::BoolValue { value: false })
    );
    let chat = action(&r, "chat");
    assert_eq!(chat.upgrade_configs.len(), 1);
    assert_eq!(chat.upgrade_configs[0].upgrade_type, "websocket");
    assert_eq!(
        chat.upgrade_configs[0].enabled,
        Some(protobuf::BoolValue { value: true })
    );
    // `timeout: 0s` is Envoy's "no timeout"; the idle timeout stays the gateway's.
    assert_eq!(
        chat.timeout,
        Some(protobuf::Duration {
            seconds: 0,
            nanos: 0
        })
    );
    assert_eq!(chat.idle_timeout, None);
    assert!(action(&r, "api").upgrade_configs.is_empty());

    // No websocket route: no upgrade config at all (Envoy refuses every upgrade by itself).
    let r = edge(&WEBSOCKET.replace(", websocket: true", ""));
    assert!(hcm(&r.listeners[0]).upgrade_configs.is_empty());
    assert!(action(&r, "chat").upgrade_configs.is_empty());

    // Either way a refused upgrade gets the spec's 403 JSON, selected by Envoy's details.
    for yaml in [
        WEBSOCKET.to_string(),
        WEBSOCKET.replace(", websocket: true", ""),
    ] {
        let r = edge(&yaml);
        let lrc = hcm(&r.listeners[0]).local_reply_config.expect("mappers");
        let refused = lrc
            .mappers
            .iter()
            .find(|m| m.status_code.as_ref().map(|s| s.value) == Some(403))
            .expect("a 403 mapper");
        let filter = format!("{:?}", refused.filter);
        let any = match refused.filter.as_ref().and_then(|f| f.filter_specifier.as_ref()) {
            Some(proto::pb::envoy::config::accesslog::v3::access_log_filter::FilterSpecifier::ExtensionFilter(e)) => match &e.config_type {
                Some(proto::pb::envoy::config::accesslog::v3::extension_filter::ConfigType::TypedConfig(any)) => any.clone(),
                None => panic!("{filter}"),
            },
            _ => panic!("a CEL filter, got {filter}"),
        };
        let cel: proto::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter =
            unpack(&any, proto::type_url::CEL_ACCESS_LOG_FILTER);
        assert_eq!(cel.expression, "response.code_details == 'upgrade_failed'");
        let fmt = refused.body_format_override.as_ref().expect("a body");
        let Some(substitution_format_string::Format::JsonFormat(s)) = &fmt.format else {
            panic!("a JSON body")
        };
        assert_eq!(struct_strings(s)["error"], "forbidden");
    }
}

const CACHED: &str = "      - { name: plain, match: { prefix: /plain }, service: users, auth: none }\n      - { name: public, match: { prefix: /public, hosts: [api.example.com] }, rewrite: { prefix: /p }, service: users, auth: none, cache: { ttl: 30s } }\n";

#[test]
fn cache_adds_the_filters_the_internal_listener_and_its_routes() {
    use proto::pb::envoy::config::listener::v3::listener::ListenerSpecifier;
    use proto::pb::envoy::extensions::filters::http::cache_v2::v3::CacheV2Config;
    use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;

    let r = edge(&with_routes(USERS, CACHED));
    // The gateway's chain: key, cache (off by default), restore, router, in that order.
    let chain = hcm(&r.listeners[0]).http_filters;
    let names: Vec<&str> = chain.iter().map(|f| f.name.as_str()).collect();
    let at = names
        .iter()
        .position(|n| *n == cache::FILTER)
        .expect("the cache filter");
    assert_eq!(
        &names[at - 1..],
        [
            cache::KEY_FILTER,
            cache::FILTER,
            cache::RESTORE_FILTER,
            "envoy.filters.http.router"
        ]
    );
    assert!(chain[at].disabled, "off unless a route turns it on");
    let Some(http_filter::ConfigType::TypedConfig(any)) = &chain[at].config_type else {
        panic!("typed config");
    };
    let c: CacheV2Config = unpack(
        any,
        "type.googleapis.com/envoy.extensions.filters.http.cache_v2.v3.CacheV2Config",
    );
    assert_eq!(c.override_upstream_cluster, cache::CLUSTER);

    // The cached route turns it on; the plain one does not.
    let public = route_named(&r, "public");
    for f in [cache::FILTER, cache::KEY_FILTER, cache::RESTORE_FILTER] {
        assert!(public.typed_per_filter_config.contains_key(f), "{f}");
    }
    assert!(!route_named(&r, "plain")
        .typed_per_filter_config
        .contains_key(cache::FILTER));

    // The internal listener, its cluster and its routes.
    let inner = r
        .listeners
        .iter()
        .find(|l| l.name == cache::LISTENER)
        .expect("internal listener");
    assert!(matches!(
        inner.listener_specifier,
        Some(ListenerSpecifier::InternalListener(_))
    ));
    let inner_names: Vec<String> = hcm(inner)
        .http_filters
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        inner_names,
        [cache::INNER_FILTER, "envoy.filters.http.router"]
    );
    assert!(r.clusters.iter().any(|c| c.name == cache::CLUSTER));
    let rc = r
        .routes
        .iter()
        .find(|rc| rc.name == cache::ROUTE_CONFIG)
        .expect("internal routes");
    let routes = &rc.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 1, "only the cached route");
    let m = routes[0].r#match.as_ref().expect("match");
    // Selected by its position among the file's routes, never by the Host the key changed.
    assert_eq!(m.headers, vec![header(cache::ROUTE_HEADER, exact("1"))]);
    assert_eq!(action(&routes[0]).prefix_rewrite, "/p");
    assert_eq!(
        routes[0].typed_per_filter_config.keys().collect::<Vec<_>>(),
        [cache::INNER_FILTER]
    );
}

#[test]
fn cache_scripts_key_by_client_only_on_authenticated_routes() {
    let public = cache::key_script(3, false);
    assert!(public.contains(r#"h:replace("x-gateway-cache-route", "3")"#));
    assert!(public.contains(r#"h:remove("x-gateway-cache-host")"#));
    assert!(!public.contains(":authority"));
    let private = cache::key_script(0, true);
    assert!(private.contains("x-client-id") && private.contains("x-auth-provider"));
    assert!(private.contains(r#"h:replace(":authority""#));
    let inner = cache::inner_script(Duration::from_secs(90));
    assert!(inner.contains("local ttl = 90"));
}

#[test]
fn gateways_without_cache_get_none_of_it() {
    let r = edge(&with_routes(
        USERS,
        "      - { name: plain, match: { prefix: /plain }, service: users, auth: none }\n",
    ));
    assert_eq!(r.listeners.len(), 1);
    assert_eq!(r.routes.len(), 1);
    assert!(!r.clusters.iter().any(|c| c.name == cache::CLUSTER));
    assert!(!hcm(&r.listeners[0])
        .http_filters
        .iter()
        .any(|f| f.name == cache::FILTER));
}

const COMPOSE: &str = r#"
version: 1
services:
  users: { endpoints: [127.0.0.1:3001] }
  orders: { endpoints: [127.0.0.1:3002] }
  unused: { endpoints: [127.0.0.1:3003] }
auth:
  jwt:
    main:
      issuer: https://id.example.com
      algorithms: [HS256]
      secret_env: JWT_SECRET
      headers: { x-user-id: sub }
rate_limits:
  plans: { free: 10/minute }
  default_plan: free
gateways:
  edge:
    listeners: [{ name: http, port: 8080 }]
    routes:
      - name: home
        match: { path: /home, methods: [GET] }
        auth: main
        timeout: 2s
        compose:
          user: { service: users, path: /users/me }
          orders: { service: orders, path: "/orders?limit=5" }
      - { name: plain, match: { prefix: /p }, service: users, auth: none }
"#;

#[test]
fn compose_routes_are_answered_by_their_lua_script() {
    use proto::pb::envoy::extensions::filters::http::lua::v3::{lua_per_route, LuaPerRoute};
    let r = edge(COMPOSE);
    // The parts' clusters and the fallback cluster, which has no endpoints.
    let names: Vec<&str> = r.clusters.iter().map(|c| c.name.as_str()).collect();
    for want in [config::COMPOSE_FALLBACK_CLUSTER, "users", "orders"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    assert!(!names.contains(&"unused"));
    let fallback = r
        .clusters
        .iter()
        .find(|c| c.name == config::COMPOSE_FALLBACK_CLUSTER)
        .expect("fallback cluster");
    assert_eq!(
        fallback.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32
        ))
    );
    let cla = fallback.load_assignment.as_ref().expect("inline endpoints");
    assert!(cla.endpoints.is_empty(), "nothing may be forwarded");

    let home = route_named(&r, "home");
    let a = action(home);
    assert_eq!(
        a.cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            config::COMPOSE_FALLBACK_CLUSTER.to_string()
        ))
    );
    // Auth and the plan limit apply like on any route.
    assert!(!a.rate_limits.is_empty());
    assert!(home.typed_per_filter_config.contains_key(authz::FILTER));
    // Every method reaches the script (which answers 405 to all but GET).
    let m = home.r#match.as_ref().expect("match");
    assert!(m.headers.iter().all(|h| h.name != ":method"), "{m:?}");

    let per: LuaPerRoute = unpack(
        &home.typed_per_filter_config[super::compose::FILTER],
        proto::type_url::LUA_PER_ROUTE,
    );
    let Some(lua_per_route::Override::SourceCode(src)) = per.r#override else {
        panic!("an inline script")
    };
    let Some(data_source::Specifier::InlineString(script)) = src.specifier else {
        panic!("inline")
    };
    let line = |prefix: &str| {
        script
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in the script"))
            .to_string()
    };
    assert_eq!(
        line("local parts ="),
        // Lua's decimal escapes take three digits at most: `\0615` is `=` then `5`.
        r#"local parts = { { name = "user", cluster = "users", path = "\047users\047me" }, { name = "orders", cluster = "orders", path = "\047orders\063limit\0615" } }"#
    );
    assert_eq!(
        line("local methods ="),
        r#"local methods = { ["GET"] = true }"#
    );
    assert_eq!(line("local timeout_ms ="), "local timeout_ms = 2000");
    assert_eq!(line("local max_body ="), "local max_body = 1048576");
    let forward = line("local forward =");
    for h in [
        "x-request-id",
        "x-user-id",
        "x-client-id",
        "x-client-plan",
        "x-auth-provider",
    ] {
        assert!(forward.contains(&format!("\"{h}\"")), "{h}: {forward}");
    }
    assert!(!forward.contains("authorization"), "{forward}");

    // The filter: off by default, last before the router.
    let h = hcm(&r.listeners[0]);
    let n = h.http_filters.len();
    assert_eq!(h.http_filters[n - 2].name, super::compose::FILTER);
    assert!(h.http_filters[n - 2].disabled);
    assert_eq!(h.http_filters[n - 1].name, "envoy.filters.http.router");
    // Other routes do not run it.
    assert!(!route_named(&r, "plain")
        .typed_per_filter_config
        .contains_key(super::compose::FILTER));
    // A script failure that reaches the router is a 502 JSON, not an upstream being down.
    let lrc = h.local_reply_config.expect("local reply config");
    assert_eq!(
        lrc.mappers[0].status_code.as_ref().map(|s| s.value),
        Some(502)
    );

    // No compose route: no filter, no fallback cluster, no extra mapper.
    let plain = edge(&with_routes(
        USERS,
        "      - { name: plain, match: { prefix: /p }, service: users, auth: none }\n",
    ));
    let h = hcm(&plain.listeners[0]);
    assert!(h
        .http_filters
        .iter()
        .all(|f| f.name != super::compose::FILTER));
    assert!(plain
        .clusters
        .iter()
        .all(|c| c.name != config::COMPOSE_FALLBACK_CLUSTER));
}

#[test]
fn compose_scripts_fill_every_value_and_keep_names_inert() {
    let loaded = load(COMPOSE);
    let gw = &loaded.config.gateways["edge"];
    let home = &gw.routes[0];
    let config::RouteAction::Compose(parts) = &home.action else {
        panic!("compose")
    };
    let script = super::compose::script(home, parts, &[]);
    for placeholder in [
        "PARTS",
        "METHODS",
        "FORWARD",
        "TIMEOUT_MS",
        "MAX_BODY",
        "ALLOW",
    ] {
        assert!(
            !script.contains(&format!("= {placeholder}\n")),
            "{placeholder} left in the script"
        );
    }
    // A route without `methods` answers GET and HEAD, and says so in `allow`; without a
    // `timeout` it has Envoy's 15 s.
    let mut open = home.clone();
    open.matcher.methods.clear();
    open.timeout = None;
    let script = super::compose::script(&open, parts, &[]);
    assert!(script.contains(r#"local methods = { ["GET"] = true, ["HEAD"] = true }"#));
    assert!(script.contains("local allow = \"GET\\044\\032HEAD\"\n"));
    assert!(script.contains("local timeout_ms = 15000\n"));
}

#[test]
fn affinity_cookies_are_marked_secure_on_tls_listeners_only() {
    let yaml = TLS_GATEWAY
        .replace(
            "users: { endpoints: [127.0.0.1:3001] }",
            "users: { endpoints: [127.0.0.1:3001], lb: maglev }",
        )
        .replace(
            "      - { name: r, match: { prefix: / }, service: users, auth: none }",
            "      - { name: r, match: { prefix: / }, service: users, auth: none, affinity: { cookie: a|b, ttl: 1h } }\n      - { name: s, match: { prefix: /s }, service: users, auth: none, affinity: { cookie: sid, ttl: 0s } }",
        );
    use proto::pb::envoy::extensions::filters::http::lua::v3::Lua;
    use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
    let r = edge(&yaml);
    let lua_of = |l: &Listener| -> Option<String> {
        let h = hcm(l);
        let f = h
            .http_filters
            .iter()
            .find(|f| f.name == "envoy.filters.http.lua.secure_cookie")?;
        let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("typed config")
        };
        let lua: Lua = unpack(any, proto::type_url::LUA);
        match lua.default_source_code?.specifier? {
            data_source::Specifier::InlineString(s) => Some(s),
            _ => None,
        }
    };
    assert_eq!(lua_of(&r.listeners[0]), None, "the plain listener");
    let source = lua_of(&r.listeners[1]).expect("the TLS listener marks cookies Secure");
    // Every cookie name once, escaped so that no name can end the literal.
    assert!(
        source.contains("local names = { [\"a\\124b\"] = true, [\"sid\"] = true }"),
        "{source}"
    );
    // Without cookie affinity the filter is not there.
    assert_eq!(lua_of(&edge(TLS_GATEWAY).listeners[1]), None);
}

#[test]
fn transform_routes_enable_ext_proc_with_their_phases_only() {
    use proto::pb::envoy::extensions::filters::http::ext_proc::v3::{
        ext_proc_per_route, processing_mode::BodySendMode, processing_mode::HeaderSendMode,
        ExtProcPerRoute, ExternalProcessor,
    };
    use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
    let yaml = with_routes(
        USERS,
        "      - { name: out, match: { prefix: /o }, service: users, auth: none, timeout: 2s, transform: { response: { xml: true } } }
      - { name: in, match: { prefix: /i }, service: users, auth: none, transform: { request: { json: { remove: [/debug] } } } }
      - { name: plain, match: { prefix: /p }, service: users, auth: none }
",
    );
    let r = edge(&yaml);
    assert!(r.clusters.iter().any(|c| c.name == transform::CLUSTER));
    let filters = hcm(&r.listeners[0]).http_filters;
    let names: Vec<&str> = filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names[names.len() - 2..],
        [transform::FILTER, "envoy.filters.http.router"]
    );
    let f = &filters[filters.len() - 2];
    assert!(f.disabled, "enabled per route only");
    let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        panic!("typed config")
    };
    let ep: ExternalProcessor = unpack(any, proto::type_url::EXT_PROC);
    assert!(!ep.failure_mode_allow);
    assert_eq!(ep.status_on_error.map(|s| s.code), Some(502));
    // `out`: request headers, response headers and body fit in its 2 s: 666 ms each (below
    // the service's 1 s default).
    assert_eq!(ep.message_timeout, dur(0, 666_666_666));

    let per_route = |name: &str| {
        let rt = route_named(&r, name);
        rt.typed_per_filter_config
            .get(transform::FILTER)
            .map(|any| {
                let p: ExtProcPerRoute = unpack(any, proto::type_url::EXT_PROC_PER_ROUTE);
                let Some(ext_proc_per_route::Override::Overrides(o)) = p.r#override else {
                    panic!("overrides")
                };
                let m = o.processing_mode.unwrap();
                let route = o.grpc_initial_metadata[0].value.clone();
                (
                    route,
                    m.request_body_mode,
                    m.response_header_mode,
                    m.response_body_mode,
                )
            })
    };
    let (b, s, k) = (
        BodySendMode::Buffered as i32,
        HeaderSendMode::Send as i32,
        HeaderSendMode::Skip as i32,
    );
    let none = BodySendMode::None as i32;
    assert_eq!(per_route("out"), Some(("out".to_string(), none, s, b)));
    assert_eq!(per_route("in"), Some(("in".to_string(), b, k, none)));
    assert_eq!(per_route("plain"), None);
    // Responses to transform come whole and uncompressed.
    let out = route_named(&r, "out");
    for h in transform::RESPONSE_ROUTE_REMOVES {
        assert!(out.request_headers_to_remove.iter().any(|x| x == h), "{h}");
    }
    assert!(!route_named(&r, "in")
        .request_headers_to_remove
        .iter()
        .any(|x| x == "range"));
    assert_eq!(
        out.request_body_buffer_limit.as_ref().map(|v| v.value),
        Some(u64::from(proto::transform::MAX_BODY_BYTES))
    );
    // No transform anywhere: no filter, no cluster.
    let r = edge(&with_routes(
        USERS,
        "      - { name: plain, match: { prefix: /p }, service: users, auth: none }\n",
    ));
    assert!(!r.clusters.iter().any(|c| c.name == transform::CLUSTER));
    assert!(!hcm(&r.listeners[0])
        .http_filters
        .iter()
        .any(|f| f.name == transform::FILTER));
}

#[test]
fn the_transform_policy_lists_every_route() {
    let yaml = with_routes(
        USERS,
        "      - { name: z, match: { prefix: /z }, service: users, auth: none }
      - name: a
        match: { prefix: /a }
        service: users
        auth: none
        transform:
          response:
            json: { set: { /n: 9223372036854775809 }, envelope: { field: d, with: { v: \"1.0\" } } }
",
    );
    let p = transform::policy(&load(&yaml).config);
    let names: Vec<&str> = p.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a", "z"]);
    let a = p.routes[0].response.as_ref().unwrap();
    assert_eq!(a.set[0].json, "9223372036854775809");
    assert_eq!(a.envelope.as_ref().unwrap().with[0].json, "\"1.0\"");
    assert!(p.routes[1].request.is_none() && p.routes[1].response.is_none() && !p.routes[1].xml);
}

#[test]
fn tracing_is_envoys_opentelemetry_tracer_exporting_to_its_own_cluster() {
    use proto::pb::envoy::config::core::v3::grpc_service;
    use proto::pb::envoy::config::trace::v3::{tracing::http::ConfigType, OpenTelemetryConfig};

    let yaml = |tracing: &str| {
        format!(
            "version: 1\nservices:\n{USERS}\ngateways:\n  edge:\n    listeners: [{{ name: http, port: 8080 }}]\n{tracing}    routes:\n      - {{ name: r, match: {{ prefix: / }}, service: users, auth: none }}\n"
        )
    };
    let r = edge(&yaml(
        "    tracing: { collector: otel.internal:4317, sample: 12.5% }\n",
    ));
    let t = hcm(&r.listeners[0]).tracing.expect("HCM tracing");
    assert_eq!(t.random_sampling.map(|p| p.value), Some(12.5));
    // Only `sample` and a client's `traceparent` decide: `x-client-trace-id` forces nothing.
    assert_eq!(t.client_sampling.map(|p| p.value), Some(0.0));
    assert_eq!(t.spawn_upstream_span, Some(boolv(true)));
    let p = t.provider.expect("provider");
    assert_eq!(p.name, "envoy.tracers.opentelemetry");
    let Some(ConfigType::TypedConfig(any)) = &p.config_type else {
        panic!("{p:?}")
    };
    let otel: OpenTelemetryConfig = unpack(any, proto::type_url::OPENTELEMETRY_TRACER);
    // The service name defaults to the gateway's.
    assert_eq!(otel.service_name, "edge");
    let grpc = otel.grpc_service.expect("OTLP/gRPC");
    assert!(
        matches!(&grpc.target_specifier, Some(grpc_service::TargetSpecifier::EnvoyGrpc(g)) if g.cluster_name == proto::TRACING_CLUSTER),
        "{grpc:?}"
    );
    let c = r
        .clusters
        .iter()
        .find(|c| c.name == proto::TRACING_CLUSTER)
        .expect("the collector's cluster");
    assert!(
        c.typed_extension_protocol_options
            .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
        "OTLP/gRPC needs HTTP/2: {c:?}"
    );

    // Without `tracing`, neither.
    let r = edge(&yaml(""));
    assert!(hcm(&r.listeners[0]).tracing.is_none());
    assert!(r.clusters.iter().all(|c| c.name != proto::TRACING_CLUSTER));
}

const GRPC_ROUTES: &str = "      - { name: plain, match: { prefix: /plain }, service: users, auth: none }\n      - { name: rest, match: { prefix: /v1/ }, service: greeter, auth: none, grpc: { transcode: { descriptor: demo.pb, services: [demo.Greeter, demo.Admin] } } }\n      - { name: other, match: { prefix: /v2/ }, service: greeter, auth: none, grpc: { transcode: { descriptor: other.pb, services: [other.Api] }, web: true } }\n      - { name: web, match: { prefix: /demo.Greeter/ }, service: greeter, auth: none, grpc: { web: true } }\n";

#[test]
fn grpc_routes_turn_on_the_transcoder_and_grpc_web_the_chain_has_off() {
    use proto::pb::envoy::config::route::v3::FilterConfig;
    use proto::pb::envoy::extensions::filters::http::grpc_json_transcoder::v3::{
        grpc_json_transcoder::DescriptorSet, GrpcJsonTranscoder,
    };
    use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;

    const TRANSCODER_URL: &str =
        "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder";
    const FILTER_CONFIG_URL: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";
    let services =
        format!("{USERS}\n  greeter: {{ endpoints: [127.0.0.1:50051], protocol: grpc }}");
    let r = edge(&with_routes(&services, GRPC_ROUTES));

    // The chain: transcoder then gRPC-Web, both off, just before the router.
    let chain = hcm(&r.listeners[0]).http_filters;
    let names: Vec<&str> = chain.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        &names[names.len() - 3..],
        [
            grpc::TRANSCODER_FILTER,
            grpc::WEB_FILTER,
            "envoy.filters.http.router"
        ]
    );
    let transcoder = &chain[names.len() - 3];
    assert!(
        transcoder.disabled && chain[names.len() - 2].disabled,
        "off unless a route turns them on"
    );
    let Some(http_filter::ConfigType::TypedConfig(any)) = &transcoder.config_type else {
        panic!("typed config");
    };
    let first: GrpcJsonTranscoder = unpack(any, TRANSCODER_URL);
    assert_eq!(
        first.services,
        ["demo.Greeter", "demo.Admin"],
        "the first transcoded route's"
    );

    // Each route carries its own descriptor bytes and services.
    let per_route = |route: &str, filter: &str| -> Option<Any> {
        let cfg = route_named(&r, route).typed_per_filter_config.get(filter)?;
        let fc: FilterConfig = unpack(cfg, FILTER_CONFIG_URL);
        assert!(!fc.disabled);
        Some(fc.config.expect("a config turns the filter on"))
    };
    for (route, file, services) in [
        (
            "rest",
            "/etc/gw/demo.pb",
            vec!["demo.Greeter", "demo.Admin"],
        ),
        ("other", "/etc/gw/other.pb", vec!["other.Api"]),
    ] {
        let t: GrpcJsonTranscoder = unpack(
            &per_route(route, grpc::TRANSCODER_FILTER).expect("transcoder on"),
            TRANSCODER_URL,
        );
        assert_eq!(
            t.descriptor_set,
            Some(DescriptorSet::ProtoDescriptorBin(
                format!("contents of {file}").into_bytes()
            )),
            "{route}"
        );
        assert_eq!(t.services, services);
        assert!(t.convert_grpc_status, "gRPC errors become HTTP statuses");
        assert!(
            t.match_incoming_request_route,
            "the transcoded call keeps its route"
        );
        let v = t.request_validation_options.expect("validation options");
        assert!(v.reject_unknown_method && v.reject_unknown_query_parameters);
    }
    assert!(per_route("other", grpc::WEB_FILTER).is_some());
    assert!(per_route("web", grpc::WEB_FILTER).is_some());
    assert!(per_route("web", grpc::TRANSCODER_FILTER).is_none());
    assert!(per_route("rest", grpc::WEB_FILTER).is_none());
    for f in [grpc::TRANSCODER_FILTER, grpc::WEB_FILTER] {
        assert!(per_route("plain", f).is_none(), "{f}");
    }

    // Without a grpc route the chain has neither filter.
    let plain = edge(&with_routes(
        USERS,
        "      - { name: plain, match: { prefix: / }, service: users, auth: none }\n",
    ));
    let names: Vec<String> = hcm(&plain.listeners[0])
        .http_filters
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert!(!names.iter().any(|n| n.contains("grpc")), "{names:?}");
}

/// The cache answers a hit itself and sends a miss straight to its internal listener, past every
/// filter after it: a transform placed after the cache would never see a cached route's body,
/// and the cache would replay one client's envelope (with its request id) to the next. So the
/// ext_proc filter comes before the cache's filters.
#[test]
fn transforms_run_before_the_cache() {
    let yaml = with_routes(
        USERS,
        "      - { name: t, match: { prefix: /t }, service: users, auth: none, transform: { response: { xml: true } }, cache: { ttl: 30s } }
      - { name: c, match: { prefix: /c }, service: users, auth: none, cache: { ttl: 30s } }
",
    );
    let r = edge(&yaml);
    let names: Vec<String> = hcm(&r.listeners[0])
        .http_filters
        .into_iter()
        .map(|f| f.name)
        .collect();
    let at = |n: &str| {
        names
            .iter()
            .position(|x| x == n)
            .unwrap_or_else(|| panic!("{n} in {names:?}"))
    };
    assert!(at(transform::FILTER) < at(cache::FILTER), "{names:?}");
}
