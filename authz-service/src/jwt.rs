//! JWT (JWS compact) verification for one provider, with the checks `jsonwebtoken` leaves to
//! its caller.
//!
//! Order matters: the size cap comes before any decoding; the header is checked (strictly
//! parsed, algorithm pinned by configuration, no embedded or referenced keys, no `crit`) before
//! a key is chosen; the key is chosen by exact `kid` lookup among keys whose type and `alg` fit;
//! the signature and the registered claims are checked by `jsonwebtoken`; `iat`, which the crate
//! never checks, is checked here. The payload is parsed strictly (no repeated member names)
//! before anything reads a claim.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::jwks::KeySet;
use crate::remote::RemoteJwks;

/// Tokens longer than this are refused before any decoding (Envoy's JWT cache skips tokens over
/// 4 KiB; real access tokens are well under 2 KiB). Without a cap a 1 MB token costs
/// milliseconds of base64 and JSON work per request.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused. `reason()` is the metrics label; `message()` what the client reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("repeated member name in the {0}")]
    DuplicateMember(&'static str),
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("algorithm not allowed for this provider")]
    AlgorithmNotAllowed,
    #[error("the header carries a key or a key reference ({0})")]
    EmbeddedKey(&'static str),
    #[error("the header has critical extensions")]
    Critical,
    #[error("unexpected token type")]
    WrongType,
    #[error("no key with this kid")]
    UnknownKid,
    #[error("verification keys not loaded yet")]
    KeysUnavailable,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not valid yet (nbf)")]
    NotYetValid,
    #[error("issued in the future (iat)")]
    IssuedInFuture,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    #[error("bad claim {0}")]
    BadClaim(&'static str),
}

impl JwtError {
    /// A stable, low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed(_) => "malformed",
            Self::DuplicateMember(_) => "duplicate_member",
            Self::UnsupportedAlgorithm => "unsupported_alg",
            Self::AlgorithmNotAllowed => "alg_not_allowed",
            Self::EmbeddedKey(_) => "embedded_key",
            Self::Critical => "crit",
            Self::WrongType => "typ",
            Self::UnknownKid => "unknown_kid",
            Self::KeysUnavailable => "keys_unavailable",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "nbf",
            Self::IssuedInFuture => "iat",
            Self::WrongIssuer => "issuer",
            Self::WrongAudience => "audience",
            Self::MissingClaim(_) => "missing_claim",
            Self::BadClaim(_) => "bad_claim",
        }
    }

    /// What the client is told: enough to fix an honest mistake (an expired token), nothing an
    /// attacker can use to tell which check failed.
    pub fn message(&self) -> &'static str {
        match self {
            Self::Expired => "the token has expired",
            Self::NotYetValid | Self::IssuedInFuture => "the token is not valid yet",
            _ => "the token is invalid",
        }
    }
}

/// A token split and pre-checked, before any provider looks at it.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub token: &'a str,
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// The payload, parsed strictly; always an object.
    pub claims: Map<String, Value>,
}

impl Parsed<'_> {
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Splits and pre-checks a compact JWS: size, shape, alphabet, strict JSON, header rules.
pub fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // JWE (5 parts), JSON serialization and bare strings all end here.
        return Err(JwtError::Malformed("not three dot-separated parts"));
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        // An empty signature is the `alg: none` shape and CVE-2020-28042's "null signature".
        return Err(JwtError::Malformed("empty part"));
    }
    let header_bytes = b64(h)?;
    let payload_bytes = b64(p)?;
    // The signature is decoded by the verifier; check its alphabet here so garbage fails early.
    if !s.bytes().all(is_b64url) {
        return Err(JwtError::Malformed("signature is not base64url"));
    }
    let header = object(&header_bytes, "header")?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a
            .parse::<Algorithm>()
            .map_err(|_| JwtError::UnsupportedAlgorithm)?,
        Some(_) => return Err(JwtError::Malformed("alg is not a string")),
        None => return Err(JwtError::Malformed("no alg")),
    };
    // Keys must come from configuration only (CVE-2018-0114 and the jku/x5u spoofing family):
    // a token that tries to bring its own key is refused outright, not merely ignored.
    for name in ["jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"] {
        if header.contains_key(name) {
            return Err(JwtError::EmbeddedKey(name));
        }
    }
    // We understand no JWS extension, so any `crit` must be refused (RFC 7515 §4.1.11); `b64`
    // (RFC 7797) changes what is signed and is only valid together with `crit`.
    if header.contains_key("crit") || header.contains_key("b64") {
        return Err(JwtError::Critical);
    }
    if let Some(typ) = header.get("typ") {
        // RFC 8725 explicit typing: accept plain JWTs and access tokens, refuse tokens minted for
        // another purpose (`dpop+jwt`, `logout+jwt`, nested JWTs…).
        let ok = typ.as_str().is_some_and(|t| {
            let t = t.strip_prefix("application/").unwrap_or(t);
            t.eq_ignore_ascii_case("jwt") || t.eq_ignore_ascii_case("at+jwt")
        });
        if !ok {
            return Err(JwtError::WrongType);
        }
    }
    if header.contains_key("cty") {
        return Err(JwtError::WrongType);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::Malformed("kid is not a string")),
    };
    let claims = object(&payload_bytes, "payload")?;
    Ok(Parsed {
        token,
        alg,
        kid,
        claims,
    })
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn b64(part: &str) -> Result<Vec<u8>, JwtError> {
    // The engine refuses padding and the standard alphabet, as RFC 7515 requires.
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed("not base64url"))
}

fn object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, JwtError> {
    match config::json::parse_strict(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(JwtError::Malformed("not a JSON object")),
        Err(e) if e.to_string().contains("duplicate member") => {
            Err(JwtError::DuplicateMember(what))
        }
        Err(_) => Err(JwtError::Malformed("not JSON")),
    }
}

/// Where a provider's keys come from.
#[derive(Clone)]
pub enum Keys {
    /// A JWKS file shipped in the policy.
    Static(Arc<KeySet>),
    /// A JWKS URL, refreshed in the background.
    Remote(Arc<RemoteJwks>),
    /// An HS* shared secret from the environment.
    Secret(Arc<DecodingKey>),
}

/// The verification rules of one provider.
pub struct Verifier {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub keys: Keys,
    pub skew_secs: u64,
    validations: HashMap<Algorithm, Validation>,
}

/// What a successful verification returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// `exp`, seconds since the epoch.
    pub exp: u64,
}

impl Verifier {
    pub fn new(
        issuer: String,
        audiences: Vec<String>,
        algorithms: Vec<Algorithm>,
        keys: Keys,
        skew_secs: u64,
    ) -> Self {
        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = skew_secs;
                // The crate does not check nbf by default (Keats/jsonwebtoken#542).
                v.validate_nbf = true;
                v.set_issuer(&[&issuer]);
                let mut required = vec!["exp", "iss"];
                if audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&audiences);
                    required.push("aud");
                }
                v.set_required_spec_claims(&required);
                (*alg, v)
            })
            .collect();
        Self {
            issuer,
            audiences,
            algorithms,
            keys,
            skew_secs,
            validations,
        }
    }

    /// Verifies a parsed token. `UnknownKid` from a remote key set means "refetch, then retry".
    pub fn verify(&self, t: &Parsed<'_>, now: u64) -> Result<Verified, JwtError> {
        if !self.algorithms.contains(&t.alg) {
            return Err(JwtError::AlgorithmNotAllowed);
        }
        let validation = self
            .validations
            .get(&t.alg)
            .ok_or(JwtError::AlgorithmNotAllowed)?;
        match &self.keys {
            Keys::Secret(key) => check(t, key, validation)?,
            Keys::Static(set) => self.with_set(t, set, validation)?,
            Keys::Remote(remote) => match remote.current() {
                Some(set) => self.with_set(t, &set, validation)?,
                None => return Err(JwtError::KeysUnavailable),
            },
        }
        self.check_times(t, now)
    }

    fn with_set(
        &self,
        t: &Parsed<'_>,
        set: &KeySet,
        validation: &Validation,
    ) -> Result<(), JwtError> {
        if let Some(kid) = &t.kid {
            if !set.has_kid(kid) {
                return Err(JwtError::UnknownKid);
            }
        }
        // Only a wrong signature moves on to the next candidate; any other verdict is final.
        let mut result = Err(JwtError::BadSignature);
        for key in set.candidates(t.kid.as_deref(), t.alg) {
            result = check(t, &key.key, validation);
            if result != Err(JwtError::BadSignature) {
                break;
            }
        }
        result
    }

    /// `iat`, which `jsonwebtoken` never checks, and `exp` for the cache.
    fn check_times(&self, t: &Parsed<'_>, now: u64) -> Result<Verified, JwtError> {
        if let Some(iat) = t.claims.get("iat") {
            let iat = numeric_date(iat).ok_or(JwtError::BadClaim("iat"))?;
            if iat > now.saturating_add(self.skew_secs) {
                return Err(JwtError::IssuedInFuture);
            }
        }
        let exp = t
            .claims
            .get("exp")
            .ok_or(JwtError::MissingClaim("exp"))
            .and_then(|e| numeric_date(e).ok_or(JwtError::BadClaim("exp")))?;
        // Also checked by `jsonwebtoken` against its own clock; checked here against the
        // caller's, which is the one the verified-token cache uses.
        if exp.saturating_add(self.skew_secs) <= now {
            return Err(JwtError::Expired);
        }
        Ok(Verified { exp })
    }
}

/// A NumericDate (RFC 7519 §2): a non-negative JSON number; fractions are truncated.
fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

fn check(t: &Parsed<'_>, key: &DecodingKey, validation: &Validation) -> Result<(), JwtError> {
    match jsonwebtoken::decode::<serde::de::IgnoredAny>(t.token, key, validation) {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.kind() {
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
            ErrorKind::InvalidAudience => JwtError::WrongAudience,
            ErrorKind::InvalidAlgorithm => JwtError::AlgorithmNotAllowed,
            ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(match c.as_str() {
                "exp" => "exp",
                "iss" => "iss",
                "aud" => "aud",
                _ => "registered",
            }),
            ErrorKind::InvalidClaimFormat(_) => JwtError::BadClaim("registered"),
            // Key/format problems surface here: a key that cannot verify this alg, a signature
            // that does not decode, and so on. All are the token's fault from the client's side.
            _ => JwtError::BadSignature,
        }),
    }
}
