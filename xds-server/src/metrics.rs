//! Prometheus metrics of the control plane, served on the admin port's `/metrics`.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// `result` = `ok` | `rejected`.
    pub reloads: IntCounterVec,
    pub nacks: IntCounterVec,
    pub responses: IntCounterVec,
    pub clients: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reloads = IntCounterVec::new(
            Opts::new(
                "xds_config_reloads_total",
                "Config loads by result (ok, rejected).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let nacks = IntCounterVec::new(
            Opts::new(
                "xds_nacks_total",
                "Responses rejected by an xDS client, by type URL.",
            ),
            &["type_url"],
        )
        .expect("valid metric");
        let responses = IntCounterVec::new(
            Opts::new(
                "xds_responses_total",
                "Discovery responses sent, by type URL and protocol.",
            ),
            &["type_url", "protocol"],
        )
        .expect("valid metric");
        let clients = IntGaugeVec::new(
            Opts::new(
                "xds_connected_clients",
                "Open ADS streams, by protocol (sotw, delta).",
            ),
            &["protocol"],
        )
        .expect("valid metric");
        for c in [&reloads, &nacks, &responses] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(clients.clone()))
            .expect("unique metric");
        // Expose both results from the start so dashboards and tests see zeros, not absences.
        reloads.with_label_values(&["ok"]);
        reloads.with_label_values(&["rejected"]);
        Self {
            registry,
            reloads,
            nacks,
            responses,
            clients,
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        xds_client::side::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
