//! JWKS documents: the reader xds-server validates `jwks_file`s with (`config::jwks`) and the
//! one authz-service builds its verification keys with (`authz_service::jwks`, also used for
//! `jwks_url` answers). No input panics; both agree on which documents are usable.
#![no_main]

use config::JwtAlgorithm;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;

/// Every algorithm but HS* (a JWKS holds public keys only).
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fuzz_target!(|data: &[u8]| {
    let algorithms: Vec<JwtAlgorithm> = JwtAlgorithm::ALL
        .into_iter()
        .filter(|a| !a.is_hmac())
        .collect();
    let checked = config::jwks::parse(data, &algorithms);
    let built = authz_service::jwks::parse(data, &ALGORITHMS);
    assert_eq!(
        checked.is_ok(),
        built.is_ok(),
        "xds-server and authz-service disagree on a JWKS document: {:?} vs {:?}",
        checked.as_ref().err(),
        built.as_ref().err()
    );
    if let Ok(set) = built {
        assert!(!set.all.is_empty(), "a usable key set has a key");
        for kid in set.by_kid.keys() {
            assert!(set.has_kid(kid));
        }
    }
});
