//! ratelimit-service's descriptor-to-key mapping: a `ShouldRateLimit` request decoded from the
//! input as the service decodes it (leniently, invalid UTF-8 repaired), then resolved against
//! the fixed gateway's compiled policy into counters.
//!
//! Besides no panic: every descriptor maps to at most one counter that exists, every counter
//! costs at least 1 and has a bounded key in its Redis Cluster hash tag.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use ratelimit_service::grpc::RawRequest;
use ratelimit_service::policy::Policy;

static POLICY: LazyLock<Policy> = LazyLock::new(gateway_fuzz::rate_policy);

/// Longer descriptor values are replaced by a digest, so keys stay short whatever the client
/// sends; this is a generous bound on what the key around them adds.
const MAX_KEY_BYTES: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = RawRequest::decode(data) else {
        return;
    };
    let req = RateLimitRequest::from(raw);
    let plan = POLICY.plan(&req);
    assert_eq!(plan.descriptor_hits.len(), req.descriptors.len());
    assert_eq!(plan.names.len(), plan.hits.len());
    for i in plan.descriptor_hits.iter().flatten() {
        assert!(*i < plan.hits.len());
    }
    for (n, hit) in plan.hits.iter().enumerate() {
        assert!(hit.cost >= 1, "cost {}", hit.cost);
        assert!(hit.key.starts_with("rl:{"), "key {:?}", hit.key);
        assert!(
            hit.key.len() <= MAX_KEY_BYTES,
            "key of {} bytes",
            hit.key.len()
        );
        assert!(
            !plan.hits[..n].iter().any(|h| h.key == hit.key),
            "counter {:?} twice",
            hit.key
        );
    }
});
