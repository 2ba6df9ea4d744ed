//! The policy source: `AuthPolicy` resources from xds-server, compiled and swapped in atomically.
//! A policy that cannot be compiled is NACKed and the previous one stays in force.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use proto::authz::AuthPolicy;
use proto::pb::google::protobuf::Any;
use tracing::info;

use crate::policy::{Env, Policy};
use crate::remote::RemoteJwks;
use crate::service::Shared;

/// Installs policies into `Shared`; implements the ADS client's `Apply`.
pub struct Applier {
    shared: Arc<Shared>,
    /// `jwks_url` key sets by URL and algorithms, reused across policy versions so an unrelated
    /// edit neither refetches keys nor loses readiness.
    remotes: HashMap<String, Arc<RemoteJwks>>,
}

impl Applier {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            remotes: HashMap::new(),
        }
    }

    /// Compiles and installs one policy.
    pub fn install(&mut self, policy: &AuthPolicy) -> Result<(), String> {
        let mut env = ProcessEnv {
            shared: &self.shared,
            remotes: &mut self.remotes,
            used: Vec::new(),
        };
        let compiled = Policy::compile(policy, &mut env).map_err(|e| e.to_string())?;
        let used = env.used;
        self.remotes.retain(|k, _| used.contains(k));
        self.shared.policy.store(Some(Arc::new(compiled)));
        self.shared.limits.policy_changed();
        self.shared.refresh_ready();
        Ok(())
    }
}

impl xds_client::Apply for Applier {
    fn apply(&mut self, version: &str, resources: &[Any]) -> Result<(), String> {
        let result =
            xds_client::single_resource::<AuthPolicy>(resources, proto::type_url::AUTH_POLICY)
                .and_then(|policy| self.install(&policy));
        let m = &self.shared.metrics;
        match &result {
            Ok(()) => {
                m.policy_updates.with_label_values(&["applied"]).inc();
                info!(version, "auth policy applied");
            }
            Err(e) => {
                m.policy_updates.with_label_values(&["rejected"]).inc();
                tracing::warn!(version, error = %e, "auth policy rejected; keeping the previous one");
            }
        }
        result
    }
}

struct ProcessEnv<'a> {
    shared: &'a Arc<Shared>,
    remotes: &'a mut HashMap<String, Arc<RemoteJwks>>,
    used: Vec<String>,
}

impl Env for ProcessEnv<'_> {
    fn var(&self, name: &str) -> Option<Vec<u8>> {
        use std::os::unix::ffi::OsStringExt;
        std::env::var_os(name).map(|v| v.into_vec())
    }

    fn remote(&mut self, url: &str, algorithms: &[Algorithm]) -> Arc<RemoteJwks> {
        let key = format!("{url} {algorithms:?}");
        self.used.push(key.clone());
        let shared = Arc::downgrade(self.shared);
        self.remotes
            .entry(key)
            .or_insert_with(|| {
                RemoteJwks::spawn(
                    url.to_string(),
                    algorithms.to_vec(),
                    crate::remote::Timing::default(),
                    Box::new(move |ok| {
                        if let Some(s) = shared.upgrade() {
                            s.refresh_ready();
                            s.metrics
                                .jwks_fetches
                                .with_label_values(&[if ok { "ok" } else { "error" }])
                                .inc();
                        }
                    }),
                )
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use proto::authz::{AuthPolicy, RoutePolicy};
    use xds_client::Apply;

    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        Any {
            type_url: type_url.into(),
            value,
        }
    }

    fn good() -> Any {
        let p = AuthPolicy {
            routes: vec![RoutePolicy {
                name: "health".into(),
                public: true,
                ..Default::default()
            }],
            identity_headers: proto::authz::header::CLIENT_HEADERS
                .iter()
                .map(|h| h.to_string())
                .collect(),
            ..Default::default()
        };
        any(proto::type_url::AUTH_POLICY, p.encode_to_vec())
    }

    #[tokio::test]
    async fn unusable_sets_are_nacked_and_the_last_good_policy_stays() {
        let shared = Shared::new();
        let mut a = Applier::new(shared.clone());
        assert!(!shared.is_ready());
        a.apply("v1", &[good()]).unwrap();
        assert!(shared.is_ready());
        let installed = shared.policy.load_full().unwrap();

        let unknown_provider = AuthPolicy {
            routes: vec![RoutePolicy {
                name: "r".into(),
                providers: vec!["ghost".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let bad: Vec<(&str, Vec<Any>)> = vec![
            ("empty set", vec![]),
            ("two resources", vec![good(), good()]),
            (
                "wrong type",
                vec![any("type.googleapis.com/x.Y", good().value)],
            ),
            (
                "undecodable",
                vec![any(proto::type_url::AUTH_POLICY, vec![0xff, 0xff, 0xff])],
            ),
            (
                "unknown provider",
                vec![any(
                    proto::type_url::AUTH_POLICY,
                    unknown_provider.encode_to_vec(),
                )],
            ),
        ];
        for (what, set) in bad {
            let e = a.apply("v2", &set).expect_err(what);
            assert!(!e.is_empty(), "{what}");
            assert!(
                Arc::ptr_eq(&shared.policy.load_full().unwrap(), &installed),
                "{what} replaced the policy"
            );
        }
        let m = shared.metrics.render();
        assert!(
            m.contains(r#"authz_policy_updates_total{result="rejected"} 5"#),
            "{m}"
        );
        assert!(
            m.contains(r#"authz_policy_updates_total{result="applied"} 1"#),
            "{m}"
        );
    }
}
