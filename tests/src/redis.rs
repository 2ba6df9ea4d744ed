//! Real `redis-server` processes on free ports: a single node and a three-master Redis Cluster.
//!
//! The binary comes from `test_support::redis_bin` (`$REDIS_SERVER` or `scripts/ensure-redis`,
//! which installs Debian's package when none is found). A missing Redis fails the test; it never
//! skips it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use test_support::{redis_bin, redis_cli};

use crate::{free_port, wait_for, Proc};

/// How long a fresh redis-server (or cluster) may take to answer.
const REDIS_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Sends one inline command and returns the raw reply (enough for PING and CLUSTER INFO).
pub fn raw_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{command}\r\n").as_bytes())?;
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// One `redis-server`; killed on drop.
pub struct RedisServer {
    proc: Proc,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    /// What runs redis-server (`start_under`), empty for nothing.
    wrapper: Vec<String>,
}

impl RedisServer {
    /// A standalone server without persistence, ready to answer PING.
    pub async fn start(log_dir: &Path) -> RedisServer {
        Self::start_with(log_dir, free_port(), vec![], vec![]).await
    }

    /// The same, run by `wrapper` (a program and its arguments, e.g. valgrind's), which is
    /// given redis-server's command line.
    pub async fn start_under(log_dir: &Path, wrapper: &[String]) -> RedisServer {
        Self::start_with(log_dir, free_port(), vec![], wrapper.to_vec()).await
    }

    async fn start_with(
        log_dir: &Path,
        port: u16,
        extra: Vec<String>,
        wrapper: Vec<String>,
    ) -> RedisServer {
        let dir = log_dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        let mut r = RedisServer {
            proc: spawn(&wrapper, &dir, log_dir, port, &extra),
            port,
            dir,
            extra,
            wrapper,
        };
        r.wait_ready().await;
        r
    }

    async fn wait_ready(&mut self) {
        let port = self.port;
        let proc = &mut self.proc;
        wait_for(
            &format!("redis-server on port {port} to answer PING"),
            REDIS_READY_TIMEOUT,
            async || {
                proc.assert_running();
                raw_command(port, "PING")
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        if r.starts_with("+PONG") {
                            Ok(())
                        } else {
                            Err(r)
                        }
                    })
            },
        )
        .await;
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The running server's process id (for the soak's memory and descriptor samples).
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts it again on the same port (empty: nothing was persisted) and waits for PING.
    pub async fn restart(&mut self, log_dir: &Path) {
        self.proc.kill();
        self.proc = spawn(&self.wrapper, &self.dir, log_dir, self.port, &self.extra);
        self.wait_ready().await;
    }
}

/// redis-server on `port`, run by `wrapper` when it is not empty.
fn spawn(wrapper: &[String], dir: &Path, log_dir: &Path, port: u16, extra: &[String]) -> Proc {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(redis_bin());
            c
        }
        None => Command::new(redis_bin()),
    };
    cmd.current_dir(dir)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--protected-mode", "no"])
        .args(extra);
    Proc::spawn(&format!("redis-{port}"), cmd, log_dir)
}

/// A Redis Cluster of `masters` nodes (no replicas), all slots assigned; nodes killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start(log_dir: &Path, masters: usize) -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..masters {
            let port = free_port();
            let extra = vec![
                "--cluster-enabled".into(),
                "yes".into(),
                // The bus port from the same band: its default, port + 10000, falls in the
                // ephemeral range, where any outgoing connection may hold it.
                "--cluster-port".into(),
                free_port().to_string(),
                "--cluster-config-file".into(),
                format!("nodes-{port}.conf"),
                "--cluster-node-timeout".into(),
                "2000".into(),
            ];
            nodes.push(RedisServer::start_with(log_dir, port, extra, vec![]).await);
        }
        let mut cmd = Command::new(redis_cli());
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port));
        }
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster create: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        wait_for(
            "every cluster node to report cluster_state:ok",
            REDIS_READY_TIMEOUT,
            async || {
                ports.iter().all(|&p| {
                    raw_command(p, "CLUSTER INFO").is_ok_and(|r| r.contains("cluster_state:ok"))
                })
            },
        )
        .await;
        RedisCluster { nodes }
    }

    /// The `--redis` value for ratelimit-service.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}
