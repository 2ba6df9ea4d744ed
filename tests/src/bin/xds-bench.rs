//! `xds-bench`: the control-plane benchmark (`scripts/bench` builds and runs it); see
//! `tests/src/bench/mod.rs` for what it measures.

#[path = "../bench/mod.rs"]
mod bench;

fn main() -> anyhow::Result<()> {
    bench::main()
}
