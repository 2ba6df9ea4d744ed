//! What every crate's tests share: free ports, polls with a deadline (a condition, an HTTP 2xx, a
//! TCP port), child processes that log to a file and die with the test, the binaries the
//! end-to-end tests run (Envoy, Redis, this workspace's own), and the logs of the test's own
//! thread.
//!
//! Everything here *fails* loudly instead of skipping: a missing Envoy or a binary that does not
//! build is a test failure, never a silently green run. Tests wait only by polling for a
//! condition ([`wait_for`]), never by a bare sleep.

pub mod bins;
pub mod logs;
pub mod net;
pub mod process;
pub mod wait;

pub use bins::{envoy_bin, redis_bin, redis_cli, repo_root, target_dir, workspace_bin};
pub use logs::{capture_logs, CapturedLogs};
pub use net::{free_addr, free_port};
pub use process::{NotReady, Proc};
pub use wait::{
    http_client, poll, poll_blocking, poll_every, wait_for, wait_http_ok, wait_tcp, within, Ready,
    TimedOut,
};
