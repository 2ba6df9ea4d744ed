//! soak: the whole gateway (real Envoy, xds-server, authz-service, ratelimit-service on a real
//! Redis) under mixed traffic for minutes or hours, with config edits and one component killed
//! and restarted in turn; prints answers per phase, p99 latency, and every component's resident
//! memory and open descriptors, and exits non-zero when a check fails (see `tests::soak`).
//!
//! `scripts/soak` builds the release binaries and runs it; `--help` lists the knobs.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tests::soak::{run, Options};

#[derive(Parser, Debug)]
#[command(
    about = "Soak the whole gateway: mixed traffic, edits and restarts, memory and fds over time"
)]
struct Args {
    /// How long to run, in minutes (fractions allowed).
    #[arg(long, env = "SOAK_MINUTES", default_value_t = 5.0)]
    minutes: f64,
    /// Warm-up in seconds (default: a fifth of the run, at most 60): no restarts, and the
    /// memory and fd tolerance applies only to samples after it.
    #[arg(long, env = "SOAK_WARMUP")]
    warmup: Option<u64>,
    /// Seconds between config edits.
    #[arg(long, env = "SOAK_EDIT_EVERY", default_value_t = 30)]
    edit_every: u64,
    /// Seconds between restarts (default: spaced so each of the four restarted components goes
    /// down once after warm-up, 20 s to 180 s apart).
    #[arg(long, env = "SOAK_RESTART_EVERY")]
    restart_every: Option<u64>,
    /// Seconds a killed component stays down.
    #[arg(long, env = "SOAK_DOWN", default_value_t = 5)]
    down: u64,
    /// HTTP requests per second over all HTTP probes.
    #[arg(long, env = "SOAK_RPS", default_value_t = 100)]
    rps: u32,
    /// WebSocket sessions per second.
    #[arg(long, env = "SOAK_WS_PER_SECOND", default_value_t = 4)]
    ws_per_second: u32,
    /// Seconds between memory and fd samples.
    #[arg(long, env = "SOAK_SAMPLE_EVERY", default_value_t = 10)]
    sample_every: u64,
    /// Allowed growth of resident memory after warm-up, in percent (plus --rss-slack-mib).
    #[arg(long, env = "SOAK_RSS_TOLERANCE", default_value_t = 20.0)]
    rss_tolerance: f64,
    /// Allowed growth of resident memory after warm-up, in MiB, on top of --rss-tolerance.
    #[arg(long, env = "SOAK_RSS_SLACK_MIB", default_value_t = 8)]
    rss_slack_mib: u64,
    /// Allowed growth of open file descriptors after warm-up.
    #[arg(long, env = "SOAK_FD_SLACK", default_value_t = 16)]
    fd_slack: u64,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(
        a.minutes.is_finite() && a.minutes > 0.0,
        "--minutes must be positive"
    );
    anyhow::ensure!(a.rps > 0, "--rps must be at least 1");
    let mut o = Options::for_duration(Duration::from_secs_f64(a.minutes * 60.0));
    if let Some(w) = a.warmup {
        o.warmup = Duration::from_secs(w);
    }
    if let Some(r) = a.restart_every {
        o.restart_every = Duration::from_secs(r.max(1));
    }
    o.edit_every = Duration::from_secs(a.edit_every.max(1));
    o.down_for = Duration::from_secs(a.down);
    o.rps = a.rps;
    o.ws_per_second = a.ws_per_second;
    o.sample_every = Duration::from_secs(a.sample_every.max(1));
    o.rss_tolerance = a.rss_tolerance / 100.0;
    o.rss_slack_kib = a.rss_slack_mib * 1024;
    o.fd_slack = a.fd_slack;
    // Two workers: the in-process upstreams and the load share them; the rest of the machine is
    // Envoy's and the services'.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let outcome = rt.block_on(run(&o));
    print!("{}", outcome.report);
    if !outcome.ok {
        std::process::exit(1);
    }
    Ok(())
}
