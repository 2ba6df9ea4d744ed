//! `rate_limits` and each route's `rate_limit` → the `RateLimitPolicy` ratelimit-service enforces.
//!
//! Rule ids are `<route>#<n>`, `n` being the limit's position in the route's effective list; the
//! same ids go into the descriptors Envoy sends (see `proto::ratelimit`).

use proto::pb::envoy::config::route::v3::rate_limit::{self, action::ActionSpecifier};
use proto::pb::envoy::config::route::v3::RateLimit as EnvoyRateLimit;
use proto::pb::envoy::extensions::filters::http::ratelimit::v3::RateLimit as RateLimitFilter;
use proto::ratelimit::{self as rl, Per, RateLimitPolicy, Rule};

use config::{LimitRef, OnError, Rate, RouteAuth, RouteRateLimit};

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

/// True when authz-service counts `route`'s limits inside its Check
/// (`rate_limits.counted_by: authz-service`): the route authenticates, has limits, and every
/// one of them is keyed on the verified identity ([`Per::identity_entries`]). Its Envoy route
/// then carries no descriptors, and its rule ids go into the route's `RoutePolicy::limits`.
/// A route that also limits per ip or per header keeps all its limits on ratelimit-service
/// (`config` refuses such a route with `plan`, whose counter is shared by every route).
pub fn counted_in_authz(limits: &config::RateLimits, route: &config::Route) -> bool {
    if limits.counted_by != config::CountedBy::AuthzService
        || !matches!(route.auth, RouteAuth::Providers(_))
        || matches!(route.action, config::RouteAction::Respond(_))
    {
        return false;
    }
    let effective = route_limits(limits, route);
    !effective.is_empty()
        && effective
            .iter()
            .all(|(per, _, _)| per.identity_entries().is_some())
}

/// The rule ids authz-service counts for `route` (empty unless [`counted_in_authz`]).
pub fn authz_rules(limits: &config::RateLimits, route: &config::Route) -> Vec<String> {
    if !counted_in_authz(limits, route) {
        return vec![];
    }
    (0..route_limits(limits, route).len())
        .map(|i| rule_id(&route.name, i))
        .collect()
}

fn rate_pb(r: Rate) -> rl::Rate {
    rl::Rate {
        requests: r.requests,
        window_ms: u64::try_from(r.window.as_millis()).unwrap_or(u64::MAX),
    }
}

// ---- The Envoy side: filter, cluster and per-route actions --------------------------------

/// Envoy's HTTP rate-limit filter name; also the namespace of its stats.
pub const FILTER: &str = "envoy.filters.http.ratelimit";
/// The cluster Envoy reaches ratelimit-service through (the service's own node group name, which
/// no user service may take).
pub const CLUSTER: &str = proto::group::RATELIMIT;
/// Where ext_authz puts the identity (client id, plan, tenant) it verified.
pub const AUTHZ_METADATA_NAMESPACE: &str = proto::authz::metadata::NAMESPACE;

/// True when some route of `gw` carries a limit that ratelimit-service counts, so its Envoys need
/// the filter and the cluster.
pub fn gateway_uses(cfg: &config::Config, gw: &config::Gateway) -> bool {
    cfg.rate_limits.as_ref().is_some_and(|limits| {
        gw.routes.iter().any(|r| {
            !matches!(r.action, config::RouteAction::Respond(_))
                && !route_limits(limits, r).is_empty()
                && !counted_in_authz(limits, r)
        })
    })
}

/// The HTTP filter: our domain, the service's cluster, its timeout and `on_error`.
pub fn http_filter(limits: &config::RateLimits) -> RateLimitFilter {
    use proto::pb::envoy::config::core::v3::{grpc_service, ApiVersion, GrpcService};
    use proto::pb::envoy::config::ratelimit::v3::RateLimitServiceConfig;
    use proto::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
    RateLimitFilter {
        domain: rl::DOMAIN.into(),
        timeout: Some(super::duration(limits.service.timeout)),
        // `on_error: deny`: a failed or late answer refuses the request with a 503 (mapped to
        // the spec's JSON body by the listener's local reply config).
        failure_mode_deny: limits.service.on_error == OnError::Deny,
        status_on_error: Some(HttpStatus {
            code: StatusCode::ServiceUnavailable as i32,
        }),
        rate_limit_service: Some(RateLimitServiceConfig {
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: CLUSTER.into(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3 as i32,
        }),
        ..Default::default()
    }
}

/// The service ratelimit-service is reached as (gRPC over HTTP/2).
pub fn service(limits: &config::RateLimits) -> config::Service {
    config::Service {
        tls: limits.service.tls.clone(),
        ..super::policy_service(&limits.service.address)
    }
}

/// The route's `rate_limits`: one descriptor per effective limit (see `proto::ratelimit`), and
/// one carrying the request id for the 429 body. Empty when the route has no limit, or when
/// authz-service counts them ([`counted_in_authz`]).
pub fn envoy_rate_limits(
    limits: &config::RateLimits,
    route: &config::Route,
) -> Vec<EnvoyRateLimit> {
    let effective = route_limits(limits, route);
    if effective.is_empty() || counted_in_authz(limits, route) {
        return vec![];
    }
    let mut out: Vec<EnvoyRateLimit> = effective
        .into_iter()
        .enumerate()
        .map(|(i, (per, _, header))| {
            let mut actions = vec![generic_key(rl::key::RULE, &rule_id(&route.name, i))];
            // Identity entries come from ext_authz's metadata (a tenant id is unique only
            // within the provider that asserted it, so tenants carry the provider too; without
            // a plan the service applies the default plan).
            if let Some(entries) = per.identity_entries() {
                actions.extend(entries.iter().map(|(k, field)| metadata(k, field)));
            }
            match per {
                Per::Plan | Per::Client | Per::Tenant => {}
                Per::Ip | Per::Anonymous => actions.push(action(ActionSpecifier::RemoteAddress(
                    rate_limit::action::RemoteAddress {},
                ))),
                // Without the header the entry is left out but the descriptor is sent: every
                // such request counts in the rule's shared "no value" bucket.
                Per::Header => actions.push(action(ActionSpecifier::RequestHeaders(
                    rate_limit::action::RequestHeaders {
                        header_name: header,
                        descriptor_key: rl::key::HEADER.into(),
                        skip_if_absent: true,
                    },
                ))),
                Per::Route => {}
            }
            EnvoyRateLimit {
                actions,
                ..Default::default()
            }
        })
        .collect();
    out.push(EnvoyRateLimit {
        actions: vec![action(ActionSpecifier::RequestHeaders(
            rate_limit::action::RequestHeaders {
                header_name: "x-request-id".into(),
                descriptor_key: rl::key::REQUEST_ID.into(),
                skip_if_absent: true,
            },
        ))],
        ..Default::default()
    });
    out
}

fn action(spec: ActionSpecifier) -> rate_limit::Action {
    rate_limit::Action {
        action_specifier: Some(spec),
    }
}

fn generic_key(key: &str, value: &str) -> rate_limit::Action {
    action(ActionSpecifier::GenericKey(
        rate_limit::action::GenericKey {
            descriptor_key: key.into(),
            descriptor_value: value.into(),
            ..Default::default()
        },
    ))
}

/// A descriptor entry from ext_authz's dynamic metadata. A missing value leaves the entry out
/// but keeps the descriptor (`skip_if_absent`; Envoy's default would drop the whole descriptor,
/// and with it the limit): the service counts such requests in the rule's shared "no value"
/// bucket, or applies the default plan when `plan` is missing. No `default_value` is set, because
/// any string we chose could also be a real client id or tenant.
fn metadata(descriptor_key: &str, field: &str) -> rate_limit::Action {
    use proto::pb::envoy::r#type::metadata::v3::{
        metadata_key::{path_segment, PathSegment},
        MetadataKey,
    };
    action(ActionSpecifier::Metadata(rate_limit::action::MetaData {
        descriptor_key: descriptor_key.into(),
        metadata_key: Some(MetadataKey {
            key: AUTHZ_METADATA_NAMESPACE.into(),
            path: vec![PathSegment {
                segment: Some(path_segment::Segment::Key(field.into())),
            }],
        }),
        source: rate_limit::action::meta_data::Source::Dynamic as i32,
        skip_if_absent: true,
        ..Default::default()
    }))
}

/// Descriptor actions per `per`: which entries each limit sends, and that none of them drops
/// the descriptor when its value is absent.
#[cfg(test)]
mod descriptor_tests {
    use std::path::Path;

    use super::*;

    /// Every limit of the `edge` gateway's route `r` as `key<-source` strings, `?` marking an
    /// entry Envoy leaves out (keeping the descriptor) when the request has no such value.
    fn actions(limit: &str, auth: &str) -> Vec<Vec<String>> {
        let yaml = format!(
            r#"version: 1
services:
  users: {{ endpoints: [127.0.0.1:3001] }}
auth:
  jwt:
    main: {{ issuer: https://i.test, algorithms: [HS256], secret_env: GW_SECRET }}
rate_limits:
  service: {{ address: 127.0.0.1:9102 }}
  plans: {{ free: 10/minute }}
  default_plan: free
gateways:
  edge:
    listeners: [{{ name: http, port: 8080 }}]
    routes:
      - name: r
        match: {{ prefix: / }}
        service: users
        auth: {auth}
        rate_limit: [{limit}]
"#
        );
        let cfg = config::parse(&yaml, Path::new("/etc/gw/gateway.yaml"))
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        let route = &cfg.gateways["edge"].routes[0];
        let limits = cfg.rate_limits.as_ref().expect("rate_limits");
        envoy_rate_limits(limits, route)
            .iter()
            .map(|rl| rl.actions.iter().map(show).collect())
            .collect()
    }

    fn show(a: &rate_limit::Action) -> String {
        let optional = |skip: bool| if skip { "?" } else { "" };
        match a.action_specifier.as_ref().expect("specifier") {
            ActionSpecifier::GenericKey(g) => {
                format!("{}={}", g.descriptor_key, g.descriptor_value)
            }
            ActionSpecifier::Metadata(m) => {
                let path = &m.metadata_key.as_ref().expect("key").path;
                use proto::pb::envoy::r#type::metadata::v3::metadata_key::path_segment::Segment;
                let Some(Segment::Key(field)) = &path[0].segment else {
                    panic!("a metadata field name, not an index: {path:?}")
                };
                assert!(m.default_value.is_empty(), "no value may stand for absence");
                format!(
                    "{}<-metadata.{field}{}",
                    m.descriptor_key,
                    optional(m.skip_if_absent)
                )
            }
            ActionSpecifier::RemoteAddress(_) => "remote_address".into(),
            ActionSpecifier::RequestHeaders(h) => format!(
                "{}<-{}{}",
                h.descriptor_key,
                h.header_name,
                optional(h.skip_if_absent)
            ),
            other => panic!("unexpected action {other:?}"),
        }
    }

    #[test]
    fn each_per_sends_its_entries_and_keeps_the_descriptor_without_a_value() {
        let table: &[(&str, &str, &[&str])] = &[
            (
                r#"{ limit: 5/minute, per: "header:x-team" }"#,
                "none",
                &["rule=r#0", "header<-x-team?"],
            ),
            (
                "{ limit: 5/minute, per: tenant }",
                "main",
                &[
                    "rule=r#0",
                    "tenant<-metadata.tenant?",
                    "provider<-metadata.provider?",
                ],
            ),
            (
                "{ limit: 5/minute, per: client }",
                "main",
                &[
                    "rule=r#0",
                    "client<-metadata.client_id?",
                    "provider<-metadata.provider?",
                ],
            ),
            // `per: client` on a public route: no identity, so every request shares a bucket.
            (
                "{ limit: 5/minute, per: client }",
                "none",
                &[
                    "rule=r#0",
                    "client<-metadata.client_id?",
                    "provider<-metadata.provider?",
                ],
            ),
            (
                "{ limit: 5/minute, per: user }",
                "main",
                &[
                    "rule=r#0",
                    "client<-metadata.client_id?",
                    "provider<-metadata.provider?",
                ],
            ),
            (
                "plan",
                "main",
                &[
                    "rule=r#0",
                    "client<-metadata.client_id?",
                    "provider<-metadata.provider?",
                    "plan<-metadata.plan?",
                ],
            ),
            (
                "{ limit: 5/minute, per: ip }",
                "none",
                &["rule=r#0", "remote_address"],
            ),
            ("{ limit: 5/minute, per: route }", "none", &["rule=r#0"]),
        ];
        for (limit, auth, want) in table {
            let got = actions(limit, auth);
            assert_eq!(got.len(), 2, "{limit}: one limit and the request id");
            assert_eq!(got[0], *want, "{limit} on auth: {auth}");
            assert_eq!(got[1], ["request_id<-x-request-id?"], "{limit}");
        }
    }
}
