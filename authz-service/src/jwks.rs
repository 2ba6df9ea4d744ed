//! JWKS documents → the verification keys a provider may use, checked against its pinned
//! algorithms.
//!
//! A key is usable only when its `kty` (and curve) fits one of the provider's algorithms, its
//! `use` (if any) is `sig`, its `key_ops` (if any) include `verify`, and its `alg` (if any) is one
//! of the provider's algorithms; a key with an `alg` is then used with that algorithm only. Keys
//! that fail these tests are skipped (issuers publish encryption keys and other curves next to
//! their signing keys), but a document without a single usable key, with a repeated `kid`, or
//! with a weak RSA key is an error, so a broken rotation is noticed instead of silently locking
//! everyone out.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// RSA moduli below 2048 bits are refused (NIST SP 800-131A; Wycheproof `rejects1024bitRsaKey`).
const MIN_RSA_BITS: usize = 2048;
/// A JWKS larger than this is refused: real ones are a few KiB.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("not a JWKS document: {0}")]
    Parse(String),
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("kid {0:?} appears more than once")]
    DuplicateKid(String),
    #[error("key {0}: {1}")]
    BadKey(String, String),
    #[error("no key is usable with the configured algorithms ({0})")]
    NoUsableKey(String),
}

/// One usable verification key.
#[derive(Clone)]
pub struct Key {
    /// The algorithms this key may verify (a subset of the provider's).
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one JWKS document.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// Exact `kid` → key: lookups never interpret the `kid` (no paths, no patterns).
    pub by_kid: HashMap<String, Arc<Key>>,
    /// Every usable key, for tokens without a `kid`.
    pub all: Vec<Arc<Key>>,
}

impl KeySet {
    /// The candidate keys for a token's header: the key named by `kid` (none if unknown), or
    /// every key when the token names none; only keys allowed to verify `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a Arc<Key>> + 'a {
        let keys: Box<dyn Iterator<Item = &'a Arc<Key>> + 'a> = match kid {
            Some(kid) => Box::new(self.by_kid.get(kid).into_iter()),
            None => Box::new(self.all.iter()),
        };
        keys.filter(move |k| k.algorithms.contains(&alg))
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}

/// Parses a JWKS document for a provider pinned to `allowed` (never HS*: shared secrets come
/// from the environment, not from a key document).
pub fn parse(bytes: &[u8], allowed: &[Algorithm]) -> Result<KeySet, JwksError> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    // Strict parsing: a document with a repeated member is as suspicious as a token with one.
    let doc = crate::json::parse_strict(bytes).map_err(|e| JwksError::Parse(e.to_string()))?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| JwksError::Parse("missing the \"keys\" array".into()))?;
    let mut set = KeySet::default();
    for (i, raw) in keys.iter().enumerate() {
        let label = raw
            .get("kid")
            .and_then(|k| k.as_str())
            .map_or_else(|| format!("#{i}"), |k| format!("{k:?}"));
        // Unknown `kty`s and unsupported curves fail to deserialize or map to no algorithm;
        // either way the key is skipped, not the document.
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        let Some(key) = usable(&jwk, allowed, &label)? else {
            continue;
        };
        let key = Arc::new(key);
        if let Some(kid) = &jwk.common.key_id {
            if set.by_kid.insert(kid.clone(), key.clone()).is_some() {
                return Err(JwksError::DuplicateKid(kid.clone()));
            }
        }
        set.all.push(key);
    }
    if set.all.is_empty() {
        let names: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        return Err(JwksError::NoUsableKey(names.join(", ")));
    }
    Ok(set)
}

/// `Ok(None)`: the key is not for us (skip it). `Err`: it claims to be for us but is unsafe.
fn usable(jwk: &Jwk, allowed: &[Algorithm], label: &str) -> Result<Option<Key>, JwksError> {
    if let Some(u) = &jwk.common.public_key_use {
        if *u != PublicKeyUse::Signature {
            return Ok(None);
        }
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return Ok(None);
        }
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            // P-521 (ES512) is not supported by the verifier; skip such keys.
            _ => return Ok(None),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return Ok(None),
        },
        // Symmetric keys never come from a key document, and unknown key types are not ours.
        _ => return Ok(None),
    };
    let mut algorithms: Vec<Algorithm> =
        family.into_iter().filter(|a| allowed.contains(a)).collect();
    if let Some(ka) = jwk.common.key_algorithm {
        let Ok(ka) = Algorithm::try_from(ka) else {
            return Ok(None);
        };
        if !algorithms.contains(&ka) {
            // Its `alg` is not one we accept (or does not fit its own key type).
            return Ok(None);
        }
        algorithms = vec![ka];
    }
    if algorithms.is_empty() {
        return Ok(None);
    }
    // Only a key this provider would use can spoil its set: a weak RSA key next to the ES256
    // key of a provider pinned to ES256 is skipped like any other key that is not for us.
    if let AlgorithmParameters::RSA(p) = &jwk.algorithm {
        check_rsa(&p.n, &p.e, label)?;
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(label, &e.to_string()))?;
    Ok(Some(Key { algorithms, key }))
}

/// Refuses RSA public keys that are too short or have an invalid exponent.
fn check_rsa(n: &str, e: &str, label: &str) -> Result<(), JwksError> {
    let n = URL_SAFE_NO_PAD
        .decode(n)
        .map_err(|_| bad(label, "the modulus is not base64url"))?;
    let e = URL_SAFE_NO_PAD
        .decode(e)
        .map_err(|_| bad(label, "the exponent is not base64url"))?;
    let bits = significant_bits(&n);
    if bits < MIN_RSA_BITS {
        return Err(bad(
            label,
            &format!("RSA modulus of {bits} bits (at least {MIN_RSA_BITS} required)"),
        ));
    }
    // e = 1 makes the "signature" the message itself; even exponents are invalid.
    if significant_bits(&e) < 2 || e.last().is_none_or(|b| b & 1 == 0) {
        return Err(bad(label, "invalid RSA public exponent"));
    }
    Ok(())
}

fn bad(label: &str, why: &str) -> JwksError {
    JwksError::BadKey(label.to_string(), why.to_string())
}

/// Bit length of a big-endian unsigned integer.
fn significant_bits(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
        None => 0,
    }
}
