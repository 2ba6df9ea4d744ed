//! `Envoy`: a real Envoy process, bootstrapped either by `xds-server bootstrap` or by hand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::process::Proc;
use crate::xds::XdsServer;
use crate::{envoy_bin, free_port};

/// How long Envoy may take from exec to `/ready` answering 200 (it includes the first xDS fetch).
pub const ENVOY_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which ADS flavour an Envoy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdsMode {
    /// State of the World (`GRPC`).
    Sotw,
    /// Incremental (`DELTA_GRPC`).
    Delta,
}

impl XdsMode {
    pub const ALL: [XdsMode; 2] = [XdsMode::Sotw, XdsMode::Delta];

    /// The protocol name used in xds-server's `/status` (`"sotw"` / `"delta"`).
    pub fn as_str(self) -> &'static str {
        match self {
            XdsMode::Sotw => "sotw",
            XdsMode::Delta => "delta",
        }
    }
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    proc: Proc,
    node_id: String,
    admin_port: u16,
    bootstrap: PathBuf,
    http: reqwest::Client,
}

impl Envoy {
    /// Starts an Envoy for `gateway` fed by `xds`, with a bootstrap from `xds-server bootstrap`,
    /// and waits until its admin `/ready` says LIVE (that is, it has received its first
    /// listeners and clusters). Its files and log go to `dir`.
    pub async fn start(xds: &XdsServer, gateway: &str, mode: XdsMode, dir: &Path) -> Envoy {
        let node_id = format!("{gateway}-{}-{}", mode.as_str(), unique());
        let admin_port = free_port();
        let bootstrap = xds.bootstrap(gateway, &node_id, admin_port, mode);
        Self::start_with_bootstrap(&node_id, &bootstrap, admin_port, dir).await
    }

    /// Starts Envoy with a given bootstrap (YAML or JSON) whose admin listens on
    /// 127.0.0.1:`admin_port`, and waits until `/ready` answers 200.
    pub async fn start_with_bootstrap(
        node_id: &str,
        bootstrap: &str,
        admin_port: u16,
        dir: &Path,
    ) -> Envoy {
        let path = dir.join(format!("envoy-{node_id}.yaml"));
        std::fs::write(&path, bootstrap).expect("write Envoy bootstrap");
        let level = std::env::var("E2E_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
        let mut cmd = Command::new(envoy_bin());
        cmd.arg("-c")
            .arg(&path)
            // No shared memory, so any number of Envoys can run side by side.
            .arg("--disable-hot-restart")
            .args(["--base-id", &unique_base_id().to_string()])
            // One worker keeps several Envoys cheap on a two-core machine.
            .args(["--concurrency", "1"])
            .args(["--drain-time-s", "1"])
            .args(["--parent-shutdown-time-s", "2"])
            .args(["-l", &level]);
        let proc = Proc::spawn_split(&format!("envoy-{node_id}"), cmd, dir);
        let http = test_support::http_client();
        let mut envoy = Envoy {
            proc,
            node_id: node_id.to_string(),
            admin_port,
            bootstrap: path,
            http,
        };
        envoy.wait_ready().await;
        envoy
    }

    async fn wait_ready(&mut self) {
        let url = format!("{}/ready", self.admin_url());
        let what = format!("Envoy {} to be LIVE", self.node_id);
        self.proc
            .wait_http_ok(&what, &url, ENVOY_READY_TIMEOUT)
            .await;
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn bootstrap_path(&self) -> &Path {
        &self.bootstrap
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Prints the tail of Envoy's log to stderr.
    pub fn print_log_tail(&self, lines: usize) {
        self.proc.print_log_tail(lines)
    }

    async fn admin_get(&self, path_and_query: &str) -> reqwest::Result<String> {
        self.http
            .get(format!("{}{path_and_query}", self.admin_url()))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    }

    /// `GET /config_dump` (with secrets redacted by Envoy) as JSON; `resource` narrows it, e.g.
    /// `dynamic_active_clusters`.
    pub async fn config_dump(&self, resource: Option<&str>) -> Value {
        let q = resource
            .map(|r| format!("?resource={r}"))
            .unwrap_or_default();
        let text = self
            .admin_get(&format!("/config_dump{q}"))
            .await
            .expect("GET /config_dump");
        serde_json::from_str(&text).expect("config_dump is JSON")
    }

    /// `GET /stats` in text form (`name: value` lines).
    pub async fn stats(&self) -> String {
        self.admin_get("/stats").await.expect("GET /stats")
    }

    /// One counter or gauge from `/stats`, by exact name.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let text = self
            .admin_get(&format!("/stats?filter=^{}$", regex_escape(name)))
            .await
            .ok()?;
        text.lines().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// Stops Envoy (SIGKILL).
    pub fn kill(&mut self) {
        self.proc.kill()
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// A process-wide counter for unique node ids.
fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// Hot restart is disabled, so the base id only has to differ between Envoys of this machine;
/// mixing in the pid keeps concurrently running test binaries apart too.
fn unique_base_id() -> u32 {
    (std::process::id() % 100_000) * 100 + unique() % 100
}
