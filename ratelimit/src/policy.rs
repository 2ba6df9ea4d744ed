//! The rate-limit policy as the service uses it: compiled from the `RateLimitPolicy` that
//! xds-server streams, and able to turn an RLS request's descriptors into counters to check.
//!
//! Counter keys are `rl:{<tag>}:<what>:<algorithm><window ms>`. The tag is the value the counter
//! is partitioned by (provider and client id, IP, tenant, header value, or the rule for
//! `per: route`; [`MISSING`] for requests without that value), so all of one client's counters
//! share a Redis Cluster slot and are checked by one script call. The
//! window and algorithm are part of the key because they define the bucket layout: `10/second`
//! and `1000/day` on one client are two counters, and changing an algorithm starts afresh.

use std::collections::HashMap;
use std::time::Duration;

use proto::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use proto::ratelimit::{key, Per, RateLimitPolicy};
use sha2::{Digest, Sha256};

use crate::limiter::{Algorithm, Limit};
use crate::store::Hit;

/// A policy that passed validation.
#[derive(Debug, Clone)]
pub struct Policy {
    pub domain: String,
    pub algorithm: Algorithm,
    pub fail_open: bool,
    /// The RLS timeout Envoy applies; the service answers within it.
    pub timeout: Duration,
    plans: HashMap<String, Limit>,
    default_plan: Option<String>,
    rules: HashMap<String, Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    per: Per,
    /// `None` for `Per::Plan`.
    limit: Option<Limit>,
}

/// Why a policy was refused (sent back to xds-server as the NACK's error).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// Descriptor values longer than this are replaced by a digest in counter keys, so a client
/// cannot make keys (and Redis memory) arbitrarily large with a long header value.
const MAX_KEY_VALUE: usize = 64;

/// What one request asks for, resolved against the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Distinct counters, in descriptor order.
    pub hits: Vec<Hit>,
    /// Per hit: the name shown in `RateLimit-Policy` (the plan or the rule id).
    pub names: Vec<String>,
    /// Per request descriptor: the hit it maps to, if any.
    pub descriptor_hits: Vec<Option<usize>>,
    /// The `x-request-id` Envoy passed along, for the 429 body.
    pub request_id: Option<String>,
    /// Descriptors that named nothing we know; see `proto::ratelimit`.
    pub ignored: Vec<&'static str>,
}

impl Policy {
    pub fn compile(p: &RateLimitPolicy) -> Result<Self, PolicyError> {
        let err = |m: String| Err(PolicyError(m));
        let algorithm = match proto::ratelimit::Algorithm::try_from(p.algorithm) {
            Ok(proto::ratelimit::Algorithm::SlidingWindow) => Algorithm::SlidingWindow,
            Ok(proto::ratelimit::Algorithm::Approximate) => Algorithm::Approximate,
            Ok(proto::ratelimit::Algorithm::Fixed) => Algorithm::Fixed,
            Err(_) => return err(format!("unknown algorithm {}", p.algorithm)),
        };
        let limit = |what: &str, r: Option<proto::ratelimit::Rate>| match r {
            Some(r) if r.requests > 0 && r.window_ms > 0 => Ok(Limit {
                requests: r.requests,
                window_ms: r.window_ms,
            }),
            Some(r) => Err(PolicyError(format!(
                "{what}: rate {}/{}ms must be at least 1 per at least 1ms",
                r.requests, r.window_ms
            ))),
            None => Err(PolicyError(format!("{what}: missing rate"))),
        };
        let mut plans = HashMap::new();
        for plan in &p.plans {
            let l = limit(&format!("plan {:?}", plan.name), plan.rate)?;
            if plans.insert(plan.name.clone(), l).is_some() {
                return err(format!("plan {:?} defined twice", plan.name));
            }
        }
        let default_plan = (!p.default_plan.is_empty()).then(|| p.default_plan.clone());
        if let Some(d) = &default_plan {
            if !plans.contains_key(d) {
                return err(format!("default plan {d:?} is not a plan"));
            }
        }
        let mut rules = HashMap::new();
        for r in &p.rules {
            let per = Per::try_from(r.per)
                .map_err(|_| PolicyError(format!("rule {:?}: unknown per {}", r.id, r.per)))?;
            let limit = if per == Per::Plan {
                if default_plan.is_none() {
                    return err(format!(
                        "rule {:?} uses plans, but no default plan is set",
                        r.id
                    ));
                }
                None
            } else {
                Some(limit(&format!("rule {:?}", r.id), r.rate)?)
            };
            if rules.insert(r.id.clone(), Rule { per, limit }).is_some() {
                return err(format!("rule {:?} defined twice", r.id));
            }
        }
        Ok(Self {
            domain: p.domain.clone(),
            algorithm,
            fail_open: p.fail_open,
            timeout: Duration::from_millis(p.timeout_ms.max(1)),
            plans,
            default_plan,
            rules,
        })
    }

    /// Resolves a request's descriptors into counters. `hits_addend` 0 counts as 1; a
    /// descriptor's own `hits_addend` overrides the request's.
    pub fn plan(&self, req: &RateLimitRequest) -> Plan {
        let mut out = Plan {
            descriptor_hits: Vec::with_capacity(req.descriptors.len()),
            ..Plan::default()
        };
        if req.domain != self.domain {
            out.ignored.push("domain");
            out.descriptor_hits.resize(req.descriptors.len(), None);
            return out;
        }
        let request_cost = u64::from(req.hits_addend.max(1));
        for d in &req.descriptors {
            let entries = &d.entries;
            let value = |k: &str| {
                entries
                    .iter()
                    .skip(1)
                    .find(|e| e.key == k)
                    .map(|e| e.value.as_str())
            };
            let resolved = match entries.first() {
                Some(e) if e.key == key::REQUEST_ID => {
                    // Echoed into the 429 body and the denial's log line: cut like authz-service's.
                    out.request_id =
                        Some(e.value.chars().take(proto::MAX_REQUEST_ID_CHARS).collect());
                    Err(None)
                }
                Some(e) if e.key == key::RULE => match self.rules.get(&e.value) {
                    Some(rule) if d.is_negative_hits => {
                        let _ = rule;
                        Err(Some("negative_hits"))
                    }
                    Some(rule) => self.counter(&e.value, rule, value),
                    None => Err(Some("unknown_rule")),
                },
                _ => Err(Some("not_ours")),
            };
            match resolved {
                Ok((key, limit, name)) => {
                    let cost = d
                        .hits_addend
                        .as_ref()
                        .map_or(request_cost, |h| h.value.max(1));
                    let idx = match out.hits.iter().position(|h| h.key == key) {
                        Some(i) => i,
                        None => {
                            out.hits.push(Hit {
                                key,
                                algorithm: self.algorithm,
                                limit,
                                cost,
                            });
                            out.names.push(name);
                            out.hits.len() - 1
                        }
                    };
                    out.descriptor_hits.push(Some(idx));
                }
                Err(reason) => {
                    out.ignored.extend(reason);
                    out.descriptor_hits.push(None);
                }
            }
        }
        out
    }

    /// (counter key, limit, name for headers) for one rule, or why the descriptor is ignored.
    fn counter<'a>(
        &self,
        rule_id: &str,
        rule: &Rule,
        value: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<(String, Limit, String), Option<&'static str>> {
        let suffix = |limit: Limit| format!("{}{}", self.algorithm.code(), limit.window_ms);
        // Absent and empty are the same: no value (see `proto::ratelimit`).
        let get = |k: &str| value(k).filter(|v| !v.is_empty());
        let part = |k: &str| get(k).map_or_else(|| MISSING.to_string(), tag);
        let client = || provider_tag(get(key::PROVIDER), get(key::CLIENT));
        Ok(match rule.per {
            Per::Plan => {
                let plan = get(key::PLAN)
                    .filter(|p| self.plans.contains_key(*p))
                    .or(self.default_plan.as_deref())
                    .ok_or(Some("plan"))?;
                let limit = *self.plans.get(plan).ok_or(Some("plan"))?;
                (
                    format!("rl:{{c:{}}}:plan:{}:{}", client(), tag(plan), suffix(limit)),
                    limit,
                    plan.to_string(),
                )
            }
            Per::Anonymous => {
                let limit = rule.limit.ok_or(Some("rate"))?;
                (
                    format!("rl:{{i:{}}}:anonymous:{}", part(key::IP), suffix(limit)),
                    limit,
                    "anonymous".to_string(),
                )
            }
            per => {
                let limit = rule.limit.ok_or(Some("rate"))?;
                let tagged = match per {
                    Per::Client => format!("c:{}", client()),
                    Per::Ip => format!("i:{}", part(key::IP)),
                    Per::Tenant => {
                        format!("t:{}", provider_tag(get(key::PROVIDER), get(key::TENANT)))
                    }
                    Per::Header => format!("h:{}", part(key::HEADER)),
                    _ => format!("r:{}", tag(rule_id)),
                };
                (
                    format!("rl:{{{tagged}}}:rule:{}:{}", tag(rule_id), suffix(limit)),
                    limit,
                    rule_id.to_string(),
                )
            }
        })
    }
}

/// The tag of the shared bucket for requests without the value a rule is keyed on. [`tag`]
/// never produces it: it escapes every `%` of a value as `%25`, and a digest starts with `#`.
const MISSING: &str = "%-";

/// The client (or tenant) part of a key: `<provider>:<id>`, so that equal ids from two
/// providers (a JWT `sub` and an API key id, two issuers' `tenant: acme`) never share a bucket.
/// The provider is escaped to hold no `:`, so the first `:` splits the two and no id can forge
/// another provider's key. Without a provider entry (a policy translated before providers were
/// sent) the part is the id alone with its `:` escaped, which keeps existing counters and cannot
/// equal any two-part form.
fn provider_tag(provider: Option<&str>, id: Option<&str>) -> String {
    let client = id.map_or_else(|| MISSING.to_string(), tag);
    match provider {
        Some(p) => format!("{}:{client}", tag(p).replace(':', "%3A")),
        None => client.replace(':', "%3A"),
    }
}

/// A descriptor value made safe for a key: `{`, `}` and `%` escaped (so the hash tag cannot be
/// broken out of), a leading `#` escaped, and long or non-printable values replaced by a digest
/// (`#` and hex: the escaped `#` keeps a short value from posing as another value's digest).
fn tag(v: &str) -> String {
    if v.len() > MAX_KEY_VALUE || v.chars().any(|c| c.is_control()) {
        let d = Sha256::digest(v.as_bytes());
        return format!("#{}", hex::encode(&d[..12]));
    }
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        match c {
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            '%' => out.push_str("%25"),
            '#' if i == 0 => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::pb::envoy::extensions::common::ratelimit::v3::{
        rate_limit_descriptor::Entry, RateLimitDescriptor,
    };
    use proto::ratelimit::{Plan as PbPlan, Rate, Rule as PbRule, DOMAIN};

    fn policy() -> RateLimitPolicy {
        RateLimitPolicy {
            domain: DOMAIN.into(),
            algorithm: 0,
            fail_open: true,
            timeout_ms: 50,
            plans: vec![
                PbPlan {
                    name: "free".into(),
                    rate: Some(Rate {
                        requests: 2,
                        window_ms: 60_000,
                    }),
                },
                PbPlan {
                    name: "pro".into(),
                    rate: Some(Rate {
                        requests: 20,
                        window_ms: 60_000,
                    }),
                },
            ],
            default_plan: "free".into(),
            rules: vec![
                PbRule {
                    id: "orders#0".into(),
                    per: Per::Plan as i32,
                    rate: None,
                    header: String::new(),
                },
                PbRule {
                    id: "orders#1".into(),
                    per: Per::Header as i32,
                    rate: Some(Rate {
                        requests: 5,
                        window_ms: 1_000,
                    }),
                    header: "x-team".into(),
                },
                rule("orders#2", Per::Client),
                rule("orders#3", Per::Tenant),
                rule("orders#4", Per::Ip),
                rule("other#0", Per::Header),
            ],
        }
    }

    fn rule(id: &str, per: Per) -> PbRule {
        PbRule {
            id: id.into(),
            per: per as i32,
            rate: Some(Rate {
                requests: 5,
                window_ms: 1_000,
            }),
            header: String::new(),
        }
    }

    fn key_of(p: &Policy, entries: &[(&str, &str)]) -> String {
        let plan = p.plan(&request(vec![desc(entries)]));
        assert!(plan.ignored.is_empty(), "{entries:?}: {:?}", plan.ignored);
        plan.hits[0].key.clone()
    }

    fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn request(descs: Vec<RateLimitDescriptor>) -> RateLimitRequest {
        RateLimitRequest {
            domain: DOMAIN.into(),
            descriptors: descs,
            hits_addend: 0,
        }
    }

    #[test]
    fn plans_pick_the_limit_and_unknown_plans_fall_back_to_the_default() {
        let p = Policy::compile(&policy()).unwrap();
        let pro = p.plan(&request(vec![desc(&[
            ("rule", "orders#0"),
            ("client", "alice"),
            ("plan", "pro"),
        ])]));
        assert_eq!(pro.hits[0].limit.requests, 20);
        assert_eq!(pro.names, ["pro"]);
        assert_eq!(pro.hits[0].key, "rl:{c:alice}:plan:pro:s60000");
        let unknown = p.plan(&request(vec![desc(&[
            ("rule", "orders#0"),
            ("client", "alice"),
            ("plan", "platinum"),
        ])]));
        assert_eq!(unknown.hits[0].limit.requests, 2);
    }

    #[test]
    fn odd_descriptors_are_ignored_not_fatal() {
        let p = Policy::compile(&policy()).unwrap();
        let plan = p.plan(&request(vec![
            desc(&[("request_id", "abc")]),
            desc(&[("rule", "nope")]),
            desc(&[("rule", "orders#0")]),
            desc(&[]),
            desc(&[("generic_key", "x")]),
            desc(&[("rule", "orders#1"), ("header", "a{b}%")]),
        ]));
        assert_eq!(plan.request_id.as_deref(), Some("abc"));
        let long = "x".repeat(1000);
        let cut = p.plan(&request(vec![desc(&[("request_id", &long)])]));
        let cut = cut.request_id.map(|r| r.len());
        assert_eq!(
            cut,
            Some(proto::MAX_REQUEST_ID_CHARS),
            "a client's id is cut"
        );
        assert_eq!(plan.ignored, ["unknown_rule", "not_ours", "not_ours"]);
        // A plan rule without a client is counted in the shared no-identity bucket.
        assert_eq!(
            plan.descriptor_hits,
            [None, None, Some(0), None, None, Some(1)]
        );
        assert_eq!(plan.hits[0].key, "rl:{c:%-}:plan:free:s60000");
        assert_eq!(plan.hits[1].key, "rl:{h:a%7Bb%7D%25}:rule:orders#1:s1000");
    }

    #[test]
    fn long_values_are_digested_and_costs_come_from_hits_addend() {
        let p = Policy::compile(&policy()).unwrap();
        let long = "x".repeat(10_000);
        let mut d = desc(&[("rule", "orders#1"), ("header", &long)]);
        d.hits_addend = Some(proto::pb::google::protobuf::UInt64Value { value: 3 });
        let mut req = request(vec![d, desc(&[("rule", "orders#1"), ("header", "b")])]);
        req.hits_addend = 2;
        let plan = p.plan(&req);
        assert!(plan.hits[0].key.len() < 80, "{}", plan.hits[0].key);
        assert_eq!(plan.hits[0].cost, 3);
        assert_eq!(plan.hits[1].cost, 2);
    }

    #[test]
    fn other_domains_are_not_counted() {
        let p = Policy::compile(&policy()).unwrap();
        let mut req = request(vec![desc(&[("rule", "orders#0"), ("client", "a")])]);
        req.domain = "other".into();
        assert!(p.plan(&req).hits.is_empty());
    }

    #[test]
    fn invalid_policies_are_refused() {
        let mut bad = policy();
        bad.default_plan = "gold".into();
        assert!(Policy::compile(&bad).is_err());
        let mut bad = policy();
        bad.rules[1].rate = Some(Rate {
            requests: 0,
            window_ms: 1_000,
        });
        assert!(Policy::compile(&bad).is_err());
        let mut bad = policy();
        bad.rules[1].per = 99;
        assert!(Policy::compile(&bad).is_err());
        let mut bad = policy();
        bad.rules.push(bad.rules[0].clone());
        assert!(Policy::compile(&bad).is_err());
    }

    #[test]
    fn a_missing_value_counts_in_one_shared_bucket_per_rule() {
        let p = Policy::compile(&policy()).unwrap();
        for (rule, key) in [
            ("orders#1", "header"),
            ("orders#2", "client"),
            ("orders#3", "tenant"),
            ("orders#4", "remote_address"),
        ] {
            let absent = key_of(&p, &[("rule", rule)]);
            assert!(absent.contains(MISSING), "{absent}");
            // An empty value is no value: the same bucket.
            assert_eq!(key_of(&p, &[("rule", rule), (key, "")]), absent);
            // Whatever a client sends as the value, it never lands in that bucket.
            for forged in [MISSING, "%-", "%25-", "-", "%", "#"] {
                assert_ne!(key_of(&p, &[("rule", rule), (key, forged)]), absent);
            }
        }
        // Two rules keep two shared buckets.
        assert_ne!(
            key_of(&p, &[("rule", "orders#1")]),
            key_of(&p, &[("rule", "other#0")])
        );
        // A plan rule without identity gets the default plan's shared bucket.
        assert_eq!(
            key_of(&p, &[("rule", "orders#0")]),
            "rl:{c:%-}:plan:free:s60000"
        );
    }

    #[test]
    fn a_short_value_cannot_pose_as_a_long_values_digest() {
        let p = Policy::compile(&policy()).unwrap();
        let long = key_of(&p, &[("rule", "orders#1"), ("header", &"x".repeat(100))]);
        let tagged = long.split(['{', '}']).nth(1).unwrap();
        let digest = tagged.strip_prefix("h:").unwrap();
        assert!(digest.starts_with('#'), "{long}");
        assert_ne!(
            key_of(&p, &[("rule", "orders#1"), ("header", digest)]),
            long
        );
    }

    #[test]
    fn client_keys_carry_the_provider() {
        let p = Policy::compile(&policy()).unwrap();
        for rule in ["orders#0", "orders#2"] {
            let jwt = key_of(
                &p,
                &[
                    ("rule", rule),
                    ("client", "partner-2"),
                    ("provider", "main"),
                ],
            );
            let api_key = key_of(
                &p,
                &[
                    ("rule", rule),
                    ("client", "partner-2"),
                    ("provider", "partners"),
                ],
            );
            assert_ne!(jwt, api_key);
            assert!(jwt.starts_with("rl:{c:main:partner-2}:"), "{jwt}");
        }
        // Without a provider entry the key is the one used before providers were sent.
        assert_eq!(
            key_of(&p, &[("rule", "orders#0"), ("client", "alice")]),
            "rl:{c:alice}:plan:free:s60000"
        );
    }

    #[test]
    fn tenant_keys_carry_the_provider() {
        let p = Policy::compile(&policy()).unwrap();
        let of = |provider: &str| {
            key_of(
                &p,
                &[
                    ("rule", "orders#3"),
                    ("tenant", "acme"),
                    ("provider", provider),
                ],
            )
        };
        // Another issuer's `tenant: acme` does not spend acme's quota.
        assert_ne!(of("main"), of("partners"));
        assert!(
            of("main").starts_with("rl:{t:main:acme}:"),
            "{}",
            of("main")
        );
        // No tenant: one shared bucket per provider, which no tenant id reaches.
        let none = key_of(&p, &[("rule", "orders#3"), ("provider", "main")]);
        assert!(none.contains(MISSING), "{none}");
        assert_ne!(none, of("main"));
    }

    #[test]
    fn no_client_id_can_forge_another_providers_key() {
        // Every (provider, client) pair over an alphabet of the separator, the escape and the
        // sentinel's characters, each absent or up to three characters: all keys are distinct.
        let p = Policy::compile(&policy()).unwrap();
        let alphabet = ['a', ':', '%', '3', 'A', '-', '#'];
        let mut values: Vec<Option<String>> = vec![None];
        let mut layer = vec![String::new()];
        for _ in 0..3 {
            layer = layer
                .iter()
                .flat_map(|v| alphabet.iter().map(move |c| format!("{v}{c}")))
                .collect();
            values.extend(layer.iter().cloned().map(Some));
        }
        let mut seen = HashMap::new();
        for provider in &values {
            for client in &values {
                let mut entries = vec![("rule", "orders#2")];
                entries.extend(provider.as_deref().map(|v| ("provider", v)));
                entries.extend(client.as_deref().map(|v| ("client", v)));
                let k = key_of(&p, &entries);
                if let Some(other) = seen.insert(k.clone(), (provider.clone(), client.clone())) {
                    panic!("{k} for both {other:?} and {:?}", (provider, client));
                }
            }
        }
        // The case spelled out: provider `a` with client `b:c` is not provider `a:b` with `c`.
        assert_ne!(
            key_of(
                &p,
                &[("rule", "orders#2"), ("provider", "a"), ("client", "b:c")]
            ),
            key_of(
                &p,
                &[("rule", "orders#2"), ("provider", "a:b"), ("client", "c")]
            )
        );
    }
}
