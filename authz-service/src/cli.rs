//! Command line (spec §7): `serve` (the default), `apikey create|revoke`, `token`. Every flag has
//! an environment variable.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
pub use xds_client::side::{init_logging, LogFormat};

use crate::apikey::{self, Edit, KeyRecord, KeysFile};
use crate::server::{self, ServeOptions};
use crate::token::{self, KeySource, TokenSpec};

#[derive(Debug, Parser)]
#[command(
    name = "authz-service",
    version,
    about = "Envoy ext_authz service: JWT and API keys, configured over xDS",
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
    /// Serve ext_authz Check (the default).
    Serve(ServeArgs),
    /// Create or revoke API keys in a keys file.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Mint a development JWT.
    Token(TokenArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// xds-server's gRPC address.
    #[arg(long, env = "AUTHZ_XDS", default_value = "127.0.0.1:18000")]
    pub xds: String,
    /// ext_authz gRPC listen address.
    #[arg(long, env = "AUTHZ_LISTEN", default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,
    /// HTTP admin listen address: /healthz, /readyz, /metrics.
    #[arg(long, env = "AUTHZ_ADMIN", default_value = "127.0.0.1:9011")]
    pub admin: SocketAddr,
    /// node.id towards xds-server; defaults to `authz-service-<hostname>-<pid>`.
    #[arg(long, env = "AUTHZ_NODE_ID")]
    pub node_id: Option<String>,
    /// Tokio worker threads. One (the default) runs every call on one thread: Envoy sends all
    /// of a worker's calls over one HTTP/2 connection and each decision takes microseconds, so
    /// more threads add cross-thread wake-ups, not throughput. One thread is one core at most:
    /// raise it when Envoys with several workers, or several Envoys, share this instance.
    #[arg(long, env = "AUTHZ_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Redis for the counters of the limits this service counts itself
    /// (`rate_limits.counted_by: authz-service`): give it the same value as ratelimit-service's
    /// `--redis`, so every instance of both counts in one place. `redis://host:port/db` or
    /// `redis+cluster://host1:port1,host2:port2`. Absent: the in-memory store, exact for this
    /// one instance.
    #[arg(long, env = "AUTHZ_REDIS")]
    pub redis: Option<String>,
    /// Without --redis: the most counters the in-memory store holds (at least 1); as
    /// ratelimit-service's `--memory-max-counters`.
    #[arg(
        long,
        env = "AUTHZ_MEMORY_MAX_COUNTERS",
        default_value_t = NonZeroUsize::new(ratelimit::store::DEFAULT_MAX_COUNTERS).expect("non-zero")
    )]
    pub memory_max_counters: NonZeroUsize,
    /// mTLS on the ext_authz port: only Envoys with a certificate signed by --client-ca.
    #[command(flatten)]
    pub tls: xds_client::tls::ServerTlsArgs,
    /// This service's certificate towards xds-server (URI SAN
    /// `spiffe://gateway/group/authz-service`).
    #[command(flatten)]
    pub xds_tls: xds_client::tls::XdsTlsArgs,
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create a key: prints it once; the file keeps only its SHA-256.
    Create {
        /// The keys file to add the key to (created if missing; rewritten atomically).
        #[arg(long, env = "AUTHZ_KEYS_FILE")]
        keys_file: PathBuf,
        /// The key's id: unique in the file, the client id upstreams see (`x-client-id`).
        #[arg(long, env = "AUTHZ_KEY_ID")]
        id: String,
        /// The rate-limit plan of requests with this key (a name under `rate_limits.plans`).
        #[arg(long, env = "AUTHZ_KEY_PLAN")]
        plan: String,
        /// gateway.yaml (xds-server's `XDS_CONFIG`): warn on stderr when --plan is not one of
        /// its `rate_limits.plans`. The key is created either way.
        #[arg(long, env = "XDS_CONFIG")]
        config: Option<PathBuf>,
        /// Comma-separated roles.
        #[arg(long, env = "AUTHZ_KEY_ROLES", value_delimiter = ',')]
        roles: Vec<String>,
        /// Comma-separated scopes.
        #[arg(long, env = "AUTHZ_KEY_SCOPES", value_delimiter = ',')]
        scopes: Vec<String>,
        /// The tenant `per: tenant` rate limits count this key's requests by.
        #[arg(long, env = "AUTHZ_KEY_TENANT")]
        tenant: Option<String>,
        /// RFC 3339 time (2026-12-31T00:00:00Z) or a duration from now (90d, 12h).
        #[arg(long, env = "AUTHZ_KEY_EXPIRES")]
        expires: Option<String>,
    },
    /// Revoke a key by id (it stays in the file, marked revoked).
    Revoke {
        /// The keys file that holds the key.
        #[arg(long, env = "AUTHZ_KEYS_FILE")]
        keys_file: PathBuf,
        /// The id of the key to revoke.
        #[arg(long, env = "AUTHZ_KEY_ID")]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// JWS algorithm (RS256, ES256, EdDSA, HS256, …).
    #[arg(long, env = "AUTHZ_TOKEN_ALG", default_value = "RS256")]
    pub alg: String,
    /// PEM private key file (asymmetric algorithms).
    #[arg(long, env = "AUTHZ_TOKEN_KEY")]
    pub key: Option<PathBuf>,
    /// Environment variable holding the HS* secret.
    #[arg(long, env = "AUTHZ_TOKEN_SECRET_ENV")]
    pub secret_env: Option<String>,
    /// The `iss` claim: the provider's `issuer`.
    #[arg(long, env = "AUTHZ_TOKEN_ISSUER")]
    pub issuer: String,
    /// The `sub` claim: the client id, unless the provider's `client_claim` names another.
    #[arg(long, env = "AUTHZ_TOKEN_SUBJECT", default_value = "dev-user")]
    pub sub: String,
    /// The `aud` claim (comma-separated or repeated); none when absent.
    #[arg(long = "aud", env = "AUTHZ_TOKEN_AUDIENCE", value_delimiter = ',')]
    pub audiences: Vec<String>,
    /// The `kid` header naming the verification key in the provider's JWKS.
    #[arg(long, env = "AUTHZ_TOKEN_KID")]
    pub kid: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, env = "AUTHZ_TOKEN_TTL", default_value_t = 3600)]
    pub ttl: u64,
    /// Extra claims, `name=value` (JSON values allowed: `roles=["admin"]`).
    #[arg(long = "claim", env = "AUTHZ_TOKEN_CLAIMS", value_delimiter = ';')]
    pub claims: Vec<String>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Apikey(ApikeyCommand::Create {
            keys_file,
            id,
            plan,
            config,
            roles,
            scopes,
            tenant,
            expires,
        })) => {
            if let Some(w) = config.and_then(|c| apikey::plan_warning(&c, &plan)) {
                eprintln!("warning: {w}");
            }
            let now = now();
            let expires = match expires {
                Some(e) => Some(apikey::parse_expiry(&e, now).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--expires {e:?}: expected an RFC 3339 time or a duration like 90d"
                    )
                })?),
                None => None,
            };
            let mut file = KeysFile::load(&keys_file)?;
            let key = file.create(KeyRecord {
                id: id.clone(),
                sha256: [0; 32],
                plan,
                roles: roles.into_iter().filter(|r| !r.is_empty()).collect(),
                scopes: scopes.into_iter().filter(|s| !s.is_empty()).collect(),
                tenant: tenant.unwrap_or_default(),
                created: now,
                expires,
                revoked: None,
            })?;
            file.store(&keys_file)?;
            eprintln!(
                "created API key {id:?} in {}; it is shown once, store it now:",
                keys_file.display()
            );
            println!("{key}");
            Ok(())
        }
        Some(Command::Apikey(ApikeyCommand::Revoke { keys_file, id })) => {
            let mut file = KeysFile::load(&keys_file)?;
            file.revoke(&id, now())?;
            file.store(&keys_file)?;
            eprintln!("revoked API key {id:?} in {}", keys_file.display());
            Ok(())
        }
        Some(Command::Token(t)) => {
            let source = match (&t.key, &t.secret_env) {
                (Some(k), None) => KeySource::PemFile(k),
                (None, Some(var)) => {
                    use std::os::unix::ffi::OsStringExt;
                    let secret = std::env::var_os(var)
                        .ok_or_else(|| token::TokenError::MissingSecret(var.clone()))?;
                    KeySource::Secret(secret.into_vec())
                }
                _ => return Err(token::TokenError::KeySource.into()),
            };
            let jwt = token::mint(
                &TokenSpec {
                    algorithm: t.alg,
                    issuer: t.issuer,
                    subject: t.sub,
                    audiences: t.audiences,
                    kid: t.kid,
                    ttl_secs: t.ttl,
                    claims: t.claims,
                    now: now() as u64,
                },
                source,
            )?;
            println!("{jwt}");
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let opts = ServeOptions::from_flags(
        "authz-service",
        args.xds,
        args.listen,
        args.admin,
        args.node_id,
        &args.tls,
        &args.xds_tls,
    )?;
    Ok(xds_client::service::run_until_signal(
        Some(args.workers),
        || {
            server::start_with(
                opts,
                server::StoreOptions {
                    redis: args.redis,
                    memory_max_counters: args.memory_max_counters.get(),
                },
            )
        },
    )?)
}
