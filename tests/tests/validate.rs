//! `xds-server validate` (spec §7): the shipped example is valid, and a broken file is reported
//! with every error as `file:line:col: message` and exit code 1.

use std::process::Output;

use tests::repo_root;
use tests::xds::validate;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `(line, col)` from a `…gateway.yaml:<line>:<col>: message` line.
fn position(line: &str) -> Option<(usize, usize)> {
    let rest = &line[line.find("gateway.yaml:")? + "gateway.yaml:".len()..];
    let mut parts = rest.splitn(3, ':');
    let l = parts.next()?.trim().parse().ok()?;
    let c = parts.next()?.trim().parse().ok()?;
    parts.next()?;
    Some((l, c))
}

#[test]
fn the_example_config_is_valid() {
    let example = repo_root().join("examples/gateway.yaml");
    assert!(example.is_file(), "{} is missing", example.display());
    let out = validate(&example);
    assert!(
        out.status.success(),
        "validate {} failed ({}):\n{}",
        example.display(),
        out.status,
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "one summary line expected: {stdout:?}"
    );
}

#[test]
fn every_error_is_reported_with_its_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    let yaml = "version: 1
services:
  users: { endpoints: [127.0.0.1:3001], lb: round_robin }
  empty: { endpoints: [] }
gateways:
  edge:
    listeners:
      - { name: http, port: 8080 }
    routes:
      - name: users
        match: { prefix: /users }
        service: users
        colour: blue
        auth: none
      - name: no-auth
        match: { prefix: /open }
        service: users
      - name: dangling
        match: { prefix: /dangling }
        service: nowhere
        auth: none
      - name: slow
        match: { prefix: /slow }
        service: users
        timeout: 5 parsecs
        auth: none
      - name: shadowed
        match: { prefix: /shadowed }
        service: users
        auth: none
        timeout: 0s
        mirror: { service: users, percent: 10% }
";
    std::fs::write(&path, yaml).expect("write config");
    let out = validate(&path);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "exit code 1 expected:\n{all}");
    let line_of = |needle: &str| {
        yaml.lines()
            .position(|l| l.contains(needle))
            .expect("needle")
            + 1
    };
    assert!(
        all.contains("`timeout: 0s` cannot be combined with `mirror`"),
        "a mirror on a route without a timeout is refused:\n{all}"
    );
    // Each error names the file and the line it is about; a route without `auth` is reported
    // somewhere within that route.
    for (what, lines) in [
        ("empty endpoint list", vec![line_of("empty:")]),
        ("unknown key `colour`", vec![line_of("colour: blue")]),
        (
            "missing auth",
            (line_of("name: no-auth")..line_of("name: dangling")).collect::<Vec<_>>(),
        ),
        ("unknown service", vec![line_of("service: nowhere")]),
        ("bad duration", vec![line_of("5 parsecs")]),
        ("mirror without a timeout", vec![line_of("timeout: 0s")]),
    ] {
        let found = all
            .lines()
            .filter_map(position)
            .any(|(line, _col)| lines.contains(&line));
        assert!(
            found,
            "no `gateway.yaml:<line>:<col>:` error for {what} (lines {lines:?}) in:\n{all}"
        );
    }
}

/// A misspelt key is one error that names the key it misspells, not also an error for what its
/// absence causes; a misspelt reference names the closest defined name.
#[test]
fn misspellings_get_did_you_mean_and_nothing_derived_from_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    let yaml = "version: 1
services:
  users: { endpoints: [127.0.0.1:3001] }
auth:
  jwt:
    main: { issuer: i, algorithms: [HS256], secret_env: JWT_SECRET }
gateways:
  edge:
    listeners: [{ name: http, port: 8080 }]
    routes:
      - name: users
        match: { prefix: /users }
        servce: users
        auth: main
      - name: orders
        match: { prefix: /orders }
        service: user
        auth: mian
";
    std::fs::write(&path, yaml).expect("write config");
    let out = validate(&path);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code 1 expected:\n{}",
        text(&out)
    );
    let p = path.display();
    let keys = "name, match, service, services, respond, compose, rewrite, auth, require, allow_ips, deny_ips, \
                rate_limit, timeout, retries, max_body, websocket, request_headers, response_headers, \
                mirror, affinity, cache, transform, grpc";
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{p}:13:9: route `users`: unknown key `servce` (did you mean `service`?); expected one of: {keys}\n\
             {p}:17:18: route `orders`: service: unknown service `user` (did you mean `users`?); defined services: users\n\
             {p}:18:15: route `orders`: auth: unknown auth provider `mian` (did you mean `main`?); defined providers: main\n\
             {p}: 3 error(s)\n"
        )
    );
}
