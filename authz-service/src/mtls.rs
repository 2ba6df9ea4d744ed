//! The client certificate Envoy passes in a Check request (`attributes.source.certificate`, the
//! URL-encoded PEM of the verified leaf), read with the PEM code xds-server validates with.

use config::pem::{client_identity, CertIdentity};

/// The identity of the URL-encoded PEM certificate Envoy sent; `None` when it does not decode.
pub fn peer_identity(url_encoded_pem: &str) -> Option<CertIdentity> {
    let pem = percent_decode(url_encoded_pem)?;
    client_identity(&pem).ok()
}

/// `%XX` escapes to bytes; everything else as it is (`+` included: it is base64, not a space).
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoded_certificates_decode() {
        assert_eq!(
            percent_decode("a%2Bb+c%0A").as_deref(),
            Some(&b"a+b+c\n"[..])
        );
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(peer_identity("not a certificate"), None);
    }
}
