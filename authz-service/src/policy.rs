//! The compiled policy and the decision: who is asking (credentials from headers or the query),
//! whether a provider of the route accepts them, whether `require` holds, and which identity
//! goes upstream. Plain Rust over plain types; gRPC lives in `service`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use config::pem::CertIdentity;
use jsonwebtoken::{Algorithm, DecodingKey};
use proto::authz::{header, jwt_provider, AuthPolicy, CertField};
use serde_json::{Map, Value};

use crate::apikey::{digest_key, KeyRecord, KeyStore, KeysFile};
use crate::cache::TokenCache;
use crate::jwks;
use crate::jwt::{self, JwtError, Keys, Verifier};
use crate::remote::RemoteJwks;

/// HS* secrets shorter than this are refused (RFC 7518 §3.2: a key of at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Verified tokens kept per JWT provider.
pub const TOKEN_CACHE_ENTRIES: usize = 16_384;

const AUTHORIZATION: &str = header::AUTHORIZATION;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The policy does not list a header or parameter it must remove: it comes from an
    /// xds-server that does not compute the list, or it is corrupt.
    #[error("the policy does not remove {what} {name:?}; refusing it rather than forwarding credentials")]
    IncompleteRemoval { what: &'static str, name: String },
    #[error("jwt provider {provider}: {message}")]
    Jwt { provider: String, message: String },
    #[error("api_keys provider {provider}: {message}")]
    ApiKeys { provider: String, message: String },
    #[error("mtls provider {provider}: {message}")]
    Mtls { provider: String, message: String },
    #[error("route {route}: unknown provider {provider}")]
    UnknownProvider { route: String, provider: String },
    #[error("route {0} accepts no provider and is not public")]
    NoProvider(String),
    /// The default plan is not among the plans (or plans come without a default): from an
    /// xds-server that does not ship the plan list, or a corrupt policy. Taken as is, every
    /// plan would read as unknown and every client would be demoted.
    #[error("the default plan {default:?} is not one of the policy's plans {plans:?}")]
    Plans { default: String, plans: Vec<String> },
    /// The rate limits sent along (`rate_limits.counted_by: authz-service`) do not compile.
    #[error("rate limits: {0}")]
    RateLimits(String),
    /// A route names a limit authz-service cannot count: unknown, keyed on something other
    /// than the identity, or sent without the rate limits themselves.
    #[error("route {route}: limit {rule:?} {message}")]
    RouteLimit {
        route: String,
        rule: String,
        message: &'static str,
    },
}

/// One limit authz-service counts for a route: its rule id and the descriptor entries the
/// identity fills in ([`proto::ratelimit::Per::identity_entries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLimit {
    pub rule: String,
    pub entries: &'static [(&'static str, &'static str)],
}

/// What compiling a policy needs from its surroundings (so tests can supply their own).
pub trait Env {
    /// The value of an environment variable, as bytes.
    fn var(&self, name: &str) -> Option<Vec<u8>>;
    /// The shared, background-refreshed key set of a `jwks_url`.
    fn remote(&mut self, url: &str, algorithms: &[Algorithm]) -> Arc<RemoteJwks>;
}

/// One JWT provider, ready to verify.
pub struct JwtProvider {
    pub name: String,
    pub verifier: Verifier,
    headers: Vec<(String, String)>,
    client_claim: String,
    plan_claim: String,
    /// The claim behind `x-tenant-id` when one is configured, else `tenant_id`
    /// (`proto::authz::header::TENANT_ID`).
    tenant_claim: String,
    forward_token: bool,
    cache: TokenCache<Identity>,
}

/// One API-key provider.
pub struct ApiKeyProvider {
    pub name: String,
    header: String,
    query: String,
    store: KeyStore,
}

/// One client-certificate provider.
pub struct MtlsProvider {
    pub name: String,
    field: CertField,
    plans: HashMap<String, String>,
    /// Empty: the policy's default plan.
    default_plan: String,
}

struct RouteRule {
    public: bool,
    jwt: Vec<Arc<JwtProvider>>,
    api: Vec<Arc<ApiKeyProvider>>,
    mtls: Vec<Arc<MtlsProvider>>,
    roles: Vec<String>,
    scopes: Vec<String>,
    /// Counted here after the credential is accepted (`RoutePolicy::limits`).
    limits: Vec<RouteLimit>,
}

/// A compiled `AuthPolicy`.
pub struct Policy {
    routes: HashMap<String, RouteRule>,
    /// `AuthPolicy::rate_limits`, compiled: the limits of every route's [`RouteLimit`]s.
    pub rate_limits: Option<Arc<ratelimit::policy::Policy>>,
    /// `AuthPolicy.identity_headers`: removed on every allow unless set. Envoy has already
    /// removed client copies before the Check (see `proto::authz::AuthPolicy`); this is the
    /// second line.
    identity_headers: Vec<String>,
    /// `AuthPolicy.credential_headers` and `credential_query`: removed on every allow, whichever
    /// provider accepted the request, so no key reaches an upstream (spec §4).
    credential_headers: Vec<String>,
    credential_query: Vec<String>,
    /// The identity headers and `AuthPolicy::public_remove`: what a public route removes
    /// (xds-server removes the same on `auth: none` routes, the identity headers before routing).
    public_remove: Vec<String>,
    plans: Plans,
    /// Remote key sets this policy uses (readiness waits for their first fetch).
    pub remotes: Vec<Arc<RemoteJwks>>,
}

/// Who the caller is, once a provider accepted them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Upstream headers from claims (already rendered), in configuration order.
    pub headers: Vec<(String, String)>,
    pub client_id: String,
    /// The plan applied: the credential's own when `rate_limits.plans` defines it (or defines
    /// none), else the default plan.
    pub plan: String,
    /// The plan the credential named when `rate_limits.plans` does not define it (cut to
    /// [`MAX_PLAN_NAME`] characters): counted and logged, never forwarded.
    pub unknown_plan: Option<String>,
    pub tenant: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// The encoded OK answer for this identity, made on its first Check (see [`OkAnswer`]).
    pub(crate) ok_answer: OkAnswer,
}

/// The encoded `CheckResponse` that lets an identity's request through, kept with the identity
/// so that a cached token's later Checks send the same bytes instead of building and encoding
/// the same message again (a tenth of a Check's instructions).
///
/// Sound because everything in that answer is fixed once the identity exists: the headers it
/// sets come from the identity and its provider, the headers removed from the policy and the
/// provider, and a cached identity lives in its provider's token cache, inside the policy that
/// compiled it, so a new policy starts with new identities. What varies per request is never
/// in it: an answer that removes query parameters, counts a limit or denies is built afresh
/// (`response::answer` decides which). Equality ignores it, and a clone starts empty.
#[derive(Default)]
pub struct OkAnswer(std::sync::OnceLock<bytes::Bytes>);

impl OkAnswer {
    /// The answer, encoded by `make` the first time it is asked for.
    pub(crate) fn get_or_init(&self, make: impl FnOnce() -> bytes::Bytes) -> bytes::Bytes {
        self.0.get_or_init(make).clone()
    }
}

impl Clone for OkAnswer {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for OkAnswer {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for OkAnswer {}

impl std::fmt::Debug for OkAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "OkAnswer(made)"
        } else {
            "OkAnswer(none)"
        })
    }
}

/// An unknown plan name is kept (for the log) up to this many characters: a token's claim can
/// be kilobytes long.
pub const MAX_PLAN_NAME: usize = 64;

/// `AuthPolicy.plans` and `default_plan`: which plan a credential's plan name resolves to.
struct Plans {
    defined: HashSet<String>,
    default: String,
}

impl Plans {
    fn compile(p: &AuthPolicy) -> Result<Self, PolicyError> {
        let consistent = if p.plans.is_empty() {
            p.default_plan.is_empty()
        } else {
            p.plans.contains(&p.default_plan)
        };
        if !consistent {
            return Err(PolicyError::Plans {
                default: p.default_plan.clone(),
                plans: p.plans.clone(),
            });
        }
        Ok(Self {
            defined: p.plans.iter().cloned().collect(),
            default: p.default_plan.clone(),
        })
    }

    /// The plan applied to a credential that names `named` (`None` or empty: names none), and
    /// the name when it is not a defined plan. Without defined plans nothing limits by plan, so
    /// the credential's plan is forwarded as it is (when it can be a header value at all).
    fn resolve(&self, named: Option<&str>) -> (String, Option<String>) {
        match named.filter(|n| !n.is_empty()) {
            None => (self.default.clone(), None),
            Some(n) if self.defined.is_empty() => (
                if header_safe(n) { n } else { &self.default }.to_string(),
                None,
            ),
            Some(n) if self.defined.contains(n) => (n.to_string(), None),
            Some(n) => (
                self.default.clone(),
                Some(n.chars().take(MAX_PLAN_NAME).collect()),
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allow),
    Deny(Deny),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// The provider that accepted the request; empty on a public route.
    pub provider: String,
    pub identity: Option<Arc<Identity>>,
    /// Headers to set (overwriting client copies).
    pub set_headers: Vec<(String, String)>,
    /// Headers to remove (never one of `set_headers`).
    pub remove_headers: Vec<String>,
    /// Query parameter names to remove, spelled exactly as the client sent them (Envoy's
    /// ext_authz matches them undecoded). Empty when the query carries no key, so Envoy leaves
    /// the query string alone.
    pub remove_query: Vec<String>,
    /// For a JWT: whether the verified-token cache answered (`None` for other credentials).
    pub token_cache_hit: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyStatus {
    /// 401: no or bad credentials.
    Unauthorized,
    /// 403: authenticated but not allowed (or the route is unknown).
    Forbidden,
    /// 503: no policy yet (the service just started).
    Unavailable,
}

impl DenyStatus {
    /// The HTTP status the client gets.
    pub fn code(self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::Unavailable => 503,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub status: DenyStatus,
    pub message: &'static str,
    /// Metrics label.
    pub reason: &'static str,
    /// Metrics label: the provider that refused, or empty.
    pub provider: String,
    /// `WWW-Authenticate` for a 401.
    pub challenge: Option<String>,
}

/// Request input that cannot be read unambiguously: bad UTF-8, a bad percent-escape, a
/// credential given twice. Always a deny, never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed request input")]
pub struct Malformed;

/// Request headers as Envoy sent them: a lower-case name → its value, or `Err` when the value is
/// not valid UTF-8.
pub trait Headers: Sync {
    fn get(&self, name: &str) -> Option<Result<&str, Malformed>>;
}

impl Headers for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<Result<&str, Malformed>> {
        HashMap::get(self, name).map(|v| Ok(v.as_str()))
    }
}

impl Policy {
    pub fn compile(p: &AuthPolicy, env: &mut dyn Env) -> Result<Policy, PolicyError> {
        let mut jwt = HashMap::new();
        let mut remotes = Vec::new();
        for j in &p.jwt {
            let err = |message: String| PolicyError::Jwt {
                provider: j.name.clone(),
                message,
            };
            let algorithms = j
                .algorithms
                .iter()
                .map(|a| {
                    a.parse::<Algorithm>()
                        .map_err(|_| err(format!("unsupported algorithm {a:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if algorithms.is_empty() {
                return Err(err("no algorithms".into()));
            }
            let hmac = algorithms.iter().filter(|a| is_hmac(**a)).count();
            let keys = match &j.keys {
                Some(jwt_provider::Keys::Jwks(bytes)) => {
                    if hmac > 0 {
                        return Err(err("HS* algorithms need secret_env".into()));
                    }
                    let set = jwks::parse(bytes, &algorithms)
                        .map_err(|e| err(format!("{}: {e}", j.jwks_path)))?;
                    Keys::Static(Arc::new(set))
                }
                Some(jwt_provider::Keys::JwksUrl(url)) => {
                    if hmac > 0 {
                        return Err(err("HS* algorithms need secret_env".into()));
                    }
                    let r = env.remote(url, &algorithms);
                    remotes.push(r.clone());
                    Keys::Remote(r)
                }
                Some(jwt_provider::Keys::SecretEnv(var)) => {
                    if hmac != algorithms.len() {
                        return Err(err("secret_env works with HS* algorithms only".into()));
                    }
                    // The message names the variable, never its value.
                    let secret = env
                        .var(var)
                        .ok_or_else(|| err(format!("environment variable {var} is not set")))?;
                    if secret.len() < MIN_SECRET_BYTES {
                        return Err(err(format!(
                            "the secret in {var} is shorter than {MIN_SECRET_BYTES} bytes"
                        )));
                    }
                    Keys::Secret(Arc::new(DecodingKey::from_secret(&secret)))
                }
                None => return Err(err("no key source".into())),
            };
            let skew = j.clock_skew_ms / 1000;
            let headers: Vec<(String, String)> = j
                .headers
                .iter()
                .map(|h| (h.header.clone(), h.claim.clone()))
                .collect();
            let tenant_claim = headers
                .iter()
                .find(|(h, _)| h == header::TENANT_ID)
                .map_or_else(
                    || proto::authz::DEFAULT_TENANT_CLAIM.to_string(),
                    |(_, c)| c.clone(),
                );
            let provider = JwtProvider {
                name: j.name.clone(),
                verifier: Verifier::new(
                    j.issuer.clone(),
                    j.audiences.clone(),
                    algorithms,
                    keys,
                    skew,
                ),
                headers,
                client_claim: j.client_claim.clone(),
                plan_claim: j.plan_claim.clone(),
                tenant_claim,
                forward_token: j.forward_token,
                cache: TokenCache::new(TOKEN_CACHE_ENTRIES),
            };
            jwt.insert(j.name.clone(), Arc::new(provider));
        }
        let mut api = HashMap::new();
        for a in &p.api_keys {
            let file = KeysFile::parse(&a.keys_file).map_err(|e| PolicyError::ApiKeys {
                provider: a.name.clone(),
                message: format!("{}:{e}", a.keys_path),
            })?;
            api.insert(
                a.name.clone(),
                Arc::new(ApiKeyProvider {
                    name: a.name.clone(),
                    header: a.header.to_ascii_lowercase(),
                    query: a.query.clone(),
                    store: KeyStore::new(file),
                }),
            );
        }
        let mut mtls = HashMap::new();
        for m in &p.mtls {
            let field = CertField::try_from(m.client_id).map_err(|_| PolicyError::Mtls {
                provider: m.name.clone(),
                message: format!("unknown client_id kind {}", m.client_id),
            })?;
            mtls.insert(
                m.name.clone(),
                Arc::new(MtlsProvider {
                    name: m.name.clone(),
                    field,
                    plans: m
                        .plans
                        .iter()
                        .map(|c| (c.client_id.clone(), c.plan.clone()))
                        .collect(),
                    default_plan: m.default_plan.clone(),
                }),
            );
        }
        let rate_limits = p
            .rate_limits
            .as_ref()
            .map(|rl| ratelimit::policy::Policy::compile(rl).map(Arc::new))
            .transpose()
            .map_err(|e| PolicyError::RateLimits(e.to_string()))?;
        let pers: HashMap<&str, i32> = p
            .rate_limits
            .iter()
            .flat_map(|rl| &rl.rules)
            .map(|r| (r.id.as_str(), r.per))
            .collect();
        let mut routes = HashMap::new();
        for r in &p.routes {
            let limits = r
                .limits
                .iter()
                .map(|rule| {
                    let err = |message| PolicyError::RouteLimit {
                        route: r.name.clone(),
                        rule: rule.clone(),
                        message,
                    };
                    let per = pers
                        .get(rule.as_str())
                        .ok_or_else(|| err("is not one of the rate limits sent with the policy"))?;
                    let entries = proto::ratelimit::Per::try_from(*per)
                        .ok()
                        .and_then(proto::ratelimit::Per::identity_entries)
                        .ok_or_else(|| err("is not keyed on the identity"))?;
                    Ok(RouteLimit {
                        rule: rule.clone(),
                        entries,
                    })
                })
                .collect::<Result<Vec<_>, PolicyError>>()?;
            if r.public && !limits.is_empty() {
                return Err(PolicyError::RouteLimit {
                    route: r.name.clone(),
                    rule: limits[0].rule.clone(),
                    message: "is on a public route, which has no identity to count",
                });
            }
            let mut rule = RouteRule {
                public: r.public,
                jwt: Vec::new(),
                api: Vec::new(),
                mtls: Vec::new(),
                roles: r.require_roles.clone(),
                scopes: r.require_scopes.clone(),
                limits,
            };
            for name in &r.providers {
                if let Some(j) = jwt.get(name) {
                    rule.jwt.push(Arc::clone(j));
                } else if let Some(a) = api.get(name) {
                    rule.api.push(Arc::clone(a));
                } else if let Some(m) = mtls.get(name) {
                    rule.mtls.push(Arc::clone(m));
                } else {
                    return Err(PolicyError::UnknownProvider {
                        route: r.name.clone(),
                        provider: name.clone(),
                    });
                }
            }
            if !rule.public && rule.jwt.is_empty() && rule.api.is_empty() && rule.mtls.is_empty() {
                return Err(PolicyError::NoProvider(r.name.clone()));
            }
            routes.insert(r.name.clone(), rule);
        }
        // The lists of what to remove are xds-server's (`translate::authz`), taken as shipped,
        // but never trusted to be complete: a policy from an xds-server that predates a list
        // decodes it as empty, and taking that as "remove nothing" would forward keys. Such a
        // policy is refused (NACKed), so the rollout keeps everything on the last good one.
        check_removal_lists(p)?;
        let plans = Plans::compile(p)?;
        // Envoy removes the identity headers before any filter (xds-server's early header
        // mutation), so they never arrive here; listing them anyway costs nothing and keeps an
        // Envoy configured some other way from forwarding a client's copy.
        let mut public_remove = p.identity_headers.clone();
        for h in p.public_remove() {
            if !public_remove.contains(&h) {
                public_remove.push(h);
            }
        }
        Ok(Policy {
            routes,
            rate_limits,
            identity_headers: p.identity_headers.clone(),
            credential_headers: p.credential_headers.clone(),
            credential_query: p.credential_query.clone(),
            public_remove,
            plans,
            remotes,
        })
    }

    /// True when every remote key set has been fetched once.
    pub fn keys_loaded(&self) -> bool {
        self.remotes.iter().all(|r| r.is_loaded())
    }

    /// The limits this service counts for `route` once its credential is accepted (none for an
    /// unknown route, which is refused anyway).
    pub fn route_limits(&self, route: Option<&str>) -> &[RouteLimit] {
        route
            .and_then(|r| self.routes.get(r))
            .map_or(&[], |r| r.limits.as_slice())
    }

    /// Decides one request that arrived without a client certificate ([`Self::decide_with_peer`]).
    pub async fn decide(
        &self,
        route: Option<&str>,
        headers: &dyn Headers,
        path: &str,
        now: u64,
    ) -> Decision {
        self.decide_with_peer(route, headers, path, None, now).await
    }

    /// Decides one request. `path` is the request path with its query; `peer` is the client
    /// certificate Envoy verified, if one came with the connection; `now` is seconds since the
    /// epoch.
    pub async fn decide_with_peer(
        &self,
        route: Option<&str>,
        headers: &dyn Headers,
        path: &str,
        peer: Option<&CertIdentity>,
        now: u64,
    ) -> Decision {
        let Some(rule) = route.and_then(|r| self.routes.get(r)) else {
            // A route Envoy knows but we do not means the two configurations disagree (or the
            // per-route context extension is missing): refuse rather than guess.
            return deny(
                DenyStatus::Forbidden,
                "access denied",
                "unknown_route",
                "",
                None,
            );
        };
        if rule.public {
            return Decision::Allow(Allow {
                provider: String::new(),
                identity: None,
                set_headers: Vec::new(),
                remove_headers: self.public_remove.clone(),
                remove_query: credential_params(path, &self.credential_query),
                token_cache_hit: None,
            });
        }
        let mut failure: Option<Deny> = None;
        let mut accepted: Option<(String, Arc<Identity>, bool)> = None;
        let mut token_cache_hit = None;

        if !rule.jwt.is_empty() {
            match bearer(headers) {
                Ok(Some(token)) => match self.verify_jwt(rule, token, now).await {
                    Ok((p, id, hit)) => {
                        accepted = Some((p.name.clone(), id, p.forward_token));
                        token_cache_hit = Some(hit);
                    }
                    Err((provider, e)) => {
                        failure = Some(refusal(
                            DenyStatus::Unauthorized,
                            e.message(),
                            e.reason(),
                            &provider,
                            Some(challenge(rule, true)),
                        ))
                    }
                },
                Ok(None) => {}
                Err(Malformed) => failure = Some(malformed(rule)),
            }
        }
        if accepted.is_none() {
            for p in &rule.api {
                match api_key(p, headers, path) {
                    Ok(Some(key)) => match p.store.check(&key, now as i64) {
                        Ok(rec) => {
                            accepted =
                                Some((p.name.clone(), Arc::new(self.key_identity(rec)), false));
                            break;
                        }
                        Err(refused) => {
                            // Unknown, revoked and expired keys read the same to the client
                            // (spec §3); only the metrics label and the log line tell them apart.
                            failure.get_or_insert(refusal(
                                DenyStatus::Unauthorized,
                                "the API key is invalid",
                                refused.reason(),
                                &p.name,
                                Some(challenge(rule, false)),
                            ));
                        }
                    },
                    Ok(None) => {}
                    Err(Malformed) => {
                        failure.get_or_insert(malformed(rule));
                    }
                }
            }
        }
        if accepted.is_none() {
            for p in &rule.mtls {
                let Some(cert) = peer else {
                    continue;
                };
                match self.cert_identity(p, cert) {
                    Some(identity) => {
                        accepted = Some((p.name.clone(), Arc::new(identity), false));
                        break;
                    }
                    None => {
                        failure.get_or_insert(refusal(
                            DenyStatus::Unauthorized,
                            "the client certificate carries no usable client id",
                            "cert_no_client_id",
                            &p.name,
                            Some(challenge(rule, false)),
                        ));
                    }
                }
            }
        }
        let Some((provider, identity, forward_token)) = accepted else {
            return Decision::Deny(failure.unwrap_or_else(|| {
                refusal(
                    DenyStatus::Unauthorized,
                    "credentials are required",
                    "missing_credentials",
                    "",
                    Some(challenge(rule, false)),
                )
            }));
        };
        if !rule.roles.iter().all(|r| identity.roles.contains(r))
            || !rule.scopes.iter().all(|s| identity.scopes.contains(s))
        {
            return deny(
                DenyStatus::Forbidden,
                "access denied",
                "forbidden",
                &provider,
                None,
            );
        }
        let mut allow = self.allow(provider, identity, forward_token, path);
        allow.token_cache_hit = token_cache_hit;
        Decision::Allow(allow)
    }

    fn allow(
        &self,
        provider: String,
        identity: Arc<Identity>,
        forward_token: bool,
        path: &str,
    ) -> Allow {
        let mut set_headers = identity.headers.clone();
        // The built-in identity headers always carry the built-in values, even if a claim
        // mapping names one of them.
        set_headers.retain(|(h, _)| !crate::IDENTITY_HEADERS.contains(&h.as_str()));
        set_headers.push((header::CLIENT_ID.into(), identity.client_id.clone()));
        if !identity.plan.is_empty() {
            set_headers.push((header::CLIENT_PLAN.into(), identity.plan.clone()));
        }
        set_headers.push((header::AUTH_PROVIDER.into(), provider.clone()));
        // Envoy may apply removals after additions, so a header we set is never also removed;
        // setting it overwrites the client's copy anyway.
        let mut remove_headers: Vec<String> = self
            .identity_headers
            .iter()
            .filter(|h| !set_headers.iter().any(|(s, _)| s == *h))
            .cloned()
            .collect();
        if !forward_token {
            remove_headers.push(AUTHORIZATION.into());
        }
        for h in &self.credential_headers {
            if !remove_headers.contains(h) && !set_headers.iter().any(|(s, _)| s == h) {
                remove_headers.push(h.clone());
            }
        }
        let remove_query = credential_params(path, &self.credential_query);
        Allow {
            provider,
            identity: Some(identity),
            set_headers,
            remove_headers,
            remove_query,
            token_cache_hit: None,
        }
    }

    async fn verify_jwt(
        &self,
        rule: &RouteRule,
        token: &str,
        now: u64,
    ) -> Result<(Arc<JwtProvider>, Arc<Identity>, bool), (String, JwtError)> {
        if token.len() > jwt::MAX_TOKEN_BYTES {
            return Err((String::new(), JwtError::TooLarge));
        }
        let digest = digest_key(token);
        for p in &rule.jwt {
            if let Some(id) = p.cache.get(&digest, now, generation(p)) {
                return Ok((p.clone(), id, true));
            }
        }
        // A miss parses and verifies the token and may wait for a key refetch. Its state lives
        // in a box of its own, so the future of every Check (cache hits included) stays small:
        // tonic and our endpoint move that future whole.
        Box::pin(self.verify_uncached(rule, token, digest, now)).await
    }

    async fn verify_uncached(
        &self,
        rule: &RouteRule,
        token: &str,
        digest: [u8; 32],
        now: u64,
    ) -> Result<(Arc<JwtProvider>, Arc<Identity>, bool), (String, JwtError)> {
        let parsed = jwt::parse(token).map_err(|e| (String::new(), e))?;
        let iss = parsed.issuer();
        let mut last = (String::new(), JwtError::WrongIssuer);
        for p in rule
            .jwt
            .iter()
            .filter(|p| Some(p.verifier.issuer.as_str()) == iss)
        {
            let gen = generation(p);
            let mut result = p.verifier.verify(&parsed, now);
            if result == Err(JwtError::UnknownKid) {
                if let Keys::Remote(r) = &p.verifier.keys {
                    if r.refetch_for_unknown_kid().await {
                        result = p.verifier.verify(&parsed, now);
                    }
                }
            }
            match result.and_then(|v| p.identity(&parsed.claims, &self.plans).map(|i| (v, i))) {
                Ok((v, identity)) => {
                    let identity = Arc::new(identity);
                    p.cache.insert(digest, identity.clone(), v.exp, now, gen);
                    return Ok((p.clone(), identity, false));
                }
                Err(e) => last = (p.name.clone(), e),
            }
        }
        Err(last)
    }

    /// The identity a verified client certificate carries for provider `p`: `None` when the
    /// certificate lacks the field, or its value cannot be a header value.
    fn cert_identity(&self, p: &MtlsProvider, cert: &CertIdentity) -> Option<Identity> {
        let client_id = match p.field {
            CertField::Subject => Some(&cert.subject),
            CertField::UriSan => cert.uris.first(),
            CertField::DnsSan => cert.dns.first(),
        }
        .filter(|id| !id.is_empty() && header_safe(id))?;
        let named = p
            .plans
            .get(client_id.as_str())
            .map(String::as_str)
            .or(Some(p.default_plan.as_str()));
        let (plan, unknown_plan) = self.plans.resolve(named);
        Some(Identity {
            client_id: client_id.clone(),
            plan,
            unknown_plan,
            ..Default::default()
        })
    }

    fn key_identity(&self, rec: &KeyRecord) -> Identity {
        let (plan, unknown_plan) = self.plans.resolve(Some(&rec.plan));
        Identity {
            headers: Vec::new(),
            client_id: rec.id.clone(),
            plan,
            unknown_plan,
            tenant: rec.tenant.clone(),
            roles: rec.roles.clone(),
            scopes: rec.scopes.clone(),
            ok_answer: OkAnswer::default(),
        }
    }
}

/// Every API-key provider's header and query parameter must be among the credentials removed,
/// and the client identity headers among the identity headers.
fn check_removal_lists(p: &AuthPolicy) -> Result<(), PolicyError> {
    let missing = |what: &'static str, name: &str| PolicyError::IncompleteRemoval {
        what,
        name: name.to_string(),
    };
    for a in &p.api_keys {
        let header = a.header.to_ascii_lowercase();
        if !header.is_empty()
            && !p.credential_headers.contains(&header)
            && !p.identity_headers.contains(&header)
        {
            return Err(missing("the API-key header", &header));
        }
        if !a.query.is_empty() && !p.credential_query.contains(&a.query) {
            return Err(missing("the API-key query parameter", &a.query));
        }
    }
    for h in header::CLIENT_HEADERS {
        if !p.identity_headers.iter().any(|i| i == h) {
            return Err(missing("the identity header", h));
        }
    }
    Ok(())
}

fn generation(p: &JwtProvider) -> u64 {
    match &p.verifier.keys {
        Keys::Remote(r) => r.generation(),
        _ => 0,
    }
}

fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl JwtProvider {
    /// The identity a verified token carries.
    fn identity(&self, claims: &Map<String, Value>, plans: &Plans) -> Result<Identity, JwtError> {
        let client_id = claim(claims, &self.client_claim)
            .and_then(scalar)
            .filter(|s| !s.is_empty() && header_safe(s))
            .ok_or(JwtError::MissingClaim("client"))?;
        let (plan, unknown_plan) =
            plans.resolve(claim(claims, &self.plan_claim).and_then(scalar).as_deref());
        let tenant = claim(claims, &self.tenant_claim)
            .and_then(scalar)
            .filter(|s| header_safe(s))
            .unwrap_or_default();
        let mut headers = Vec::with_capacity(self.headers.len());
        for (h, c) in &self.headers {
            // A claim whose value cannot be a header value (control characters) is left out;
            // the client's copy of the header is removed all the same.
            if let Some(v) = claim(claims, c).and_then(render).filter(|v| header_safe(v)) {
                headers.push((h.clone(), v));
            }
        }
        Ok(Identity {
            headers,
            client_id,
            plan,
            unknown_plan,
            tenant,
            roles: words(claims.get("roles")),
            scopes: {
                let mut s = words(claims.get("scope"));
                s.extend(words(claims.get("scp")));
                s
            },
            ok_answer: OkAnswer::default(),
        })
    }
}

/// A claim by literal top-level name, or by JSON Pointer (RFC 6901) when it starts with `/`.
/// serde_json's pointer takes array indices only as RFC 6901 writes them (`0` or digits without
/// a leading zero), so `+1`, `01` and `-` name nothing.
pub fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if !name.starts_with('/') {
        return claims.get(name);
    }
    // The pointer's first token names a top-level claim; the rest walks inside it.
    let (first, rest) = match name[1..].find('/') {
        Some(i) => (&name[1..=i], &name[i + 1..]),
        None => (&name[1..], ""),
    };
    let first = first.replace("~1", "/").replace("~0", "~");
    claims.get(&first)?.pointer(rest)
}

/// A string, number or boolean as text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A claim as a header value: scalars as text, arrays comma-joined (elements that are not
/// scalars as JSON), objects as compact JSON; `null` is absent.
///
/// An array with an element that itself contains a `,` renders as nothing: joined, it would
/// read as more elements than the token holds (`["user,admin"]` as the two roles `user` and
/// `admin`), and upstreams split such headers on commas. The client's copy of the header is
/// removed all the same, so the upstream sees no value rather than a forged list.
pub fn render(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|i| scalar(i).unwrap_or_else(|| i.to_string()))
                .collect();
            if items.iter().any(|i| i.contains(',')) {
                return None;
            }
            Some(items.join(","))
        }
        Value::Object(_) => Some(v.to_string()),
        _ => scalar(v),
    }
}

fn header_safe(s: &str) -> bool {
    !s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// Roles or scopes: an array of strings, or one space-separated string (OAuth `scope`).
fn words(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The bearer token, if the request carries one. `Err` for an unreadable header.
fn bearer(headers: &dyn Headers) -> Result<Option<&str>, Malformed> {
    let Some(v) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v?.trim();
    let Some((scheme, token)) = v.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim();
    Ok((!token.is_empty()).then_some(token))
}

/// The API key a request presents to provider `p` (header first, then the query).
fn api_key<'a>(
    p: &ApiKeyProvider,
    headers: &'a dyn Headers,
    path: &str,
) -> Result<Option<KeyRef<'a>>, Malformed> {
    if let Some(v) = headers.get(&p.header) {
        let v = v?.trim();
        if !v.is_empty() {
            return Ok(Some(KeyRef::Header(v)));
        }
    }
    if p.query.is_empty() {
        return Ok(None);
    }
    Ok(query_param(path, &p.query)?.map(KeyRef::Query))
}

enum KeyRef<'a> {
    Header(&'a str),
    Query(String),
}

impl std::ops::Deref for KeyRef<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            KeyRef::Header(s) => s,
            KeyRef::Query(s) => s,
        }
    }
}

/// The single value of query parameter `name` in `path`. A parameter given twice is ambiguous
/// and refused (`Err`), as is a bad percent-escape.
pub fn query_param(path: &str, name: &str) -> Result<Option<String>, Malformed> {
    let Some((_, query)) = path.split_once('?') else {
        return Ok(None);
    };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k)? != name {
            continue;
        }
        if found.is_some() {
            return Err(Malformed);
        }
        found = Some(percent_decode(v)?);
    }
    Ok(found)
}

/// Every query parameter name in `path` that decodes to one of `names`, spelled as sent (each
/// spelling once). A name that does not decode matches nothing.
pub fn credential_params(path: &str, names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if names.is_empty() {
        return out;
    }
    let Some((_, query)) = path.split_once('?') else {
        return out;
    };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    for pair in query.split('&') {
        let raw = pair.split_once('=').map_or(pair, |(k, _)| k);
        if out.iter().any(|o| o == raw) {
            continue;
        }
        if percent_decode(raw).is_ok_and(|k| names.contains(&k)) {
            out.push(raw.to_string());
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, Malformed> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or(Malformed)?;
                // Two hex digits exactly (`from_str_radix` alone would take a sign: `%+5`).
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(Malformed);
                }
                let hex = std::str::from_utf8(hex).map_err(|_| Malformed)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| Malformed)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Malformed)
}

fn challenge(rule: &RouteRule, invalid_token: bool) -> String {
    let mut parts = Vec::new();
    if !rule.jwt.is_empty() {
        parts.push(if invalid_token {
            r#"Bearer realm="gateway", error="invalid_token""#.to_string()
        } else {
            r#"Bearer realm="gateway""#.to_string()
        });
    }
    for p in &rule.api {
        parts.push(format!(r#"ApiKey realm="gateway", header="{}""#, p.header));
    }
    if !rule.mtls.is_empty() {
        // No registered scheme says "present a client certificate"; this one names it.
        parts.push(r#"ClientCertificate realm="gateway""#.to_string());
    }
    parts.join(", ")
}

fn malformed(rule: &RouteRule) -> Deny {
    Deny {
        status: DenyStatus::Unauthorized,
        message: "credentials are malformed",
        reason: "malformed",
        provider: String::new(),
        challenge: Some(challenge(rule, false)),
    }
}

fn deny(
    status: DenyStatus,
    message: &'static str,
    reason: &'static str,
    provider: &str,
    challenge: Option<String>,
) -> Decision {
    Decision::Deny(refusal(status, message, reason, provider, challenge))
}

fn refusal(
    status: DenyStatus,
    message: &'static str,
    reason: &'static str,
    provider: &str,
    challenge: Option<String>,
) -> Deny {
    Deny {
        status,
        message,
        reason,
        provider: provider.to_string(),
        challenge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn claims_by_literal_name_or_json_pointer() {
        let c = map(json!({
            "sub": "u", "a.b": "dotted", "https://x/claims": "url-named",
            "org": {"tenant": "t", "teams": ["x", "y"], "a/b": 1, "m~n": 2},
        }));
        assert_eq!(claim(&c, "sub"), Some(&json!("u")));
        assert_eq!(claim(&c, "a.b"), Some(&json!("dotted")));
        assert_eq!(claim(&c, "https://x/claims"), Some(&json!("url-named")));
        assert_eq!(claim(&c, "/org/tenant"), Some(&json!("t")));
        assert_eq!(claim(&c, "/org/teams/1"), Some(&json!("y")));
        assert_eq!(claim(&c, "/org/a~1b"), Some(&json!(1)));
        assert_eq!(claim(&c, "/org/m~0n"), Some(&json!(2)));
        assert_eq!(claim(&c, "/org/teams/9"), None);
        assert_eq!(claim(&c, "/sub/x"), None);
        assert_eq!(claim(&c, "missing"), None);
        assert_eq!(claim(&c, "/org/teams/0"), Some(&json!("x")));
        assert_eq!(claim(&c, "/org"), c.get("org"));
    }

    #[test]
    fn json_pointer_array_indices_follow_rfc_6901() {
        let c = map(json!({"a": ["x", "y"], "": {"": 1}, "~/": 2}));
        // RFC 6901 §4: an index is `0` or digits without a leading zero; `-` is past the end.
        for bad in ["/a/+1", "/a/01", "/a/-", "/a/ 1", "/a/1 ", "/a/-0"] {
            assert_eq!(claim(&c, bad), None, "{bad}");
        }
        assert_eq!(claim(&c, "/a/1"), Some(&json!("y")));
        assert_eq!(claim(&c, "//"), Some(&json!(1)), "empty member names");
        assert_eq!(claim(&c, "/~0~1"), Some(&json!(2)));
    }

    #[test]
    fn claims_render_as_header_values() {
        for (v, want) in [
            (json!("s"), Some("s")),
            (json!(42), Some("42")),
            (json!(true), Some("true")),
            (json!(["a", "b", 3]), Some("a,b,3")),
            (json!([{"k": 1}]), Some(r#"{"k":1}"#)),
            // An element with a comma would read as two: the array is left out.
            (json!(["user,admin"]), None),
            (json!(["user", "a,b"]), None),
            (json!([{"k": 1, "l": 2}]), None),
            (json!({"k": "v"}), Some(r#"{"k":"v"}"#)),
            (json!([]), Some("")),
            (json!(null), None),
        ] {
            assert_eq!(render(&v).as_deref(), want, "{v}");
        }
        assert!(header_safe("a b\tc é"));
        assert!(!header_safe("a\r\nx-injected: 1"));
        assert!(!header_safe("nul\0"));
    }

    #[test]
    fn query_parameters() {
        assert_eq!(
            query_param("/p?a=1&api_key=k%2B1+2&b", "api_key"),
            Ok(Some("k+1 2".into()))
        );
        assert_eq!(
            query_param("/p?api%5Fkey=x", "api_key"),
            Ok(Some("x".into()))
        );
        assert_eq!(
            query_param("/p?api_key=x#frag", "api_key"),
            Ok(Some("x".into()))
        );
        assert_eq!(query_param("/p", "api_key"), Ok(None));
        assert_eq!(query_param("/p?other=1", "api_key"), Ok(None));
        assert_eq!(
            query_param("/p?api_key=a&api_key=b", "api_key"),
            Err(Malformed)
        );
        assert_eq!(query_param("/p?api_key=%zz", "api_key"), Err(Malformed));
        assert_eq!(query_param("/p?api_key=%ff", "api_key"), Err(Malformed));
        assert_eq!(query_param("/p?api_key=%", "api_key"), Err(Malformed));
        assert_eq!(query_param("/p?api_key=%+5", "api_key"), Err(Malformed));
    }

    #[test]
    fn credential_params_are_named_as_sent() {
        let names = ["api_key".to_string(), "key".to_string()];
        assert_eq!(
            credential_params(
                "/p?a=1&api%5Fkey=x&api_key=y&api%5fkey=z&api%5Fkey=w#f",
                &names
            ),
            ["api%5Fkey", "api_key", "api%5fkey"]
        );
        assert_eq!(credential_params("/p?k%65y&q=api_key", &names), ["k%65y"]);
        assert_eq!(
            credential_params("/p?api_key%zz=1&x=2", &names),
            Vec::<String>::new()
        );
        assert_eq!(credential_params("/p", &names), Vec::<String>::new());
        assert_eq!(credential_params("/p?api_key=1", &[]), Vec::<String>::new());
    }

    #[test]
    fn plan_names_resolve_to_a_defined_plan_or_the_default() {
        let plans = Plans {
            defined: ["free".to_string(), "pro".to_string()].into(),
            default: "free".into(),
        };
        assert_eq!(plans.resolve(Some("pro")), ("pro".into(), None));
        assert_eq!(plans.resolve(None), ("free".into(), None));
        assert_eq!(plans.resolve(Some("")), ("free".into(), None));
        for unknown in ["gold", "Pro", "pro ", "free\r\nx: 1"] {
            assert_eq!(
                plans.resolve(Some(unknown)),
                ("free".into(), Some(unknown.into())),
                "{unknown:?}"
            );
        }
        let long = "g".repeat(1000);
        let (_, named) = plans.resolve(Some(&long));
        assert_eq!(named.map(|n| n.len()), Some(MAX_PLAN_NAME));

        // No plans configured: nothing limits by plan, the name goes upstream as it is (when it
        // can be a header value).
        let none = Plans {
            defined: HashSet::new(),
            default: String::new(),
        };
        assert_eq!(none.resolve(Some("gold")), ("gold".into(), None));
        assert_eq!(none.resolve(Some("a\nb")), (String::new(), None));
        assert_eq!(none.resolve(None), (String::new(), None));
    }

    #[test]
    fn bearer_tokens() {
        let h = |v: &str| HashMap::from([(AUTHORIZATION.to_string(), v.to_string())]);
        assert_eq!(bearer(&h("Bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer(&h("bearer   abc  ")), Ok(Some("abc")));
        assert_eq!(bearer(&h("Basic abc")), Ok(None));
        assert_eq!(bearer(&h("Bearer")), Ok(None));
        assert_eq!(bearer(&h("Bearer ")), Ok(None));
        assert_eq!(bearer(&HashMap::new()), Ok(None));
    }
}
