//! `grpc` on routes: Envoy's gRPC-JSON transcoder (`grpc.transcode`) and gRPC-Web filter
//! (`grpc.web`).
//!
//! Both filters are in the chain of every gateway with such a route, off (`disabled`), and each
//! route that asks for one turns it on with a `FilterConfig`: the transcoder with the route's
//! own descriptor set and services, gRPC-Web with an empty config. They sit after auth, rate
//! limits and the body limit, so those act on the client's own request (the JSON, or the
//! gRPC-Web frames), and before the router.

use std::collections::BTreeMap;
use std::path::PathBuf;

use proto::pb::envoy::config::route::v3::FilterConfig;
use proto::pb::envoy::extensions::filters::http::grpc_json_transcoder::v3::{
    grpc_json_transcoder::{DescriptorSet, PrintOptions, RequestValidationOptions},
    GrpcJsonTranscoder,
};
use proto::pb::envoy::extensions::filters::http::grpc_web::v3::GrpcWeb;
use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use proto::pb::google::protobuf::Any;

use super::TranslateError;
use config::{Gateway, Route};

pub(super) const TRANSCODER_FILTER: &str = "envoy.filters.http.grpc_json_transcoder";
pub(super) const WEB_FILTER: &str = "envoy.filters.http.grpc_web";

const TRANSCODER_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder";
const WEB_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb";
const FILTER_CONFIG_TYPE_URL: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

/// Route name → the transcoder config of each route with `grpc.transcode`, built from the
/// descriptor bytes the loader read.
pub(crate) type Transcoders = BTreeMap<String, GrpcJsonTranscoder>;

/// The transcoder configs of a gateway's routes.
pub(super) fn transcoders(
    gw: &Gateway,
    files: &BTreeMap<PathBuf, Vec<u8>>,
) -> Result<Transcoders, TranslateError> {
    let mut out = BTreeMap::new();
    for r in &gw.routes {
        let Some(t) = r.grpc.as_ref().and_then(|g| g.transcode.as_ref()) else {
            continue;
        };
        let bytes = super::file(files, &t.descriptor, "grpc.transcode.descriptor")?;
        out.insert(r.name.clone(), transcoder(bytes, &t.services));
    }
    Ok(out)
}

/// The transcoder for `services` of the descriptor set `bytes`.
pub(super) fn transcoder(bytes: &[u8], services: &[String]) -> GrpcJsonTranscoder {
    GrpcJsonTranscoder {
        descriptor_set: Some(DescriptorSet::ProtoDescriptorBin(bytes.to_vec())),
        services: services.to_vec(),
        // A gRPC error becomes its HTTP status with the status as JSON, not a 200 with
        // grpc-status trailers a REST client does not read.
        convert_grpc_status: true,
        // The transcoded request (now `POST /package.Service/Method`) stays on the route that
        // matched the REST request, whose policies the filters before already applied; by
        // default Envoy would match it again, possibly to another route or none.
        match_incoming_request_route: true,
        print_options: Some(PrintOptions {
            always_print_primitive_fields: true,
            ..Default::default()
        }),
        request_validation_options: Some(RequestValidationOptions {
            // A REST request that maps to no method of `services` is refused here, not sent
            // to a gRPC upstream that cannot read it (gRPC requests pass unchanged).
            reject_unknown_method: true,
            // Query parameters that name no field are refused, not silently dropped.
            reject_unknown_query_parameters: true,
            reject_binding_body_field_collisions: true,
        }),
        ..Default::default()
    }
}

fn uses_web(gw: &Gateway) -> bool {
    gw.routes
        .iter()
        .any(|r| r.grpc.as_ref().is_some_and(|g| g.web))
}

/// The gateway chain's gRPC filters, off unless a route turns them on. The transcoder needs a
/// valid config even while off: the first transcoded route's.
pub(super) fn http_filters(gw: &Gateway, transcoders: &Transcoders) -> Vec<HttpFilter> {
    let mut filters = Vec::new();
    if let Some(first) = gw.routes.iter().find_map(|r| transcoders.get(&r.name)) {
        filters.push(HttpFilter {
            name: TRANSCODER_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(proto::pack(
                TRANSCODER_TYPE_URL,
                first,
            ))),
            disabled: true,
            ..Default::default()
        });
    }
    if uses_web(gw) {
        filters.push(HttpFilter {
            name: WEB_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(proto::pack(
                WEB_TYPE_URL,
                &GrpcWeb::default(),
            ))),
            disabled: true,
            ..Default::default()
        });
    }
    filters
}

/// The per-filter configs that turn the route's gRPC filters on.
pub(super) fn route_configs(r: &Route, transcoders: &Transcoders) -> Vec<(String, Any)> {
    let Some(g) = &r.grpc else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(t) = transcoders.get(&r.name) {
        out.push((
            TRANSCODER_FILTER.to_string(),
            enable(proto::pack(TRANSCODER_TYPE_URL, t)),
        ));
    }
    if g.web {
        // An empty config turns on the filter the chain has off; Envoy refuses a FilterConfig
        // without one.
        out.push((WEB_FILTER.to_string(), enable(Any::default())));
    }
    out
}

fn enable(config: Any) -> Any {
    proto::pack(
        FILTER_CONFIG_TYPE_URL,
        &FilterConfig {
            config: Some(config),
            ..Default::default()
        },
    )
}
