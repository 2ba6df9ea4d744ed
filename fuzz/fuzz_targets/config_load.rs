//! gateway.yaml: the position-tracking YAML parser, the decoder and validator, the checks of
//! every referenced file (over the fixed in-memory set of `gateway_fuzz::FILES`), and, for a
//! config that loads, its translation into Envoy resources and policies. No input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = gateway_fuzz::load(src) else {
        return;
    };
    // A config that loads translates, or is refused with an error: never a panic.
    let _ = translate::snapshots(&loaded);
    let _ = translate::policies(&loaded);
});
