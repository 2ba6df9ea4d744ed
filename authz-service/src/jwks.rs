//! JWKS documents → the verification keys a provider may use. Which keys are usable, and which
//! documents are refused, is `config::jwks`'s (xds-server runs the same checks on every
//! `jwks_file` before it ships one); this turns the keys it keeps into verification keys.

use std::collections::HashMap;
use std::sync::Arc;

pub use config::jwks::{JwksError, MAX_JWKS_BYTES};
use config::JwtAlgorithm;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};

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
    let names: Vec<JwtAlgorithm> = allowed.iter().filter_map(|a| to_config(*a)).collect();
    let mut set = KeySet::default();
    for k in config::jwks::parse(bytes, &names)? {
        let jwk: Jwk = serde_json::from_value(k.jwk)
            .map_err(|e| config::jwks::bad(&k.label, &e.to_string()))?;
        let key =
            DecodingKey::from_jwk(&jwk).map_err(|e| config::jwks::bad(&k.label, &e.to_string()))?;
        let key = Arc::new(Key {
            algorithms: k
                .algorithms
                .iter()
                .filter_map(|a| from_config(*a))
                .collect(),
            key,
        });
        if let Some(kid) = k.kid {
            set.by_kid.insert(kid, key.clone());
        }
        set.all.push(key);
    }
    Ok(set)
}

/// The config's name for a verifier algorithm (`None` for those no config can name, like ES512).
fn to_config(a: Algorithm) -> Option<JwtAlgorithm> {
    let name = format!("{a:?}");
    JwtAlgorithm::ALL.into_iter().find(|c| c.as_str() == name)
}

fn from_config(a: JwtAlgorithm) -> Option<Algorithm> {
    a.as_str().parse().ok()
}
