//! xds-server: the control-plane binary. It loads `gateway.yaml` (`config`), translates it
//! (`translate`), publishes the snapshots over ADS (`ads`), reloads on every edit, and serves the
//! admin port; `bootstrap` writes Envoy bootstraps, `certs` an mTLS control plane's certificates, and `cli` is the command line.

pub mod admin;
pub mod bootstrap;
pub mod certs;
pub mod cli;
pub mod metrics;
pub mod rollout;
pub mod server;
pub mod state;
