//! Section 2: one in-process ADS server, N simulated Envoys on real TCP connections; how long
//! they take to converge initially and after a published change, for SotW and Delta.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ads::Metrics;
use ads::{AdsServer, Registry};
use anyhow::Context as _;
use config::Loaded;
use serde_json::{json, Value};
use tokio::sync::watch;

use ads::snapshot::Snapshots;

use super::fleet::{Connected, Fleet, Mode, Target, WATCHED};
use super::gen::{Shape, GATEWAY};
use super::report::{fmt_dur, fmt_ratio, ratio, Spread, Table};

/// Generous: 1,000 streams on two shared cores converge in seconds, not minutes.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Parses and translates a generated config in-process.
pub fn snapshots(shape: &Shape) -> anyhow::Result<Arc<Snapshots>> {
    let path = Path::new("/bench/gateway.yaml");
    let cfg = config::parse(&shape.yaml(), path).context("the generated config does not parse")?;
    let loaded = Loaded {
        path: path.to_path_buf(),
        config: cfg,
        files: BTreeMap::new(),
        warnings: Vec::new(),
    };
    Ok(Arc::new(translate::snapshots(&loaded)?))
}

/// The snapshot one simulated Envoy of the bench gateway receives.
pub fn target(epoch: u64, s: &Snapshots) -> anyhow::Result<Target> {
    let snap = s
        .groups
        .get(GATEWAY)
        .context("no bench gateway in snapshot")?;
    Ok(Target::new(epoch, snap))
}

struct Server {
    addr: std::net::SocketAddr,
    snapshots: watch::Sender<Arc<Snapshots>>,
    registry: Arc<Registry>,
    _shutdown: watch::Sender<bool>,
}

/// Serves ADS exactly as `server::serve` does (`ads::bind` + `AdsServer::serve`), so the fan-out
/// figures are those of the real server's gRPC side.
async fn start_server(initial: Arc<Snapshots>) -> anyhow::Result<Server> {
    let (snapshots, rx) = watch::channel(initial);
    let (shutdown, sd) = watch::channel(false);
    let registry = Arc::new(Registry::default());
    let ads = AdsServer::new(rx, registry.clone(), Arc::new(Metrics::new()), sd.clone());
    let listener = ads::bind("127.0.0.1:0".parse()?)?;
    let addr = listener.local_addr()?;
    let mut sd = sd;
    tokio::spawn(ads.serve(listener, async move {
        let _ = sd.wait_for(|v| *v).await;
    }));
    Ok(Server {
        addr,
        snapshots,
        registry,
        _shutdown: shutdown,
    })
}

/// One change: a label and the snapshot after it.
struct Change {
    label: &'static str,
    snapshots: Arc<Snapshots>,
}

/// Per-phase results of one fleet.
struct Phase {
    label: &'static str,
    spread: Spread,
    /// Responses per client, per watched type.
    responses: [f64; 4],
    /// Resource bytes per client.
    bytes: f64,
}

struct FleetResult {
    clients: usize,
    connections: usize,
    connect: Connected,
    phases: Vec<Phase>,
}

/// Connects `clients` clients, waits for initial convergence, then publishes each change and
/// waits for convergence again.
async fn run_fleet(
    server: &Server,
    mode: Mode,
    clients: usize,
    connections: usize,
    base: &Arc<Snapshots>,
    changes: &[Change],
) -> anyhow::Result<FleetResult> {
    // No client is connected yet, so resetting the published snapshot reaches nobody.
    server.snapshots.send_replace(base.clone());
    let (mut fleet, connect) =
        Fleet::connect(server.addr, mode, clients, connections, target(0, base)?).await?;
    let result = async {
        let mut phases = Vec::new();
        let before = fleet.counters.read();
        let t0 = fleet.go();
        let lat = fleet.wait(0, t0, CONVERGE_TIMEOUT).await?;
        phases.push(phase(
            "initial",
            &lat,
            before,
            fleet.counters.read(),
            clients,
        ));
        for (i, c) in changes.iter().enumerate() {
            let epoch = i as u64 + 1;
            fleet.set_target(target(epoch, &c.snapshots)?);
            let before = fleet.counters.read();
            let t = Instant::now();
            server.snapshots.send_replace(c.snapshots.clone());
            let lat = fleet
                .wait(epoch, t, CONVERGE_TIMEOUT)
                .await
                .with_context(|| format!("after publishing '{}'", c.label))?;
            phases.push(phase(c.label, &lat, before, fleet.counters.read(), clients));
        }
        anyhow::Ok(phases)
    }
    .await;
    let connections = fleet.connections();
    fleet.stop().await;
    // Let the server notice every closed stream, so the next fleet starts from zero (a
    // straggler after that only skews the next count, so it is not an error).
    let _ = tests::wait::poll(Duration::from_secs(10), async || {
        server.registry.clients().is_empty()
    })
    .await;
    Ok(FleetResult {
        clients,
        connections,
        connect,
        phases: result?,
    })
}

fn phase(
    label: &'static str,
    lat: &[Duration],
    before: ([u64; 4], u64),
    after: ([u64; 4], u64),
    clients: usize,
) -> Phase {
    let n = clients.max(1) as f64;
    Phase {
        label,
        spread: Spread::of(lat),
        responses: std::array::from_fn(|i| (after.0[i] - before.0[i]) as f64 / n),
        bytes: (after.1 - before.1) as f64 / n,
    }
}

/// Which types a phase pushed, e.g. `CDS 1 EDS 2 RDS 1` responses per client.
fn pushed(p: &Phase) -> String {
    let short = ["CDS", "EDS", "LDS", "RDS"];
    let parts: Vec<String> = p
        .responses
        .iter()
        .zip(short)
        .filter(|(r, _)| **r > 0.0)
        .map(|(r, s)| {
            if (r - r.round()).abs() < 0.005 {
                format!("{s} {r:.0}")
            } else {
                format!("{s} {r:.2}")
            }
        })
        .collect();
    parts.join(" ")
}

fn kib(b: f64) -> String {
    format!("{:.1} KiB", b / 1024.0)
}

pub async fn run(clients: usize, routes: usize, connections: usize) -> anyhow::Result<Value> {
    let shape = Shape::new(routes, 8080, "127.0.0.1:9000");
    let base = snapshots(&shape)?;
    let plus_route = snapshots(&shape.clone().with_route("bench-new", "/bench-new"))?;
    let plus_service = snapshots(
        &shape
            .clone()
            .with_route("bench-new", "/bench-new")
            .with_service(),
    )?;
    let changes = [
        Change {
            label: "+1 route (RDS only)",
            snapshots: plus_route,
        },
        Change {
            label: "+1 service (CDS+EDS+RDS)",
            snapshots: plus_service,
        },
    ];
    let server = start_server(base.clone()).await?;
    let mut json_modes = serde_json::Map::new();
    for mode in [Mode::Sotw, Mode::Delta] {
        // Baseline: the same sequence with one client, in the same process and run.
        let one = run_fleet(&server, mode, 1, 1, &base, &changes)
            .await
            .with_context(|| format!("{} baseline (1 client)", mode.as_str()))?;
        let many = run_fleet(&server, mode, clients, connections, &base, &changes)
            .await
            .with_context(|| format!("{} with {clients} clients", mode.as_str()))?;
        let mut t = Table::new(
            format!(
                "2. Fan-out, {}: {} clients over {} TCP connections, snapshot of {} routes / {} clusters",
                mode.as_str(),
                many.clients,
                many.connections,
                shape.total_routes(),
                shape.services
            ),
            &[
                "phase",
                "1 client (baseline)",
                "p50",
                "p99",
                "max = all converged",
                "max/baseline",
                "max/N",
                "per client: pushes, bytes",
            ],
        );
        let each = Spread::of(&many.connect.each);
        t.row(vec![
            "connect (TCP + HTTP/2)".into(),
            fmt_dur(one.connect.total),
            fmt_dur(each.p50),
            fmt_dur(each.p99),
            fmt_dur(many.connect.total),
            fmt_ratio(ratio(many.connect.total, one.connect.total)),
            fmt_dur(many.connect.total / many.clients.max(1) as u32),
            format!("{} SYN retransmits", many.connect.syn_retransmits()),
        ]);
        let mut phases_json = Vec::new();
        for (a, b) in one.phases.iter().zip(&many.phases) {
            t.row(vec![
                b.label.into(),
                fmt_dur(a.spread.max),
                fmt_dur(b.spread.p50),
                fmt_dur(b.spread.p99),
                fmt_dur(b.spread.max),
                fmt_ratio(ratio(b.spread.max, a.spread.max)),
                fmt_dur(b.spread.max / many.clients.max(1) as u32),
                format!("{}, {}", pushed(b), kib(b.bytes)),
            ]);
            phases_json.push(json!({
                "phase": b.label,
                "baseline_1_client_ms": super::report::ms(a.spread.max),
                "clients": b.spread.json(),
                "max_over_baseline": ratio(b.spread.max, a.spread.max),
                "responses_per_client": WATCHED.iter().zip(b.responses).map(|(t, r)| (t.rsplit('.').next().unwrap_or(t).to_string(), Value::from(r))).collect::<serde_json::Map<_, _>>(),
                "bytes_per_client": b.bytes,
            }));
        }
        t.note("latency per client: initial = from stream start; changes = from publishing the snapshot on the watch channel until that client has received and ACKed every changed type");
        t.note("max/N: the time to reach everyone, amortized per client (the server's cost per extra Envoy)");
        t.note("connect: p50/p99 per connection, max = until all were up; a connect of >= 0.9 s is a SYN dropped by a full accept queue (the listener is server::serve's: ads::bind, backlog 1024) and retransmitted after 1 s");
        t.note("server and all simulated clients share this process's 2-core runtime, so client-side decoding competes with the server");
        if many.connections < many.clients {
            t.note(format!(
                "the fd limit is too low for one connection per client: {} streams multiplexed over {} HTTP/2 connections",
                many.clients, many.connections
            ));
        }
        t.print();
        json_modes.insert(
            mode.as_str().into(),
            json!({
                "clients": many.clients,
                "connections": many.connections,
                "connect_all_ms": super::report::ms(many.connect.total),
                "connect_each": each.json(),
                "syn_retransmits": many.connect.syn_retransmits(),
                "phases": phases_json,
            }),
        );
    }
    json_modes.insert("routes".into(), shape.total_routes().into());
    json_modes.insert("clusters".into(), shape.services.into());
    Ok(Value::Object(json_modes))
}
