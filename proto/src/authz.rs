//! `gateway.policy.v1.AuthPolicy`: what xds-server streams to authz-service (providers, API-key
//! digests and each route's accepted providers and `require` rules).
//!
//! Hand-written prost types (no `.proto` compilation step); field numbers are the wire contract.
//! No message holds a protobuf `map`, so encoding is deterministic.

use prost::Message;

/// The single resource name of an auth policy (the whole policy is one resource).
pub const RESOURCE_NAME: &str = "auth";

/// Placeholder until authz-service defines the policy; carries nothing yet.
#[derive(Clone, PartialEq, Message)]
pub struct AuthPolicy {}
