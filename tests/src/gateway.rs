//! The whole product on free ports: an echo upstream, xds-server, authz-service,
//! ratelimit-service (memory or Redis) and one Envoy, all real processes, started in the order
//! `make up` uses. Tests write the routes and plans; [`Full::yaml`] fills in the rest.

use std::path::{Path, PathBuf};

use crate::authz::{api_key, AuthzService, ISSUER, SECRET_ENV};
use crate::ratelimit::RateLimitService;
use crate::{free_port, EchoUpstream, Stack, XdsMode};

/// The API key provider's header.
pub const API_KEY_HEADER: &str = "x-api-key";

/// What a config needs to know about the running processes.
#[derive(Debug, Clone)]
pub struct Ports {
    /// The Envoy listener.
    pub http: u16,
    /// authz-service gRPC (`auth.service.address`).
    pub authz: u16,
    /// ratelimit-service gRPC (`rate_limits.service.address`).
    pub rls: u16,
}

/// The parts of a gateway.yaml a test chooses.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The `plans:` mapping body, e.g. `{ free: 2/minute, pro: 4/minute }`.
    pub plans: String,
    /// `on_error` for the rate-limit service: `allow` or `deny`.
    pub rls_on_error: &'static str,
    /// `on_error` for authz-service: `allow` (fail open) or `deny`.
    pub authz_on_error: &'static str,
    /// Route list items (each starting with `      - name:`), using service `api`.
    pub routes: String,
    /// More JWT providers (entries under `auth.jwt`, indented by six spaces).
    pub jwt_extra: String,
    /// More services (entries under `services`, indented by two spaces).
    pub services_extra: String,
    /// Environment of authz-service and ratelimit-service (such as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub service_env: Vec<(String, String)>,
    /// `rate_limits.counted_by`: `ratelimit-service` (the default) or `authz-service`.
    pub counted_by: &'static str,
}

impl Shape {
    /// `plans` and `routes` with `on_error: allow` for ratelimit-service, `on_error: deny` for
    /// authz-service and no extra providers.
    pub fn new(plans: &str, routes: &str) -> Shape {
        Shape {
            plans: plans.to_string(),
            rls_on_error: "allow",
            authz_on_error: "deny",
            routes: routes.to_string(),
            jwt_extra: String::new(),
            services_extra: String::new(),
            service_env: Vec::new(),
            counted_by: "ratelimit-service",
        }
    }
}

/// A running gateway: every process is killed when this drops (Envoy first).
pub struct Full {
    pub stack: Stack,
    pub authz: AuthzService,
    pub rls: RateLimitService,
    pub upstream: EchoUpstream,
    pub ports: Ports,
    /// The API-key provider's keys file (in the stack's directory).
    pub keys_file: PathBuf,
    /// An API key on plan `pro` (id `partner-1`), created before start.
    pub partner_key: String,
}

impl Full {
    /// Starts everything with `shape`; ratelimit-service uses `redis` when given.
    pub async fn start(shape: &Shape, redis: Option<&str>) -> Full {
        let upstream = EchoUpstream::start("api").await;
        let ports = Ports {
            http: free_port(),
            authz: free_port(),
            rls: free_port(),
        };
        let dir = tempfile::Builder::new()
            .prefix("gateway-full-")
            .tempdir()
            .expect("tempdir");
        let keys_file = dir.path().join("api-keys.yaml");
        let partner_key = api_key(&keys_file, "partner-1", "pro");
        let yaml = Self::render(&upstream.endpoint(), &ports, &keys_file, shape);
        let stack = Stack::start_in(dir, XdsMode::Sotw, &yaml).await;
        let xds = stack.xds.grpc_addr();
        let env = &shape.service_env;
        // authz-service counts in the same store as ratelimit-service (it counts only under
        // `counted_by: authz-service`).
        let mut authz_env = env.clone();
        if let Some(url) = redis {
            authz_env.push(("AUTHZ_REDIS".into(), url.to_string()));
        }
        let authz =
            AuthzService::start_with_env("authz-full", &xds, ports.authz, &authz_env, stack.dir())
                .await;
        let rls = RateLimitService::start_with_env(
            "rls-full",
            &xds,
            redis,
            ports.rls,
            &[],
            env,
            stack.dir(),
        )
        .await;
        stack.wait_converged().await;
        Full {
            stack,
            authz,
            rls,
            upstream,
            ports,
            keys_file,
            partner_key,
        }
    }

    /// The JSON access log line of the request with id `id` (Envoy flushes its access log
    /// about once a second).
    pub async fn log_line(&self, id: &str) -> serde_json::Value {
        let path = self
            .stack
            .dir()
            .join(format!("envoy-{}.stdout.log", self.stack.envoy.node_id()));
        crate::wait_for(
            "the access log line",
            std::time::Duration::from_secs(10),
            async || {
                let log = std::fs::read_to_string(&path).unwrap_or_default();
                log.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(|l| l["request_id"] == id)
            },
        )
        .await
    }

    /// The gateway.yaml for `shape` with this gateway's ports and files (for edits).
    pub fn yaml(&self, shape: &Shape) -> String {
        Self::render(
            &self.upstream.endpoint(),
            &self.ports,
            &self.keys_file,
            shape,
        )
    }

    fn render(upstream: &str, ports: &Ports, keys_file: &Path, shape: &Shape) -> String {
        let Ports { http, authz, rls } = ports;
        let keys = keys_file.display();
        let Shape {
            plans,
            rls_on_error,
            authz_on_error,
            routes,
            jwt_extra,
            services_extra,
            service_env: _,
            counted_by,
        } = shape;
        format!(
            r#"version: 1
services:
  api: {{ endpoints: [{upstream}] }}
{services_extra}auth:
  service: {{ address: 127.0.0.1:{authz}, timeout: 1s, on_error: {authz_on_error} }}
  jwt:
    main:
      issuer: {ISSUER}
      algorithms: [HS256]
      secret_env: {SECRET_ENV}
      headers: {{ x-user-id: sub }}
{jwt_extra}  api_keys:
    partners:
      header: {API_KEY_HEADER}
      query: api_key
      keys_file: {keys}
rate_limits:
  service: {{ address: 127.0.0.1:{rls}, timeout: 500ms, on_error: {rls_on_error} }}
  plans: {plans}
  default_plan: free
  anonymous: 1000/minute
  counted_by: {counted_by}
gateways:
  edge:
    listeners: [{{ name: http, port: {http} }}]
    routes:
{routes}"#
        )
    }
}
