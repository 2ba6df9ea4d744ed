//! The JWT attack checklist, table-driven, on both the accept and the reject side, plus the
//! RFC 7520 JWS examples for the algorithms we support.

mod common;

use std::collections::HashMap;

use authz_service::jwks::{self, JwksError};
use authz_service::jwt::{self, JwtError, MAX_TOKEN_BYTES};
use authz_service::policy::{Decision, Policy};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use proto::authz::{jwt_provider::Keys, AuthPolicy};
use serde_json::json;

fn policy() -> Policy {
    let rsa = jwks(&[
        jwk("rsa2048.pem", Algorithm::RS256, Some("r1"), false),
        jwk("rsa2048-b.pem", Algorithm::RS256, Some("r2"), true),
    ]);
    let asym = jwks(&[
        jwk("ec256.pem", Algorithm::ES256, Some("e1"), true),
        jwk("ec384.pem", Algorithm::ES384, Some("e2"), true),
        jwk("ed25519.pem", Algorithm::EdDSA, Some("d1"), true),
    ]);
    let mut p = AuthPolicy {
        jwt: vec![
            jwt_provider("rsa", &["RS256", "PS256"], Keys::Jwks(rsa)),
            jwt_provider("asym", &["ES256", "ES384", "EdDSA"], Keys::Jwks(asym)),
            jwt_provider(
                "hs",
                &["HS256", "HS384", "HS512"],
                Keys::SecretEnv(SECRET_VAR.into()),
            ),
        ],
        routes: vec![
            route("rsa", &["rsa"]),
            route("asym", &["asym"]),
            route("hs", &["hs"]),
        ],
        ..Default::default()
    };
    p.identity_headers = identity_headers(&p);
    compile(&p)
}

/// `Ok` or the deny reason.
async fn verdict(p: &Policy, route: &str, token: &str) -> Result<(), &'static str> {
    let headers: HashMap<String, String> =
        HashMap::from([("authorization".into(), format!("Bearer {token}"))]);
    match p.decide(Some(route), &headers, "/", now()).await {
        Decision::Allow(_) => Ok(()),
        Decision::Deny(d) => Err(d.reason),
    }
}

fn rs(kid: &str, c: &serde_json::Value) -> String {
    token("rsa2048.pem", Algorithm::RS256, kid, c)
}

fn header_token(header: serde_json::Value, c: &serde_json::Value) -> String {
    sign_raw(
        &header.to_string(),
        &c.to_string(),
        &signing_key("rsa2048.pem", Algorithm::RS256),
        Algorithm::RS256,
    )
}

#[tokio::test]
async fn checklist() {
    let p = policy();
    let now = now();
    let ok = claims(json!({}));
    // The RSA public key as PEM: what an RS→HS confusion attacker signs with.
    let rsa_pub_pem = fixture("rsa2048.pub.pem");
    let payload = ok.to_string();
    let good = rs("r1", &ok);
    let (gh, gp, gs) = {
        let mut it = good.split('.');
        (
            it.next().unwrap().to_string(),
            it.next().unwrap().to_string(),
            it.next().unwrap().to_string(),
        )
    };

    let cases: Vec<(&str, &str, String, Result<(), &str>)> = vec![
        // ---- accepted ----
        ("RS256, kid without alg", "rsa", good.clone(), Ok(())),
        (
            "RS256, kid with alg",
            "rsa",
            token("rsa2048-b.pem", Algorithm::RS256, "r2", &ok),
            Ok(()),
        ),
        (
            "PS256 with an RSA key without alg",
            "rsa",
            token("rsa2048.pem", Algorithm::PS256, "r1", &ok),
            Ok(()),
        ),
        (
            "ES256",
            "asym",
            token("ec256.pem", Algorithm::ES256, "e1", &ok),
            Ok(()),
        ),
        (
            "ES384",
            "asym",
            token("ec384.pem", Algorithm::ES384, "e2", &ok),
            Ok(()),
        ),
        (
            "EdDSA",
            "asym",
            token("ed25519.pem", Algorithm::EdDSA, "d1", &ok),
            Ok(()),
        ),
        ("HS256", "hs", hs_token(Algorithm::HS256, &ok), Ok(())),
        ("HS384", "hs", hs_token(Algorithm::HS384, &ok), Ok(())),
        ("HS512", "hs", hs_token(Algorithm::HS512, &ok), Ok(())),
        (
            "no kid: every fitting key is tried",
            "rsa",
            header_token(json!({"alg": "RS256"}), &ok),
            Ok(()),
        ),
        (
            "typ at+jwt",
            "rsa",
            header_token(json!({"alg": "RS256", "kid": "r1", "typ": "at+jwt"}), &ok),
            Ok(()),
        ),
        (
            "aud as an array",
            "rsa",
            rs("r1", &claims(json!({"aud": ["other", AUD]}))),
            Ok(()),
        ),
        (
            "expired within clock_skew",
            "rsa",
            rs("r1", &claims(json!({"exp": now - 10}))),
            Ok(()),
        ),
        (
            "nbf within clock_skew",
            "rsa",
            rs("r1", &claims(json!({"nbf": now + 10}))),
            Ok(()),
        ),
        (
            "iat within clock_skew",
            "rsa",
            rs("r1", &claims(json!({"iat": now + 10}))),
            Ok(()),
        ),
        (
            "fractional exp",
            "rsa",
            rs("r1", &claims(json!({"exp": (now + 100) as f64 + 0.5}))),
            Ok(()),
        ),
        // ---- 1: alg none ----
        (
            "alg none, empty signature",
            "rsa",
            format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&payload)),
            Err("malformed"),
        ),
        (
            "alg none, with a signature",
            "rsa",
            format!("{}.{}.AAAA", b64(r#"{"alg":"none"}"#), b64(&payload)),
            Err("unsupported_alg"),
        ),
        (
            "alg None",
            "rsa",
            format!("{}.{}.AAAA", b64(r#"{"alg":"None"}"#), b64(&payload)),
            Err("unsupported_alg"),
        ),
        // ---- 2: algorithm confusion ----
        (
            "HS256 signed with the RSA key bytes",
            "rsa",
            sign_raw(
                r#"{"alg":"HS256","kid":"r1"}"#,
                &payload,
                &EncodingKey::from_secret(&rsa_pub_pem),
                Algorithm::HS256,
            ),
            Err("alg_not_allowed"),
        ),
        (
            "RS256 on an HS-only provider",
            "hs",
            good.clone(),
            Err("alg_not_allowed"),
        ),
        (
            "PS256 with a key whose JWK alg is RS256",
            "rsa",
            token("rsa2048-b.pem", Algorithm::PS256, "r2", &ok),
            Err("bad_signature"),
        ),
        (
            "ES256 token with an RSA kid",
            "asym",
            token("ec256.pem", Algorithm::ES256, "r1", &ok),
            Err("unknown_kid"),
        ),
        (
            "ES384 signature under the ES256 key",
            "asym",
            token("ec384.pem", Algorithm::ES384, "e1", &ok),
            Err("bad_signature"),
        ),
        (
            "ES512 is not supported",
            "asym",
            format!(
                "{}.{}.AAAA",
                b64(r#"{"alg":"ES512","kid":"e1"}"#),
                b64(&payload)
            ),
            Err("unsupported_alg"),
        ),
        // ---- 3: kid is an exact lookup ----
        (
            "kid path traversal",
            "rsa",
            rs("../../../../dev/null", &ok),
            Err("unknown_kid"),
        ),
        (
            "kid SQL",
            "rsa",
            rs("r1' OR '1'='1", &ok),
            Err("unknown_kid"),
        ),
        (
            "kid as a number",
            "rsa",
            header_token(json!({"alg": "RS256", "kid": 1}), &ok),
            Err("malformed"),
        ),
        // ---- 4: embedded / referenced keys ----
        (
            "embedded jwk",
            "rsa",
            header_token(
                json!({"alg": "RS256", "kid": "r1",
            "jwk": jwk("rsa2048.pem", Algorithm::RS256, None, true)}),
                &ok,
            ),
            Err("embedded_key"),
        ),
        (
            "jku",
            "rsa",
            header_token(
                json!({"alg": "RS256", "kid": "r1", "jku": "https://evil.test/jwks"}),
                &ok,
            ),
            Err("embedded_key"),
        ),
        (
            "x5u",
            "rsa",
            header_token(
                json!({"alg": "RS256", "kid": "r1", "x5u": "https://evil.test/cert"}),
                &ok,
            ),
            Err("embedded_key"),
        ),
        (
            "x5c",
            "rsa",
            header_token(
                json!({"alg": "RS256", "kid": "r1", "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOC"]}),
                &ok,
            ),
            Err("embedded_key"),
        ),
        // ---- 5-9: time and registered claims ----
        (
            "expired",
            "rsa",
            rs("r1", &claims(json!({"exp": now - 3600}))),
            Err("expired"),
        ),
        (
            "nbf in the future",
            "rsa",
            rs("r1", &claims(json!({"nbf": now + 3600}))),
            Err("nbf"),
        ),
        (
            "iat in the future",
            "rsa",
            rs("r1", &claims(json!({"iat": now + 3600}))),
            Err("iat"),
        ),
        (
            "iat not a number",
            "rsa",
            rs("r1", &claims(json!({"iat": "yesterday"}))),
            Err("bad_claim"),
        ),
        (
            "missing exp",
            "rsa",
            rs("r1", &claims(json!({"exp": null}))),
            Err("missing_claim"),
        ),
        // jsonwebtoken reports a non-numeric exp as missing (CVE-2026-25537 is fixed in ≥ 10.3).
        (
            "exp as a string",
            "rsa",
            rs("r1", &claims(json!({"exp": (now + 3600).to_string()}))),
            Err("missing_claim"),
        ),
        (
            "nbf as a string",
            "rsa",
            rs("r1", &claims(json!({"nbf": "0"}))),
            Err("bad_claim"),
        ),
        // ---- 10-11: audience and issuer ----
        (
            "wrong aud",
            "rsa",
            rs("r1", &claims(json!({"aud": "other"}))),
            Err("audience"),
        ),
        (
            "missing aud",
            "rsa",
            rs("r1", &claims(json!({"aud": null}))),
            Err("missing_claim"),
        ),
        (
            "wrong iss",
            "rsa",
            rs("r1", &claims(json!({"iss": "https://evil.test"}))),
            Err("issuer"),
        ),
        (
            "missing iss",
            "rsa",
            rs("r1", &claims(json!({"iss": null}))),
            Err("issuer"),
        ),
        // ---- 12: crit ----
        (
            "crit",
            "rsa",
            header_token(json!({"alg": "RS256", "kid": "r1", "crit": ["exp"]}), &ok),
            Err("crit"),
        ),
        (
            "b64 false",
            "rsa",
            header_token(json!({"alg": "RS256", "kid": "r1", "b64": false}), &ok),
            Err("crit"),
        ),
        // ---- 13: size ----
        (
            "oversized",
            "rsa",
            rs("r1", &claims(json!({"pad": "x".repeat(MAX_TOKEN_BYTES)}))),
            Err("too_large"),
        ),
        // ---- 14: duplicate names ----
        (
            "duplicate registered claim",
            "rsa",
            sign_raw(
                r#"{"alg":"RS256","kid":"r1"}"#,
                &payload.replacen('{', r#"{"sub":"admin","#, 1),
                &signing_key("rsa2048.pem", Algorithm::RS256),
                Algorithm::RS256,
            ),
            Err("duplicate_member"),
        ),
        (
            "duplicate custom claim",
            "rsa",
            sign_raw(
                r#"{"alg":"RS256","kid":"r1"}"#,
                &payload.replacen('{', r#"{"tenant":"victim","tenant":"attacker","#, 1),
                &signing_key("rsa2048.pem", Algorithm::RS256),
                Algorithm::RS256,
            ),
            Err("duplicate_member"),
        ),
        (
            "duplicate header parameter",
            "rsa",
            sign_raw(
                r#"{"alg":"RS256","kid":"r1","kid":"r2"}"#,
                &payload,
                &signing_key("rsa2048.pem", Algorithm::RS256),
                Algorithm::RS256,
            ),
            Err("duplicate_member"),
        ),
        // ---- 15: encoding ----
        (
            "padded segment",
            "rsa",
            format!("{gh}=.{gp}.{gs}"),
            Err("malformed"),
        ),
        (
            "standard alphabet",
            "rsa",
            format!("{gh}.{gp}.{}", gs.replace('-', "+").replace('_', "/")),
            Err("malformed"),
        ),
        (
            "extra segment",
            "rsa",
            format!("{good}.{gs}"),
            Err("malformed"),
        ),
        (
            "two segments",
            "rsa",
            format!("{gh}.{gp}"),
            Err("malformed"),
        ),
        (
            "JWE shape",
            "rsa",
            format!("{gh}.{gp}.{gs}.{gs}.{gs}"),
            Err("malformed"),
        ),
        (
            "JSON serialization",
            "rsa",
            json!({"payload": gp, "signatures": []}).to_string(),
            Err("malformed"),
        ),
        ("garbage", "rsa", "not-a-token".into(), Err("malformed")),
        (
            "payload not JSON",
            "rsa",
            format!("{gh}.{}.{gs}", b64("hello")),
            Err("malformed"),
        ),
        (
            "payload a JSON array",
            "rsa",
            format!("{gh}.{}.{gs}", b64("[1]")),
            Err("malformed"),
        ),
        // ---- 16-17: signatures ----
        (
            "tampered payload",
            "rsa",
            format!(
                "{gh}.{}.{gs}",
                b64(&claims(json!({"sub": "admin"})).to_string())
            ),
            Err("bad_signature"),
        ),
        (
            "signed by another key",
            "rsa",
            token("rsa2048-b.pem", Algorithm::RS256, "r1", &ok),
            Err("bad_signature"),
        ),
        (
            "ECDSA r=s=0",
            "asym",
            format!(
                "{}.{}.{}",
                b64(r#"{"alg":"ES256","kid":"e1"}"#),
                b64(&payload),
                base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    [0u8; 64]
                )
            ),
            Err("bad_signature"),
        ),
        (
            "empty signature",
            "rsa",
            format!("{gh}.{gp}."),
            Err("malformed"),
        ),
        (
            "HS256 with a blank secret",
            "hs",
            sign_raw(
                r#"{"alg":"HS256"}"#,
                &payload,
                &EncodingKey::from_secret(b""),
                Algorithm::HS256,
            ),
            Err("bad_signature"),
        ),
        // ---- 18: explicit typing ----
        (
            "typ dpop+jwt",
            "rsa",
            header_token(json!({"alg": "RS256", "kid": "r1", "typ": "dpop+jwt"}), &ok),
            Err("typ"),
        ),
        (
            "nested JWT (cty)",
            "rsa",
            header_token(json!({"alg": "RS256", "kid": "r1", "cty": "JWT"}), &ok),
            Err("typ"),
        ),
        // ---- identity ----
        (
            "no subject",
            "rsa",
            rs("r1", &claims(json!({"sub": null}))),
            Err("missing_claim"),
        ),
    ];
    let mut failures = Vec::new();
    for (name, route, token, want) in &cases {
        let got = verdict(&p, route, token).await;
        if got != *want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn verified_tokens_are_cached_but_never_past_exp() {
    let p = policy();
    let now = now();
    let t = rs("r1", &claims(json!({"exp": now + 100})));
    let h: HashMap<String, String> =
        HashMap::from([("authorization".into(), format!("Bearer {t}"))]);
    assert!(matches!(
        p.decide(Some("rsa"), &h, "/", now).await,
        Decision::Allow(_)
    ));
    // Cached: still allowed.
    assert!(matches!(
        p.decide(Some("rsa"), &h, "/", now + 1).await,
        Decision::Allow(_)
    ));
    // At exp + skew the cache entry is dead and re-verification refuses the token.
    match p.decide(Some("rsa"), &h, "/", now + 131).await {
        Decision::Deny(d) => assert_eq!(d.reason, "expired"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn jwks_documents_are_checked() {
    let rs = [Algorithm::RS256];
    let set = |keys: &[serde_json::Value]| jwks::parse(&jwks(keys), &rs);
    // A weak RSA key is an error, not a silent skip.
    // (aws-lc refuses to even load a 1024-bit private key, so the public JWK is written out.)
    let weak = json!({"kty": "RSA", "kid": "w", "alg": "RS256", "e": "AQAB",
        "n": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [0xC3u8; 128])});
    assert!(matches!(
        set(std::slice::from_ref(&weak)),
        Err(JwksError::BadKey(..))
    ));
    // …but only for a provider that could use it: one pinned to ES256 skips it like any other
    // key that is not for it, and keeps its EC key.
    let ec_only = jwks::parse(
        &jwks(&[weak, jwk("ec256.pem", Algorithm::ES256, Some("ec"), true)]),
        &[Algorithm::ES256],
    )
    .expect("a weak RSA key must not spoil an ES256 provider's set");
    assert!(ec_only.has_kid("ec") && !ec_only.has_kid("w"));
    // A repeated kid is ambiguous.
    assert!(matches!(
        set(&[
            jwk("rsa2048.pem", Algorithm::RS256, Some("k"), true),
            jwk("rsa2048-b.pem", Algorithm::RS256, Some("k"), true)
        ]),
        Err(JwksError::DuplicateKid(_))
    ));
    // Encryption keys, other algorithms and other key types are skipped…
    let mut enc = jwk("rsa2048.pem", Algorithm::RS256, Some("enc"), true);
    enc["use"] = "enc".into();
    let mut verify_only = jwk("rsa2048.pem", Algorithm::RS256, Some("ops"), true);
    verify_only["key_ops"] = json!(["encrypt"]);
    let rs512 = jwk("rsa2048.pem", Algorithm::RS512, Some("512"), true);
    let ec = jwk("ec256.pem", Algorithm::ES256, Some("ec"), true);
    let oct = json!({"kty": "oct", "kid": "o", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"});
    let p521 = json!({"kty": "EC", "crv": "P-521", "kid": "p521",
        "x": "AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj0Kt",
        "y": "AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-HqHZR1"});
    for k in [&enc, &verify_only, &rs512, &ec, &oct, &p521] {
        assert!(
            matches!(set(std::slice::from_ref(k)), Err(JwksError::NoUsableKey(_))),
            "{k}"
        );
    }
    // …while the usable key next to them is kept.
    let good = jwk("rsa2048.pem", Algorithm::RS256, Some("good"), true);
    let s = set(&[enc, rs512, ec, oct, p521, good]).unwrap();
    assert_eq!(s.all.len(), 1);
    assert!(s.has_kid("good"));
    // e = 1 is refused.
    let mut e1 = jwk("rsa2048.pem", Algorithm::RS256, Some("e1"), true);
    e1["e"] = "AQ".into();
    assert!(matches!(set(&[e1]), Err(JwksError::BadKey(..))));
    // Not a JWKS at all.
    assert!(jwks::parse(b"{}", &rs).is_err());
    assert!(jwks::parse(b"[", &rs).is_err());
    assert!(jwks::parse(br#"{"keys":[],"keys":[]}"#, &rs).is_err());
}

#[test]
fn hs_secrets_must_be_long_enough_and_present() {
    let mut p = AuthPolicy {
        jwt: vec![jwt_provider(
            "hs",
            &["HS256"],
            Keys::SecretEnv("SHORT".into()),
        )],
        ..Default::default()
    };
    let mut env = TestEnv::new();
    env.vars.insert("SHORT".into(), b"too-short".to_vec());
    let e = Policy::compile(&p, &mut env).err().unwrap().to_string();
    assert!(
        e.contains("shorter than 32 bytes") && !e.contains("too-short"),
        "{e}"
    );
    p.jwt[0].keys = Some(Keys::SecretEnv("ABSENT".into()));
    let e = Policy::compile(&p, &mut env).err().unwrap().to_string();
    assert!(e.contains("ABSENT is not set"), "{e}");
    // HS* never comes from a key document.
    p.jwt[0].keys = Some(Keys::Jwks(jwks(&[])));
    assert!(Policy::compile(&p, &mut env).is_err());
}

// ---- RFC 7520 §4 (JOSE Cookbook) ----

const RFC7520_RSA_JWK: &str = r#"{"kty":"RSA","kid":"bilbo.baggins@hobbiton.example","use":"sig","n":"n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw","e":"AQAB"}"#;
const RFC7520_PAYLOAD: &str = "SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4";
/// §4.1 RS256 (deterministic, so the exact signature is reproduced too).
const RFC7520_4_1: (&str, &str) = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9",
    "MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg",
);
/// §4.2 PS384 (randomized: verify only).
const RFC7520_4_2: (&str, &str) = (
    "eyJhbGciOiJQUzM4NCIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9",
    "cu22eBqkYDKgIlTpzDXGvaFfz6WGoz7fUDcfT0kkOy42miAh2qyBzk1xEsnk2IpN6-tPid6VrklHkqsGqDqHCdP6O8TTB5dDDItllVo6_1OLPpcbUrhiUSMxbbXUvdvWXzg-UD8biiReQFlfz28zGWVsdiNAUf8ZnyPEgVFn442ZdNqiVJRmBqrYRXe8P_ijQ7p8Vdz0TTrxUeT3lm8d9shnr2lfJT8ImUjvAA2Xez2Mlp8cBE5awDzT0qI0n6uiP1aCN_2_jLAeQTlqRHtfa64QQSUmFAAjVKPbByi7xho0uTOcbH510a6GYmJUAfmWjwZ6oD4ifKo8DYM-X72Eaw",
);
/// §4.4 HS256 and its key.
const RFC7520_4_4: (&str, &str) = (
    "eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9",
    "s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0",
);
const RFC7520_HS_KEY: &str = "hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg";

fn flip_last(sig: &str) -> String {
    let mut s = sig.to_string();
    let last = s.pop().unwrap();
    s.push(if last == 'A' { 'B' } else { 'A' });
    s
}

#[test]
fn rfc7520_jws_examples() {
    let verify = |header: &str, sig: &str, key: &jsonwebtoken::DecodingKey, alg| {
        let input = format!("{header}.{RFC7520_PAYLOAD}");
        jsonwebtoken::crypto::verify(sig, input.as_bytes(), key, alg).unwrap_or(false)
    };
    // The cookbook's RSA key goes through our JWKS checks (2048 bits, use=sig, no alg).
    let set = jwks::parse(
        format!(r#"{{"keys":[{RFC7520_RSA_JWK}]}}"#).as_bytes(),
        &[Algorithm::RS256, Algorithm::PS384],
    )
    .unwrap();
    let key = &set.by_kid["bilbo.baggins@hobbiton.example"];
    assert_eq!(key.algorithms, [Algorithm::RS256, Algorithm::PS384]);

    // §4.1 RS256: accepted, reproduced bit for bit, and a flipped signature is refused.
    assert!(verify(
        RFC7520_4_1.0,
        RFC7520_4_1.1,
        &key.key,
        Algorithm::RS256
    ));
    assert!(!verify(
        RFC7520_4_1.0,
        &flip_last(RFC7520_4_1.1),
        &key.key,
        Algorithm::RS256
    ));
    assert!(!verify(
        RFC7520_4_1.0,
        RFC7520_4_1.1,
        &key.key,
        Algorithm::PS256
    ));
    // §4.2 PS384: accepted; tampered or under another algorithm refused.
    assert!(verify(
        RFC7520_4_2.0,
        RFC7520_4_2.1,
        &key.key,
        Algorithm::PS384
    ));
    assert!(!verify(
        RFC7520_4_2.0,
        &flip_last(RFC7520_4_2.1),
        &key.key,
        Algorithm::PS384
    ));
    assert!(!verify(
        RFC7520_4_2.0,
        RFC7520_4_2.1,
        &key.key,
        Algorithm::RS384
    ));
    // §4.4 HS256.
    let hs = jsonwebtoken::DecodingKey::from_base64_secret(&base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            RFC7520_HS_KEY,
        )
        .unwrap(),
    ))
    .unwrap();
    assert!(verify(RFC7520_4_4.0, RFC7520_4_4.1, &hs, Algorithm::HS256));
    assert!(!verify(
        RFC7520_4_4.0,
        &flip_last(RFC7520_4_4.1),
        &hs,
        Algorithm::HS256
    ));

    // The cookbook's payload is prose, not a claims set: as bearer tokens these are refused
    // (before any signature work), as is §4.3's ES512, which the verifier does not support.
    for (h, s) in [RFC7520_4_1, RFC7520_4_2, RFC7520_4_4] {
        let t = format!("{h}.{RFC7520_PAYLOAD}.{s}");
        assert_eq!(jwt::parse(&t).err(), Some(JwtError::Malformed("not JSON")));
    }
    let es512 = format!(
        "{}.{RFC7520_PAYLOAD}.AAAA",
        b64(r#"{"alg":"ES512","kid":"bilbo.baggins@hobbiton.example"}"#)
    );
    assert_eq!(
        jwt::parse(&es512).err(),
        Some(JwtError::UnsupportedAlgorithm)
    );
    // A JWKS holding only the cookbook's P-521 key has nothing we can use.
    let p521 = r#"{"keys":[{"kty":"EC","kid":"bilbo.baggins@hobbiton.example","use":"sig","crv":"P-521","x":"AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj0Kt","y":"AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-HqHZR1"}]}"#;
    assert!(matches!(
        jwks::parse(p521.as_bytes(), &[Algorithm::ES256, Algorithm::ES384]),
        Err(JwksError::NoUsableKey(_))
    ));
}

/// Random mutations of a valid token are never accepted and never panic.
#[tokio::test]
async fn mutated_tokens_are_refused() {
    let p = policy();
    let good = rs("r1", &claims(json!({"roles": ["a"]})));
    let alphabet: Vec<char> =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \"{}"
            .chars()
            .collect();
    // xorshift: deterministic, no extra dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut accepted = 0;
    for _ in 0..3000 {
        let mut chars: Vec<char> = good.chars().collect();
        for _ in 0..(1 + next() % 3) {
            let i = (next() as usize) % chars.len();
            match next() % 3 {
                0 => chars[i] = alphabet[(next() as usize) % alphabet.len()],
                1 => {
                    chars.remove(i);
                }
                _ => chars.insert(i, alphabet[(next() as usize) % alphabet.len()]),
            }
        }
        let t: String = chars.into_iter().collect();
        if t != good && verdict(&p, "rsa", &t).await.is_ok() {
            // Only a change the signature does not cover could pass, and there is none: every
            // byte of a compact JWS is signed or is the signature.
            accepted += 1;
            eprintln!("accepted mutation: {t}");
        }
    }
    assert_eq!(accepted, 0);
}
