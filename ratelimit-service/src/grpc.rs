//! The RLS gRPC endpoint, decoding requests leniently.
//!
//! Protobuf `string` fields must hold UTF-8, and the generated server refuses a request that
//! breaks the rule with a gRPC error. Envoy copies request header bytes into descriptor values
//! without checking them, and a gRPC error makes Envoy apply its failure mode, which is usually
//! "allow": so a client could escape a `per: header:<name>` limit by sending one byte that is not
//! UTF-8. This endpoint decodes the same wire format into a mirror of `RateLimitRequest` whose
//! strings are bytes, and repairs invalid UTF-8 (U+FFFD) before the limiter sees it. Repair can
//! only merge distinct malformed values into one counter, which is stricter, never looser.

use std::sync::Arc;

use proto::pb::envoy::extensions::common::ratelimit::v3::{
    rate_limit_descriptor::Entry, RateLimitDescriptor,
};
use proto::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use proto::pb::google::protobuf::UInt64Value;
use tonic::codegen::BoxFuture;
use xds_client::grpc::{OneMethod, UnaryMethod};

use crate::service::RateLimiter;
use crate::store::CounterStore;

/// `envoy.service.ratelimit.v3.RateLimitRequest` with `bytes` where the original has `string`.
/// Field numbers match; fields we do not use (a descriptor's `limit` override) are skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub domain: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RawDescriptor>,
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<RawEntry>,
    #[prost(message, optional, tag = "3")]
    pub hits_addend: Option<UInt64Value>,
    #[prost(bool, tag = "4")]
    pub is_negative_hits: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawEntry {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl From<RawRequest> for RateLimitRequest {
    fn from(r: RawRequest) -> Self {
        RateLimitRequest {
            domain: text(r.domain),
            descriptors: r
                .descriptors
                .into_iter()
                .map(|d| RateLimitDescriptor {
                    entries: d
                        .entries
                        .into_iter()
                        .map(|e| Entry {
                            key: text(e.key),
                            value: text(e.value),
                        })
                        .collect(),
                    hits_addend: d.hits_addend,
                    is_negative_hits: d.is_negative_hits,
                    ..Default::default()
                })
                .collect(),
            hits_addend: r.hits_addend,
        }
    }
}

/// The RLS endpoint tonic serves: `ShouldRateLimit`, decoded into [`RawRequest`] and repaired.
pub type RlsServer<S> = OneMethod<Rls<S>>;

/// The limiter as the RLS method's handler.
pub struct Rls<S>(pub Arc<RateLimiter<S>>);

/// The endpoint serving `limiter`.
pub fn rls_server<S: CounterStore>(limiter: Arc<RateLimiter<S>>) -> RlsServer<S> {
    OneMethod::new(Rls(limiter))
}

impl<S: CounterStore> UnaryMethod for Rls<S> {
    const SERVICE: &'static str = "envoy.service.ratelimit.v3.RateLimitService";
    const PATH: &'static str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
    type Codec = tonic_prost::ProstCodec<RateLimitResponse, RawRequest>;

    fn call(
        self: Arc<Self>,
        request: tonic::Request<RawRequest>,
    ) -> BoxFuture<tonic::Response<RateLimitResponse>, tonic::Status> {
        Box::pin(async move {
            let request = request.map(RateLimitRequest::from);
            self.0.handle(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn invalid_utf8_is_repaired_not_refused() {
        let raw = RawRequest {
            domain: b"gateway".to_vec(),
            descriptors: vec![RawDescriptor {
                entries: vec![RawEntry {
                    key: b"header".to_vec(),
                    value: vec![b'a', 0xff, b'b'],
                }],
                ..Default::default()
            }],
            hits_addend: 2,
        };
        let bytes = raw.encode_to_vec();
        assert!(
            RateLimitRequest::decode(bytes.as_slice()).is_err(),
            "the strict type refuses it"
        );
        let req = RateLimitRequest::from(RawRequest::decode(bytes.as_slice()).unwrap());
        assert_eq!(req.descriptors[0].entries[0].value, "a\u{fffd}b");
        assert_eq!(req.hits_addend, 2);
        // A valid request decodes to the same thing either way.
        let ok = RateLimitRequest {
            domain: "gateway".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![Entry {
                    key: "rule".into(),
                    value: "x#0".into(),
                }],
                hits_addend: Some(UInt64Value { value: 3 }),
                ..Default::default()
            }],
            hits_addend: 1,
        };
        let back =
            RateLimitRequest::from(RawRequest::decode(ok.encode_to_vec().as_slice()).unwrap());
        assert_eq!(back, ok);
    }
}
