//! `gateway.policy.v1.AuthPolicy`: what xds-server streams to authz-service (providers, API-key
//! files and each route's accepted providers and `require` rules).
//!
//! Hand-written prost types (no `.proto` compilation step); field numbers are the wire contract.
//! No message holds a protobuf `map`, so encoding is deterministic: every list is sorted by name
//! (or kept in file order where order means something, like claim headers).
//!
//! Files are shipped inline (JWKS documents, API-key files): xds-server is the only process that
//! reads the configuration's files, watches them and re-publishes on change, so authz-service
//! never needs the same file system and never drifts from what the server validated.
//!
//! This module is also the one home of every name xds-server's translation and authz-service
//! must agree on without a message to carry it: the identity headers, the dynamic-metadata keys
//! the rate-limit descriptors read, and the route's context extension.

use prost::Message;

/// The single resource name of an auth policy (the whole policy is one resource).
pub const RESOURCE_NAME: &str = "auth";

/// Envoy's ext_authz HTTP filter name. Envoy also files the dynamic metadata a Check response
/// returns under the filter's name, so it is [`metadata::NAMESPACE`] too.
pub const EXT_AUTHZ_FILTER: &str = "envoy.filters.http.ext_authz";

/// The per-route context extension (set by xds-server on every route with `auth`) naming the
/// route; authz-service looks the route's rules up by it.
pub const ROUTE_EXTENSION: &str = "route";

/// Request headers with a meaning fixed by the contract (spec §4).
pub mod header {
    /// The accepted credential's client id (a JWT's `client_claim`, an API key's `id`).
    pub const CLIENT_ID: &str = "x-client-id";
    /// The client's plan, when it has one (or the default plan).
    pub const CLIENT_PLAN: &str = "x-client-plan";
    /// The name of the provider that accepted the request.
    pub const AUTH_PROVIDER: &str = "x-auth-provider";
    /// The identity headers set on every authenticated request whatever the provider, sorted;
    /// client-sent copies never reach an upstream.
    pub const CLIENT_HEADERS: [&str; 3] = [AUTH_PROVIDER, CLIENT_ID, CLIENT_PLAN];
    /// A JWT provider's claim mapped to this header is also the client's tenant (the
    /// `per: tenant` rate-limit key); without such a mapping the tenant is the claim
    /// [`super::DEFAULT_TENANT_CLAIM`].
    pub const TENANT_ID: &str = "x-tenant-id";
    /// Bearer tokens; removed before the upstream unless a provider forwards tokens.
    pub const AUTHORIZATION: &str = "authorization";
    /// Envoy's ext_authz sets this to `true` on a request it let through because authz-service
    /// failed or was late under `auth.service.on_error: allow` (`failure_mode_allow_header_add`):
    /// the request was not authenticated. Like the identity headers, a client's copy is removed
    /// before any filter, so only Envoy can set it.
    pub const FAILURE_MODE_ALLOWED: &str = "x-envoy-auth-failure-mode-allowed";
    /// Envoy's request id: in authz-service's log lines and denial bodies.
    pub const REQUEST_ID: &str = "x-request-id";
}

/// The claim a JWT's tenant comes from when no header maps [`header::TENANT_ID`].
pub const DEFAULT_TENANT_CLAIM: &str = "tenant_id";

/// The dynamic metadata an allowing Check response carries, which Envoy stores under
/// [`NAMESPACE`] and the rate-limit descriptors read (an absent key means "not set").
pub mod metadata {
    pub const NAMESPACE: &str = super::EXT_AUTHZ_FILTER;
    pub const CLIENT_ID: &str = "client_id";
    pub const PLAN: &str = "plan";
    pub const TENANT: &str = "tenant";
    pub const PROVIDER: &str = "provider";
    /// The rate-limit outcome when authz-service counted the route's limits itself
    /// (`rate_limits.counted_by: authz-service`): `ok`, `over_limit` or `error`, as
    /// ratelimit-service's `proto::ratelimit::metadata::OUTCOME`.
    pub const RATE_LIMIT: &str = "rate_limit";
}

/// Everything authz-service enforces.
#[derive(Clone, PartialEq, Message)]
pub struct AuthPolicy {
    /// Sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub jwt: Vec<JwtProvider>,
    /// Sorted by name.
    #[prost(message, repeated, tag = "2")]
    pub api_keys: Vec<ApiKeyProvider>,
    /// Every route of every gateway, sorted by name (route names are unique in a config).
    #[prost(message, repeated, tag = "3")]
    pub routes: Vec<RoutePolicy>,
    /// Every header that carries identity to an upstream (all providers' claim headers plus
    /// [`header::CLIENT_HEADERS`]), sorted (`translate::authz::identity_headers`). Envoy removes
    /// client-sent copies of all of them from every request before any filter, so a Check never
    /// carries one; authz-service still lists those it does not set in its allow answers, which
    /// keeps it safe behind an Envoy configured by some other control plane.
    #[prost(string, repeated, tag = "4")]
    pub identity_headers: Vec<String>,
    /// `rate_limits.default_plan`: the plan of a client whose credential names none, or names
    /// one [`Self::plans`] does not have. Empty when not configured (then `plans` is empty too).
    #[prost(string, tag = "5")]
    pub default_plan: String,
    /// Whether `auth: none` routes also remove `Authorization` (spec §4): decided by xds-server
    /// (`translate::authz::strips_authorization`), which removes it on those routes itself.
    #[prost(bool, tag = "6")]
    pub public_strips_authorization: bool,
    /// Every API-key provider's header that is not already an identity header, sorted: removed
    /// on every allow, whichever provider accepted the request, so no key reaches an upstream
    /// (spec §4; `translate::authz::credential_headers`).
    #[prost(string, repeated, tag = "7")]
    pub credential_headers: Vec<String>,
    /// Every API-key provider's query parameter, sorted: removed on every allow, by the
    /// spelling the client sent (`translate::authz::credential_query`).
    #[prost(string, repeated, tag = "8")]
    pub credential_query: Vec<String>,
    /// Every plan `rate_limits.plans` defines, sorted. A credential naming another plan is
    /// accepted and limited as [`Self::default_plan`], and that is also the plan the upstream is
    /// told (`x-client-plan`), so the upstream and the limiter never disagree. Empty when the
    /// config defines no plans: nothing limits by plan, and a credential's plan is forwarded as
    /// it is.
    #[prost(string, repeated, tag = "9")]
    pub plans: Vec<String>,
    /// Sorted by name.
    #[prost(message, repeated, tag = "10")]
    pub mtls: Vec<MtlsProvider>,
    /// `rate_limits.counted_by: authz-service`: the whole rate-limit policy (the same message
    /// ratelimit-service receives), so authz-service can count the limits of
    /// [`RoutePolicy::limits`] itself and answer a 429 in the Check. `None` otherwise: every
    /// limit is Envoy's call to ratelimit-service.
    #[prost(message, optional, tag = "11")]
    pub rate_limits: Option<crate::ratelimit::RateLimitPolicy>,
}

impl AuthPolicy {
    /// What an `auth: none` route removes from a client's request: the credential headers, and
    /// `authorization` when [`Self::public_strips_authorization`]. xds-server puts the same list
    /// in those routes' `request_headers_to_remove` (`translate::authz::route_credentials`);
    /// the identity headers are gone before routing (see [`Self::identity_headers`]).
    pub fn public_remove(&self) -> Vec<String> {
        let mut out = self.credential_headers.clone();
        if self.public_strips_authorization && !out.iter().any(|h| h == header::AUTHORIZATION) {
            out.push(header::AUTHORIZATION.to_string());
        }
        out
    }
}

/// One `auth.jwt.<name>` provider.
#[derive(Clone, PartialEq, Message)]
pub struct JwtProvider {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub issuer: String,
    /// Any-of; empty: `aud` is not checked.
    #[prost(string, repeated, tag = "3")]
    pub audiences: Vec<String>,
    /// JWS `alg` names (`RS256`, `EdDSA`, …) in file order; never empty.
    #[prost(string, repeated, tag = "4")]
    pub algorithms: Vec<String>,
    /// Where the verification keys come from.
    #[prost(oneof = "jwt_provider::Keys", tags = "5, 6, 7")]
    pub keys: Option<jwt_provider::Keys>,
    #[prost(uint64, tag = "8")]
    pub clock_skew_ms: u64,
    /// Upstream header ← claim, in file order.
    #[prost(message, repeated, tag = "9")]
    pub headers: Vec<ClaimHeader>,
    #[prost(string, tag = "10")]
    pub client_claim: String,
    #[prost(string, tag = "11")]
    pub plan_claim: String,
    #[prost(bool, tag = "12")]
    pub forward_token: bool,
    /// The JWKS file's path, for error messages only (`keys` carries its contents).
    #[prost(string, tag = "13")]
    pub jwks_path: String,
}

pub mod jwt_provider {
    /// Exactly one key source.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Keys {
        /// The contents of `jwks_file`.
        #[prost(bytes, tag = "5")]
        Jwks(Vec<u8>),
        /// `jwks_url`, fetched and refreshed by authz-service.
        #[prost(string, tag = "6")]
        JwksUrl(String),
        /// Name of the environment variable holding the HS* secret; the secret itself never
        /// leaves authz-service's environment.
        #[prost(string, tag = "7")]
        SecretEnv(String),
    }
}

/// `header: claim` of a JWT provider's `headers`.
#[derive(Clone, PartialEq, Message)]
pub struct ClaimHeader {
    /// Lower-case header name.
    #[prost(string, tag = "1")]
    pub header: String,
    /// A literal top-level claim name, or a JSON Pointer when it starts with `/`.
    #[prost(string, tag = "2")]
    pub claim: String,
}

/// One `auth.api_keys.<name>` provider.
#[derive(Clone, PartialEq, Message)]
pub struct ApiKeyProvider {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Lower-case header carrying the key.
    #[prost(string, tag = "2")]
    pub header: String,
    /// Query parameter carrying the key; empty: keys are only taken from the header.
    #[prost(string, tag = "3")]
    pub query: String,
    /// The contents of `keys_file` (written by `authz-service apikey`; digests only).
    #[prost(bytes = "vec", tag = "4")]
    pub keys_file: Vec<u8>,
    /// The keys file's path, for error messages only.
    #[prost(string, tag = "5")]
    pub keys_path: String,
}

/// One `auth.mtls.<name>` provider: a client certificate Envoy verified (its listener's
/// `client_ca_file`, never `ACCEPT_UNTRUSTED`) is the credential. authz-service reads it from the
/// Check request's `attributes.source.certificate` (ext_authz `include_peer_certificate`), which
/// only Envoy fills in.
#[derive(Clone, PartialEq, Message)]
pub struct MtlsProvider {
    #[prost(string, tag = "1")]
    pub name: String,
    /// What in the certificate is the client id.
    #[prost(enumeration = "CertField", tag = "2")]
    pub client_id: i32,
    /// Client id → plan name, sorted by client id.
    #[prost(message, repeated, tag = "3")]
    pub plans: Vec<CertPlan>,
    /// Plan of a client id `plans` does not list; empty: the policy's default plan.
    #[prost(string, tag = "4")]
    pub default_plan: String,
}

/// Which part of a client certificate is the client id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CertField {
    /// The subject as an RFC 2253 string (as Envoy's `x-forwarded-client-cert` shows it).
    Subject = 0,
    /// The first URI subject alternative name.
    UriSan = 1,
    /// The first DNS subject alternative name.
    DnsSan = 2,
}

/// One `plans` entry of an mTLS provider.
#[derive(Clone, PartialEq, Message)]
pub struct CertPlan {
    #[prost(string, tag = "1")]
    pub client_id: String,
    #[prost(string, tag = "2")]
    pub plan: String,
}

/// What one route requires.
#[derive(Clone, PartialEq, Message)]
pub struct RoutePolicy {
    #[prost(string, tag = "1")]
    pub name: String,
    /// `auth: none`: anyone may pass (identity headers are still stripped).
    #[prost(bool, tag = "2")]
    pub public: bool,
    /// Provider names in file order; any one must accept. Empty only when `public`.
    #[prost(string, repeated, tag = "3")]
    pub providers: Vec<String>,
    /// `require.roles`: all must be present.
    #[prost(string, repeated, tag = "4")]
    pub require_roles: Vec<String>,
    /// `require.scopes`: all must be present.
    #[prost(string, repeated, tag = "5")]
    pub require_scopes: Vec<String>,
    /// Rule ids of [`AuthPolicy::rate_limits`] that authz-service counts for this route, in the
    /// route's order, after it accepted the credential. Empty when Envoy asks ratelimit-service
    /// instead (or the route has no limit); never split: a route's limits are all counted in one
    /// place, so one request is admitted by all of them or charged to none.
    #[prost(string, repeated, tag = "6")]
    pub limits: Vec<String>,
}
