//! YAML model → Envoy v3 resources. Pure: no I/O, deterministic output.
//!
//! Each gateway becomes one self-contained resource set ([`GatewayResources`]): its listeners,
//! one RouteConfiguration named after the gateway (shared by its listeners over RDS), the clusters
//! its routes use (plus a ClusterLoadAssignment for every EDS cluster) and a Secret per TLS
//! listener and per cluster that presents a client certificate (served over SDS so a renewed
//! certificate is swapped without a listener or cluster drain).
//!
//! Determinism: versions are content hashes, so every resource here must encode to the same bytes
//! in every process. prost encodes `map` fields from randomly seeded `HashMap`s, so no resource
//! returned by this module holds a map with more than one entry; multi-entry `Struct`s (JSON
//! formats) are pre-encoded canonically inside `Any` values with `proto::encode_struct`.

pub mod authz;
pub mod cache;
mod cluster;
mod compose;
mod grpc;
mod ip_lists;
mod listener;
pub mod ratelimit;
mod route;
mod secret;
mod snapshot;
#[cfg(test)]
mod tests;
pub mod trace;
pub mod transform;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use proto::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use proto::pb::envoy::config::cluster::v3::Cluster;
use proto::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, AggregatedConfigSource, ApiVersion, ConfigSource,
};
use proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use proto::pb::envoy::config::listener::v3::Listener;
use proto::pb::envoy::config::route::v3::{route as envoy_route, RouteConfiguration};
use proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use proto::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use proto::pb::google::protobuf;

use ads::error::{Classify, ErrorSource, RetryType};
use config::RouteAction;
pub use route::warnings;
pub use snapshot::snapshots;

/// Everything one gateway's Envoys receive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayResources {
    /// Sorted by name.
    pub clusters: Vec<Cluster>,
    /// One per EDS cluster, sorted by cluster name.
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// In file order; then, with a cached route, the cache's internal listener.
    pub listeners: Vec<Listener>,
    /// The gateway's, named after it; then, with a cached route, the cache's internal
    /// listener's ([`cache::ROUTE_CONFIG`]).
    pub routes: Vec<RouteConfiguration>,
    /// One per TLS listener, in listener order, each followed by its client CAs when it has
    /// `client_ca_file`; then one per cluster that presents a client certificate, by cluster name.
    pub secrets: Vec<Secret>,
    /// What each listener refers to, in listener order, as translation built it (before the
    /// HCM and TLS context were packed into `Any`s): [`GatewayResources::check`] reads these.
    pub listener_refs: Vec<ListenerRefs>,
    /// (cluster, SDS secret) for every cluster that presents a client certificate, as
    /// translation built them: [`GatewayResources::check`] reads these.
    pub cluster_secrets: Vec<(String, String)>,
}

/// The resources one listener makes Envoy fetch by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerRefs {
    pub listener: String,
    /// The RDS route configuration its HTTP connection manager asks for.
    pub route_config: Option<String>,
    /// The SDS secrets its TLS transport socket asks for.
    pub secrets: Vec<String>,
}

/// A dangling reference inside one gateway's resource set: Envoy would wait forever for (or
/// reject) a resource we never send. Always a bug in translation, never the user's input.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Inconsistency {
    #[error("EDS cluster {cluster} has no ClusterLoadAssignment")]
    MissingEndpoints { cluster: String },
    #[error("route {route} references missing cluster {cluster}")]
    MissingCluster { route: String, cluster: String },
    #[error("listener {listener} references missing route configuration {route_config}")]
    MissingRouteConfig {
        listener: String,
        route_config: String,
    },
    #[error("listener {listener} references missing secret {secret}")]
    MissingSecret { listener: String, secret: String },
    #[error("cluster {cluster} references missing secret {secret}")]
    MissingClusterSecret { cluster: String, secret: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranslateError {
    /// The loader reads every referenced file into `Loaded::files`; a path missing there is a bug
    /// in the loader (or a hand-built `Loaded`), reported rather than panicking.
    #[error("{what} {} was not loaded", path.display())]
    MissingFile { what: &'static str, path: PathBuf },
    /// A route references a service that does not exist (validation normally rejects this).
    #[error("route {route} references unknown service {service}")]
    UnknownService { route: String, service: String },
    /// The resources of one gateway refer to one another inconsistently: a bug in translation.
    #[error("gateway {gateway}: {problem}")]
    Inconsistent {
        gateway: String,
        #[source]
        problem: Inconsistency,
    },
}

impl Classify for TranslateError {
    fn source_kind(&self) -> ErrorSource {
        match self {
            TranslateError::MissingFile { .. } | TranslateError::Inconsistent { .. } => {
                ErrorSource::Internal
            }
            // The config names a service it does not define; validation normally says so first.
            TranslateError::UnknownService { .. } => ErrorSource::Config,
        }
    }

    /// Translation is pure: the same input gives the same error.
    fn retry(&self) -> RetryType {
        RetryType::AfterChange
    }
}

/// What a gateway's listeners and routes need to know about the policy services.
#[derive(Debug, Default)]
pub(crate) struct Policies<'a> {
    /// Set when some route of the gateway requires authentication.
    pub auth: Option<&'a config::Auth>,
    /// Set when some route of the gateway has a rate limit.
    pub limits: Option<&'a config::RateLimits>,
    /// `rate_limits.counted_by: authz-service`: the access log reads the rate-limit outcome
    /// from ext_authz's metadata too.
    pub limits_in_authz: bool,
    /// Headers removed from every client request before any filter: identity headers and the
    /// fail-open marker (`authz::early_removed_headers`).
    pub early_remove: Vec<String>,
    /// Route name → the credentials that route removes after every filter
    /// (`authz::route_credentials`).
    pub route_remove: BTreeMap<String, Vec<String>>,
    /// API-key query parameters, removed from every request after ext_authz has read them.
    pub credential_query: Vec<String>,
    /// Set when some route of the gateway has a `transform`.
    pub transforms: Option<&'a config::Config>,
    /// The `grpc.transcode` routes' transcoder configs (`grpc::transcoders`).
    pub transcoders: grpc::Transcoders,
}

/// Translates every gateway of a loaded config. Keys are gateway names (the `node.cluster` of the
/// Envoys that receive the resources).
pub fn translate(
    loaded: &config::Loaded,
) -> Result<BTreeMap<String, GatewayResources>, TranslateError> {
    let cfg = &loaded.config;
    let mut out = BTreeMap::new();
    for (name, gw) in &cfg.gateways {
        out.insert(name.clone(), translate_gateway(loaded, name, gw)?);
    }
    Ok(out)
}

/// The resources of one policy service's node group (see `proto::group`).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyResources {
    pub group: &'static str,
    pub type_url: &'static str,
    /// (resource name, encoded message).
    pub resources: Vec<(String, Vec<u8>)>,
}

/// Each policy service's node group and the one type it subscribes to.
pub const POLICY_GROUPS: [(&str, &str); 3] = [
    (proto::group::AUTHZ, proto::type_url::AUTH_POLICY),
    (proto::group::RATELIMIT, proto::type_url::RATELIMIT_POLICY),
    (proto::group::TRANSFORM, proto::type_url::TRANSFORM_POLICY),
];

/// The policy sets of every policy service. Always present (possibly empty), so a service connected to
/// a config without `auth` or `rate_limits` still receives a version and becomes ready.
pub fn policies(loaded: &config::Loaded) -> Result<Vec<PolicyResources>, TranslateError> {
    Ok(vec![
        PolicyResources {
            group: proto::group::AUTHZ,
            type_url: proto::type_url::AUTH_POLICY,
            resources: vec![(
                proto::authz::RESOURCE_NAME.to_string(),
                authz::policy(loaded)?.encode_to_vec(),
            )],
        },
        PolicyResources {
            group: proto::group::RATELIMIT,
            type_url: proto::type_url::RATELIMIT_POLICY,
            resources: vec![(
                proto::ratelimit::RESOURCE_NAME.to_string(),
                ratelimit::policy(&loaded.config).encode_to_vec(),
            )],
        },
        PolicyResources {
            group: proto::group::TRANSFORM,
            type_url: proto::type_url::TRANSFORM_POLICY,
            resources: vec![(
                proto::transform::RESOURCE_NAME.to_string(),
                transform::policy(&loaded.config).encode_to_vec(),
            )],
        },
    ])
}

fn translate_gateway(
    loaded: &config::Loaded,
    name: &str,
    gw: &config::Gateway,
) -> Result<GatewayResources, TranslateError> {
    let cfg = &loaded.config;
    // Only the clusters this gateway's routes use: another gateway's upstreams are none of this
    // Envoy's business, and unused clusters would still be health-checked. Service → the first
    // route using it (for the error message).
    let mut used: BTreeMap<&str, &str> = BTreeMap::new();
    for r in &gw.routes {
        for s in route_services(r) {
            used.entry(s).or_insert(&r.name);
        }
    }
    let mut res = GatewayResources::default();
    // Every cluster built, for the client-certificate Secrets they need.
    let mut client_certs: Vec<(&str, config::Service)> = Vec::new();
    // The rate-limit filter and its cluster, only where some route has a limit.
    let limits = cfg
        .rate_limits
        .as_ref()
        .filter(|_| ratelimit::gateway_uses(cfg, gw));
    if let Some(l) = limits {
        let svc = ratelimit::service(l);
        let (c, cla) = cluster::cluster(name, ratelimit::CLUSTER, &svc, &loaded.files)?;
        res.clusters.push(c);
        res.endpoints.extend(cla);
        client_certs.push((ratelimit::CLUSTER, svc));
    }
    // ext_authz and its cluster, only where some route requires authentication.
    let auth = cfg.auth.as_ref().filter(|_| authz::gateway_uses(gw));
    if let Some(a) = auth {
        let svc = authz::service(a);
        let (c, cla) = cluster::cluster(name, authz::CLUSTER, &svc, &loaded.files)?;
        res.clusters.push(c);
        res.endpoints.extend(cla);
        client_certs.push((authz::CLUSTER, svc));
    }
    // `compose` routes' router target (it forwards nothing).
    if compose::used(gw) {
        res.clusters.push(compose::fallback_cluster());
    }
    // ext_proc and its cluster, only where some route transforms a body.
    let transforms = transform::gateway_uses(gw).then_some(cfg);
    if transforms.is_some() {
        let svc = transform::service(cfg);
        let (c, cla) = cluster::cluster(name, transform::CLUSTER, &svc, &loaded.files)?;
        res.clusters.push(c);
        res.endpoints.extend(cla);
        client_certs.push((transform::CLUSTER, svc));
    }
    // The collector's cluster, on gateways that trace.
    if let Some(t) = &gw.tracing {
        let svc = trace::service(t);
        let (c, cla) = cluster::cluster(name, trace::CLUSTER, &svc, &loaded.files)?;
        res.clusters.push(c);
        res.endpoints.extend(cla);
    }
    // Clusters are sorted by name (see `GatewayResources`).
    res.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    res.endpoints
        .sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    let policies = Policies {
        auth,
        limits,
        limits_in_authz: cfg
            .rate_limits
            .as_ref()
            .is_some_and(|l| l.counted_by == config::CountedBy::AuthzService),
        // Even without an `auth` section: an upstream behind this gateway may trust
        // `x-client-id` and friends, so a client never gets to set them; and no API key travels
        // upstream either (spec §4).
        early_remove: authz::early_removed_headers(cfg),
        route_remove: gw
            .routes
            .iter()
            .map(|r| (r.name.clone(), authz::route_credentials(cfg, r)))
            .collect(),
        credential_query: authz::credential_query(cfg),
        transforms,
        transcoders: grpc::transcoders(gw, &loaded.files)?,
    };
    for (svc_name, route_name) in used {
        let svc = cfg
            .services
            .get(svc_name)
            .ok_or_else(|| TranslateError::UnknownService {
                route: route_name.to_string(),
                service: svc_name.to_string(),
            })?;
        let (c, cla) = cluster::cluster(name, svc_name, svc, &loaded.files)?;
        res.clusters.push(c);
        res.endpoints.extend(cla);
        client_certs.push((svc_name, svc.clone()));
    }
    for l in &gw.listeners {
        let secret_name = l.tls.as_ref().map(|_| secret_name(name, &l.name));
        res.listeners.push(listener::listener(
            name,
            gw,
            l,
            secret_name.as_deref(),
            &policies,
        ));
        // A redirecting listener carries its own route inline.
        let route_config = match listener::hcm_base(name, gw, l, &policies).route_specifier {
            Some(RouteSpecifier::Rds(rds)) if !l.https_redirect => Some(rds.route_config_name),
            _ => None,
        };
        let client_certs = l.tls.as_ref().and_then(|t| t.client_certs.as_ref());
        let ca_secret = client_certs.map(|_| client_ca_secret_name(name, &l.name));
        res.listener_refs.push(ListenerRefs {
            listener: l.name.clone(),
            route_config,
            secrets: secret_name.iter().chain(&ca_secret).cloned().collect(),
        });
        if let (Some(tls), Some(sn)) = (&l.tls, secret_name) {
            res.secrets
                .push(secret::tls_secret(sn, tls, &loaded.files)?);
        }
        if let (Some(certs), Some(sn)) = (client_certs, ca_secret) {
            res.secrets
                .push(secret::client_ca_secret(sn, certs, &loaded.files)?);
        }
    }
    // Client certificates after the listeners' (see `GatewayResources::secrets`).
    client_certs.sort_by(|a, b| a.0.cmp(b.0));
    for (cluster_name, svc) in &client_certs {
        if let Some(secret) = cluster::client_cert_secret(name, cluster_name, svc, &loaded.files)? {
            res.cluster_secrets
                .push((cluster_name.to_string(), secret.name.clone()));
            res.secrets.push(secret);
        }
    }
    res.routes.push(route::route_configuration(
        name,
        gw,
        &cfg.services,
        &policies,
    ));
    // `cache`: the internal listener the cache fills itself through, its cluster and routes.
    if cache::used(gw) {
        res.listeners.push(cache::listener());
        res.listener_refs.push(ListenerRefs {
            listener: cache::LISTENER.to_string(),
            route_config: Some(cache::ROUTE_CONFIG.to_string()),
            secrets: Vec::new(),
        });
        res.clusters.push(cache::cluster());
        res.clusters.sort_by(|a, b| a.name.cmp(&b.name));
        res.routes
            .push(cache::route_configuration(route::cached_routes(
                gw,
                &cfg.services,
                &policies,
            )));
    }
    Ok(res)
}

fn route_services(r: &config::Route) -> Vec<&str> {
    let mut services = match &r.action {
        RouteAction::Service(s) => vec![s.as_str()],
        RouteAction::Weighted(ws) => ws.iter().map(|(s, _)| s.as_str()).collect(),
        RouteAction::Respond(_) => vec![],
        // The script calls the parts' clusters by name.
        RouteAction::Compose(parts) => parts.iter().map(|p| p.service.as_str()).collect(),
    };
    // The mirror's cluster must be on the Envoy too.
    services.extend(r.mirror.as_ref().map(|m| m.service.as_str()));
    services
}

/// The SDS name of a TLS listener's certificate. Gateway-qualified so two gateways sharing one
/// Envoy binary's logs (or a future shared snapshot) can never confuse their certificates.
pub fn secret_name(gateway: &str, listener: &str) -> String {
    format!("{gateway}/{listener}")
}

/// The SDS name of the CAs a TLS listener verifies client certificates against.
pub fn client_ca_secret_name(gateway: &str, listener: &str) -> String {
    format!("{gateway}/{listener}/client-ca")
}

impl GatewayResources {
    /// Checks the cross-references inside this resource set, so a snapshot never makes Envoy
    /// wait forever for (or reject) a resource we forgot to send: every cluster a route names
    /// exists, every EDS cluster has endpoints, every listener's RDS route configuration exists
    /// and every SDS secret a listener or cluster names exists.
    pub fn check(&self) -> Result<(), Inconsistency> {
        let clusters: BTreeSet<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
        let endpoints: BTreeSet<&str> = self
            .endpoints
            .iter()
            .map(|e| e.cluster_name.as_str())
            .collect();
        let routes: BTreeSet<&str> = self.routes.iter().map(|rc| rc.name.as_str()).collect();
        let secrets: BTreeSet<&str> = self.secrets.iter().map(|s| s.name.as_str()).collect();

        for c in &self.clusters {
            let eds = matches!(c.cluster_discovery_type, Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32);
            if eds {
                let name = c
                    .eds_cluster_config
                    .as_ref()
                    .map(|e| e.service_name.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or(&c.name);
                if !endpoints.contains(name) {
                    return Err(Inconsistency::MissingEndpoints {
                        cluster: c.name.clone(),
                    });
                }
            }
        }
        for (cluster, secret) in &self.cluster_secrets {
            if !secrets.contains(secret.as_str()) {
                return Err(Inconsistency::MissingClusterSecret {
                    cluster: cluster.clone(),
                    secret: secret.clone(),
                });
            }
        }
        for rc in &self.routes {
            for rt in rc.virtual_hosts.iter().flat_map(|vh| &vh.routes) {
                if let Some(cl) = route_clusters(rt).find(|cl| !clusters.contains(cl)) {
                    return Err(Inconsistency::MissingCluster {
                        route: rt.name.clone(),
                        cluster: cl.to_string(),
                    });
                }
            }
        }
        for l in &self.listener_refs {
            if let Some(rc) = l
                .route_config
                .as_ref()
                .filter(|rc| !routes.contains(rc.as_str()))
            {
                return Err(Inconsistency::MissingRouteConfig {
                    listener: l.listener.clone(),
                    route_config: rc.clone(),
                });
            }
            if let Some(s) = l.secrets.iter().find(|s| !secrets.contains(s.as_str())) {
                return Err(Inconsistency::MissingSecret {
                    listener: l.listener.clone(),
                    secret: s.clone(),
                });
            }
        }
        Ok(())
    }
}

fn route_clusters(rt: &proto::pb::envoy::config::route::v3::Route) -> impl Iterator<Item = &str> {
    use proto::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
    let (one, weighted) = match &rt.action {
        Some(envoy_route::Action::Route(ra)) => match &ra.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => (Some(c.as_str()), None),
            Some(ClusterSpecifier::WeightedClusters(w)) => (None, Some(&w.clusters)),
            _ => (None, None),
        },
        _ => (None, None),
    };
    let mirrors = match &rt.action {
        Some(envoy_route::Action::Route(ra)) => ra.request_mirror_policies.as_slice(),
        _ => &[],
    };
    one.into_iter()
        .chain(weighted.into_iter().flatten().map(|c| c.name.as_str()))
        .chain(mirrors.iter().map(|m| m.cluster.as_str()))
}

// ---- Small shared builders ----

/// A policy service (authz-service, ratelimit-service) as Envoy reaches it: gRPC over HTTP/2,
/// one endpoint, a short connect timeout, default circuit breakers.
fn policy_service(address: &config::HostPort) -> config::Service {
    config::Service {
        endpoints: vec![address.clone()],
        protocol: config::Protocol::Grpc,
        lb: config::LbPolicy::RoundRobin,
        connect_timeout: Duration::from_secs(1),
        health_check: None,
        circuit_breaker: config::CircuitBreaker::default(),
        outlier_detection: None,
        tls: None,
    }
}

/// "Fetch this over the same ADS stream", the only config source our Envoys know.
fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn duration(d: Duration) -> protobuf::Duration {
    protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

fn u32v(value: u32) -> protobuf::UInt32Value {
    protobuf::UInt32Value { value }
}

fn boolv(value: bool) -> protobuf::BoolValue {
    protobuf::BoolValue { value }
}

/// The bytes of a file the loader read, or an error naming what it was for.
fn file<'a>(
    files: &'a BTreeMap<PathBuf, Vec<u8>>,
    path: &Path,
    what: &'static str,
) -> Result<&'a [u8], TranslateError> {
    files
        .get(path)
        .map(Vec::as_slice)
        .ok_or_else(|| TranslateError::MissingFile {
            what,
            path: path.to_path_buf(),
        })
}

/// Escapes RE2 metacharacters so `s` matches literally inside a regex.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
