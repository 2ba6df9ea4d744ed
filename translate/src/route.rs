//! Gateway routes → one Envoy RouteConfiguration per gateway.

use std::collections::{BTreeMap, HashMap};

use proto::pb::envoy::config::core::v3::{
    data_source, header_value_option::HeaderAppendAction, DataSource, HeaderValue,
    HeaderValueOption, RuntimeFractionalPercent,
};
use proto::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    route,
    route_action::{hash_policy, ClusterSpecifier, HashPolicy, RequestMirrorPolicy, UpgradeConfig},
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RetryPolicy, Route,
    RouteAction as EnvoyAction, RouteConfiguration, RouteMatch as EnvoyMatch, VirtualHost,
    WeightedCluster,
};
use proto::pb::envoy::extensions::filters::http::buffer::v3::{
    buffer_per_route::Override as BufferOverride, Buffer, BufferPerRoute,
};
use proto::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use proto::pb::envoy::extensions::filters::http::ext_authz::v3::{
    ext_authz_per_route, ExtAuthzPerRoute,
};
use proto::pb::envoy::extensions::filters::http::lua::v3::{
    lua_per_route::Override as LuaOverride, LuaPerRoute,
};
use proto::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
use proto::pb::envoy::r#type::v3::{fractional_percent, FractionalPercent};
use proto::pb::google::protobuf::BoolValue;

use super::listener::{
    limits_bodies, max_body_script, BUFFER_FILTER, CORS_FILTER, MAX_BODY_FILTER,
};
use super::{duration, regex_escape, u32v, Policies};
use config::{
    Affinity, Cors, Gateway, HeaderChanges, LbPolicy, Mirror, PathMatch, RateLimits, RespondBody,
    Retries, RetryOn, Route as RouteCfg, RouteAction, RouteMatch, Service, StringMatch,
};

/// The one RouteConfiguration of a gateway, named after it: a single catch-all virtual host whose
/// routes keep file order (first match wins). Host restrictions are per-route `:authority`
/// matchers rather than separate virtual hosts, because virtual host selection happens before
/// route order and would break "first match wins" across hosts.
pub(super) fn route_configuration(
    gateway: &str,
    gw: &Gateway,
    services: &BTreeMap<String, Service>,
    policies: &Policies<'_>,
) -> RouteConfiguration {
    // First: no route of the file may see a path whose meaning depends on the upstream.
    let mut routes = vec![ambiguous_path_route(policies)];
    for (index, r) in gw.routes.iter().enumerate() {
        let mut rt = route(r, services, policies);
        if let RouteAction::Compose(parts) = &r.action {
            rt.typed_per_filter_config.insert(
                super::compose::FILTER.to_string(),
                proto::pack(
                    proto::type_url::LUA_PER_ROUTE,
                    &super::compose::per_route(r, parts, &policies.early_remove),
                ),
            );
        }
        if let Some((limit, count)) = body_limit(gw, r) {
            rt.typed_per_filter_config.insert(
                BUFFER_FILTER.to_string(),
                proto::pack(proto::type_url::BUFFER_PER_ROUTE, &limit),
            );
            rt.typed_per_filter_config.insert(
                MAX_BODY_FILTER.to_string(),
                proto::pack(proto::type_url::LUA_PER_ROUTE, &count),
            );
        }
        // Before the preflight twin is made: refused addresses get no preflight answer either.
        if let Some(lists) = super::ip_lists::per_route(r) {
            rt.typed_per_filter_config.insert(
                super::ip_lists::FILTER.to_string(),
                proto::pack(proto::type_url::RBAC_PER_ROUTE, &lists),
            );
        }
        if gw.cors.is_some() {
            routes.extend(preflight_route(r, &rt));
        }
        rt.typed_per_filter_config
            .extend(super::grpc::route_configs(r, &policies.transcoders));
        // After the preflight twin is made: a preflight is never cached.
        if r.cache.is_some() {
            rt.typed_per_filter_config
                .extend(super::cache::route_configs(index, r));
        }
        routes.push(rt);
    }
    let typed_per_filter_config = match &gw.cors {
        // A single-entry map encodes deterministically.
        Some(cors) => HashMap::from([(
            CORS_FILTER.to_string(),
            proto::pack(proto::type_url::CORS_POLICY, &cors_policy(cors)),
        )]),
        None => HashMap::new(),
    };
    RouteConfiguration {
        name: gateway.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: gateway.to_string(),
            domains: vec!["*".to_string()],
            routes,
            typed_per_filter_config,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The routes of the cache's internal listener (`cache::route_configuration`): every cached
/// route of the gateway with its position and `ttl`, as the gateway's chain routes it.
pub(super) fn cached_routes(
    gw: &Gateway,
    services: &BTreeMap<String, Service>,
    policies: &Policies<'_>,
) -> Vec<(usize, std::time::Duration, Route)> {
    gw.routes
        .iter()
        .enumerate()
        .filter_map(|(index, r)| {
            let ttl = r.cache?.ttl;
            Some((index, ttl, route(r, services, policies)))
        })
        .collect()
}

/// The name of the route that refuses ambiguous paths (see [`ambiguous_path_route`]); a local
/// reply mapper gives its 400 the spec's JSON body. `config` accepts any route name, so this one
/// has a form no sensible route name has.
pub(super) const AMBIGUOUS_PATH_ROUTE: &str = "gateway:ambiguous-path";

/// The route of a redirecting listener that refuses a Host it will not put in a Location.
pub(super) const BAD_HOST_ROUTE: &str = "gateway:bad-host";

/// The Hosts a redirect names (the HCM has stripped the port by then, and a trailing dot): a DNS
/// name or an IP address, nothing else. Envoy's codecs refuse spaces, `/` and control characters
/// already; this also keeps out userinfo (`api.example.com@evil.example` would send the client
/// to evil.example while looking like the API), `%`-escapes, and an empty Host.
const REDIRECT_HOST: &str = r"([A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?|\[[0-9A-Fa-f:.]+\])";

/// The inline RouteConfiguration of a listener with `https_redirect`: every request with a plain
/// Host gets 301 to `https://<host>[:<tls_port> unless 443]<path and query>`; any other Host gets
/// 400 JSON (the listener's local reply mapper).
pub(super) fn redirect_configuration(listener: &str, tls_port: u16) -> RouteConfiguration {
    use proto::pb::envoy::config::route::v3::{redirect_action, RedirectAction};
    let host_matcher = HeaderMatcher {
        name: ":authority".to_string(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(MatchPattern::SafeRegex(regex(REDIRECT_HOST.to_string()))),
            ..Default::default()
        })),
        ..Default::default()
    };
    let redirect = Route {
        name: format!("{listener}:https-redirect"),
        r#match: Some(EnvoyMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            headers: vec![host_matcher],
            ..Default::default()
        }),
        action: Some(route::Action::Redirect(RedirectAction {
            scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(
                true,
            )),
            // Envoy writes the port it is given even when it is 443; the default port is left
            // out by giving none (the Host's own port is stripped already).
            port_redirect: if tls_port == 443 {
                0
            } else {
                u32::from(tls_port)
            },
            response_code: redirect_action::RedirectResponseCode::MovedPermanently as i32,
            ..Default::default()
        })),
        ..Default::default()
    };
    let refuse = Route {
        name: BAD_HOST_ROUTE.to_string(),
        r#match: Some(EnvoyMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            ..Default::default()
        }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 400,
            body: None,
            body_format: None,
        })),
        response_headers_to_add: vec![set_header("content-type", "application/json")],
        ..Default::default()
    };
    RouteConfiguration {
        name: format!("{listener}:https-redirect"),
        virtual_hosts: vec![VirtualHost {
            name: listener.to_string(),
            domains: vec!["*".to_string()],
            routes: vec![redirect, refuse],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Paths that frameworks behind the gateway read differently from Envoy's route matching, so a
/// request could match a public route here and reach a protected handler there: `;` (path
/// parameters, `/admin;x=1` is `/admin` to Java servlet containers and others), its encoding,
/// a segment ending in `.` (`/admin.` is `/admin` to Windows servers and some routers; Envoy
/// has decoded `%2e` to `.` by then), `%20` at either end of a segment (trimmed by some), and
/// encoded control characters (`%00`-`%1F`, `%7F`, e.g. a tab). RE2, matched against the whole
/// path after Envoy's normalization and without the query. Matching is case-insensitive
/// everywhere else (`case_sensitive: false`), which covers letter case.
pub(super) const AMBIGUOUS_PATH: &str =
    r".*(;|%3[Bb]|%[01][0-9A-Fa-f]|%7[Ff]|%20(/|$)|/%20|\.(/|$)).*";

/// The first route of every gateway: answers [`AMBIGUOUS_PATH`] with 400 itself. ext_authz is
/// off on it, because a direct response still runs the filter chain (it would answer 401/403
/// and call authz-service for nothing); the CORS filter skips direct responses anyway, and the
/// route has no rate limits.
fn ambiguous_path_route(policies: &Policies<'_>) -> Route {
    let body = r#"{"error":"bad_request","message":"ambiguous request path"}"#;
    let mut rt = Route {
        name: AMBIGUOUS_PATH_ROUTE.to_string(),
        r#match: Some(EnvoyMatch {
            path_specifier: Some(PathSpecifier::SafeRegex(regex(AMBIGUOUS_PATH.to_string()))),
            ..Default::default()
        }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 400,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(body.to_string())),
                ..Default::default()
            }),
            // The listener's local reply mapper replaces this body with one carrying the
            // request id (a body format here would hold a multi-key JSON object, which prost
            // encodes in random order).
            body_format: None,
        })),
        response_headers_to_add: vec![set_header("content-type", "application/json")],
        ..Default::default()
    };
    if policies.auth.is_some() {
        rt.typed_per_filter_config.insert(
            super::authz::FILTER.to_string(),
            proto::pack(
                super::authz::PER_ROUTE_TYPE_URL,
                &ExtAuthzPerRoute {
                    r#override: Some(ext_authz_per_route::Override::Disabled(true)),
                },
            ),
        );
    }
    rt
}

/// The settings on one route of the buffer filter and of the Lua filter that counts the body
/// after it (`max_body`): the route's own limit; nothing where the gateway's limit applies; both
/// off where neither sets one (the filters are in the chain for the routes that do) and on
/// `websocket` routes (the buffer filter would hold an upgrade, whose body never ends, forever).
/// `None` too on a gateway without the filters.
fn body_limit(gw: &Gateway, r: &RouteCfg) -> Option<(BufferPerRoute, LuaPerRoute)> {
    let (buffer, count) = match (r.max_body, gw.max_body) {
        _ if r.websocket && limits_bodies(gw) => {
            (BufferOverride::Disabled(true), LuaOverride::Disabled(true))
        }
        (Some(bytes), _) => (
            BufferOverride::Buffer(Buffer {
                max_request_bytes: Some(u32v(bytes)),
            }),
            LuaOverride::SourceCode(DataSource {
                specifier: Some(data_source::Specifier::InlineString(max_body_script(bytes))),
                ..Default::default()
            }),
        ),
        (None, Some(_)) => return None,
        (None, None) if limits_bodies(gw) => {
            (BufferOverride::Disabled(true), LuaOverride::Disabled(true))
        }
        (None, None) => return None,
    };
    Some((
        BufferPerRoute {
            r#override: Some(buffer),
        },
        LuaPerRoute {
            r#override: Some(count),
            ..Default::default()
        },
    ))
}

// Field numbers for [`encode`], checked by its round-trip test.
/// `RouteConfiguration.virtual_hosts`.
const RC_VIRTUAL_HOSTS: u32 = 2;
/// `VirtualHost.routes`.
const VH_ROUTES: u32 = 3;
/// `VirtualHost.typed_per_filter_config`.
const VH_PER_FILTER: u32 = 15;
/// `Route.typed_per_filter_config`.
const ROUTE_PER_FILTER: u32 = 13;

/// A RouteConfiguration encoded canonically: a route can carry several per-filter configs
/// (ext_authz, and the buffer and Lua filters of `max_body`), and prost would encode that map in random order (see
/// `proto`'s crate docs), so the maps are appended by hand, entries sorted by filter name.
pub(super) fn encode(rc: &RouteConfiguration) -> Vec<u8> {
    let mut base = rc.clone();
    let hosts = std::mem::take(&mut base.virtual_hosts);
    let fields: Vec<(u32, Vec<u8>)> = hosts
        .iter()
        .map(|vh| {
            let mut base = vh.clone();
            let routes = std::mem::take(&mut base.routes);
            let per_filter = std::mem::take(&mut base.typed_per_filter_config);
            let mut fields: Vec<(u32, Vec<u8>)> = routes
                .iter()
                .map(|rt| {
                    let mut base = rt.clone();
                    let per_filter = std::mem::take(&mut base.typed_per_filter_config);
                    let entries = map_entries(ROUTE_PER_FILTER, &per_filter);
                    (VH_ROUTES, proto::encode_with_fields(&base, &entries))
                })
                .collect();
            fields.extend(map_entries(VH_PER_FILTER, &per_filter));
            (RC_VIRTUAL_HOSTS, proto::encode_with_fields(&base, &fields))
        })
        .collect();
    proto::encode_with_fields(&base, &fields)
}

/// A `map<string, Any>` as repeated entries (key = field 1, value = field 2), sorted by key.
fn map_entries(
    tag: u32,
    map: &HashMap<String, proto::pb::google::protobuf::Any>,
) -> Vec<(u32, Vec<u8>)> {
    use prost::Message;
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
        .into_iter()
        .map(|(key, value)| {
            let mut entry = Vec::new();
            proto::append_bytes_field(&mut entry, 1, key.as_bytes());
            proto::append_bytes_field(&mut entry, 2, &value.encode_to_vec());
            (tag, entry)
        })
        .collect()
}

/// One route with its policy settings: ext_authz per route (the route's name, or disabled on
/// `auth: none`), and the removal of credentials once every filter has read them
/// (`authz::route_credentials`). Identity headers are not removed here: Envoy removed the
/// client's copies before routing, and on authenticated routes ext_authz has set the verified
/// ones by the time the router runs.
fn route(r: &RouteCfg, services: &BTreeMap<String, Service>, policies: &Policies<'_>) -> Route {
    let mut rt = route_action(r, services, policies.limits);
    if policies.auth.is_some() {
        // A single-entry map encodes deterministically.
        rt.typed_per_filter_config = [(
            super::authz::FILTER.to_string(),
            proto::pack(
                super::authz::PER_ROUTE_TYPE_URL,
                &super::authz::per_route(r),
            ),
        )]
        .into_iter()
        .collect();
    }
    for h in policies.route_remove.get(&r.name).into_iter().flatten() {
        if !rt.request_headers_to_remove.contains(h) {
            rt.request_headers_to_remove.push(h.clone());
        }
    }
    if let (Some(t), Some(per_route)) = (&r.transform, super::transform::per_route(r)) {
        rt.typed_per_filter_config.insert(
            super::transform::FILTER.to_string(),
            proto::pack(proto::type_url::EXT_PROC_PER_ROUTE, &per_route),
        );
        if t.edits_responses() {
            for h in super::transform::RESPONSE_ROUTE_REMOVES {
                if !rt.request_headers_to_remove.iter().any(|x| x == h) {
                    rt.request_headers_to_remove.push(h.to_string());
                }
            }
        }
        // ext_proc buffers whole bodies; beyond the listener's connection buffer, up to this.
        rt.request_body_buffer_limit = Some(proto::pb::google::protobuf::UInt64Value {
            value: u64::from(proto::transform::MAX_BODY_BYTES),
        });
    }
    rt
}

fn route_action(
    r: &RouteCfg,
    services: &BTreeMap<String, Service>,
    limits: Option<&RateLimits>,
) -> Route {
    let action = match &r.action {
        RouteAction::Respond(resp) => {
            let (body, content_type) = match &resp.body {
                // serde_json writes objects in key order (or file order with `preserve_order`),
                // so the body is deterministic either way.
                RespondBody::Json(v) => (Some(v.to_string()), Some("application/json")),
                RespondBody::Text(t) => (Some(t.clone()), Some("text/plain")),
                RespondBody::Empty => (None, None),
            };
            let mut rt = base_route(r);
            rt.action = Some(route::Action::DirectResponse(DirectResponseAction {
                status: u32::from(resp.status),
                body: body.map(|b| DataSource {
                    specifier: Some(data_source::Specifier::InlineString(b)),
                    ..Default::default()
                }),
                ..Default::default()
            }));
            if let Some(ct) = content_type {
                // Envoy labels a direct response body text/plain; ours says what it is. Added
                // first so a user's own `response_headers.set` of content-type still wins.
                rt.response_headers_to_add
                    .insert(0, set_header("content-type", ct));
            }
            return rt;
        }
        RouteAction::Service(s) => {
            forward_action(r, ClusterSpecifier::Cluster(s.clone()), &[s], services)
        }
        // The Lua filter answers; the route matches every method, so that it can answer the
        // ones it does not take with 405 (only GET and HEAD validate in `methods`).
        RouteAction::Compose(_) => {
            let mut action = super::compose::action();
            if let Some(limits) = limits {
                action.rate_limits = super::ratelimit::envoy_rate_limits(limits, r);
            }
            let mut rt = base_route(r);
            if let Some(m) = rt.r#match.as_mut() {
                m.headers.retain(|h| h.name != ":method");
            }
            rt.action = Some(route::Action::Route(action));
            return rt;
        }
        RouteAction::Weighted(ws) => {
            let names: Vec<&String> = ws.iter().map(|(s, _)| s).collect();
            let spec = ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters: ws
                    .iter()
                    .map(|(name, weight)| ClusterWeight {
                        name: name.clone(),
                        weight: Some(u32v(*weight)),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            });
            forward_action(r, spec, &names, services)
        }
    };
    let mut action = action;
    if let Some(limits) = limits {
        action.rate_limits = super::ratelimit::envoy_rate_limits(limits, r);
    }
    let mut rt = base_route(r);
    rt.action = Some(route::Action::Route(action));
    rt
}

/// Name, match and header changes, common to every action.
fn base_route(r: &RouteCfg) -> Route {
    Route {
        name: r.name.clone(),
        // Spec §10: per-route request counts and latency, under
        // `vhost.<gateway>.route.<name>.` in Envoy's stats.
        stat_prefix: r.name.clone(),
        r#match: Some(route_match(&r.matcher)),
        request_headers_to_add: header_adds(&r.request_headers),
        request_headers_to_remove: r.request_headers.remove.clone(),
        response_headers_to_add: header_adds(&r.response_headers),
        response_headers_to_remove: r.response_headers.remove.clone(),
        ..Default::default()
    }
}

fn forward_action(
    r: &RouteCfg,
    spec: ClusterSpecifier,
    services: &[&String],
    all: &BTreeMap<String, Service>,
) -> EnvoyAction {
    let mut a = EnvoyAction {
        cluster_specifier: Some(spec),
        ..Default::default()
    };
    if let (Some(rw), PathMatch::Prefix(prefix)) = (&r.rewrite, &r.matcher.path) {
        rewrite(&mut a, prefix, &rw.prefix);
    }
    if let Some(t) = r.timeout {
        a.timeout = Some(duration(t));
    }
    // Turns on what the listener turns off (`listener::upgrade_configs`). The route's stream
    // idle timeout stays the gateway's `timeouts.stream_idle`: a socket that sends or receives
    // a frame within it stays open for as long as both sides want, and one silent for longer
    // is closed, so clients cannot hold idle sockets open without bound.
    if r.websocket {
        a.upgrade_configs = vec![UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            enabled: Some(BoolValue { value: true }),
            ..Default::default()
        }];
    }
    if let Some(retries) = &r.retries {
        a.retry_policy = Some(retry_policy(retries));
    }
    // Consistent-hash balancers need a hash key; without one Envoy picks hosts at random. The
    // client's source IP keeps a client on one host (a weighted split hashes within each
    // cluster).
    let hashed = services.iter().any(|s| {
        all.get(s.as_str())
            .is_some_and(|svc| matches!(svc.lb, LbPolicy::RingHash | LbPolicy::Maglev))
    });
    if hashed {
        a.hash_policy = hash_policies(r.affinity.as_ref());
    }
    if let Some(m) = &r.mirror {
        a.request_mirror_policies = vec![mirror_policy(m)];
    }
    a
}

/// The hash keys of a route on consistent-hash services. An `affinity` header is terminal: when
/// the request has it, only its value counts (combined with the client IP, the same value from
/// two clients would land apart); without it, the client IP decides, as on any hashed route.
/// An affinity cookie always yields a value (Envoy makes one up and sets the cookie when the
/// request has none), so it is the only key.
fn hash_policies(affinity: Option<&Affinity>) -> Vec<HashPolicy> {
    let source_ip = HashPolicy {
        policy_specifier: Some(hash_policy::PolicySpecifier::ConnectionProperties(
            hash_policy::ConnectionProperties { source_ip: true },
        )),
        ..Default::default()
    };
    match affinity {
        None => vec![source_ip],
        Some(Affinity::Header(name)) => vec![
            HashPolicy {
                policy_specifier: Some(hash_policy::PolicySpecifier::Header(hash_policy::Header {
                    header_name: name.clone(),
                    regex_rewrite: None,
                })),
                terminal: true,
            },
            source_ip,
        ],
        Some(Affinity::Cookie { name, ttl }) => vec![HashPolicy {
            policy_specifier: Some(hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
                name: name.clone(),
                // With a ttl Envoy sets the cookie when the request has none; zero makes it a
                // session cookie.
                ttl: Some(duration(*ttl)),
                // One cookie for the whole site, whatever path the route matched first.
                path: "/".to_string(),
                attributes: vec![hash_policy::CookieAttribute {
                    name: "SameSite".to_string(),
                    value: "Lax".to_string(),
                }],
            })),
            terminal: true,
        }],
    }
}

/// Envoy's shadowing: the copy is sent without waiting for its answer (which is discarded), to
/// the mirror's cluster with `-shadow` appended to the Host, for a random share of requests.
fn mirror_policy(m: &Mirror) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster: m.service.clone(),
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: m.per_million,
                denominator: fractional_percent::DenominatorType::Million as i32,
            }),
            runtime_key: String::new(),
        }),
        ..Default::default()
    }
}

/// Replaces the matched prefix. Envoy's `prefix_rewrite` splices strings, so rewriting `/api` to
/// `/` would turn `/api/x` into `//x`; when the replacement ends in `/` but the matched prefix
/// does not, a regex swallows the segment separator instead (`/api/x` → `/x`, `/api` → `/`).
/// A plain prefix that ends in `/` keeps its slash in the rewrite (`/api/` → `/v2` gives
/// `/api/x` → `/v2/x`, not `/v2x`).
fn rewrite(a: &mut EnvoyAction, prefix: &str, to: &str) {
    let to = if to.is_empty() { "/" } else { to };
    if to.ends_with('/') && !prefix.ends_with('/') {
        a.regex_rewrite = Some(RegexMatchAndSubstitute {
            // Case-insensitive like the route's match (`case_sensitive: false`), which Envoy's
            // regex rewrite does not follow by itself.
            pattern: Some(regex(format!("(?i)^{}/?", regex_escape(prefix)))),
            substitution: to.to_string(),
        });
    } else if prefix.ends_with('/') && !to.ends_with('/') {
        a.prefix_rewrite = format!("{to}/");
    } else {
        a.prefix_rewrite = to.to_string();
    }
}

fn retry_policy(r: &Retries) -> RetryPolicy {
    let mut conditions: Vec<&str> = Vec::new();
    let mut codes = Vec::new();
    for on in &r.on {
        match on {
            RetryOn::Condition(c) => {
                if !conditions.contains(&c.as_str()) {
                    conditions.push(c);
                }
            }
            RetryOn::Status(s) => codes.push(u32::from(*s)),
        }
    }
    // Listed status codes are only retried under the `retriable-status-codes` condition.
    if !codes.is_empty() && !conditions.contains(&"retriable-status-codes") {
        conditions.push("retriable-status-codes");
    }
    RetryPolicy {
        retry_on: conditions.join(","),
        num_retries: Some(u32v(r.attempts)),
        per_try_timeout: r.per_try_timeout.map(duration),
        retriable_status_codes: codes,
        ..Default::default()
    }
}

fn route_match(m: &RouteMatch) -> EnvoyMatch {
    let path_specifier = match &m.path {
        PathMatch::Exact(p) => PathSpecifier::Path(p.clone()),
        // `path_separated_prefix` is segment-aware (`/api` matches `/api` and `/api/x`, not
        // `/apix`) but rejects a trailing `/`; such a prefix is a plain string prefix anyway.
        PathMatch::Prefix(p) if p.ends_with('/') => PathSpecifier::Prefix(p.clone()),
        PathMatch::Prefix(p) => PathSpecifier::PathSeparatedPrefix(p.clone()),
        // Envoy matches the whole path (without the query string) against the regex.
        PathMatch::Regex(r) => PathSpecifier::SafeRegex(regex(r.clone())),
    };
    let mut headers = Vec::new();
    if let Some(h) = methods_matcher(&m.methods) {
        headers.push(h);
    }
    if let Some(h) = hosts_matcher(&m.hosts) {
        headers.push(h);
    }
    headers.extend(
        m.headers
            .iter()
            .map(|h| header_matcher(&h.name, string_matcher(&h.value))),
    );
    // Letter case: `/API/ADMIN` is `/api/admin` to many upstream frameworks, so it must not
    // slip past an `auth:` route to a public one below it. (`regex:` paths are the user's RE2
    // and ignore this; the reference tells them to write `(?i)`.)
    let case_sensitive = match &m.path {
        PathMatch::Regex(_) => None,
        _ => Some(BoolValue { value: false }),
    };
    EnvoyMatch {
        path_specifier: Some(path_specifier),
        case_sensitive,
        headers,
        query_parameters: m
            .query
            .iter()
            .map(|q| QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(
                    string_matcher(&q.value),
                )),
            })
            .collect(),
        ..Default::default()
    }
}

fn methods_matcher(methods: &[String]) -> Option<HeaderMatcher> {
    let matcher = match methods {
        [] => return None,
        [one] => exact(one),
        many => StringMatcher {
            match_pattern: Some(MatchPattern::SafeRegex(regex(format!(
                "^({})$",
                many.iter()
                    .map(|m| regex_escape(m))
                    .collect::<Vec<_>>()
                    .join("|")
            )))),
            ..Default::default()
        },
    };
    Some(header_matcher(":method", matcher))
}

/// Matches `:authority` against the route's hosts: case-insensitive, any `:port` ignored (an
/// empty one too: `admin.example.com:` is the same host), and `*.example.com` accepting any
/// non-empty subdomain (as Envoy's own virtual host wildcards do). A trailing dot is already
/// gone (`strip_trailing_host_dot` on the listener).
fn hosts_matcher(hosts: &[String]) -> Option<HeaderMatcher> {
    if hosts.is_empty() || hosts.iter().any(|h| h == "*") {
        return None;
    }
    let alternatives: Vec<String> = hosts
        .iter()
        .map(|h| match h.strip_prefix("*.") {
            Some(rest) => format!(r"[^:/]+\.{}", regex_escape(rest)),
            None => regex_escape(h),
        })
        .collect();
    let re = format!("(?i)^({})(:[0-9]*)?$", alternatives.join("|"));
    Some(header_matcher(
        ":authority",
        StringMatcher {
            match_pattern: Some(MatchPattern::SafeRegex(regex(re))),
            ..Default::default()
        },
    ))
}

/// For a route limited to some methods, a CORS preflight (`OPTIONS` with
/// `Access-Control-Request-Method` and an `Origin`) would match no route, and Envoy's CORS filter
/// only answers preflights for a matched forwarding route. This twin of `rt` (the route as
/// translated), placed just before it, matches exactly those preflights. The CORS filter answers
/// every one of them itself (`forward_not_matching_preflights: false`), so none reaches the
/// upstream. It requires a non-empty `Origin`, without which the CORS filter lets the request
/// through, and it keeps the route's policies (ext_authz, rate limits, header removal, body
/// limit), so even a request the CORS filter passed would be judged like one for the route.
///
/// `respond:` routes get no twin: Envoy's CORS filter ignores direct-response routes entirely.
fn preflight_route(r: &RouteCfg, rt: &Route) -> Option<Route> {
    if matches!(r.action, RouteAction::Respond(_) | RouteAction::Compose(_))
        || r.matcher.methods.is_empty()
        || r.matcher.methods.iter().any(|m| m == "OPTIONS")
    {
        return None;
    }
    let mut m = r.matcher.clone();
    m.methods = vec!["OPTIONS".to_string()];
    let mut em = route_match(&m);
    em.headers.push(HeaderMatcher {
        name: "access-control-request-method".to_string(),
        header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
        ..Default::default()
    });
    em.headers.push(header_matcher(
        "origin",
        StringMatcher {
            match_pattern: Some(MatchPattern::SafeRegex(regex(".+".to_string()))),
            ..Default::default()
        },
    ));
    Some(Route {
        r#match: Some(em),
        ..rt.clone()
    })
}

fn cors_policy(c: &Cors) -> CorsPolicy {
    CorsPolicy {
        allow_origin_string_match: c
            .origins
            .iter()
            .map(|o| {
                if o == "*" {
                    // Any origin (Envoy echoes the request's Origin back).
                    StringMatcher {
                        match_pattern: Some(MatchPattern::SafeRegex(regex(".*".into()))),
                        ..Default::default()
                    }
                } else {
                    exact(o)
                }
            })
            .collect(),
        allow_methods: c.methods.join(","),
        allow_headers: c.headers.join(","),
        max_age: c
            .max_age
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        // Envoy answers a preflight from a disallowed origin itself (without CORS headers, which
        // browsers read as a refusal) instead of passing it to an upstream that never asked for
        // OPTIONS requests.
        forward_not_matching_preflights: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

fn header_adds(h: &HeaderChanges) -> Vec<HeaderValueOption> {
    h.set.iter().map(|(k, v)| set_header(k, v)).collect()
}

fn set_header(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn header_matcher(name: &str, m: StringMatcher) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(m)),
        ..Default::default()
    }
}

fn string_matcher(m: &StringMatch) -> StringMatcher {
    match m {
        StringMatch::Exact(v) => exact(v),
        StringMatch::Regex(r) => StringMatcher {
            match_pattern: Some(MatchPattern::SafeRegex(regex(r.clone()))),
            ..Default::default()
        },
    }
}

pub(super) fn exact(v: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(v.to_string())),
        ..Default::default()
    }
}

/// An RE2 matcher with Envoy's default engine (the `google_re2` field is deprecated).
fn regex(regex: String) -> RegexMatcher {
    RegexMatcher {
        regex,
        ..Default::default()
    }
}

/// Warnings about a config that is valid but risky: a public (`auth: none`) route whose match
/// covers a protected route's paths. Listed before it, the public route takes those requests
/// (the protected one never sees them); listed after it, it takes every request the protected
/// route's match misses, so any spelling of the path an upstream reads as the protected one but
/// Envoy does not would be served unauthenticated. Regex routes are not analysed.
pub fn warnings(cfg: &config::Config) -> Vec<String> {
    let mut out = Vec::new();
    for (gw_name, gw) in &cfg.gateways {
        for (i, protected) in gw.routes.iter().enumerate() {
            if matches!(protected.auth, config::RouteAuth::None) {
                continue;
            }
            for (j, public) in gw.routes.iter().enumerate() {
                if !matches!(public.auth, config::RouteAuth::None)
                    || !covers(&public.matcher, &protected.matcher)
                {
                    continue;
                }
                let how = if j < i {
                    "is listed before it and takes its requests"
                } else {
                    "takes every request its match misses"
                };
                out.push(format!(
                    "gateways.{gw_name}: public route `{}` (auth: none) covers the paths of protected route `{}` and {how}; give the public route a narrower match, or the same auth",
                    public.name, protected.name
                ));
            }
        }
    }
    out
}

/// True when every request `inner` matches (ignoring letter case) also satisfies `outer`, as far
/// as paths, methods and hosts tell; a regex or a header or query condition on `outer` is never
/// taken to cover anything.
fn covers(outer: &RouteMatch, inner: &RouteMatch) -> bool {
    if !outer.headers.is_empty() || !outer.query.is_empty() {
        return false;
    }
    let subset = |o: &[String], i: &[String]| {
        o.is_empty()
            || (!i.is_empty()
                && i.iter()
                    .all(|x| o.iter().any(|y| y.eq_ignore_ascii_case(x))))
    };
    if !subset(&outer.methods, &inner.methods) || !subset(&outer.hosts, &inner.hosts) {
        return false;
    }
    let inner_path = match &inner.path {
        PathMatch::Exact(p) | PathMatch::Prefix(p) => p.to_ascii_lowercase(),
        PathMatch::Regex(_) => return false,
    };
    match &outer.path {
        PathMatch::Prefix(p) => {
            let p = p.to_ascii_lowercase();
            if p.ends_with('/') {
                inner_path.starts_with(&p)
            } else {
                inner_path == p || inner_path.starts_with(&format!("{p}/"))
            }
        }
        PathMatch::Exact(p) => {
            matches!(&inner.path, PathMatch::Exact(_)) && inner_path == p.to_ascii_lowercase()
        }
        PathMatch::Regex(_) => false,
    }
}
