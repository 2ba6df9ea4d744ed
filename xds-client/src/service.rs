//! The wiring every policy service shares (authz-service, ratelimit-service,
//! transform-service): its gRPC port towards Envoy, its side port, and its xDS policy
//! subscription to xds-server, started together and stopped by one signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::tls::ClientTls;
use crate::{Apply, State};

/// Where a policy service listens and how it reaches xds-server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// xds-server's gRPC address (`host:port`).
    pub xds: String,
    /// The gRPC port Envoy calls.
    pub listen: SocketAddr,
    /// The side port: `/healthz`, `/readyz`, `/metrics`.
    pub admin: SocketAddr,
    /// `node.id` towards xds-server.
    pub node_id: String,
    /// TLS requiring client certificates on the gRPC port; `None` serves plain text.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// TLS with a client certificate towards xds-server; `None` connects in plain text.
    pub xds_tls: Option<ClientTls>,
}

impl ServeOptions {
    /// The options of a service's `serve` flags: the TLS files read, and the default `node.id`
    /// (`<service>-<hostname>-<pid>`) where none is given.
    pub fn from_flags(
        service: &str,
        xds: String,
        listen: SocketAddr,
        admin: SocketAddr,
        node_id: Option<String>,
        tls: &crate::tls::ServerTlsArgs,
        xds_tls: &crate::tls::XdsTlsArgs,
    ) -> Result<Self, crate::tls::TlsError> {
        Ok(Self {
            xds,
            listen,
            admin,
            node_id: node_id.unwrap_or_else(|| crate::side::default_node_id(service)),
            tls: tls.load()?,
            xds_tls: xds_tls.load()?,
        })
    }
}

/// What one service plugs into the shared wiring.
pub struct Parts<A> {
    /// The service's name in log lines.
    pub name: &'static str,
    /// Its node group and the policy type it subscribes to (see `proto::group`, `proto::type_url`).
    pub group: &'static str,
    pub type_url: &'static str,
    /// Installs each policy xds-server sends.
    pub applier: A,
    /// The gRPC service Envoy calls (`Endpoint::new(server)`).
    pub endpoint: crate::grpc::Endpoint,
    /// `/readyz` answers 200 while this is true.
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// What `/metrics` renders.
    pub registry: Registry,
}

/// A started service; `shared` is the service's own state (its policy, metrics, caches).
pub struct Running<S> {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: S,
    pub xds_state: watch::Receiver<State>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl<S> Running<S> {
    /// Stops every task and waits for them.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds both ports (port 0 picks a free one) and starts the gRPC server, the side port and the
/// policy subscription.
pub async fn start<A, S>(
    opts: &ServeOptions,
    parts: Parts<A>,
    shared: S,
) -> std::io::Result<Running<S>>
where
    A: Apply + Send + 'static,
{
    let grpc = tokio::net::TcpListener::bind(opts.listen).await?;
    let admin = tokio::net::TcpListener::bind(opts.admin).await?;
    let grpc_addr = grpc.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let (shutdown, sd) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    let (state_tx, xds_state) = watch::channel(State::default());
    let xds_opts = crate::Options::new(
        opts.xds.clone(),
        opts.node_id.clone(),
        parts.group,
        parts.type_url,
    )
    .with_tls(opts.xds_tls.clone());
    let xds_task = tokio::spawn(crate::run(xds_opts, parts.applier, state_tx, sd.clone()));

    let grpc_sd = wait(sd.clone());
    let endpoint = parts.endpoint;
    let name = parts.name;
    let grpc_task = match opts.tls.clone() {
        Some(tls) => {
            // Without TCP_NODELAY a small answer (headers, body, trailers) waits ~40 ms on
            // Nagle's algorithm and delayed ACKs: longer than a whole ext_authz or RLS timeout.
            let incoming =
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
            let builder = tonic::transport::Server::builder()
                .tls_config(tls)
                .map_err(std::io::Error::other)?;
            let stopping = wait(sd.clone());
            tokio::spawn(async move {
                let serve = builder
                    .http2_keepalive_interval(Some(KEEPALIVE))
                    .max_concurrent_streams(Some(MAX_STREAMS))
                    .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
                    .add_routes(endpoint.routes())
                    .serve_with_incoming_shutdown(incoming, grpc_sd);
                tokio::select! {
                    r = serve => if let Err(e) = r {
                        tracing::error!(service = name, error = %e, "gRPC server failed");
                    },
                    () = async { stopping.await; tokio::time::sleep(GRACE).await } => {
                        tracing::warn!(service = name, "calls still open {GRACE:?} after the stop; ending them");
                    }
                }
            })
        }
        None => tokio::spawn(serve_plain(grpc, endpoint, grpc_sd)),
    };
    let admin_task = tokio::spawn(crate::side::serve_admin(
        admin,
        parts.ready,
        parts.registry,
        wait(sd),
    ));
    tracing::info!(grpc = %grpc_addr, admin = %admin_addr, xds = %opts.xds, mtls = opts.tls.is_some(), xds_tls = opts.xds_tls.is_some(), "{name} listening");
    Ok(Running {
        grpc_addr,
        admin_addr,
        shared,
        xds_state,
        shutdown,
        tasks: vec![xds_task, grpc_task, admin_task],
    })
}

/// HTTP/2 keep-alive pings towards Envoy on the gRPC port (hyper's default timeout, 20 s).
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Streams at once on one connection: as many requests as Envoy's default circuit breaker
/// lets a cluster have in flight, so one Envoy connection can carry them all (an ext_proc
/// stream lasts as long as its HTTP request); past it Envoy opens another connection.
const MAX_STREAMS: u32 = 1024;

/// Streams a connection may make us reset for its errors before it is closed (h2's defence
/// against a peer that provokes resets to keep streams coming; hyper's default).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// How long a stop waits for the calls in flight (a Check or an RLS call takes milliseconds;
/// an ext_proc stream as long as its request), within the 10 s a container runtime gives
/// before it kills the process.
const GRACE: Duration = Duration::from_secs(8);

/// The plain-text gRPC port: hyper's HTTP/2 server calling the endpoint directly (see
/// [`crate::grpc::Endpoint`]), set up as the TLS port's tonic server is: TCP_NODELAY,
/// keep-alive pings, HTTP/2 only, the same stream limits, and on a stop the port closed at
/// once (a reconnecting Envoy is refused, not left waiting) while the open connections finish
/// their calls, for up to [`GRACE`].
async fn serve_plain(
    listener: tokio::net::TcpListener,
    endpoint: crate::grpc::Endpoint,
    shutdown: impl Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(KEEPALIVE))
        .max_concurrent_streams(MAX_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                // One connection's own failure, handed over by accept: take the next one.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                ) => continue,
                Err(e) => {
                    // Out of descriptors or memory: the port stays open, and a later accept
                    // may work once some are free; meanwhile no busy loop.
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY a small answer (headers, body, trailers) waits ~40 ms on Nagle's
        // algorithm and delayed ACKs: longer than a whole ext_authz or RLS timeout.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let endpoint = endpoint.clone();
        let service = hyper::service::service_fn(move |req| endpoint.call(req));
        let conn = graceful.watch(http2.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "gRPC connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("calls still open {GRACE:?} after the stop; ending them");
    }
}

/// A binary's `serve`: a runtime of `workers` threads (`None`: one per CPU), the service
/// started by `start`, and run until Ctrl-C or SIGTERM, then stopped. One worker is a
/// current-thread runtime: every task on the thread that accepted the connection, so a call
/// costs no cross-thread wake-up, and the answers of the calls that finish together leave in one
/// write on the HTTP/2 connection Envoy multiplexes them onto.
pub fn run_until_signal<S, Fut>(
    workers: Option<usize>,
    start: impl FnOnce() -> Fut,
) -> std::io::Result<()>
where
    Fut: Future<Output = std::io::Result<Running<S>>>,
{
    let mut rt = match workers {
        Some(n) if n <= 1 => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    rt.enable_all();
    rt.build()?.block_on(async move {
        let running = start().await?;
        crate::side::shutdown_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        Ok(())
    })
}
