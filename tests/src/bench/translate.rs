//! Section 1: how long one config takes from YAML text to encoded snapshots, per stage, and
//! whether that cost grows linearly with the number of routes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ads::ROUTE;
use anyhow::Context as _;
use config::Loaded;
use serde_json::{json, Value};

use super::gen::{Shape, GATEWAY};
use super::report::{fmt_dur, fmt_ratio, median, ms, ratio, Table};

/// Medians of each stage over the measured runs for one config size.
struct Timing {
    routes: usize,
    services: usize,
    parse: Duration,
    translate: Duration,
    snapshots: Duration,
    rds_bytes: usize,
    total_bytes: usize,
}

impl Timing {
    /// `snapshots_for` translates again before it encodes; the difference is encoding, hashing
    /// and the consistency check.
    fn encode(&self) -> Duration {
        self.snapshots.saturating_sub(self.translate)
    }

    fn total(&self) -> Duration {
        self.parse + self.snapshots
    }

    fn per_route(&self) -> Duration {
        self.total() / self.routes.max(1) as u32
    }
}

fn measure(routes: usize, runs: usize) -> anyhow::Result<Timing> {
    let shape = Shape::new(routes, 8080, "127.0.0.1:9000");
    let yaml = shape.yaml();
    let path = Path::new("/bench/gateway.yaml");
    let (mut parse, mut trans, mut snaps) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    // One unmeasured warm-up run: the first one pays for page faults and allocator growth.
    for run in 0..=runs {
        let t = Instant::now();
        let cfg = config::parse(&yaml, path).context("the generated config does not parse")?;
        let parsed = t.elapsed();
        let loaded = Loaded {
            path: path.to_path_buf(),
            config: cfg,
            files: BTreeMap::new(),
            warnings: Vec::new(),
        };
        let t = Instant::now();
        let gateways = translate::translate(&loaded)?;
        let translated = t.elapsed();
        drop(gateways);
        let t = Instant::now();
        let s = translate::snapshots(&loaded)?;
        let encoded = t.elapsed();
        if run > 0 {
            parse.push(parsed);
            trans.push(translated);
            snaps.push(encoded);
        }
        last = Some(s);
    }
    let s = last.context("no run")?;
    let snap = s
        .groups
        .get(GATEWAY)
        .context("no gateway in the snapshot")?;
    let rds_bytes = snap
        .get(ROUTE)
        .map_or(0, |t| t.resources.values().map(|r| r.any.len()).sum());
    let total_bytes = snap
        .types
        .values()
        .flat_map(|t| t.resources.values())
        .map(|r| r.any.len())
        .sum();
    Ok(Timing {
        routes: shape.total_routes(),
        services: shape.services,
        parse: median(&parse),
        translate: median(&trans),
        snapshots: median(&snaps),
        rds_bytes,
        total_bytes,
    })
}

pub fn run(routes: usize, runs: usize) -> anyhow::Result<Value> {
    let small = measure((routes / 10).max(1), runs)?;
    let big = measure(routes, runs)?;
    let mut t = Table::new(
        format!(
            "1. Translation (median of {runs} runs after a warm-up; one gateway, 10 routes per service)"
        ),
        &[
            "stage",
            &format!("{} routes / {} svc", small.routes, small.services),
            &format!("{} routes / {} svc", big.routes, big.services),
            "big/small (linear = 10x)",
        ],
    );
    let row = |t: &mut Table, name: &str, a: Duration, b: Duration| {
        t.row(vec![
            name.into(),
            fmt_dur(a),
            fmt_dur(b),
            fmt_ratio(ratio(b, a)),
        ])
    };
    row(
        &mut t,
        "config::parse (YAML -> model)",
        small.parse,
        big.parse,
    );
    row(
        &mut t,
        "translate::translate",
        small.translate,
        big.translate,
    );
    row(
        &mut t,
        "translate::snapshots (all)",
        small.snapshots,
        big.snapshots,
    );
    row(
        &mut t,
        "  of which encode+hash+check",
        small.encode(),
        big.encode(),
    );
    row(
        &mut t,
        "total (parse + snapshots_for)",
        small.total(),
        big.total(),
    );
    t.row(vec![
        "per route (total / routes)".into(),
        fmt_dur(small.per_route()),
        fmt_dur(big.per_route()),
        fmt_ratio(ratio(big.per_route(), small.per_route())),
    ]);
    t.row(vec![
        "RouteConfiguration size".into(),
        format!("{} KiB", small.rds_bytes / 1024),
        format!("{} KiB", big.rds_bytes / 1024),
        fmt_ratio(big.rds_bytes as f64 / small.rds_bytes.max(1) as f64),
    ]);
    t.row(vec![
        "all resources, encoded".into(),
        format!("{} KiB", small.total_bytes / 1024),
        format!("{} KiB", big.total_bytes / 1024),
        fmt_ratio(big.total_bytes as f64 / small.total_bytes.max(1) as f64),
    ]);
    t.note(
        "snapshots_for runs translate again; 'encode+hash+check' is its median minus translate's",
    );
    t.note("per-route ratio 1.00x = perfectly linear; the small config is the baseline");
    t.print();
    let j = |x: &Timing| {
        json!({
            "routes": x.routes,
            "services": x.services,
            "parse_ms": ms(x.parse),
            "translate_ms": ms(x.translate),
            "snapshots_for_ms": ms(x.snapshots),
            "encode_ms": ms(x.encode()),
            "total_ms": ms(x.total()),
            "per_route_us": ms(x.per_route() * 1000),
            "rds_bytes": x.rds_bytes,
            "total_bytes": x.total_bytes,
        })
    };
    Ok(json!({
        "runs": runs,
        "small": j(&small),
        "big": j(&big),
        "total_ratio": ratio(big.total(), small.total()),
        "per_route_ratio": ratio(big.per_route(), small.per_route()),
    }))
}
