//! The ext_proc gRPC service, wired to the side port and the xDS policy client
//! ([`xds_client::service`]), started together and stopped by one signal.

use std::sync::Arc;

use proto::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use proto::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::exchange::Exchange;
use crate::policy::{Applier, Shared};

pub use xds_client::service::ServeOptions;

/// The ext_proc endpoint: one [`Exchange`] per stream (one stream per HTTP request).
#[derive(Clone)]
pub struct TransformServer {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl ExternalProcessor for TransformServer {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let route = request
            .metadata()
            .get(proto::transform::ROUTE_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // The policy in force when the request started applies to all of it.
        let mut exchange = Exchange::new(
            self.shared.policy.load_full(),
            route.as_deref(),
            self.shared.metrics.clone(),
        );
        let mut inbound = request.into_inner();
        // Envoy sends one message and waits for its answer: a small buffer is plenty.
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            // A stream error is Envoy going away (the client left, or Envoy's timeout):
            // nothing to answer.
            while let Ok(Some(msg)) = inbound.message().await {
                let Some(answer) = exchange.step(msg) else {
                    continue;
                };
                if tx.send(Ok(answer)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A started transform-service.
pub type Running = xds_client::service::Running<Arc<Shared>>;

/// Binds both listeners (port 0 picks a free port) and starts serving.
pub async fn start(opts: ServeOptions) -> std::io::Result<Running> {
    let shared = Shared::new();
    let svc = ExternalProcessorServer::new(TransformServer {
        shared: shared.clone(),
    })
    // A buffered body of up to `MAX_BODY_BYTES` in, its (larger) replacement out.
    .max_decoding_message_size(proto::transform::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(proto::transform::MAX_MESSAGE_BYTES);
    // Ready after the first policy: before it every request is refused.
    let ready_shared = shared.clone();
    let parts = xds_client::service::Parts {
        name: "transform-service",
        group: proto::group::TRANSFORM,
        type_url: proto::type_url::TRANSFORM_POLICY,
        applier: Applier {
            shared: shared.clone(),
        },
        endpoint: xds_client::grpc::Endpoint::new(svc),
        ready: Arc::new(move || ready_shared.is_ready()),
        registry: shared.metrics.registry.clone(),
    };
    xds_client::service::start(&opts, parts, shared).await
}
