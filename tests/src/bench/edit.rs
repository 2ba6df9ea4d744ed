//! Section 4: edit-to-serving latency with a real Envoy: from rewriting gateway.yaml with a new
//! route until a request through Envoy on that route answers 200.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tests::wait::poll_every;
use tests::{free_port, EchoUpstream, Envoy, XdsMode};
use xds_server::server::DEBOUNCE;

use super::gen::{Shape, GATEWAY};
use super::memory::serve;
use super::report::{fmt_dur, fmt_ratio, median, ms, ratio, Table};

/// How often the new route is probed: tight enough to resolve a few milliseconds, loose enough
/// that the probes do not steal a core from the reload they are waiting for.
const POLL: Duration = Duration::from_millis(2);
/// Per edit; a miss means something is broken, not slow.
const EDIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Replaces the file atomically (write a sibling, rename it over), as editors do.
fn write_config(path: &Path, yaml: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, yaml).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))
}

/// GETs `url` every [`POLL`] until it answers 200; returns when it did.
async fn wait_200(http: &reqwest::Client, url: &str) -> anyhow::Result<Instant> {
    let answered = poll_every(POLL, EDIT_TIMEOUT, async || {
        match http.get(url).send().await {
            Ok(r) if r.status() == 200 => Ok(Instant::now()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    answered.with_context(|| format!("GET {url} did not answer 200"))
}

pub async fn run(bin: PathBuf, routes: usize, edits: usize) -> anyhow::Result<Value> {
    let dir = tempfile::Builder::new()
        .prefix("xds-bench-edit-")
        .tempdir()?;
    let echo = EchoUpstream::start("echo").await;
    let port = free_port();
    let mut shape = Shape::new(routes, port, &echo.endpoint());
    let config = dir.path().join("gateway.yaml");
    write_config(&config, &shape.yaml())?;
    let xds = serve(&bin, &config, dir.path(), "xds-server-edit").await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()?;
    let mut t = Table::new(
        format!(
            "4. Edit-to-serving with a real Envoy ({edits} edits per mode, each adds an exact-path route to the echo upstream; ~{} routes)",
            shape.total_routes()
        ),
        &["mode", "median", "min", "max", "floor: DEBOUNCE", "median - floor", "median/floor"],
    );
    let mut json_modes = serde_json::Map::new();
    let mut next = 0;
    for mode in XdsMode::ALL {
        let node_id = format!("bench-{}", mode.as_str());
        let admin_port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.args(["bootstrap", "--gateway", GATEWAY, "--xds"])
            .arg(xds.grpc.to_string())
            .args([
                "--admin-port",
                &admin_port.to_string(),
                "--node-id",
                &node_id,
            ]);
        if mode == XdsMode::Delta {
            cmd.arg("--delta");
        }
        let out = cmd.output().context("running xds-server bootstrap")?;
        if !out.status.success() {
            bail!(
                "xds-server bootstrap failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let bootstrap = String::from_utf8(out.stdout).context("bootstrap is not UTF-8")?;
        let envoy = Envoy::start_with_bootstrap(&node_id, &bootstrap, admin_port, dir.path()).await;
        wait_200(&http, &format!("http://127.0.0.1:{port}/health"))
            .await
            .context("Envoy never served the initial config")?;
        let mut lat = Vec::with_capacity(edits);
        for _ in 0..edits {
            let name = format!("bench-{next}");
            next += 1;
            shape = shape.with_route(&name, &format!("/{name}"));
            let yaml = shape.yaml();
            let start = Instant::now();
            write_config(&config, &yaml)?;
            let done = wait_200(&http, &format!("http://127.0.0.1:{port}/{name}"))
                .await
                .with_context(|| format!("{} edit adding /{name}", mode.as_str()))?;
            lat.push(done - start);
        }
        drop(envoy);
        let med = median(&lat);
        let min = lat.iter().min().copied().unwrap_or_default();
        let max = lat.iter().max().copied().unwrap_or_default();
        t.row(vec![
            mode.as_str().into(),
            fmt_dur(med),
            fmt_dur(min),
            fmt_dur(max),
            fmt_dur(DEBOUNCE),
            fmt_dur(med.saturating_sub(DEBOUNCE)),
            fmt_ratio(ratio(med, DEBOUNCE)),
        ]);
        json_modes.insert(
            mode.as_str().into(),
            json!({
                "edits": edits,
                "median_ms": ms(med),
                "min_ms": ms(min),
                "max_ms": ms(max),
                "samples_ms": lat.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            }),
        );
    }
    t.note(format!(
        "the reload loop waits DEBOUNCE = {} of quiet after the last file event before it loads; the rest is notify, load + translate + encode, the ADS push, Envoy applying RDS, and the {} probe interval",
        fmt_dur(DEBOUNCE),
        fmt_dur(POLL)
    ));
    t.print();
    json_modes.insert("debounce_ms".into(), ms(DEBOUNCE).into());
    drop(xds);
    Ok(Value::Object(json_modes))
}
