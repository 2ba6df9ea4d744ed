//! `compose` routes: Envoy's Lua filter answers them with one JSON object built from calls to
//! the parts' clusters (`compose.lua`), after ext_authz and the rate-limit filter.

use std::time::Duration;

use proto::pb::envoy::config::cluster::v3::{cluster, Cluster};
use proto::pb::envoy::config::core::v3::{data_source, DataSource};
use proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use proto::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use proto::pb::envoy::config::route::v3::RouteAction as EnvoyAction;
use proto::pb::envoy::extensions::filters::http::lua::v3::{
    lua_per_route::Override as LuaOverride, Lua, LuaPerRoute,
};
use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};

use super::listener::lua_string;
use super::{boolv, duration};
use config::{ComposePart, Gateway, Route, RouteAction, COMPOSE_FALLBACK_CLUSTER};

/// The Lua filter of `compose` routes, off by default and turned on by each compose route's
/// script.
pub(super) const FILTER: &str = "envoy.filters.http.lua.compose";

/// The script; see its header for the values filled in.
const SCRIPT: &str = include_str!("compose.lua");

/// Envoy's own route timeout, which a compose route without `timeout` keeps.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest part body embedded (1 MiB): the answer holds every part at once, so this bounds
/// what one request makes Envoy keep. A larger part counts as failed (502).
pub(super) const MAX_PART_BODY: u32 = 1 << 20;

/// What the listener's local reply mapper makes of a request that reached the router of a
/// compose route (its script failed): Envoy's "no healthy upstream" from
/// [`COMPOSE_FALLBACK_CLUSTER`] becomes this, 502 JSON.
pub(super) const FALLBACK_ERROR: (&str, &str) = ("bad_gateway", "composition failed");

/// The CEL condition selecting those replies (with the `UH` flag).
pub(super) fn fallback_expression() -> String {
    format!("xds.cluster_name == '{COMPOSE_FALLBACK_CLUSTER}'")
}

/// [`COMPOSE_FALLBACK_CLUSTER`]: static and without endpoints, so nothing is ever forwarded
/// from a compose route. It is a real cluster (not a missing one) because Envoy's rate-limit
/// filter skips requests whose route has no cluster.
pub(super) fn fallback_cluster() -> Cluster {
    Cluster {
        name: COMPOSE_FALLBACK_CLUSTER.to_string(),
        connect_timeout: Some(duration(Duration::from_secs(1))),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: COMPOSE_FALLBACK_CLUSTER.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// True when some route of the gateway composes.
pub(super) fn used(gw: &Gateway) -> bool {
    gw.routes
        .iter()
        .any(|r| matches!(r.action, RouteAction::Compose(_)))
}

/// The filter in the HCM chain: disabled, so it runs only where a route gives it a script.
pub(super) fn http_filter() -> HttpFilter {
    let lua = Lua {
        default_source_code: Some(inline("function envoy_on_request(handle) end".to_string())),
        clear_route_cache: Some(boolv(false)),
        ..Default::default()
    };
    HttpFilter {
        name: FILTER.to_string(),
        disabled: true,
        config_type: Some(http_filter::ConfigType::TypedConfig(proto::pack(
            proto::type_url::LUA,
            &lua,
        ))),
        ..Default::default()
    }
}

/// The route action of a compose route: [`fallback_cluster`]. Being a forwarding action, it
/// gets the rate limits and CORS like any route.
pub(super) fn action() -> EnvoyAction {
    EnvoyAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(
            COMPOSE_FALLBACK_CLUSTER.to_string(),
        )),
        ..Default::default()
    }
}

/// The route's script: its parts, the methods it answers, the headers passed to every part
/// (`forward`: the identity headers, which only ext_authz and Envoy set, and `x-request-id`).
pub(super) fn per_route(r: &Route, parts: &[ComposePart], forward: &[String]) -> LuaPerRoute {
    LuaPerRoute {
        r#override: Some(LuaOverride::SourceCode(inline(script(r, parts, forward)))),
        ..Default::default()
    }
}

pub(super) fn script(r: &Route, parts: &[ComposePart], forward: &[String]) -> String {
    let parts: Vec<String> = parts
        .iter()
        .map(|p| {
            format!(
                "{{ name = {}, cluster = {}, path = {} }}",
                lua_string(&p.name),
                lua_string(&p.service),
                lua_string(&p.path)
            )
        })
        .collect();
    // The route's `methods` (only GET and HEAD validate), both when it lists none.
    let methods: Vec<String> = if r.matcher.methods.is_empty() {
        vec!["GET".to_string(), "HEAD".to_string()]
    } else {
        r.matcher.methods.clone()
    };
    let mut headers: Vec<String> = forward.to_vec();
    headers.push("x-request-id".to_string());
    headers.sort();
    headers.dedup();
    let timeout = r.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let fill = [
        ("PARTS", format!("{{ {} }}", parts.join(", "))),
        (
            "METHODS",
            format!(
                "{{ {} }}",
                methods
                    .iter()
                    .map(|m| format!("[{}] = true", lua_string(m)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            "FORWARD",
            format!(
                "{{ {} }}",
                headers
                    .iter()
                    .map(|h| lua_string(h))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        ("TIMEOUT_MS", timeout.as_millis().to_string()),
        ("MAX_BODY", MAX_PART_BODY.to_string()),
        ("ALLOW", lua_string(&methods.join(", "))),
    ];
    let mut out = SCRIPT.to_string();
    for (name, value) in fill {
        let placeholder = format!("= {name}\n");
        debug_assert!(out.contains(&placeholder), "compose.lua lost `{name}`");
        out = out.replacen(&placeholder, &format!("= {value}\n"), 1);
    }
    out
}

fn inline(source: String) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(source)),
        ..Default::default()
    }
}
