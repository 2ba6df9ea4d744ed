//! Protobuf types shared by the gateway's services: Envoy's API (re-exported from `envoy-types`),
//! xDS type URLs, and helpers for encoding messages byte-for-byte deterministically.
//!
//! # Why deterministic encoding needs help
//!
//! xDS versions are content hashes of encoded resources, so the same configuration must encode
//! to the same bytes in every process. prost generates protobuf `map` fields as `std` `HashMap`s,
//! whose iteration order (and therefore encoding order) is randomly seeded per process. A map
//! with zero or one entry is still deterministic; a map with two or more entries is not.
//!
//! The rule this crate supports: a resource handed to `prost::Message::encode` never holds a map
//! with more than one entry. Where a multi-entry map is unavoidable (a `google.protobuf.Struct`
//! used as a JSON log format, for example) it must sit inside a `google.protobuf.Any`, whose
//! `value` is plain bytes that we produce with [`encode_struct`] and [`encode_with_fields`]:
//! encode the enclosing message with that field unset, then append the field ourselves. Protobuf
//! parsers accept fields in any order, so the result decodes to exactly the intended message.

pub use envoy_types::pb;

pub mod authz;
pub mod error;
pub mod ratelimit;
pub mod transform;

use pb::google::protobuf::{value::Kind, Any, ListValue, Struct, Value};
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;

/// xDS type URLs of the resources the control plane serves.
pub mod type_url {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

    // Our own policy resources, served to the policy services on the same ADS server.
    pub const AUTH_POLICY: &str = "type.googleapis.com/gateway.policy.v1.AuthPolicy";
    pub const RATELIMIT_POLICY: &str = "type.googleapis.com/gateway.policy.v1.RateLimitPolicy";
    pub const TRANSFORM_POLICY: &str = "type.googleapis.com/gateway.policy.v1.TransformPolicy";

    // Extension configs packed into `typed_config` fields.
    pub const HTTP_CONNECTION_MANAGER: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    pub const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
    pub const RATELIMIT_FILTER: &str =
        "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit";
    pub const CORS: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
    pub const LUA: &str = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua";
    pub const LUA_PER_ROUTE: &str =
        "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute";
    pub const COMPRESSOR: &str =
        "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor";
    pub const GZIP_COMPRESSOR: &str =
        "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip";
    pub const BROTLI_COMPRESSOR: &str =
        "type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli";
    pub const ZSTD_COMPRESSOR: &str =
        "type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd";
    pub const BUFFER: &str = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer";
    pub const BUFFER_PER_ROUTE: &str =
        "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute";
    pub const CORS_POLICY: &str =
        "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
    pub const STDOUT_ACCESS_LOG: &str =
        "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
    pub const STATS_ACCESS_LOG: &str =
        "type.googleapis.com/envoy.extensions.access_loggers.stats.v3.Config";
    pub const UPSTREAM_TLS_CONTEXT: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
    pub const DOWNSTREAM_TLS_CONTEXT: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
    pub const EARLY_HEADER_MUTATION: &str =
        "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation";
    pub const CEL_ACCESS_LOG_FILTER: &str =
        "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter";
    pub const RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
    pub const RBAC_PER_ROUTE: &str =
        "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";
    pub const UUID_REQUEST_ID: &str =
        "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig";
    pub const EXT_PROC: &str =
        "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor";
    pub const EXT_PROC_PER_ROUTE: &str =
        "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute";
    pub const OPENTELEMETRY_TRACER: &str =
        "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig";
    pub const HTTP_PROTOCOL_OPTIONS: &str =
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
}

/// The `node.cluster` names the policy services use when they connect to xds-server. No gateway
/// may carry these names.
pub mod group {
    pub const AUTHZ: &str = "authz-service";
    pub const RATELIMIT: &str = "ratelimit-service";
    pub const TRANSFORM: &str = "transform-service";
    /// Every policy group, for the places that must know them all (reserved gateway names,
    /// certificates to issue).
    pub const ALL: [&str; 3] = [AUTHZ, RATELIMIT, TRANSFORM];
}

/// The cluster through which Envoy sends its spans to a gateway's `tracing.collector`; reserved
/// like the policy services' names, so no `services` entry can take it.
pub const TRACING_CLUSTER: &str = "tracing-collector";

/// The most characters of a request's `x-request-id` either policy service echoes into a denial's
/// JSON body or writes into a log line. Envoy keeps a client-sent id (`preserve_external_request_id`),
/// so the id is the client's to choose; a generated one is a 36-character UUID.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// Wraps `msg` in an `Any`. Only deterministic when `msg` holds no map with two or more entries;
/// otherwise build the bytes with [`encode_with_fields`] and use [`pack_bytes`].
pub fn pack<M: Message>(type_url: &str, msg: &M) -> Any {
    pack_bytes(type_url, msg.encode_to_vec())
}

/// Wraps already-encoded message bytes in an `Any`.
pub fn pack_bytes(type_url: &str, value: Vec<u8>) -> Any {
    Any {
        type_url: type_url.to_string(),
        value,
    }
}

/// Encodes `msg`, then appends each `(field number, encoded message)` as a length-delimited field,
/// in the order given. Use it for message-typed fields that `msg` leaves unset because their
/// canonical bytes were produced separately (for a repeated field, pass one pair per element, in
/// element order).
pub fn encode_with_fields<M: Message>(msg: &M, fields: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut buf = msg.encode_to_vec();
    for (tag, bytes) in fields {
        append_bytes_field(&mut buf, *tag, bytes);
    }
    buf
}

/// Appends one length-delimited field (a message, string or bytes value) to `buf`.
pub fn append_bytes_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// Encodes a `google.protobuf.Struct` canonically: entries sorted by key, recursively (nested
/// structs and structs inside lists too). Decodes to a message equal to `s`.
pub fn encode_struct(s: &Struct) -> Vec<u8> {
    let mut entries: Vec<(&String, &Value)> = s.fields.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut buf = Vec::new();
    for (key, value) in entries {
        // A map entry is an embedded message: key = field 1, value = field 2.
        let mut entry = Vec::new();
        append_bytes_field(&mut entry, 1, key.as_bytes());
        append_bytes_field(&mut entry, 2, &encode_value(value));
        // `Struct.fields` is field 1.
        append_bytes_field(&mut buf, 1, &entry);
    }
    buf
}

/// Encodes a `google.protobuf.Value` canonically (see [`encode_struct`]).
pub fn encode_value(v: &Value) -> Vec<u8> {
    match &v.kind {
        // `Value.struct_value` is field 5, `Value.list_value` field 6.
        Some(Kind::StructValue(s)) => {
            let mut buf = Vec::new();
            append_bytes_field(&mut buf, 5, &encode_struct(s));
            buf
        }
        Some(Kind::ListValue(l)) => {
            let mut buf = Vec::new();
            append_bytes_field(&mut buf, 6, &encode_list(l));
            buf
        }
        // Scalars hold no map.
        _ => v.encode_to_vec(),
    }
}

fn encode_list(l: &ListValue) -> Vec<u8> {
    let mut buf = Vec::new();
    for v in &l.values {
        // `ListValue.values` is field 1.
        append_bytes_field(&mut buf, 1, &encode_value(v));
    }
    buf
}

/// Builds a `Struct` of string values (the shape of Envoy JSON format strings).
pub fn string_struct<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Struct {
    Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), string_value(v)))
            .collect(),
    }
}

/// A `Value` holding a string.
pub fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::google::protobuf::NullValue;

    fn sample() -> Struct {
        let mut inner = string_struct([("z", "1"), ("a", "2"), ("m", "3")]);
        inner.fields.insert(
            "list".into(),
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![
                        Value {
                            kind: Some(Kind::StructValue(string_struct([("y", "1"), ("b", "2")]))),
                        },
                        Value {
                            kind: Some(Kind::NumberValue(1.5)),
                        },
                        Value {
                            kind: Some(Kind::NullValue(NullValue::NullValue as i32)),
                        },
                        Value {
                            kind: Some(Kind::BoolValue(true)),
                        },
                    ],
                })),
            },
        );
        let mut outer = string_struct([("k1", "v1"), ("k0", "v0"), ("k2", "")]);
        outer.fields.insert(
            "inner".into(),
            Value {
                kind: Some(Kind::StructValue(inner)),
            },
        );
        outer
    }

    #[test]
    fn canonical_struct_round_trips() {
        let s = sample();
        let bytes = encode_struct(&s);
        assert_eq!(Struct::decode(bytes.as_slice()).unwrap(), s);
    }

    #[test]
    fn canonical_struct_ignores_insertion_order() {
        let a = sample();
        // Rebuild with the entries inserted in reverse order; a fresh HashMap also gets a fresh
        // random seed, so iteration order differs from `a` with high probability.
        let mut b = Struct::default();
        let mut keys: Vec<_> = a.fields.keys().cloned().collect();
        keys.sort();
        for k in keys.into_iter().rev() {
            b.fields.insert(k.clone(), a.fields[&k].clone());
        }
        assert_eq!(encode_struct(&a), encode_struct(&b));
    }

    #[test]
    fn appended_field_decodes_as_if_set() {
        use pb::envoy::config::core::v3::{
            substitution_format_string::Format, SubstitutionFormatString,
        };
        let s = sample();
        let partial = SubstitutionFormatString {
            content_type: "application/json".into(),
            ..Default::default()
        };
        // `SubstitutionFormatString.json_format` is field 2.
        let bytes = encode_with_fields(&partial, &[(2, encode_struct(&s))]);
        let decoded = SubstitutionFormatString::decode(bytes.as_slice()).unwrap();
        let expected = SubstitutionFormatString {
            format: Some(Format::JsonFormat(s)),
            ..partial
        };
        assert_eq!(decoded, expected);
    }

    #[test]
    fn pack_sets_type_url() {
        let any = pack(
            type_url::CLUSTER,
            &pb::envoy::config::cluster::v3::Cluster {
                name: "x".into(),
                ..Default::default()
            },
        );
        assert_eq!(any.type_url, type_url::CLUSTER);
        assert!(!any.value.is_empty());
    }
}
