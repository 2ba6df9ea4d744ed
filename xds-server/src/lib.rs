//! xds-server: reads `gateway.yaml`, translates it into Envoy resources and streams them to
//! Envoy over ADS (State-of-the-World and Delta).

pub mod config;
pub mod translate;
