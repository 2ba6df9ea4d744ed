//! Test and benchmark support: fixture keys, JWKS documents, token minting (including malformed
//! and hostile tokens), policies and Check requests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use authz_service::policy::{Env, Policy};
use authz_service::remote::RemoteJwks;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use proto::authz::{
    jwt_provider::Keys, ApiKeyProvider, AuthPolicy, ClaimHeader, JwtProvider, RoutePolicy,
};
use proto::pb::envoy::service::auth::v3::{attribute_context, AttributeContext, CheckRequest};
use serde_json::{json, Value};

pub const ISS: &str = "https://id.test";
pub const AUD: &str = "orders-api";
pub const SECRET_VAR: &str = "AUTHZ_TEST_HS_SECRET";
pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-only";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The private key of a fixture, for `alg`.
pub fn signing_key(name: &str, alg: Algorithm) -> EncodingKey {
    let pem = fixture(name);
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    }
}

/// The public JWK of a fixture key, with `kid` and (optionally) `alg`.
pub fn jwk(name: &str, alg: Algorithm, kid: Option<&str>, with_alg: bool) -> Value {
    let key = signing_key(name, alg);
    let mut j = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
    let o = j.as_object_mut().unwrap();
    if !with_alg {
        o.remove("alg");
    }
    if let Some(kid) = kid {
        o.insert("kid".into(), kid.into());
    }
    o.insert("use".into(), "sig".into());
    j
}

pub fn jwks(keys: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

/// Standard claims valid for an hour.
pub fn claims(extra: Value) -> Value {
    let now = now();
    let mut c = json!({ "iss": ISS, "aud": AUD, "sub": "user-1", "iat": now, "exp": now + 3600 });
    if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                o.remove(k);
            } else {
                o.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

pub fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

/// Signs raw header and payload JSON text as given (so tests can send what no library would).
pub fn sign_raw(header: &str, payload: &str, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

/// A token from a fixture key with a `kid` header.
pub fn token(name: &str, alg: Algorithm, kid: &str, claims: &Value) -> String {
    let header = json!({ "alg": alg_name(alg), "typ": "JWT", "kid": kid }).to_string();
    sign_raw(&header, &claims.to_string(), &signing_key(name, alg), alg)
}

pub fn hs_token(alg: Algorithm, claims: &Value) -> String {
    let header = json!({ "alg": alg_name(alg), "typ": "JWT" }).to_string();
    sign_raw(
        &header,
        &claims.to_string(),
        &EncodingKey::from_secret(SECRET),
        alg,
    )
}

pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unknown",
    }
}

pub fn jwt_provider(name: &str, algs: &[&str], keys: Keys) -> JwtProvider {
    JwtProvider {
        name: name.into(),
        issuer: ISS.into(),
        audiences: vec![AUD.into()],
        algorithms: algs.iter().map(|a| a.to_string()).collect(),
        keys: Some(keys),
        clock_skew_ms: 30_000,
        headers: vec![
            ClaimHeader {
                header: "x-user-id".into(),
                claim: "sub".into(),
            },
            ClaimHeader {
                header: "x-user-roles".into(),
                claim: "roles".into(),
            },
            ClaimHeader {
                header: "x-tenant-id".into(),
                claim: "/org/tenant".into(),
            },
            ClaimHeader {
                header: "x-user-email".into(),
                claim: "https://example.com/email".into(),
            },
        ],
        client_claim: "sub".into(),
        plan_claim: "plan".into(),
        forward_token: false,
        jwks_path: "test-jwks.json".into(),
    }
}

pub fn api_provider(name: &str, keys_file: Vec<u8>) -> ApiKeyProvider {
    ApiKeyProvider {
        name: name.into(),
        header: "x-api-key".into(),
        query: "api_key".into(),
        keys_file,
        keys_path: "test-keys.yaml".into(),
    }
}

pub fn route(name: &str, providers: &[&str]) -> RoutePolicy {
    RoutePolicy {
        name: name.into(),
        public: providers.is_empty(),
        providers: providers.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

pub fn identity_headers(p: &AuthPolicy) -> Vec<String> {
    let mut h: Vec<String> = p
        .jwt
        .iter()
        .flat_map(|j| j.headers.iter().map(|c| c.header.clone()))
        .chain(
            authz_service::IDENTITY_HEADERS
                .iter()
                .map(|s| s.to_string()),
        )
        .collect();
    h.sort();
    h.dedup();
    h
}

/// Environment for compiling policies in tests: the HS secret, and real remote key sets.
#[derive(Default)]
pub struct TestEnv {
    pub vars: HashMap<String, Vec<u8>>,
    pub timing: authz_service::remote::Timing,
}

impl TestEnv {
    pub fn new() -> Self {
        let mut vars = HashMap::new();
        vars.insert(SECRET_VAR.to_string(), SECRET.to_vec());
        Self {
            vars,
            timing: Default::default(),
        }
    }
}

impl Env for TestEnv {
    fn var(&self, name: &str) -> Option<Vec<u8>> {
        self.vars.get(name).cloned()
    }
    fn remote(&mut self, url: &str, algorithms: &[Algorithm]) -> Arc<RemoteJwks> {
        RemoteJwks::spawn(
            url.to_string(),
            algorithms.to_vec(),
            self.timing,
            Box::new(|_| {}),
        )
    }
}

pub fn compile(p: &AuthPolicy) -> Policy {
    Policy::compile(p, &mut TestEnv::new()).unwrap_or_else(|e| panic!("policy: {e}"))
}

/// A Check request as Envoy sends it.
pub fn check_request(route: Option<&str>, headers: &[(&str, &str)], path: &str) -> CheckRequest {
    let mut ctx = HashMap::new();
    if let Some(r) = route {
        ctx.insert("route".to_string(), r.to_string());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            context_extensions: ctx,
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
