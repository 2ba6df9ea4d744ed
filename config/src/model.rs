//! The typed `gateway.yaml` model (spec §2): plain Rust values, already validated and resolved.
//!
//! Nothing here does I/O or knows about YAML or protobuf. Values in this module are produced by
//! [`super::load`]/[`super::parse`], which guarantee every invariant documented on a field
//! (references resolve, names are unique, defaults are filled in, paths are absolute). Defaults
//! and value ranges are not restated here: they live in the description (`describe.rs`), which
//! the decoder applies and the reference (`docs/configuration.md`) shows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The whole file. Maps are `BTreeMap` so that iteration (and therefore translation output and
/// content hashes) is deterministic.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Always 1 today.
    pub version: u32,
    pub services: BTreeMap<String, Service>,
    pub auth: Option<Auth>,
    pub rate_limits: Option<RateLimits>,
    pub gateways: BTreeMap<String, Gateway>,
    /// `transforms.service`.
    pub transform_service: TransformService,
}

/// Where Envoy finds transform-service.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformService {
    pub address: HostPort,
    /// Envoy's wait for each ext_proc answer (further bounded by a route's `timeout`).
    pub timeout: Duration,
    /// TLS from Envoy to the service; `None`: plain text.
    pub tls: Option<UpstreamTls>,
}

/// `host:port`. `host` is an IP literal or a DNS name (resolved by Envoy, never by us).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// True when `host` is an IPv4/IPv6 literal (EDS can carry it); false for a DNS name.
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Never empty.
    pub endpoints: Vec<HostPort>,
    pub protocol: Protocol,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    /// Always present (the described defaults when the key is absent).
    pub circuit_breaker: CircuitBreaker,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<UpstreamTls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
    Maglev,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// Starts with `/`.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    pub max_connections: u32,
    pub max_pending: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

/// What an absent `circuit_breaker` means. The numbers live in the description
/// (`config/src/describe.rs`) and are decoded from it, as if the user had written `{}`.
impl Default for CircuitBreaker {
    fn default() -> Self {
        crate::decode::default_circuit_breaker()
            .expect("the described circuit_breaker default decodes")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    pub interval: Duration,
    pub ejection_time: Duration,
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// SNI sent to the upstream; also the name its certificate must carry when `ca_file` is set.
    pub sni: Option<String>,
    /// Absolute path (resolved against the config file's directory); read by the loader.
    pub ca_file: Option<PathBuf>,
    /// Envoy's client certificate and its key (mTLS), both or neither; absolute paths, read by
    /// the loader.
    pub client_cert: Option<ClientCert>,
}

/// A client certificate Envoy presents to an upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Allow,
    Deny,
}

/// Where Envoy finds one of our gRPC policy services.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyService {
    pub address: HostPort,
    pub timeout: Duration,
    pub on_error: OnError,
    /// TLS from Envoy to the service; `None`: plain text.
    pub tls: Option<UpstreamTls>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    pub service: PolicyService,
    pub jwt: BTreeMap<String, JwtProvider>,
    pub api_keys: BTreeMap<String, ApiKeyProvider>,
    /// Client-certificate providers; only usable on gateways with a `client_ca_file` listener.
    pub mtls: BTreeMap<String, MtlsProvider>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl JwtAlgorithm {
    pub const ALL: [JwtAlgorithm; 12] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
        Self::HS256,
        Self::HS384,
        Self::HS512,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
        }
    }

    /// HS* algorithms use a shared secret and only make sense with `secret_env`.
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum JwtKeys {
    /// Absolute path to a JWKS document.
    File(PathBuf),
    /// `https://` (or `http://` for local development) URL of a JWKS document.
    Url(String),
    /// Name of the environment variable holding an HS* secret (read by authz-service, never by us).
    SecretEnv(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwtProvider {
    pub issuer: String,
    /// Empty: `aud` is not checked.
    pub audiences: Vec<String>,
    /// Never empty. HS* only with `SecretEnv`, never with a JWKS.
    pub algorithms: Vec<JwtAlgorithm>,
    pub keys: JwtKeys,
    pub clock_skew: Duration,
    /// Upstream header name (lower-case) → claim (literal name, or a JSON Pointer when it starts
    /// with `/`), in file order.
    pub headers: Vec<(String, String)>,
    pub client_claim: String,
    pub plan_claim: String,
    pub forward_token: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyProvider {
    /// Lower-case.
    pub header: String,
    pub query: Option<String>,
    /// Absolute path.
    pub keys_file: PathBuf,
}

/// One `auth.mtls.<name>` provider: a client certificate Envoy verified is the credential.
#[derive(Debug, Clone, PartialEq)]
pub struct MtlsProvider {
    pub client_id: CertField,
    /// Client id → plan name, in file order.
    pub plans: Vec<(String, String)>,
    /// Plan of a client id `plans` does not list; `None`: `rate_limits.default_plan`.
    pub default_plan: Option<String>,
}

/// Which part of a verified client certificate is the client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertField {
    /// The subject, as an RFC 2253 string (what Envoy's `x-forwarded-client-cert` shows).
    Subject,
    /// The first URI subject alternative name.
    UriSan,
    /// The first DNS subject alternative name.
    DnsSan,
}

/// `N` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// At least 1.
    pub requests: u64,
    /// At least 1s... or any non-zero duration.
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    SlidingWindow,
    Approximate,
    Fixed,
}

/// `rate_limits.counted_by`: which service counts the limits of authenticated routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountedBy {
    /// Envoy asks ratelimit-service after authz-service accepted the request.
    RatelimitService,
    /// authz-service counts them inside its Check, with the same store and keys; routes with a
    /// limit per client IP or per header still ask ratelimit-service.
    AuthzService,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    pub service: PolicyService,
    pub plans: BTreeMap<String, Rate>,
    /// When set, names a key of `plans`. `None` only when `plans` is empty.
    pub default_plan: Option<String>,
    pub anonymous: Option<Rate>,
    pub algorithm: Algorithm,
    pub counted_by: CountedBy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    /// Never empty; names and ports unique within the gateway.
    pub listeners: Vec<Listener>,
    pub cors: Option<Cors>,
    /// Which address is the client's: the TCP peer, or what trusted proxies in front saw.
    pub client_ip: ClientIp,
    pub access_log: AccessLog,
    /// OpenTelemetry tracing by Envoy; `None`: Envoy traces nothing.
    pub tracing: Option<Tracing>,
    /// The request-body limit, in bytes, of every route without its own; `None`: no limit.
    pub max_body: Option<u32>,
    /// Response compression; `None`: responses pass as the upstream sent them.
    pub compression: Option<Compression>,
    /// Client-side timeouts of every listener; always present (the described defaults).
    pub timeouts: ClientTimeouts,
    /// Per-connection resource limits of every listener; always present (the described
    /// defaults).
    pub limits: ConnectionLimits,
    /// First match wins, in file order. Names unique within the whole file.
    pub routes: Vec<Route>,
}

/// Spec §10 `tracing`: Envoy's OpenTelemetry tracer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracing {
    /// The OTLP/gRPC collector.
    pub collector: HostPort,
    /// Share of requests without a client-sent trace that start a sampled one, in millionths.
    pub sample_per_million: u32,
    /// `service.name` of Envoy's spans (the gateway's name when the key is absent).
    pub service_name: String,
}

/// How the client's address is found (spec §8 `client_ip`): per-IP limits, IP lists and the
/// access log all use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp {
    /// Proxies in front of Envoy whose `x-forwarded-for` entries are trusted: with `n`, the
    /// client is the `n`th entry from the right; 0 is the TCP peer.
    pub trusted_hops: u32,
}

/// An IPv4 or IPv6 network: an address with no bits set past `prefix_len`. IPv4 networks
/// written in IPv4-mapped IPv6 form (`::ffff:10.0.0.0/104`) are held as IPv4 (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    /// At most 32 for IPv4, 128 for IPv6.
    pub prefix_len: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// How long Envoy waits on a client. Zero turns a timeout off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// Until the request's headers are complete.
    pub request_headers: Duration,
    /// Until the whole request has been received.
    pub request: Duration,
    /// A stream with no activity in either direction.
    pub stream_idle: Duration,
    /// A connection with no active stream.
    pub idle: Duration,
}

/// What one client connection may hold in Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Bytes Envoy buffers per connection (read and write) before it applies back-pressure.
    pub buffer: u32,
    /// HTTP/2 streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of one stream, in bytes.
    pub initial_stream_window: u32,
    /// HTTP/2 flow-control window of the whole connection, in bytes.
    pub initial_connection_window: u32,
}

/// Response compression of every route of a gateway (spec §8).
#[derive(Debug, Clone, PartialEq)]
pub struct Compression {
    /// In order of preference; never empty, no duplicates.
    pub algorithms: Vec<CompressionAlgorithm>,
    /// Responses that declare a smaller `content-length` pass unchanged.
    pub min_bytes: u32,
    /// Lower-case `type/subtype` media types, without parameters; never empty.
    pub content_types: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionAlgorithm {
    Zstd,
    Brotli,
    Gzip,
}

impl CompressionAlgorithm {
    /// The `Accept-Encoding` / `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            CompressionAlgorithm::Zstd => "zstd",
            CompressionAlgorithm::Brotli => "br",
            CompressionAlgorithm::Gzip => "gzip",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    /// IP literal.
    pub address: String,
    pub port: u16,
    pub tls: Option<ListenerTls>,
    /// Every request gets a 301 to the gateway's one TLS listener (only on a plain listener).
    pub https_redirect: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    /// Absolute paths; read by the loader.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Client certificates the handshake asks for; `None`: none is asked for.
    pub client_certs: Option<ClientCerts>,
}

/// `client_ca_file` and `client_cert` of a TLS listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCerts {
    /// Absolute path of the PEM CA file; read by the loader.
    pub ca_file: PathBuf,
    /// `client_cert: required`: no handshake without a valid certificate. `optional` lets a
    /// client without one through; a presented certificate is verified either way.
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cors {
    /// Exact origins, or `*`.
    pub origins: Vec<String>,
    pub methods: Vec<String>,
    pub headers: Vec<String>,
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Json,
    Text,
    Off,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    /// Only with a forwarding action.
    pub rewrite: Option<Rewrite>,
    pub auth: RouteAuth,
    pub require: Option<Require>,
    /// Client networks admitted to the route (`allow_ips`); empty: every address.
    pub allow_ips: Vec<Cidr>,
    /// Client networks refused (`deny_ips`), also when `allow_ips` admits them.
    pub deny_ips: Vec<Cidr>,
    pub rate_limit: RouteRateLimit,
    /// Zero: no timeout (long-lived streams).
    pub timeout: Option<Duration>,
    pub retries: Option<Retries>,
    /// Overrides the gateway's `max_body` for this route, in bytes.
    pub max_body: Option<u32>,
    /// `Upgrade: websocket` requests are forwarded (only on forwarding routes, without
    /// `max_body`).
    pub websocket: bool,
    pub request_headers: HeaderChanges,
    pub response_headers: HeaderChanges,
    /// Only with a forwarding action.
    pub mirror: Option<Mirror>,
    /// Only with a forwarding action whose services all use `ring_hash` or `maglev`.
    pub affinity: Option<Affinity>,
    /// `GET`/`HEAD` answers kept by Envoy (only on forwarding routes without `websocket`).
    pub cache: Option<Cache>,
    /// Only with a forwarding action.
    pub transform: Option<Transform>,
    /// `grpc`: Envoy's gRPC-JSON transcoder and/or gRPC-Web filter on this route (only on
    /// forwarding routes whose services all speak HTTP/2).
    pub grpc: Option<Grpc>,
}

/// `grpc` on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grpc {
    /// REST/JSON requests mapped to gRPC methods by their `google.api.http` annotations.
    pub transcode: Option<Transcode>,
    /// gRPC-Web (`application/grpc-web*`) requests turned into gRPC.
    pub web: bool,
}

/// `grpc.transcode`: the descriptor set (read by the loader into `Loaded::files`) and the
/// services of it the route transcodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcode {
    pub descriptor: PathBuf,
    /// Fully qualified (`package.Service`); each is in the descriptor set. Never empty.
    pub services: Vec<String>,
}

/// `cache`: Envoy keeps cacheable `GET`/`HEAD` answers of the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cache {
    /// The longest an answer is replayed; an upstream's shorter `max-age` wins.
    pub ttl: Duration,
}

/// `transform` (spec §9): body edits done by transform-service.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transform {
    /// `request.json`.
    pub request: Option<JsonEdits>,
    /// `response.json`.
    pub response: Option<JsonEdits>,
    /// `response.xml`.
    pub xml: bool,
}

impl Transform {
    /// Whether responses go through transform-service.
    pub fn edits_responses(&self) -> bool {
        self.response.is_some() || self.xml
    }
}

/// One direction's JSON edits: pointers as written (checked RFC 6901 pointers), values as
/// compact JSON text that keeps the YAML's member order and number text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JsonEdits {
    pub remove: Vec<String>,
    /// (pointer, JSON text), in file order.
    pub set: Vec<(String, String)>,
    /// (from, to), in file order.
    pub rename: Vec<(String, String)>,
    pub envelope: Option<Envelope>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub field: String,
    /// (member name, JSON text), in file order.
    pub with: Vec<(String, String)>,
}

/// `mirror`: a share of the route's requests is also sent to another service, whose answers
/// are discarded.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub service: String,
    /// The share mirrored, in millionths (`10%` is 100_000, `0.5%` is 5_000).
    pub per_million: u32,
}

/// `affinity`: what the consistent-hash balancer hashes to keep a client on one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Affinity {
    /// The value of this request header (lower case).
    Header(String),
    /// The value of this cookie; Envoy sets it when the request has none, for `ttl` (zero: a
    /// session cookie).
    Cookie { name: String, ttl: Duration },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// Upper-case HTTP methods; empty = any.
    pub methods: Vec<String>,
    pub headers: Vec<ValueMatch>,
    pub query: Vec<ValueMatch>,
    /// Host names (`api.example.com`, `*.example.com`); empty = any. A port in the request's
    /// Host header is ignored.
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    /// `path`: the whole path (without query) equals this.
    Exact(String),
    /// `prefix`: segment-aware, `/api` matches `/api` and `/api/x` but not `/apix`
    /// (a prefix ending in `/` is a plain string prefix).
    Prefix(String),
    /// `regex`: RE2, must match the whole path.
    Regex(String),
}

/// A header or query parameter condition: `{name: value}` or `{name: {regex: …}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueMatch {
    /// Header names are lower-case; query names are as written.
    pub name: String,
    pub value: StringMatch,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StringMatch {
    Exact(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// `service:` names a key of `Config::services`.
    Service(String),
    /// `services:` weighted split, in file order; weights ≥ 1; every name exists.
    Weighted(Vec<(String, u32)>),
    /// `respond:` answered by Envoy itself.
    Respond(Respond),
    /// `compose:` one JSON answer built by Envoy from several upstream calls.
    Compose(Vec<ComposePart>),
}

/// The Envoy cluster a `compose` route's router would forward to: it has no endpoints, so a
/// request the route's script did not answer is never forwarded anywhere. No service or gateway
/// may take the name.
pub const COMPOSE_FALLBACK_CLUSTER: &str = "gateway-compose-fallback";

/// One part of a `compose` route: its member name in the answer and the call that fills it.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposePart {
    /// Letters, digits, `_` and `-`, never `errors` (the answer's own member); file order.
    pub name: String,
    /// A key of `Config::services`.
    pub service: String,
    /// An absolute path, query string included when written (`/orders?limit=5`): printable
    /// ASCII without spaces or `#`, not starting with `//`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Respond {
    /// 200..=599.
    pub status: u16,
    pub body: RespondBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RespondBody {
    /// `json:` any YAML value, sent as compact JSON with `content-type: application/json`.
    Json(serde_json::Value),
    /// `body:` sent as-is with `content-type: text/plain`.
    Text(String),
    /// Neither given.
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    /// Replaces the matched `prefix` (only valid on `prefix` routes).
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteAuth {
    /// `auth: none`, written explicitly.
    None,
    /// Provider names (keys of `auth.jwt`, `auth.api_keys` or `auth.mtls`); any one must accept.
    /// Never empty.
    Providers(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Require {
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteRateLimit {
    /// Key absent: the client's plan on authenticated routes, `anonymous` on `auth: none` routes,
    /// nothing when `rate_limits` (or the relevant part of it) is not configured.
    Default,
    /// `rate_limit: none`.
    None,
    /// `rate_limit: plan` or a list; every listed limit applies.
    Limits(Vec<LimitRef>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum LimitRef {
    Plan,
    Limit { rate: Rate, per: Per },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Per {
    Client,
    /// Alias of `Client` for JWT.
    User,
    Ip,
    Route,
    Tenant,
    /// Lower-case header name.
    Header(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    /// Retries after the first try.
    pub attempts: u32,
    /// Envoy `retry_on` conditions (`5xx`, `gateway-error`, `reset`, `connect-failure`,
    /// `retriable-4xx`, `refused-stream`, …) and HTTP status codes.
    pub on: Vec<RetryOn>,
    pub per_try_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RetryOn {
    Condition(String),
    Status(u16),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderChanges {
    /// Lower-case names → values, in file order; replaces any existing value.
    pub set: Vec<(String, String)>,
    /// Lower-case names.
    pub remove: Vec<String>,
}
