//! Tests of the e2e harness itself: the echo upstream, ensure-envoy, and Envoy from a static
//! bootstrap (no xds-server involved), so a broken harness is told apart from a broken product.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tests::{envoy_bin, free_port, repo_root, wait_for, EchoUpstream, Envoy, HttpClient};

#[tokio::test]
async fn echo_upstream_describes_the_request() {
    let up = EchoUpstream::start("users").await;
    let client = HttpClient::new(up.port());
    let r = client
        .post("/users/42?x=1&y=2")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .header("X-Mixed-Case", "v")
        .body("hello")
        .ok()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), Some("users"));
    let j = r.json();
    assert_eq!(j["upstream"], "users");
    assert_eq!(j["method"], "POST");
    assert_eq!(j["path"], "/users/42");
    assert_eq!(j["query"], "x=1&y=2");
    assert_eq!(j["body"], "hello");
    assert_eq!(j["headers"]["x-multi"], "a,b");
    assert_eq!(j["headers"]["x-mixed-case"], "v");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn echo_upstream_status_and_delay_headers() {
    let up = EchoUpstream::start("svc").await;
    let client = HttpClient::new(up.port());
    let r = client.get("/").header("x-echo-status", "503").ok().await;
    assert_eq!(r.status, 503);
    assert_eq!(r.upstream(), Some("svc"));

    let start = std::time::Instant::now();
    let r = client.get("/").header("x-echo-delay-ms", "300").ok().await;
    assert_eq!(r.status, 200);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "answered after {:?}",
        start.elapsed()
    );

    let err = client
        .get("/")
        .header("x-echo-delay-ms", "2000")
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(
        err.is_err(),
        "a 2 s delay must outlast a 200 ms client timeout"
    );
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn echo_upstream_stops_and_restarts_on_the_same_port() {
    let mut up = EchoUpstream::start("svc").await;
    let port = up.port();
    let client = HttpClient::new(port);
    assert_eq!(client.get("/").ok().await.status, 200);

    up.stop().await;
    assert!(!up.is_running());
    wait_for(
        "the stopped upstream to refuse connections",
        Duration::from_secs(5),
        async || client.get("/").send().await.is_err(),
    )
    .await;

    up.restart().await;
    assert_eq!(up.port(), port);
    let r = client.get("/again").ok().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_path(), Some("/again"));
    assert_eq!(up.hits(), 2);
}

#[test]
fn free_ports_are_not_repeated() {
    let ports: std::collections::HashSet<u16> = (0..50).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 50);
}

#[test]
fn ensure_envoy_is_idempotent_and_prints_only_the_path() {
    let script = repo_root().join("scripts/ensure-envoy");
    let run = || {
        let out = Command::new(&script)
            .env_remove("ENVOY_BIN")
            .output()
            .expect("run ensure-envoy");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second);
    assert_eq!(
        first.lines().count(),
        1,
        "stdout must be the path alone: {first:?}"
    );
    let path = first.trim();
    assert!(std::path::Path::new(path).is_absolute(), "{path}");
    let version = Command::new(path)
        .arg("--version")
        .output()
        .expect("run envoy --version");
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains("version"));
    // The harness resolves the same binary (or $ENVOY_BIN when set).
    assert!(envoy_bin().is_file());
}

/// A static bootstrap: one listener routing everything to one echo upstream.
fn static_bootstrap(admin_port: u16, listen_port: u16, upstream_port: u16) -> String {
    let doc = json!({
        "node": { "id": "static", "cluster": "static" },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": admin_port } } },
        "static_resources": {
            "listeners": [{
                "name": "http",
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": listen_port } },
                "filter_chains": [{ "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "http",
                        "route_config": { "virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": "echo" } }]
                        }] },
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
                        }]
                    }
                }] }]
            }],
            "clusters": [{
                "name": "echo", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": { "cluster_name": "echo", "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                    "address": { "socket_address": { "address": "127.0.0.1", "port_value": upstream_port } }
                } }] }] }
            }]
        }
    });
    serde_json::to_string_pretty(&doc).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envoys_from_static_bootstraps_proxy_to_the_echo_upstream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let up = EchoUpstream::start("static-echo").await;
    let mut envoys = Vec::new();
    for i in 0..2 {
        let (admin, listen) = (free_port(), free_port());
        let bootstrap = static_bootstrap(admin, listen, up.port());
        let envoy =
            Envoy::start_with_bootstrap(&format!("static-{i}"), &bootstrap, admin, dir.path())
                .await;
        envoys.push((envoy, listen));
    }
    for (envoy, listen) in &envoys {
        let r = HttpClient::new(*listen)
            .get("/hello?a=b")
            .header("x-request-id", "abc-123")
            .ok()
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.upstream(), Some("static-echo"));
        assert_eq!(r.upstream_path(), Some("/hello"));
        assert_eq!(r.upstream_header("x-request-id"), Some("abc-123"));
        assert!(
            envoy
                .stat("cluster.echo.upstream_rq_total")
                .await
                .unwrap_or(0)
                >= 1
        );
        let dump = envoy.config_dump(Some("static_clusters")).await;
        assert!(dump.to_string().contains("\"echo\""));
    }
    assert_eq!(up.hits(), 2);
}
