//! Command line (spec §7): `serve` (the default, so `ratelimit-service --xds …` works as the
//! spec writes it), the same shape as authz-service's. Every flag has an environment variable.

use std::net::SocketAddr;
use std::num::NonZeroUsize;

use clap::{Args, Parser, Subcommand};
use xds_client::side::LogFormat;

use xds_client::service::ServeOptions;

use crate::server::{self, Options};

#[derive(Debug, Parser)]
#[command(
    name = "ratelimit-service",
    version,
    about = "Envoy rate-limit service (RLS) with exact sliding windows, configured by xds-server",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve` flags, also accepted without the subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve RLS ShouldRateLimit (the default).
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// xds-server's gRPC address (host:port).
    #[arg(long, env = "RATELIMIT_XDS", default_value = "127.0.0.1:18000")]
    pub xds: String,
    /// gRPC (RLS) listen address.
    #[arg(long, env = "RATELIMIT_LISTEN", default_value = "127.0.0.1:9002")]
    pub listen: SocketAddr,
    /// HTTP side port: /healthz, /readyz, /metrics.
    #[arg(long, env = "RATELIMIT_ADMIN", default_value = "127.0.0.1:9012")]
    pub admin: SocketAddr,
    /// Redis for shared counters: `redis://host:port/db` (single node) or
    /// `redis+cluster://host1:port1,host2:port2` (Redis Cluster). Absent: the in-memory store,
    /// exact for this one instance.
    #[arg(long, env = "RATELIMIT_REDIS")]
    pub redis: Option<String>,
    /// Without --redis: the most counters the in-memory store holds (at least 1). Expired ones
    /// are dropped first; when it is full of live counters, none is evicted: a request that
    /// needs a new counter is answered by the policy's `on_error` (counted in
    /// `ratelimit_memory_full_total`), while every existing counter keeps deciding.
    #[arg(
        long,
        env = "RATELIMIT_MEMORY_MAX_COUNTERS",
        default_value_t = NonZeroUsize::new(crate::store::DEFAULT_MAX_COUNTERS).expect("non-zero")
    )]
    pub memory_max_counters: NonZeroUsize,
    /// node.id reported to xds-server; defaults to `ratelimit-<hostname>-<pid>`.
    #[arg(long, env = "RATELIMIT_NODE_ID")]
    pub node_id: Option<String>,
    /// Tokio worker threads. One (the default) runs every call on one thread: Envoy sends all
    /// of a worker's calls over one HTTP/2 connection and each decision takes microseconds, so
    /// more threads add cross-thread wake-ups, not throughput. One thread is one core at most:
    /// raise it when Envoys with several workers, or several Envoys, share this instance.
    #[arg(long, env = "RATELIMIT_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// mTLS on the RLS port: only Envoys with a certificate signed by --client-ca.
    #[command(flatten)]
    pub tls: xds_client::tls::ServerTlsArgs,
    /// This service's certificate towards xds-server (URI SAN
    /// `spiffe://gateway/group/ratelimit-service`).
    #[command(flatten)]
    pub xds_tls: xds_client::tls::XdsTlsArgs,
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Held until exit: dropping it flushes the spans not yet exported.
    let _telemetry = xds_client::side::init_logging(cli.log_format, "ratelimit-service");
    serve(match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let opts = Options {
        serve: ServeOptions::from_flags(
            "ratelimit",
            args.xds,
            args.listen,
            args.admin,
            args.node_id,
            &args.tls,
            &args.xds_tls,
        )?,
        redis: args.redis,
        memory_max_counters: args.memory_max_counters.get(),
    };
    Ok(xds_client::service::run_until_signal(
        Some(args.workers),
        || server::start(opts),
    )?)
}
