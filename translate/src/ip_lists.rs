//! Route `allow_ips` / `deny_ips` (spec §8) → Envoy's RBAC HTTP filter, configured per route.
//!
//! The filter sits first in the chain, before CORS and ext_authz, so a refused address gets its
//! 403 before authz-service is asked and before a CORS preflight is answered. It matches
//! `remote_ip`, the address `client_ip.trusted_hops` picks (the TCP peer by default, or the
//! `x-forwarded-for` entry the trusted proxies wrote): `direct_remote_ip` and `source_ip` would
//! ignore `trusted_hops`.
//!
//! The filter-level config has no rules (Envoy enforces nothing), and only routes with a list
//! carry a per-route policy, so routes without lists are untouched.

use std::net::IpAddr;

use proto::pb::envoy::config::core::v3::CidrRange;
use proto::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action, Permission, Policy, Principal, Rbac as Rules,
};
use proto::pb::envoy::extensions::filters::http::rbac::v3::{Rbac, RbacPerRoute};

use super::listener::CelReply;
use super::u32v;
use config::{Cidr, Gateway, Route};

pub(super) const FILTER: &str = "envoy.filters.http.rbac";

/// The name of the one policy of a route; it shows in Envoy's `code_details` of a refusal only
/// when it matched, which for an ALLOW policy never refuses.
const POLICY: &str = "ip-lists";

/// True when some route of the gateway has an IP list (the filter is in the chain then).
pub(super) fn used(gw: &Gateway) -> bool {
    gw.routes
        .iter()
        .any(|r| !r.allow_ips.is_empty() || !r.deny_ips.is_empty())
}

/// The filter-level config: no rules, so routes without a per-route policy pass.
pub(super) fn filter_config() -> Rbac {
    Rbac::default()
}

/// The RBAC filter's 403 (its details are `rbac_access_denied_matched_policy[…]`; it carries no
/// response flag) in the spec's JSON error shape; only on gateways with the filter.
pub(super) fn refused_reply(gw: &Gateway) -> Option<CelReply> {
    used(gw).then(|| CelReply {
        expression: "response.code_details.startsWith('rbac_access_denied')".to_string(),
        status: Some(403),
        error: "forbidden",
        message: "client address not allowed",
    })
}

/// The route's policy: one ALLOW policy admitting a client in `allow_ips` (any client when it is
/// empty) and not in `deny_ips`, so deny wins. `None` for a route without lists.
pub(super) fn per_route(r: &Route) -> Option<RbacPerRoute> {
    let allow = (!r.allow_ips.is_empty()).then(|| any_of(&r.allow_ips));
    let deny = (!r.deny_ips.is_empty()).then(|| Principal {
        identifier: Some(principal::Identifier::NotId(Box::new(any_of(&r.deny_ips)))),
    });
    let principal = match (allow, deny) {
        (None, None) => return None,
        (Some(one), None) | (None, Some(one)) => one,
        (Some(allow), Some(deny)) => Principal {
            identifier: Some(principal::Identifier::AndIds(principal::Set {
                ids: vec![allow, deny],
            })),
        },
    };
    let policy = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![principal],
        ..Default::default()
    };
    Some(RbacPerRoute {
        rbac: Some(Rbac {
            rules: Some(Rules {
                action: Action::Allow as i32,
                // A single-entry map encodes deterministically.
                policies: [(POLICY.to_string(), policy)].into_iter().collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    })
}

/// A principal matching a client address in any of `cidrs`.
fn any_of(cidrs: &[Cidr]) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set {
            ids: cidrs
                .iter()
                .flat_map(ranges)
                .map(|range| Principal {
                    identifier: Some(principal::Identifier::RemoteIp(range)),
                })
                .collect(),
        })),
    }
}

/// Envoy's ranges for one network. An IPv4 network also covers its IPv4-mapped IPv6 form
/// (`::ffff:10.0.0.0/104` for `10.0.0.0/8`): Envoy keeps an `x-forwarded-for` entry such as
/// `::ffff:10.9.1.1` as an IPv6 address, which an IPv4 range does not match, so without it a
/// client behind a proxy that writes mapped addresses would slip past a deny list.
fn ranges(c: &Cidr) -> Vec<CidrRange> {
    let range = |addr: String, len: u8| CidrRange {
        address_prefix: addr,
        prefix_len: Some(u32v(u32::from(len))),
    };
    match c.addr {
        IpAddr::V4(v4) => vec![
            range(v4.to_string(), c.prefix_len),
            range(v4.to_ipv6_mapped().to_string(), c.prefix_len + 96),
        ],
        IpAddr::V6(v6) => vec![range(v6.to_string(), c.prefix_len)],
    }
}
