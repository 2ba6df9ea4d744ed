//! Services → Envoy Clusters (and ClusterLoadAssignments for EDS clusters).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use proto::pb::envoy::config::cluster::v3::{
    circuit_breakers, cluster, CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier,
};
use proto::pb::envoy::config::core::v3::data_source::Specifier;
use proto::pb::envoy::config::core::v3::{
    address, health_check, socket_address, transport_socket, Address, DataSource,
    HealthCheck as EnvoyHealthCheck, Http2ProtocolOptions, RoutingPriority, SocketAddress,
    TransportSocket,
};
use proto::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, subject_alt_name_matcher, CertificateValidationContext, CommonTlsContext,
    SdsSecretConfig, Secret, SubjectAltNameMatcher, UpstreamTlsContext,
};
use proto::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{explicit_http_config, ExplicitHttpConfig, UpstreamProtocolOptions},
    HttpProtocolOptions,
};
use proto::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use proto::pb::envoy::r#type::v3::CodecClientType;

use super::{ads, duration, file, u32v, TranslateError};
use config::{HostPort, LbPolicy, Protocol, Service, UpstreamTls};

/// The extension name Envoy expects as the `typed_extension_protocol_options` key.
const HTTP_PROTOCOL_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// Bytes Envoy buffers per upstream connection before it stops reading from it: Envoy's default
/// (1 MiB) lets a slow or hostile client that stops reading pin a megabyte of every upstream
/// response it asked for. 32 KiB is the cluster value of Envoy's edge-proxy guide.
pub const UPSTREAM_CONNECTION_BUFFER: u32 = 32 * 1024;
/// HTTP/2 flow-control windows towards `http2` and `grpc` upstreams (and the policy services):
/// Envoy's defaults (16 MiB per stream, 24 MiB per connection) let an upstream push far more
/// than a client drains; these are the values of Envoy's edge-proxy guide, as on the listeners.
pub const UPSTREAM_STREAM_WINDOW: u32 = 64 * 1024;
pub const UPSTREAM_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// One cluster per service, named after it. Returns the ClusterLoadAssignment to serve over EDS
/// when the cluster uses EDS.
pub(super) fn cluster(
    gateway: &str,
    name: &str,
    svc: &Service,
    files: &BTreeMap<PathBuf, Vec<u8>>,
) -> Result<(Cluster, Option<ClusterLoadAssignment>), TranslateError> {
    let http2 = matches!(svc.protocol, Protocol::Http2 | Protocol::Grpc);
    let mut c = Cluster {
        name: name.to_string(),
        connect_timeout: Some(duration(svc.connect_timeout)),
        lb_policy: lb_policy(svc.lb) as i32,
        circuit_breakers: Some(circuit_breakers(svc)),
        per_connection_buffer_limit_bytes: Some(u32v(UPSTREAM_CONNECTION_BUFFER)),
        ..Default::default()
    };

    let cla = load_assignment(name, &svc.endpoints);
    let mut eds = None;
    if svc.endpoints.iter().all(HostPort::is_ip) {
        // EDS lets endpoint changes reach Envoy without re-sending (and re-warming) the cluster.
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        ));
        c.eds_cluster_config = Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        });
        eds = Some(cla);
    } else {
        // EDS carries only IP addresses, so any DNS name makes this a STRICT_DNS cluster that
        // Envoy resolves (and re-resolves) itself; IP literals in the same list resolve to
        // themselves.
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
        // Prefer IPv4: containers commonly publish AAAA records that are not routable.
        c.dns_lookup_family = cluster::DnsLookupFamily::V4Preferred as i32;
        c.load_assignment = Some(cla);
    }

    if let Some(hc) = &svc.health_check {
        c.health_checks.push(EnvoyHealthCheck {
            timeout: Some(duration(hc.timeout)),
            interval: Some(duration(hc.interval)),
            // Without this Envoy checks idle clusters only once a minute, so a host going down
            // before the first request would stay "healthy" far longer than the configured interval.
            no_traffic_interval: Some(duration(hc.interval)),
            healthy_threshold: Some(u32v(hc.healthy)),
            unhealthy_threshold: Some(u32v(hc.unhealthy)),
            health_checker: Some(health_check::HealthChecker::HttpHealthCheck(
                health_check::HttpHealthCheck {
                    path: hc.path.clone(),
                    codec_client_type: if http2 {
                        CodecClientType::Http2
                    } else {
                        CodecClientType::Http1
                    } as i32,
                    ..Default::default()
                },
            )),
            ..Default::default()
        });
    }

    if let Some(od) = &svc.outlier_detection {
        c.outlier_detection = Some(EnvoyOutlier {
            consecutive_5xx: Some(u32v(od.consecutive_5xx)),
            interval: Some(duration(od.interval)),
            base_ejection_time: Some(duration(od.ejection_time)),
            max_ejection_percent: Some(u32v(od.max_ejection_percent)),
            ..Default::default()
        });
    }

    if let Some(tls) = &svc.tls {
        c.transport_socket = Some(upstream_tls(gateway, name, tls, http2, files)?);
    }

    if http2 {
        let opts = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(
                        explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions {
                                initial_stream_window_size: Some(u32v(UPSTREAM_STREAM_WINDOW)),
                                initial_connection_window_size: Some(u32v(
                                    UPSTREAM_CONNECTION_WINDOW,
                                )),
                                ..Default::default()
                            },
                        ),
                    ),
                },
            )),
            ..Default::default()
        };
        // A single-entry map encodes deterministically.
        c.typed_extension_protocol_options = HashMap::from([(
            HTTP_PROTOCOL_OPTIONS_KEY.to_string(),
            proto::pack(proto::type_url::HTTP_PROTOCOL_OPTIONS, &opts),
        )]);
    }

    Ok((c, eds))
}

fn lb_policy(lb: LbPolicy) -> cluster::LbPolicy {
    match lb {
        LbPolicy::RoundRobin => cluster::LbPolicy::RoundRobin,
        LbPolicy::LeastRequest => cluster::LbPolicy::LeastRequest,
        LbPolicy::Random => cluster::LbPolicy::Random,
        LbPolicy::RingHash => cluster::LbPolicy::RingHash,
        LbPolicy::Maglev => cluster::LbPolicy::Maglev,
    }
}

fn circuit_breakers(svc: &Service) -> CircuitBreakers {
    let cb = &svc.circuit_breaker;
    CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            priority: RoutingPriority::Default as i32,
            max_connections: Some(u32v(cb.max_connections)),
            max_pending_requests: Some(u32v(cb.max_pending)),
            max_requests: Some(u32v(cb.max_requests)),
            max_retries: Some(u32v(cb.max_retries)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One locality holding every endpoint, in file order.
fn load_assignment(name: &str, endpoints: &[HostPort]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints
                .iter()
                .map(|hp| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket_address(&hp.host, hp.port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(super) fn socket_address(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            protocol: socket_address::Protocol::Tcp as i32,
            address: host.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn upstream_tls(
    gateway: &str,
    cluster: &str,
    tls: &UpstreamTls,
    http2: bool,
    files: &BTreeMap<PathBuf, Vec<u8>>,
) -> Result<TransportSocket, TranslateError> {
    let validation = match &tls.ca_file {
        Some(ca) => {
            // Inline bytes, never a filename: Envoy may run in another container or host, and
            // a changed CA file must change the content hash.
            let bytes = file(files, ca, "upstream CA file")?;
            Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(DataSource {
                            specifier: Some(Specifier::InlineBytes(bytes.to_vec())),
                            ..Default::default()
                        }),
                        // The SNI doubles as the name the upstream's certificate must carry; without it,
                        // any certificate signed by the CA is accepted.
                        match_typed_subject_alt_names: tls
                            .sni
                            .iter()
                            .map(|sni| SubjectAltNameMatcher {
                                san_type: subject_alt_name_matcher::SanType::Dns as i32,
                                matcher: Some(StringMatcher {
                                    match_pattern: Some(MatchPattern::Exact(sni.clone())),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    },
                ),
            )
        }
        None => None,
    };
    // Envoy's client certificate (mTLS) travels over SDS, like the listeners' certificates: a
    // renewed certificate is then a Secret update that Envoy swaps in for new connections,
    // not a changed cluster that Envoy would drain and re-create.
    let tls_certificate_sds_secret_configs = match &tls.client_cert {
        Some(_) => vec![SdsSecretConfig {
            name: client_cert_secret_name(gateway, cluster),
            sds_config: Some(ads()),
        }],
        None => Vec::new(),
    };
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs,
            // Many servers (Go's among them) only speak HTTP/2 over TLS when ALPN negotiated it.
            alpn_protocols: vec![if http2 { "h2" } else { "http/1.1" }.to_string()],
            validation_context_type: validation,
            ..Default::default()
        }),
        sni: tls.sni.clone().unwrap_or_default(),
        ..Default::default()
    };
    Ok(TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(proto::pack(
            proto::type_url::UPSTREAM_TLS_CONTEXT,
            &ctx,
        ))),
    })
}

/// The SDS name of the client certificate a cluster presents; gateway-qualified like the
/// listeners' (see [`crate::secret_name`]).
pub(super) fn client_cert_secret_name(gateway: &str, cluster: &str) -> String {
    format!("{gateway}/services/{cluster}/client-cert")
}

/// The Secret holding a service's client certificate, when its `tls` has one.
pub(super) fn client_cert_secret(
    gateway: &str,
    cluster: &str,
    svc: &Service,
    files: &BTreeMap<PathBuf, Vec<u8>>,
) -> Result<Option<Secret>, TranslateError> {
    let Some(c) = svc.tls.as_ref().and_then(|t| t.client_cert.as_ref()) else {
        return Ok(None);
    };
    crate::secret::certificate_secret(
        client_cert_secret_name(gateway, cluster),
        file(files, &c.cert_file, "client certificate file")?,
        file(files, &c.key_file, "client key file")?,
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const FILE: &str = "/etc/gw/gateway.yaml";

    fn policy_clusters(tls: &str) -> Vec<Cluster> {
        let yaml = format!(
            r#"version: 1
auth:
  service: {{ address: authz:9001, {tls} }}
rate_limits:
  service: {{ address: rls:9002, {tls} }}
gateways:
  edge:
    listeners: [{{ name: http, port: 8080 }}]
    routes:
      - {{ name: r, match: {{ prefix: / }}, respond: {{ status: 200 }}, auth: none }}
"#
        );
        let config = config::parse(&yaml, Path::new(FILE))
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        let files: BTreeMap<PathBuf, Vec<u8>> = ["ca.pem", "edge.pem", "edge.key"]
            .iter()
            .map(|f| {
                let p = Path::new("/etc/gw/pki").join(f);
                let text = format!("contents of {}", p.display()).into_bytes();
                (p, text)
            })
            .collect();
        vec![
            cluster(
                "edge",
                "authz",
                &crate::authz::service(config.auth.as_ref().unwrap()),
                &files,
            )
            .unwrap()
            .0,
            cluster(
                "edge",
                "rls",
                &crate::ratelimit::service(config.rate_limits.as_ref().unwrap()),
                &files,
            )
            .unwrap()
            .0,
        ]
    }

    fn tls_context(c: &Cluster) -> UpstreamTlsContext {
        let ts = c.transport_socket.as_ref().expect("a transport socket");
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
            panic!("no typed config")
        };
        prost::Message::decode(any.value.as_slice()).expect("UpstreamTlsContext")
    }

    #[test]
    fn policy_services_get_mtls_with_a_client_certificate_when_asked() {
        for c in policy_clusters(
            "tls: { sni: policy, ca_file: pki/ca.pem, cert_file: pki/edge.pem, key_file: pki/edge.key }",
        ) {
            let ctx = tls_context(&c);
            assert_eq!(ctx.sni, "policy");
            let common = ctx.common_tls_context.unwrap();
            assert_eq!(common.alpn_protocols, ["h2"], "{}: gRPC", c.name);
            // Over SDS, never inline: replacing the files rotates it without a cluster drain.
            assert!(common.tls_certificates.is_empty(), "{}", c.name);
            let [sds] = common.tls_certificate_sds_secret_configs.as_slice() else {
                panic!("{}: one client certificate", c.name)
            };
            assert_eq!(sds.name, format!("edge/services/{}/client-cert", c.name));
            assert_eq!(sds.sds_config, Some(ads()));
            assert!(common.validation_context_type.is_some(), "{}: CA", c.name);
        }
    }

    #[test]
    fn policy_services_stay_plain_text_by_default() {
        for c in policy_clusters("timeout: 1s") {
            assert!(c.transport_socket.is_none(), "{}", c.name);
        }
    }

    fn service_cluster(protocol: &str) -> Cluster {
        let yaml = format!(
            "version: 1\nservices:\n  a: {{ endpoints: [127.0.0.1:1], protocol: {protocol} }}\ngateways:\n  edge:\n    listeners: [{{ name: http, port: 8080 }}]\n    routes:\n      - {{ name: r, match: {{ prefix: / }}, service: a, auth: none }}\n"
        );
        let config = config::parse(&yaml, Path::new(FILE))
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        cluster("edge", "a", &config.services["a"], &BTreeMap::new())
            .unwrap()
            .0
    }

    /// The HTTP/2 options of a cluster's `HttpProtocolOptions`, if it has them.
    fn http2_options(c: &Cluster) -> Option<Http2ProtocolOptions> {
        let any = c
            .typed_extension_protocol_options
            .get(HTTP_PROTOCOL_OPTIONS_KEY)?;
        assert_eq!(any.type_url, proto::type_url::HTTP_PROTOCOL_OPTIONS);
        let opts: HttpProtocolOptions =
            prost::Message::decode(any.value.as_slice()).expect("HttpProtocolOptions");
        match opts.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config:
                    Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(h2)),
            })) => Some(h2),
            other => panic!("{}: not explicit HTTP/2: {other:?}", c.name),
        }
    }

    #[test]
    fn every_cluster_buffers_32_kib_per_connection() {
        let mut clusters: Vec<Cluster> = ["http1", "http2", "grpc"]
            .into_iter()
            .map(service_cluster)
            .collect();
        clusters.extend(policy_clusters("timeout: 1s"));
        for c in &clusters {
            assert_eq!(
                c.per_connection_buffer_limit_bytes.map(|v| v.value),
                Some(32 * 1024),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn http2_upstreams_get_the_edge_guide_windows() {
        let mut clusters: Vec<Cluster> =
            ["http2", "grpc"].into_iter().map(service_cluster).collect();
        // The policy services speak gRPC: Envoy's windows towards them are bounded too.
        clusters.extend(policy_clusters("timeout: 1s"));
        for c in &clusters {
            let h2 = http2_options(c).unwrap_or_else(|| panic!("{}: no HTTP/2 options", c.name));
            assert_eq!(
                h2.initial_stream_window_size.map(|v| v.value),
                Some(65_536),
                "{}",
                c.name
            );
            assert_eq!(
                h2.initial_connection_window_size.map(|v| v.value),
                Some(1_048_576),
                "{}",
                c.name
            );
        }
        // HTTP/1 upstreams have no HTTP/2 options to bound.
        assert!(http2_options(&service_cluster("http1")).is_none());
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let yaml = "version: 1\nservices:\n  a: { endpoints: [a:1], tls: { cert_file: c.pem } }\ngateways:\n  edge:\n    listeners: [{ name: http, port: 8080 }]\n    routes:\n      - { name: r, match: { prefix: / }, service: a, auth: none }\n";
        let err = config::parse(yaml, Path::new(FILE))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`cert_file` and `key_file` go together"),
            "{err}"
        );
    }
}
