//! The binary's command line: `token` mints what the verifier accepts, `apikey` edits keys
//! files, `--help` works.

mod common;

use std::collections::HashMap;
use std::process::Command;

use authz_service::apikey::{Edit, KeysFile};
use authz_service::policy::Decision;
use common::*;
use jsonwebtoken::Algorithm;
use proto::authz::{jwt_provider::Keys, AuthPolicy};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_authz-service"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn minted_tokens_are_accepted() {
    let key = format!("{}/tests/fixtures/ec256.pem", env!("CARGO_MANIFEST_DIR"));
    let t = run(bin().args([
        "token",
        "--alg",
        "ES256",
        "--key",
        &key,
        "--issuer",
        ISS,
        "--aud",
        AUD,
        "--kid",
        "e1",
        "--sub",
        "carol",
        "--claim",
        r#"roles=["admin","user"]"#,
        "--claim",
        "plan=pro",
    ]));
    let mut p = AuthPolicy {
        jwt: vec![jwt_provider(
            "ec",
            &["ES256"],
            Keys::Jwks(jwks(&[jwk(
                "ec256.pem",
                Algorithm::ES256,
                Some("e1"),
                true,
            )])),
        )],
        routes: vec![route("r", &["ec"])],
        ..Default::default()
    };
    p.identity_headers = identity_headers(&p);
    let policy = compile(&p);
    let h: HashMap<String, String> =
        HashMap::from([("authorization".into(), format!("Bearer {t}"))]);
    match policy.decide(Some("r"), &h, "/", now()).await {
        Decision::Allow(a) => {
            let id = a.identity.unwrap();
            assert_eq!(id.client_id, "carol");
            assert_eq!(id.plan, "pro");
            assert_eq!(id.roles, ["admin", "user"]);
        }
        Decision::Deny(d) => panic!("{d:?}"),
    }
    // HS* from a secret in the environment.
    let t = run(bin()
        .env("DEV_SECRET", "0123456789abcdef0123456789abcdef")
        .args([
            "token",
            "--alg",
            "HS256",
            "--secret-env",
            "DEV_SECRET",
            "--issuer",
            ISS,
        ]));
    assert_eq!(t.split('.').count(), 3);
    // Nonsense is refused with a message, not a panic.
    let out = bin()
        .args(["token", "--alg", "none", "--key", &key, "--issuer", ISS])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported algorithm"));
}

#[test]
fn apikey_create_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("keys.yaml");
    let f_arg = f.to_str().unwrap();
    let k = run(bin().args([
        "apikey",
        "create",
        "--keys-file",
        f_arg,
        "--id",
        "p1",
        "--plan",
        "pro",
        "--roles",
        "a,b",
        "--expires",
        "30d",
    ]));
    assert!(k.starts_with("gwk_"));
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(!text.contains(&k[4..]), "only the digest is stored");
    let file = KeysFile::load(&f).unwrap();
    assert_eq!(file.keys[0].roles, ["a", "b"]);
    let ttl = file.keys[0].expires.unwrap() - file.keys[0].created;
    assert_eq!(ttl, 30 * 86_400);
    // Duplicate ids and bad expiries are refused; the file is untouched.
    for args in [
        vec!["--id", "p1", "--plan", "x"],
        vec!["--id", "p2", "--plan", "x", "--expires", "someday"],
    ] {
        let out = bin()
            .args(["apikey", "create", "--keys-file", f_arg])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success());
    }
    assert_eq!(std::fs::read_to_string(&f).unwrap(), text);
    run(bin().args(["apikey", "revoke", "--keys-file", f_arg, "--id", "p1"]));
    assert!(KeysFile::load(&f).unwrap().keys[0].revoked.is_some());
    let out = bin()
        .args(["apikey", "revoke", "--keys-file", f_arg, "--id", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn help_lists_the_commands_and_serve_flags() {
    let h = run(bin().arg("--help"));
    for s in [
        "serve",
        "apikey",
        "token",
        "--xds",
        "--listen",
        "--admin",
        "--log-format",
    ] {
        assert!(h.contains(s), "{s} missing from:\n{h}");
    }
    let h = run(bin().args(["serve", "--help"]));
    for s in [
        "AUTHZ_XDS",
        "AUTHZ_LISTEN",
        "AUTHZ_ADMIN",
        "127.0.0.1:9001",
        "127.0.0.1:9011",
        "127.0.0.1:18000",
    ] {
        assert!(h.contains(s), "{s} missing from:\n{h}");
    }
}

/// `apikey create --config gateway.yaml` warns on stderr when the plan is not one of the
/// config's plans, and creates the key all the same.
#[test]
fn apikey_create_warns_about_a_plan_the_config_does_not_define() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        "version: 1\nrate_limits: { plans: { free: 10/minute, pro: 100/minute }, default_plan: free }\ngateways:\n  edge:\n    listeners: [{ name: http, port: 8080 }]\n    routes:\n      - { name: r, match: { prefix: / }, respond: { status: 200 }, auth: none }\n",
    )
    .unwrap();
    let create = |id: &str, plan: &str| {
        let mut cmd = bin();
        cmd.env_remove("XDS_CONFIG")
            .args(["apikey", "create", "--keys-file"])
            .arg(&keys)
            .args(["--id", id, "--plan", plan]);
        cmd
    };
    let stderr = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{cmd:?}: {err}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("gwk_"));
        err
    };

    let err = stderr(create("a", "gold").arg("--config").arg(&config));
    let warning = err
        .lines()
        .find(|l| l.starts_with("warning: "))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    assert!(
        warning.contains(r#"plan "gold" is not one of"#) && warning.contains("(free, pro)"),
        "{warning}"
    );
    // The same through the environment xds-server reads its config from.
    let err = stderr(create("b", "Pro").env("XDS_CONFIG", &config));
    assert!(
        err.contains(r#"warning: plan "Pro" is not one of"#),
        "{err}"
    );
    // A defined plan, or no config to check against: no warning.
    assert!(!stderr(create("c", "pro").arg("--config").arg(&config)).contains("warning"));
    assert!(!stderr(&mut create("d", "gold")).contains("warning"));
    // A config that cannot be checked is said so, and nothing is refused.
    let err = stderr(
        create("e", "pro")
            .arg("--config")
            .arg(dir.path().join("nope.yaml")),
    );
    assert!(
        err.contains("warning: cannot read") && err.contains("not checked"),
        "{err}"
    );
    let ids: Vec<String> = KeysFile::load(&keys)
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"], "every key was created");
}
