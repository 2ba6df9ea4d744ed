//! JWT parsing and verification as authz-service does it (`authz_service::jwt`), against the
//! fixed keys: an HS256 secret, and the RS256 and ES256 keys of the fixture JWKS. No input
//! panics; a token that verifies is one of those algorithms and unexpired at the fixed clock.
#![no_main]

use std::sync::{Arc, LazyLock};

use authz_service::jwt::{self, Keys, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey};
use libfuzzer_sys::fuzz_target;

static VERIFIERS: LazyLock<[Verifier; 2]> = LazyLock::new(|| {
    let set =
        authz_service::jwks::parse(&gateway_fuzz::JWKS, &[Algorithm::RS256, Algorithm::ES256])
            .expect("the fixture JWKS");
    [
        Verifier::new(
            "https://hs.fuzz.test".into(),
            vec!["fuzz-api".into()],
            vec![Algorithm::HS256],
            Keys::Secret(Arc::new(DecodingKey::from_secret(gateway_fuzz::HS_SECRET))),
            30,
        ),
        Verifier::new(
            "https://id.fuzz.test".into(),
            Vec::new(),
            vec![Algorithm::RS256, Algorithm::ES256],
            Keys::Static(Arc::new(set)),
            30,
        ),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = jwt::parse(token) else {
        return;
    };
    let _ = parsed.issuer();
    for v in VERIFIERS.iter() {
        if let Ok(verified) = v.verify(&parsed, gateway_fuzz::NOW) {
            assert!(v.algorithms.contains(&parsed.alg));
            assert!(
                verified.exp + v.skew_secs >= gateway_fuzz::NOW,
                "an expired token verified"
            );
        }
    }
});
