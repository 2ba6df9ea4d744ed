//! `xds-server validate` warns, and still exits 0, when a public route's match covers a
//! protected route's paths (a public catch-all above or beside a protected prefix).

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
