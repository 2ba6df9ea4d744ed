//! Command line (spec §7): `serve` (the default). Every flag has an environment variable.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use xds_client::side::LogFormat;

use crate::server::{self, ServeOptions};

#[derive(Debug, Parser)]
#[command(
    name = "transform-service",
    version,
    about = "Envoy ext_proc service: JSON body transforms and JSON to XML, configured over xDS",
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
    /// Serve ext_proc (the default).
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// xds-server's gRPC address.
    #[arg(long, env = "TRANSFORM_XDS", default_value = "127.0.0.1:18000")]
    pub xds: String,
    /// ext_proc gRPC listen address.
    #[arg(long, env = "TRANSFORM_LISTEN", default_value = "127.0.0.1:9003")]
    pub listen: SocketAddr,
    /// HTTP admin listen address: /healthz, /readyz, /metrics.
    #[arg(long, env = "TRANSFORM_ADMIN", default_value = "127.0.0.1:9013")]
    pub admin: SocketAddr,
    /// node.id towards xds-server; defaults to `transform-service-<hostname>-<pid>`.
    #[arg(long, env = "TRANSFORM_NODE_ID")]
    pub node_id: Option<String>,
    /// Tokio worker threads; defaults to the number of CPUs.
    #[arg(long, env = "TRANSFORM_WORKERS")]
    pub workers: Option<usize>,
    /// mTLS on the ext_proc port: only Envoys with a certificate signed by --client-ca.
    #[command(flatten)]
    pub tls: xds_client::tls::ServerTlsArgs,
    /// This service's certificate towards xds-server (URI SAN
    /// `spiffe://gateway/group/transform-service`).
    #[command(flatten)]
    pub xds_tls: xds_client::tls::XdsTlsArgs,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let args = match cli.command {
        None => cli.serve,
        Some(Command::Serve(args)) => args,
    };
    let opts = ServeOptions::from_flags(
        "transform-service",
        args.xds,
        args.listen,
        args.admin,
        args.node_id,
        &args.tls,
        &args.xds_tls,
    )?;
    Ok(xds_client::service::run_until_signal(args.workers, || {
        server::start(opts)
    })?)
}
