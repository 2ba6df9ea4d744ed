//! xds-server: reads `gateway.yaml`, translates it into Envoy resources and streams them to
//! Envoy over ADS (State-of-the-World and Delta).

pub mod admin;
pub mod ads;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod schema;
pub mod server;
pub mod snapshot;
pub mod translate;
