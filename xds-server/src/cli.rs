//! Command line (spec §7): `serve`, `validate`, `bootstrap`, `certs` (an mTLS control plane's
//! certificates) and `schema` (the JSON Schema of gateway.yaml, or the configuration reference).
//! Every flag has help text and an environment variable (`tests/tests/cli.rs` checks both).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::bootstrap::{self, BootstrapOptions};
use crate::certs::CertsOptions;
use crate::server::{self, ServeOptions};
use config::HostPort;
pub use xds_client::side::LogFormat;
use xds_client::tls::{ServerTlsArgs, XdsTlsArgs};

#[derive(Debug, Parser)]
#[command(
    name = "xds-server",
    version,
    about = "Envoy control plane for gateway.yaml"
)]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve ADS (SotW and Delta) for the config, reloading it when it changes.
    Serve {
        /// The gateway.yaml to serve; watched, and every valid edit applied without a restart.
        #[arg(long, env = "XDS_CONFIG", default_value = "gateway.yaml")]
        config: PathBuf,
        /// gRPC (ADS) listen address.
        #[arg(long, env = "XDS_LISTEN", default_value = "127.0.0.1:18000")]
        listen: SocketAddr,
        /// HTTP admin listen address: /healthz, /readyz, /metrics, /status.
        #[arg(long, env = "XDS_ADMIN", default_value = "127.0.0.1:18001")]
        admin: SocketAddr,
        /// mTLS on the ADS port: a client is served only the node group its certificate's URI
        /// SAN `spiffe://gateway/group/<node.cluster>` names.
        #[command(flatten)]
        tls: ServerTlsArgs,
    },
    /// Check a config: exit 0 with a summary, or 1 with every error.
    Validate {
        /// The gateway.yaml to check, with every file it references.
        #[arg(env = "XDS_CONFIG", default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Print an Envoy bootstrap that fetches everything else from this server.
    Bootstrap {
        /// The gateway (from `gateways:`) this Envoy serves; becomes node.cluster.
        #[arg(long, env = "XDS_GATEWAY")]
        gateway: String,
        /// Where Envoy reaches xds-server (host:port; a DNS name is resolved by Envoy).
        #[arg(long, env = "XDS_ADDRESS", default_value = "127.0.0.1:18000", value_parser = config::host_port)]
        xds: HostPort,
        /// node.id; defaults to `<gateway>-<hostname>`.
        #[arg(long, env = "XDS_NODE_ID")]
        node_id: Option<String>,
        /// Address of Envoy's own admin interface (stats, config dump); keep it off public
        /// interfaces.
        #[arg(long, env = "ENVOY_ADMIN_ADDRESS", default_value = "127.0.0.1")]
        admin_address: String,
        /// Port of Envoy's admin interface.
        #[arg(long, env = "ENVOY_ADMIN_PORT", default_value_t = 9901)]
        admin_port: u16,
        /// Use Delta (incremental) xDS instead of State-of-the-World.
        #[arg(long, env = "XDS_DELTA")]
        delta: bool,
        /// Envoy-wide limit on open client connections (overload manager).
        #[arg(long, env = "ENVOY_MAX_CONNECTIONS", default_value_t = 50_000)]
        max_connections: u64,
        /// Envoy heap size in bytes at which the overload manager acts: at 95% Envoy returns
        /// freed memory to the system, at 98% it answers new requests with 503. Set it below the
        /// container's memory limit (it measures Envoy's heap, not its whole RSS).
        #[arg(long, env = "ENVOY_MAX_HEAP", default_value_t = 1 << 30)]
        max_heap: u64,
        /// Envoy's client certificate towards xds-server (paths as Envoy sees them).
        #[command(flatten)]
        xds_tls: XdsTlsArgs,
    },
    /// Write a private CA, xds-server's certificate and one client certificate per node group
    /// (URI SAN `spiffe://gateway/group/<group>`) into a directory. Private keys are mode 0600;
    /// the CA's key is not kept: run again to re-issue everything.
    Certs {
        /// Directory to write `ca.pem`, `<name>.pem` and `<name>.key` into.
        #[arg(long, env = "XDS_CERTS_OUT")]
        out: PathBuf,
        /// A gateway (node group) to issue a certificate for; repeatable. `authz-service` and
        /// `ratelimit-service` always get one.
        #[arg(long = "gateway", env = "XDS_CERTS_GATEWAYS", value_delimiter = ',')]
        gateways: Vec<String>,
        /// DNS name of xds-server's certificate.
        #[arg(long, env = "XDS_SERVER_NAME", default_value = xds_client::tls::DEFAULT_SERVER_NAME)]
        server_name: String,
        /// Write nothing if the directory already holds `ca.pem`: a container init step that
        /// runs on every `docker compose up` keeps the certificates the running services use.
        #[arg(long, env = "XDS_CERTS_IF_MISSING")]
        if_missing: bool,
    },
    /// Print the JSON Schema of gateway.yaml (for editors), or the configuration reference.
    Schema {
        /// `json`: the JSON Schema (draft 2020-12); `markdown`: the reference generated from it.
        #[arg(long, env = "XDS_SCHEMA_FORMAT", default_value = "json")]
        format: SchemaFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemaFormat {
    Json,
    Markdown,
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            admin,
            tls,
        } => {
            let tls = tls.load()?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(server::serve(ServeOptions {
                config,
                listen,
                admin,
                tls,
            }))?;
            Ok(0)
        }
        Command::Validate { config } => match server::build(&config) {
            Ok(built) => {
                // Valid but risky: said, not refused (exit 0).
                for w in &built.warnings {
                    eprintln!("{w}");
                }
                let s = &built.snapshots;
                let count = |t: &str| {
                    s.groups
                        .values()
                        .map(|g| g.get(t).map_or(0, |t| t.resources.len()))
                        .sum::<usize>()
                };
                println!(
                    "{}: ok: {} gateway(s), {} listener(s), {} cluster(s), version {}",
                    config.display(),
                    // Gateways are the groups that receive listeners; the policy services'
                    // groups receive only their policy.
                    s.groups
                        .values()
                        .filter(|g| g.get(ads::LISTENER).is_some())
                        .count(),
                    count(ads::LISTENER),
                    count(ads::CLUSTER),
                    s.version
                );
                Ok(0)
            }
            Err(e) => {
                let errors = e.lines();
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{}: {} error(s)", config.display(), errors.len());
                Ok(1)
            }
        },
        Command::Bootstrap {
            gateway,
            xds,
            node_id,
            admin_address,
            admin_port,
            delta,
            max_connections,
            max_heap,
            xds_tls,
        } => {
            let node_id = node_id.unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME")
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "envoy".into());
                format!("{gateway}-{host}")
            });
            let opts = BootstrapOptions {
                gateway,
                node_id,
                xds,
                admin_address,
                admin_port,
                delta,
                max_connections,
                max_heap,
                xds_tls,
            };
            println!("{}", bootstrap::render(&opts));
            Ok(0)
        }
        Command::Certs {
            out,
            gateways,
            server_name,
            if_missing,
        } => {
            if if_missing && out.join("ca.pem").exists() {
                eprintln!("{}: ca.pem exists, nothing written", out.display());
                return Ok(0);
            }
            let mut groups = gateways;
            for g in proto::group::ALL {
                if !groups.iter().any(|x| x == g) {
                    groups.push(g.to_string());
                }
            }
            for f in crate::certs::write(&CertsOptions {
                out,
                groups,
                server_name,
            })? {
                println!("{}", f.display());
            }
            Ok(0)
        }
        Command::Schema { format } => {
            // Both end with a newline, as the committed docs/ files do. Written without `print!`,
            // which panics when stdout is closed early (`xds-server schema | head`).
            let text = match format {
                SchemaFormat::Json => config::schema::schema_json(),
                SchemaFormat::Markdown => config::schema::markdown(),
            };
            let mut out = std::io::stdout().lock();
            std::io::Write::write_all(&mut out, text.as_bytes())?;
            std::io::Write::flush(&mut out)?;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap_xds(addr: &str) -> Result<HostPort, clap::Error> {
        let cli = Cli::try_parse_from([
            "xds-server",
            "bootstrap",
            "--gateway",
            "edge",
            "--xds",
            addr,
        ])?;
        match cli.command {
            Command::Bootstrap { xds, .. } => Ok(xds),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn certs_if_missing_keeps_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tls");
        let certs = |extra: &[&str]| {
            let mut args = vec!["xds-server", "certs", "--out", out.to_str().unwrap()];
            args.extend(extra);
            assert_eq!(run(Cli::try_parse_from(args).unwrap()).unwrap(), 0);
            std::fs::read(out.join("ca.pem")).unwrap()
        };
        let first = certs(&["--gateway", "edge"]);
        assert!(out.join("edge.key").exists() && out.join("authz-service.pem").exists());
        assert_eq!(certs(&["--if-missing"]), first, "--if-missing re-issued");
        assert_ne!(
            certs(&[]),
            first,
            "without --if-missing everything is re-issued"
        );
    }

    #[test]
    fn bootstrap_xds_uses_the_config_grammar() {
        let ok = bootstrap_xds("[::1]:18000").expect("bracketed IPv6");
        assert_eq!((ok.host.as_str(), ok.port), ("::1", 18000));
        assert_eq!(
            bootstrap_xds("xds.internal:18000").unwrap().host,
            "xds.internal"
        );
        for bad in ["xds:0", "xds", "::1:18000", "xds:65536"] {
            assert!(bootstrap_xds(bad).is_err(), "{bad} must be refused");
        }
    }
}
