//! The files gateway.yaml names are checked where gateway.yaml is (spec §6, §7): a keys file with
//! a hand edit of the wrong type or name, and a JWKS that is not JSON, are refused by
//! `xds-server validate` with the referenced file's line and column, and a live edit that breaks
//! one is rejected whole (the previous policy stays, `/status` says why).

use std::path::Path;
use std::process::Output;

use tests::gateway::{Full, Shape, API_KEY_HEADER};
use tests::xds::validate;
use tests::{wait_for, wait_for_route, workspace_bin, CONVERGE_TIMEOUT};

/// RFC 7517 Appendix A.1's P-256 public key, as a signing key.
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YilurN5ZQ8ZzCaHyhoRqjITF7Zbwj_T-rA"}]}"#;

/// One keys-file record, as `apikey create` writes it; line 5 is the line after it.
const KEYS: &str = "version: 1\nkeys:\n  - id: \"a\"\n    sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"\n";

/// Hand edits appended to [`KEYS`]'s record, where each is refused, and why.
const BROKEN_KEYS: [(&str, &str, &str); 3] = [
    (
        "    revoked: true\n",
        "keys.yaml:5:14:",
        "keys[0].revoked: expected an RFC 3339 time",
    ),
    (
        "    expires: 1735689600\n",
        "keys.yaml:5:14:",
        "keys[0].expires: expected an RFC 3339 time",
    ),
    (
        "    revoke: \"2026-01-01T00:00:00Z\"\n",
        "keys.yaml:5:5:",
        "keys[0]: unknown key `revoke`",
    ),
];

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes `dir/gateway.yaml` (an ES256 provider on `jwks.json`, an API-key provider on
/// `keys.yaml`) and the two files, then runs `xds-server validate` on it.
fn validate_with(dir: &Path, jwks: &str, keys: &str) -> Output {
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        "version: 1\nservices:\n  api: { endpoints: [127.0.0.1:3001] }\nauth:\n  jwt:\n    main: { issuer: https://x.test, algorithms: [ES256], jwks_file: jwks.json }\n  api_keys:\n    partners: { keys_file: keys.yaml }\ngateways:\n  edge:\n    listeners: [{ name: http, port: 8080 }]\n    routes:\n      - { name: r, match: { prefix: / }, service: api, auth: [main, partners] }\n",
    )
    .expect("write gateway.yaml");
    std::fs::write(dir.join("jwks.json"), jwks).expect("write jwks.json");
    std::fs::write(dir.join("keys.yaml"), keys).expect("write keys.yaml");
    validate(&config)
}

#[test]
fn validate_refuses_broken_keys_and_jwks_files_at_their_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ok = validate_with(dir.path(), JWKS, KEYS);
    assert!(ok.status.success(), "the valid files: {}", text(&ok));

    for (edit, at, why) in BROKEN_KEYS {
        let out = validate_with(dir.path(), JWKS, &format!("{KEYS}{edit}"));
        assert_eq!(out.status.code(), Some(1), "{edit}: {}", text(&out));
        let report = text(&out);
        let line = report
            .lines()
            .find(|l| l.contains(at))
            .unwrap_or_else(|| panic!("{edit}: no line with {at}:\n{report}"));
        assert!(line.contains(why), "{edit}: {line}");
    }

    let out = validate_with(dir.path(), "{\"keys\": [not json]}", KEYS);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    assert!(
        report
            .lines()
            .any(|l| l.contains("jwks.json:1:12: not a JWKS document")),
        "{report}"
    );
}

/// Replaces `path` atomically, as an editor or `apikey` does, so xds-server never reads half.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

const ROUTES: &str = r#"      - name: orders
        match: { prefix: /orders }
        service: api
        auth: [ext, partners]
      - name: public
        match: { prefix: /public }
        service: api
        auth: none
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_edit_that_breaks_a_referenced_file_is_rejected_whole() {
    // Full writes its config before it starts, so the JWKS provider's file must exist by then:
    // it lives next to the keys file, in a directory of its own.
    let jwks_dir = tempfile::tempdir().expect("temp dir");
    let jwks = jwks_dir.path().join("jwks.json");
    std::fs::write(&jwks, JWKS).expect("write jwks.json");
    let shape = Shape {
        jwt_extra: format!(
            "    ext:\n      issuer: https://ext.gateway.test\n      algorithms: [ES256]\n      jwks_file: {}\n",
            jwks.display()
        ),
        ..Shape::new("{ free: 1000000/minute, pro: 1000000/minute }", ROUTES)
    };
    let gw = Full::start(&shape, None).await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/public", 200).await;
    let key = gw.partner_key.clone();
    let orders = async || {
        client
            .get("/orders")
            .header(API_KEY_HEADER, &key)
            .ok()
            .await
            .status
    };
    assert_eq!(orders().await, 200);
    let st = gw.stack.xds.status().await;
    assert!(st["last_error"].is_null(), "{st}");
    let version = st["version"].as_str().expect("status.version").to_string();
    let keys_text = std::fs::read_to_string(&gw.keys_file).expect("keys file");

    let rejected = async |file: &str, what: &str| {
        let st = wait_for(
            &format!("/status to report the broken {what}"),
            CONVERGE_TIMEOUT,
            async || {
                let st = gw.stack.xds.try_status().await.ok()?;
                (!st["last_error"].is_null()).then_some(st)
            },
        )
        .await;
        let first = st["last_error"]["errors"][0]
            .as_str()
            .unwrap_or_else(|| panic!("last_error.errors: {st}"))
            .to_string();
        assert!(first.contains(file), "the error names {file}: {first:?}");
        assert_eq!(
            st["version"],
            version.as_str(),
            "a rejected edit must not change the served version"
        );
        first
    };
    let cleared = async || {
        wait_for(
            "/status to clear last_error",
            CONVERGE_TIMEOUT,
            async || {
                let st = gw.stack.xds.try_status().await.ok()?;
                st["last_error"].is_null().then_some(st)
            },
        )
        .await
    };

    // A hand edit that reads as "revoked" but is not a time: refused, not ignored.
    let line = keys_text.lines().count() + 1;
    replace(&gw.keys_file, &format!("{keys_text}    revoked: true\n"));
    let first = rejected(&format!("api-keys.yaml:{line}:14: "), "keys file").await;
    assert!(
        first.contains("revoked: expected an RFC 3339 time"),
        "{first}"
    );
    assert_eq!(orders().await, 200, "the previous policy stays");
    replace(&gw.keys_file, &keys_text);
    cleared().await;

    // A JWKS that is not JSON.
    replace(&jwks, "{\"keys\": [not json]}");
    let first = rejected("jwks.json:1:12: ", "JWKS").await;
    assert!(first.contains("not a JWKS document"), "{first}");
    assert_eq!(orders().await, 200, "the previous policy stays");
    replace(&jwks, JWKS);
    cleared().await;

    // The files are followed again: a real revocation applies.
    let out = std::process::Command::new(workspace_bin("authz-service"))
        .args(["apikey", "revoke", "--id", "partner-1", "--keys-file"])
        .arg(&gw.keys_file)
        .output()
        .expect("run authz-service apikey revoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the revoked key to be refused",
        CONVERGE_TIMEOUT,
        async || (orders().await == 401).then_some(()),
    )
    .await;
}
