//! `rate_limits` and each route's `rate_limit` → the `RateLimitPolicy` ratelimit-service enforces.
//!
//! Rule ids are `<route>#<n>`, `n` being the limit's position in the route's effective list; the
//! same ids go into the descriptors Envoy sends (see `proto::ratelimit`).

use proto::ratelimit::{self as rl, Per, RateLimitPolicy, Rule};

use crate::config::{self, LimitRef, OnError, Rate, RouteAuth, RouteRateLimit};

/// The policy for a config. With no `rate_limits` section the policy has no rules, and
/// ratelimit-service admits everything it is asked about.
pub fn policy(cfg: &config::Config) -> RateLimitPolicy {
    let Some(limits) = &cfg.rate_limits else {
        return RateLimitPolicy {
            domain: rl::DOMAIN.into(),
            fail_open: true,
            ..Default::default()
        };
    };
    let mut rules = Vec::new();
    for gw in cfg.gateways.values() {
        for route in &gw.routes {
            for (i, (per, rate, header)) in route_limits(limits, route).into_iter().enumerate() {
                rules.push(Rule {
                    id: rule_id(&route.name, i),
                    per: per as i32,
                    rate: rate.map(rate_pb),
                    header,
                });
            }
        }
    }
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    RateLimitPolicy {
        domain: rl::DOMAIN.into(),
        algorithm: match limits.algorithm {
            config::Algorithm::SlidingWindow => rl::Algorithm::SlidingWindow,
            config::Algorithm::Approximate => rl::Algorithm::Approximate,
            config::Algorithm::Fixed => rl::Algorithm::Fixed,
        } as i32,
        fail_open: limits.service.on_error == OnError::Allow,
        timeout_ms: u64::try_from(limits.service.timeout.as_millis()).unwrap_or(u64::MAX),
        // `plans` is a BTreeMap: already sorted by name.
        plans: limits
            .plans
            .iter()
            .map(|(name, rate)| rl::Plan {
                name: name.clone(),
                rate: Some(rate_pb(*rate)),
            })
            .collect(),
        default_plan: limits.default_plan.clone().unwrap_or_default(),
        rules,
    }
}

/// The id of the `n`th limit of `route`.
pub fn rule_id(route: &str, n: usize) -> String {
    format!("{route}#{n}")
}

/// A route's effective limits, in order: (keyed on, rate unless the plan decides, header name).
pub fn route_limits(
    limits: &config::RateLimits,
    route: &config::Route,
) -> Vec<(Per, Option<Rate>, String)> {
    match &route.rate_limit {
        RouteRateLimit::None => vec![],
        RouteRateLimit::Default => match &route.auth {
            RouteAuth::Providers(_) if !limits.plans.is_empty() => {
                vec![(Per::Plan, None, String::new())]
            }
            RouteAuth::None => limits
                .anonymous
                .map(|r| vec![(Per::Anonymous, Some(r), String::new())])
                .unwrap_or_default(),
            RouteAuth::Providers(_) => vec![],
        },
        RouteRateLimit::Limits(list) => list
            .iter()
            .map(|l| match l {
                LimitRef::Plan => (Per::Plan, None, String::new()),
                LimitRef::Limit { rate, per } => {
                    let (per, header) = match per {
                        config::Per::Client | config::Per::User => (Per::Client, String::new()),
                        config::Per::Ip => (Per::Ip, String::new()),
                        config::Per::Route => (Per::Route, String::new()),
                        config::Per::Tenant => (Per::Tenant, String::new()),
                        config::Per::Header(h) => (Per::Header, h.clone()),
                    };
                    (per, Some(*rate), header)
                }
            })
            .collect(),
    }
}

fn rate_pb(r: Rate) -> rl::Rate {
    rl::Rate {
        requests: r.requests,
        window_ms: u64::try_from(r.window.as_millis()).unwrap_or(u64::MAX),
    }
}
