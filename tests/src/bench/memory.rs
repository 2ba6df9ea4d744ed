//! Section 3: resident memory of the real `xds-server serve` process, idle with a small and a
//! 1,000-route config, and again once N simulated SotW Envoys have converged on it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tests::{free_port, Proc};

use super::fanout::target;
use super::fleet::{Fleet, Mode};
use super::gen::Shape;
use super::report::{fmt_dur, fmt_ratio, mib, Table};

/// Envoy Gateway's published control-plane memory at 1,000 routes: the comparison point for
/// this section, quoted rather than measured (it includes Kubernetes controllers we do not have).
const ENVOY_GATEWAY_MIB_AT_1000_ROUTES: f64 = 256.0;
/// From exec to `/readyz` 200 (first load, translation and listening).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// `VmRSS` and `VmHWM` (peak RSS) of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in {path}"))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("bad {name} line in {path}: {line:?}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// A running release `xds-server serve` on free ports.
pub struct Served {
    pub proc: Proc,
    pub grpc: std::net::SocketAddr,
}

impl Served {
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.proc.pid().context("xds-server has no pid")
    }
}

/// Starts `bin serve --config config` and waits for `/readyz`.
pub async fn serve(
    bin: &Path,
    config: &Path,
    log_dir: &Path,
    name: &str,
) -> anyhow::Result<Served> {
    let grpc: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(grpc.to_string())
        .arg("--admin")
        .arg(admin.to_string());
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    let mut proc = Proc::spawn(name, cmd, log_dir);
    let url = format!("http://{admin}/readyz");
    if let Err(e) = proc.poll_http_ok(&url, READY_TIMEOUT).await {
        bail!("{e}:\n{}", proc.log_tail(30));
    }
    Ok(Served { proc, grpc })
}

pub async fn run(
    bin: PathBuf,
    clients: usize,
    routes: usize,
    connections: usize,
) -> anyhow::Result<Value> {
    let dir = tempfile::Builder::new()
        .prefix("xds-bench-mem-")
        .tempdir()?;
    let write = |name: &str, shape: &Shape| -> anyhow::Result<PathBuf> {
        let p = dir.path().join(name);
        std::fs::write(&p, shape.yaml()).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    };
    let small_shape = Shape::new(10, free_port(), "127.0.0.1:9000");
    let big_shape = Shape::new(routes, free_port(), "127.0.0.1:9000");
    let small_cfg = write("small.yaml", &small_shape)?;
    let big_cfg = write("big.yaml", &big_shape)?;

    let small = serve(&bin, &small_cfg, dir.path(), "xds-server-small").await?;
    let (small_rss, _) = rss_kib(small.pid()?)?;
    drop(small);

    let big = serve(&bin, &big_cfg, dir.path(), "xds-server-big").await?;
    let (idle_rss, _) = rss_kib(big.pid()?)?;
    // The target is computed in-process from the same file: versions are content hashes, so
    // they equal what the server publishes.
    let built = xds_server::server::build(&big_cfg)
        .map_err(|e| anyhow::anyhow!("{}", e.lines().join("\n")))
        .context("building the big config in-process")?;
    let (mut fleet, connect) = Fleet::connect(
        big.grpc,
        Mode::Sotw,
        clients,
        connections,
        target(0, &built.snapshots)?,
    )
    .await?;
    let t0 = fleet.go();
    let converged = fleet.wait(0, t0, CONVERGE_TIMEOUT).await;
    let after = rss_kib(big.pid()?);
    let conns = fleet.connections();
    fleet.stop().await;
    let lat = converged?;
    let (loaded_rss, peak) = after?;
    drop(big);

    let per_client = (loaded_rss.saturating_sub(idle_rss)) as f64 / clients.max(1) as f64;
    let mut t = Table::new(
        format!(
            "3. xds-server memory (release binary, VmRSS from /proc/<pid>/status; {clients} SotW clients over {conns} connections)"
        ),
        &["state", "RSS", "baseline", "ratio"],
    );
    t.row(vec![
        format!("idle, {} routes", small_shape.total_routes()),
        mib(small_rss),
        "-".into(),
        "-".into(),
    ]);
    t.row(vec![
        format!("idle, {} routes", big_shape.total_routes()),
        mib(idle_rss),
        format!("{} (10 routes)", mib(small_rss)),
        fmt_ratio(idle_rss as f64 / small_rss.max(1) as f64),
    ]);
    t.row(vec![
        format!("{clients} clients converged"),
        mib(loaded_rss),
        format!("{} (idle)", mib(idle_rss)),
        fmt_ratio(loaded_rss as f64 / idle_rss.max(1) as f64),
    ]);
    t.row(vec![
        "peak (VmHWM) during the run".into(),
        mib(peak),
        format!("{ENVOY_GATEWAY_MIB_AT_1000_ROUTES:.0} MiB (Envoy Gateway, 1k routes)"),
        fmt_ratio(peak as f64 / 1024.0 / ENVOY_GATEWAY_MIB_AT_1000_ROUTES),
    ]);
    t.row(vec![
        "with clients vs Envoy Gateway".into(),
        mib(loaded_rss),
        format!("{ENVOY_GATEWAY_MIB_AT_1000_ROUTES:.0} MiB"),
        fmt_ratio(loaded_rss as f64 / 1024.0 / ENVOY_GATEWAY_MIB_AT_1000_ROUTES),
    ]);
    t.note(format!(
        "≈ {per_client:.1} KiB per connected client; {clients} clients connected in {} ({} SYN retransmits) and converged in {} (max)",
        fmt_dur(connect.total),
        connect.syn_retransmits(),
        fmt_dur(lat.iter().max().copied().unwrap_or_default())
    ));
    t.note("Envoy Gateway: its published control-plane figure at 1,000 routes (its own setup, Kubernetes controllers included), quoted for scale, not measured here");
    t.print();
    Ok(json!({
        "small_routes": small_shape.total_routes(),
        "big_routes": big_shape.total_routes(),
        "idle_small_kib": small_rss,
        "idle_big_kib": idle_rss,
        "clients": clients,
        "connections": conns,
        "with_clients_kib": loaded_rss,
        "peak_kib": peak,
        "per_client_kib": per_client,
        "envoy_gateway_mib": ENVOY_GATEWAY_MIB_AT_1000_ROUTES,
    }))
}
