//! `gateway.policy.v1.TransformPolicy`: what xds-server streams to transform-service (spec §9
//! `transform`): every route of every gateway, with the JSON edits of each direction and
//! whether a JSON response may be turned into XML.
//!
//! Hand-written prost types, no maps: lists keep file order, where order is meaning (edits run
//! in the order written), and routes are sorted by name. Values to `set` and envelope members
//! travel as JSON text, which transform-service parses with its own order- and
//! number-preserving reader, so `2^63+1` or `1.10` in gateway.yaml reach a body as written.
//!
//! Also the one home of the names Envoy's ext_proc filter and transform-service share.

use prost::Message;

/// The single resource name of a transform policy.
pub const RESOURCE_NAME: &str = "transform";

/// Envoy's ext_proc HTTP filter name (its stats prefix too).
pub const EXT_PROC_FILTER: &str = "envoy.filters.http.ext_proc";

/// gRPC metadata that each transformed route's ext_proc override sends on the stream: the
/// route's name, which transform-service looks the route's edits up by.
pub const ROUTE_METADATA: &str = "x-gateway-route";

/// The largest request or response body a transformed route buffers, in bytes (Envoy's
/// per-route buffer limit on those routes): a larger request body is refused with 413, a larger
/// response with 502, neither ever passes untransformed.
pub const MAX_BODY_BYTES: u32 = 4 * 1024 * 1024;

/// The most bytes one ext_proc message may carry between Envoy and transform-service: a
/// buffered body of [`MAX_BODY_BYTES`] plus its replacement, which an envelope or XML makes
/// larger than the original.
pub const MAX_MESSAGE_BYTES: usize = 4 * MAX_BODY_BYTES as usize;

/// Everything transform-service applies.
#[derive(Clone, PartialEq, Message)]
pub struct TransformPolicy {
    /// Every route of every gateway, sorted by name; a route without `transform` has neither
    /// direction set (so a request still routed by a previous config passes as that route now
    /// says, and a route the policy does not list at all is refused).
    #[prost(message, repeated, tag = "1")]
    pub routes: Vec<RouteTransform>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RouteTransform {
    #[prost(string, tag = "1")]
    pub name: String,
    /// `transform.request.json`.
    #[prost(message, optional, tag = "2")]
    pub request: Option<JsonEdits>,
    /// `transform.response.json`.
    #[prost(message, optional, tag = "3")]
    pub response: Option<JsonEdits>,
    /// `transform.response.xml`.
    #[prost(bool, tag = "4")]
    pub xml: bool,
}

impl RouteTransform {
    /// Whether Envoy must send the response (headers and body) to transform-service.
    pub fn edits_responses(&self) -> bool {
        self.response.is_some() || self.xml
    }
}

/// One direction's edits, in the order they run: remove, set, rename, envelope.
#[derive(Clone, PartialEq, Message)]
pub struct JsonEdits {
    /// JSON Pointers, in file order.
    #[prost(string, repeated, tag = "1")]
    pub remove: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub set: Vec<Member>,
    #[prost(message, repeated, tag = "3")]
    pub rename: Vec<Rename>,
    #[prost(message, optional, tag = "4")]
    pub envelope: Option<Envelope>,
}

/// A name (a JSON Pointer under `set`, a member name under `with`) and a value as JSON text.
#[derive(Clone, PartialEq, Message)]
pub struct Member {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub json: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Rename {
    #[prost(string, tag = "1")]
    pub from: String,
    #[prost(string, tag = "2")]
    pub to: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Envelope {
    #[prost(string, tag = "1")]
    pub field: String,
    /// In file order.
    #[prost(message, repeated, tag = "2")]
    pub with: Vec<Member>,
}
