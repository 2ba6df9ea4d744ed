//! The ADS server's Prometheus metrics: NACKs, responses, open streams and refused clients. The binary registers
//! them next to its own in one registry.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub nacks: IntCounterVec,
    pub responses: IntCounterVec,
    pub clients: IntGaugeVec,
    /// Streams refused because the client certificate does not name the claimed node group.
    pub refused: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
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
        let refused = IntCounterVec::new(
            Opts::new(
                "xds_refused_clients_total",
                "ADS streams refused (PERMISSION_DENIED) because the client certificate does not name the node.cluster they claim, by reason (no_group, other_group).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        Self {
            nacks,
            responses,
            clients,
            refused,
        }
    }

    /// Adds every metric to `registry`; fails only if one of the names is already there.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.nacks.clone()))?;
        registry.register(Box::new(self.responses.clone()))?;
        registry.register(Box::new(self.clients.clone()))?;
        registry.register(Box::new(self.refused.clone()))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
