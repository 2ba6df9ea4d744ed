//! ratelimit-service: Envoy's rate-limit service (RLS) with exact sliding windows.
//!
//! The limiter itself (algorithms, stores, policy, the RLS answer) is the `ratelimit` crate,
//! which authz-service links too; this crate is its gRPC endpoint ([`grpc`]), the process
//! ([`server`]: xDS subscription, side port) and the command line ([`cli`]). The limiter's
//! modules are re-exported under their old paths.

pub mod cli;
pub mod grpc;
pub mod server;

pub use ratelimit::{cache, limiter, metrics, policy, service, store, throttle};
