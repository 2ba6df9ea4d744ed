//! Prometheus metrics of the control plane, served on the admin port's `/metrics`: config
//! reloads here, and the ADS server's own (`ads::Metrics`) in the same registry.

use std::sync::Arc;

use prometheus::{IntCounterVec, Opts, Registry};

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// `result` = `ok` | `rejected`.
    pub reloads: IntCounterVec,
    pub ads: Arc<ads::Metrics>,
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
        registry
            .register(Box::new(reloads.clone()))
            .expect("unique metric");
        let ads = Arc::new(ads::Metrics::new());
        ads.register(&registry).expect("unique metric");
        // Expose both results from the start so dashboards and tests see zeros, not absences.
        reloads.with_label_values(&["ok"]);
        reloads.with_label_values(&["rejected"]);
        Self {
            registry,
            reloads,
            ads,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
