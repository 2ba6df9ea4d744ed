//! What the fuzz targets share: a fixed in-memory file set for `config::load_text`, the fixed
//! gateway of `fixtures/gateway.yaml` with its compiled authz and rate-limit policies and its
//! ADS snapshots, and a fixed clock. Everything is built once per process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use authz_service::policy::{Env, Policy};
use authz_service::remote::RemoteJwks;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};

/// The clock of every target (2030-03-17), so a run does not depend on the day: the seed tokens
/// are valid at this instant and the fixture's API keys neither expired nor pending.
pub const NOW: u64 = 1_900_000_000;

/// The directory every in-memory file is under, and that relative references resolve against.
pub const BASE: &str = "/fuzz";

/// The HS256 secret of the `shared` provider (`FUZZ_HS_SECRET`); the seed tokens are signed
/// with it.
pub const HS_SECRET: &[u8] = b"fuzz-only-hs256-secret-0123456789abcdef";

/// The environment variable the fixture's `shared` provider reads its secret from.
pub const HS_SECRET_ENV: &str = "FUZZ_HS_SECRET";

/// The fixed gateway of the policy targets.
pub const GATEWAY_YAML: &str = include_str!("../fixtures/gateway.yaml");

/// The RSA and EC private keys whose public halves are in the JWKS document, with their `kid`s
/// (the seed tokens are signed with them).
pub const RSA_PEM: &[u8] = include_bytes!("../../authz-service/tests/fixtures/rsa2048.pem");
pub const EC_PEM: &[u8] = include_bytes!("../../authz-service/tests/fixtures/ec256.pem");
pub const RSA_KID: &str = "fuzz-rsa";
pub const EC_KID: &str = "fuzz-ec";

/// The JWKS document of the fixture's `signed` provider: the RSA key (RS256) and the P-256
/// key (ES256), each with its `kid`, `alg` and `use`.
pub static JWKS: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let jwk = |pem: &[u8], alg: Algorithm, kid: &str| {
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            _ => EncodingKey::from_rsa_pem(pem),
        }
        .expect("fixture key");
        let mut j = serde_json::to_value(Jwk::from_encoding_key(&key, alg).expect("public JWK"))
            .expect("JWK as JSON");
        let o = j.as_object_mut().expect("a JWK is an object");
        o.insert("kid".into(), kid.into());
        o.insert("use".into(), "sig".into());
        j
    };
    let keys = vec![
        jwk(RSA_PEM, Algorithm::RS256, RSA_KID),
        jwk(EC_PEM, Algorithm::ES256, EC_KID),
    ];
    serde_json::to_vec(&serde_json::json!({ "keys": keys })).expect("JWKS as JSON")
});

/// Every file a fuzzed gateway.yaml may reference, by absolute path: the names the examples and
/// the test configs use, plus short generic ones a mutation may reach. Anything else is absent.
pub static FILES: LazyLock<BTreeMap<PathBuf, Vec<u8>>> = LazyLock::new(|| {
    let pem = |name: &str| -> &'static [u8] {
        match name {
            "p256.crt" => include_bytes!("../../config/src/testdata/pem/p256.crt"),
            "p256.key" => include_bytes!("../../config/src/testdata/pem/p256.key"),
            "rsa2048.crt" => include_bytes!("../../config/src/testdata/pem/rsa2048.crt"),
            "rsa2048.key" => include_bytes!("../../config/src/testdata/pem/rsa2048.key"),
            "ed25519.crt" => include_bytes!("../../config/src/testdata/pem/ed25519.crt"),
            _ => unreachable!("no fixture {name}"),
        }
    };
    let keys = include_bytes!("../fixtures/keys.yaml").to_vec();
    let demo_keys = include_bytes!("../../examples/demo-api-keys.yaml").to_vec();
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("jwks.json", JWKS.clone()),
        ("keys/jwks.json", JWKS.clone()),
        ("keys.yaml", keys.clone()),
        ("keys/api-keys.yaml", keys),
        ("demo-api-keys.yaml", demo_keys),
    ];
    for (name, fixture) in [
        ("ca.pem", "p256.crt"),
        ("cert.pem", "p256.crt"),
        ("key.pem", "p256.key"),
        ("certs/internal-ca.pem", "rsa2048.crt"),
        ("certs/api.crt", "p256.crt"),
        ("certs/api.key", "p256.key"),
        ("rsa.crt", "rsa2048.crt"),
        ("rsa.key", "rsa2048.key"),
        ("ed25519.crt", "ed25519.crt"),
        ("/tls/ca.pem", "p256.crt"),
        ("/tls/edge.pem", "p256.crt"),
        ("/tls/edge.key", "p256.key"),
    ] {
        files.push((name, pem(fixture).to_vec()));
    }
    files
        .into_iter()
        .map(|(name, bytes)| (Path::new(BASE).join(name), bytes))
        .collect()
});

/// Reads from [`FILES`] only.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    FILES
        .get(path)
        .cloned()
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
}

/// `config::load` of `src` as `/fuzz/gateway.yaml`, over [`FILES`].
pub fn load(src: &str) -> Result<config::Loaded, config::ConfigErrors> {
    let path = Path::new(BASE).join("gateway.yaml");
    config::load_text(&path, src, Path::new(BASE), &mut read)
}

/// The fixture gateway, loaded.
pub static GATEWAY: LazyLock<config::Loaded> =
    LazyLock::new(|| load(GATEWAY_YAML).unwrap_or_else(|e| panic!("fixtures/gateway.yaml: {e}")));

/// The environment the authz policy compiles in: the HS secret, no remote key sets.
struct FixedEnv;

impl Env for FixedEnv {
    fn var(&self, name: &str) -> Option<Vec<u8>> {
        (name == HS_SECRET_ENV).then(|| HS_SECRET.to_vec())
    }

    fn remote(&mut self, url: &str, _: &[Algorithm]) -> Arc<RemoteJwks> {
        unreachable!("fixtures/gateway.yaml has no jwks_url, yet the policy names {url}")
    }
}

/// The authz policy xds-server sends for the fixture gateway, compiled by authz-service.
pub fn auth_policy() -> Policy {
    let p = translate::authz::policy(&GATEWAY).expect("the fixture's authz policy");
    Policy::compile(&p, &mut FixedEnv).unwrap_or_else(|e| panic!("the fixture's policy: {e}"))
}

/// The rate-limit policy xds-server sends for the fixture gateway, compiled by
/// ratelimit-service.
pub fn rate_policy() -> ratelimit_service::policy::Policy {
    let p = translate::ratelimit::policy(&GATEWAY.config);
    ratelimit_service::policy::Policy::compile(&p).expect("the fixture's rate-limit policy")
}

/// The ADS snapshots of two configs, the fixture gateway and `examples/gateway.yaml` (which
/// has the same gateway name, so switching between them is a reload with additions and
/// removals).
pub static SNAPSHOTS: LazyLock<[Arc<ads::snapshot::Snapshots>; 2]> = LazyLock::new(|| {
    let example = load(include_str!("../../examples/gateway.yaml"))
        .unwrap_or_else(|e| panic!("examples/gateway.yaml: {e}"));
    [&*GATEWAY, &example].map(|l| Arc::new(translate::snapshots(l).expect("snapshots")))
});
