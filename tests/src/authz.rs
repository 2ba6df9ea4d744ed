//! A real `authz-service` process, and the credentials tests present to it: HS256 tokens minted
//! by `authz-service token` and API keys created by `authz-service apikey create`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{free_port, workspace_bin, Proc};

/// The environment variable holding the test JWT provider's HS256 secret (`secret_env:`).
pub const SECRET_ENV: &str = "GATEWAY_E2E_SECRET";
/// The secret itself (≥ 32 bytes, as the config requires).
pub const SECRET: &str = "an-end-to-end-test-secret-of-more-than-32-bytes";
/// The test provider's `issuer:`.
pub const ISSUER: &str = "https://issuer.gateway.test";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `authz-service` with [`SECRET`] in its environment; killed on drop.
pub struct AuthzService {
    proc: Proc,
    pub grpc_port: u16,
    pub admin_port: u16,
}

impl AuthzService {
    /// Starts it against xds-server at `xds` (host:port) listening on `grpc_port` (the port the
    /// gateway.yaml names in `auth.service.address`), and waits until it has a policy (`/readyz`).
    pub async fn start_on(name: &str, xds: &str, grpc_port: u16, log_dir: &Path) -> Self {
        Self::start_with_env(name, xds, grpc_port, &[], log_dir).await
    }

    /// Like [`start_on`](Self::start_on) with more environment variables (such as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`); one the test runner has and `env` does not name is not
    /// passed on, so spans are exported only where a test asks for it.
    pub async fn start_with_env(
        name: &str,
        xds: &str,
        grpc_port: u16,
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Self {
        let admin_port = free_port();
        let mut cmd = crate::service_command("authz-service");
        cmd.env_remove(xds_client::telemetry::ENDPOINT_ENV)
            .envs(env.iter().map(|(k, v)| (k, v)));
        cmd.env(SECRET_ENV, SECRET)
            .args(["--xds", xds, "--node-id", name])
            .args(["--listen", &format!("127.0.0.1:{grpc_port}")])
            .args(["--admin", &format!("127.0.0.1:{admin_port}")]);
        let mut s = Self {
            proc: Proc::spawn(name, cmd, log_dir),
            grpc_port,
            admin_port,
        };
        s.wait_ready().await;
        s
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        self.proc
            .wait_http_ok("authz-service to be ready", &url, READY_TIMEOUT)
            .await;
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }
}

/// An HS256 token for `sub` on `plan` from the test provider ([`ISSUER`], [`SECRET`]), minted by
/// `authz-service token`.
pub fn token(sub: &str, plan: &str) -> String {
    token_from(ISSUER, sub, plan)
}

/// Like [`token`] for a provider with another `issuer` (and the same secret).
pub fn token_from(issuer: &str, sub: &str, plan: &str) -> String {
    token_with_claims(issuer, sub, &[&format!("plan={plan}")])
}

/// An HS256 token from `issuer` for `sub` with extra claims, each `name=value` (JSON values
/// allowed, as `authz-service token --claim` takes them).
pub fn token_with_claims(issuer: &str, sub: &str, claims: &[&str]) -> String {
    let mut cmd = Command::new(workspace_bin("authz-service"));
    cmd.env(SECRET_ENV, SECRET)
        .args(["token", "--alg", "HS256", "--secret-env", SECRET_ENV])
        .args(["--issuer", issuer, "--sub", sub]);
    for c in claims {
        cmd.args(["--claim", c]);
    }
    let out = cmd.output().expect("run authz-service token");
    assert!(
        out.status.success(),
        "authz-service token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 token")
        .trim()
        .to_string()
}

/// Adds an API key `id` on `plan` to `keys_file` (created when missing) with
/// `authz-service apikey create`, and returns the key.
pub fn api_key(keys_file: &Path, id: &str, plan: &str) -> String {
    let out = Command::new(workspace_bin("authz-service"))
        .args(["apikey", "create", "--keys-file"])
        .arg(keys_file)
        .args(["--id", id, "--plan", plan])
        .output()
        .expect("run authz-service apikey create");
    assert!(
        out.status.success(),
        "authz-service apikey create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 key")
        .trim()
        .to_string()
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
