//! Who an ADS client is, as its TLS client certificate says, and the one check that keeps it to
//! its own node group: a certificate names its group as the URI SAN
//! `spiffe://gateway/group/<node.cluster>`, and a client is served only the `node.cluster` its
//! certificate names. Plain-text ADS (no TLS configured) trusts `node.cluster` as before.

use tonic::Status;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Everything before the node group in a client certificate's URI SAN. The one home of the
/// naming scheme: `xds-server certs` issues certificates with [`uri_for`].
pub const GROUP_URI_PREFIX: &str = "spiffe://gateway/group/";

/// The URI SAN a client certificate for `group` carries.
pub fn uri_for(group: &str) -> String {
    format!("{GROUP_URI_PREFIX}{group}")
}

/// What the transport says about a stream's client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Plain-text ADS: nothing to check `node.cluster` against.
    Unauthenticated,
    /// A TLS client whose certificate names these node groups (possibly none).
    Certified(Vec<String>),
}

impl Peer {
    /// The peer of a stream on a server that requires certificates (`tls`) or not. `certs` is
    /// the chain the client presented, leaf first.
    pub fn from_certs<C: AsRef<[u8]>>(tls: bool, certs: Option<&[C]>) -> Self {
        if !tls {
            return Peer::Unauthenticated;
        }
        Peer::Certified(
            certs
                .and_then(|c| c.first())
                .map(|leaf| groups_of(leaf.as_ref()))
                .unwrap_or_default(),
        )
    }
}

/// The node groups a DER certificate names: each URI SAN of the form [`uri_for`]. A certificate
/// that does not parse names none.
pub fn groups_of(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => u.strip_prefix(GROUP_URI_PREFIX),
            _ => None,
        })
        .filter(|g| !g.is_empty() && !g.contains('/'))
        .map(str::to_string)
        .collect()
}

/// Why a client was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the client certificate names no node group (expected a URI SAN {GROUP_URI_PREFIX}<node.cluster>)")]
    NoGroup,
    #[error(
        "node.cluster {claimed:?} is not the node group the client certificate names ({named})"
    )]
    OtherGroup { claimed: String, named: String },
}

impl Refused {
    /// The label of `xds_refused_clients_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::NoGroup => "no_group",
            Refused::OtherGroup { .. } => "other_group",
        }
    }
}

impl From<Refused> for Status {
    /// A refused client is told why; it reconnects with the same certificate and is refused
    /// again, which is right: only a new certificate (or node.cluster) can help.
    fn from(r: Refused) -> Self {
        Status::permission_denied(r.to_string())
    }
}

/// The check: may `peer` read node group `claimed` (the first request's `node.cluster`)?
pub fn admit(peer: &Peer, claimed: &str) -> Result<(), Refused> {
    match peer {
        Peer::Unauthenticated => Ok(()),
        Peer::Certified(groups) if groups.is_empty() => Err(Refused::NoGroup),
        Peer::Certified(groups) if groups.iter().any(|g| g == claimed) => Ok(()),
        Peer::Certified(groups) => Err(Refused::OtherGroup {
            claimed: claimed.to_string(),
            named: groups.join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: &[rcgen::SanType]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans.to_vec();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(s: &str) -> rcgen::SanType {
        rcgen::SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn the_uri_san_names_the_group() {
        let der = cert(&[uri(&uri_for("edge"))]);
        assert_eq!(groups_of(&der), ["edge"]);
        assert_eq!(uri_for("edge"), "spiffe://gateway/group/edge");
    }

    #[test]
    fn only_our_scheme_counts() {
        let der = cert(&[
            rcgen::SanType::DnsName("edge".try_into().unwrap()),
            uri("spiffe://other/group/edge"),
            uri("spiffe://gateway/edge"),
            uri(GROUP_URI_PREFIX),
            uri(&uri_for("a/b")),
            uri(&uri_for("internal")),
        ]);
        assert_eq!(groups_of(&der), ["internal"]);
        assert_eq!(groups_of(b"not a certificate"), Vec::<String>::new());
    }

    #[test]
    fn a_certificate_admits_its_group_only() {
        let edge = Peer::from_certs(true, Some(&[cert(&[uri(&uri_for("edge"))])]));
        assert_eq!(admit(&edge, "edge"), Ok(()));
        assert_eq!(
            admit(&edge, "authz-service"),
            Err(Refused::OtherGroup {
                claimed: "authz-service".into(),
                named: "edge".into()
            })
        );
        assert!(admit(&edge, "").is_err());
        let none = Peer::from_certs(true, Some(&[cert(&[])]));
        assert_eq!(admit(&none, "edge"), Err(Refused::NoGroup));
        assert_eq!(
            admit(&Peer::from_certs::<Vec<u8>>(true, None), "edge"),
            Err(Refused::NoGroup)
        );
        let status = Status::from(Refused::NoGroup);
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn plain_text_trusts_node_cluster() {
        let peer = Peer::from_certs(false, Some(&[cert(&[uri(&uri_for("edge"))])]));
        assert_eq!(peer, Peer::Unauthenticated);
        assert_eq!(admit(&peer, "authz-service"), Ok(()));
    }
}
