//! The ext_authz gRPC endpoint, with a decoder that turns an undecodable Check into a denial.
//!
//! Protobuf `string` fields must hold UTF-8, and the generated server answers a request that
//! breaks the rule with a gRPC error before our code runs. Envoy copies `:path` and `:authority`
//! bytes into the CheckRequest unchecked, and under `failure_mode_allow` a gRPC error lets the
//! request through unauthenticated. This endpoint decodes with [`LenientCodec`], which hands the
//! service an empty `CheckRequest` (no route, no HTTP attributes: always denied) in place of one
//! that does not decode.

use std::sync::Arc;

use bytes::Buf;
use prost::Message;
use proto::pb::envoy::service::auth::v3::authorization_server::Authorization;
use proto::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::codegen::BoxFuture;
use tonic::Status;
use xds_client::grpc::{OneMethod, UnaryMethod};

use crate::service::AuthzService;

/// Encodes responses like tonic's prost codec; decodes requests without ever failing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LenientCodec;

#[derive(Debug, Default, Clone, Copy)]
pub struct LenientDecoder;

impl Decoder for LenientDecoder {
    type Item = CheckRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CheckRequest>, Status> {
        // Take the whole frame first, so a failed decode leaves nothing half-read behind.
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(CheckRequest::decode(bytes).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "undecodable CheckRequest; denying it");
            CheckRequest::default()
        })))
    }
}

impl Codec for LenientCodec {
    type Encode = CheckResponse;
    type Decode = CheckRequest;
    type Encoder = tonic_prost::ProstEncoder<CheckResponse>;
    type Decoder = LenientDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
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
        request: tonic::Request<CheckRequest>,
    ) -> BoxFuture<tonic::Response<CheckResponse>, Status> {
        Box::pin(async move { self.check(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
    use tonic::codec::Streaming;

    /// Decodes one gRPC request frame (no compression) with `decoder`, as tonic's server does.
    async fn decode_frame<D>(decoder: D, message: &[u8]) -> Result<Option<CheckRequest>, Status>
    where
        D: Decoder<Item = CheckRequest, Error = Status> + Send + 'static,
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
        let strict = tonic_prost::ProstCodec::<CheckResponse, CheckRequest>::default().decoder();
        assert!(decode_frame(strict, &bytes).await.is_err());

        // The codec the endpoint serves with hands the service an empty request instead.
        let lenient = decode_frame(LenientCodec.decoder(), &bytes).await;
        assert_eq!(lenient.unwrap(), Some(CheckRequest::default()));

        // A valid request comes through whole.
        let valid = decode_frame(LenientCodec.decoder(), &good.encode_to_vec()).await;
        assert_eq!(valid.unwrap(), Some(good));
    }
}
