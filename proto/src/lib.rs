//! Protobuf types.
pub use envoy_types::pb;
