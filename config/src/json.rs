//! Strict JSON for JWKS documents and JWT headers and payloads: objects with a repeated member
//! name are rejected.
//!
//! `serde_json::Value` (and the claim maps of JWT libraries) keep the last of two members with
//! the same name, so `{"tenant":"victim","tenant":"attacker"}` would silently become `attacker`
//! in an upstream header. RFC 7515 §5.2 lets a JWS recipient reject such input; we always do, at
//! every nesting level.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Nesting deeper than this is refused: real tokens are a few levels deep, and the limit keeps
/// a hostile token from exhausting the stack (serde_json also stops at 128).
const MAX_DEPTH: usize = 32;

/// Parses `bytes` as one JSON value, rejecting duplicate object member names.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict { depth: 0 }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.deeper::<A::Error>()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.deeper::<A::Error>()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate member name {key:?}"
                )));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

impl Strict {
    fn deeper<E: de::Error>(self) -> Result<Strict, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("JSON nested too deeply"));
        }
        Ok(Strict {
            depth: self.depth + 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json_and_rejects_duplicates_at_any_depth() {
        let ok: &[&str] = &[
            r#"{"a":1,"b":[1,2,{"c":null}],"d":{"e":"f"},"g":1.5,"h":true,"i":-3}"#,
            r#"{"a":{"a":{"a":1}}}"#,
            "[]",
        ];
        for src in ok {
            let strict = parse_strict(src.as_bytes()).unwrap();
            let lax: Value = serde_json::from_str(src).unwrap();
            assert_eq!(strict, lax, "{src}");
        }
        let bad: &[&str] = &[
            r#"{"tenant":"victim","tenant":"attacker"}"#,
            r#"{"a":{"b":1,"b":2}}"#,
            r#"{"a":[{"x":1,"x":1}]}"#,
            r#"{"sub":"a"} trailing"#,
            "{\"a\":\"\\ud800\"}",
            "not json",
            "",
        ];
        for src in bad {
            assert!(parse_strict(src.as_bytes()).is_err(), "{src}");
        }
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_strict(deep.as_bytes()).is_err());
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_strict(ok.as_bytes()).is_ok());
    }
}
