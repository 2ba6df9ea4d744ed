//! transform-service: Envoy's ext_proc server for routes with `transform` (spec §9).
//!
//! - [`policy`]: the `TransformPolicy` from xds-server, compiled per route, and its `Apply`.
//! - [`exchange`]: one request's messages with Envoy, decided without I/O; every answer,
//!   refusals included, is built there.
//! - [`server`]: the tonic ext_proc endpoint, the xDS client and the side port.
//! - [`cli`], [`metrics`].
//!
//! The body work itself is the pure `transform` crate.

pub mod cli;
pub mod exchange;
pub mod metrics;
pub mod policy;
pub mod server;
