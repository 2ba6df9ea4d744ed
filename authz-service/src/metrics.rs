//! Prometheus metrics of authz-service, served on the admin port's `/metrics`.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// `provider`, `decision` (`allow` | `deny`), `reason`.
    pub decisions: IntCounterVec,
    /// Check handling time inside the service, by `decision`.
    pub latency: HistogramVec,
    /// Policies received over xDS, by `result` (`applied` | `rejected`).
    pub policy_updates: IntCounterVec,
    /// `jwks_url` fetches, by `result` (`ok` | `error`).
    pub jwks_fetches: IntCounterVec,
    /// 1 once a policy (and every remote key set it uses) is loaded.
    pub ready: IntGauge,
    /// Accepted JWTs by `result` (`hit`: answered by the verified-token cache, `miss`).
    pub token_cache: IntCounterVec,
    /// Accepted requests whose credential names a plan `rate_limits.plans` does not define
    /// (limited and forwarded as the default plan), by `provider`.
    pub unknown_plans: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "authz_decisions_total",
                "Check decisions by provider, decision (allow, deny) and reason.",
            ),
            &["provider", "decision", "reason"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "authz_check_duration_seconds",
                "Time to decide one Check, inside the service.",
            )
            // From a cached token (a few µs) to an RSA verification on a busy core (ms).
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.025, 0.05, 0.1,
            ]),
            &["decision"],
        )
        .expect("valid metric");
        let policy_updates = IntCounterVec::new(
            Opts::new(
                "authz_policy_updates_total",
                "Policies received over xDS, by result (applied, rejected).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "authz_jwks_fetches_total",
                "jwks_url fetches by result (ok, error).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let token_cache = IntCounterVec::new(
            Opts::new(
                "authz_token_cache_total",
                "Accepted JWTs by verified-token cache result (hit, miss).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let unknown_plans = IntCounterVec::new(
            Opts::new(
                "authz_unknown_plan_total",
                "Accepted requests whose credential names a plan rate_limits.plans does not \
                 define (limited as, and forwarded as, the default plan), by provider.",
            ),
            &["provider"],
        )
        .expect("valid metric");
        let ready = IntGauge::new(
            "authz_ready",
            "1 once a policy and its remote key sets are loaded.",
        )
        .expect("valid metric");
        for c in [
            &decisions,
            &policy_updates,
            &jwks_fetches,
            &token_cache,
            &unknown_plans,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(latency.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(ready.clone()))
            .expect("unique metric");
        // Zeros instead of absences, for dashboards and tests.
        for r in ["applied", "rejected"] {
            policy_updates.with_label_values(&[r]);
        }
        for r in ["ok", "error"] {
            jwks_fetches.with_label_values(&[r]);
        }
        for r in ["hit", "miss"] {
            token_cache.with_label_values(&[r]);
        }
        Self {
            registry,
            decisions,
            latency,
            policy_updates,
            jwks_fetches,
            ready,
            token_cache,
            unknown_plans,
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
