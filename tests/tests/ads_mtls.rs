//! An authenticated control plane: `xds-server serve --tls-cert/--tls-key/--client-ca` with the
//! certificates `xds-server certs` issues serves each ADS client only the node group its
//! certificate names. Rogue clients (no certificate, another CA's, another group's) get nothing
//! and never show on `/status`; a real Envoy bootstrapped with `--xds-tls-*` converges and serves
//! its routes, the policy services fetch their policies with their own certificates, and Envoy
//! reaches them (they require a client certificate) with `auth.service.tls` and
//! `rate_limits.service.tls`. A gRPC client in plain text, without a certificate or with one
//! from another CA gets no Check or ShouldRateLimit answer from them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proto::pb::envoy::config::core::v3::Node;
use proto::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use proto::pb::envoy::service::auth::v3::CheckRequest;
use proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use proto::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use proto::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tests::authz::{bearer, token, ISSUER, SECRET, SECRET_ENV};
use tests::xds::{parse_metric, xds_server_bin};
use tests::{
    free_port, wait_for, wait_for_route, workspace_bin, EchoUpstream, Envoy, HttpClient, Proc,
};
use tonic::codegen::tokio_stream::{self as stream, StreamExt as _};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const WAIT: Duration = Duration::from_secs(30);

/// What an ADS client got for its first request.
#[derive(Debug)]
enum Answer {
    Served(DiscoveryResponse),
    /// The stream was refused with this status.
    Refused(tonic::Status),
    /// No stream at all: the connection or the TLS handshake failed.
    NoConnection(String),
}

/// Opens one SotW stream to `addr` over TLS as `node_id` of node group `group` and waits for the first
/// response or the refusal.
async fn first_answer(addr: &str, tls: ClientTlsConfig, node_id: &str, group: &str) -> Answer {
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .expect("client TLS config");
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return Answer::NoConnection(format!("{e:?}")),
    };
    let request = DiscoveryRequest {
        node: Some(Node {
            id: node_id.to_string(),
            cluster: group.to_string(),
            ..Default::default()
        }),
        type_url: ads::CLUSTER.to_string(),
        ..Default::default()
    };
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    // The request stream stays open after the first request, as a real client's does.
    let requests = stream::once(request).chain(stream::pending());
    let mut responses = match client.stream_aggregated_resources(requests).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::PermissionDenied => return Answer::Refused(s),
        Err(s) => return Answer::NoConnection(format!("{s:?}")),
    };
    match tokio::time::timeout(WAIT, responses.message()).await {
        Ok(Ok(Some(r))) => Answer::Served(r),
        Ok(Ok(None)) => Answer::NoConnection("stream closed with no answer".into()),
        Ok(Err(s)) if s.code() == tonic::Code::PermissionDenied => Answer::Refused(s),
        Ok(Err(s)) => Answer::NoConnection(format!("{s:?}")),
        Err(_) => panic!("no answer from xds-server within {WAIT:?}"),
    }
}

fn pem(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// The TLS of a client holding `name`'s certificate and trusting the CA in `dir`.
fn client_tls(dir: &Path, name: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem(dir, "ca.pem")))
        .identity(Identity::from_pem(
            pem(dir, &format!("{name}.pem")),
            pem(dir, &format!("{name}.key")),
        ))
        .domain_name("xds-server")
}

/// How a client reaches a policy service's gRPC port.
#[derive(Debug, Clone, Copy)]
enum Caller<'a> {
    PlainText,
    /// TLS trusting `ca`'s CA, with no client certificate.
    NoCert {
        ca: &'a Path,
    },
    /// TLS trusting `ca`'s CA, presenting `name`'s certificate from `dir`.
    Cert {
        ca: &'a Path,
        dir: &'a Path,
        name: &'a str,
    },
}

/// Connects to `addr` as `caller` (expecting the server's certificate to name `server`) and
/// returns the channel, or why there is none. A refused client certificate may surface only at
/// the first call (TLS 1.3 finishes the client's side of the handshake first), so callers make
/// one before concluding anything.
async fn policy_channel(
    addr: &str,
    server: &str,
    caller: Caller<'_>,
) -> Result<tonic::transport::Channel, String> {
    let endpoint = match caller {
        Caller::PlainText => Endpoint::from_shared(format!("http://{addr}")).unwrap(),
        Caller::NoCert { ca } => Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem(ca, "ca.pem")))
                    .domain_name(server),
            )
            .expect("client TLS config"),
        Caller::Cert { ca, dir, name } => Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem(ca, "ca.pem")))
                    .identity(Identity::from_pem(
                        pem(dir, &format!("{name}.pem")),
                        pem(dir, &format!("{name}.key")),
                    ))
                    .domain_name(server),
            )
            .expect("client TLS config"),
    };
    endpoint
        .connect_timeout(WAIT)
        .timeout(WAIT)
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))
}

/// One ext_authz Check as `caller`: `Ok` when authz-service answered (allow or deny alike).
async fn call_check(addr: &str, caller: Caller<'_>) -> Result<(), String> {
    let channel = policy_channel(addr, proto::group::AUTHZ, caller).await?;
    AuthorizationClient::new(channel)
        .check(CheckRequest::default())
        .await
        .map(drop)
        .map_err(|s| format!("Check: {s:?}"))
}

/// One ShouldRateLimit as `caller`: `Ok` when ratelimit-service answered.
async fn call_should_rate_limit(addr: &str, caller: Caller<'_>) -> Result<(), String> {
    let channel = policy_channel(addr, proto::group::RATELIMIT, caller).await?;
    RateLimitServiceClient::new(channel)
        .should_rate_limit(tests::ratelimit::request(vec![
            tests::ratelimit::descriptor(&[("probe", "mtls")]),
        ]))
        .await
        .map(drop)
        .map_err(|s| format!("ShouldRateLimit: {s:?}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `/status` node ids of the connected clients.
async fn status_node_ids(http: &reqwest::Client, admin: &str) -> Vec<String> {
    let st: serde_json::Value = http
        .get(format!("{admin}/status"))
        .send()
        .await
        .expect("GET /status")
        .json()
        .await
        .expect("/status JSON");
    st["clients"]
        .as_array()
        .expect("clients array")
        .iter()
        .map(|c| c["node_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn refused_total(http: &reqwest::Client, admin: &str, reason: &str) -> f64 {
    let text = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    parse_metric(
        &text,
        &format!("xds_refused_clients_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

fn gateway_yaml(
    api: &str,
    edge_port: u16,
    internal_port: u16,
    authz_port: u16,
    rls_port: u16,
) -> String {
    format!(
        r#"version: 1
services:
  api: {{ endpoints: [{api}] }}
auth:
  # Envoy presents its `edge` certificate to authz-service, which requires one.
  service:
    address: 127.0.0.1:{authz_port}
    timeout: 1s
    on_error: deny
    tls: {{ sni: authz-service, ca_file: pki/ca.pem, cert_file: pki/edge.pem, key_file: pki/edge.key }}
  jwt:
    main:
      issuer: {ISSUER}
      algorithms: [HS256]
      secret_env: {SECRET_ENV}
rate_limits:
  # The same for ratelimit-service.
  service:
    address: 127.0.0.1:{rls_port}
    timeout: 1s
    on_error: deny
    tls: {{ sni: ratelimit-service, ca_file: pki/ca.pem, cert_file: pki/edge.pem, key_file: pki/edge.key }}
gateways:
  edge:
    listeners: [{{ name: http, port: {edge_port} }}]
    routes:
      - name: public
        match: {{ prefix: /public }}
        service: api
        auth: none
        rate_limit: none
      - name: me
        match: {{ prefix: /me }}
        service: api
        auth: main
        rate_limit: none
      - name: limited
        match: {{ prefix: /limited }}
        service: api
        auth: none
        rate_limit: [{{ limit: 2/minute, per: ip }}]
  internal:
    listeners: [{{ name: http, port: {internal_port} }}]
    routes:
      - name: all
        match: {{ prefix: / }}
        service: api
        auth: none
        rate_limit: none
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_certificate_is_served_its_own_node_group_only() {
    let dir = tempfile::Builder::new()
        .prefix("gateway-e2e-ads-mtls-")
        .tempdir()
        .expect("temp dir");
    let pki: PathBuf = dir.path().join("pki");
    run_ok(
        Command::new(xds_server_bin())
            .args(["certs", "--out"])
            .arg(&pki)
            .args(["--gateway", "edge", "--gateway", "internal"]),
    );

    let up = EchoUpstream::start("api").await;
    let (edge_port, internal_port, authz_port, rls_port) =
        (free_port(), free_port(), free_port(), free_port());
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        gateway_yaml(
            &up.endpoint(),
            edge_port,
            internal_port,
            authz_port,
            rls_port,
        ),
    )
    .unwrap();

    let (grpc_port, admin_port) = (free_port(), free_port());
    let grpc = format!("127.0.0.1:{grpc_port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let mut cmd = Command::new(xds_server_bin());
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .args([
            "--listen",
            &grpc,
            "--admin",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .arg("--tls-cert")
        .arg(pki.join("xds-server.pem"))
        .arg("--tls-key")
        .arg(pki.join("xds-server.key"))
        .arg("--client-ca")
        .arg(pki.join("ca.pem"))
        .env("RUST_LOG", "info");
    let mut xds = Proc::spawn("xds-server", cmd, dir.path());
    xds.wait_http_ok("xds-server to be ready", &format!("{admin}/readyz"), WAIT)
        .await;
    let http = test_support::http_client();

    // No client certificate: the handshake fails, ADS never sees a request.
    let no_cert = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem(&pki, "ca.pem")))
        .domain_name("xds-server");
    match first_answer(&grpc, no_cert, "rogue-no-cert", "edge").await {
        Answer::NoConnection(e) => eprintln!("no certificate, refused as expected: {e}"),
        other => panic!("a client without a certificate got {other:?}"),
    }
    // A certificate naming `edge`, but from another CA: refused at the handshake too.
    let other_ca = dir.path().join("other-ca");
    run_ok(
        Command::new(xds_server_bin())
            .args(["certs", "--out"])
            .arg(&other_ca)
            .args(["--gateway", "edge"]),
    );
    let foreign = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem(&pki, "ca.pem")))
        .identity(Identity::from_pem(
            pem(&other_ca, "edge.pem"),
            pem(&other_ca, "edge.key"),
        ))
        .domain_name("xds-server");
    match first_answer(&grpc, foreign, "rogue-other-ca", "edge").await {
        Answer::NoConnection(e) => eprintln!("another CA, refused as expected: {e}"),
        other => panic!("a certificate from another CA got {other:?}"),
    }
    assert_eq!(refused_total(&http, &admin, "other_group").await, 0.0);

    // The right CA, the wrong group: PERMISSION_DENIED before anything is sent.
    for (cert, claimed) in [
        ("edge", proto::group::AUTHZ),
        ("edge", proto::group::RATELIMIT),
        ("edge", "internal"),
        (proto::group::AUTHZ, "edge"),
    ] {
        match first_answer(
            &grpc,
            client_tls(&pki, cert),
            &format!("rogue-{cert}-as-{claimed}"),
            claimed,
        )
        .await
        {
            Answer::Refused(s) => assert!(
                s.message().contains(claimed),
                "{cert} claiming {claimed}: {s:?}"
            ),
            other => panic!("{cert}'s certificate claiming {claimed} got {other:?}"),
        }
    }
    assert_eq!(refused_total(&http, &admin, "other_group").await, 4.0);
    let ids = status_node_ids(&http, &admin).await;
    assert!(
        ids.iter().all(|id| !id.starts_with("rogue-")),
        "refused clients on /status: {ids:?}"
    );

    // The right certificate for the right group is served.
    match first_answer(&grpc, client_tls(&pki, "edge"), "probe-edge", "edge").await {
        Answer::Served(r) => {
            assert_eq!(r.type_url, ads::CLUSTER);
            assert!(!r.resources.is_empty(), "edge's clusters: {r:?}");
        }
        other => panic!("edge's certificate claiming edge got {other:?}"),
    }

    // authz-service fetches its policy over mTLS with its own certificate (ready means it has
    // it), and requires Envoy's on its ext_authz port.
    let authz_admin = free_port();
    let mut cmd = Command::new(workspace_bin("authz-service"));
    cmd.env(SECRET_ENV, SECRET)
        .args(["--xds", &grpc, "--node-id", "authz-mtls"])
        .args(["--listen", &format!("127.0.0.1:{authz_port}")])
        .args(["--admin", &format!("127.0.0.1:{authz_admin}")])
        .arg("--xds-ca")
        .arg(pki.join("ca.pem"))
        .arg("--xds-tls-cert")
        .arg(pki.join("authz-service.pem"))
        .arg("--xds-tls-key")
        .arg(pki.join("authz-service.key"))
        .arg("--tls-cert")
        .arg(pki.join("authz-service.pem"))
        .arg("--tls-key")
        .arg(pki.join("authz-service.key"))
        .arg("--client-ca")
        .arg(pki.join("ca.pem"));
    let mut authz = Proc::spawn("authz-service", cmd, dir.path());
    authz
        .wait_http_ok(
            "authz-service to get its policy over mTLS",
            &format!("http://127.0.0.1:{authz_admin}/readyz"),
            WAIT,
        )
        .await;
    // ratelimit-service likewise (in-memory counters).
    let rls_admin = free_port();
    let mut cmd = Command::new(workspace_bin("ratelimit-service"));
    cmd.args(["--xds", &grpc, "--node-id", "rls-mtls"])
        .args(["--listen", &format!("127.0.0.1:{rls_port}")])
        .args(["--admin", &format!("127.0.0.1:{rls_admin}")])
        .arg("--xds-ca")
        .arg(pki.join("ca.pem"))
        .arg("--xds-tls-cert")
        .arg(pki.join("ratelimit-service.pem"))
        .arg("--xds-tls-key")
        .arg(pki.join("ratelimit-service.key"))
        .arg("--tls-cert")
        .arg(pki.join("ratelimit-service.pem"))
        .arg("--tls-key")
        .arg(pki.join("ratelimit-service.key"))
        .arg("--client-ca")
        .arg(pki.join("ca.pem"));
    let mut rls = Proc::spawn("ratelimit-service", cmd, dir.path());
    rls.wait_http_ok(
        "ratelimit-service to get its policy over mTLS",
        &format!("http://127.0.0.1:{rls_admin}/readyz"),
        WAIT,
    )
    .await;

    // A real Envoy with the bootstrap's mTLS xds_cluster converges and serves a route, and an
    // authenticated route through authz-service over mTLS.
    let envoy_admin = free_port();
    let bootstrap = run_ok(
        Command::new(xds_server_bin())
            .args(["bootstrap", "--gateway", "edge", "--xds", &grpc])
            .args(["--node-id", "edge-mtls"])
            .args(["--admin-port", &envoy_admin.to_string()])
            .arg("--xds-ca")
            .arg(pki.join("ca.pem"))
            .arg("--xds-tls-cert")
            .arg(pki.join("edge.pem"))
            .arg("--xds-tls-key")
            .arg(pki.join("edge.key")),
    );
    let envoy = Envoy::start_with_bootstrap("edge-mtls", &bootstrap, envoy_admin, dir.path()).await;
    let client = HttpClient::new(edge_port);
    let r = wait_for_route(&client, "/public", 200).await;
    assert_eq!(r.upstream(), Some("api"));
    let r = client
        .get("/me")
        .header("authorization", &bearer(&token("carol", "free")))
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(client.get("/me").ok().await.status, 401);
    // The limit is enforced, so Envoy reached ratelimit-service (`on_error: deny` would answer
    // 503 otherwise).
    for _ in 0..2 {
        let r = client.get("/limited").ok().await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = client.get("/limited").ok().await;
    assert_eq!(r.status, 429, "{}", r.body);
    for cluster in [
        "xds_cluster",
        translate::authz::CLUSTER,
        translate::ratelimit::CLUSTER,
    ] {
        let stat = format!("cluster.{cluster}.ssl.handshake");
        assert!(
            envoy.stat(&stat).await.unwrap_or(0) >= 1,
            "Envoy reached {cluster} over TLS ({stat})"
        );
    }

    // Anyone else on the control network gets no decision from either policy service: not in
    // plain text, not over TLS without a client certificate, not with a certificate (naming
    // `edge`, even) from another CA. The same call with a certificate from the right CA is
    // answered, so the refusals are the certificate's doing.
    let authz_addr = format!("127.0.0.1:{authz_port}");
    let rls_addr = format!("127.0.0.1:{rls_port}");
    let rogues = [
        ("plain text", Caller::PlainText),
        ("no certificate", Caller::NoCert { ca: &pki }),
        (
            "another CA's certificate",
            Caller::Cert {
                ca: &pki,
                dir: &other_ca,
                name: "edge",
            },
        ),
    ];
    for (what, caller) in rogues {
        match call_check(&authz_addr, caller).await {
            Err(e) => eprintln!("authz-service refused {what} as expected: {e}"),
            Ok(()) => panic!("authz-service answered a Check with {what}"),
        }
        match call_should_rate_limit(&rls_addr, caller).await {
            Err(e) => eprintln!("ratelimit-service refused {what} as expected: {e}"),
            Ok(()) => panic!("ratelimit-service answered ShouldRateLimit with {what}"),
        }
    }
    let edge_cert = Caller::Cert {
        ca: &pki,
        dir: &pki,
        name: "edge",
    };
    call_check(&authz_addr, edge_cert)
        .await
        .unwrap_or_else(|e| panic!("authz-service refused edge's certificate: {e}"));
    call_should_rate_limit(&rls_addr, edge_cert)
        .await
        .unwrap_or_else(|e| panic!("ratelimit-service refused edge's certificate: {e}"));
    // Envoy still reaches both after the rogues tried (nothing they did broke the ports).
    let r = client
        .get("/me")
        .header("authorization", &bearer(&token("dave", "free")))
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(client.get("/limited").ok().await.status, 429);

    // The legitimate clients are on /status; no rogue one ever was.
    let ids = wait_for("Envoy and authz-service on /status", WAIT, async || {
        let ids = status_node_ids(&http, &admin).await;
        ["edge-mtls", "authz-mtls", "rls-mtls"]
            .iter()
            .all(|want| ids.iter().any(|i| i == want))
            .then_some(ids)
    })
    .await;
    assert!(ids.iter().all(|id| !id.starts_with("rogue-")), "{ids:?}");
    xds.assert_running();
    authz.assert_running();
    rls.assert_running();
}
