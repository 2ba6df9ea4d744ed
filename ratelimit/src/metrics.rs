//! Prometheus metrics of the service, served on the side port's `/metrics`.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::store::MemoryMetrics;

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Per counter checked: `limit` (plan name or rule id), `outcome` = `admitted` | `denied` |
    /// `denied_cached` (answered from the over-limit cache without the store).
    pub decisions: IntCounterVec,
    /// Store round-trip time, by store kind.
    pub store_seconds: HistogramVec,
    /// Store failures by `kind` = `unavailable` | `bad_reply` | `timeout` | `full`.
    pub store_errors: IntCounterVec,
    /// Requests answered by `on_error` (`action` = `allow` | `deny`).
    pub on_error: IntCounterVec,
    /// Descriptors that named no limit we know, by `reason`.
    pub ignored: IntCounterVec,
    /// Whole ShouldRateLimit handling time.
    pub request_seconds: Histogram,
    /// The memory store's counters now (0 with Redis).
    pub memory_counters: IntGauge,
    /// Requests that needed a new counter while the memory store was full.
    pub memory_full: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        Self::with_registry(Registry::new())
    }

    /// The same metrics registered in `registry` (authz-service serves them beside its own).
    pub fn with_registry(registry: Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let decisions = counter(
            "ratelimit_decisions_total",
            "Counters checked, by limit and outcome.",
            &["limit", "outcome"],
        );
        let store_errors = counter(
            "ratelimit_store_errors_total",
            "Store failures by kind.",
            &["kind"],
        );
        let on_error = counter(
            "ratelimit_on_error_total",
            "Requests answered by on_error because the store failed.",
            &["action"],
        );
        let ignored = counter(
            "ratelimit_ignored_descriptors_total",
            "Descriptors that named no known limit, by reason.",
            &["reason"],
        );
        // Sub-millisecond resolution: a healthy store answers in well under 1 ms on loopback.
        let buckets = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ];
        let store_seconds = HistogramVec::new(
            HistogramOpts::new("ratelimit_store_seconds", "Store round-trip time.")
                .buckets(buckets.clone()),
            &["store"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(store_seconds.clone()))
            .expect("unique metric");
        let request_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ratelimit_request_seconds",
                "ShouldRateLimit handling time.",
            )
            .buckets(buckets),
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_seconds.clone()))
            .expect("unique metric");
        let memory_counters = IntGauge::new(
            "ratelimit_memory_counters",
            "Counters held by the in-memory store (0 with Redis).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(memory_counters.clone()))
            .expect("unique metric");
        let memory_full = IntCounter::new(
            "ratelimit_memory_full_total",
            "Requests that needed a new counter while the in-memory store held its maximum \
             (--memory-max-counters); on_error answered them.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(memory_full.clone()))
            .expect("unique metric");
        for kind in ["unavailable", "bad_reply", "timeout", "full"] {
            store_errors.with_label_values(&[kind]);
        }
        for action in ["allow", "deny"] {
            on_error.with_label_values(&[action]);
        }
        Self {
            registry,
            decisions,
            store_seconds,
            store_errors,
            on_error,
            ignored,
            request_seconds,
            memory_counters,
            memory_full,
        }
    }

    /// The handles the memory store reports to.
    pub fn memory(&self) -> MemoryMetrics {
        MemoryMetrics {
            counters: Some(self.memory_counters.clone()),
            full: Some(self.memory_full.clone()),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
