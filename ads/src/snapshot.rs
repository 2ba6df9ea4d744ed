//! Snapshots: immutable, content-addressed sets of encoded xDS resources, one per node group.
//!
//! A snapshot is built once per accepted config and shared (behind `Arc`) by every stream that
//! serves it. Each resource is encoded exactly once, both as a `google.protobuf.Any` (SotW) and as
//! an `envoy.service.discovery.v3.Resource` (Delta); streams only copy those bytes onto the wire.
//! Versions are SHA-256 content hashes, so a restarted server hands a reconnecting Envoy the very
//! versions it already has.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use sha2::{Digest, Sha256};

/// One encoded resource.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    /// Hex content hash of the encoded resource (first 16 bytes of SHA-256).
    pub version: String,
    /// The encoded `google.protobuf.Any`.
    pub any: Bytes,
    /// The encoded Delta `envoy.service.discovery.v3.Resource` (name, version, Any).
    pub delta: Bytes,
}

impl Resource {
    /// Encodes `message` once as `type_url`.
    pub fn new(type_url: &str, name: impl Into<String>, message: &impl Message) -> Self {
        Self::from_bytes(type_url, name, message.encode_to_vec())
    }

    /// Wraps already-encoded message bytes.
    pub fn from_bytes(type_url: &str, name: impl Into<String>, value: Vec<u8>) -> Self {
        let name = name.into();
        let version = short_hash([value.as_slice()]);
        let any = proto::pb::google::protobuf::Any {
            type_url: type_url.to_string(),
            value,
        };
        let delta = proto::pb::envoy::service::discovery::v3::Resource {
            name: name.clone(),
            version: version.clone(),
            resource: Some(any.clone()),
            ..Default::default()
        };
        Self {
            name,
            version,
            any: any.encode_to_vec().into(),
            delta: delta.encode_to_vec().into(),
        }
    }
}

/// All resources of one type in a snapshot, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TypeSnapshot {
    /// Hash over every (name, version) pair: the SotW `version_info`.
    pub version: String,
    pub resources: BTreeMap<String, Arc<Resource>>,
}

impl TypeSnapshot {
    pub fn new(resources: impl IntoIterator<Item = Resource>) -> Self {
        Self::from_shared(resources.into_iter().map(Arc::new))
    }

    /// Like [`TypeSnapshot::new`] for resources already shared with another snapshot.
    pub fn from_shared(resources: impl IntoIterator<Item = Arc<Resource>>) -> Self {
        let resources: BTreeMap<String, Arc<Resource>> =
            resources.into_iter().map(|r| (r.name.clone(), r)).collect();
        let version = short_hash(
            resources
                .values()
                .flat_map(|r| [r.name.as_bytes(), b"\0", r.version.as_bytes(), b"\n"]),
        );
        Self { version, resources }
    }
}

/// Everything one node group (one gateway, later one policy service) receives.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Hash over every type's version.
    pub version: String,
    /// Type URL → resources. Types absent here are served as empty.
    pub types: BTreeMap<String, TypeSnapshot>,
}

impl Snapshot {
    pub fn new(types: BTreeMap<String, TypeSnapshot>) -> Self {
        let version = short_hash(
            types
                .iter()
                .flat_map(|(t, s)| [t.as_bytes(), b"\0", s.version.as_bytes(), b"\n"]),
        );
        Self { version, types }
    }

    pub fn get(&self, type_url: &str) -> Option<&TypeSnapshot> {
        self.types.get(type_url)
    }
}

/// The snapshots of every node group for one accepted config.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshots {
    /// Hash over all groups: the "config version" shown on `/status`.
    pub version: String,
    pub groups: BTreeMap<String, Arc<Snapshot>>,
}

impl Snapshots {
    pub fn new(groups: BTreeMap<String, Snapshot>) -> Self {
        Self::from_shared(groups.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
    }

    /// Like [`Snapshots::new`] for group snapshots already shared with another set.
    pub fn from_shared(groups: BTreeMap<String, Arc<Snapshot>>) -> Self {
        let version = short_hash(
            groups
                .iter()
                .flat_map(|(g, s)| [g.as_bytes(), b"\0", s.version.as_bytes(), b"\n"]),
        );
        Self { version, groups }
    }
}

/// First 16 bytes of SHA-256 over the concatenated parts, in hex: short enough for logs,
/// long enough that a collision is not a practical concern.
pub fn short_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, body: &[u8]) -> Resource {
        Resource::from_bytes("type.example/T", name, body.to_vec())
    }

    #[test]
    fn versions_are_content_hashes() {
        let a = TypeSnapshot::new([res("a", b"1"), res("b", b"2")]);
        let b = TypeSnapshot::new([res("b", b"2"), res("a", b"1")]);
        assert_eq!(a.version, b.version, "order of insertion must not matter");
        let c = TypeSnapshot::new([res("a", b"1"), res("b", b"3")]);
        assert_ne!(a.version, c.version);
        assert_eq!(a.resources["a"].version, c.resources["a"].version);
        assert_ne!(a.resources["b"].version, c.resources["b"].version);
    }

    #[test]
    fn delta_and_any_encodings_decode() {
        let r = res("x", b"payload");
        let any = proto::pb::google::protobuf::Any::decode(r.any.clone()).unwrap();
        assert_eq!(any.value, b"payload");
        let d =
            proto::pb::envoy::service::discovery::v3::Resource::decode(r.delta.clone()).unwrap();
        assert_eq!(d.name, "x");
        assert_eq!(d.version, r.version);
        assert_eq!(d.resource.unwrap(), any);
    }
}
