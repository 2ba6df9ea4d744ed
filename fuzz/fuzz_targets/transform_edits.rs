//! The body transforms (crate `transform`) with edits from the input as well: pointers in
//! RFC 6901 text, values in JSON text, an envelope, compiled as transform-service compiles
//! the policy xds-server sends, then applied to a body from the input.
//!
//! Besides no panic: when the body and every value are JSON that serde_json accepts, the output
//! is too (or, with `xml`, well-formed XML for roxmltree).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize as _;
use transform::{JsonEdits, Outcome};

#[derive(Arbitrary, Debug)]
struct Input {
    remove: Vec<String>,
    set: Vec<(String, String)>,
    rename: Vec<(String, String)>,
    envelope: Option<(String, Vec<(String, String)>)>,
    request_id: Option<String>,
    xml: bool,
    /// Last, so it takes the rest of the input.
    body: Vec<u8>,
}

fn serde_accepts(bytes: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    // Into a `Value`, not `IgnoredAny`: ignoring skips the UTF-8 check of strings.
    serde_json::Value::deserialize(&mut de).is_ok() && de.end().is_ok()
}

fuzz_target!(|input: Input| {
    let envelope = input
        .envelope
        .as_ref()
        .map(|(field, with)| (field.as_str(), with.as_slice()));
    let Ok(edits) = JsonEdits::compile(&input.remove, &input.set, &input.rename, envelope) else {
        return;
    };
    let values_valid = input
        .set
        .iter()
        .chain(input.envelope.iter().flat_map(|(_, w)| w))
        .all(|(_, v)| serde_accepts(v.as_bytes()));
    let out = edits.apply_to_body(
        &input.body,
        Some("application/json"),
        input.request_id.as_deref(),
        input.xml,
    );
    if let Outcome::Replaced { body, xml } = out {
        if xml {
            let text = std::str::from_utf8(&body).expect("XML is UTF-8");
            if let Err(e) = roxmltree::Document::parse(text) {
                panic!("not well-formed XML ({e}): {text}");
            }
        } else if values_valid && serde_accepts(&input.body) {
            assert!(
                serde_accepts(&body),
                "the output is not JSON: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
});
