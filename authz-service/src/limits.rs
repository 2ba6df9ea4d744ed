//! Rate limits counted inside the Check (`rate_limits.counted_by: authz-service`).
//!
//! After a credential is accepted, the route's limits are checked with the very limiter
//! ratelimit-service runs (`ratelimit`): the same descriptors Envoy would have sent (built from
//! [`proto::ratelimit::Per::identity_entries`] and the identity just verified), so the same
//! counter keys, the same store semantics (spec §5), the same `on_error` and the same 429
//! headers and body. Envoy then makes no second gRPC call for the route.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use proto::authz::metadata;
use proto::pb::envoy::extensions::common::ratelimit::v3::{
    rate_limit_descriptor::Entry, RateLimitDescriptor,
};
use proto::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use ratelimit::cache::OverLimitCache;
use ratelimit::metrics::Metrics;
use ratelimit::policy::Policy as LimitPolicy;
use ratelimit::service::{verdict, RateLimiter};
use ratelimit::store::{MemoryMetrics, Store, StoreError};

use crate::policy::{Allow, RouteLimit};

/// The limiter and its store.
pub struct Limits {
    limiter: RateLimiter<Store>,
}

/// What the limits say about one accepted request (the limiter's in-process answer).
pub use ratelimit::service::Verdict;

impl Limits {
    /// `open` builds the store from the metrics the memory store reports to; the limiter's
    /// `ratelimit_*` metrics are registered in `registry`, beside authz-service's own.
    pub fn new(
        registry: &prometheus::Registry,
        open: impl FnOnce(MemoryMetrics) -> Result<Store, StoreError>,
    ) -> Result<Self, StoreError> {
        let metrics = Arc::new(Metrics::with_registry(registry.clone()));
        let store = open(metrics.memory())?;
        Ok(Self {
            // The limiter's own policy slot stays empty: every call passes the limits that
            // came with the auth policy (`RateLimiter::decide_with`).
            limiter: RateLimiter::new(
                store,
                Arc::new(ArcSwapOption::empty()),
                Arc::new(OverLimitCache::default()),
                metrics,
            ),
        })
    }

    /// Called when a new policy is installed: a cached "over limit until" may rest on a limit
    /// that just changed.
    pub fn policy_changed(&self) {
        self.limiter.clear_cache();
    }

    /// The store's kind, for the start-up log line.
    pub fn store_kind(&self) -> &'static str {
        self.limiter.store_kind()
    }

    /// Counts `allow`ed request against `rules` (non-empty) under `policy`.
    pub async fn check(
        &self,
        policy: &LimitPolicy,
        rules: &[RouteLimit],
        allow: &Allow,
        request_id: &str,
    ) -> Verdict {
        let req = request(&policy.domain, rules, allow, request_id);
        verdict(self.limiter.decide_with(policy, &req).await)
    }
}

/// The value of one of authz-service's metadata fields ([`metadata`]) for `allow`: the same
/// values Envoy's descriptor actions read from that metadata. Empty when not set.
pub fn metadata_value<'a>(allow: &'a Allow, field: &str) -> &'a str {
    let id = allow.identity.as_deref();
    match field {
        metadata::CLIENT_ID => id.map_or("", |i| i.client_id.as_str()),
        metadata::PLAN => id.map_or("", |i| i.plan.as_str()),
        metadata::TENANT => id.map_or("", |i| i.tenant.as_str()),
        metadata::PROVIDER => allow.provider.as_str(),
        _ => "",
    }
}

/// The RLS request Envoy would send for `rules` on this request: one descriptor per rule,
/// `rule = <id>` and then the identity entries that have a value (an empty value is left out,
/// as Envoy's `skip_if_absent` does), and the `request_id` descriptor for the 429 body.
fn request(
    domain: &str,
    rules: &[RouteLimit],
    allow: &Allow,
    request_id: &str,
) -> RateLimitRequest {
    let entry = |key: &str, value: &str| Entry {
        key: key.to_string(),
        value: value.to_string(),
    };
    let mut descriptors: Vec<RateLimitDescriptor> = rules
        .iter()
        .map(|r| RateLimitDescriptor {
            entries: std::iter::once(entry(proto::ratelimit::key::RULE, &r.rule))
                .chain(r.entries.iter().filter_map(|(key, field)| {
                    let v = metadata_value(allow, field);
                    (!v.is_empty()).then(|| entry(key, v))
                }))
                .collect(),
            ..Default::default()
        })
        .collect();
    if !request_id.is_empty() {
        descriptors.push(RateLimitDescriptor {
            entries: vec![entry(proto::ratelimit::key::REQUEST_ID, request_id)],
            ..Default::default()
        });
    }
    RateLimitRequest {
        domain: domain.to_string(),
        descriptors,
        hits_addend: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Identity;
    use proto::ratelimit::Per;

    fn allow(plan: &str, tenant: &str) -> Allow {
        Allow {
            provider: "main".into(),
            identity: Some(Arc::new(Identity {
                client_id: "alice".into(),
                plan: plan.into(),
                tenant: tenant.into(),
                ..Default::default()
            })),
            set_headers: vec![],
            remove_headers: vec![],
            remove_query: vec![],
            token_cache_hit: None,
        }
    }

    fn shown(req: &RateLimitRequest) -> Vec<Vec<String>> {
        req.descriptors
            .iter()
            .map(|d| {
                d.entries
                    .iter()
                    .map(|e| format!("{}={}", e.key, e.value))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn descriptors_are_those_envoy_builds_from_the_metadata() {
        let rules = [
            RouteLimit {
                rule: "r#0".into(),
                entries: Per::Plan.identity_entries().unwrap(),
            },
            RouteLimit {
                rule: "r#1".into(),
                entries: Per::Tenant.identity_entries().unwrap(),
            },
            RouteLimit {
                rule: "r#2".into(),
                entries: Per::Route.identity_entries().unwrap(),
            },
        ];
        let req = request("gateway", &rules, &allow("pro", ""), "req-1");
        assert_eq!(req.domain, "gateway");
        assert_eq!(
            shown(&req),
            vec![
                vec!["rule=r#0", "client=alice", "provider=main", "plan=pro"],
                // No tenant: the entry is left out and the descriptor kept, as Envoy's
                // `skip_if_absent` does, so the request counts in the shared bucket.
                vec!["rule=r#1", "provider=main"],
                vec!["rule=r#2"],
                vec!["request_id=req-1"],
            ]
        );
    }
}
