//! `gateway.policy.v1.RateLimitPolicy`: what xds-server streams to ratelimit-service, and the
//! descriptor protocol Envoy's rate-limit filter uses to name a limit on each request.
//!
//! The messages are hand-written prost types (no `.proto` compilation step); field numbers are the
//! wire contract and never change meaning. No message holds a protobuf `map`, so encoding is
//! deterministic and the content-hash versions are stable across processes.
//!
//! # Descriptor protocol
//!
//! Envoy sends one RLS descriptor per limit that applies to a request. Every such descriptor
//! starts with the entry `rule = <Rule.id>`; the entries after it carry the values the rule is
//! keyed on:
//!
//! | `Per`     | entries after `rule`                                              |
//! |-----------|-------------------------------------------------------------------|
//! | `Plan`    | `client = <client id>`, `provider = <provider>`, `plan = <plan>`  |
//! | `Anonymous` | `remote_address = <client address>`                             |
//! | `Client`  | `client = <client id>`, `provider = <provider>`                   |
//! | `Ip`      | `remote_address = <client address>`                               |
//! | `Route`   | none (one bucket for everyone)                                    |
//! | `Tenant`  | `tenant = <tenant id>`, `provider = <provider>`                   |
//! | `Header`  | `header = <header value>`                                         |
//!
//! `provider` is the auth provider that verified the client: client ids and tenant ids are
//! unique only within one provider (a JWT `sub` may equal an API key's id; another issuer's
//! `tenant: acme` is not acme), so the service keys client and tenant counters on both.
//!
//! Every entry after `rule` may be absent: Envoy is told to keep the descriptor and omit the
//! entry when the request has no such value (no header, no tenant claim, no identity on an
//! `auth: none` route). The service then counts every such request of that rule in one shared
//! bucket, whose counter key is one no value can produce (absence is not a value, so no client
//! can send a "missing" marker and land in it or leave it); a missing `plan` means the default
//! plan. See `docs/rate-limit-keys.md` for the behaviour per `per`.
//!
//! A descriptor whose first entry is `request_id` is not a limit: it carries the request's
//! `x-request-id` so that the 429 body can name it. Descriptors naming an unknown rule are
//! ignored (counted in metrics).

use prost::{Enumeration, Message};

/// The single resource name of a rate-limit policy (the whole policy is one resource).
pub const RESOURCE_NAME: &str = "rate_limits";

/// Descriptor entry keys; see the module documentation.
pub mod key {
    pub const RULE: &str = "rule";
    pub const CLIENT: &str = "client";
    pub const PLAN: &str = "plan";
    /// The auth provider that authenticated `client`.
    pub const PROVIDER: &str = "provider";
    /// The key Envoy's `remote_address` action always uses.
    pub const IP: &str = "remote_address";
    pub const TENANT: &str = "tenant";
    pub const HEADER: &str = "header";
    pub const REQUEST_ID: &str = "request_id";
}

/// The RLS `domain` every gateway Envoy uses.
pub const DOMAIN: &str = "gateway";

/// The dynamic metadata a ShouldRateLimit answer carries, which Envoy's rate-limit filter
/// stores under [`metadata::NAMESPACE`] for the access log (spec §10).
pub mod metadata {
    /// Envoy's rate-limit HTTP filter name, under which it files the response's metadata.
    pub const NAMESPACE: &str = "envoy.filters.http.ratelimit";
    /// `ok`, `over_limit`, or `error` (the store failed and `on_error: allow` let the request
    /// through); absent when no limit applied or the service did not answer.
    pub const OUTCOME: &str = "outcome";
}

#[derive(Clone, PartialEq, Message)]
pub struct RateLimitPolicy {
    /// RLS domain; requests for any other domain are answered OK without counting.
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(enumeration = "Algorithm", tag = "2")]
    pub algorithm: i32,
    /// `on_error: allow`: when the store fails, admit (true) or deny (false).
    #[prost(bool, tag = "3")]
    pub fail_open: bool,
    /// `rate_limits.service.timeout`: the service must answer within it, store or no store.
    #[prost(uint64, tag = "4")]
    pub timeout_ms: u64,
    /// Plans by name, sorted by name.
    #[prost(message, repeated, tag = "5")]
    pub plans: Vec<Plan>,
    /// Plan used when a `Plan` rule's descriptor has no (or an unknown) `plan` entry. Empty when
    /// no plans are configured.
    #[prost(string, tag = "6")]
    pub default_plan: String,
    /// Every limit of every route, sorted by id.
    #[prost(message, repeated, tag = "7")]
    pub rules: Vec<Rule>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Plan {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub rate: Option<Rate>,
}

/// `requests` per `window_ms`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Message)]
pub struct Rate {
    #[prost(uint64, tag = "1")]
    pub requests: u64,
    #[prost(uint64, tag = "2")]
    pub window_ms: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Rule {
    /// `<route>#<n>`: the route's name and the limit's position in its `rate_limit` list
    /// (`<route>#anonymous` for the implicit anonymous limit). Envoy sends it as `rule`.
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(enumeration = "Per", tag = "2")]
    pub per: i32,
    /// The limit; unset for `Per::Plan` (the plan decides).
    #[prost(message, optional, tag = "3")]
    pub rate: Option<Rate>,
    /// For `Per::Header`: the lower-case header name (for metrics and error messages).
    #[prost(string, tag = "4")]
    pub header: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum Algorithm {
    SlidingWindow = 0,
    Approximate = 1,
    Fixed = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum Per {
    /// The client's plan limit, one bucket per client id, shared by every route.
    Plan = 0,
    Client = 1,
    Ip = 2,
    Route = 3,
    Tenant = 4,
    Header = 5,
    /// The `anonymous` limit: one bucket per client IP, shared by every `auth: none` route.
    Anonymous = 6,
}

impl Per {
    /// The entries after `rule` of this limit's descriptor when every one of them comes from
    /// the identity authz-service verified (see the module table), as (descriptor key, field of
    /// authz-service's dynamic metadata, [`crate::authz::metadata`]). `None` for the limits keyed
    /// on something else (the client address, a header): only ratelimit-service counts those.
    /// Envoy's descriptor actions and authz-service's own descriptors are both built from this.
    pub fn identity_entries(self) -> Option<&'static [(&'static str, &'static str)]> {
        use crate::authz::metadata as m;
        Some(match self {
            Per::Plan => &[
                (key::CLIENT, m::CLIENT_ID),
                (key::PROVIDER, m::PROVIDER),
                (key::PLAN, m::PLAN),
            ],
            Per::Client => &[(key::CLIENT, m::CLIENT_ID), (key::PROVIDER, m::PROVIDER)],
            Per::Tenant => &[(key::TENANT, m::TENANT), (key::PROVIDER, m::PROVIDER)],
            Per::Route => &[],
            Per::Ip | Per::Header | Per::Anonymous => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let p = RateLimitPolicy {
            domain: DOMAIN.into(),
            algorithm: Algorithm::Fixed as i32,
            fail_open: true,
            timeout_ms: 50,
            plans: vec![Plan {
                name: "free".into(),
                rate: Some(Rate {
                    requests: 100,
                    window_ms: 60_000,
                }),
            }],
            default_plan: "free".into(),
            rules: vec![Rule {
                id: "users#0".into(),
                per: Per::Header as i32,
                rate: Some(Rate {
                    requests: 5,
                    window_ms: 1_000,
                }),
                header: "x-team".into(),
            }],
        };
        let bytes = p.encode_to_vec();
        assert_eq!(RateLimitPolicy::decode(bytes.as_slice()).unwrap(), p);
        assert_eq!(p.rules[0].per(), Per::Header);
    }
}
