//! Spec §10 `tracing`: the HttpConnectionManager's OpenTelemetry tracer and the cluster its
//! spans leave through.

use proto::pb::envoy::config::core::v3::{grpc_service, GrpcService};
use proto::pb::envoy::config::trace::v3::{tracing::Http as Provider, OpenTelemetryConfig};
use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing as HcmTracing;
use proto::pb::envoy::r#type::v3::Percent;

use super::boolv;

/// The cluster Envoy exports spans through (reserved: no `services` entry can take the name).
pub const CLUSTER: &str = proto::TRACING_CLUSTER;
const OPENTELEMETRY_TRACER: &str = "envoy.tracers.opentelemetry";

/// The collector as Envoy reaches it: OTLP is gRPC over plain HTTP/2.
pub fn service(t: &config::Tracing) -> config::Service {
    super::policy_service(&t.collector)
}

/// The HCM's `tracing`: Envoy's OpenTelemetry tracer, exporting to [`CLUSTER`].
pub fn hcm(t: &config::Tracing) -> HcmTracing {
    let otel = OpenTelemetryConfig {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: CLUSTER.to_string(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        service_name: t.service_name.clone(),
        ..Default::default()
    };
    let percent = |per_million: u32| Percent {
        value: f64::from(per_million) / 10_000.0,
    };
    HcmTracing {
        // A request without a trace of its own starts a sampled one this often. A client-sent
        // `traceparent` keeps its own sampled flag (Envoy continues it as it is).
        random_sampling: Some(percent(t.sample_per_million)),
        // `x-client-trace-id` forcing a trace: off, so only `sample` and the client's
        // `traceparent` decide.
        client_sampling: Some(percent(0)),
        overall_sampling: Some(percent(1_000_000)),
        provider: Some(Provider {
            name: OPENTELEMETRY_TRACER.to_string(),
            config_type: Some(
                proto::pb::envoy::config::trace::v3::tracing::http::ConfigType::TypedConfig(
                    proto::pack(proto::type_url::OPENTELEMETRY_TRACER, &otel),
                ),
            ),
        }),
        // The router starts a client span per upstream request, a child of the request's
        // span, and the upstream's `traceparent` names it.
        spawn_upstream_span: Some(boolv(true)),
        ..Default::default()
    }
}
