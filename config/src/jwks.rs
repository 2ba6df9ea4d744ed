//! JWKS documents → the keys a JWT provider may verify with, checked against its pinned
//! algorithms. Parsing and validation only: authz-service turns the keys this returns into
//! verification keys, and `load` runs the same checks on every `jwks_file`, so a document
//! authz-service would refuse is refused by `xds-server validate` and by a reload first.
//!
//! A key is usable only when its `kty` (and curve) fits one of the provider's algorithms, its
//! `use` (if any) is `sig`, its `key_ops` (if any) include `verify`, and its `alg` (if any) is one
//! of the provider's algorithms; a key with an `alg` is then used with that algorithm only. Keys
//! that fail these tests are skipped (issuers publish encryption keys and other curves next to
//! their signing keys), but a document without a single usable key, with a repeated `kid`, or
//! with a weak RSA key is an error, so a broken rotation is noticed instead of silently locking
//! everyone out.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::model::JwtAlgorithm;

/// RSA moduli below 2048 bits are refused (NIST SP 800-131A; Wycheproof `rejects1024bitRsaKey`).
const MIN_RSA_BITS: usize = 2048;
/// A JWKS larger than this is refused: real ones are a few KiB.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    /// Not JSON (or JSON with a repeated member); `line` and `column` are 1-based, as
    /// serde_json counts them.
    #[error("not a JWKS document: {message} at line {line} column {column}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// JSON, but not shaped like a JWKS.
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

/// One usable key of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct JwksKey {
    /// `kid`, when the key has one (unique within the document).
    pub kid: Option<String>,
    /// How the key is named in messages: its `kid` quoted, or `#<index>`.
    pub label: String,
    /// The algorithms this key may verify (a subset of the provider's, in their order).
    pub algorithms: Vec<JwtAlgorithm>,
    /// The key's JWK object as found, for the verifier to load.
    pub jwk: Value,
}

/// Parses a JWKS document for a provider pinned to `allowed` (never HS*: shared secrets come
/// from the environment, not from a key document). Returns the usable keys in document order;
/// never an empty list.
pub fn parse(bytes: &[u8], allowed: &[JwtAlgorithm]) -> Result<Vec<JwksKey>, JwksError> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    // Strict parsing: a document with a repeated member is as suspicious as a token with one.
    let doc = crate::json::parse_strict(bytes).map_err(syntax)?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| JwksError::Parse("missing the \"keys\" array".into()))?;
    let mut out: Vec<JwksKey> = Vec::new();
    for (i, raw) in keys.iter().enumerate() {
        let label = raw
            .get("kid")
            .and_then(Value::as_str)
            .map_or_else(|| format!("#{i}"), |k| format!("{k:?}"));
        // Unknown `kty`s, unsupported curves and malformed members make a key that is not for
        // us: it is skipped, not the document.
        let Some(jwk) = raw.as_object() else {
            continue;
        };
        let Some((kid, algorithms)) = usable(jwk, allowed, &label)? else {
            continue;
        };
        if let Some(kid) = &kid {
            if out.iter().any(|k| k.kid.as_ref() == Some(kid)) {
                return Err(JwksError::DuplicateKid(kid.clone()));
            }
        }
        out.push(JwksKey {
            kid,
            label,
            algorithms,
            jwk: raw.clone(),
        });
    }
    if out.is_empty() {
        let names: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
        return Err(JwksError::NoUsableKey(names.join(", ")));
    }
    Ok(out)
}

/// serde_json's message without the position it appends, and the position apart.
fn syntax(e: serde_json::Error) -> JwksError {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
    JwksError::Syntax {
        line: line.max(1),
        column: column.max(1),
        message,
    }
}

/// `Ok(None)`: the key is not for us (skip it). `Err`: it claims to be for us but is unsafe.
/// `Ok(Some)`: its `kid` and the algorithms it may verify.
#[allow(clippy::type_complexity)] // reason: one private helper; a named type would add nothing
fn usable(
    jwk: &Map<String, Value>,
    allowed: &[JwtAlgorithm],
    label: &str,
) -> Result<Option<(Option<String>, Vec<JwtAlgorithm>)>, JwksError> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    // Members the verifier's JWK type reads: one of the wrong JSON type makes the whole key
    // unreadable there, so it is not a key for us.
    for name in ["kid", "use", "alg", "x5u", "x5t", "x5t#S256"] {
        if jwk.get(name).is_some_and(|v| !v.is_string()) {
            return Ok(None);
        }
    }
    for name in ["key_ops", "x5c"] {
        if let Some(v) = jwk.get(name) {
            if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                return Ok(None);
            }
        }
    }
    if text("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array) {
        if !ops.iter().any(|o| o == "verify") {
            return Ok(None);
        }
    }
    use JwtAlgorithm::*;
    let has = |names: &[&str]| names.iter().all(|n| text(n).is_some());
    let family: &[JwtAlgorithm] = match (text("kty"), text("crv")) {
        (Some("RSA"), _) if has(&["n", "e"]) => &[RS256, RS384, RS512, PS256, PS384, PS512],
        (Some("EC"), Some("P-256")) if has(&["x", "y"]) => &[ES256],
        (Some("EC"), Some("P-384")) if has(&["x", "y"]) => &[ES384],
        (Some("OKP"), Some("Ed25519")) if has(&["x"]) => &[EdDSA],
        // P-521 (ES512) is not supported by the verifier, symmetric keys never come from a key
        // document, and unknown key types are not ours.
        _ => return Ok(None),
    };
    let mut algorithms: Vec<JwtAlgorithm> = allowed
        .iter()
        .copied()
        .filter(|a| family.contains(a))
        .collect();
    if let Some(ka) = text("alg") {
        // An `alg` we do not accept (or that does not fit its own key type) makes the key
        // not ours.
        let Some(ka) = algorithms.iter().copied().find(|a| a.as_str() == ka) else {
            return Ok(None);
        };
        algorithms = vec![ka];
    }
    if algorithms.is_empty() {
        return Ok(None);
    }
    // Only a key this provider would use can spoil its set: a weak RSA key next to the ES256
    // key of a provider pinned to ES256 is skipped like any other key that is not for us.
    match (text("kty"), text("crv")) {
        (Some("RSA"), _) => check_rsa(text("n").unwrap_or(""), text("e").unwrap_or(""), label)?,
        (Some("EC"), Some(crv)) => {
            let size = if crv == "P-256" { 32 } else { 48 };
            check_coordinate(text("x").unwrap_or(""), "x", size, label)?;
            check_coordinate(text("y").unwrap_or(""), "y", size, label)?;
        }
        (Some("OKP"), _) => check_coordinate(text("x").unwrap_or(""), "x", 32, label)?,
        _ => {}
    }
    Ok(Some((text("kid").map(str::to_string), algorithms)))
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

/// Refuses an elliptic-curve coordinate (or Ed25519 public key) that is not base64url or not
/// the curve's size: the verifier would fail to read it, or fail every signature with it.
fn check_coordinate(value: &str, name: &str, size: usize, label: &str) -> Result<(), JwksError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| bad(label, &format!("`{name}` is not base64url")))?;
    if bytes.len() != size {
        return Err(bad(
            label,
            &format!("`{name}` is {} bytes; the curve takes {size}", bytes.len()),
        ));
    }
    Ok(())
}

/// A usable-looking key the verifier cannot take.
pub fn bad(label: &str, why: &str) -> JwksError {
    JwksError::BadKey(label.to_string(), why.to_string())
}

/// Bit length of a big-endian unsigned integer.
fn significant_bits(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa(kid: &str) -> Value {
        // A 2048-bit modulus: the checks look at its length and the exponent only.
        let n = URL_SAFE_NO_PAD.encode([0xC3u8; 256]);
        json!({"kty": "RSA", "kid": kid, "n": n, "e": "AQAB"})
    }

    fn doc(keys: &[Value]) -> Vec<u8> {
        json!({ "keys": keys }).to_string().into_bytes()
    }

    #[test]
    fn syntax_errors_carry_serde_json_positions() {
        let e = parse(b"{\n  \"keys\": [\n    }\n", &[JwtAlgorithm::RS256]).unwrap_err();
        let JwksError::Syntax { line, column, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!((line, column), (3, 5));
        assert!(matches!(
            parse(b"not json", &[JwtAlgorithm::RS256]),
            Err(JwksError::Syntax { line: 1, .. })
        ));
        let dup = parse(br#"{"keys":[],"keys":[]}"#, &[JwtAlgorithm::RS256]).unwrap_err();
        assert!(dup.to_string().contains("duplicate member"), "{dup}");
    }

    #[test]
    fn usable_keys_are_kept_and_others_skipped() {
        let rs = [JwtAlgorithm::RS256, JwtAlgorithm::PS256];
        let mut enc = rsa("enc");
        enc["use"] = "enc".into();
        let mut wrong_alg = rsa("512");
        wrong_alg["alg"] = "RS512".into();
        let mut pinned = rsa("pinned");
        pinned["alg"] = "PS256".into();
        let mut bad_type = rsa("typed");
        bad_type["key_ops"] = json!("verify");
        let keys = parse(
            &doc(&[enc, wrong_alg, bad_type, rsa("a"), pinned, json!(7)]),
            &rs,
        )
        .unwrap();
        let got: Vec<(Option<&str>, &[JwtAlgorithm])> = keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.algorithms.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("a"), &rs[..]),
                (Some("pinned"), &[JwtAlgorithm::PS256][..])
            ]
        );
        assert!(matches!(
            parse(&doc(&[rsa("k"), rsa("k")]), &rs),
            Err(JwksError::DuplicateKid(_))
        ));
        assert!(matches!(
            parse(&doc(&[rsa("k")]), &[JwtAlgorithm::ES256]),
            Err(JwksError::NoUsableKey(_))
        ));
        let mut e1 = rsa("e1");
        e1["e"] = "AQ".into();
        assert!(matches!(
            parse(&doc(&[e1]), &rs),
            Err(JwksError::BadKey(..))
        ));
        assert!(matches!(parse(b"{}", &rs), Err(JwksError::Parse(_))));
    }

    /// An EC or Ed25519 key the verifier could not read (or could never verify with) is refused
    /// here, at load, rather than by authz-service after the config was accepted.
    #[test]
    fn curve_points_must_be_base64url_of_the_curves_size() {
        let b64 = |n: usize| URL_SAFE_NO_PAD.encode(vec![7u8; n]);
        let ec =
            |x: String, y: String| json!({"kty": "EC", "crv": "P-256", "kid": "e", "x": x, "y": y});
        let ed = |x: String| json!({"kty": "OKP", "crv": "Ed25519", "kid": "d", "x": x});
        let es = [JwtAlgorithm::ES256];
        let eddsa = [JwtAlgorithm::EdDSA];
        assert!(parse(&doc(&[ec(b64(32), b64(32))]), &es).is_ok());
        assert!(parse(&doc(&[ed(b64(32))]), &eddsa).is_ok());
        for bad_key in [
            ec("!!".into(), b64(32)),
            ec(b64(32), "a+b/".into()),
            ec(b64(31), b64(32)),
        ] {
            let e = parse(&doc(std::slice::from_ref(&bad_key)), &es);
            assert!(matches!(e, Err(JwksError::BadKey(..))), "{bad_key}: {e:?}");
        }
        let e = parse(&doc(&[ed(b64(33))]), &eddsa);
        assert!(matches!(e, Err(JwksError::BadKey(..))), "{e:?}");
    }
}
