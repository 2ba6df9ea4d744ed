//! The plain-text gRPC port as Envoy and a hostile peer on the network reach it: hyper's HTTP/2
//! server calling the endpoint directly (`xds_client::grpc::Endpoint`). The Check is answered;
//! any other method or service is UNIMPLEMENTED; HTTP/1.1 gets no answer; none of it stops the
//! port serving; and stopping the service does not wait for a client that keeps its connection.

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

#[tokio::test]
async fn the_plain_grpc_port_serves_its_one_method_and_nothing_else() {
    let running = server::start(ServeOptions {
        // Nothing listens there: the service stays without a policy.
        xds: test_support::free_addr().to_string(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        node_id: "grpc-port".into(),
        tls: None,
        xds_tls: None,
    })
    .await
    .unwrap();
    let addr = running.grpc_addr;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = AuthorizationClient::new(channel.clone());
    answers(&mut c).await;

    // Another method of the service, another service, no service at all.
    for path in [
        "/envoy.service.auth.v3.Authorization/Report",
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
        "/envoy.service.auth.v3.AuthorizationX/Check",
        "/",
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
}
