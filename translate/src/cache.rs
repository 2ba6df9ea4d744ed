//! `cache` on routes: Envoy's cache filter (`envoy.filters.http.cache_v2`, in-memory store) and
//! the internal listener the requests that fill it go through.
//!
//! Envoy's cache filter does not hand a request it may cache to the rest of the filter chain:
//! it sends it itself, straight to a cluster, so the router's work for the route (prefix
//! rewrite, header changes, credential removal, timeout, retries) would be skipped. The cache
//! therefore sends those requests to `override_upstream_cluster`, an internal listener of the
//! same Envoy ([`LISTENER`]) whose router runs the route again from a second
//! RouteConfiguration ([`ROUTE_CONFIG`]): one route per cached route, selected by the
//! [`ROUTE_HEADER`] the gateway set, doing what the route does.
//!
//! The cache key is the request's method, host, path and query. Envoy's cache does not store
//! answers with `Vary`, so on authenticated routes a Lua filter just before the cache folds the
//! verified identity (`x-auth-provider`, `x-client-id`, which only authz-service sets: every
//! listener removes a client's copies) into the Host the cache sees, hex-encoded, and keeps the
//! real Host in [`HOST_HEADER`]; a Lua filter after the cache (for requests the cache does not
//! take) and the internal listener's (for those it does) put the Host back and drop both
//! headers before any upstream sees them. The internal listener's Lua filter also caps the
//! answer's freshness at the route's `ttl` (an upstream's shorter `max-age` wins).

use std::time::Duration;

use proto::pb::envoy::config::cluster::v3::{cluster, Cluster};
use proto::pb::envoy::config::core::v3::{
    address, data_source, envoy_internal_address, Address, DataSource, EnvoyInternalAddress,
};
use proto::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use proto::pb::envoy::config::listener::v3::{
    filter,
    listener::{InternalListenerConfig, ListenerSpecifier},
    Filter, FilterChain, Listener,
};
use proto::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, FilterConfig, HeaderMatcher, Route, RouteConfiguration,
    VirtualHost,
};
use proto::pb::envoy::extensions::filters::http::cache_v2::v3::CacheV2Config;
use proto::pb::envoy::extensions::filters::http::lua::v3::{
    lua_per_route::Override as LuaOverride, Lua, LuaPerRoute,
};
use proto::pb::envoy::extensions::filters::http::router::v3::Router;
use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{CodecType, RouteSpecifier},
    http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use proto::pb::envoy::extensions::http::cache_v2::simple_http_cache::v3::SimpleHttpCacheV2Config;
use proto::pb::google::protobuf::Any;

use super::{ads, boolv};
use config::{Gateway, Route as RouteCfg, RouteAuth};

/// The cache filter; in every gateway chain with a cached route, off but on those routes.
pub(super) const FILTER: &str = "envoy.filters.http.cache_v2";
/// Before the cache: names the route for the internal listener and, on authenticated routes,
/// puts the verified client into the key ([`key_script`]).
pub(super) const KEY_FILTER: &str = "envoy.filters.http.lua.cache_key";
/// After the cache, for the requests it does not take: undoes [`KEY_FILTER`]'s Host.
pub(super) const RESTORE_FILTER: &str = "envoy.filters.http.lua.cache_restore";
/// The internal listener's Lua filter: undoes the key's Host and caps freshness at `ttl`.
pub(super) const INNER_FILTER: &str = "envoy.filters.http.lua.cache_ttl";
/// The internal listener, its cluster and its RouteConfiguration (one per gateway's resource
/// set; a form no sensible listener, service or gateway name has).
pub const LISTENER: &str = "gateway:cache";
pub const CLUSTER: &str = LISTENER;
pub const ROUTE_CONFIG: &str = LISTENER;
/// The position of the route in its gateway's `routes`, set before the cache and matched by the
/// internal listener's routes. Set (or replaced) by the gateway on every request of a cached
/// route, so a client's copy selects nothing.
pub const ROUTE_HEADER: &str = "x-gateway-cache-route";
/// The request's real Host while the cache key's Host carries the client.
pub const HOST_HEADER: &str = "x-gateway-cache-host";

const CACHE_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.cache_v2.v3.CacheV2Config";
const SIMPLE_CACHE_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.http.cache_v2.simple_http_cache.v3.SimpleHttpCacheV2Config";
const FILTER_CONFIG_TYPE_URL: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

/// True when some route of the gateway is cached.
pub(super) fn used(gw: &Gateway) -> bool {
    gw.routes.iter().any(|r| r.cache.is_some())
}

/// The filters of a gateway's chain, last before the router: key, cache (off unless a route
/// turns it on), restore.
pub(super) fn http_filters() -> Vec<HttpFilter> {
    let cache = CacheV2Config {
        typed_config: Some(proto::pack(
            SIMPLE_CACHE_TYPE_URL,
            &SimpleHttpCacheV2Config {},
        )),
        override_upstream_cluster: CLUSTER.to_string(),
        ..Default::default()
    };
    vec![
        lua_filter(KEY_FILTER),
        HttpFilter {
            name: FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(proto::pack(
                CACHE_TYPE_URL,
                &cache,
            ))),
            disabled: true,
            ..Default::default()
        },
        lua_filter(RESTORE_FILTER),
    ]
}

/// A Lua filter with no code of its own: it runs only the scripts routes give it, and never
/// re-selects the route.
fn lua_filter(name: &str) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(proto::pack(
            proto::type_url::LUA,
            &Lua {
                clear_route_cache: Some(boolv(false)),
                ..Default::default()
            },
        ))),
        ..Default::default()
    }
}

/// The per-filter configs of cached route number `index` of its gateway's routes.
pub(super) fn route_configs(index: usize, r: &RouteCfg) -> Vec<(String, Any)> {
    let authenticated = matches!(r.auth, RouteAuth::Providers(_));
    vec![
        (
            FILTER.to_string(),
            // An empty config turns on the filter the chain has off; Envoy refuses a
            // FilterConfig without one.
            proto::pack(
                FILTER_CONFIG_TYPE_URL,
                &FilterConfig {
                    config: Some(Any::default()),
                    ..Default::default()
                },
            ),
        ),
        (
            KEY_FILTER.to_string(),
            lua_per_route(key_script(index, authenticated)),
        ),
        (
            RESTORE_FILTER.to_string(),
            lua_per_route(format!("{RESTORE_FN}{RESTORE}")),
        ),
    ]
}

fn lua_per_route(source: String) -> Any {
    proto::pack(
        proto::type_url::LUA_PER_ROUTE,
        &LuaPerRoute {
            r#override: Some(LuaOverride::SourceCode(DataSource {
                specifier: Some(data_source::Specifier::InlineString(source)),
                ..Default::default()
            })),
            ..Default::default()
        },
    )
}

/// Undoes [`key_script`]: the real Host back, both helper headers gone.
const RESTORE_FN: &str = r#"
local function restore(h)
  local host = h:get("x-gateway-cache-host")
  if host ~= nil then
    h:replace(":authority", host)
  end
  h:remove("x-gateway-cache-host")
  h:remove("x-gateway-cache-route")
end
"#;

const RESTORE: &str = r#"
function envoy_on_request(handle)
  restore(handle:headers())
end
"#;

/// Names the route; on authenticated routes also moves the verified client into the Host the
/// cache keys on (`p<hex provider>.c<hex client id>.<host>`; hex, so any id makes a valid Host
/// and no two ids make the same one).
pub(super) fn key_script(index: usize, authenticated: bool) -> String {
    let mut s = format!(
        r#"
local function hex(s)
  return (string.gsub(s or "", ".", function(c) return string.format("%02x", string.byte(c)) end))
end
function envoy_on_request(handle)
  local h = handle:headers()
  h:remove("x-gateway-cache-host")
  h:replace("x-gateway-cache-route", "{index}")
"#
    );
    if authenticated {
        s.push_str(
            r#"  local host = h:get(":authority") or ""
  h:replace("x-gateway-cache-host", host)
  h:replace(":authority", "p" .. hex(h:get("x-auth-provider")) .. ".c" .. hex(h:get("x-client-id")) .. "." .. host)
"#,
        );
    }
    s.push_str("end\n");
    s
}

/// The internal listener's script for a route with `ttl`: restores the request's Host, and caps
/// a `200` answer's `max-age` (and `s-maxage`) at `ttl`, an upstream's shorter one winning; an
/// answer with `no-store`, `private` or `no-cache` keeps its `Cache-Control`, and any other
/// status that claims freshness gets `no-store` (only `200` answers are kept).
pub(super) fn inner_script(ttl: Duration) -> String {
    format!(
        "{RESTORE_FN}{RESTORE}{}",
        INNER_RESPONSE.replacen("TTL", &ttl.as_secs().max(1).to_string(), 1)
    )
}

const INNER_RESPONSE: &str = r#"
function envoy_on_response(handle)
  local h = handle:headers()
  local cc = h:get("cache-control") or ""
  local lower = string.lower(cc)
  if string.find(lower, "no-store", 1, true) or string.find(lower, "private", 1, true)
      or string.find(lower, "no-cache", 1, true) then
    return
  end
  local status = h:get(":status")
  local ttl = TTL
  local kept = {}
  local fresh = h:get("expires") ~= nil
  for part in string.gmatch(cc, "[^,]+") do
    local d = string.match(part, "^%s*(.-)%s*$")
    local name, value = string.match(d, "^([%w-]+)%s*=%s*\"?([^\"]*)\"?$")
    name = name and string.lower(name)
    if name == "max-age" or name == "s-maxage" then
      fresh = true
      local n = tonumber(value)
      if n ~= nil and n < ttl then
        ttl = math.max(0, math.floor(n))
      end
    elseif d ~= "" then
      kept[#kept + 1] = d
    end
  end
  if status ~= "200" then
    if fresh then
      h:replace("cache-control", cc == "" and "no-store" or cc .. ", no-store")
    end
    return
  end
  kept[#kept + 1] = "max-age=" .. ttl
  h:replace("cache-control", table.concat(kept, ", "))
end
"#;

/// The internal listener: an HTTP connection manager on the internal RouteConfiguration with
/// only the [`INNER_FILTER`] and the router. It takes no client's request (only this Envoy's
/// cache connects to it), so it removes nothing: the identity headers are the ones authz-service
/// set, and the request id is kept.
pub(super) fn listener() -> Listener {
    let hcm = HttpConnectionManager {
        codec_type: CodecType::Auto as i32,
        stat_prefix: "gateway_cache".to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: ROUTE_CONFIG.to_string(),
        })),
        http_filters: vec![
            lua_filter(INNER_FILTER),
            HttpFilter {
                name: "envoy.filters.http.router".to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(proto::pack(
                    proto::type_url::ROUTER,
                    &Router::default(),
                ))),
                ..Default::default()
            },
        ],
        preserve_external_request_id: true,
        ..Default::default()
    };
    Listener {
        name: LISTENER.to_string(),
        listener_specifier: Some(ListenerSpecifier::InternalListener(
            InternalListenerConfig::default(),
        )),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: super::listener::HCM_FILTER.to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(proto::pack(
                    proto::type_url::HTTP_CONNECTION_MANAGER,
                    &hcm,
                ))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The cluster the cache sends its requests to: the internal listener.
pub(super) fn cluster() -> Cluster {
    Cluster {
        name: CLUSTER.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: CLUSTER.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(Address {
                            address: Some(address::Address::EnvoyInternalAddress(
                                EnvoyInternalAddress {
                                    address_name_specifier: Some(
                                        envoy_internal_address::AddressNameSpecifier::ServerListenerName(
                                            LISTENER.to_string(),
                                        ),
                                    ),
                                    ..Default::default()
                                },
                            )),
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The internal RouteConfiguration: for every cached route (`(index, the gateway's Envoy
/// route)`), a copy that matches only with [`ROUTE_HEADER`] naming it and ignores the Host
/// (which carries the client there), with the [`INNER_FILTER`] script as its only per-filter
/// config.
pub(super) fn route_configuration(cached: Vec<(usize, Duration, Route)>) -> RouteConfiguration {
    let routes = cached
        .into_iter()
        .map(|(index, ttl, mut rt)| {
            if let Some(m) = rt.r#match.as_mut() {
                m.headers.retain(|h| h.name != ":authority");
                m.headers.push(HeaderMatcher {
                    name: ROUTE_HEADER.to_string(),
                    header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(
                        super::route::exact(&index.to_string()),
                    )),
                    ..Default::default()
                });
            }
            // A single-entry map encodes deterministically.
            rt.typed_per_filter_config =
                [(INNER_FILTER.to_string(), lua_per_route(inner_script(ttl)))]
                    .into_iter()
                    .collect();
            rt
        })
        .collect();
    RouteConfiguration {
        name: ROUTE_CONFIG.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: ROUTE_CONFIG.to_string(),
            domains: vec!["*".to_string()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}
