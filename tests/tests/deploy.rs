//! The container files agree with the code: the committed Envoy bootstrap is exactly what
//! `xds-server bootstrap` prints for the compose stack and Envoy accepts it, and the compose
//! example config is valid. (No Docker engine runs here, so the stack itself is not started.)

use std::process::Command;

use tests::xds::{validate, xds_server_bin};
use tests::{envoy_bin, repo_root};

#[test]
fn committed_bootstrap_matches_the_generator_and_envoy_accepts_it() {
    let committed =
        std::fs::read_to_string(repo_root().join("envoy/edge.json")).expect("envoy/edge.json");
    let out = Command::new(xds_server_bin())
        .args([
            "bootstrap",
            "--gateway",
            "edge",
            "--xds",
            "xds-server:18000",
            "--node-id",
            "edge-compose",
        ])
        .args(["--admin-address", "0.0.0.0", "--admin-port", "9901"])
        .output()
        .expect("run xds-server bootstrap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        committed.trim(),
        "envoy/edge.json is stale: regenerate it with the command in this test"
    );
    let check = Command::new(envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(repo_root().join("envoy/edge.json"))
        .output()
        .expect("run envoy --mode validate");
    assert!(
        check.status.success(),
        "Envoy rejects envoy/edge.json: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn compose_example_config_is_valid() {
    let out = validate(&repo_root().join("examples/gateway.docker.yaml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_file_names_the_committed_bootstrap_and_config() {
    let compose = std::fs::read_to_string(repo_root().join("docker-compose.yml"))
        .expect("docker-compose.yml");
    for needle in [
        "./envoy/edge.json:/etc/envoy/edge.json",
        "./examples/gateway.docker.yaml:",
        "envoyproxy/envoy:v1.40.0",
    ] {
        assert!(
            compose.contains(needle),
            "docker-compose.yml no longer mentions {needle}"
        );
    }
}
