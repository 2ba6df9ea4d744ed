//! `xds-server bootstrap`: an Envoy bootstrap whose only static resource is the xDS cluster.

use serde_json::json;

use config::HostPort;

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    pub gateway: String,
    pub node_id: String,
    pub xds: HostPort,
    pub admin_address: String,
    pub admin_port: u16,
    pub delta: bool,
    /// Envoy-wide limit on open downstream connections.
    pub max_connections: u64,
    /// Heap size, in bytes, at which Envoy's overload manager counts as saturated.
    pub max_heap: u64,
    /// Envoy's client certificate towards xds-server, as Envoy will find the files; none of
    /// the three: plain-text ADS.
    pub xds_tls: xds_client::tls::XdsTlsArgs,
}

/// The fixed-heap monitor's fractions (Envoy's edge-proxy guide): first return freed memory to
/// the system, then answer new requests with 503 rather than be killed for running out.
const SHRINK_HEAP_AT: f64 = 0.95;
const STOP_ACCEPTING_REQUESTS_AT: f64 = 0.98;
/// Envoy's runtime flag for drain decisions pushed to connections as events (see `render`).
pub const DRAIN_BY_EVENT: &str = "envoy.reloadable_features.use_connection_event_drain";

/// Renders the bootstrap as JSON (which Envoy also accepts as YAML).
pub fn render(o: &BootstrapOptions) -> String {
    let config_source = json!({
        "ads": {},
        "resource_api_version": "V3",
        // Wait for the control plane rather than start with a partial configuration.
        "initial_fetch_timeout": "0s"
    });
    let mut doc = json!({
        "node": { "id": o.node_id, "cluster": o.gateway },
        "admin": {
            "address": { "socket_address": { "address": o.admin_address, "port_value": o.admin_port } }
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": if o.delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{
                    "envoy_grpc": {
                        "cluster_name": "xds_cluster",
                        // Reconnect quickly after a control-plane restart; Envoy keeps serving
                        // its last configuration meanwhile.
                        "retry_policy": {
                            "retry_back_off": { "base_interval": "0.25s", "max_interval": "5s" }
                        }
                    }
                }]
            },
            "cds_config": config_source,
            "lds_config": config_source
        },
        // Internal listeners (in-process, no socket): a route's `cache` sends the requests
        // that fill the cache through one (`translate::cache`). Only the bootstrap enables them.
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"
            }
        }],
        // An edge proxy needs a ceiling on open client connections, or a connection flood
        // exhausts file descriptors and takes every route down with it; and one on memory, or
        // many slow or large requests get it killed, dropping every connection at once. The
        // overload manager exists only in the bootstrap (no xDS resource carries it).
        "overload_manager": {
            "refresh_interval": "0.25s",
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.fixed_heap",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                        "max_heap_size_bytes": o.max_heap
                    }
                },
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": o.max_connections
                    }
                }
            ],
            "actions": [
                {
                    "name": "envoy.overload_actions.shrink_heap",
                    "triggers": [{
                        "name": "envoy.resource_monitors.fixed_heap",
                        "threshold": { "value": SHRINK_HEAP_AT }
                    }]
                },
                {
                    "name": "envoy.overload_actions.stop_accepting_requests",
                    "triggers": [{
                        "name": "envoy.resource_monitors.fixed_heap",
                        "threshold": { "value": STOP_ACCEPTING_REQUESTS_AT }
                    }]
                }
            ]
        },
        // Hot reload without a failed request (spec §6): an edit of a listener's HTTP
        // connection manager (IP lists, trusted hops, CORS, compression, body limits,
        // WebSockets) makes Envoy drain the old filter chain in place. With Envoy's
        // event-driven drain (1.40's default) the connections on that chain are not told: they
        // keep their keep-alive until `--drain-time-s` ends and are then closed under requests
        // in flight (reset, or closed before the response). The polled drain decision answers
        // each of them at its next response with `Connection: close` (HTTP/1.1) or GOAWAY
        // (HTTP/2), so clients move to the new chain between requests.
        "layered_runtime": {
            "layers": [{
                "name": "static",
                "static_layer": { DRAIN_BY_EVENT: false }
            }]
        },
        "static_resources": {
            "clusters": [{
                "name": "xds_cluster",
                "type": "STRICT_DNS",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {
                            "http2_protocol_options": {
                                "connection_keepalive": { "interval": "30s", "timeout": "5s" }
                            }
                        }
                    }
                },
                "load_assignment": {
                    "cluster_name": "xds_cluster",
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                        "socket_address": { "address": o.xds.host, "port_value": o.xds.port }
                    } } }] }]
                }
            }]
        }
    });
    if let Some(tls) = o.xds_tls.files() {
        doc["static_resources"]["clusters"][0]["transport_socket"] = xds_transport_socket(&tls);
    }
    serde_json::to_string_pretty(&doc).expect("JSON values always serialize")
}

/// mTLS towards xds-server: Envoy presents its certificate (whose URI SAN names its node group,
/// which is all xds-server will then serve it) and accepts only a server certificate signed by
/// the CA and carrying the server name. The files are read once, at startup.
fn xds_transport_socket(t: &xds_client::tls::XdsTlsFiles<'_>) -> serde_json::Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": t.server_name,
            "common_tls_context": {
                // gRPC needs HTTP/2, and tonic's TLS listener offers it only through ALPN.
                "alpn_protocols": ["h2"],
                "tls_params": { "tls_minimum_protocol_version": "TLSv1_2" },
                "tls_certificates": [{
                    "certificate_chain": { "filename": t.cert },
                    "private_key": { "filename": t.key }
                }],
                "validation_context": {
                    "trusted_ca": { "filename": t.ca },
                    "match_typed_subject_alt_names": [{
                        "san_type": "DNS",
                        "matcher": { "exact": t.server_name }
                    }]
                }
            }
        }
    })
}
