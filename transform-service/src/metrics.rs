//! Prometheus metrics of the service, served on the side port's `/metrics`.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Bodies seen, by `direction` (`request` | `response`) and `outcome` (`edited` | `xml` |
    /// `unchanged` | `skipped`: not JSON, so never buffered).
    pub bodies: IntCounterVec,
    /// Requests answered by the service itself instead of being transformed, by `reason`
    /// (`no_policy`, `unknown_route`, `too_deep`, `compressed`, `partial`).
    pub refusals: IntCounterVec,
    /// Policies received, by `result` (`applied` | `rejected`).
    pub policy_updates: IntCounterVec,
    /// Time spent parsing, editing and serializing one body.
    pub transform_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let bodies = counter(
            "transform_bodies_total",
            "Bodies seen, by direction and outcome.",
            &["direction", "outcome"],
        );
        let refusals = counter(
            "transform_refusals_total",
            "Requests the service answered itself instead of transforming, by reason.",
            &["reason"],
        );
        let policy_updates = counter(
            "transform_policy_updates_total",
            "Transform policies received from xds-server, by result.",
            &["result"],
        );
        let transform_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "transform_body_seconds",
                "Time to parse, edit and serialize one body.",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(transform_seconds.clone()))
            .expect("unique metric");
        Self {
            registry,
            bodies,
            refusals,
            policy_updates,
            transform_seconds,
        }
    }

    pub fn render(&self) -> String {
        xds_client::side::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
