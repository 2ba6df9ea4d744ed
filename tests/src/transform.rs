//! A real `transform-service` process.

use std::path::Path;
use std::time::Duration;

use crate::{free_port, workspace_bin, Proc};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `transform-service`; killed on drop.
pub struct TransformService {
    proc: Proc,
    pub grpc_port: u16,
    pub admin_port: u16,
}

impl TransformService {
    /// Starts it against xds-server at `xds` (host:port), listening on `grpc_port` (the port
    /// gateway.yaml names in `transforms.service.address`). With `wait_ready` it waits until
    /// it holds a policy (`/readyz`).
    pub async fn start_on(
        name: &str,
        xds: &str,
        grpc_port: u16,
        log_dir: &Path,
        wait_ready: bool,
    ) -> Self {
        let admin_port = free_port();
        let mut cmd = std::process::Command::new(workspace_bin("transform-service"));
        cmd.args(["--xds", xds, "--node-id", name])
            .args(["--listen", &format!("127.0.0.1:{grpc_port}")])
            .args(["--admin", &format!("127.0.0.1:{admin_port}")]);
        let mut s = Self {
            proc: Proc::spawn(name, cmd, log_dir),
            grpc_port,
            admin_port,
        };
        if wait_ready {
            let url = format!("http://127.0.0.1:{admin_port}/readyz");
            s.proc
                .wait_http_ok("transform-service to be ready", &url, READY_TIMEOUT)
                .await;
        }
        s
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }
}
