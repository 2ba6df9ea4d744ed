//! Wiring: the ext_proc gRPC listener, the admin port and the xDS policy client, started
//! together and stopped by one signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use proto::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::exchange::Exchange;
use crate::policy::{Applier, Shared};

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

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// xds-server's gRPC address (`host:port`).
    pub xds: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// `node.id` towards xds-server.
    pub node_id: String,
    /// TLS requiring client certificates on the ext_proc port; `None` serves plain text.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// TLS with a client certificate towards xds-server; `None` connects in plain text.
    pub xds_tls: Option<xds_client::tls::ClientTls>,
}

/// A started service.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub xds_state: watch::Receiver<xds_client::State>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops every task and waits for them.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds both listeners (port 0 picks a free port) and starts serving.
pub async fn start(opts: ServeOptions) -> std::io::Result<Running> {
    let shared = Shared::new();
    let grpc = tokio::net::TcpListener::bind(opts.listen).await?;
    let admin = tokio::net::TcpListener::bind(opts.admin).await?;
    let grpc_addr = grpc.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let (shutdown, sd) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    let (state_tx, xds_state) = watch::channel(xds_client::State::default());
    let xds_opts = xds_client::Options::new(
        opts.xds.clone(),
        opts.node_id.clone(),
        proto::group::TRANSFORM,
        proto::type_url::TRANSFORM_POLICY,
    )
    .with_tls(opts.xds_tls.clone());
    let xds_task = tokio::spawn(xds_client::run(
        xds_opts,
        Applier {
            shared: shared.clone(),
        },
        state_tx,
        sd.clone(),
    ));

    let svc = ExternalProcessorServer::new(TransformServer {
        shared: shared.clone(),
    })
    // A buffered body of up to `MAX_BODY_BYTES` in, its (larger) replacement out.
    .max_decoding_message_size(proto::transform::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(proto::transform::MAX_MESSAGE_BYTES);
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let grpc_sd = wait(sd.clone());
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = opts.tls.clone() {
        builder = builder.tls_config(tls).map_err(std::io::Error::other)?;
    }
    let grpc_task = tokio::spawn(async move {
        let r = builder
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, grpc_sd)
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    // Ready after the first policy: before it every request is refused.
    let ready_shared = shared.clone();
    let ready = Arc::new(move || ready_shared.is_ready());
    let admin_task = tokio::spawn(xds_client::side::serve_admin(
        admin,
        ready,
        shared.metrics.registry.clone(),
        wait(sd),
    ));
    tracing::info!(grpc = %grpc_addr, admin = %admin_addr, xds = %opts.xds, mtls = opts.tls.is_some(), xds_tls = opts.xds_tls.is_some(), "transform-service listening");
    Ok(Running {
        grpc_addr,
        admin_addr,
        shared,
        xds_state,
        shutdown,
        tasks: vec![xds_task, grpc_task, admin_task],
    })
}
