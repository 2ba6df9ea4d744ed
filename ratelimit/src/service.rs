//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`: descriptors → counters →
//! store → answer, with the over-limit cache in front of the store and a hard deadline around it.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use proto::pb::envoy::config::core::v3::HeaderValue;
use proto::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit,
};
use proto::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::cache::OverLimitCache;
use crate::limiter::Check;
use crate::metrics::Metrics;
use crate::policy::{Plan, Policy};
use crate::store::{CounterStore, Outcome, StoreError};
use crate::throttle::{LogThrottle, STORE_WARNING_INTERVAL};

/// The service's state: one store, the current policy, the over-limit cache.
pub struct RateLimiter<S> {
    store: S,
    policy: Arc<ArcSwapOption<Policy>>,
    cache: Arc<OverLimitCache>,
    metrics: Arc<Metrics>,
    /// Store failures are logged at most once per [`STORE_WARNING_INTERVAL`].
    store_warnings: LogThrottle,
}

/// What the service concluded about one request, before it becomes a gRPC answer.
#[derive(Debug)]
pub enum Decision {
    /// No policy yet, another domain, or no descriptor names a known limit: nothing to count.
    Unlimited { descriptors: usize },
    /// The store (or the over-limit cache) decided.
    Decided { plan: Plan, outcome: Outcome },
    /// The store failed or was too slow; `on_error` decides.
    StoreFailed {
        error: StoreError,
        fail_open: bool,
        descriptors: usize,
    },
}

impl<S: CounterStore> RateLimiter<S> {
    pub fn new(
        store: S,
        policy: Arc<ArcSwapOption<Policy>>,
        cache: Arc<OverLimitCache>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            policy,
            cache,
            metrics,
            store_warnings: LogThrottle::new(STORE_WARNING_INTERVAL),
        }
    }

    pub async fn decide(&self, req: &RateLimitRequest) -> Decision {
        let Some(policy) = self.policy.load_full() else {
            self.metrics.ignored.with_label_values(&["no_policy"]).inc();
            return Decision::Unlimited {
                descriptors: req.descriptors.len(),
            };
        };
        self.decide_with(&policy, req).await
    }

    /// [`Self::decide`] under `policy` rather than the installed one: authz-service passes the
    /// limits that arrived with its own policy, so a route's rules and their limits always come
    /// from one snapshot.
    pub async fn decide_with(&self, policy: &Policy, req: &RateLimitRequest) -> Decision {
        let descriptors = req.descriptors.len();
        let plan = policy.plan(req);
        for reason in &plan.ignored {
            self.metrics.ignored.with_label_values(&[reason]).inc();
        }
        if plan.hits.is_empty() {
            return Decision::Unlimited { descriptors };
        }
        if let Some(outcome) = self.cached_denial(&plan) {
            return Decision::Decided { plan, outcome };
        }
        // Answer before Envoy gives up on us: leave a quarter of its timeout for the gRPC legs.
        let budget = (policy.timeout * 3 / 4).max(Duration::from_millis(1));
        let started = Instant::now();
        let result = tokio::time::timeout(budget, self.store.check(&plan.hits))
            .await
            .unwrap_or(Err(StoreError::Timeout));
        let store_seconds = started.elapsed().as_secs_f64();
        self.metrics
            .store_seconds
            .with_label_values(&[self.store.kind()])
            .observe(store_seconds);
        tracing::Span::current().record("store_ms", store_seconds * 1000.0);
        match result {
            Ok(outcome) => {
                self.record(&plan, &outcome, "denied");
                if !outcome.admitted {
                    let now = Instant::now();
                    for (hit, check) in plan.hits.iter().zip(&outcome.checks) {
                        if !check.admitted && hit.cost == 1 && check.retry_after_ms > 0 {
                            self.cache
                                .block(&hit.key, now + Duration::from_millis(check.retry_after_ms));
                        }
                    }
                }
                Decision::Decided { plan, outcome }
            }
            Err(error) => {
                let kind = match error {
                    StoreError::Unavailable(_) => "unavailable",
                    StoreError::BadReply(_) => "bad_reply",
                    StoreError::Timeout => "timeout",
                    StoreError::Full => "full",
                };
                self.metrics.store_errors.with_label_values(&[kind]).inc();
                let action = if policy.fail_open { "allow" } else { "deny" };
                self.metrics.on_error.with_label_values(&[action]).inc();
                if error == StoreError::Full {
                    // A spray of new keys keeps the store full: one log line per request would
                    // be the attacker's to write. `ratelimit_memory_full_total` counts these.
                    tracing::debug!(
                        store = self.store.kind(),
                        on_error = action,
                        "memory store full"
                    );
                } else if let Some(suppressed) = self.store_warnings.admit(Instant::now()) {
                    // Every request fails alike while the store is down: one line per
                    // interval, with the number left out (all of them are counted in
                    // `ratelimit_store_errors_total`).
                    tracing::warn!(
                        error = %error,
                        store = self.store.kind(),
                        on_error = action,
                        suppressed,
                        "rate-limit store failed (logged at most every {}s; `suppressed` failures since the last line)",
                        STORE_WARNING_INTERVAL.as_secs()
                    );
                }
                Decision::StoreFailed {
                    error,
                    fail_open: policy.fail_open,
                    descriptors,
                }
            }
        }
    }

    /// A denial without the store when any counter is known to be over its limit.
    /// Forgets every cached "over limit until": call it when the limits change.
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// The store's kind, for logs and spans.
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    fn cached_denial(&self, plan: &Plan) -> Option<Outcome> {
        let now = Instant::now();
        let blocked: Vec<Option<Duration>> = plan
            .hits
            .iter()
            .map(|h| self.cache.blocked_for(&h.key, now))
            .collect();
        if blocked.iter().all(Option::is_none) {
            return None;
        }
        let checks = plan
            .hits
            .iter()
            .zip(&blocked)
            .map(|(h, b)| match b {
                Some(d) => {
                    let ms = (d.as_millis() as u64).max(1);
                    Check {
                        admitted: false,
                        used: h.limit.requests,
                        reset_ms: ms,
                        retry_after_ms: ms,
                    }
                }
                // Not consulted: report it as untouched.
                None => Check {
                    admitted: true,
                    used: 0,
                    reset_ms: h.limit.window_ms,
                    retry_after_ms: 0,
                },
            })
            .collect();
        let outcome = Outcome {
            admitted: false,
            checks,
            now_ms: 0,
        };
        self.record(plan, &outcome, "denied_cached");
        Some(outcome)
    }

    fn record(&self, plan: &Plan, outcome: &Outcome, denied: &str) {
        if !outcome.admitted {
            // One line per 429, for the operator: which limits refused it, and whether the
            // over-limit cache answered without the store. Names only, never a counter key (it
            // holds the client id, the address or a header value).
            let over: Vec<&str> = plan
                .names
                .iter()
                .zip(&outcome.checks)
                .filter(|(_, c)| !c.admitted)
                .map(|(n, _)| n.as_str())
                .collect();
            tracing::debug!(
                request_id = plan.request_id.as_deref().unwrap_or(""),
                limits = ?over,
                reason = denied,
                "request over limit"
            );
        }
        for (name, check) in plan.names.iter().zip(&outcome.checks) {
            let o = if check.admitted && outcome.admitted {
                "admitted"
            } else if check.admitted {
                // Admissible here, but another counter refused the request.
                continue;
            } else {
                denied
            };
            self.metrics.decisions.with_label_values(&[name, o]).inc();
        }
    }
}

/// Turns a decision into the gRPC answer; the one place where outcomes meet Envoy.
///
/// Envoy applies `response_headers_to_add` to the upstream's response on OK and to its local
/// 429 on OVER_LIMIT, whose body becomes `raw_body`. A store failure under `on_error: deny`
/// becomes a gRPC UNAVAILABLE error: Envoy's filter then applies its `failure_mode_deny`, which
/// xds-server sets from the same `on_error`, so a store outage never shows up as a 429.
pub fn respond(decision: Decision) -> Result<RateLimitResponse, Status> {
    let all_ok = |n: usize| RateLimitResponse {
        overall_code: Code::Ok as i32,
        statuses: vec![
            DescriptorStatus {
                code: Code::Ok as i32,
                ..Default::default()
            };
            n
        ],
        ..Default::default()
    };
    // The outcome for Envoy's access log (`proto::ratelimit::metadata`).
    let with_outcome = |mut r: RateLimitResponse, outcome: &str| {
        r.dynamic_metadata = Some(proto::string_struct([(
            proto::ratelimit::metadata::OUTCOME,
            outcome,
        )]));
        r
    };
    match decision {
        Decision::Unlimited { descriptors } => Ok(all_ok(descriptors)),
        Decision::StoreFailed {
            fail_open: true,
            descriptors,
            ..
        } => Ok(with_outcome(all_ok(descriptors), "error")),
        Decision::StoreFailed { error, .. } => Err(Status::unavailable(format!(
            "rate-limit store failed: {error}"
        ))),
        Decision::Decided { plan, outcome } => {
            let label = if outcome.admitted { "ok" } else { "over_limit" };
            Ok(with_outcome(decided(&plan, &outcome), label))
        }
    }
}

fn decided(plan: &Plan, outcome: &Outcome) -> RateLimitResponse {
    let admitted = outcome.admitted;
    let statuses = plan
        .descriptor_hits
        .iter()
        .map(|h| match h {
            None => DescriptorStatus {
                code: Code::Ok as i32,
                ..Default::default()
            },
            Some(i) => {
                let (hit, check) = (&plan.hits[*i], &outcome.checks[*i]);
                DescriptorStatus {
                    code: if check.admitted {
                        Code::Ok
                    } else {
                        Code::OverLimit
                    } as i32,
                    current_limit: Some(RateLimit {
                        name: plan.names[*i].clone(),
                        requests_per_unit: u32::try_from(hit.limit.requests).unwrap_or(u32::MAX),
                        unit: unit(hit.limit.window_ms) as i32,
                    }),
                    limit_remaining: u32::try_from(remaining(plan, outcome, *i))
                        .unwrap_or(u32::MAX),
                    duration_until_reset: Some(proto_duration(if check.admitted {
                        check.reset_ms
                    } else {
                        check.retry_after_ms
                    })),
                    ..Default::default()
                }
            }
        })
        .collect();
    let (headers, raw_body) = headers_and_body(plan, outcome);
    RateLimitResponse {
        overall_code: if admitted { Code::Ok } else { Code::OverLimit } as i32,
        statuses,
        response_headers_to_add: headers,
        raw_body,
        ..Default::default()
    }
}

/// What a caller in the same process (authz-service under `rate_limits.counted_by:
/// authz-service`) needs of a decision: the headers and body of the RLS answer, without the
/// per-descriptor statuses and the metadata only Envoy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted: Envoy adds `headers` (the remaining quota) to the client's response, and the
    /// access log reads `outcome` (`ok`, or `error` when the store failed under `on_error:
    /// allow`).
    Admit {
        headers: Vec<HeaderValue>,
        outcome: &'static str,
    },
    /// Over a limit: a 429 with these headers and this body.
    OverLimit {
        headers: Vec<HeaderValue>,
        body: Vec<u8>,
    },
    /// The store failed under `on_error: deny`: a 503.
    Unavailable,
}

/// [`respond`] for a caller in the same process: the same outcome, headers and body.
pub fn verdict(decision: Decision) -> Verdict {
    match decision {
        Decision::Unlimited { .. } => Verdict::Admit {
            headers: Vec::new(),
            outcome: "ok",
        },
        Decision::StoreFailed {
            fail_open: true, ..
        } => Verdict::Admit {
            headers: Vec::new(),
            outcome: "error",
        },
        Decision::StoreFailed { .. } => Verdict::Unavailable,
        Decision::Decided { plan, outcome } => {
            let (headers, body) = headers_and_body(&plan, &outcome);
            if outcome.admitted {
                Verdict::Admit {
                    headers,
                    outcome: "ok",
                }
            } else {
                Verdict::OverLimit { headers, body }
            }
        }
    }
}

/// Quota left on counter `i` after this request.
fn remaining(plan: &Plan, outcome: &Outcome, i: usize) -> u64 {
    outcome.checks[i].remaining(plan.hits[i].limit, plan.hits[i].cost, outcome.admitted)
}

/// The headers of a decided request (spec §4) and, when it is denied, the 429's JSON body.
fn headers_and_body(plan: &Plan, outcome: &Outcome) -> (Vec<HeaderValue>, Vec<u8>) {
    let admitted = outcome.admitted;
    let remaining = |i: usize| remaining(plan, outcome, i);
    // The counter the client should hear about: on a denial the one that blocks longest, on an
    // admission the one with the least quota left.
    let n = plan.hits.len();
    let binding = if admitted {
        (0..n).min_by_key(|&i| remaining(i)).unwrap_or(0)
    } else {
        (0..n)
            .filter(|&i| !outcome.checks[i].admitted)
            .max_by_key(|&i| outcome.checks[i].retry_after_ms)
            .unwrap_or(0)
    };
    let b = &outcome.checks[binding];
    let wait_ms = if admitted {
        b.reset_ms
    } else {
        b.retry_after_ms
    };
    let wait_s = ceil_secs(wait_ms);
    let mut policy_field = String::new();
    for (i, (h, name)) in plan.hits.iter().zip(&plan.names).enumerate() {
        if i > 0 {
            policy_field.push_str(", ");
        }
        let _ = write!(
            policy_field,
            "{};q={};w={}",
            sf_string(name),
            h.limit.requests,
            ceil_secs(h.limit.window_ms)
        );
    }
    let mut headers = Vec::with_capacity(if admitted { 5 } else { 7 });
    headers.extend([
        header("ratelimit-policy", policy_field),
        header(
            "ratelimit",
            format!(
                "{};r={};t={}",
                sf_string(&plan.names[binding]),
                remaining(binding),
                wait_s
            ),
        ),
        header(
            "x-ratelimit-limit",
            plan.hits[binding].limit.requests.to_string(),
        ),
        header("x-ratelimit-remaining", remaining(binding).to_string()),
        header("x-ratelimit-reset", wait_s.to_string()),
    ]);
    let mut raw_body = Vec::new();
    if !admitted {
        headers.push(header("retry-after", wait_s.to_string()));
        headers.push(header("content-type", "application/json".into()));
        raw_body = serde_json::json!({
            "error": "too_many_requests",
            "message": "rate limit exceeded",
            "retry_after": wait_s,
            "request_id": plan.request_id.as_deref().unwrap_or(""),
        })
        .to_string()
        .into_bytes();
    }
    (headers, raw_body)
}

/// Whole seconds, rounded up, at least 1: a client told `0` would retry at once and be denied.
fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

fn unit(window_ms: u64) -> Unit {
    match window_ms {
        1_000 => Unit::Second,
        60_000 => Unit::Minute,
        3_600_000 => Unit::Hour,
        86_400_000 => Unit::Day,
        _ => Unit::Unknown,
    }
}

fn proto_duration(ms: u64) -> proto::pb::google::protobuf::Duration {
    proto::pb::google::protobuf::Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn header(key: &str, value: String) -> HeaderValue {
    HeaderValue {
        key: key.to_string(),
        value,
        ..Default::default()
    }
}

/// An RFC 9651 sf-string: printable ASCII, `"` and `\` escaped; anything else becomes `?`.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

impl<S: CounterStore> RateLimiter<S> {
    /// One `ShouldRateLimit` call, as the gRPC endpoint in `grpc` hands it over (already decoded
    /// and repaired): the decision, its answer and its latency.
    ///
    /// Its span (`ratelimit.should_rate_limit`) continues the trace Envoy sent and carries the
    /// decision, the rule or plan that refused, the store and its latency: never a counter key,
    /// which holds the client id, IP or header value counted.
    pub async fn handle(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let descriptors = request.get_ref().descriptors.len();
        let span = xds_client::telemetry::call_span(
            || {
                tracing::info_span!(
                    "ratelimit.should_rate_limit",
                    otel.kind = "server",
                    descriptors,
                    decision = tracing::field::Empty,
                    rule = tracing::field::Empty,
                    store = self.store.kind(),
                    store_ms = tracing::field::Empty,
                )
            },
            request.metadata(),
        );
        self.handle_traced(request).instrument(span).await
    }

    async fn handle_traced(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let started = Instant::now();
        let decision = self.decide(request.get_ref()).await;
        let span = tracing::Span::current();
        match &decision {
            Decision::Unlimited { .. } => span.record("decision", "unlimited"),
            Decision::Decided { outcome, .. } if outcome.admitted => span.record("decision", "ok"),
            Decision::Decided { plan, outcome } => {
                let refused = outcome.checks.iter().position(|c| !c.admitted);
                if let Some(name) = refused.and_then(|i| plan.names.get(i)) {
                    span.record("rule", name.as_str());
                }
                span.record("decision", "over_limit")
            }
            Decision::StoreFailed { .. } => span.record("decision", "error"),
        };
        let answer = respond(decision).map(Response::new);
        self.metrics
            .request_seconds
            .observe(started.elapsed().as_secs_f64());
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::pb::envoy::extensions::common::ratelimit::v3::{
        rate_limit_descriptor::Entry, RateLimitDescriptor,
    };
    use proto::ratelimit::{key, Per, Rate, RateLimitPolicy, Rule, DOMAIN};

    use crate::store::MemoryStore;

    /// One rule: 1 request per minute per address.
    fn policy(fail_open: bool) -> Arc<ArcSwapOption<Policy>> {
        policy_with(fail_open, proto::ratelimit::Algorithm::SlidingWindow, 1)
    }

    /// One rule: `requests`/minute per address with `algorithm`.
    fn policy_with(
        fail_open: bool,
        algorithm: proto::ratelimit::Algorithm,
        requests: u64,
    ) -> Arc<ArcSwapOption<Policy>> {
        let pb = RateLimitPolicy {
            domain: DOMAIN.into(),
            algorithm: algorithm as i32,
            fail_open,
            timeout_ms: 1_000,
            rules: vec![Rule {
                id: "r#0".into(),
                per: Per::Ip as i32,
                rate: Some(Rate {
                    requests,
                    window_ms: 60_000,
                }),
                header: String::new(),
            }],
            ..Default::default()
        };
        Arc::new(ArcSwapOption::from_pointee(Policy::compile(&pb).unwrap()))
    }

    fn limiter(fail_open: bool) -> RateLimiter<MemoryStore> {
        limiter_with(fail_open, proto::ratelimit::Algorithm::SlidingWindow, 1)
    }

    /// `requests`/minute per IP with `algorithm`, in a memory store with room for one counter.
    fn limiter_with(
        fail_open: bool,
        algorithm: proto::ratelimit::Algorithm,
        requests: u64,
    ) -> RateLimiter<MemoryStore> {
        let metrics = Arc::new(Metrics::new());
        let store = MemoryStore::new(1).with_metrics(metrics.memory());
        let policy = policy_with(fail_open, algorithm, requests);
        RateLimiter::new(store, policy, Arc::default(), metrics)
    }

    fn entry(k: &str, v: &str) -> Entry {
        Entry {
            key: k.into(),
            value: v.into(),
        }
    }

    fn from(ip: &str) -> RateLimitRequest {
        RateLimitRequest {
            domain: DOMAIN.into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![entry(key::RULE, "r#0"), entry(key::IP, ip)],
                ..Default::default()
            }],
            hits_addend: 0,
        }
    }

    /// A request as Envoy sends it, with the `request_id` descriptor first.
    fn with_request_id(mut req: RateLimitRequest, id: &str) -> RateLimitRequest {
        let d = RateLimitDescriptor {
            entries: vec![entry(key::REQUEST_ID, id)],
            ..Default::default()
        };
        req.descriptors.insert(0, d);
        req
    }

    /// A store that is down.
    struct Down;

    impl CounterStore for Down {
        async fn check(&self, _: &[crate::store::Hit]) -> Result<Outcome, StoreError> {
            Err(StoreError::Unavailable("connection refused".into()))
        }

        fn kind(&self) -> &'static str {
            "redis"
        }
    }

    #[tokio::test]
    async fn each_denial_is_logged_at_debug_with_its_request_id_and_limit() {
        let logs = test_support::capture_logs();
        let l = limiter(false);
        let ip = "2001:db8::7";
        for id in ["rid-1", "rid-2", "rid-3"] {
            respond(l.decide(&with_request_id(from(ip), id)).await).unwrap();
        }
        let text = logs.text();
        let denials: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("request over limit"))
            .collect();
        assert_eq!(denials.len(), 2, "the first request was admitted:\n{text}");
        // The second went to the store; the third was answered by the over-limit cache.
        for (line, (id, reason)) in denials
            .iter()
            .zip([("rid-2", "denied"), ("rid-3", "denied_cached")])
        {
            assert!(line.contains("DEBUG"), "{line}");
            assert!(line.contains(&format!("request_id=\"{id}\"")), "{line}");
            assert!(line.contains(&format!("reason=\"{reason}\"")), "{line}");
            assert!(line.contains(r#"limits=["r#0"]"#), "{line}");
        }
        // The counter key holds the client's address; the log line does not.
        assert!(!text.contains(ip), "{text}");
    }

    #[tokio::test]
    async fn a_store_outage_is_warned_about_once_per_interval_not_per_request() {
        let logs = test_support::capture_logs();
        let metrics = Arc::new(Metrics::new());
        let l = RateLimiter::new(Down, policy(true), Arc::default(), metrics.clone());
        for _ in 0..100 {
            let r = respond(l.decide(&from("192.0.2.1")).await);
            assert_eq!(code(&r), Ok(Code::Ok as i32), "on_error: allow");
        }
        let text = logs.text();
        let warnings = text.matches("rate-limit store failed").count();
        assert_eq!(warnings, 1, "{text}");
        assert!(text.contains("suppressed=0"), "{text}");
        let errors = metrics
            .store_errors
            .with_label_values(&["unavailable"])
            .get();
        assert_eq!(errors, 100, "every failure is counted");
    }

    fn code(r: &Result<RateLimitResponse, Status>) -> Result<i32, tonic::Code> {
        r.as_ref().map(|r| r.overall_code).map_err(Status::code)
    }

    #[tokio::test]
    async fn a_full_memory_store_leaves_new_keys_to_on_error_and_old_ones_deciding() {
        for fail_open in [true, false] {
            let l = limiter(fail_open);
            let ok = Ok(Code::Ok as i32);
            assert_eq!(code(&respond(l.decide(&from("2001:db8::1")).await)), ok);
            // The one counter exists and is over its limit: a 429, full store or not.
            let over = respond(l.decide(&from("2001:db8::1")).await);
            assert_eq!(code(&over), Ok(Code::OverLimit as i32));
            // A new address finds no room: `on_error` answers.
            let new = respond(l.decide(&from("2001:db8::2")).await);
            let want = if fail_open {
                ok
            } else {
                Err(tonic::Code::Unavailable)
            };
            assert_eq!(code(&new), want, "fail_open {fail_open}");
            assert_eq!(l.metrics.memory_full.get(), 1);
            assert_eq!(l.metrics.memory_counters.get(), 1);
            let full = l.metrics.store_errors.with_label_values(&["full"]).get();
            assert_eq!(full, 1);
        }
    }

    /// The response headers of one answer, by name.
    fn headers(r: &RateLimitResponse) -> std::collections::HashMap<String, String> {
        r.response_headers_to_add
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect()
    }

    /// The first 429 of a fresh `3/minute` counter: `Retry-After`, `X-RateLimit-Reset`, the
    /// `RateLimit` field's `t` and the body's `retry_after` say the same, and for the sliding
    /// and fixed windows at most 60 (a sliding window said 61: its first request's sub-bucket
    /// was counted a bucket past the request). `approximate` also waits for the previous
    /// window's weight to decay, which can take longer than one window; it still agrees.
    #[tokio::test]
    async fn a_fresh_window_says_at_most_its_length_everywhere() {
        use proto::ratelimit::Algorithm;
        for alg in [
            Algorithm::SlidingWindow,
            Algorithm::Fixed,
            Algorithm::Approximate,
        ] {
            let l = limiter_with(true, alg, 3);
            for _ in 0..3 {
                let ok = respond(l.decide(&from("192.0.2.7")).await).unwrap();
                assert_eq!(ok.overall_code, Code::Ok as i32, "{alg:?}");
                let h = headers(&ok);
                let reset: u64 = h["x-ratelimit-reset"].parse().unwrap();
                assert!((1..=60).contains(&reset), "{alg:?}: reset {reset}");
                assert!(h["ratelimit"].ends_with(&format!(";t={reset}")), "{h:?}");
            }
            let over = respond(l.decide(&from("192.0.2.7")).await).unwrap();
            assert_eq!(over.overall_code, Code::OverLimit as i32, "{alg:?}");
            let h = headers(&over);
            let retry: u64 = h["retry-after"].parse().unwrap();
            if alg != Algorithm::Approximate {
                assert!((1..=60).contains(&retry), "{alg:?}: Retry-After {retry}");
            }
            assert_eq!(h["x-ratelimit-reset"], retry.to_string(), "{alg:?}");
            assert!(
                h["ratelimit"].ends_with(&format!(";r=0;t={retry}")),
                "{h:?}"
            );
            let body: serde_json::Value = serde_json::from_slice(&over.raw_body).unwrap();
            assert_eq!(body["retry_after"], retry, "{alg:?}");
        }
    }

    /// The in-process answer carries what the RLS answer does: the same headers and body, and
    /// the outcome its metadata names; a store failure maps to the same `on_error`.
    #[tokio::test]
    async fn the_in_process_verdict_is_the_rls_answer() {
        let (a, b) = (limiter(false), limiter(false));
        for _ in 0..2 {
            let req = with_request_id(from("192.0.2.9"), "req-1");
            let rls = respond(a.decide(&req).await).unwrap();
            let (headers, body) = match verdict(b.decide(&req).await) {
                Verdict::Admit { headers, outcome } => {
                    assert_eq!(rls.overall_code, Code::Ok as i32);
                    assert_eq!(outcome, "ok");
                    (headers, Vec::new())
                }
                Verdict::OverLimit { headers, body } => {
                    assert_eq!(rls.overall_code, Code::OverLimit as i32);
                    (headers, body)
                }
                Verdict::Unavailable => panic!("the memory store answers"),
            };
            assert_eq!(headers, rls.response_headers_to_add);
            assert_eq!(body, rls.raw_body);
        }
        // One counter's room, already taken: a new client is a store failure.
        let open = limiter(true);
        let _ = open.decide(&from("192.0.2.1")).await;
        assert_eq!(
            verdict(open.decide(&from("192.0.2.2")).await),
            Verdict::Admit {
                headers: Vec::new(),
                outcome: "error"
            }
        );
        let closed = limiter(false);
        let _ = closed.decide(&from("192.0.2.1")).await;
        assert_eq!(
            verdict(closed.decide(&from("192.0.2.2")).await),
            Verdict::Unavailable
        );
    }

    #[test]
    fn sf_strings_are_escaped() {
        assert_eq!(sf_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(sf_string("é\n"), "\"??\"");
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(0), 1);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(1000), 1);
        assert_eq!(ceil_secs(1001), 2);
    }
}
