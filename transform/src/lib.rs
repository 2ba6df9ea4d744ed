//! Body transforms (spec §9 `transform`) as pure functions over bytes: no I/O, no clock, no
//! async, so a fuzzer can drive [`JsonEdits::apply_to_body`] and [`xml::to_xml`] directly.
//!
//! - [`json`]: a JSON tree that keeps member order, repeated names and number text.
//! - [`pointer`]: RFC 6901 pointers and the edits made through them.
//! - [`xml`]: JSON → XML with the spec's naming rules.
//! - [`media`]: which bodies are JSON, and whether `Accept` prefers XML.

pub mod json;
pub mod media;
pub mod pointer;
pub mod xml;

use json::{ParseError, Value};
use pointer::{Pointer, PointerError};

/// One direction's JSON edits, compiled: `remove`, then `set`, then `rename`, then `envelope`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JsonEdits {
    pub remove: Vec<Pointer>,
    pub set: Vec<(Pointer, Value)>,
    pub rename: Vec<(Pointer, Pointer)>,
    pub envelope: Option<Envelope>,
}

/// `envelope`: `{"<field>": <body>, <with…>, "request_id": <x-request-id>}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub field: String,
    pub with: Vec<(String, Value)>,
}

/// Why a set of edits could not be compiled: a bug or a version skew between xds-server, which
/// validated the config, and this process. Never a client's doing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("pointer {pointer:?}: {source}")]
    Pointer {
        pointer: String,
        #[source]
        source: PointerError,
    },
    #[error("value of {pointer:?} is not JSON: {source}")]
    Value {
        pointer: String,
        #[source]
        source: ParseError,
    },
    #[error("envelope field is empty")]
    EmptyField,
}

/// The member name the envelope gives the request id.
pub const REQUEST_ID_MEMBER: &str = "request_id";

/// What happened to one body.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not JSON (by media type or by content): sent as it came.
    Unchanged,
    /// The new body; `xml` when it was turned into XML.
    Replaced { body: Vec<u8>, xml: bool },
    /// JSON nested deeper than [`json::MAX_DEPTH`]: neither passed (it may be JSON whose
    /// internal fields we could not remove) nor edited.
    TooDeep,
}

impl JsonEdits {
    /// Compiles the wire form (pointers as text, values as JSON text).
    pub fn compile(
        remove: &[String],
        set: &[(String, String)],
        rename: &[(String, String)],
        envelope: Option<(&str, &[(String, String)])>,
    ) -> Result<JsonEdits, CompileError> {
        let ptr = |s: &str| {
            Pointer::parse(s).map_err(|source| CompileError::Pointer {
                pointer: s.to_string(),
                source,
            })
        };
        let val = |name: &str, s: &str| {
            json::parse(s.as_bytes()).map_err(|source| CompileError::Value {
                pointer: name.to_string(),
                source,
            })
        };
        let envelope = match envelope {
            None => None,
            Some(("", _)) => return Err(CompileError::EmptyField),
            Some((field, with)) => Some(Envelope {
                field: field.to_string(),
                with: with
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), val(k, v)?)))
                    .collect::<Result<_, CompileError>>()?,
            }),
        };
        Ok(JsonEdits {
            remove: remove.iter().map(|s| ptr(s)).collect::<Result<_, _>>()?,
            set: set
                .iter()
                .map(|(p, v)| Ok((ptr(p)?, val(p, v)?)))
                .collect::<Result<_, CompileError>>()?,
            rename: rename
                .iter()
                .map(|(a, b)| Ok((ptr(a)?, ptr(b)?)))
                .collect::<Result<_, CompileError>>()?,
            envelope,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.set.is_empty()
            && self.rename.is_empty()
            && self.envelope.is_none()
    }

    /// Applies the edits in the spec's order. `request_id` is the request's `x-request-id`
    /// (`null` in the envelope when the request had none).
    pub fn apply(&self, doc: Value, request_id: Option<&str>) -> Value {
        let mut doc = doc;
        for p in &self.remove {
            p.remove(&mut doc);
        }
        for (p, v) in &self.set {
            p.set(&mut doc, v.clone());
        }
        for (from, to) in &self.rename {
            if let Some(v) = from.take(&mut doc) {
                to.set(&mut doc, v);
            }
        }
        match &self.envelope {
            None => doc,
            Some(env) => {
                let mut members = Vec::with_capacity(env.with.len() + 2);
                members.push((env.field.clone(), doc));
                members.extend(
                    env.with
                        .iter()
                        .filter(|(k, _)| *k != env.field && k != REQUEST_ID_MEMBER)
                        .cloned(),
                );
                members.push((
                    REQUEST_ID_MEMBER.to_string(),
                    request_id.map_or(Value::Null, |id| Value::String(id.to_string())),
                ));
                Value::Object(members)
            }
        }
    }

    /// The whole job for one body: a body that is not JSON by `content_type`, or does not parse,
    /// is [`Outcome::Unchanged`]; otherwise the edits are applied and, with `to_xml`, the result
    /// is XML. With no edits and no XML a JSON body is left as it is, byte for byte.
    pub fn apply_to_body(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        request_id: Option<&str>,
        to_xml: bool,
    ) -> Outcome {
        if !content_type.is_some_and(media::is_json) {
            return Outcome::Unchanged;
        }
        if self.is_empty() && !to_xml {
            return Outcome::Unchanged;
        }
        let doc = match json::parse(body) {
            Ok(doc) => doc,
            Err(ParseError::TooDeep) => return Outcome::TooDeep,
            Err(ParseError::Invalid(_)) => return Outcome::Unchanged,
        };
        let doc = self.apply(doc, request_id);
        if to_xml {
            Outcome::Replaced {
                body: xml::to_xml(&doc),
                xml: true,
            }
        } else {
            Outcome::Replaced {
                body: doc.to_bytes(),
                xml: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn spec_example() -> JsonEdits {
        JsonEdits::compile(
            &s(&["/internal_id", "/audit"]),
            &pairs(&[("/meta/source", "\"mobile\"")]),
            &pairs(&[("/full_name", "/name")]),
            Some(("data", &pairs(&[("api_version", "\"1.0\"")]))),
        )
        .unwrap()
    }

    fn body(o: Outcome) -> String {
        match o {
            Outcome::Replaced { body, .. } => String::from_utf8(body).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_spec_order_remove_set_rename_envelope() {
        let e = spec_example();
        let out = e.apply_to_body(
            r#"{"id":9223372036854775809,"internal_id":1,"full_name":"Zoë \"Z\"","audit":{"by":"x"},"price":1.10}"#.as_bytes(),
            Some("application/json; charset=utf-8"),
            Some("req-1"),
            false,
        );
        assert_eq!(
            body(out),
            r#"{"data":{"id":9223372036854775809,"price":1.10,"meta":{"source":"mobile"},"name":"Zoë \"Z\""},"api_version":"1.0","request_id":"req-1"}"#
        );
    }

    #[test]
    fn other_bodies_pass() {
        let e = spec_example();
        for (b, ct) in [
            (&b"{\"internal_id\":1}"[..], Some("text/plain")),
            (b"<a/>", Some("application/xml")),
            (b"{\"internal_id\":1", Some("application/json")),
            (b"not json", Some("application/json")),
            (b"{\"internal_id\":1}", None),
        ] {
            assert_eq!(e.apply_to_body(b, ct, None, false), Outcome::Unchanged);
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(
            e.apply_to_body(deep.as_bytes(), Some("application/json"), None, false),
            Outcome::TooDeep
        );
        // No edits and no XML: not even re-serialized.
        let none = JsonEdits::default();
        assert_eq!(
            none.apply_to_body(b"{ \"a\" : 1 }", Some("application/json"), None, false),
            Outcome::Unchanged
        );
    }

    #[test]
    fn envelope_members_and_request_id() {
        let e = JsonEdits::compile(
            &[],
            &[],
            &[],
            Some((
                "data",
                &pairs(&[("v", "2"), ("request_id", "\"spoof\""), ("data", "0")]),
            )),
        )
        .unwrap();
        assert_eq!(
            body(e.apply_to_body(b"[]", Some("application/vnd.x+json"), None, false)),
            r#"{"data":[],"v":2,"request_id":null}"#
        );
        let xml = body(e.apply_to_body(b"[1]", Some("application/json"), Some("r"), true));
        assert!(
            xml.ends_with("<response><data>1</data><v>2</v><request_id>r</request_id></response>"),
            "{xml}"
        );
    }

    #[test]
    fn compile_refuses_bad_pointers_and_values() {
        assert!(JsonEdits::compile(&s(&["nope"]), &[], &[], None).is_err());
        assert!(JsonEdits::compile(&[], &pairs(&[("/a", "{")]), &[], None).is_err());
        assert!(JsonEdits::compile(&[], &[], &pairs(&[("/a", "")]), None).is_err());
        assert_eq!(
            JsonEdits::compile(&[], &[], &[], Some(("", &[]))),
            Err(CompileError::EmptyField)
        );
    }
}
