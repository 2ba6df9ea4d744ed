//! A small ADS client (State-of-the-World) for the policy services.
//!
//! A service subscribes to one resource type for its node group (`node.cluster`, e.g.
//! `ratelimit`), hands every complete set to an [`Apply`] implementation, and answers the server
//! with an ACK when the set was installed or a NACK (carrying the error) when it was not. A
//! rejected set never replaces the last good one, and neither does a lost connection: the service
//! keeps enforcing what it last accepted while it reconnects with capped exponential backoff, and
//! tells the new server which version it holds.

pub mod grpc;
pub mod service;
pub mod side;
pub mod telemetry;
pub mod tls;

use std::time::Duration;

use proto::pb::envoy::config::core::v3::Node;
use proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use proto::pb::envoy::service::discovery::v3::DiscoveryRequest;
use proto::pb::google::protobuf::Any;
use proto::pb::google::rpc::Status as RpcStatus;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tracing::{info, warn};

/// Where to connect and what to ask for.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port` of xds-server's gRPC listener.
    pub server: String,
    pub node_id: String,
    /// `node.cluster`: the node group whose resources this client receives.
    pub group: String,
    pub type_url: String,
    /// First reconnect delay; doubles up to `max_backoff`, and starts over once a stream works.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// TLS with a client certificate; `None` connects in plain text.
    pub tls: Option<tls::ClientTls>,
}

impl Options {
    pub fn new(
        server: impl Into<String>,
        node_id: impl Into<String>,
        group: impl Into<String>,
        type_url: impl Into<String>,
    ) -> Self {
        Self {
            server: server.into(),
            node_id: node_id.into(),
            group: group.into(),
            type_url: type_url.into(),
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            tls: None,
        }
    }

    /// Connects over TLS with `tls` (see [`tls::XdsTlsArgs::load`]); `None` keeps plain text.
    pub fn with_tls(mut self, tls: Option<tls::ClientTls>) -> Self {
        self.tls = tls;
        self
    }
}

/// What a service does with a received set of resources.
pub trait Apply: Send + 'static {
    /// Validates and installs a complete set (SotW semantics: anything absent is gone). An error
    /// rejects the whole set: the previous one stays in force and the message goes back to the
    /// server as the NACK's `error_detail`.
    fn apply(&mut self, version: &str, resources: &[Any]) -> Result<(), String>;
}

/// The one resource a policy service's set holds (every policy is a single resource), decoded:
/// the shared first step of every [`Apply`]. An error names what was wrong, for the NACK.
pub fn single_resource<M: prost::Message + Default>(
    resources: &[Any],
    type_url: &str,
) -> Result<M, String> {
    let [any] = resources else {
        return Err(format!(
            "expected exactly one {type_url} resource, got {}",
            resources.len()
        ));
    };
    if any.type_url != type_url {
        return Err(format!("unexpected resource type {:?}", any.type_url));
    }
    M::decode(any.value.as_slice()).map_err(|e| format!("undecodable {type_url}: {e}"))
}

/// The client's view, for readiness and `/metrics` of the service using it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub connected: bool,
    /// The last version applied and ACKed; `None` until the first set arrived.
    pub version: Option<String>,
    /// The last connection error or rejection, if any since the last accepted set.
    pub last_error: Option<String>,
}

/// Runs until `shutdown` turns true. Never returns an error: every failure is retried, and is
/// visible in `state`.
pub async fn run<A: Apply>(
    opts: Options,
    applier: A,
    state: watch::Sender<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Lent to a blocking thread for each apply, and back after it.
    let mut applier = Some(applier);
    let mut version = String::new();
    let mut delay = opts.min_backoff;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut healthy = false;
        let result = session(
            &opts,
            &mut applier,
            &mut version,
            &state,
            &mut shutdown,
            &mut healthy,
        )
        .await;
        let error = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        if healthy {
            delay = opts.min_backoff;
        }
        warn!(server = %opts.server, error = %error, retry_in = ?delay, "xDS stream lost; keeping the last accepted policy");
        state.send_modify(|s| {
            s.connected = false;
            s.last_error = Some(error);
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
        delay = (delay * 2).min(opts.max_backoff);
    }
}

/// Runs `applier.apply` on a blocking thread: compiling a policy (parsing every key file it
/// carries) can take long, and the service's calls must not wait for it, also on a
/// current-thread runtime (`--workers 1`). A panic in `apply` is re-raised here, as if it had
/// run in place.
async fn apply<A: Apply>(
    applier: &mut Option<A>,
    version: &str,
    resources: &[Any],
) -> Result<(), String> {
    let Some(mut a) = applier.take() else {
        return Err("the policy applier was lost when the runtime stopped".into());
    };
    let (version, resources) = (version.to_string(), resources.to_vec());
    match tokio::task::spawn_blocking(move || {
        let outcome = a.apply(&version, &resources);
        (a, outcome)
    })
    .await
    {
        Ok((a, outcome)) => {
            *applier = Some(a);
            outcome
        }
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(format!("applying the policy: {e}")),
    }
}

async fn session<A: Apply>(
    opts: &Options,
    applier: &mut Option<A>,
    version: &mut String,
    state: &watch::Sender<State>,
    shutdown: &mut watch::Receiver<bool>,
    healthy: &mut bool,
) -> Result<(), String> {
    let connect_error = |e: tonic::transport::Error| {
        // The cause (a refused certificate, an unknown CA) is in the source chain.
        let mut msg = format!("connecting to {}: {e}", opts.server);
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        msg
    };
    let endpoint = match &opts.tls {
        None => Endpoint::from_shared(format!("http://{}", opts.server)),
        Some(tls) => Endpoint::from_shared(format!("https://{}", opts.server))
            .and_then(|e| e.tls_config(tls.0.clone())),
    }
    .map_err(connect_error)?;
    let channel = endpoint.connect().await.map_err(connect_error)?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    // Requests are few (one per response); a small buffer is plenty.
    let (tx, rx) = mpsc::channel(4);
    let node = Node {
        id: opts.node_id.clone(),
        cluster: opts.group.clone(),
        ..Default::default()
    };
    let first = DiscoveryRequest {
        // Tell a (possibly restarted) server what we hold; versions are content hashes.
        version_info: version.clone(),
        node: Some(node),
        type_url: opts.type_url.clone(),
        ..Default::default()
    };
    tx.send(first)
        .await
        .map_err(|_| "request channel closed".to_string())?;
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("opening the ADS stream: {e}"))?
        .into_inner();
    state.send_modify(|s| s.connected = true);
    loop {
        let response = tokio::select! {
            r = responses.message() => r.map_err(|e| format!("ADS stream: {e}"))?,
            _ = shutdown.wait_for(|v| *v) => return Ok(()),
        };
        let Some(response) = response else {
            return Err("the server closed the stream".into());
        };
        *healthy = true;
        let outcome = if response.type_url != opts.type_url {
            Err(format!(
                "unexpected type {:?}, subscribed to {:?}",
                response.type_url, opts.type_url
            ))
        } else {
            apply(applier, &response.version_info, &response.resources).await
        };
        let ack = match outcome {
            Ok(()) => {
                info!(version = %response.version_info, resources = response.resources.len(), "applied policy");
                *version = response.version_info.clone();
                state.send_modify(|s| {
                    s.version = Some(response.version_info.clone());
                    s.last_error = None;
                });
                DiscoveryRequest {
                    version_info: response.version_info,
                    type_url: opts.type_url.clone(),
                    response_nonce: response.nonce,
                    ..Default::default()
                }
            }
            Err(error) => {
                warn!(version = %response.version_info, error = %error, "rejected policy; keeping the previous one");
                state.send_modify(|s| s.last_error = Some(error.clone()));
                DiscoveryRequest {
                    // A NACK carries the last version we accepted.
                    version_info: version.clone(),
                    type_url: opts.type_url.clone(),
                    response_nonce: response.nonce,
                    // 3 = INVALID_ARGUMENT: the resources, not the transport, were at fault.
                    error_detail: Some(RpcStatus {
                        code: 3,
                        message: error,
                        details: vec![],
                    }),
                    ..Default::default()
                }
            }
        };
        tx.send(ack)
            .await
            .map_err(|_| "request channel closed".to_string())?;
    }
}
