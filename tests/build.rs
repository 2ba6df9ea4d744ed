//! Compiles tests/protos with protox (no `protoc` needed): the descriptor sets of demo.proto and
//! demo_v2.proto go to OUT_DIR for the transcoder tests, and demo_v2's tonic server code (a
//! superset of demo.proto's API) for the test upstream.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=protos");
    for (proto, set) in [
        ("demo.proto", "demo.fds.bin"),
        ("demo_v2.proto", "demo_v2.fds.bin"),
    ] {
        let mut compiler = protox::Compiler::new(["protos"]).expect("tests/protos is readable");
        compiler.include_imports(true);
        compiler.open_files([proto]).expect("tests/protos compiles");
        // Encoded by protox itself: it keeps the `google.api.http` method options, which
        // `prost_types` (no extension support) would drop on a decode and re-encode.
        std::fs::write(out.join(set), compiler.encode_file_descriptor_set())
            .expect("OUT_DIR is writable");
        if proto == "demo_v2.proto" {
            tonic_prost_build::configure()
                .build_client(false)
                .build_transport(false)
                .compile_fds(compiler.file_descriptor_set())
                .expect("tonic code generates");
        }
    }
}
