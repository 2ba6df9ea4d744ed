//! `auth` and each route's `auth`/`require` → the `AuthPolicy` authz-service enforces.
//!
//! Key files (JWKS documents, API-key files) travel inline: the loader already read them into
//! `Loaded::files` and watches them, so an edit to a key file re-publishes the policy exactly like
//! an edit to `gateway.yaml`.

use std::collections::BTreeSet;
use std::path::Path;

use proto::authz::{
    jwt_provider::Keys, ApiKeyProvider, AuthPolicy, CertField, CertPlan, ClaimHeader, JwtProvider,
    MtlsProvider, RoutePolicy,
};

use proto::pb::envoy::config::core::v3::{grpc_service, ApiVersion, GrpcService};
use proto::pb::envoy::extensions::filters::http::ext_authz::v3::{
    ext_authz, ext_authz_per_route, CheckSettings, ExtAuthz, ExtAuthzPerRoute,
};
use proto::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, ListStringMatcher, StringMatcher,
};
use proto::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use proto::pb::google::protobuf;

use super::TranslateError;
use config::{JwtKeys, RouteAuth};

/// Identity headers authz-service sets for every provider kind (spec §4).
pub use proto::authz::header::CLIENT_HEADERS;

/// The policy for a loaded config (key files are read by the loader and shipped inline).
pub fn policy(loaded: &config::Loaded) -> Result<AuthPolicy, TranslateError> {
    let cfg = &loaded.config;
    let mut out = AuthPolicy {
        default_plan: cfg
            .rate_limits
            .as_ref()
            .and_then(|r| r.default_plan.clone())
            .unwrap_or_default(),
        // BTreeMap keys: sorted.
        plans: cfg
            .rate_limits
            .as_ref()
            .map(|r| r.plans.keys().cloned().collect())
            .unwrap_or_default(),
        public_strips_authorization: strips_authorization(cfg),
        ..Default::default()
    };
    if let Some(auth) = &cfg.auth {
        // BTreeMap iteration: sorted by provider name.
        for (name, p) in &auth.jwt {
            let (keys, jwks_path) = match &p.keys {
                JwtKeys::File(path) => (
                    Keys::Jwks(file(loaded, "jwks_file", path)?.to_vec()),
                    path.display().to_string(),
                ),
                JwtKeys::Url(url) => (Keys::JwksUrl(url.clone()), String::new()),
                JwtKeys::SecretEnv(var) => (Keys::SecretEnv(var.clone()), String::new()),
            };
            out.jwt.push(JwtProvider {
                name: name.clone(),
                issuer: p.issuer.clone(),
                audiences: p.audiences.clone(),
                algorithms: p
                    .algorithms
                    .iter()
                    .map(|a| a.as_str().to_string())
                    .collect(),
                keys: Some(keys),
                clock_skew_ms: u64::try_from(p.clock_skew.as_millis()).unwrap_or(u64::MAX),
                headers: p
                    .headers
                    .iter()
                    .map(|(header, claim)| ClaimHeader {
                        header: header.clone(),
                        claim: claim.clone(),
                    })
                    .collect(),
                client_claim: p.client_claim.clone(),
                plan_claim: p.plan_claim.clone(),
                forward_token: p.forward_token,
                jwks_path,
            });
        }
        for (name, p) in &auth.api_keys {
            out.api_keys.push(ApiKeyProvider {
                name: name.clone(),
                header: p.header.clone(),
                query: p.query.clone().unwrap_or_default(),
                keys_file: file(loaded, "keys_file", &p.keys_file)?.to_vec(),
                keys_path: p.keys_file.display().to_string(),
            });
        }
        for (name, p) in &auth.mtls {
            let mut plans: Vec<CertPlan> = p
                .plans
                .iter()
                .map(|(client_id, plan)| CertPlan {
                    client_id: client_id.clone(),
                    plan: plan.clone(),
                })
                .collect();
            plans.sort_by(|a, b| a.client_id.cmp(&b.client_id));
            out.mtls.push(MtlsProvider {
                name: name.clone(),
                client_id: match p.client_id {
                    config::CertField::Subject => CertField::Subject,
                    config::CertField::UriSan => CertField::UriSan,
                    config::CertField::DnsSan => CertField::DnsSan,
                } as i32,
                plans,
                default_plan: p.default_plan.clone().unwrap_or_default(),
            });
        }
    }
    out.identity_headers = identity_headers(cfg);
    out.credential_headers = credential_headers(cfg);
    out.credential_query = credential_query(cfg);
    for gw in cfg.gateways.values() {
        for r in &gw.routes {
            let (public, providers) = match &r.auth {
                RouteAuth::None => (true, Vec::new()),
                RouteAuth::Providers(p) => (false, p.clone()),
            };
            let require = r.require.clone().unwrap_or_default();
            out.routes.push(RoutePolicy {
                name: r.name.clone(),
                public,
                providers,
                require_roles: require.roles,
                require_scopes: require.scopes,
                limits: cfg
                    .rate_limits
                    .as_ref()
                    .map(|l| crate::ratelimit::authz_rules(l, r))
                    .unwrap_or_default(),
            });
        }
    }
    out.routes.sort_by(|a, b| a.name.cmp(&b.name));
    out.rate_limits = cfg
        .rate_limits
        .as_ref()
        .filter(|l| l.counted_by == config::CountedBy::AuthzService)
        .map(|_| crate::ratelimit::policy(cfg));
    Ok(out)
}

/// Every header that carries identity upstream, sorted: all providers' claim headers plus
/// [`CLIENT_HEADERS`]. Client-sent copies must never reach an upstream (spec §4), on any route
/// and whether or not authz-service answers: Envoy removes them from every request before any
/// filter ([`early_removed_headers`]), and on routes with `auth` ext_authz then sets the verified
/// ones. (Route-level removal would be too late and too broad: it runs in the router, after
/// ext_authz, so it would strip the verified identity too, and under `on_error: allow` every
/// filter before it, the rate-limit descriptors included, would read the client's values.)
pub fn identity_headers(cfg: &config::Config) -> Vec<String> {
    let mut identity: BTreeSet<String> = CLIENT_HEADERS.iter().map(|h| h.to_string()).collect();
    if let Some(auth) = &cfg.auth {
        for p in auth.jwt.values() {
            identity.extend(p.headers.iter().map(|(h, _)| h.clone()));
        }
    }
    identity.into_iter().collect()
}

/// What Envoy removes from every client request before routing and before any filter (the
/// HCM's early header mutation), sorted: the [`identity_headers`], so the only identity an
/// upstream or a rate-limit descriptor ever sees is what authz-service set, and Envoy's
/// fail-open marker [`FAILURE_MODE_ALLOWED`], so that only Envoy can say a request was let
/// through unauthenticated. Every gateway removes them, with or without `auth`: an upstream
/// behind it may trust `x-client-id` and friends all the same.
///
/// [`FAILURE_MODE_ALLOWED`]: proto::authz::header::FAILURE_MODE_ALLOWED
pub fn early_removed_headers(cfg: &config::Config) -> Vec<String> {
    let mut out = identity_headers(cfg);
    out.push(proto::authz::header::FAILURE_MODE_ALLOWED.to_string());
    out.sort();
    out.dedup();
    out
}

/// What `route` removes in the router, after every filter has read the request: the
/// credentials, so that none reaches an upstream (spec §4), also when authz-service failed under
/// `on_error: allow`. That is every API-key header ([`credential_headers`]) and `authorization`
/// unless a provider that may accept the request forwards tokens: on `auth: none` routes
/// whenever the gateway owns bearer tokens ([`strips_authorization`]), on other routes when none
/// of the route's JWT providers sets `forward_token`. (authz-service removes the same on every
/// allow, and `authorization` also when the provider that accepted the request does not forward
/// tokens, which only it knows.) Query keys are removed by a filter ([`credential_query`]).
pub fn route_credentials(cfg: &config::Config, route: &config::Route) -> Vec<String> {
    let mut out = credential_headers(cfg);
    let authorization = match &route.auth {
        RouteAuth::None => strips_authorization(cfg),
        RouteAuth::Providers(names) => names.iter().all(|n| {
            cfg.auth
                .as_ref()
                .and_then(|a| a.jwt.get(n))
                .is_none_or(|p| !p.forward_token)
        }),
    };
    if authorization && !out.iter().any(|h| h == proto::authz::header::AUTHORIZATION) {
        out.push(proto::authz::header::AUTHORIZATION.to_string());
    }
    out
}

/// Every API-key provider's header, sorted, without the identity headers (already listed by
/// [`identity_headers`]).
pub fn credential_headers(cfg: &config::Config) -> Vec<String> {
    let identity = identity_headers(cfg);
    let headers: BTreeSet<String> = cfg
        .auth
        .iter()
        .flat_map(|a| a.api_keys.values().map(|k| k.header.clone()))
        .filter(|h| !identity.contains(h))
        .collect();
    headers.into_iter().collect()
}

/// Every API-key provider's query parameter, sorted. None may reach an upstream (spec §4): on
/// authenticated routes authz-service removes them; a filter after ext_authz removes them from
/// every request, so `auth: none` routes (which never reach authz-service) lose them too.
pub fn credential_query(cfg: &config::Config) -> Vec<String> {
    let names: BTreeSet<String> = cfg
        .auth
        .iter()
        .flat_map(|a| a.api_keys.values().filter_map(|k| k.query.clone()))
        .collect();
    names.into_iter().collect()
}

/// Whether `auth: none` routes remove a client's `Authorization` header too, as authenticated
/// routes do (spec §4): whenever the gateway authenticates (some JWT or API-key provider is
/// configured), unless a JWT provider sets `forward_token: true` (the user lets upstreams see
/// tokens). A gateway without providers does no authentication and leaves the header to the
/// upstream, which may use it for its own. authz-service receives the answer in its policy.
pub fn strips_authorization(cfg: &config::Config) -> bool {
    cfg.auth.as_ref().is_some_and(|a| {
        (!a.jwt.is_empty() || !a.api_keys.is_empty()) && a.jwt.values().all(|p| !p.forward_token)
    })
}

// ---- The Envoy side: filter, cluster and per-route settings --------------------------------

/// Envoy's ext_authz HTTP filter name; also the dynamic-metadata namespace of what
/// authz-service returns (`proto::authz::metadata`).
pub const FILTER: &str = proto::authz::EXT_AUTHZ_FILTER;
/// The cluster Envoy reaches authz-service through (the service's node group name, which no user
/// service may take).
pub const CLUSTER: &str = proto::group::AUTHZ;
/// The context extension naming the route; authz-service looks the route's rules up by it.
pub const ROUTE_EXTENSION: &str = proto::authz::ROUTE_EXTENSION;
pub const FILTER_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
pub const PER_ROUTE_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";

/// True when some route of `gw` requires authentication, so its Envoys need the filter and the
/// cluster.
pub fn gateway_uses(gw: &config::Gateway) -> bool {
    gw.routes
        .iter()
        .any(|r| matches!(r.auth, RouteAuth::Providers(_)))
}

/// The HTTP filter: the service's cluster, its timeout and `on_error`.
pub fn http_filter(auth: &config::Auth) -> ExtAuthz {
    let timeout = auth.service.timeout;
    ExtAuthz {
        services: Some(ext_authz::Services::GrpcService(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: CLUSTER.into(),
                    ..Default::default()
                },
            )),
            timeout: Some(protobuf::Duration {
                seconds: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
                nanos: timeout.subsec_nanos() as i32,
            }),
            ..Default::default()
        })),
        transport_api_version: ApiVersion::V3 as i32,
        // `on_error: allow` fails open; `deny` answers 503 when the service is unreachable, late
        // or returns an error (authz-service itself never returns one for a request).
        failure_mode_allow: auth.service.on_error == config::OnError::Allow,
        // Under fail-open, tell the upstream the request was not authenticated
        // (`x-envoy-auth-failure-mode-allowed: true`); a client's copy was removed before any
        // filter ([`early_removed_headers`]).
        failure_mode_allow_header_add: auth.service.on_error == config::OnError::Allow,
        status_on_error: Some(HttpStatus {
            code: StatusCode::ServiceUnavailable as i32,
        }),
        // Header values as bytes: a non-UTF-8 value then reaches the service intact (and is
        // denied there) instead of breaking the request's encoding.
        encode_raw_headers: true,
        // Envoy refuses header mutations that are not valid HTTP.
        validate_mutations: true,
        allowed_headers: Some(ListStringMatcher {
            patterns: check_headers(auth)
                .into_iter()
                .map(|h| StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(h)),
                    ignore_case: true,
                })
                .collect(),
        }),
        ..Default::default()
    }
}

/// The request headers Envoy copies into each Check, sorted: the ones authz-service reads
/// (`authorization`, every API-key provider's header, `x-request-id` for its log lines), and no
/// other. Envoy's default is every header, cookies and user agents included, which it would
/// encode and the service decode on every request for nothing. A header left out cannot change
/// a decision: the policy never looks at one.
pub fn check_headers(auth: &config::Auth) -> Vec<String> {
    let mut out: BTreeSet<String> = auth
        .api_keys
        .values()
        .map(|k| k.header.to_ascii_lowercase())
        .collect();
    out.insert(proto::authz::header::AUTHORIZATION.to_string());
    out.insert(proto::authz::header::REQUEST_ID.to_string());
    out.into_iter().collect()
}

/// The route's per-filter config: `auth: none` disables the filter; otherwise the route's name
/// travels in the Check request's context extensions.
pub fn per_route(route: &config::Route) -> ExtAuthzPerRoute {
    ExtAuthzPerRoute {
        r#override: Some(match route.auth {
            RouteAuth::None => ext_authz_per_route::Override::Disabled(true),
            // A single-entry map encodes deterministically.
            RouteAuth::Providers(_) => {
                ext_authz_per_route::Override::CheckSettings(CheckSettings {
                    context_extensions: [(ROUTE_EXTENSION.to_string(), route.name.clone())]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                })
            }
        }),
    }
}

/// The service authz-service is reached as (gRPC over HTTP/2).
pub fn service(auth: &config::Auth) -> config::Service {
    config::Service {
        tls: auth.service.tls.clone(),
        ..super::policy_service(&auth.service.address)
    }
}

fn file<'a>(
    loaded: &'a config::Loaded,
    what: &'static str,
    path: &Path,
) -> Result<&'a [u8], TranslateError> {
    loaded
        .files
        .get(path)
        .map(Vec::as_slice)
        .ok_or_else(|| TranslateError::MissingFile {
            what,
            path: path.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use prost::Message;

    use super::*;

    const FILE: &str = "/etc/gw/gateway.yaml";

    const YAML: &str = r#"
version: 1
services:
  users: { endpoints: [127.0.0.1:3001] }
auth:
  jwt:
    main:
      issuer: https://id.example.com
      audiences: [orders-api]
      algorithms: [RS256, ES256]
      jwks_file: keys/jwks.json
      clock_skew: 5s
      headers: { x-user-id: sub, x-tenant-id: /org/tenant }
      forward_token: true
    hs: { issuer: https://hs.example.com, algorithms: [HS256], secret_env: JWT_SECRET }
    remote: { issuer: https://r.example.com, algorithms: [EdDSA], jwks_url: "https://r.example.com/jwks" }
  api_keys:
    partners: { header: x-partner-key, query: api_key, keys_file: keys/api-keys.yaml }
rate_limits:
  plans: { free: 10/minute }
  default_plan: free
gateways:
  edge:
    listeners: [{ name: http, port: 8080 }]
    routes:
      - { name: zeta, match: { prefix: /z }, service: users, auth: [partners, main], require: { roles: [admin], scopes: [read] } }
      - { name: alpha, match: { prefix: /a }, service: users, auth: none }
"#;

    fn load(yaml: &str) -> config::Loaded {
        let config = config::parse(yaml, Path::new(FILE))
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        let mut files = BTreeMap::new();
        if let Some(auth) = &config.auth {
            for p in auth.jwt.values() {
                if let JwtKeys::File(f) = &p.keys {
                    files.insert(
                        f.clone(),
                        format!("contents of {}", f.display()).into_bytes(),
                    );
                }
            }
            for p in auth.api_keys.values() {
                files.insert(
                    p.keys_file.clone(),
                    format!("contents of {}", p.keys_file.display()).into_bytes(),
                );
            }
        }
        config::Loaded {
            path: PathBuf::from(FILE),
            config,
            files,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn the_check_carries_only_the_headers_the_service_reads() {
        let loaded = load(YAML);
        let auth = loaded.config.auth.as_ref().unwrap();
        assert_eq!(
            check_headers(auth),
            ["authorization", "x-partner-key", "x-request-id"]
        );
        let allowed = http_filter(auth).allowed_headers.expect("allowed_headers");
        let names: Vec<(&MatchPattern, bool)> = allowed
            .patterns
            .iter()
            .map(|m| (m.match_pattern.as_ref().unwrap(), m.ignore_case))
            .collect();
        assert_eq!(
            names,
            [
                (&MatchPattern::Exact("authorization".into()), true),
                (&MatchPattern::Exact("x-partner-key".into()), true),
                (&MatchPattern::Exact("x-request-id".into()), true),
            ]
        );
    }

    #[test]
    fn providers_routes_and_files_are_translated() {
        let p = policy(&load(YAML)).unwrap();
        let names: Vec<&str> = p.jwt.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["hs", "main", "remote"]);
        let main = &p.jwt[1];
        assert_eq!(main.issuer, "https://id.example.com");
        assert_eq!(main.audiences, ["orders-api"]);
        assert_eq!(main.algorithms, ["RS256", "ES256"]);
        assert_eq!(
            main.keys,
            Some(Keys::Jwks(b"contents of /etc/gw/keys/jwks.json".to_vec()))
        );
        assert_eq!(main.jwks_path, "/etc/gw/keys/jwks.json");
        assert_eq!(main.clock_skew_ms, 5_000);
        assert_eq!(
            main.headers,
            [
                ClaimHeader {
                    header: "x-user-id".into(),
                    claim: "sub".into()
                },
                ClaimHeader {
                    header: "x-tenant-id".into(),
                    claim: "/org/tenant".into()
                },
            ]
        );
        assert_eq!(
            (main.client_claim.as_str(), main.plan_claim.as_str()),
            ("sub", "plan")
        );
        assert!(main.forward_token);
        assert!(
            !p.public_strips_authorization,
            "a provider forwards tokens, so auth: none routes keep Authorization"
        );
        assert_eq!(p.jwt[0].keys, Some(Keys::SecretEnv("JWT_SECRET".into())));
        assert_eq!(p.jwt[0].clock_skew_ms, 30_000);
        assert!(!p.jwt[0].forward_token);
        assert_eq!(
            p.jwt[2].keys,
            Some(Keys::JwksUrl("https://r.example.com/jwks".into()))
        );

        assert_eq!(
            p.api_keys,
            [ApiKeyProvider {
                name: "partners".into(),
                header: "x-partner-key".into(),
                query: "api_key".into(),
                keys_file: b"contents of /etc/gw/keys/api-keys.yaml".to_vec(),
                keys_path: "/etc/gw/keys/api-keys.yaml".into(),
            }]
        );
        assert_eq!(
            p.identity_headers,
            [
                "x-auth-provider",
                "x-client-id",
                "x-client-plan",
                "x-tenant-id",
                "x-user-id"
            ]
        );
        assert_eq!(p.credential_headers, ["x-partner-key"]);
        assert_eq!(p.credential_query, ["api_key"]);
        assert_eq!(
            p.public_remove(),
            ["x-partner-key"],
            "a provider forwards tokens: authorization stays"
        );
        assert_eq!(p.default_plan, "free");
        assert_eq!(p.plans, ["free"]);
        assert_eq!(
            p.routes,
            [
                RoutePolicy {
                    name: "alpha".into(),
                    public: true,
                    ..Default::default()
                },
                RoutePolicy {
                    name: "zeta".into(),
                    public: false,
                    providers: vec!["partners".into(), "main".into()],
                    require_roles: vec!["admin".into()],
                    require_scopes: vec!["read".into()],
                    limits: vec![],
                },
            ]
        );
    }

    #[test]
    fn encoding_is_deterministic_and_round_trips() {
        let a = policy(&load(YAML)).unwrap();
        let b = policy(&load(YAML)).unwrap();
        assert_eq!(a.encode_to_vec(), b.encode_to_vec());
        assert_eq!(AuthPolicy::decode(a.encode_to_vec().as_slice()).unwrap(), a);
    }

    #[test]
    fn a_config_without_auth_still_gets_a_policy_with_its_routes() {
        let p = policy(&load(
            "version: 1\ngateways:\n  edge:\n    listeners: [{ name: http, port: 8080 }]\n    routes:\n      - { name: h, match: { path: /h }, respond: { status: 200 }, auth: none }\n",
        ))
        .unwrap();
        assert!(p.jwt.is_empty() && p.api_keys.is_empty());
        assert_eq!(p.routes.len(), 1);
        assert!(p.routes[0].public);
        assert_eq!(p.identity_headers, CLIENT_HEADERS);
        assert!(p.credential_headers.is_empty() && p.credential_query.is_empty());
    }

    #[test]
    fn envoy_filter_and_per_route_settings() {
        let loaded = load(YAML);
        let auth = loaded.config.auth.as_ref().unwrap();
        let f = http_filter(auth);
        assert!(!f.failure_mode_allow, "on_error defaults to deny");
        assert_eq!(f.status_on_error.map(|s| s.code), Some(503));
        assert!(f.encode_raw_headers && f.validate_mutations);
        let Some(ext_authz::Services::GrpcService(g)) = &f.services else {
            panic!("{f:?}")
        };
        assert_eq!(g.timeout.as_ref().map(|t| t.nanos), Some(200_000_000));
        assert!(matches!(
            &g.target_specifier,
            Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) if e.cluster_name == CLUSTER
        ));
        assert_eq!(service(auth).endpoints[0].to_string(), "127.0.0.1:9001");

        let gw = &loaded.config.gateways["edge"];
        assert!(gateway_uses(gw));
        let by_name = |n: &str| gw.routes.iter().find(|r| r.name == n).unwrap();
        match per_route(by_name("zeta")).r#override {
            Some(ext_authz_per_route::Override::CheckSettings(c)) => {
                assert_eq!(c.context_extensions.len(), 1);
                assert_eq!(c.context_extensions[ROUTE_EXTENSION], "zeta");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            per_route(by_name("alpha")).r#override,
            Some(ext_authz_per_route::Override::Disabled(true))
        );
        assert_eq!(
            identity_headers(&loaded.config),
            policy(&loaded).unwrap().identity_headers
        );
    }

    /// One contract for every route: identity headers and the fail-open marker go before any
    /// filter, credentials after the last one; authz-service's public list is the route's.
    #[test]
    fn identity_goes_first_and_credentials_last_on_every_route() {
        let loaded = load(YAML);
        let cfg = &loaded.config;
        assert_eq!(
            early_removed_headers(cfg),
            [
                "x-auth-provider",
                "x-client-id",
                "x-client-plan",
                "x-envoy-auth-failure-mode-allowed",
                "x-tenant-id",
                "x-user-id"
            ]
        );
        let route = |n: &str| {
            cfg.gateways["edge"]
                .routes
                .iter()
                .find(|r| r.name == n)
                .unwrap()
        };
        // `main` forwards tokens and may accept on both routes: Authorization stays.
        assert_eq!(route_credentials(cfg, route("zeta")), ["x-partner-key"]);
        assert_eq!(route_credentials(cfg, route("alpha")), ["x-partner-key"]);
        assert_eq!(
            policy(&loaded).unwrap().public_remove(),
            route_credentials(cfg, route("alpha"))
        );

        // Nobody forwards tokens: Authorization goes on every route, authenticated or not, so
        // it does not reach the upstream when authz-service fails open either.
        let loaded = load(&YAML.replace("forward_token: true", "forward_token: false"));
        let cfg = &loaded.config;
        let route = |n: &str| {
            cfg.gateways["edge"]
                .routes
                .iter()
                .find(|r| r.name == n)
                .unwrap()
        };
        for r in ["zeta", "alpha"] {
            assert_eq!(
                route_credentials(cfg, route(r)),
                ["x-partner-key", "authorization"],
                "{r}"
            );
        }
        assert_eq!(
            policy(&loaded).unwrap().public_remove(),
            route_credentials(cfg, route("alpha"))
        );
        // A provider that forwards tokens but is not on the route does not keep them there.
        let other = YAML.replace("auth: [partners, main]", "auth: [partners, hs]");
        let loaded = load(&other);
        let zeta = loaded.config.gateways["edge"]
            .routes
            .iter()
            .find(|r| r.name == "zeta")
            .unwrap();
        assert_eq!(
            route_credentials(&loaded.config, zeta),
            ["x-partner-key", "authorization"]
        );
    }

    #[test]
    fn fail_open_marks_the_request() {
        let loaded = load(YAML);
        let f = http_filter(loaded.config.auth.as_ref().unwrap());
        assert!(!f.failure_mode_allow && !f.failure_mode_allow_header_add);
        let open = load(&YAML.replace(
            "auth:\n  jwt:",
            "auth:\n  service: { address: 127.0.0.1:9001, on_error: allow }\n  jwt:",
        ));
        let f = http_filter(open.config.auth.as_ref().unwrap());
        assert!(f.failure_mode_allow && f.failure_mode_allow_header_add);
    }

    #[test]
    fn mtls_providers_are_in_the_policy() {
        let yaml = "version: 1\nauth:\n  mtls:\n    m: { client_id: dns_san, plans: { z.example: pro, a.example: free }, default_plan: pro }\n    s: {}\ngateways:\n  edge:\n    listeners: [{ name: https, port: 8443, tls: { cert_file: c, key_file: k, client_ca_file: ca } }]\n    routes:\n      - { name: r, match: { prefix: / }, respond: { status: 200 }, auth: [m, s] }\n";
        let p = policy(&load(yaml)).unwrap();
        let names: Vec<&str> = p.mtls.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["m", "s"]);
        assert_eq!(p.mtls[0].client_id, CertField::DnsSan as i32);
        let plans: Vec<(&str, &str)> = p.mtls[0]
            .plans
            .iter()
            .map(|c| (c.client_id.as_str(), c.plan.as_str()))
            .collect();
        assert_eq!(
            plans,
            [("a.example", "free"), ("z.example", "pro")],
            "sorted"
        );
        assert_eq!(p.mtls[0].default_plan, "pro");
        assert_eq!(p.mtls[1].client_id, CertField::Subject as i32);
        assert_eq!(p.mtls[1].default_plan, "");
        assert_eq!(p.routes[0].providers, ["m", "s"]);
        assert!(
            p.identity_headers.iter().any(|h| h == "x-client-id"),
            "the identity headers stay the same for certificates"
        );
    }

    #[test]
    fn a_key_file_missing_from_the_load_is_an_error() {
        let mut loaded = load(YAML);
        loaded.files.clear();
        assert!(matches!(
            policy(&loaded),
            Err(TranslateError::MissingFile {
                what: "jwks_file",
                ..
            })
        ));
    }
}
