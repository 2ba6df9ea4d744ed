//! `XdsServer`: the real `xds-server serve` process on free ports, plus its admin API.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::envoy::XdsMode;
use crate::process::Proc;
use crate::{free_port, workspace_bin};

/// How long `serve` may take to answer `/readyz` with 200.
pub const XDS_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The `xds-server` binary, built from this workspace if needed.
pub fn xds_server_bin() -> PathBuf {
    workspace_bin("xds-server")
}

/// Runs `xds-server validate <config>` and returns its output.
pub fn validate(config: &Path) -> Output {
    Command::new(xds_server_bin())
        .arg("validate")
        .arg(config)
        .output()
        .expect("run xds-server validate")
}

/// A running `xds-server serve`; killed on drop.
pub struct XdsServer {
    proc: Proc,
    bin: PathBuf,
    config: PathBuf,
    log_dir: PathBuf,
    grpc_port: u16,
    admin_port: u16,
    http: reqwest::Client,
}

impl XdsServer {
    /// Starts `xds-server serve --config <config>` on free ports and waits for `/readyz`.
    /// Its log goes to `log_dir/xds-server.log`.
    pub async fn start(config: &Path, log_dir: &Path) -> XdsServer {
        let bin = xds_server_bin();
        let (grpc_port, admin_port) = (free_port(), free_port());
        let http = test_support::http_client();
        let proc = spawn(&bin, config, log_dir, grpc_port, admin_port);
        let mut xds = XdsServer {
            proc,
            bin,
            config: config.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            grpc_port,
            admin_port,
            http,
        };
        xds.wait_ready().await;
        xds
    }

    async fn wait_ready(&mut self) {
        let url = format!("{}/readyz", self.admin_url());
        self.proc
            .wait_http_ok("xds-server to be ready", &url, XDS_READY_TIMEOUT)
            .await;
    }

    /// SIGKILL: the harshest way to lose the control plane.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts the server again on the same ports (killing it first if it still runs) and waits
    /// for `/readyz`.
    pub async fn restart(&mut self) {
        self.proc.kill();
        self.proc = spawn(
            &self.bin,
            &self.config,
            &self.log_dir,
            self.grpc_port,
            self.admin_port,
        );
        self.wait_ready().await;
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The ADS address, `127.0.0.1:<port>`.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// `GET /status` as JSON, or the error (for polling while the server restarts).
    pub async fn try_status(&self) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}/status", self.admin_url()))
            .send()
            .await?;
        Ok(resp.error_for_status()?.json().await?)
    }

    /// `GET /status` as JSON; panics if the server does not answer.
    pub async fn status(&self) -> Value {
        self.try_status().await.expect("GET xds-server /status")
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> String {
        let resp = self
            .http
            .get(format!("{}/metrics", self.admin_url()))
            .send()
            .await;
        resp.and_then(|r| r.error_for_status())
            .expect("GET xds-server /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// One sample from `/metrics` by its exact series name including labels, e.g.
    /// `xds_config_reloads_total{result="ok"}`; `None` if absent.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        parse_metric(&self.metrics().await, series)
    }

    /// The `/status` entry of the client with this node id, if connected.
    pub async fn client(&self, node_id: &str) -> Option<Value> {
        let st = self.try_status().await.ok()?;
        st["clients"]
            .as_array()?
            .iter()
            .find(|c| c["node_id"] == node_id)
            .cloned()
    }

    /// Output of `xds-server bootstrap` for an Envoy of `gateway` with the given node id and admin
    /// port, pointed at this server.
    pub fn bootstrap(
        &self,
        gateway: &str,
        node_id: &str,
        admin_port: u16,
        mode: XdsMode,
    ) -> String {
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "bootstrap",
            "--gateway",
            gateway,
            "--xds",
            &self.grpc_addr(),
            "--node-id",
            node_id,
        ])
        .args(["--admin-port", &admin_port.to_string()]);
        if mode == XdsMode::Delta {
            cmd.arg("--delta");
        }
        let out = cmd.output().expect("run xds-server bootstrap");
        assert!(
            out.status.success(),
            "xds-server bootstrap failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("bootstrap is UTF-8")
    }
}

fn spawn(bin: &Path, config: &Path, log_dir: &Path, grpc_port: u16, admin_port: u16) -> Proc {
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{grpc_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}")]);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    Proc::spawn("xds-server", cmd, log_dir)
}

/// Finds `series` (name plus labels exactly as rendered) in Prometheus text.
pub fn parse_metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name.trim() == series)
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_metric;

    #[test]
    fn finds_labelled_series() {
        let text = "# HELP x y\nxds_config_reloads_total{result=\"ok\"} 3\nxds_config_reloads_total{result=\"rejected\"} 1\n";
        assert_eq!(
            parse_metric(text, "xds_config_reloads_total{result=\"ok\"}"),
            Some(3.0)
        );
        assert_eq!(
            parse_metric(text, "xds_config_reloads_total{result=\"rejected\"}"),
            Some(1.0)
        );
        assert_eq!(parse_metric(text, "missing"), None);
    }
}
