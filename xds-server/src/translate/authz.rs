//! `auth` and each route's `auth`/`require` → the `AuthPolicy` authz-service enforces.
//!
//! Key files (JWKS documents, API-key files) travel inline: the loader already read them into
//! `Loaded::files` and watches them, so an edit to a key file re-publishes the policy exactly like
//! an edit to `gateway.yaml`.

use std::collections::BTreeSet;
use std::path::Path;

use proto::authz::{
    jwt_provider::Keys, ApiKeyProvider, AuthPolicy, ClaimHeader, JwtProvider, RoutePolicy,
};

use super::TranslateError;
use crate::config::{self, JwtKeys, RouteAuth};

/// Identity headers authz-service sets for every provider kind (spec §4).
pub const CLIENT_HEADERS: [&str; 3] = ["x-auth-provider", "x-client-id", "x-client-plan"];

/// The policy for a loaded config (key files are read by the loader and shipped inline).
pub fn policy(loaded: &config::Loaded) -> Result<AuthPolicy, TranslateError> {
    let cfg = &loaded.config;
    let mut out = AuthPolicy {
        default_plan: cfg
            .rate_limits
            .as_ref()
            .and_then(|r| r.default_plan.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut identity: BTreeSet<String> = CLIENT_HEADERS.iter().map(|h| h.to_string()).collect();
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
            identity.extend(p.headers.iter().map(|(h, _)| h.clone()));
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
    }
    out.identity_headers = identity.into_iter().collect();
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
            });
        }
    }
    out.routes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
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
        }
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
        assert_eq!(p.default_plan, "free");
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
