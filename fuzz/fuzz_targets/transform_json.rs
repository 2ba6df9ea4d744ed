//! transform-service's body transforms (crate `transform`) on a body from the input: its JSON
//! parser, the spec's JSON edits through pointers (one of a few fixed edit sets, picked by the
//! first byte) and the JSON and XML rendering.
//!
//! Besides no panic: a body that an independent parser (serde_json) accepts is accepted, the
//! output is JSON that serde_json accepts (or well-formed XML for roxmltree), and rendering is
//! stable (the output parses back to the same bytes).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde::Deserialize as _;
use transform::json::{self, ParseError};
use transform::{JsonEdits, Outcome};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The spec's example, edits into arrays and escaped names, and none at all.
static EDITS: LazyLock<Vec<JsonEdits>> = LazyLock::new(|| {
    vec![
        JsonEdits::compile(
            &s(&["/internal_id", "/audit"]),
            &pairs(&[("/meta/source", "\"mobile\"")]),
            &pairs(&[("/full_name", "/name")]),
            Some(("data", &pairs(&[("api_version", "\"1.0\"")]))),
        ),
        JsonEdits::compile(
            &s(&["/items/0", "/a~1b", "/m~0n/-"]),
            &pairs(&[("/items/-", "{\"x\":[1,2.5e3,null]}"), ("/0", "true")]),
            &pairs(&[("/a", "/b/c"), ("/items/1", "/first")]),
            None,
        ),
        JsonEdits::compile(&[], &[], &[], Some(("body", &[]))),
        Ok(JsonEdits::default()),
    ]
    .into_iter()
    .map(|e| e.expect("fixed edits compile"))
    .collect()
});

/// Whether serde_json accepts `bytes` as one JSON document, at any depth.
fn serde_accepts(bytes: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    // Into a `Value`, not `IgnoredAny`: ignoring skips the UTF-8 check of strings.
    serde_json::Value::deserialize(&mut de).is_ok() && de.end().is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let edits = &EDITS[usize::from(pick >> 1) % EDITS.len()];
    let to_xml = pick & 1 == 1;
    let valid = serde_accepts(body);
    match json::parse(body) {
        Ok(doc) => {
            // Rendering is stable: what it writes parses back to the same bytes.
            let out = doc.to_bytes();
            let again = json::parse(&out).expect("rendered JSON parses");
            assert_eq!(again.to_bytes(), out, "rendering is not stable");
        }
        Err(ParseError::TooDeep) => {}
        Err(ParseError::Invalid(e)) => assert!(!valid, "valid JSON refused: {e:?}"),
    }
    match edits.apply_to_body(body, Some("application/json"), Some("req-1"), to_xml) {
        Outcome::Replaced { body: out, xml } => {
            assert_eq!(xml, to_xml);
            if xml {
                let text = std::str::from_utf8(&out).expect("XML is UTF-8");
                if let Err(e) = roxmltree::Document::parse(text) {
                    panic!("not well-formed XML ({e}): {text}");
                }
            } else if valid {
                assert!(
                    serde_accepts(&out),
                    "the output is not JSON: {}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
        Outcome::Unchanged | Outcome::TooDeep => {}
    }
});
