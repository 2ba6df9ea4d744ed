//! Gateway listeners → Envoy Listeners with one HttpConnectionManager filter chain.

use prost::Message;
use proto::pb::envoy::config::accesslog::v3::{
    access_log, access_log_filter::FilterSpecifier, extension_filter, AccessLog, AccessLogFilter,
    AndFilter, ExtensionFilter, ResponseFlagFilter,
};
use proto::pb::envoy::config::common::mutation_rules::v3::{
    header_mutation, HeaderMutation as HeaderMutationRule,
};
use proto::pb::envoy::config::core::v3::{
    data_source, http_protocol_options::HeadersWithUnderscoresAction, substitution_format_string,
    transport_socket, DataSource, Http2ProtocolOptions, HttpProtocolOptions,
    SubstitutionFormatString, TransportSocket, TypedExtensionConfig,
};
use proto::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use proto::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use proto::pb::envoy::extensions::access_loggers::stats::v3::{
    config::{histogram::Unit, Counter, Histogram, Stat, Tag},
    Config as StatsLog,
};
use proto::pb::envoy::extensions::access_loggers::stream::v3::{
    stdout_access_log, StdoutAccessLog,
};
use proto::pb::envoy::extensions::compression::brotli::compressor::v3::Brotli;
use proto::pb::envoy::extensions::compression::gzip::compressor::v3::Gzip;
use proto::pb::envoy::extensions::compression::zstd::compressor::v3::Zstd;
use proto::pb::envoy::extensions::filters::http::buffer::v3::Buffer;
use proto::pb::envoy::extensions::filters::http::compressor::v3::{
    compressor::{CommonDirectionConfig, ResponseDirectionConfig},
    Compressor,
};
use proto::pb::envoy::extensions::filters::http::cors::v3::Cors;
use proto::pb::envoy::extensions::filters::http::lua::v3::Lua;
use proto::pb::envoy::extensions::filters::http::router::v3::Router;
use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{
        CodecType, ForwardClientCertDetails, PathWithEscapedSlashesAction, RouteSpecifier,
        SetCurrentClientCertDetails, StripPortMode, UpgradeConfig,
    },
    http_filter, HttpConnectionManager, HttpFilter, LocalReplyConfig, Rds, RequestIdExtension,
    ResponseMapper,
};
use proto::pb::envoy::extensions::http::early_header_mutation::header_mutation::v3::HeaderMutation;
use proto::pb::envoy::extensions::request_id::uuid::v3::UuidRequestIdConfig;
use proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, CommonTlsContext, DownstreamTlsContext,
    SdsSecretConfig,
};
use proto::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};

use super::cluster::socket_address;
use super::{
    ads, authz, boolv, compose, duration, ip_lists, ratelimit, trace, transform, u32v, Policies,
};
use config::{
    AccessLog as AccessLogMode, Compression, CompressionAlgorithm, Gateway, Listener as ListenerCfg,
};

pub(super) const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
pub(super) const CORS_FILTER: &str = "envoy.filters.http.cors";
const ROUTER_FILTER: &str = "envoy.filters.http.router";
pub(super) const LUA_FILTER: &str = "envoy.filters.http.lua";
pub(super) const BUFFER_FILTER: &str = "envoy.filters.http.buffer";
/// The Lua filter after the buffer filter that counts the whole body (see [`MAX_BODY_LUA`]).
pub(super) const MAX_BODY_FILTER: &str = "envoy.filters.http.lua.max_body";
/// Refuses a body over the limit that the buffer filter let through uncounted (its last piece);
/// `LIMIT` stands for the limit in bytes.
pub(super) const MAX_BODY_LUA: &str = include_str!("max_body.lua");
/// The Lua filter before the compressors that picks one encoding (see [`ACCEPT_ENCODING_LUA`]).
const ACCEPT_ENCODING_FILTER: &str = "envoy.filters.http.lua.accept_encoding";
/// `OFFERED` stands for the table of the gateway's algorithms, in order.
const ACCEPT_ENCODING_LUA: &str = include_str!("accept_encoding.lua");
/// The Lua filter on TLS listeners that marks affinity cookies `Secure` (see
/// [`SECURE_COOKIE_LUA`]).
pub(super) const SECURE_COOKIE_FILTER: &str = "envoy.filters.http.lua.secure_cookie";
/// `NAMES` stands for the table of affinity cookie names.
const SECURE_COOKIE_LUA: &str = include_str!("secure_cookie.lua");
/// The script of [`strip_query`], with `NAMES` standing for the table of parameter names.
const STRIP_QUERY_LUA: &str = include_str!("strip_query.lua");
const STDOUT_ACCESS_LOG: &str = "envoy.access_loggers.stdout";
const STATS_ACCESS_LOG: &str = "envoy.access_loggers.stats";
const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
const EARLY_HEADER_MUTATION: &str = "envoy.http.early_header_mutation.header_mutation";

/// Request headers removed from every client request before routing and before any filter:
/// frameworks behind the gateway read them as the client's address, the host or path the
/// request was for, or the method to run, so a client sending them could pick any of those
/// past the gateway's routing and auth (`x-original-url: /admin` on a public route, say).
/// Envoy sets none of them itself on our listeners.
pub(super) const SPOOFABLE_HEADERS: &[&str] = &[
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-original-url",
    "x-original-host",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

// Field numbers of message fields we append by hand (see `proto::encode_with_fields`), because
// their values contain a multi-entry `google.protobuf.Struct` that prost would encode in random
// order. Checked by the round-trip test in `tests.rs`.
/// `HttpConnectionManager.local_reply_config`.
const HCM_LOCAL_REPLY_CONFIG: u32 = 38;
/// `LocalReplyConfig.mappers`.
const LOCAL_REPLY_MAPPERS: u32 = 1;
/// `ResponseMapper.body_format_override`.
const MAPPER_BODY_FORMAT_OVERRIDE: u32 = 4;
/// `SubstitutionFormatString.json_format`.
const FORMAT_JSON: u32 = 2;
/// `StdoutAccessLog.log_format`.
const STDOUT_LOG_FORMAT: u32 = 1;

/// Fields of the JSON access log line: name → Envoy command operator.
pub(super) const JSON_ACCESS_LOG: &[(&str, &str)] = &[
    ("timestamp", "%START_TIME%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("client_ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ("method", "%REQ(:METHOD)%"),
    // The path as the client sent it, before any `rewrite`, without its query: a query can
    // carry an API key (`?api_key=`), and a request refused before the key is removed (401,
    // 429, 400) would log it.
    ("path", "%PATH(NQ:ORIG_OR_PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("status", "%RESPONSE_CODE%"),
    ("latency_ms", "%DURATION%"),
    ("route", "%ROUTE_NAME%"),
    ("upstream", "%UPSTREAM_CLUSTER%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    // Spec §10. Envoy's trace id (empty without `tracing`).
    ("trace_id", "%TRACE_ID%"),
    // Set by authz-service's allowing Check response (dynamic metadata, never a client
    // header), so a client on an `auth: none` route cannot write them.
    (
        "client_id",
        "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:client_id)%",
    ),
    (
        "plan",
        "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:plan)%",
    ),
    (
        "auth_provider",
        "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:provider)%",
    ),
    // Set by ratelimit-service's answer (`proto::ratelimit::metadata`): ok, over_limit, error.
    (
        "rate_limit",
        "%DYNAMIC_METADATA(envoy.filters.http.ratelimit:outcome)%",
    ),
];

/// The `text` access log line: the same information in Envoy's classic layout.
pub(super) const TEXT_ACCESS_LOG: &str = "[%START_TIME%] \"%REQ(:METHOD)% %PATH(NQ:ORIG_OR_PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \"%REQ(X-REQUEST-ID)%\" \"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\" \"%REQ(USER-AGENT)%\" \"%ROUTE_NAME%\" \"%UPSTREAM_CLUSTER%\" \"%UPSTREAM_HOST%\"\n";

/// A local reply Envoy generates itself that we rewrite into the spec's JSON error shape (§3).
pub(super) struct LocalReply {
    /// Envoy response flags that select this mapper (any of them).
    pub flags: &'static [&'static str],
    /// Only replies with this status (with one of `flags`) are rewritten.
    pub only_status: Option<u32>,
    pub status: u32,
    pub error: &'static str,
    pub message: &'static str,
}

/// Selected by response flag, not by status code, so that `respond:` routes (direct responses,
/// which carry no flag) and policy denials (ext_authz's UAEX, rate limiting's RL) keep the bodies
/// they chose. Only flags in the ResponseFlagFilter's documented list are used: Envoy rejects a
/// listener naming an unknown flag.
pub(super) const LOCAL_REPLIES: &[LocalReply] = &[
    LocalReply {
        flags: &["NR"],
        only_status: None,
        status: 404,
        error: "not_found",
        message: "no route matches",
    },
    LocalReply {
        flags: &["UT"],
        only_status: None,
        status: 504,
        error: "gateway_timeout",
        message: "upstream timed out",
    },
    LocalReply {
        // ratelimit-service failed or did not answer in time under `on_error: deny`.
        flags: &["RLSE"],
        only_status: None,
        status: 503,
        error: "unavailable",
        message: "rate-limit service unavailable",
    },
    LocalReply {
        // authz-service failed or did not answer in time under `on_error: deny`. Its own
        // denials (401, 403) carry the same flag and keep their bodies.
        flags: &["UAEX"],
        only_status: Some(503),
        status: 503,
        error: "unavailable",
        message: "authorization service unavailable",
    },
    LocalReply {
        // No healthy host, connection failure, circuit breaker open, retries exhausted,
        // connection terminated, remote reset.
        flags: &["UH", "UF", "UO", "URX", "UC", "UR"],
        only_status: None,
        status: 503,
        error: "unavailable",
        message: "upstream unavailable",
    },
];

/// A local reply selected by a CEL expression over Envoy's attributes (the replies Envoy sends
/// without a response flag: its own protocol refusals and our ambiguous-path route).
pub(super) struct CelReply {
    pub expression: String,
    /// `None`: the status Envoy chose stays.
    pub status: Option<u32>,
    pub error: &'static str,
    pub message: &'static str,
}

const CEL_FILTER: &str = "envoy.access_loggers.extension_filters.cel";

/// Every 400 a client can get from Envoy before any route takes the request (the refusal
/// route, path normalization, HTTP/1 parse errors) and the client timeouts' 408s, in the
/// spec's JSON error shape (§3). HTTP/2 protocol errors reset the stream and have no body.
pub(super) fn cel_replies() -> [CelReply; 3] {
    [
    CelReply {
        expression: format!(
            "xds.route_name == '{}' || xds.route_name == '{}' || response.code_details == 'path_normalization_failed' || (response.code == 400 && response.code_details.startsWith('http1.'))",
            super::route::AMBIGUOUS_PATH_ROUTE,
            super::route::BAD_HOST_ROUTE,
        ),
        status: Some(400),
        error: "bad_request",
        message: "malformed or ambiguous request",
    },
    CelReply {
        expression: "response.code_details == 'request_header_timeout' || response.code_details == 'request_overall_timeout'".to_string(),
        status: Some(408),
        error: "request_timeout",
        message: "request not received in time",
    },
    CelReply {
        // An upgrade (WebSocket or any other protocol) on a route without `websocket: true`:
        // Envoy refuses it before any filter runs, so before authz-service is asked.
        expression: "response.code_details == 'upgrade_failed'".to_string(),
        status: Some(403),
        error: "forbidden",
        message: "upgrade not allowed on this route",
    },
    ]
}

/// The buffer filter's 413 (`max_body`). The filter manager sends it without a response flag, so
/// it is selected by status alone, and only on gateways that limit bodies; there a `respond:`
/// route answering 413 gets this body too.
pub(super) const PAYLOAD_TOO_LARGE: LocalReply = LocalReply {
    flags: &[],
    only_status: Some(413),
    status: 413,
    error: "payload_too_large",
    message: "request body too large",
};

/// True when some route of the gateway has a request-body limit, its own or the gateway's.
pub(super) fn limits_bodies(gw: &Gateway) -> bool {
    gw.max_body.is_some() || gw.routes.iter().any(|r| r.max_body.is_some())
}

pub(super) fn listener(
    gateway: &str,
    gw: &Gateway,
    l: &ListenerCfg,
    secret: Option<&str>,
    policies: &Policies<'_>,
) -> Listener {
    let hcm = hcm_bytes(gateway, gw, l, policies);
    let client_ca = l
        .tls
        .as_ref()
        .and_then(|t| t.client_certs.as_ref())
        .map(|c| (super::client_ca_secret_name(gateway, &l.name), c.required));
    let transport_socket = secret.map(|s| downstream_tls(s, client_ca));
    Listener {
        name: l.name.clone(),
        // Bytes Envoy reads from or queues for one client before applying back-pressure (Envoy's
        // default, 1 MiB, lets a few thousand slow clients pin gigabytes). The buffer filter's
        // `max_body` limit is separate.
        per_connection_buffer_limit_bytes: Some(u32v(gw.limits.buffer)),
        address: Some(socket_address(&l.address, l.port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: HCM_FILTER.to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(proto::pack_bytes(
                    proto::type_url::HTTP_CONNECTION_MANAGER,
                    hcm,
                ))),
            }],
            transport_socket,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The listener's HttpConnectionManager without its (separately, canonically encoded) local
/// reply config. A listener with `https_redirect` gets [`redirect_hcm`].
pub(super) fn hcm_base(
    gateway: &str,
    gw: &Gateway,
    l: &ListenerCfg,
    policies: &Policies<'_>,
) -> HttpConnectionManager {
    if l.https_redirect {
        return redirect_hcm(gateway, gw, l, policies);
    }
    let asks_client_certs = l.tls.as_ref().is_some_and(|t| t.client_certs.is_some());
    HttpConnectionManager {
        // x-forwarded-client-cert: where client certificates are asked for, Envoy sets it from
        // the verified certificate (Hash always; Subject, URI and DNS names) and drops the
        // client's copy; elsewhere the default (SANITIZE) drops a client's copy too.
        forward_client_cert_details: if asks_client_certs {
            ForwardClientCertDetails::SanitizeSet as i32
        } else {
            ForwardClientCertDetails::Sanitize as i32
        },
        set_current_client_cert_details: asks_client_certs.then_some(SetCurrentClientCertDetails {
            subject: Some(boolv(true)),
            uri: true,
            dns: true,
            ..Default::default()
        }),
        codec_type: CodecType::Auto as i32,
        stat_prefix: l.name.clone(),
        // One RouteConfiguration per gateway, shared by all of its listeners.
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: gateway.to_string(),
        })),
        http_filters: http_filters(gw, l, policies),
        access_log: std::iter::once(route_stats())
            .chain(access_log(gw.access_log, policies.limits_in_authz))
            .collect(),
        // An edge proxy: the peer address is the client, and x-forwarded-for is appended to,
        // not trusted, unless `client_ip.trusted_hops` says how many proxies in front of Envoy
        // appended entries; the client is then the entry the farthest of them wrote. Rate
        // limits (`remote_address`), the IP lists (`remote_ip`) and the access log
        // (`DOWNSTREAM_REMOTE_ADDRESS`) all read that address.
        use_remote_address: Some(boolv(true)),
        xff_num_trusted_hops: gw.client_ip.trusted_hops,
        // Spec §3: keep a client-sent x-request-id, otherwise generate one; upstreams and the
        // client both see it.
        generate_request_id: Some(boolv(true)),
        preserve_external_request_id: true,
        always_set_request_id_in_response: true,
        request_id_extension: Some(request_id_extension()),
        // Route matching must see the same path the upstream will: `/a/../admin`, `//admin` and
        // `/%2Fadmin` must not dodge a route (or an auth rule attached to it).
        normalize_path: Some(boolv(true)),
        merge_slashes: true,
        path_with_escaped_slashes_action: PathWithEscapedSlashesAction::UnescapeAndRedirect as i32,
        // `admin.example.com.` names the same host as `admin.example.com` to DNS and to most
        // upstreams; routing must see them as one (and the upstream gets the Host it matched).
        strip_trailing_host_dot: true,
        common_http_protocol_options: Some(HttpProtocolOptions {
            idle_timeout: Some(duration(gw.timeouts.idle)),
            // `x_user_roles` is `x-user-roles` to CGI-style frameworks (WSGI, Rack, PHP), which
            // fold `_` and `-` together, so it would pass for an identity header we strip.
            // Dropped rather than refused: REJECT_REQUEST resets HTTP/2 streams without a
            // response, and a dropped header reaches no filter and no upstream either way.
            headers_with_underscores_action: HeadersWithUnderscoresAction::DropHeader as i32,
            ..Default::default()
        }),
        http2_protocol_options: Some(Http2ProtocolOptions {
            max_concurrent_streams: Some(u32v(gw.limits.max_concurrent_streams)),
            initial_stream_window_size: Some(u32v(gw.limits.initial_stream_window)),
            initial_connection_window_size: Some(u32v(gw.limits.initial_connection_window)),
            ..Default::default()
        }),
        request_headers_timeout: Some(duration(gw.timeouts.request_headers)),
        request_timeout: Some(duration(gw.timeouts.request)),
        stream_idle_timeout: Some(duration(gw.timeouts.stream_idle)),
        early_header_mutation_extensions: vec![early_header_removal(&policies.early_remove)],
        upgrade_configs: upgrade_configs(gw),
        tracing: gw.tracing.as_ref().map(trace::hcm),
        ..Default::default()
    }
}

/// A plain listener with `https_redirect`: every request gets a 301 to the gateway's TLS listener
/// from a route of its own (inline: the gateway's shared RouteConfiguration would redirect TLS
/// clients too), with the router as the only filter, so nothing (authz-service, limits, body
/// buffering) runs before the redirect. The port of the client's Host is stripped first, so the
/// Location names the TLS listener's port and no other.
fn redirect_hcm(
    gateway: &str,
    gw: &Gateway,
    l: &ListenerCfg,
    policies: &Policies<'_>,
) -> HttpConnectionManager {
    let tls_port = gw
        .listeners
        .iter()
        .find(|t| t.tls.is_some())
        .map_or(443, |t| t.port);
    let plain = ListenerCfg {
        https_redirect: false,
        ..l.clone()
    };
    HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(
            super::route::redirect_configuration(&l.name, tls_port),
        )),
        http_filters: vec![http_filter(
            ROUTER_FILTER,
            proto::type_url::ROUTER,
            &Router::default(),
        )],
        strip_port_mode: Some(StripPortMode::StripAnyHostPort(true)),
        ..hcm_base(gateway, gw, &plain, policies)
    }
}

/// Envoy's UUID request ids, told to keep a client's id as it came: by default Envoy writes
/// its tracing decision into the 15th character of any 36-character id (where a UUID keeps its
/// version), so a client's UUID would reach the upstream and the access log changed (spec §3
/// keeps a client-sent id). Sampling still hashes the id (Envoy's default): without it the
/// tracer follows the sampled flag of a client's `traceparent`, so `sample: 0%` would export
/// every request a client flags. (A client choosing its id can land in a partial sample; it
/// cannot move `0%`.)
fn request_id_extension() -> RequestIdExtension {
    RequestIdExtension {
        typed_config: Some(proto::pack(
            proto::type_url::UUID_REQUEST_ID,
            &UuidRequestIdConfig {
                pack_trace_reason: Some(boolv(false)),
                use_request_id_for_trace_sampling: Some(boolv(true)),
            },
        )),
    }
}

/// WebSocket upgrades are off on the listener and turned on by each `websocket: true` route (a
/// route can only enable an upgrade type the listener names). Without any such route the list is
/// empty, and Envoy refuses every upgrade all the same.
fn upgrade_configs(gw: &Gateway) -> Vec<UpgradeConfig> {
    if !gw.routes.iter().any(|r| r.websocket) {
        return Vec::new();
    }
    vec![UpgradeConfig {
        upgrade_type: "websocket".to_string(),
        enabled: Some(boolv(false)),
        ..Default::default()
    }]
}

/// Removes [`SPOOFABLE_HEADERS`] and `identity` (the identity headers and the fail-open
/// marker, `authz::early_removed_headers`) before routing and every filter: route-level removal
/// runs in the router, after ext_authz, and so would let them reach authz-service, the
/// rate-limit descriptors and, when authz-service fails under `on_error: allow`, the upstream.
fn early_header_removal(identity: &[String]) -> TypedExtensionConfig {
    let mut names: Vec<&str> = SPOOFABLE_HEADERS.to_vec();
    for h in identity {
        if !names.contains(&h.as_str()) {
            names.push(h);
        }
    }
    let mutation = HeaderMutation {
        mutations: names
            .into_iter()
            .map(|h| HeaderMutationRule {
                action: Some(header_mutation::Action::Remove(h.to_string())),
            })
            .collect(),
    };
    TypedExtensionConfig {
        name: EARLY_HEADER_MUTATION.to_string(),
        typed_config: Some(proto::pack(
            proto::type_url::EARLY_HEADER_MUTATION,
            &mutation,
        )),
    }
}

/// HTTP filters in order. Policy filters (ext_authz, rate limiting) go between CORS and the
/// router: CORS first so preflights are answered without credentials, the router always last.
/// The IP lists' RBAC filter goes before CORS: an address a route refuses gets nothing else.
/// With API keys accepted in the query, a Lua filter just before the router removes those
/// parameters from every request (ext_authz has read them by then), so they reach no upstream,
/// `auth: none` routes included. (Envoy's header-mutation filter can remove query parameters
/// too, but it decodes and re-serializes the whole query string of every request it sees.)
fn http_filters(gw: &Gateway, l: &ListenerCfg, policies: &Policies<'_>) -> Vec<HttpFilter> {
    let mut filters = Vec::new();
    // IP lists first: a refused address is answered before CORS and before authz-service.
    if ip_lists::used(gw) {
        filters.push(http_filter(
            ip_lists::FILTER,
            proto::type_url::RBAC,
            &ip_lists::filter_config(),
        ));
    }
    if gw.cors.is_some() {
        filters.push(http_filter(
            CORS_FILTER,
            proto::type_url::CORS,
            &Cors::default(),
        ));
    }
    // ext_authz before rate limiting: the limiter's descriptors read the identity it verified.
    if let Some(auth) = policies.auth {
        let mut f = authz::http_filter(auth);
        // authz-service reads a verified client certificate for `auth.mtls` providers.
        f.include_peer_certificate = gw
            .listeners
            .iter()
            .any(|l| l.tls.as_ref().is_some_and(|t| t.client_certs.is_some()));
        filters.push(http_filter(authz::FILTER, authz::FILTER_TYPE_URL, &f));
    }
    if let Some(limits) = policies.limits {
        filters.push(http_filter(
            ratelimit::FILTER,
            proto::type_url::RATELIMIT_FILTER,
            &ratelimit::http_filter(limits),
        ));
    }
    if !policies.credential_query.is_empty() {
        filters.push(http_filter(
            LUA_FILTER,
            proto::type_url::LUA,
            &strip_query(&policies.credential_query),
        ));
    }
    if let Some(c) = &gw.compression {
        filters.extend(compression_filters(c));
    }
    // `max_body`: Envoy's buffer filter holds the request (headers included) until its body is
    // complete and answers 413 once more than the limit has arrived, with or without a
    // content-length, so an upstream never sees an oversized request. Last before the router,
    // so a request that policy refuses is refused before its body is buffered. Routes override
    // the limit per route (`route::body_limit`); without a gateway limit the filter is off on
    // every route that sets none.
    if limits_bodies(gw) {
        let bytes = gw.max_body.unwrap_or(u32::MAX);
        filters.push(http_filter(
            BUFFER_FILTER,
            proto::type_url::BUFFER,
            &Buffer {
                max_request_bytes: Some(u32v(bytes)),
            },
        ));
        // The buffer filter's blind spot, its last piece of body; off per route like it.
        filters.push(http_filter(
            MAX_BODY_FILTER,
            proto::type_url::LUA,
            &lua(max_body_script(bytes)),
        ));
    }
    // Affinity cookies set on a TLS listener are `Secure` (routes are shared with the plain
    // listeners, so the route's cookie attributes cannot say it).
    let cookies = affinity_cookies(gw);
    if l.tls.is_some() && !cookies.is_empty() {
        let table: Vec<String> = cookies
            .iter()
            .map(|n| format!("[{}] = true", lua_string(n)))
            .collect();
        let source = SECURE_COOKIE_LUA.replacen("NAMES", &format!("{{ {} }}", table.join(", ")), 1);
        filters.push(http_filter(
            SECURE_COOKIE_FILTER,
            proto::type_url::LUA,
            &lua(source),
        ));
    }
    // `compose`: after auth, limits and body limits, so they have judged the request before
    // any part is called, and its answer passes the compressors. (A compose route is never
    // cached, so the cache's filters below never see its requests.)
    if compose::used(gw) {
        filters.push(compose::http_filter());
    }
    // `transform`: before the gRPC bridges and the cache's filters (the cache sends a miss
    // straight to its internal listener, past every filter after it, and keeps the upstream's
    // answer, so each hit is transformed for its own request), so on the way back it sees the
    // upstream's (or the cache's) response before the compressors (response filters run in reverse); and
    // a request refused by policy or `max_body` never reaches transform-service. Disabled by
    // default: only routes with a transform enable it (`transform::per_route`).
    if let Some(cfg) = policies.transforms {
        let mut f = http_filter(
            transform::FILTER,
            proto::type_url::EXT_PROC,
            &transform::http_filter(cfg, gw),
        );
        f.disabled = true;
        filters.push(f);
    }
    // gRPC bridges after every check of the client's request, before the cache (which a
    // `grpc` route never uses) and the router.
    filters.extend(super::grpc::http_filters(gw, &policies.transcoders));
    // `cache` just before the router: auth, limits and body checks run on hits too, and the
    // cache keeps the body uncompressed (the compressors, closer to the client, compress each
    // answer for its client).
    if super::cache::used(gw) {
        filters.extend(super::cache::http_filters());
    }
    filters.push(http_filter(
        ROUTER_FILTER,
        proto::type_url::ROUTER,
        &Router::default(),
    ));
    filters
}

/// The names of the gateway's affinity cookies, sorted, each once.
fn affinity_cookies(gw: &Gateway) -> Vec<String> {
    let mut names: Vec<String> = gw
        .routes
        .iter()
        .filter_map(|r| match &r.affinity {
            Some(config::Affinity::Cookie { name, .. }) => Some(name.clone()),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The [`MAX_BODY_LUA`] script for a limit of `bytes`.
pub(super) fn max_body_script(bytes: u32) -> String {
    MAX_BODY_LUA.replacen("LIMIT", &bytes.to_string(), 1)
}

/// A Lua filter running `source` on every request, never re-selecting the route.
fn lua(source: String) -> Lua {
    Lua {
        default_source_code: Some(DataSource {
            specifier: Some(data_source::Specifier::InlineString(source)),
            ..Default::default()
        }),
        clear_route_cache: Some(boolv(false)),
        ..Default::default()
    }
}

/// `compression`: a Lua filter that reduces `Accept-Encoding` to the one encoding chosen
/// ([`ACCEPT_ENCODING_LUA`]), then one compressor filter per algorithm, in the listed order.
/// Only the last removes `Accept-Encoding` before the upstream: each filter reads it while the
/// request passes, and a header removed by the first would be gone for the others.
fn compression_filters(c: &Compression) -> Vec<HttpFilter> {
    let offered: Vec<String> = c.algorithms.iter().map(|a| lua_string(a.token())).collect();
    let source =
        ACCEPT_ENCODING_LUA.replacen("OFFERED", &format!("{{ {} }}", offered.join(", ")), 1);
    let mut filters = vec![http_filter(
        ACCEPT_ENCODING_FILTER,
        proto::type_url::LUA,
        &lua(source),
    )];
    let content_type_matcher: Vec<StringMatcher> = c
        .content_types
        .iter()
        .map(|t| StringMatcher {
            match_pattern: Some(MatchPattern::Exact(t.clone())),
            // Envoy's matcher drops the response's parameters (`; charset=utf-8`) but compares
            // letter case unless told otherwise.
            ignore_case: true,
        })
        .collect();
    for (i, a) in c.algorithms.iter().enumerate() {
        let library = match a {
            CompressionAlgorithm::Zstd => TypedExtensionConfig {
                name: "zstd".to_string(),
                typed_config: Some(proto::pack(
                    proto::type_url::ZSTD_COMPRESSOR,
                    &Zstd::default(),
                )),
            },
            CompressionAlgorithm::Brotli => TypedExtensionConfig {
                name: "brotli".to_string(),
                typed_config: Some(proto::pack(
                    proto::type_url::BROTLI_COMPRESSOR,
                    &Brotli::default(),
                )),
            },
            CompressionAlgorithm::Gzip => TypedExtensionConfig {
                name: "gzip".to_string(),
                typed_config: Some(proto::pack(
                    proto::type_url::GZIP_COMPRESSOR,
                    &Gzip::default(),
                )),
            },
        };
        let compressor = Compressor {
            compressor_library: Some(library),
            response_direction_config: Some(ResponseDirectionConfig {
                common_config: Some(CommonDirectionConfig {
                    min_content_length: Some(u32v(c.min_bytes)),
                    content_type_matcher: content_type_matcher.clone(),
                    ..Default::default()
                }),
                remove_accept_encoding_header: i + 1 == c.algorithms.len(),
                ..Default::default()
            }),
            ..Default::default()
        };
        filters.push(http_filter(
            &compressor_filter_name(*a),
            proto::type_url::COMPRESSOR,
            &compressor,
        ));
    }
    filters
}

/// Each compressor filter has its own name, so that Envoy's stats tell them apart.
pub(super) fn compressor_filter_name(a: CompressionAlgorithm) -> String {
    format!("envoy.filters.http.compressor.{}", a.token())
}

/// A Lua filter config that removes every query parameter named (after percent-decoding) one
/// of `names`, and changes nothing else in the path.
pub(super) fn strip_query(names: &[String]) -> Lua {
    let table: Vec<String> = names
        .iter()
        .map(|n| format!("[{}] = true", lua_string(n)))
        .collect();
    let source = STRIP_QUERY_LUA.replacen("NAMES", &format!("{{ {} }}", table.join(", ")), 1);
    Lua {
        default_source_code: Some(DataSource {
            specifier: Some(data_source::Specifier::InlineString(source)),
            ..Default::default()
        }),
        // A changed `:path` must not send the request to another route: ext_authz and the
        // limiter have judged it against this one (an `auth: none` route matching on the key
        // parameter would otherwise hand it to an authenticated route, unchecked).
        clear_route_cache: Some(boolv(false)),
        ..Default::default()
    }
}

/// A Lua string literal for any text: bytes other than letters, digits, `_`, `-` and `.` are
/// written as decimal escapes, so no name can end the literal or the script.
pub(super) fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\{b:03}"));
        }
    }
    out.push('"');
    out
}

fn http_filter(name: &str, type_url: &str, msg: &impl Message) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(proto::pack(
            type_url, msg,
        ))),
        ..Default::default()
    }
}

fn hcm_bytes(gateway: &str, gw: &Gateway, l: &ListenerCfg, policies: &Policies<'_>) -> Vec<u8> {
    proto::encode_with_fields(
        &hcm_base(gateway, gw, l, policies),
        &[(HCM_LOCAL_REPLY_CONFIG, local_reply_config_bytes(gw))],
    )
}

/// `LocalReplyConfig` with one mapper per [`LOCAL_REPLIES`] entry and no default `body_format`
/// (which would rewrite every local reply, direct responses included), plus
/// [`PAYLOAD_TOO_LARGE`] on a gateway that limits bodies.
fn local_reply_config_bytes(gw: &Gateway) -> Vec<u8> {
    let body_limit = limits_bodies(gw).then_some(&PAYLOAD_TOO_LARGE);
    // A compose route whose script failed, first: its cluster's "no healthy upstream" would
    // otherwise read as an upstream being down.
    let compose_failed = compose::used(gw).then(|| {
        let filter = AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::AndFilter(AndFilter {
                filters: vec![
                    AccessLogFilter {
                        filter_specifier: Some(FilterSpecifier::ResponseFlagFilter(
                            ResponseFlagFilter {
                                flags: vec!["UH".to_string()],
                            },
                        )),
                    },
                    cel_filter(compose::fallback_expression()),
                ],
            })),
        };
        let (error, message) = compose::FALLBACK_ERROR;
        mapper_bytes(filter, Some(502), error, message)
    });
    // The CEL mappers first: first match wins, and they select replies that carry no flag.
    let mappers: Vec<(u32, Vec<u8>)> = compose_failed
        .into_iter()
        .chain(
            cel_replies()
                .into_iter()
                .chain(ip_lists::refused_reply(gw))
                .chain(transform::error_replies(gw))
                .map(|r| mapper_bytes(cel_filter(r.expression), r.status, r.error, r.message)),
        )
        .chain(LOCAL_REPLIES.iter().chain(body_limit).map(|r| {
            let by_flag = AccessLogFilter {
                filter_specifier: Some(FilterSpecifier::ResponseFlagFilter(ResponseFlagFilter {
                    flags: r.flags.iter().map(|f| f.to_string()).collect(),
                })),
            };
            let filter = match r.only_status {
                None => by_flag,
                Some(code) if r.flags.is_empty() => status_is(code),
                Some(code) => AccessLogFilter {
                    filter_specifier: Some(FilterSpecifier::AndFilter(AndFilter {
                        filters: vec![by_flag, status_is(code)],
                    })),
                },
            };
            mapper_bytes(filter, Some(r.status), r.error, r.message)
        }))
        .collect();
    proto::encode_with_fields(&LocalReplyConfig::default(), &mappers)
}

/// One `LocalReplyConfig.mappers` entry: the spec's JSON error body for replies `filter` selects.
fn mapper_bytes(
    filter: AccessLogFilter,
    status: Option<u32>,
    error: &str,
    message: &str,
) -> (u32, Vec<u8>) {
    let mapper = ResponseMapper {
        filter: Some(filter),
        status_code: status.map(u32v),
        ..Default::default()
    };
    let body = proto::string_struct([
        ("error", error),
        ("message", message),
        ("request_id", "%REQ(X-REQUEST-ID)%"),
    ]);
    let format = json_format_bytes(&body);
    (
        LOCAL_REPLY_MAPPERS,
        proto::encode_with_fields(&mapper, &[(MAPPER_BODY_FORMAT_OVERRIDE, format)]),
    )
}

/// An access-log filter selecting what a CEL expression over Envoy's attributes holds for.
fn cel_filter(expression: String) -> AccessLogFilter {
    AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::ExtensionFilter(ExtensionFilter {
            name: CEL_FILTER.to_string(),
            config_type: Some(extension_filter::ConfigType::TypedConfig(proto::pack(
                proto::type_url::CEL_ACCESS_LOG_FILTER,
                &ExpressionFilter {
                    expression,
                    ..Default::default()
                },
            ))),
        })),
    }
}

/// An access-log filter matching one response status.
fn status_is(code: u32) -> AccessLogFilter {
    use proto::pb::envoy::config::accesslog::v3::{
        comparison_filter::Op, ComparisonFilter, StatusCodeFilter,
    };
    use proto::pb::envoy::config::core::v3::RuntimeUInt32;
    AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::StatusCodeFilter(StatusCodeFilter {
            comparison: Some(ComparisonFilter {
                op: Op::Eq as i32,
                value: Some(RuntimeUInt32 {
                    default_value: code,
                    // Required by Envoy; no runtime layer sets it, so the default applies.
                    runtime_key: format!("gateway.local_reply.status_{code}"),
                }),
            }),
        })),
    }
}

/// A `SubstitutionFormatString` with `json_format` = `body`, encoded canonically.
fn json_format_bytes(body: &proto::pb::google::protobuf::Struct) -> Vec<u8> {
    let base = SubstitutionFormatString {
        content_type: "application/json".to_string(),
        ..Default::default()
    };
    proto::encode_with_fields(&base, &[(FORMAT_JSON, proto::encode_struct(body))])
}

/// The prefix of the per-route stats [`route_stats`] makes: `envoy_gateway_…` on
/// `/stats/prometheus`.
const ROUTE_STATS_PREFIX: &str = "gateway";
/// Requests per route and status class (`envoy_gateway_route_requests`).
const ROUTE_REQUESTS: &str = "route_requests";
/// The histogram of whole-request durations per route, in milliseconds
/// (`envoy_gateway_route_request_ms`).
const ROUTE_REQUEST_MS: &str = "route_request_ms";
/// The label naming the route (Envoy's own name for it in its router stats).
const ROUTE_LABEL: &str = "envoy_route";
/// The label holding the first digit of the status (Envoy's own name for it).
const STATUS_CLASS_LABEL: &str = "envoy_response_code_class";

/// Spec §10's per-route counts and latency, for every request the listener answers: Envoy's
/// router counts only the requests it sends upstream (`vhost.<gateway>.route.<name>.upstream_rq_*`),
/// so a `respond:` route, an ext_authz refusal and a rate-limit 429 would be missing from them.
/// An access logger runs once per request whoever answered it, so these series hold forwarded
/// requests and local answers alike, under one name and the same labels.
///
/// Every label value is Envoy's, never the client's: `%ROUTE_NAME%` is the name of the route
/// Envoy matched (empty when none did), and the class is the final status divided by 100 (0
/// when no response was sent). A client can pick which route it hits, not what the series of a
/// route is called, and the number of series is bounded by the routes times ten classes.
fn route_stats() -> AccessLog {
    let route = || Tag {
        name: ROUTE_LABEL.to_string(),
        value_format: "%ROUTE_NAME%".to_string(),
        rules: None,
    };
    let config = StatsLog {
        stats_scope: Some(proto::pb::envoy::r#type::v3::Scope {
            prefix: ROUTE_STATS_PREFIX.to_string(),
            ..Default::default()
        }),
        counters: vec![Counter {
            stat: Some(Stat {
                name: ROUTE_REQUESTS.to_string(),
                tags: vec![
                    route(),
                    Tag {
                        name: STATUS_CLASS_LABEL.to_string(),
                        value_format: "%CEL(response.code / 100)%".to_string(),
                        rules: None,
                    },
                ],
            }),
            value_fixed: Some(proto::pb::google::protobuf::UInt64Value { value: 1 }),
            ..Default::default()
        }],
        histograms: vec![Histogram {
            stat: Some(Stat {
                name: ROUTE_REQUEST_MS.to_string(),
                tags: vec![route()],
            }),
            unit: Unit::Milliseconds as i32,
            // From the first byte received to the last byte sent, as the client sees it.
            value_format: "%DURATION%".to_string(),
        }],
        ..Default::default()
    };
    AccessLog {
        name: STATS_ACCESS_LOG.to_string(),
        filter: None,
        config_type: Some(access_log::ConfigType::TypedConfig(proto::pack(
            proto::type_url::STATS_ACCESS_LOG,
            &config,
        ))),
    }
}

/// The `rate_limit` field when authz-service counts some routes' limits: its outcome from
/// ext_authz's metadata, else ratelimit-service's. A route's limits are counted in one place
/// only, so at most one is set; with neither the expression fails on the missing key, which
/// Envoy logs as `null`, like a `DYNAMIC_METADATA` without a value.
const RATE_LIMIT_EITHER: &str = "%CEL('envoy.filters.http.ext_authz' in metadata.filter_metadata && 'rate_limit' in metadata.filter_metadata['envoy.filters.http.ext_authz'] ? metadata.filter_metadata['envoy.filters.http.ext_authz'].rate_limit : metadata.filter_metadata['envoy.filters.http.ratelimit'].outcome)%";

fn access_log(mode: AccessLogMode, limits_in_authz: bool) -> Option<AccessLog> {
    let value = match mode {
        AccessLogMode::Off => return None,
        AccessLogMode::Json => {
            let fields = proto::string_struct(JSON_ACCESS_LOG.iter().map(|&(k, v)| {
                (
                    k,
                    if k == "rate_limit" && limits_in_authz {
                        RATE_LIMIT_EITHER
                    } else {
                        v
                    },
                )
            }));
            proto::encode_with_fields(
                &StdoutAccessLog::default(),
                &[(STDOUT_LOG_FORMAT, json_format_bytes(&fields))],
            )
        }
        AccessLogMode::Text => StdoutAccessLog {
            access_log_format: Some(stdout_access_log::AccessLogFormat::LogFormat(
                SubstitutionFormatString {
                    format: Some(substitution_format_string::Format::TextFormatSource(
                        DataSource {
                            specifier: Some(data_source::Specifier::InlineString(
                                TEXT_ACCESS_LOG.to_string(),
                            )),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                },
            )),
        }
        .encode_to_vec(),
    };
    Some(AccessLog {
        name: STDOUT_ACCESS_LOG.to_string(),
        filter: None,
        config_type: Some(access_log::ConfigType::TypedConfig(proto::pack_bytes(
            proto::type_url::STDOUT_ACCESS_LOG,
            value,
        ))),
    })
}

/// Terminates TLS with the certificate Envoy fetches over SDS (on the ADS stream), so a renewed
/// certificate reaches Envoy as a Secret update instead of a listener drain. With `client_ca`
/// (its SDS name, and whether a certificate is required), the handshake asks for a client
/// certificate and verifies a presented one against those CAs, also when it is optional.
fn downstream_tls(secret: &str, client_ca: Option<(String, bool)>) -> TransportSocket {
    let (validation, required) = match client_ca {
        // The CA always comes with `require_client_certificate`: without a validation context
        // Envoy asks for no certificate at all, and `true` alone lets everyone through.
        Some((name, required)) => (
            Some(ValidationContextType::ValidationContextSdsSecretConfig(
                SdsSecretConfig {
                    name,
                    sds_config: Some(ads()),
                },
            )),
            Some(boolv(required)),
        ),
        None => (None, None),
    };
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: secret.to_string(),
                sds_config: Some(ads()),
            }],
            // Offer HTTP/2 to clients that support it; the HCM's AUTO codec follows ALPN.
            alpn_protocols: vec!["h2".to_string(), "http/1.1".to_string()],
            validation_context_type: validation,
            ..Default::default()
        }),
        require_client_certificate: required,
        ..Default::default()
    };
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(proto::pack(
            proto::type_url::DOWNSTREAM_TLS_CONTEXT,
            &ctx,
        ))),
    }
}

/// Decodes the HCM of a network filter, if it is one (tests read what translation encoded).
#[cfg(test)]
pub(super) fn decode_hcm(f: &Filter) -> Option<HttpConnectionManager> {
    if f.name != HCM_FILTER {
        return None;
    }
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any))
            if any.type_url == proto::type_url::HTTP_CONNECTION_MANAGER =>
        {
            HttpConnectionManager::decode(any.value.as_slice()).ok()
        }
        _ => None,
    }
}

/// The RDS route configuration name an HCM filter asks for.
#[cfg(test)]
pub(super) fn rds_name(f: &Filter) -> Option<String> {
    match decode_hcm(f)?.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_strings_cannot_break_out() {
        assert_eq!(lua_string("api_key"), "\"api_key\"");
        assert_eq!(
            lua_string("a\"b\\c]] end"),
            "\"a\\034b\\092c\\093\\093\\032end\""
        );
        assert_eq!(lua_string("é"), "\"\\195\\169\"");
    }
}

#[cfg(test)]
mod rate_limit_log_tests {
    use super::*;

    /// The CEL expression names the very namespaces and keys the two services write.
    #[test]
    fn the_either_field_reads_what_both_services_write() {
        let ext_authz = format!(
            "metadata.filter_metadata['{}'].{}",
            proto::authz::metadata::NAMESPACE,
            proto::authz::metadata::RATE_LIMIT
        );
        let rls = format!(
            "metadata.filter_metadata['{}'].{}",
            proto::ratelimit::metadata::NAMESPACE,
            proto::ratelimit::metadata::OUTCOME
        );
        assert!(
            RATE_LIMIT_EITHER.contains(&ext_authz),
            "{RATE_LIMIT_EITHER}"
        );
        assert!(RATE_LIMIT_EITHER.contains(&rls), "{RATE_LIMIT_EITHER}");
        assert!(JSON_ACCESS_LOG.iter().any(|(k, _)| *k == "rate_limit"));
    }
}
