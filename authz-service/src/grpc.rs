//! The ext_authz gRPC endpoint, with a decoder that reads only what a decision reads and turns an
//! undecodable Check into a denial.
//!
//! Protobuf `string` fields must hold UTF-8, and the generated server answers a request that
//! breaks the rule with a gRPC error before our code runs. Envoy copies `:path` and `:authority`
//! bytes into the CheckRequest unchecked, and under `failure_mode_allow` a gRPC error lets the
//! request through unauthenticated. This endpoint decodes with [`LenientCodec`], which hands the
//! service an empty `CheckRequest` (no route, no HTTP attributes: always denied) in place of one
//! that does not decode.
//!
//! It decodes [`Lean`], the fields of a CheckRequest the policy reads (the route's context
//! extension, the path, the headers Envoy was told to send, the verified client certificate);
//! protobuf skips the others (addresses, time, method, host, scheme, protocol, size, request id)
//! without allocating or checking them. A field that is not read cannot change a decision, so
//! nothing is weakened; bytes that are not UTF-8 in a field that is read still deny.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BufMut};
use prost::Message;
use proto::pb::envoy::config::core::v3::HeaderMap;
use proto::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use proto::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::BoxFuture;
use tonic::Status;
use xds_client::grpc::{OneMethod, UnaryMethod};

use crate::response::Answer;
use crate::service::AuthzService;

/// `envoy.service.auth.v3.CheckRequest` with only the fields a decision reads; the field numbers
/// are the original's, so it decodes the same bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Lean {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<LeanAttributes>,
}

/// `AttributeContext`: `source`, `request`, `context_extensions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeanAttributes {
    #[prost(message, optional, tag = "1")]
    pub source: Option<LeanPeer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<LeanRequest>,
    #[prost(map = "string, string", tag = "10")]
    pub context_extensions: HashMap<String, String>,
}

/// `AttributeContext.Peer`: `certificate` (set by Envoy for a certificate it verified).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeanPeer {
    #[prost(string, tag = "5")]
    pub certificate: String,
}

/// `AttributeContext.Request`: `http`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeanRequest {
    #[prost(message, optional, tag = "2")]
    pub http: Option<LeanHttp>,
}

/// `AttributeContext.HttpRequest`: `headers`, `path`, `header_map`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeanHttp {
    #[prost(map = "string, string", tag = "3")]
    pub headers: HashMap<String, String>,
    #[prost(string, tag = "4")]
    pub path: String,
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

impl From<Lean> for CheckRequest {
    fn from(lean: Lean) -> Self {
        CheckRequest {
            attributes: lean.attributes.map(|a| AttributeContext {
                source: a.source.map(|p| Peer {
                    certificate: p.certificate,
                    ..Default::default()
                }),
                request: a.request.map(|r| Request {
                    http: r.http.map(|h| HttpRequest {
                        headers: h.headers,
                        path: h.path,
                        header_map: h.header_map,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: a.context_extensions,
                ..Default::default()
            }),
        }
    }
}

/// Encodes responses like tonic's prost codec; decodes requests without ever failing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LenientCodec;

#[derive(Debug, Default, Clone, Copy)]
pub struct LenientDecoder;

impl Decoder for LenientDecoder {
    type Item = Box<CheckRequest>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Box<CheckRequest>>, Status> {
        // Take the whole frame first, so a failed decode leaves nothing half-read behind.
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(Box::new(Lean::decode(bytes).map_or_else(
            |e| {
                tracing::debug!(error = %e, "undecodable CheckRequest; denying it");
                CheckRequest::default()
            },
            CheckRequest::from,
        ))))
    }
}

/// Encodes an [`Answer`]: a message as tonic's prost codec does, an encoded one as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct AnswerEncoder;

impl Encoder for AnswerEncoder {
    type Item = Answer;
    type Error = Status;

    fn encode(&mut self, item: Answer, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            // The buffer grows as it is written, so prost never runs out of room.
            Answer::Message(m) => m.encode(dst).map_err(|e| Status::internal(e.to_string())),
            Answer::Encoded(b) => {
                dst.put_slice(&b);
                Ok(())
            }
        }
    }
}

impl Codec for LenientCodec {
    type Encode = Answer;
    type Decode = Box<CheckRequest>;
    type Encoder = AnswerEncoder;
    type Decoder = LenientDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        AnswerEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        LenientDecoder
    }
}

/// The ext_authz endpoint tonic serves: `Check`, decoded with [`LenientCodec`].
pub type AuthzServer = OneMethod<AuthzService>;

impl UnaryMethod for AuthzService {
    const SERVICE: &'static str = "envoy.service.auth.v3.Authorization";
    const PATH: &'static str = "/envoy.service.auth.v3.Authorization/Check";
    type Codec = LenientCodec;

    fn call(
        self: Arc<Self>,
        request: tonic::Request<Box<CheckRequest>>,
    ) -> BoxFuture<tonic::Response<Answer>, Status> {
        Box::pin(async move { self.answer(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
    use tonic::codec::Streaming;

    /// Decodes one gRPC request frame (no compression) with `decoder`, as tonic's server does.
    async fn decode_frame<D, T>(decoder: D, message: &[u8]) -> Result<Option<T>, Status>
    where
        D: Decoder<Item = T, Error = Status> + Send + 'static,
        T: Send + 'static,
    {
        let len = u32::try_from(message.len()).expect("small message");
        let mut frame = vec![0u8];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(message);
        let body = axum::body::Body::from(frame);
        Streaming::new_request(decoder, body, None, None)
            .message()
            .await
    }

    fn with_path(path: &str) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(attribute_context::HttpRequest {
                        path: path.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn invalid_utf8_decodes_to_an_empty_request() {
        let good = with_path("/ok");
        let mut bytes = good.encode_to_vec();
        // Replace the path's `o` with a byte that is not UTF-8.
        let at = bytes.iter().rposition(|&b| b == b'o').expect("path byte");
        bytes[at] = 0xff;

        // tonic's own prost decoder refuses the frame: a gRPC error, which Envoy's
        // failure_mode_allow would turn into an allow.
        let strict = tonic_prost::ProstCodec::<
            proto::pb::envoy::service::auth::v3::CheckResponse,
            CheckRequest,
        >::default()
        .decoder();
        assert!(decode_frame(strict, &bytes).await.is_err());

        // The codec the endpoint serves with hands the service an empty request instead.
        let lenient = decode_frame(LenientCodec.decoder(), &bytes).await;
        assert_eq!(lenient.unwrap(), Some(Box::default()));

        // A valid request comes through with what a decision reads.
        let valid = decode_frame(LenientCodec.decoder(), &good.encode_to_vec()).await;
        assert_eq!(valid.unwrap(), Some(Box::new(good)));
    }

    /// A CheckRequest as Envoy sends it: every attribute set, headers as `header_map`.
    fn full() -> CheckRequest {
        use proto::pb::envoy::config::core::v3::{address, socket_address, Address, HeaderValue};
        use proto::pb::envoy::config::core::v3::{Metadata, SocketAddress};
        use proto::pb::google::protobuf::Timestamp;
        let addr = |ip: &str, port| Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        };
        let header = |k: &str, v: &str| HeaderValue {
            key: k.into(),
            raw_value: v.as_bytes().to_vec(),
            ..Default::default()
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(addr("10.0.0.7", 50123)),
                    principal: "spiffe://example/client".into(),
                    certificate: "-----BEGIN%20CERTIFICATE-----".into(),
                    ..Default::default()
                }),
                destination: Some(Peer {
                    address: Some(addr("10.0.0.1", 8080)),
                    ..Default::default()
                }),
                request: Some(Request {
                    time: Some(Timestamp {
                        seconds: 1_780_000_000,
                        nanos: 5,
                    }),
                    http: Some(HttpRequest {
                        id: "1234".into(),
                        method: "GET".into(),
                        header_map: Some(HeaderMap {
                            headers: vec![
                                header("authorization", "Bearer a.b.c"),
                                header("x-request-id", "req-1"),
                            ],
                        }),
                        // Envoy sends one or the other (`encode_raw_headers`); both are read.
                        headers: [("x-api-key".to_string(), "key-1".to_string())].into(),
                        path: "/v1/orders?page=2".into(),
                        host: "api.example.com".into(),
                        scheme: "https".into(),
                        size: 0,
                        protocol: "HTTP/1.1".into(),
                        ..Default::default()
                    }),
                }),
                context_extensions: [("route".to_string(), "orders".to_string())].into(),
                metadata_context: Some(Metadata::default()),
                ..Default::default()
            }),
        }
    }

    /// What a decision reads of `r`: the route, the path, the headers, the peer certificate.
    fn read_by_a_decision(r: &CheckRequest) -> impl PartialEq + std::fmt::Debug + '_ {
        let a = r.attributes.as_ref().expect("attributes");
        let h = a
            .request
            .as_ref()
            .and_then(|q| q.http.as_ref())
            .expect("http");
        (
            &a.context_extensions,
            &h.path,
            &h.headers,
            &h.header_map,
            a.source.as_ref().map(|p| &p.certificate),
        )
    }

    #[tokio::test]
    async fn the_lean_decode_keeps_everything_a_decision_reads() {
        let sent = full();
        let got = decode_frame(LenientCodec.decoder(), &sent.encode_to_vec())
            .await
            .unwrap()
            .expect("one message");
        assert_eq!(read_by_a_decision(&got), read_by_a_decision(&sent));
        // And nothing else: the host, addresses and time were skipped, not decoded.
        let a = got.attributes.as_ref().unwrap();
        let h = a.request.as_ref().unwrap().http.as_ref().unwrap();
        assert!(h.host.is_empty() && h.method.is_empty() && a.destination.is_none());
        assert!(a.source.as_ref().unwrap().address.is_none());
    }

    /// Bytes that are not UTF-8 in a field a decision reads still deny; in one it skips (here
    /// the host, which Envoy copies unchecked from `:authority`), they change nothing.
    #[tokio::test]
    async fn bytes_that_are_not_utf8_deny_only_where_a_decision_reads_them() {
        // Replaces the first occurrence of `needle` in the encoded request with `with`.
        async fn spoiled(needle: &[u8], with: &[u8]) -> CheckRequest {
            let mut bytes = full().encode_to_vec();
            let at = bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .expect("needle in the encoding");
            bytes[at..at + with.len()].copy_from_slice(with);
            *decode_frame(LenientCodec.decoder(), &bytes)
                .await
                .unwrap()
                .expect("one message")
        }
        for read in [
            &b"orders?"[..],
            b"route",
            b"x-api",
            b"key-1",
            b"authorization",
            b"BEGIN",
        ] {
            assert_eq!(
                spoiled(read, b"\xff\xfe").await,
                CheckRequest::default(),
                "{}",
                String::from_utf8_lossy(read)
            );
        }
        let (host, sent) = (spoiled(b"api.example", b"\xff\xfe").await, full());
        assert_eq!(read_by_a_decision(&host), read_by_a_decision(&sent));
    }
}

#[cfg(test)]
mod future_size {
    use super::*;

    /// tonic and the endpoint move a Check's future whole (into boxes, between states), so it
    /// must not hold a `CheckRequest` (about a kilobyte) by value, nor the state of the rare
    /// paths (a token to verify, a key refetch, a limit to count), which live in boxes of their
    /// own. It was 6 KB before they did.
    #[test]
    fn a_checks_future_holds_no_request_by_value() {
        let svc = AuthzService::new(crate::service::Shared::new());
        let request = tonic::Request::new(Box::<CheckRequest>::default());
        let size = std::mem::size_of_val(&svc.answer(request));
        eprintln!("answer future: {size} bytes");
        // 1,016 bytes today. The budget leaves room for a field, not for a request by value
        // (a kilobyte) nor for the token-miss path's state unboxed (a few hundred bytes).
        assert!(size <= 1100, "a Check's future is {size} bytes");
    }
}
