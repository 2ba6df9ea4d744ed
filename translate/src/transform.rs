//! `transform` (spec §9) → the `TransformPolicy` transform-service receives, and the Envoy side:
//! the ext_proc filter (disabled by default, enabled by each transformed route's per-route
//! config), its cluster, and the route settings a transform needs.
//!
//! Envoy sends a transformed route's request headers, and its bodies only in the directions the
//! route edits, whole (`BUFFERED`), to transform-service. The filter never fails open
//! (`failure_mode_allow: false`): a transform that cannot run is a 502 (an error) or a 504 (late)
//! with the spec's JSON body, never the untransformed body.

use std::time::Duration;

use proto::pb::envoy::config::core::v3::{grpc_service, GrpcService, HeaderValue};
use proto::pb::envoy::extensions::filters::http::ext_proc::v3::{
    ext_proc_per_route, processing_mode::BodySendMode, processing_mode::HeaderSendMode,
    ExtProcOverrides, ExtProcPerRoute, ExternalProcessor, ProcessingMode,
};
use proto::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use proto::transform::{Envelope, JsonEdits, Member, Rename, RouteTransform, TransformPolicy};

use super::duration;
use super::listener::CelReply;

/// Envoy's ext_proc HTTP filter name.
pub const FILTER: &str = proto::transform::EXT_PROC_FILTER;
/// The cluster Envoy reaches transform-service through (its node group name, which no user
/// service may take).
pub const CLUSTER: &str = proto::group::TRANSFORM;

/// Request headers a route that transforms responses does not forward: with `Accept-Encoding`
/// the upstream could compress the body transform-service must read (gateway `compression`
/// compresses after the transform, from the client's own header, which the compressor filters
/// read before the router removes it), and with `Range` or `If-Range` it could answer a part
/// of the body, which is not JSON and would pass unchanged.
pub const RESPONSE_ROUTE_REMOVES: [&str; 3] = ["accept-encoding", "range", "if-range"];

/// Envoy's route timeout when a route sets none.
const ENVOY_DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// True when some route of `gw` transforms a body.
pub fn gateway_uses(gw: &config::Gateway) -> bool {
    gw.routes.iter().any(|r| r.transform.is_some())
}

/// Every route of every gateway, sorted by name (see [`TransformPolicy::routes`]).
pub fn policy(cfg: &config::Config) -> TransformPolicy {
    let mut routes: Vec<RouteTransform> = cfg
        .gateways
        .values()
        .flat_map(|gw| &gw.routes)
        .map(|r| {
            let t = r.transform.as_ref();
            RouteTransform {
                name: r.name.clone(),
                request: t.and_then(|t| t.request.as_ref()).map(edits),
                response: t.and_then(|t| t.response.as_ref()).map(edits),
                xml: t.is_some_and(|t| t.xml),
            }
        })
        .collect();
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    TransformPolicy { routes }
}

fn edits(e: &config::JsonEdits) -> JsonEdits {
    let member = |(name, json): &(String, String)| Member {
        name: name.clone(),
        json: json.clone(),
    };
    JsonEdits {
        remove: e.remove.clone(),
        set: e.set.iter().map(member).collect(),
        rename: e
            .rename
            .iter()
            .map(|(from, to)| Rename {
                from: from.clone(),
                to: to.clone(),
            })
            .collect(),
        envelope: e.envelope.as_ref().map(|env| Envelope {
            field: env.field.clone(),
            with: env.with.iter().map(member).collect(),
        }),
    }
}

/// The service as Envoy reaches it (gRPC over HTTP/2, one endpoint).
pub fn service(cfg: &config::Config) -> config::Service {
    let mut svc = super::policy_service(&cfg.transform_service.address);
    svc.tls = cfg.transform_service.tls.clone();
    svc
}

/// How many messages Envoy and transform-service exchange for one request of `t`: the request
/// headers always (they carry `Accept` and the request id), the request body when the route
/// edits requests, the response headers and body when it edits responses.
fn messages(t: &config::Transform) -> u32 {
    1 + u32::from(t.request.is_some()) + 2 * u32::from(t.edits_responses())
}

/// ext_proc's per-message timeout for a gateway: `transforms.service.timeout`, shortened so
/// that on every transformed route all of one request's messages together fit in the route's
/// `timeout` (Envoy's 15 s when it sets none; `0s` sets no bound). Envoy has one timeout per
/// filter, not per route, so the shortest route decides for the gateway.
pub fn message_timeout(cfg: &config::Config, gw: &config::Gateway) -> Duration {
    gw.routes
        .iter()
        .filter_map(|r| {
            let t = r.transform.as_ref()?;
            let bound = r.timeout.unwrap_or(ENVOY_DEFAULT_ROUTE_TIMEOUT);
            (!bound.is_zero()).then(|| bound / messages(t))
        })
        .fold(cfg.transform_service.timeout, Duration::min)
        .max(Duration::from_millis(1))
}

/// The gateway's filter. Nothing is sent by default: each transformed route's
/// [`per_route`] says what to send.
pub fn http_filter(cfg: &config::Config, gw: &config::Gateway) -> ExternalProcessor {
    ExternalProcessor {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: CLUSTER.into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        // Fail closed: an error or a late answer never lets a body through untransformed.
        failure_mode_allow: false,
        status_on_error: Some(HttpStatus {
            code: StatusCode::BadGateway as i32,
        }),
        message_timeout: Some(duration(message_timeout(cfg, gw))),
        // transform-service skips the body of a response that is not JSON (or a request whose
        // route edits nothing for it) by overriding the body mode in its headers answer, so
        // Envoy does not buffer what will not be edited.
        allow_mode_override: true,
        // The route is matched before the filter and the transform changes no header a route
        // matches on.
        disable_clear_route_cache: true,
        processing_mode: Some(processing(None)),
        ..Default::default()
    }
}

/// What Envoy sends for a route: `None` sends nothing but the request headers.
fn processing(t: Option<&config::Transform>) -> ProcessingMode {
    let body = |on: bool| {
        if on {
            BodySendMode::Buffered
        } else {
            BodySendMode::None
        }
    } as i32;
    let responses = t.is_some_and(config::Transform::edits_responses);
    ProcessingMode {
        request_header_mode: HeaderSendMode::Send as i32,
        response_header_mode: if responses {
            HeaderSendMode::Send
        } else {
            HeaderSendMode::Skip
        } as i32,
        request_body_mode: body(t.is_some_and(|t| t.request.is_some())),
        response_body_mode: body(responses),
        request_trailer_mode: HeaderSendMode::Skip as i32,
        response_trailer_mode: HeaderSendMode::Skip as i32,
    }
}

/// The route's per-filter config: on routes with `transform`, the filter is enabled with the
/// phases the route needs and the route's name as gRPC metadata; elsewhere none (the filter is
/// disabled by default).
pub fn per_route(r: &config::Route) -> Option<ExtProcPerRoute> {
    let t = r.transform.as_ref()?;
    Some(ExtProcPerRoute {
        r#override: Some(ext_proc_per_route::Override::Overrides(ExtProcOverrides {
            processing_mode: Some(processing(Some(t))),
            grpc_initial_metadata: vec![HeaderValue {
                key: proto::transform::ROUTE_METADATA.to_string(),
                value: r.name.clone(),
                ..Default::default()
            }],
            ..Default::default()
        })),
    })
}

/// The spec's JSON bodies for ext_proc's own failures, on gateways with a transform:
/// transform-service late (504) or failed, unreachable or without a policy for the route (502).
/// transform-service's own refusals (413, 415, 400, 502, 503) carry their bodies already and
/// details that these do not match.
pub(super) fn error_replies(gw: &config::Gateway) -> Vec<CelReply> {
    if !gateway_uses(gw) {
        return Vec::new();
    }
    vec![
        CelReply {
            expression: "response.code_details.startsWith('ext_proc') && response.code_details.contains('timeout')".to_string(),
            status: Some(504),
            error: "gateway_timeout",
            message: "the transform did not finish in time",
        },
        CelReply {
            expression: "response.code_details.startsWith('ext_proc')".to_string(),
            status: Some(502),
            error: "bad_gateway",
            message: "the transform could not run",
        },
    ]
}
