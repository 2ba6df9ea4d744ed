//! authz-service: Envoy's ext_authz gRPC service for JWT and API-key authentication, with
//! per-route provider lists and `require` rules, configured over xDS by xds-server.
//!
//! Domain logic (`jwt`, `jwks`, `apikey`, `policy`) is plain Rust over plain types; gRPC
//! (`service`, `response`), HTTP (`remote`, the side port from `xds_client::side`) and xDS
//! (`xds`) stay at the edges.

pub mod apikey;
pub mod cache;
pub mod cli;
pub mod grpc;
pub mod jwks;
pub mod jwt;
pub mod limits;
pub mod metrics;
pub mod mtls;
pub mod policy;
pub mod remote;
pub mod response;
pub mod server;
pub mod service;
pub mod token;
pub mod unknown_plan;
pub mod xds;

/// Identity headers set on every authenticated request (spec §4); client copies are removed.
pub use proto::authz::header::CLIENT_HEADERS as IDENTITY_HEADERS;
