//! `ratelimit-service`: the counter store and the RLS gRPC service, wired to the side port and
//! the xDS policy subscription ([`xds_client::service`]).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use proto::pb::google::protobuf::Any;
use proto::ratelimit::RateLimitPolicy;
use tracing::info;
use xds_client::service::ServeOptions;

use crate::cache::OverLimitCache;
use crate::grpc::rls_server;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::service::RateLimiter;
use crate::store::{CounterStore, Store};

#[derive(Debug, Clone)]
pub struct Options {
    /// Ports, TLS and the way to xds-server, as every policy service has them.
    pub serve: ServeOptions,
    /// `None`: the embedded in-memory store.
    pub redis: Option<String>,
    /// The in-memory store's bound on counters (unused with Redis).
    pub memory_max_counters: usize,
}

/// A started ratelimit-service; its state is the installed policy.
pub type Running = xds_client::service::Running<Arc<ArcSwapOption<Policy>>>;

/// Installs each policy xds-server sends, or refuses it (NACK) and keeps the previous one.
pub struct PolicyApplier {
    pub policy: Arc<ArcSwapOption<Policy>>,
    pub cache: Arc<OverLimitCache>,
}

impl PolicyApplier {
    /// Decodes and validates a complete resource set (one `RateLimitPolicy`).
    pub fn compile(resources: &[Any]) -> Result<Policy, String> {
        let pb: RateLimitPolicy =
            xds_client::single_resource(resources, proto::type_url::RATELIMIT_POLICY)?;
        Policy::compile(&pb).map_err(|e| e.to_string())
    }
}

impl xds_client::Apply for PolicyApplier {
    fn apply(&mut self, version: &str, resources: &[Any]) -> Result<(), String> {
        let policy = Self::compile(resources)?;
        info!(
            version,
            algorithm = policy.algorithm.name(),
            fail_open = policy.fail_open,
            "rate-limit policy installed"
        );
        self.policy.store(Some(Arc::new(policy)));
        // A cached "over limit until" may rest on a limit that just changed.
        self.cache.clear();
        Ok(())
    }
}

/// Binds both listeners (port 0 picks a free port), opens the store and starts serving.
pub async fn start(opts: Options) -> std::io::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(
        opts.redis.as_deref(),
        opts.memory_max_counters,
        metrics.memory(),
    )
    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--redis: {e}")))?;
    if let Store::Memory(m) = &store {
        info!(max_counters = m.max_counters(), "counters in memory");
    }
    start_with(&opts.serve, store, metrics).await
}

async fn start_with<S: CounterStore>(
    opts: &ServeOptions,
    store: S,
    metrics: Arc<Metrics>,
) -> std::io::Result<Running> {
    let policy = Arc::new(ArcSwapOption::empty());
    let cache = Arc::new(OverLimitCache::default());
    info!(store = store.kind(), "ratelimit store");
    let limiter = Arc::new(RateLimiter::new(
        store,
        policy.clone(),
        cache.clone(),
        metrics.clone(),
    ));
    // Ready once a policy is installed: before that every request would be admitted unchecked.
    let ready_policy = policy.clone();
    let parts = xds_client::service::Parts {
        name: "ratelimit-service",
        group: proto::group::RATELIMIT,
        type_url: proto::type_url::RATELIMIT_POLICY,
        applier: PolicyApplier {
            policy: policy.clone(),
            cache,
        },
        endpoint: xds_client::grpc::Endpoint::new(rls_server(limiter)),
        ready: Arc::new(move || ready_policy.load().is_some()),
        registry: metrics.registry.clone(),
    };
    xds_client::service::start(opts, parts, policy).await
}
