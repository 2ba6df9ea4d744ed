//! `authz-service token`: mints a development JWT, for trying the gateway by hand.

use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unsupported algorithm {0:?}")]
    Algorithm(String),
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("bad key: {0}")]
    Key(String),
    #[error("environment variable {0} is not set")]
    MissingSecret(String),
    #[error("HS* needs --secret-env, other algorithms need --key")]
    KeySource,
    #[error("bad --claim {0:?}: expected name=value")]
    Claim(String),
}

/// What goes into the token.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub algorithm: String,
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    pub kid: Option<String>,
    pub ttl_secs: u64,
    /// `name=value`; a value that parses as JSON is used as JSON, otherwise as a string.
    pub claims: Vec<String>,
    pub now: u64,
}

pub enum KeySource<'a> {
    PemFile(&'a Path),
    /// HS* secret bytes.
    Secret(Vec<u8>),
}

pub fn mint(spec: &TokenSpec, key: KeySource<'_>) -> Result<String, TokenError> {
    let alg: Algorithm = spec
        .algorithm
        .parse()
        .map_err(|_| TokenError::Algorithm(spec.algorithm.clone()))?;
    let key = match (key, alg) {
        (KeySource::Secret(s), Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
            EncodingKey::from_secret(&s)
        }
        (KeySource::PemFile(p), _) => {
            let pem = std::fs::read(p).map_err(|e| TokenError::Read(p.display().to_string(), e))?;
            let k = match alg {
                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                    return Err(TokenError::KeySource)
                }
                _ => EncodingKey::from_rsa_pem(&pem),
            };
            k.map_err(|e| TokenError::Key(e.to_string()))?
        }
        _ => return Err(TokenError::KeySource),
    };
    let mut claims = Map::new();
    claims.insert("iss".into(), spec.issuer.clone().into());
    claims.insert("sub".into(), spec.subject.clone().into());
    match spec.audiences.as_slice() {
        [] => {}
        [one] => {
            claims.insert("aud".into(), one.clone().into());
        }
        many => {
            claims.insert("aud".into(), many.to_vec().into());
        }
    }
    claims.insert("iat".into(), spec.now.into());
    claims.insert("exp".into(), spec.now.saturating_add(spec.ttl_secs).into());
    for c in &spec.claims {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| TokenError::Claim(c.clone()))?;
        let v = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
        claims.insert(k.to_string(), v);
    }
    let mut header = Header::new(alg);
    header.kid = spec.kid.clone();
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| TokenError::Key(e.to_string()))
}
