//! Wiring: the ext_authz gRPC service, the side port and the xDS policy client
//! ([`xds_client::service`]), started together and stopped by one signal.

use std::sync::Arc;

pub use xds_client::service::ServeOptions;

use crate::grpc::AuthzServer;
use crate::service::{AuthzService, Shared};
use crate::xds::Applier;

/// A started authz-service.
pub type Running = xds_client::service::Running<Arc<Shared>>;

/// Binds both listeners (port 0 picks a free port) and starts serving.
pub async fn start(opts: ServeOptions) -> std::io::Result<Running> {
    let shared = Shared::new();
    // Ready after the first policy (and the first fetch of every `jwks_url` it uses): before
    // that every Check would be refused.
    let ready_shared = shared.clone();
    let parts = xds_client::service::Parts {
        name: "authz-service",
        group: proto::group::AUTHZ,
        type_url: proto::type_url::AUTH_POLICY,
        applier: Applier::new(shared.clone()),
        routes: tonic::service::Routes::new(AuthzServer::new(AuthzService::new(shared.clone()))),
        ready: Arc::new(move || ready_shared.is_ready()),
        registry: shared.metrics.registry.clone(),
    };
    xds_client::service::start(&opts, parts, shared).await
}
