//! Credentials that name a plan `rate_limits.plans` does not define: they are accepted and
//! limited as the default plan, which is also what the upstream is told (`policy::Plans`). Each
//! such request is counted (`authz_unknown_plan_total`, by provider: never by a client's value),
//! and a warning is logged at most once per [`INTERVAL`] per provider and plan name, never once
//! per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// How often one (provider, plan name) pair may be logged.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Pairs remembered at once. Plan names come from verified credentials, but a token issuer can
/// mint any number of them: beyond this many pairs logged within one interval, new pairs are
/// counted but not logged until older ones age out.
pub const MAX_PAIRS: usize = 1024;

/// When each (provider, plan name) pair was last logged.
#[derive(Debug, Default)]
pub struct UnknownPlans {
    logged: Mutex<HashMap<(String, String), Instant>>,
}

impl UnknownPlans {
    /// Counts one request whose credential (accepted by `provider`) named `named`, limited as
    /// `applied`; logs it unless this pair was logged within the interval.
    pub fn record(&self, metrics: &Metrics, provider: &str, named: &str, applied: &str) {
        metrics.unknown_plans.with_label_values(&[provider]).inc();
        if self.should_log(provider, named, Instant::now()) {
            // The name is the credential's: escaped, so it cannot forge a log line.
            tracing::warn!(
                provider,
                plan = %named.escape_debug(),
                applied,
                "a credential names a plan rate_limits.plans does not define; it is limited as, \
                 and the upstream is told, the default plan (logged once a minute per provider \
                 and plan; every request counts in authz_unknown_plan_total)"
            );
        }
    }

    /// True when the pair was not logged within [`INTERVAL`] before `now` (and then `now` is
    /// remembered as its last log).
    pub fn should_log(&self, provider: &str, named: &str, now: Instant) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < INTERVAL;
        let key = (provider.to_string(), named.to_string());
        match logged.get(&key) {
            Some(at) if fresh(at) => return false,
            Some(_) => {}
            None if logged.len() >= MAX_PAIRS => {
                logged.retain(|_, at| fresh(at));
                if logged.len() >= MAX_PAIRS {
                    return false;
                }
            }
            None => {}
        }
        logged.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pair_is_logged_at_most_once_per_interval() {
        let u = UnknownPlans::default();
        let t0 = Instant::now();
        assert!(u.should_log("main", "gold", t0));
        assert!(!u.should_log("main", "gold", t0));
        assert!(!u.should_log("main", "gold", t0 + INTERVAL - Duration::from_millis(1)));
        // Another plan or another provider is another pair.
        assert!(u.should_log("main", "platinum", t0));
        assert!(u.should_log("partners", "gold", t0));
        assert!(u.should_log("main", "gold", t0 + INTERVAL));
        assert!(!u.should_log("main", "gold", t0 + INTERVAL + Duration::from_secs(1)));
    }

    #[test]
    fn a_flood_of_names_is_bounded() {
        let u = UnknownPlans::default();
        let t0 = Instant::now();
        for i in 0..MAX_PAIRS {
            assert!(u.should_log("main", &format!("p{i}"), t0));
        }
        // Full of pairs logged within the interval: a new one is not logged, and not kept.
        assert!(!u.should_log("main", "one-too-many", t0));
        assert_eq!(u.logged.lock().unwrap().len(), MAX_PAIRS);
        // Once they age out, new pairs are logged again and the old ones are dropped.
        let later = t0 + INTERVAL;
        assert!(u.should_log("main", "one-too-many", later));
        assert_eq!(u.logged.lock().unwrap().len(), 1);
    }
}
