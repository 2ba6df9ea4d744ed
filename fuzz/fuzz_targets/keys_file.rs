//! The API-key file reader (`config::keys_file`, used by xds-server and authz-service): no
//! input panics, and a file that parses renders to text that parses back to the same keys.
#![no_main]

use config::keys_file::KeysFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((file, positions)) = KeysFile::parse_located(data) else {
        return;
    };
    assert_eq!(positions.len(), file.keys.len(), "one position per key");
    let rendered = file.render();
    let again = KeysFile::parse(rendered.as_bytes())
        .unwrap_or_else(|e| panic!("a rendered keys file does not parse: {e}\n{rendered}"));
    assert_eq!(again, file, "render and parse round-trip");
    for k in &file.keys {
        let _ = k.is_active(gateway_fuzz::NOW as i64);
    }
});
