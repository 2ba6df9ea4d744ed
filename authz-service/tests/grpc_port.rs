//! The plain-text gRPC port as Envoy and a hostile peer on the network reach it: hyper's HTTP/2
//! server calling the endpoint directly (`xds_client::grpc::Endpoint`). The Check is answered;
//! any other method or service is UNIMPLEMENTED; HTTP/1.1 gets no answer; none of it stops the
//! port serving; stopping the service does not wait for a client that keeps an idle
//! connection, and closes the port.

mod common;

use std::time::Duration;

use authz_service::server::{self, ServeOptions};
use common::*;
use proto::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use proto::pb::envoy::service::auth::v3::check_response::HttpResponse;
use proto::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// A Check is answered: with no policy yet (no xds-server here), a 503 denial, not an error.
async fn answers(c: &mut AuthorizationClient<Channel>) {
    let r = c
        .check(check_request(Some("r"), &[], "/"))
        .await
        .expect("Check must answer, not fail")
        .into_inner();
    match r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_eq!(d.status.map(|s| s.code), Some(503));
        }
        other => panic!("expected the starting-up denial, got {other:?}"),
    }
}

/// authz-service on the plain-text port, with no xds-server to reach (so no policy).
async fn start() -> server::Running {
    server::start(ServeOptions {
        xds: test_support::free_addr().to_string(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        node_id: "grpc-port".into(),
        tls: None,
        xds_tls: None,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_plain_grpc_port_serves_its_one_method_and_nothing_else() {
    let running = start().await;
    let addr = running.grpc_addr;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = AuthorizationClient::new(channel.clone());
    answers(&mut c).await;

    // Another method of the service (refused by the endpoint), another service or none at all
    // (refused before it, by the port's path check).
    for (path, message) in [
        (
            "/envoy.service.auth.v3.Authorization/Report",
            "no such method",
        ),
        (
            "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
            "no such service",
        ),
        (
            "/envoy.service.auth.v3.AuthorizationX/Check",
            "no such service",
        ),
        ("/", "no such service"),
    ] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let e = grpc
            .unary(
                tonic::Request::new(CheckRequest::default()),
                PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::<CheckRequest, CheckResponse>::default(),
            )
            .await
            .expect_err(path);
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{path}: {e}");
        assert_eq!(e.message(), message, "{path}");
    }

    // HTTP/1.1 on the gRPC port: the connection is closed without an HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"POST /envoy.service.auth.v3.Authorization/Check HTTP/1.1\r\n\
          host: authz\r\ncontent-type: application/grpc\r\ncontent-length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .expect("the server closes an HTTP/1.1 connection")
        .ok();
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // The port still serves, and the open connection does not hold up the stop.
    answers(&mut c).await;
    tokio::time::timeout(Duration::from_secs(10), running.stop())
        .await
        .expect("the service stops with a client connection open");
    // Stopped, the port refuses connections instead of leaving them unanswered.
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "the stopped port still accepts connections"
    );
}

/// A call left open (a Check whose body never ends) across a stop: the port closes at once, so
/// a reconnecting Envoy is refused rather than left unanswered, the stop waits for the call,
/// and it ends anyway once its grace is over.
#[tokio::test]
async fn a_stop_closes_the_port_at_once_and_does_not_wait_forever_for_an_open_call() {
    let running = start().await;
    let addr = running.grpc_addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let request = tonic::codegen::http::Request::post(format!(
        "http://{addr}/envoy.service.auth.v3.Authorization/Check"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (_answer, _body) = client.send_request(request, false).unwrap();

    let stop = tokio::spawn(running.stop());
    test_support::wait_for(
        "the stopped port to refuse connections",
        Duration::from_secs(5),
        async || tokio::net::TcpStream::connect(addr).await.is_err(),
    )
    .await;
    assert!(
        !stop.is_finished(),
        "the stop did not wait for the open call"
    );
    tokio::time::timeout(Duration::from_secs(30), stop)
        .await
        .expect("the stop ends once its grace is over")
        .unwrap();
}
