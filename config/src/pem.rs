//! The PEM files gateway.yaml names (listener certificates and keys, upstream and policy-service
//! CAs, client certificates and their keys), checked where gateway.yaml is checked: a broken file
//! is refused by `xds-server validate` and at reload with its name, instead of reaching Envoy as
//! an inline Secret it NACKs ("Failed to load certificate chain from <inline>"), which names no
//! file.
//!
//! What is checked is what Envoy (BoringSSL) needs: a certificate file holds at least one
//! parseable X.509 certificate, a key file exactly one unencrypted private key of a kind Envoy
//! signs with (RSA of at least 2048 bits, ECDSA P-256, P-384 or P-521, Ed25519), and the key is
//! the one of the first certificate (the leaf). The key is read with aws-lc, BoringSSL's fork, so
//! the kinds accepted here are the kinds Envoy accepts.

use aws_lc_rs::rsa;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
};
use rustls_pki_types::pem::{PemObject, SectionKind};
use x509_parser::public_key::PublicKey;

/// Envoy refuses smaller RSA keys ("only RSA certificates with 2048-bit or larger keys are
/// supported").
pub const MIN_RSA_BITS: usize = 2048;

/// What is wrong with one PEM file; the caller adds the file's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("is not valid PEM: {0}")]
    Syntax(String),
    #[error("holds no certificate (a PEM `CERTIFICATE` block)")]
    NoCertificate,
    #[error("certificate {index} is not a valid X.509 certificate: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error(
        "holds no private key (a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)"
    )]
    NoKey,
    #[error("holds an encrypted private key; Envoy needs it unencrypted")]
    EncryptedKey,
    #[error("holds {0} private keys; expected exactly one")]
    SeveralKeys(usize),
    #[error(
        "the private key cannot be read (expected RSA, ECDSA P-256, P-384 or P-521, or Ed25519): {0}"
    )]
    BadKey(&'static str),
    #[error("holds an RSA key of fewer than {MIN_RSA_BITS} bits, which Envoy refuses")]
    WeakRsa,
    #[error("the leaf certificate's public key cannot be read: {0}")]
    BadPublicKey(String),
    #[error("the private key is not the key of the (first) certificate")]
    Mismatch,
}

/// The DER certificates of a certificate or CA file, in file order; at least one, each a whole
/// X.509 certificate.
pub fn certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, PemError> {
    let mut out = Vec::new();
    for section in sections(pem)? {
        let (SectionKind::Certificate, der) = section else {
            continue;
        };
        let index = out.len() + 1;
        let reason = match x509_parser::parse_x509_certificate(&der) {
            Ok(([], _)) => None,
            Ok(_) => Some("trailing bytes after the certificate".to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = reason {
            return Err(PemError::BadCertificate { index, reason });
        }
        out.push(der);
    }
    if out.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(out)
}

/// A certificate file Envoy presents (a listener's or a client certificate): [`certificates`],
/// and a leaf whose RSA key (if it is RSA) Envoy accepts.
pub fn chain(pem: &[u8]) -> Result<Vec<Vec<u8>>, PemError> {
    let certs = certificates(pem)?;
    if leaf(&certs[0])?.rsa_bits.is_some_and(|b| b < MIN_RSA_BITS) {
        return Err(PemError::WeakRsa);
    }
    Ok(certs)
}

/// The public key of the one private key a key file holds, as a certificate's
/// `subjectPublicKey` holds it (RSA: the `RSAPublicKey` DER; EC: the uncompressed point;
/// Ed25519: the 32 bytes). `None` when the key is valid but beyond what can be checked here
/// (RSA above 8192 bits): Envoy then has the last word.
pub fn private_key(pem: &[u8]) -> Result<Option<Vec<u8>>, PemError> {
    let mut keys = Vec::new();
    for section in sections(pem)? {
        if let (
            kind @ (SectionKind::RsaPrivateKey
            | SectionKind::PrivateKey
            | SectionKind::EcPrivateKey),
            der,
        ) = section
        {
            keys.push(section_key(kind, der));
        }
    }
    match keys.len() {
        1 => keys.remove(0),
        0 if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") => Err(PemError::EncryptedKey),
        0 => Err(PemError::NoKey),
        n => Err(PemError::SeveralKeys(n)),
    }
}

/// A certificate file and its key file: each as [`chain`] and [`private_key`] check it, and the
/// key is the leaf certificate's.
pub fn pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), PemError> {
    let certs = chain(cert_pem)?;
    let Some(public) = private_key(key_pem)? else {
        return Ok(());
    };
    if leaf(&certs[0])?.bits != public {
        return Err(PemError::Mismatch);
    }
    Ok(())
}

/// Every PEM section of a kind rustls knows (others are skipped, as OpenSSL and Envoy skip
/// them), or the first syntax error.
fn sections(pem: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, PemError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Syntax(e.to_string()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The leaf certificate's public key: its `subjectPublicKey` bits, and its size when it is RSA.
struct Leaf {
    bits: Vec<u8>,
    rsa_bits: Option<usize>,
}

fn leaf(der: &[u8]) -> Result<Leaf, PemError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PemError::BadPublicKey(e.to_string()))?;
    let spki = &cert.tbs_certificate.subject_pki;
    let rsa_bits = match spki.parsed() {
        Ok(PublicKey::RSA(k)) => Some(k.key_size()),
        Ok(_) => None,
        Err(e) => return Err(PemError::BadPublicKey(e.to_string())),
    };
    Ok(Leaf {
        bits: spki.subject_public_key.data.to_vec(),
        rsa_bits,
    })
}

/// Who a client certificate names: what an `auth.mtls` provider takes its client id from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject as an RFC 2253 string, as OpenSSL's `XN_FLAG_RFC2253` (and so Envoy's
    /// `x-forwarded-client-cert`) writes it: the last RDN first, `,` between RDNs, `+` inside
    /// one, short attribute names, special characters escaped with `\`.
    pub subject: String,
    /// URI subject alternative names, in certificate order.
    pub uris: Vec<String>,
    /// DNS subject alternative names, in certificate order.
    pub dns: Vec<String>,
}

/// The identity of the first certificate of `pem` (a client's leaf, as Envoy hands it to
/// ext_authz).
pub fn client_identity(pem: &[u8]) -> Result<CertIdentity, PemError> {
    use x509_parser::extensions::GeneralName;
    let der = certificates(pem)?.swap_remove(0);
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| PemError::BadCertificate {
            index: 1,
            reason: e.to_string(),
        })?;
    let mut rdns: Vec<String> = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|atv| {
                let oid = atv.attr_type();
                let name =
                    x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
                        .map_or_else(|_| oid.to_id_string(), str::to_string);
                match atv.as_str() {
                    Ok(v) => format!("{name}={}", rfc2253_escape(v)),
                    // Not a string type: RFC 2253 writes the value's DER in hex.
                    Err(_) => format!("{name}=#{}", hex::encode(atv.attr_value().as_bytes())),
                }
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    let mut out = CertIdentity {
        subject: rdns.join(","),
        ..Default::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => out.uris.push(u.to_string()),
                GeneralName::DNSName(d) => out.dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// RFC 2253 §2.4: `,+"\<>;` escaped, and `#` or a space at the start, a space at the end;
/// control characters as `\XX`.
fn rfc2253_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// One private-key section as [`private_key`] returns it. PKCS#8 says its algorithm inside, so
/// each kind is tried in turn; aws-lc tells an RSA key's size apart from a wrong encoding only by
/// its rejection's description.
fn section_key(kind: SectionKind, der: Vec<u8>) -> Result<Option<Vec<u8>>, PemError> {
    let rsa = |r: Result<rsa::KeyPair, aws_lc_rs::error::KeyRejected>| match r {
        Ok(k) => Some(Ok(Some(k.public_key().as_ref().to_vec()))),
        Err(e) if e.description_() == "TooSmall" => Some(Err(PemError::WeakRsa)),
        Err(e) if e.description_() == "TooLarge" => Some(Ok(None)),
        Err(_) => None,
    };
    let ec = |parse: &dyn Fn(
        &'static aws_lc_rs::signature::EcdsaSigningAlgorithm,
    ) -> Option<EcdsaKeyPair>| {
        [
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &ECDSA_P384_SHA384_ASN1_SIGNING,
            &ECDSA_P521_SHA512_ASN1_SIGNING,
        ]
        .into_iter()
        .find_map(parse)
        .map(|k| Ok(Some(k.public_key().as_ref().to_vec())))
    };
    let found = match kind {
        SectionKind::RsaPrivateKey => rsa(rsa::KeyPair::from_der(&der)),
        SectionKind::EcPrivateKey => ec(&|alg| EcdsaKeyPair::from_private_key_der(alg, &der).ok()),
        _ => rsa(rsa::KeyPair::from_pkcs8(&der))
            .or_else(|| ec(&|alg| EcdsaKeyPair::from_pkcs8(alg, &der).ok()))
            .or_else(|| {
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                    .ok()
                    .map(|k| Ok(Some(k.public_key().as_ref().to_vec())))
            }),
    };
    found.unwrap_or(Err(PemError::BadKey(match kind {
        SectionKind::RsaPrivateKey => "not an RSA private key",
        SectionKind::EcPrivateKey => "not an EC private key on P-256, P-384 or P-521",
        _ => "a PKCS#8 key of no supported kind, or damaged",
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Self-signed test pairs made with `openssl req -x509 -newkey …` (test-only keys, never
    /// used anywhere else); `other-p256.crt` is a second P-256 certificate whose key is not here.
    macro_rules! file {
        ($name:literal) => {
            include_bytes!(concat!("testdata/pem/", $name)).as_slice()
        };
    }

    #[test]
    fn every_key_kind_envoy_signs_with_matches_its_certificate() {
        for (cert, key) in [
            (file!("rsa2048.crt"), file!("rsa2048.key")),
            (file!("rsa2048.crt"), file!("rsa2048-pkcs1.key")),
            (file!("p256.crt"), file!("p256.key")),
            (file!("p256.crt"), file!("p256-sec1.key")),
            (file!("p384.crt"), file!("p384.key")),
            (file!("p521.crt"), file!("p521.key")),
            (file!("ed25519.crt"), file!("ed25519.key")),
        ] {
            pair(cert, key).unwrap_or_else(|e| panic!("{e}"));
        }
        // A chain: the leaf first, then what signed it (here just another certificate).
        let chain = [file!("p256.crt"), file!("other-p256.crt")].concat();
        assert_eq!(certificates(&chain).expect("two certificates").len(), 2);
        pair(&chain, file!("p256.key")).expect("the leaf's key");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        for (cert, key) in [
            (file!("other-p256.crt"), file!("p256.key")),
            (file!("p256.crt"), file!("p384.key")),
            (file!("rsa2048.crt"), file!("p256.key")),
            (file!("ed25519.crt"), file!("rsa2048.key")),
        ] {
            assert_eq!(pair(cert, key), Err(PemError::Mismatch));
        }
        // The key must be the leaf's, not a later certificate's.
        let chain = [file!("other-p256.crt"), file!("p256.crt")].concat();
        assert_eq!(pair(&chain, file!("p256.key")), Err(PemError::Mismatch));
    }

    #[test]
    fn broken_files_are_refused_with_what_is_wrong() {
        let cert = file!("p256.crt");
        let text = std::str::from_utf8(cert).expect("PEM is text");
        // Swapped files, an empty file, text that is no PEM at all.
        assert_eq!(
            certificates(file!("p256.key")),
            Err(PemError::NoCertificate)
        );
        assert_eq!(private_key(cert), Err(PemError::NoKey));
        assert_eq!(certificates(b""), Err(PemError::NoCertificate));
        assert_eq!(
            certificates(b"not a certificate\n"),
            Err(PemError::NoCertificate)
        );
        // Cut short: no END line, or a body that is no longer a whole certificate.
        let cut = &text[..text.len() / 2];
        assert!(matches!(
            certificates(cut.as_bytes()),
            Err(PemError::Syntax(_))
        ));
        let lines: Vec<&str> = text.lines().collect();
        let short = [&lines[..3], &lines[lines.len() - 1..]].concat().join("\n");
        assert!(
            matches!(
                certificates(short.as_bytes()),
                Err(PemError::BadCertificate { index: 1, .. })
            ),
            "{:?}",
            certificates(short.as_bytes())
        );
        // A base64 body with a character base64 does not have.
        let bad = text.replacen('A', "*", 1).replacen("MII", "M!I", 1);
        assert!(certificates(bad.as_bytes()).is_err());
        // The second certificate is the broken one: it is named.
        let two = format!("{text}{short}\n");
        assert!(matches!(
            certificates(two.as_bytes()),
            Err(PemError::BadCertificate { index: 2, .. })
        ));

        assert_eq!(
            private_key(&[file!("p256.key"), file!("p384.key")].concat()),
            Err(PemError::SeveralKeys(2))
        );
        assert_eq!(
            private_key(file!("p256-encrypted.key")),
            Err(PemError::EncryptedKey)
        );
        // A PKCS#8 block whose contents are not a key.
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            private_key(junk.as_bytes()),
            Err(PemError::BadKey(_))
        ));
        let junk = junk.replace("PRIVATE KEY", "EC PRIVATE KEY");
        assert!(matches!(
            private_key(junk.as_bytes()),
            Err(PemError::BadKey(_))
        ));
    }

    #[test]
    fn rsa_keys_below_2048_bits_are_refused_as_envoy_refuses_them() {
        assert_eq!(chain(file!("rsa1024.crt")), Err(PemError::WeakRsa));
        assert_eq!(private_key(file!("rsa1024.key")), Err(PemError::WeakRsa));
        // As a CA it is only a certificate to trust.
        assert_eq!(certificates(file!("rsa1024.crt")).map(|c| c.len()), Ok(1));
    }
}
