//! Wiring: the ext_authz gRPC service, the side port and the xDS policy client
//! ([`xds_client::service`]), started together and stopped by one signal.

use std::sync::Arc;

pub use xds_client::service::ServeOptions;

use crate::grpc::AuthzServer;
use crate::service::{AuthzService, Shared};
use crate::xds::Applier;

/// A started authz-service.
pub type Running = xds_client::service::Running<Arc<Shared>>;

/// Where the limits this service counts keep their counters (`rate_limits.counted_by:
/// authz-service`): ratelimit-service's store flags, with the same meaning.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `None`: the embedded in-memory store.
    pub redis: Option<String>,
    /// The in-memory store's bound on counters (unused with Redis).
    pub memory_max_counters: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            redis: None,
            memory_max_counters: ratelimit::store::DEFAULT_MAX_COUNTERS,
        }
    }
}

/// Binds both listeners (port 0 picks a free port) and starts serving, with counters in memory.
pub async fn start(opts: ServeOptions) -> std::io::Result<Running> {
    start_with(opts, StoreOptions::default()).await
}

/// [`start`] with the counter store `store` names.
pub async fn start_with(opts: ServeOptions, store: StoreOptions) -> std::io::Result<Running> {
    let shared = Shared::with_store(|m| {
        ratelimit::store::Store::open(store.redis.as_deref(), store.memory_max_counters, m)
    })
    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--redis: {e}")))?;
    tracing::info!(
        store = shared.limits.store_kind(),
        "counters for the limits counted here"
    );
    // Ready after the first policy (and the first fetch of every `jwks_url` it uses): before
    // that every Check would be refused.
    let ready_shared = shared.clone();
    let parts = xds_client::service::Parts {
        name: "authz-service",
        group: proto::group::AUTHZ,
        type_url: proto::type_url::AUTH_POLICY,
        applier: Applier::new(shared.clone()),
        endpoint: xds_client::grpc::Endpoint::new(AuthzServer::new(AuthzService::new(
            shared.clone(),
        ))),
        ready: Arc::new(move || ready_shared.is_ready()),
        registry: shared.metrics.registry.clone(),
    };
    xds_client::service::start(&opts, parts, shared).await
}
