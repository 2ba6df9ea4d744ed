//! `ratelimit-service`: the xDS policy subscription, the RLS gRPC server, the side port, and
//! their shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use proto::pb::google::protobuf::Any;
use proto::ratelimit::RateLimitPolicy;
use tokio::sync::watch;
use tracing::info;

use crate::cache::OverLimitCache;
use crate::grpc::RlsServer;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::service::RateLimiter;
use crate::store::{CounterStore, MemoryStore, RedisStore};

#[derive(Debug, Clone)]
pub struct Options {
    /// xds-server's gRPC address.
    pub xds: String,
    pub node_id: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// `None`: the embedded in-memory store.
    pub redis: Option<String>,
    /// The in-memory store's bound on counters (unused with Redis).
    pub memory_max_counters: usize,
    /// TLS requiring client certificates on the RLS port; `None` serves plain text.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// TLS with a client certificate towards xds-server; `None` connects in plain text.
    pub xds_tls: Option<xds_client::tls::ClientTls>,
}

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

/// Runs until Ctrl-C / SIGTERM.
pub async fn serve(opts: Options) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    match &opts.redis {
        None => {
            let store =
                Arc::new(MemoryStore::new(opts.memory_max_counters).with_metrics(metrics.memory()));
            let sweeper = store.clone();
            // Idle counters are dropped once their window has passed.
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    sweeper.sweep();
                }
            });
            info!(max_counters = store.max_counters(), "counters in memory");
            serve_with(opts, SharedMemory(store), metrics).await
        }
        Some(url) => {
            let store = RedisStore::from_url(url).map_err(|e| anyhow::anyhow!("--redis: {e}"))?;
            serve_with(opts, store, metrics).await
        }
    }
}

/// The memory store shared with its sweeper task.
struct SharedMemory(Arc<MemoryStore>);

impl CounterStore for SharedMemory {
    async fn check(
        &self,
        hits: &[crate::store::Hit],
    ) -> Result<crate::store::Outcome, crate::store::StoreError> {
        self.0.check(hits).await
    }

    fn kind(&self) -> &'static str {
        self.0.kind()
    }
}

async fn serve_with<S: CounterStore>(
    opts: Options,
    store: S,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let policy = Arc::new(ArcSwapOption::empty());
    let cache = Arc::new(OverLimitCache::default());
    let kind = store.kind();
    let limiter = Arc::new(RateLimiter::new(
        store,
        policy.clone(),
        cache.clone(),
        metrics.clone(),
    ));

    let grpc = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding gRPC {}", opts.listen))?;
    let admin = tokio::net::TcpListener::bind(opts.admin)
        .await
        .with_context(|| format!("binding admin {}", opts.admin))?;
    info!(grpc = %opts.listen, admin = %opts.admin, xds = %opts.xds, store = kind, mtls = opts.tls.is_some(), xds_tls = opts.xds_tls.is_some(), "ratelimit-service listening");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (state_tx, state_rx) = watch::channel(xds_client::State::default());
    let xds = tokio::spawn(xds_client::run(
        xds_client::Options::new(
            opts.xds.clone(),
            opts.node_id.clone(),
            proto::group::RATELIMIT,
            proto::type_url::RATELIMIT_POLICY,
        )
        .with_tls(opts.xds_tls.clone()),
        PolicyApplier {
            policy: policy.clone(),
            cache,
        },
        state_tx,
        shutdown_rx.clone(),
    ));

    // Ready once a policy is installed: before that every request would be admitted unchecked.
    let ready_policy = policy.clone();
    let ready: Arc<dyn Fn() -> bool + Send + Sync> =
        Arc::new(move || ready_policy.load().is_some());
    let mut sd = shutdown_rx.clone();
    let admin_task = tokio::spawn(xds_client::side::serve_admin(
        admin,
        ready,
        metrics.registry.clone(),
        async move {
            let _ = sd.wait_for(|v| *v).await;
        },
    ));

    let mut sd = shutdown_rx.clone();
    // Without TCP_NODELAY a 429 (headers, body, trailers) waits ~40 ms on Nagle's algorithm and
    // delayed ACKs: longer than the whole RLS timeout.
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = opts.tls.clone() {
        builder = builder
            .tls_config(tls)
            .context("--tls-cert/--tls-key/--client-ca")?;
    }
    let grpc_task = tokio::spawn(
        builder
            .add_service(RlsServer::new(limiter))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = sd.wait_for(|v| *v).await;
            }),
    );

    xds_client::side::shutdown_signal().await;
    info!("shutting down");
    drop(state_rx);
    let _ = shutdown_tx.send(true);
    let _ = xds.await;
    let _ = admin_task.await;
    grpc_task.await?.context("gRPC server")?;
    Ok(())
}
