//! TLS certificates (listeners', and the client certificates Envoy presents to upstreams) → SDS
//! Secrets with inline bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use proto::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};

use super::{file, TranslateError};
use config::{ClientCerts, ListenerTls};

/// The certificate chain and key are inlined (never file names) because Envoy may not share our
/// filesystem, and because inlined bytes make a renewed certificate change the Secret's content
/// hash, which is what makes Envoy hot-swap it.
pub(super) fn tls_secret(
    name: String,
    tls: &ListenerTls,
    files: &BTreeMap<PathBuf, Vec<u8>>,
) -> Result<Secret, TranslateError> {
    let chain = file(files, &tls.cert_file, "TLS certificate file")?;
    let key = file(files, &tls.key_file, "TLS key file")?;
    certificate_secret(name, chain, key)
}

/// A certificate chain and its key as a Secret (a listener's, or a client certificate Envoy
/// presents to an upstream).
pub(super) fn certificate_secret(
    name: String,
    chain: &[u8],
    key: &[u8],
) -> Result<Secret, TranslateError> {
    Ok(Secret {
        name,
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(chain)),
            private_key: Some(inline(key)),
            ..Default::default()
        })),
    })
}

/// The CAs a listener verifies client certificates against, as their own Secret so that an
/// edited CA file reaches Envoy as a Secret update like a renewed certificate. Only the trust
/// anchors: the chain is always verified (never `ACCEPT_UNTRUSTED`, which would let a
/// self-signed certificate copying a partner's subject through).
pub(super) fn client_ca_secret(
    name: String,
    certs: &ClientCerts,
    files: &BTreeMap<PathBuf, Vec<u8>>,
) -> Result<Secret, TranslateError> {
    let ca = file(files, &certs.ca_file, "client CA file")?;
    Ok(Secret {
        name,
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(ca)),
                ..Default::default()
            },
        )),
    })
}

fn inline(bytes: &[u8]) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineBytes(bytes.to_vec())),
        ..Default::default()
    }
}
