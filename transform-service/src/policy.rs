//! The policy source: the `TransformPolicy` from xds-server, compiled into each route's
//! [`RoutePlan`] and swapped in atomically. A policy that does not compile is NACKed and the
//! previous one stays in force.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use proto::pb::google::protobuf::Any;
use proto::transform::TransformPolicy;
use transform::{CompileError, JsonEdits};

use crate::metrics::Metrics;

/// What the service does on one route.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoutePlan {
    pub request: Option<JsonEdits>,
    pub response: Option<JsonEdits>,
    pub xml: bool,
}

impl RoutePlan {
    pub fn edits_responses(&self) -> bool {
        self.response.is_some() || self.xml
    }
}

/// Every route of every gateway (a route without `transform` has an empty plan).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    pub routes: HashMap<String, RoutePlan>,
}

#[derive(Debug, thiserror::Error)]
#[error("route {route}: {source}")]
pub struct PolicyError {
    route: String,
    #[source]
    source: CompileError,
}

impl Policy {
    pub fn compile(pb: &TransformPolicy) -> Result<Policy, PolicyError> {
        let edits = |route: &str, e: &proto::transform::JsonEdits| {
            let pairs = |m: &[proto::transform::Member]| -> Vec<(String, String)> {
                m.iter().map(|m| (m.name.clone(), m.json.clone())).collect()
            };
            let set = pairs(&e.set);
            let rename: Vec<(String, String)> = e
                .rename
                .iter()
                .map(|r| (r.from.clone(), r.to.clone()))
                .collect();
            let with = e.envelope.as_ref().map(|env| pairs(&env.with));
            let envelope = e
                .envelope
                .as_ref()
                .map(|env| (env.field.as_str(), with.as_deref().unwrap_or_default()));
            JsonEdits::compile(&e.remove, &set, &rename, envelope).map_err(|source| PolicyError {
                route: route.to_string(),
                source,
            })
        };
        let mut routes = HashMap::with_capacity(pb.routes.len());
        for r in &pb.routes {
            let plan = RoutePlan {
                request: r.request.as_ref().map(|e| edits(&r.name, e)).transpose()?,
                response: r.response.as_ref().map(|e| edits(&r.name, e)).transpose()?,
                xml: r.xml,
            };
            routes.insert(r.name.clone(), plan);
        }
        Ok(Policy { routes })
    }
}

/// What the gRPC endpoint reads and the xDS client writes.
#[derive(Debug, Default)]
pub struct Shared {
    /// `None` until the first policy arrived: every request is refused until then.
    pub policy: ArcSwapOption<Policy>,
    pub metrics: Metrics,
}

impl Shared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn is_ready(&self) -> bool {
        self.policy.load().is_some()
    }
}

/// Installs policies into [`Shared`]; the ADS client's `Apply`.
pub struct Applier {
    pub shared: Arc<Shared>,
}

impl xds_client::Apply for Applier {
    fn apply(&mut self, version: &str, resources: &[Any]) -> Result<(), String> {
        let result = xds_client::single_resource::<TransformPolicy>(
            resources,
            proto::type_url::TRANSFORM_POLICY,
        )
        .and_then(|pb| Policy::compile(&pb).map_err(|e| e.to_string()))
        .map(|p| {
            let transformed = p
                .routes
                .values()
                .filter(|r| r.request.is_some() || r.edits_responses())
                .count();
            self.shared.policy.store(Some(Arc::new(p)));
            transformed
        });
        let m = &self.shared.metrics;
        match &result {
            Ok(transformed) => {
                m.policy_updates.with_label_values(&["applied"]).inc();
                tracing::info!(version, transformed, "transform policy applied");
            }
            Err(e) => {
                m.policy_updates.with_label_values(&["rejected"]).inc();
                tracing::warn!(version, error = %e, "transform policy rejected; keeping the previous one");
            }
        }
        result.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use proto::transform::{JsonEdits as PbEdits, RouteTransform};
    use xds_client::Apply;

    use super::*;

    fn any(p: &TransformPolicy) -> Any {
        Any {
            type_url: proto::type_url::TRANSFORM_POLICY.into(),
            value: p.encode_to_vec(),
        }
    }

    #[test]
    fn a_bad_policy_is_refused_and_the_last_good_one_stays() {
        let shared = Shared::new();
        let mut a = Applier {
            shared: shared.clone(),
        };
        assert!(!shared.is_ready());
        let good = TransformPolicy {
            routes: vec![RouteTransform {
                name: "r".into(),
                response: Some(PbEdits {
                    remove: vec!["/secret".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        };
        a.apply("v1", &[any(&good)]).unwrap();
        let installed = shared.policy.load_full().unwrap();
        assert!(installed.routes["r"].edits_responses());
        let bad = TransformPolicy {
            routes: vec![RouteTransform {
                name: "r".into(),
                request: Some(PbEdits {
                    remove: vec!["no-slash".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        };
        for set in [vec![], vec![any(&good), any(&good)], vec![any(&bad)]] {
            assert!(a.apply("v2", &set).is_err());
            assert!(Arc::ptr_eq(&shared.policy.load_full().unwrap(), &installed));
        }
        let m = shared.metrics.render();
        assert!(
            m.contains(r#"transform_policy_updates_total{result="rejected"} 3"#),
            "{m}"
        );
    }
}
