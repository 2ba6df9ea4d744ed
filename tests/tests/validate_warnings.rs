//! `xds-server validate` warns, and still exits 0, when a public route's match covers a
//! protected route's paths (a public catch-all above or beside a protected prefix), and when a
//! header mapping holds an entry named like a key one level up (a provider key that slipped under
//! `headers:` by indentation).

use tests::xds::validate;

const CONFIG: &str = "version: 1
services:
  api: { endpoints: [127.0.0.1:3001] }
auth:
  jwt: { main: { issuer: i, algorithms: [HS256], secret_env: JWT_SECRET } }
gateways:
  edge:
    listeners: [{ name: http, port: 8080 }]
    routes:
      - { name: docs, match: { prefix: /api }, service: api, auth: none }
      - { name: admin, match: { prefix: /api/admin }, service: api, auth: main }
      - { name: health, match: { path: /health }, service: api, auth: none }
";

#[test]
fn a_public_route_covering_a_protected_one_is_a_warning() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, CONFIG).expect("write config");
    let out = validate(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning is no error: {stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("`docs`") && warnings[0].contains("`admin`"),
        "{stderr}"
    );

    // Narrowed to what it serves, the public route is fine.
    std::fs::write(
        &path,
        CONFIG.replace("prefix: /api }", "prefix: /api/docs }"),
    )
    .expect("write config");
    let out = validate(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning:"), "{stderr}");
}

/// A provider key indented under `headers:` is valid (it maps a claim to a header) but leaves the
/// provider's own key at its default: with `plan_claim: tier` there, the plan is still read from
/// the `plan` claim, which tokens carrying `tier` lack, so every pro client gets the default plan.
#[test]
fn a_provider_key_slipped_under_headers_is_a_warning() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    let yaml = "version: 1
services:
  api: { endpoints: [127.0.0.1:3001] }
auth:
  jwt:
    main:
      issuer: i
      algorithms: [HS256]
      secret_env: JWT_SECRET
      headers:
        x-user-id: sub
        plan_claim: tier
gateways:
  edge:
    listeners: [{ name: http, port: 8080 }]
    routes:
      - { name: api, match: { prefix: /api }, service: api, auth: main }
";
    std::fs::write(&path, yaml).expect("write config");
    let out = validate(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning is no error: {stderr}");
    assert_eq!(
        stderr,
        format!(
            "{}:12:9: warning: auth.jwt.main.headers: `plan_claim: tier` is a header here, but \
             `plan_claim` is also a key one level up; did you mean it there, outside `headers:`? \
             As written, the upstream header `plan_claim` is set from the claim `tier`, and the \
             key `plan_claim` stays `plan` (its default)\n",
            path.display()
        )
    );

    // One level up, where it belongs, it says nothing.
    std::fs::write(
        &path,
        yaml.replace("        plan_claim: tier\n", "").replace(
            "      headers:\n",
            "      plan_claim: tier\n      headers:\n",
        ),
    )
    .expect("write config");
    let out = validate(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning:"), "{stderr}");
}
