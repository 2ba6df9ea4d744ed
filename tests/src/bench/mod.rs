//! The control-plane benchmark behind `scripts/bench`: translation cost, ADS fan-out to many
//! simulated Envoys, server memory, and edit-to-serving latency through a real Envoy.
//!
//! Every figure is printed next to a baseline measured in the same run (a smaller config, one
//! client, the idle server, the reload debounce), because on a shared two-core machine absolute
//! numbers drift from run to run while ratios mostly do not.

mod edit;
mod fanout;
mod fleet;
mod gen;
mod memory;
mod report;
mod translate;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use serde_json::Value;

use report::Report;

#[derive(Debug, Parser)]
#[command(
    name = "xds-bench",
    about = "Benchmarks xds-server: translation, ADS fan-out, memory, edit-to-serving latency"
)]
pub struct Args {
    /// Simulated Envoys for the fan-out and memory sections.
    #[arg(long, env = "BENCH_CLIENTS", default_value_t = 1000)]
    clients: usize,
    /// Routes of the large translation config; the small one, and the config the fan-out,
    /// memory and edit sections serve, have a tenth of that (10 routes per service throughout).
    #[arg(long, env = "BENCH_ROUTES", default_value_t = 10_000)]
    routes: usize,
    /// Measured runs per translation size (the median is reported).
    #[arg(long, env = "BENCH_RUNS", default_value_t = 5)]
    runs: usize,
    /// Config edits per xDS mode in the edit-to-serving section.
    #[arg(long, env = "BENCH_EDITS", default_value_t = 15)]
    edits: usize,
    /// Run only these sections (comma-separated or repeated).
    #[arg(long, env = "BENCH_ONLY", value_delimiter = ',')]
    only: Vec<Section>,
    /// The xds-server binary for the memory and edit sections; default: next to this binary
    /// (target/release/xds-server when run through scripts/bench).
    #[arg(long, env = "XDS_SERVER_BIN")]
    xds_server: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    Translate,
    Fanout,
    Memory,
    Edit,
}

/// File descriptors a fan-out section needs besides its connections (Envoy, logs, the runtime).
const FD_HEADROOM: u64 = 256;

/// The soft `RLIMIT_NOFILE` of this process, from /proc (no libc binding needed).
fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// Connections for `clients` simulated Envoys when each costs `fds_per_conn` descriptors in this
/// process: one per client if the limit allows, else as many as fit (streams are multiplexed
/// over them, and the output says so).
fn connections_for(clients: usize, fds_per_conn: u64, limit: Option<u64>) -> usize {
    let Some(limit) = limit else { return clients };
    let fit = limit.saturating_sub(FD_HEADROOM) / fds_per_conn;
    clients.min(fit.max(1) as usize)
}

/// Runs one async section on its own thread (driving `rt`), so that a panic inside the harness
/// (say, Envoy never becoming ready) fails that section only, with its message, and the rest
/// still run. A thread rather than a task because the harness's futures are not all `Send`.
fn section<F, Fut>(rt: &tokio::runtime::Runtime, make: F) -> anyhow::Result<Value>
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    std::thread::scope(|s| s.spawn(|| rt.block_on(make())).join())
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the section panicked (message above)")))
}

pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let want = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let bin = match &args.xds_server {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name(format!("xds-server{}", std::env::consts::EXE_SUFFIX)),
    };
    if (want(Section::Memory) || want(Section::Edit)) && !bin.is_file() {
        anyhow::bail!(
            "{} does not exist; build it (`cargo build --release -p xds-server`) or pass --xds-server",
            bin.display()
        );
    }
    let limit = fd_limit();
    let started = Instant::now();
    println!(
        "xds-bench: {} CPU(s), fd limit {}, xds-server {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        limit.map_or("unknown".into(), |l| l.to_string()),
        bin.display()
    );
    let mut report = Report::default();
    let mut failed = Vec::new();
    let mut record = |name: &str, r: anyhow::Result<Value>| match r {
        Ok(v) => report.add(name, v),
        Err(e) => {
            println!("\n== {name}: FAILED ==\n{e:#}");
            report.add(name, serde_json::json!({ "error": format!("{e:#}") }));
            failed.push(name.to_string());
        }
    };
    if want(Section::Translate) {
        record("translate", translate::run(args.routes, args.runs.max(1)));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let small = (args.routes / 10).max(1);
    if want(Section::Fanout) {
        // In-process: a client connection and the server's end of it are both fds here.
        let conns = connections_for(args.clients, 2, limit);
        record(
            "fanout",
            section(&rt, || fanout::run(args.clients, small, conns)),
        );
    }
    if want(Section::Memory) {
        let conns = connections_for(args.clients, 1, limit);
        record(
            "memory",
            section(&rt, || memory::run(bin.clone(), args.clients, small, conns)),
        );
    }
    if want(Section::Edit) {
        record(
            "edit",
            section(&rt, || edit::run(bin.clone(), small, args.edits)),
        );
    }
    println!(
        "\nxds-bench finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("{}", report.json_line());
    if !failed.is_empty() {
        anyhow::bail!("failed sections: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::connections_for;

    #[test]
    fn multiplexes_only_when_the_fd_limit_is_short() {
        assert_eq!(connections_for(1000, 2, Some(20_000)), 1000);
        assert_eq!(connections_for(1000, 2, None), 1000);
        assert_eq!(connections_for(1000, 2, Some(1024)), 384);
        assert_eq!(connections_for(1000, 1, Some(100)), 1);
    }
}
