//! End-to-end test harness: runs Envoy, Redis and our binaries as real processes on free ports
//! (the generic machinery comes from `test-support`), and gives tests the product around them:
//! an xds-server stack, the whole gateway, an in-process echo upstream and an HTTP client.
//!
//! Everything here *fails* loudly instead of skipping: a missing Envoy or a binary that does not
//! build is a test failure, never a silently green run.

pub mod authz;
pub mod callgrind;
pub mod client;
pub mod cpu;
pub mod echo;
pub mod envoy;
pub mod gateway;
pub mod grpc_demo;
pub mod load;
pub mod otlp;
pub mod prometheus;
pub mod ratelimit;
pub mod redis;
pub mod soak;
pub mod stack;
pub mod transform;
pub mod ws;
pub mod xds;

pub use client::{HttpClient, Reply};
pub use echo::EchoUpstream;
pub use envoy::{Envoy, XdsMode};
pub use process::Proc;
pub use stack::{wait_for_route, ConfigFile, Stack, CONVERGE_TIMEOUT};
pub use wait::{wait_for, Ready};
pub use xds::XdsServer;

// The generic pieces (ports, polls, processes, binary finders) live in `test-support`, shared
// with every crate's tests; re-exported here so `tests::process::Proc`, `tests::wait::within`,
// `tests::free_port` and the rest keep their paths.
pub use test_support::{envoy_bin, free_addr, free_port, repo_root, target_dir, workspace_bin};
pub use test_support::{process, wait};

/// The command that starts one of our services' binaries: the binary itself, or the binary under
/// the program named by `GATEWAY_SERVICE_WRAPPER` (whitespace-separated, such as `valgrind
/// --tool=callgrind`), which `policy-callgrind` uses to count instructions per call.
pub fn service_command(bin: &str) -> std::process::Command {
    let path = workspace_bin(bin);
    let wrapper = std::env::var("GATEWAY_SERVICE_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = std::process::Command::new(program);
            cmd.args(words).arg(path);
            cmd
        }
        None => std::process::Command::new(path),
    }
}
