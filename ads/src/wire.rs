//! Hand-assembled discovery responses and the gRPC codec that sends them.
//!
//! Responses are spliced together from the snapshot's pre-encoded resource bytes instead of being
//! rebuilt as prost messages per stream: a resource is serialized once per snapshot, however many
//! Envoys receive it. Field numbers are those of `envoy.service.discovery.v3.DiscoveryResponse`
//! and `DeltaDiscoveryResponse`; a test decodes the output with prost to keep them honest.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// An already-encoded protobuf message.
#[derive(Debug, Clone)]
pub struct Encoded(pub Bytes);

fn put_field(buf: &mut BytesMut, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

fn field_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + encoded_len_varint(len as u64) + len
}

/// `DiscoveryResponse { version_info: 1, resources: 2 (Any), type_url: 4, nonce: 5 }`.
pub fn sotw_response<'a>(
    version: &str,
    resources: impl Iterator<Item = &'a Bytes> + Clone,
    type_url: &str,
    nonce: &str,
) -> Encoded {
    let len = field_len(1, version.len())
        + resources
            .clone()
            .map(|r| field_len(2, r.len()))
            .sum::<usize>()
        + field_len(4, type_url.len())
        + field_len(5, nonce.len());
    let mut buf = BytesMut::with_capacity(len);
    put_field(&mut buf, 1, version.as_bytes());
    for r in resources {
        put_field(&mut buf, 2, r);
    }
    put_field(&mut buf, 4, type_url.as_bytes());
    put_field(&mut buf, 5, nonce.as_bytes());
    Encoded(buf.freeze())
}

/// `DeltaDiscoveryResponse { system_version_info: 1, resources: 2 (Resource), type_url: 4,
/// nonce: 5, removed_resources: 6 }`.
pub fn delta_response<'a>(
    system_version: &str,
    resources: impl Iterator<Item = &'a Bytes> + Clone,
    type_url: &str,
    removed: &[String],
    nonce: &str,
) -> Encoded {
    let len = field_len(1, system_version.len())
        + resources
            .clone()
            .map(|r| field_len(2, r.len()))
            .sum::<usize>()
        + field_len(4, type_url.len())
        + field_len(5, nonce.len())
        + removed.iter().map(|r| field_len(6, r.len())).sum::<usize>();
    let mut buf = BytesMut::with_capacity(len);
    put_field(&mut buf, 1, system_version.as_bytes());
    for r in resources {
        put_field(&mut buf, 2, r);
    }
    put_field(&mut buf, 4, type_url.as_bytes());
    put_field(&mut buf, 5, nonce.as_bytes());
    for r in removed {
        put_field(&mut buf, 6, r.as_bytes());
    }
    Encoded(buf.freeze())
}

/// gRPC codec: decodes requests with prost, writes pre-encoded responses verbatim.
#[derive(Debug)]
pub struct PreEncodedCodec<Req>(PhantomData<fn() -> Req>);

impl<Req> Default for PreEncodedCodec<Req> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Req: prost::Message + Default + Send + 'static> Codec for PreEncodedCodec<Req> {
    type Encode = Encoded;
    type Decode = Req;
    type Encoder = PreEncodedCodec<()>;
    type Decoder = ProstDecoder<Req>;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedCodec(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

impl Encoder for PreEncodedCodec<()> {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

#[derive(Debug)]
pub struct ProstDecoder<T>(PhantomData<fn() -> T>);

impl<T: prost::Message + Default> Decoder for ProstDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use proto::pb::envoy::service::discovery::v3 as d;

    #[test]
    fn sotw_response_decodes_as_discovery_response() {
        let any = proto::pb::google::protobuf::Any {
            type_url: "t".into(),
            value: vec![1, 2, 3],
        };
        let bytes: Bytes = any.encode_to_vec().into();
        let enc = sotw_response("v1", [bytes.clone(), bytes].iter(), "t", "7");
        let r = d::DiscoveryResponse::decode(enc.0).unwrap();
        assert_eq!(r.version_info, "v1");
        assert_eq!(r.type_url, "t");
        assert_eq!(r.nonce, "7");
        assert_eq!(r.resources, vec![any.clone(), any]);
    }

    #[test]
    fn delta_response_decodes_as_delta_discovery_response() {
        let res = d::Resource {
            name: "a".into(),
            version: "1".into(),
            ..Default::default()
        };
        let bytes: Bytes = res.encode_to_vec().into();
        let enc = delta_response("sv", [bytes].iter(), "t", &["gone".to_string()], "9");
        let r = d::DeltaDiscoveryResponse::decode(enc.0).unwrap();
        assert_eq!(r.system_version_info, "sv");
        assert_eq!(r.resources, vec![res]);
        assert_eq!(r.removed_resources, vec!["gone".to_string()]);
        assert_eq!((r.type_url.as_str(), r.nonce.as_str()), ("t", "9"));
    }
}
