//! The ADS gRPC server (`envoy.service.discovery.v3.AggregatedDiscoveryService`), both
//! State-of-the-World and Delta, generic over resource type: it serves whatever type URLs the
//! published [`Snapshots`] carry, to the node group named by each client's `node.cluster`.

/// The classification every crate shares; it lives in `proto` so that `config` can use it too.
pub use proto::error;
pub mod identity;
pub mod metrics;
mod registry;
pub mod snapshot;
mod stream;
pub mod wire;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::transport::ServerTlsConfig;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use proto::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

use identity::Peer;
pub use metrics::Metrics;
pub use registry::{ClientStatus, Nack, Pending, Refusal, Registry, Settled, Target, TypeStatus};
use snapshot::Snapshots;
pub use stream::{Mode, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, TYPE_ORDER};
use stream::{Request, Stream};
use wire::{Encoded, PreEncodedCodec};

/// The ADS service. Cheap to clone.
#[derive(Clone)]
pub struct AdsServer {
    snapshots: watch::Receiver<Arc<Snapshots>>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    /// TLS requiring client certificates; `None` serves plain text and trusts `node.cluster`.
    tls: Option<ServerTlsConfig>,
}

/// How often a stream re-checks its ordering gates when nothing else happens (see
/// `SUBSCRIBE_GRACE` in `stream`).
const TICK: Duration = Duration::from_secs(1);

/// Pending connections the kernel queues for us: a fleet of Envoys reconnecting at once after a
/// restart must not lose SYNs to a full accept queue (the usual default of 128 does at ~1,000).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds the ADS listener (with `SO_REUSEADDR`, so a restarted server gets its port back at once).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl AdsServer {
    /// Serves ADS on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        // Responses are written whole and then wait for the client; without TCP_NODELAY a push
        // larger than one segment stalls ~40 ms on Nagle's algorithm plus delayed ACKs.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls.clone() {
            builder = builder.tls_config(tls)?;
        }
        builder
            // Detect dead Envoys (and let Envoys detect us) without waiting for TCP timeouts.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(self)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshots>>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            snapshots,
            registry,
            metrics,
            shutdown,
            tls: None,
        }
    }

    /// Serves over TLS with `tls`, which must require client certificates
    /// (`ServerTlsConfig::client_ca_root`): each client is then served only the node group its
    /// certificate names (see [`identity`]).
    pub fn with_tls(mut self, tls: ServerTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Who sent `request`, as far as this server's transport can tell.
    fn peer<T>(&self, request: &tonic::Request<T>) -> Peer {
        let certs = request.peer_certs();
        Peer::from_certs(self.tls.is_some(), certs.as_deref().map(Vec::as_slice))
    }

    /// Runs one stream until the client goes away or the server shuts down.
    fn spawn<Req, F>(
        &self,
        mode: Mode,
        peer: Peer,
        mut requests: Streaming<Req>,
        convert: F,
    ) -> ReceiverStream<Result<Encoded, Status>>
    where
        Req: Send + 'static,
        F: Fn(Req) -> (Option<(String, String)>, Request) + Send + 'static,
    {
        // Small: a client that stops reading back-pressures its own stream only.
        let (tx, rx) = mpsc::channel(8);
        let mut snapshots = self.snapshots.clone();
        let mut shutdown = self.shutdown.clone();
        let registry = self.registry.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            // The first request names the node group; nothing is registered (so nothing shows on
            // `/status`) and nothing is sent before it has been checked against the peer.
            let first = tokio::select! {
                msg = requests.message() => msg,
                _ = shutdown.changed() => return,
            };
            let (node, first) = match first {
                Ok(Some(req)) => convert(req),
                Ok(None) => return,
                Err(e) => {
                    debug!(error = %e, "xDS stream ended with an error");
                    return;
                }
            };
            let Some((node_id, cluster)) = node else {
                let _ = tx
                    .send(Err(Status::invalid_argument(
                        "the first request must carry node.cluster",
                    )))
                    .await;
                return;
            };
            if let Err(refused) = identity::admit(&peer, &cluster) {
                warn!(node_id, group = cluster, error = %refused, "xDS client refused");
                metrics.refused.with_label_values(&[refused.reason()]).inc();
                let _ = tx.send(Err(refused.into())).await;
                return;
            }
            let id = registry.add(mode.as_str());
            let gauge = metrics.clients.with_label_values(&[mode.as_str()]);
            gauge.inc();
            let mut stream = Stream::new(mode, id, registry.clone(), metrics.clone());
            stream.set_node(&node_id, &cluster);
            stream.set_snapshots(&snapshots.borrow_and_update().groups);
            stream.handle(first);
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            'serve: {
                // The first request is answered before the next is read, as in the loop below.
                for resp in stream.advance(Instant::now()) {
                    if tx.send(Ok(resp)).await.is_err() {
                        break 'serve;
                    }
                }
                loop {
                    tokio::select! {
                        msg = requests.message() => match msg {
                            // Later requests' node (Envoy may repeat it) cannot change the group.
                            Ok(Some(req)) => stream.handle(convert(req).1),
                            Ok(None) => break,
                            Err(e) => { debug!(error = %e, "xDS stream ended with an error"); break }
                        },
                        changed = snapshots.changed() => {
                            if changed.is_err() { break }
                            stream.set_snapshots(&snapshots.borrow_and_update().groups);
                        }
                        _ = tick.tick(), if stream.waiting() => {}
                        _ = shutdown.changed() => break,
                    }
                    for resp in stream.advance(Instant::now()) {
                        if tx.send(Ok(resp)).await.is_err() {
                            break 'serve;
                        }
                    }
                }
            }
            info!(
                group = stream.group().unwrap_or(""),
                protocol = mode.as_str(),
                "xDS client disconnected"
            );
            gauge.dec();
            registry.remove(id);
        });
        ReceiverStream::new(rx)
    }
}

/// One ADS stream's protocol state machine without its transport: what [`AdsServer`] runs for
/// each stream, fed requests by the caller instead of a gRPC stream, with the time passed in.
/// The fuzz targets drive it; it does everything a served stream does except the check of a
/// peer certificate (there is no peer), and registers its client in its own [`Registry`].
pub struct StreamMachine {
    mode: Mode,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    snapshots: Arc<Snapshots>,
    /// `None` until the first request named the node.
    stream: Option<Stream>,
}

impl StreamMachine {
    pub fn new(mode: Mode, snapshots: Arc<Snapshots>) -> Self {
        Self {
            mode,
            registry: Arc::default(),
            metrics: Arc::new(Metrics::new()),
            snapshots,
            stream: None,
        }
    }

    /// Publishes a new set of snapshots, as a config reload does.
    pub fn set_snapshots(&mut self, snapshots: Arc<Snapshots>) {
        if let Some(stream) = &mut self.stream {
            stream.set_snapshots(&snapshots.groups);
        }
        self.snapshots = snapshots;
    }

    /// Handles one State-of-the-World request (on a [`Mode::Sotw`] machine) and returns what the
    /// stream sends after it. The first request must carry `node.cluster`, as on the wire.
    pub fn sotw(&mut self, r: DiscoveryRequest, now: Instant) -> Result<Vec<Encoded>, Status> {
        let (node, req) = sotw_request(r);
        self.request(node, req, now)
    }

    /// [`StreamMachine::sotw`] for Delta requests (on a [`Mode::Delta`] machine).
    pub fn delta(
        &mut self,
        r: DeltaDiscoveryRequest,
        now: Instant,
    ) -> Result<Vec<Encoded>, Status> {
        let (node, req) = delta_request(r);
        self.request(node, req, now)
    }

    /// What the stream sends at `now` with no new request (its ordering gates' grace periods).
    pub fn advance(&mut self, now: Instant) -> Vec<Encoded> {
        self.stream
            .as_mut()
            .map_or_else(Vec::new, |s| s.advance(now))
    }

    fn request(
        &mut self,
        node: Option<(String, String)>,
        req: Request,
        now: Instant,
    ) -> Result<Vec<Encoded>, Status> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let Some((node_id, cluster)) = node else {
                    return Err(Status::invalid_argument(
                        "the first request must carry node.cluster",
                    ));
                };
                let id = self.registry.add(self.mode.as_str());
                let mut stream =
                    Stream::new(self.mode, id, self.registry.clone(), self.metrics.clone());
                stream.set_node(&node_id, &cluster);
                stream.set_snapshots(&self.snapshots.groups);
                self.stream.insert(stream)
            }
        };
        stream.handle(req);
        Ok(stream.advance(now))
    }
}

fn node_of(node: &Option<proto::pb::envoy::config::core::v3::Node>) -> Option<(String, String)> {
    node.as_ref().map(|n| (n.id.clone(), n.cluster.clone()))
}

fn sotw_request(r: DiscoveryRequest) -> (Option<(String, String)>, Request) {
    let node = node_of(&r.node);
    let req = Request {
        type_url: r.type_url,
        nonce: r.response_nonce,
        error_code: r.error_detail.as_ref().map_or(0, |e| e.code),
        error: r.error_detail.map(|e| e.message),
        names: r.resource_names,
        ..Default::default()
    };
    (node, req)
}

fn delta_request(r: DeltaDiscoveryRequest) -> (Option<(String, String)>, Request) {
    let node = node_of(&r.node);
    let req = Request {
        type_url: r.type_url,
        nonce: r.response_nonce,
        error_code: r.error_detail.as_ref().map_or(0, |e| e.code),
        error: r.error_detail.map(|e| e.message),
        subscribe: r.resource_names_subscribe,
        unsubscribe: r.resource_names_unsubscribe,
        initial_versions: r.initial_resource_versions,
        ..Default::default()
    };
    (node, req)
}

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

struct SotwSvc(AdsServer);
struct DeltaSvc(AdsServer);

impl StreamingService<DiscoveryRequest> for SotwSvc {
    type Response = Encoded;
    type ResponseStream = ReceiverStream<Result<Encoded, Status>>;
    type Future = BoxFuture<'static, Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let peer = self.0.peer(&request);
        let out = self
            .0
            .spawn(Mode::Sotw, peer, request.into_inner(), sotw_request);
        Box::pin(async move { Ok(tonic::Response::new(out)) })
    }
}

impl StreamingService<DeltaDiscoveryRequest> for DeltaSvc {
    type Response = Encoded;
    type ResponseStream = ReceiverStream<Result<Encoded, Status>>;
    type Future = BoxFuture<'static, Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let peer = self.0.peer(&request);
        let out = self
            .0
            .spawn(Mode::Delta, peer, request.into_inner(), delta_request);
        Box::pin(async move { Ok(tonic::Response::new(out)) })
    }
}

/// Hand-written instead of the generated server so responses can use [`PreEncodedCodec`].
impl<B> tower_service::Service<http::Request<B>> for AdsServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        match req.uri().path() {
            SOTW_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(PreEncodedCodec::<DiscoveryRequest>::default());
                Ok(grpc.streaming(SotwSvc(this), req).await)
            }),
            DELTA_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(PreEncodedCodec::<DeltaDiscoveryRequest>::default());
                Ok(grpc.streaming(DeltaSvc(this), req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("unknown method").into_http()) }),
        }
    }
}

impl NamedService for AdsServer {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}
