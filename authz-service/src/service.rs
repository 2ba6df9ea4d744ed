//! The ext_authz gRPC service (`envoy.service.auth.v3.Authorization/Check`): reads the request
//! attributes Envoy sends, asks the current policy, and answers through `response`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use proto::pb::envoy::config::core::v3::HeaderMap;
use proto::pb::envoy::service::auth::v3::authorization_server::Authorization;
use proto::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use ratelimit::store::{MemoryMetrics, MemoryStore, Store, StoreError, DEFAULT_MAX_COUNTERS};

use crate::limits::{Limits, Verdict};
use crate::metrics::Metrics;
use crate::policy::{Decision, Deny, DenyStatus, Headers, Malformed, Policy};
use crate::response::{answer, Answer};
use crate::unknown_plan::UnknownPlans;

/// The per-route context extension (set on every route with `auth`) naming the route.
pub use proto::authz::ROUTE_EXTENSION;

/// What the gRPC service and the admin port share.
pub struct Shared {
    pub policy: ArcSwapOption<Policy>,
    pub metrics: Metrics,
    pub unknown_plans: UnknownPlans,
    /// The limits this service counts itself (`rate_limits.counted_by: authz-service`).
    pub limits: Limits,
}

impl Shared {
    /// With counters in memory (and no task dropping idle ones: see [`Self::with_store`]).
    pub fn new() -> Arc<Self> {
        Self::with_store(|m| {
            Ok(Store::Memory(Arc::new(
                MemoryStore::new(DEFAULT_MAX_COUNTERS).with_metrics(m),
            )))
        })
        .expect("a memory store always opens")
    }

    /// With the counter store `open` returns (`Store::open` in a running service).
    pub fn with_store(
        open: impl FnOnce(MemoryMetrics) -> Result<Store, StoreError>,
    ) -> Result<Arc<Self>, StoreError> {
        let metrics = Metrics::new();
        let limits = Limits::new(&metrics.registry, open)?;
        Ok(Arc::new(Self {
            policy: ArcSwapOption::empty(),
            metrics,
            unknown_plans: UnknownPlans::default(),
            limits,
        }))
    }

    /// Updates the `authz_ready` gauge (after a policy change or a key fetch).
    pub fn refresh_ready(&self) {
        self.metrics.ready.set(i64::from(self.is_ready()));
    }

    /// Ready once a policy is installed and its remote key sets have loaded.
    pub fn is_ready(&self) -> bool {
        self.policy.load().as_ref().is_some_and(|p| p.keys_loaded())
    }
}

#[derive(Clone)]
pub struct AuthzService {
    shared: Arc<Shared>,
}

impl AuthzService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Decides one request; never fails (see `response`). With a verdict when the request was
    /// accepted and its route's limits are counted here.
    pub async fn decide(&self, req: &CheckRequest) -> (Decision, String, Option<Verdict>) {
        let attrs = req.attributes.as_ref();
        let http = attrs
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let route = attrs
            .and_then(|a| a.context_extensions.get(ROUTE_EXTENSION))
            .map(String::as_str);
        let empty = HashMap::new();
        let raw;
        let headers: &dyn Headers = match http {
            Some(h) => match &h.header_map {
                Some(m) if !m.headers.is_empty() => {
                    raw = RawHeaders(m);
                    &raw
                }
                _ => &h.headers,
            },
            None => &empty,
        };
        let request_id = match headers.get(proto::authz::header::REQUEST_ID) {
            Some(Ok(id)) => id.chars().take(proto::MAX_REQUEST_ID_CHARS).collect(),
            _ => String::new(),
        };
        let Some(policy) = self.shared.policy.load_full() else {
            return (
                Decision::Deny(Deny {
                    status: DenyStatus::Unavailable,
                    message: "the authorization service is starting",
                    reason: "no_policy",
                    provider: String::new(),
                    challenge: None,
                }),
                request_id,
                None,
            );
        };
        let Some(http) = http else {
            return (
                Decision::Deny(Deny {
                    status: DenyStatus::Forbidden,
                    message: "access denied",
                    reason: "malformed",
                    provider: String::new(),
                    challenge: None,
                }),
                request_id,
                None,
            );
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Set by Envoy only (ext_authz `include_peer_certificate`), and only for a certificate
        // its listener verified against `client_ca_file`: a client cannot put one here. One
        // that does not parse counts as none.
        let peer = attrs
            .and_then(|a| a.source.as_ref())
            .map(|s| s.certificate.as_str())
            .filter(|c| !c.is_empty())
            .and_then(crate::mtls::peer_identity);
        let decision = policy
            .decide_with_peer(route, headers, &http.path, peer.as_ref(), now)
            .await;
        let verdict = match (&decision, &policy.rate_limits) {
            (Decision::Allow(a), Some(limits)) => {
                let rules = policy.route_limits(route);
                if rules.is_empty() {
                    None
                } else {
                    Some(Box::pin(self.shared.limits.check(limits, rules, a, &request_id)).await)
                }
            }
            _ => None,
        };
        (decision, request_id, verdict)
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        self.answer(request.map(Box::new))
            .await?
            .into_inner()
            .into_message()
            .map(Response::new)
    }
}

impl AuthzService {
    /// One Check, as the endpoint serves it (`grpc.rs` calls this directly, without the boxed
    /// future of the `Authorization` trait). Its span (`authz.check`) continues the trace Envoy
    /// sent and carries the route, the provider, the decision and its reason, and the plan of an
    /// allowed client: never a token, a key, a claim or a client id.
    ///
    /// The request arrives boxed and only the box travels on: a `CheckRequest` is about a
    /// kilobyte, and every future that held one by value was copied whole at each step
    /// (into the endpoint's box, into tonic's, out of the decoder).
    pub async fn answer(
        &self,
        request: Request<Box<CheckRequest>>,
    ) -> Result<Response<Answer>, Status> {
        let span = xds_client::telemetry::call_span(
            || {
                tracing::info_span!(
                    "authz.check",
                    otel.kind = "server",
                    route = tracing::field::Empty,
                    provider = tracing::field::Empty,
                    decision = tracing::field::Empty,
                    reason = tracing::field::Empty,
                    plan = tracing::field::Empty,
                )
            },
            request.metadata(),
        );
        self.check_traced(request.into_inner())
            .instrument(span)
            .await
    }

    async fn check_traced(&self, req: Box<CheckRequest>) -> Result<Response<Answer>, Status> {
        let start = Instant::now();
        let (decision, request_id, limited) = self.decide(&req).await;
        let span = tracing::Span::current();
        let route = req
            .attributes
            .as_ref()
            .and_then(|a| a.context_extensions.get(ROUTE_EXTENSION))
            .map_or("", String::as_str);
        if !route.is_empty() {
            span.record("route", route);
        }
        let m = &self.shared.metrics;
        let (provider, verdict, reason) = match &decision {
            Decision::Allow(a) => (
                a.provider.as_str(),
                "allow",
                if a.provider.is_empty() {
                    "public"
                } else {
                    "ok"
                },
            ),
            Decision::Deny(d) => {
                // One line per denial, for the operator only: the reason is finer than what the
                // client reads (a revoked, an expired and an unknown API key answer alike, spec
                // §3). Never the credential: neither the token, nor the key, nor a claim of it.
                tracing::debug!(
                    request_id = request_id.as_str(),
                    route,
                    status = d.status.code(),
                    reason = d.reason,
                    provider = d.provider.as_str(),
                    "request denied"
                );
                (d.provider.as_str(), "deny", d.reason)
            }
        };
        span.record("provider", provider);
        span.record("decision", verdict);
        span.record("reason", reason);
        if let Decision::Allow(a) = &decision {
            if let Some(id) = &a.identity {
                span.record("plan", id.plan.as_str());
            }
        }
        m.decisions
            .with_label_values(&[provider, verdict, reason])
            .inc();
        if let Decision::Allow(a) = &decision {
            if let Some(hit) = a.token_cache_hit {
                m.token_cache
                    .with_label_values(&[if hit { "hit" } else { "miss" }])
                    .inc();
            }
            if let Some(id) = &a.identity {
                if let Some(named) = &id.unknown_plan {
                    self.shared
                        .unknown_plans
                        .record(m, &a.provider, named, &id.plan);
                }
            }
        }
        let resp = answer(&decision, &request_id, limited);
        m.latency
            .with_label_values(&[verdict])
            .observe(start.elapsed().as_secs_f64());
        Ok(Response::new(resp))
    }
}

/// Headers sent as `header_map` (Envoy's `encode_raw_headers`), where values are bytes.
struct RawHeaders<'a>(&'a HeaderMap);

impl Headers for RawHeaders<'_> {
    fn get(&self, name: &str) -> Option<Result<&str, Malformed>> {
        let mut found = self
            .0
            .headers
            .iter()
            .filter(|h| h.key.eq_ignore_ascii_case(name));
        let h = found.next()?;
        if found.next().is_some() {
            // Two copies of a credential header are ambiguous; refuse rather than pick one.
            return Some(Err(Malformed));
        }
        if h.raw_value.is_empty() {
            Some(Ok(h.value.as_str()))
        } else {
            Some(std::str::from_utf8(&h.raw_value).map_err(|_| Malformed))
        }
    }
}
