//! ratelimit-service: Envoy's rate-limit service (RLS) with exact sliding windows.
//!
//! Layers, inner to outer: [`limiter`] (the algorithms, pure), [`store`] (where counters live:
//! memory or Redis, behind [`store::CounterStore`]), [`policy`] (limits from xds-server and the
//! descriptor protocol), [`service`] (one request: cache, store, deadline, answer), and
//! [`server`] (gRPC, xDS subscription, side port).

pub mod cache;
pub mod cli;
pub mod grpc;
pub mod limiter;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod service;
pub mod store;
pub mod throttle;
