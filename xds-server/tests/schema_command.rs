//! `xds-server schema` prints exactly what the config crate generates.

use config::schema;

#[test]
fn the_schema_command_prints_the_schema_and_the_reference() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xds-server"))
            .args(args)
            .output()
            .expect("xds-server runs");
        assert!(out.status.success(), "xds-server {args:?} failed");
        String::from_utf8(out.stdout).expect("UTF-8 output")
    };
    assert_eq!(run(&["schema"]), schema::schema_json());
    assert_eq!(run(&["schema", "--format", "json"]), schema::schema_json());
    assert_eq!(run(&["schema", "--format", "markdown"]), schema::markdown());
}
