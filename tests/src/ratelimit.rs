//! A real `ratelimit-service` process, and helpers to ask it ShouldRateLimit over gRPC.

use std::path::Path;
use std::time::Duration;

use proto::pb::envoy::extensions::common::ratelimit::v3::{
    rate_limit_descriptor::Entry, RateLimitDescriptor,
};
use proto::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use proto::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::transport::Channel;

use crate::{free_port, Proc};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `ratelimit-service`; killed on drop.
pub struct RateLimitService {
    proc: Proc,
    pub grpc_port: u16,
    pub admin_port: u16,
    http: reqwest::Client,
}

impl RateLimitService {
    /// Starts it against xds-server at `xds` (host:port), with `redis` or the memory store, and
    /// waits until it has a policy (`/readyz`).
    pub async fn start(name: &str, xds: &str, redis: Option<&str>, log_dir: &Path) -> Self {
        Self::start_on(name, xds, redis, free_port(), log_dir).await
    }

    /// Like [`start`](Self::start) with the gRPC port chosen by the caller (for a gateway.yaml
    /// that names it in `rate_limits.service.address`).
    pub async fn start_on(
        name: &str,
        xds: &str,
        redis: Option<&str>,
        grpc_port: u16,
        log_dir: &Path,
    ) -> Self {
        Self::start_with(name, xds, redis, grpc_port, &[], log_dir).await
    }

    /// Like [`start_on`](Self::start_on) with more command-line arguments (such as
    /// `--memory-max-counters 16`).
    pub async fn start_with(
        name: &str,
        xds: &str,
        redis: Option<&str>,
        grpc_port: u16,
        args: &[&str],
        log_dir: &Path,
    ) -> Self {
        Self::start_with_env(name, xds, redis, grpc_port, args, &[], log_dir).await
    }

    /// Like [`start_with`](Self::start_with) with more environment variables (such as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`); one the test runner has and `env` does not name is not
    /// passed on.
    pub async fn start_with_env(
        name: &str,
        xds: &str,
        redis: Option<&str>,
        grpc_port: u16,
        args: &[&str],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Self {
        let admin_port = free_port();
        let mut cmd = crate::service_command("ratelimit-service");
        cmd.env_remove(xds_client::telemetry::ENDPOINT_ENV)
            .envs(env.iter().map(|(k, v)| (k, v)));
        cmd.args(["--xds", xds])
            .args(["--listen", &format!("127.0.0.1:{grpc_port}")])
            .args(["--admin", &format!("127.0.0.1:{admin_port}")])
            .args(["--node-id", name])
            .env("RUST_LOG", "info");
        if let Some(r) = redis {
            cmd.args(["--redis", r]);
        }
        cmd.args(args);
        let proc = Proc::spawn(name, cmd, log_dir);
        let http = test_support::http_client();
        let mut s = Self {
            proc,
            grpc_port,
            admin_port,
            http,
        };
        s.wait_ready().await;
        s
    }

    pub async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        self.proc
            .wait_http_ok("ratelimit-service to be ready", &url, READY_TIMEOUT)
            .await;
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub async fn client(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::connect(self.grpc_url())
            .await
            .expect("connect to ratelimit-service")
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }
}

/// A descriptor from `(key, value)` entries.
pub fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).to_string(),
                value: (*v).to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

/// A request in the gateway's domain.
pub fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: proto::ratelimit::DOMAIN.to_string(),
        descriptors,
        hits_addend: 0,
    }
}

/// The value of a response header the service asked Envoy to add.
pub fn header<'a>(r: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    r.response_headers_to_add
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// True when the response admits the request.
pub fn is_ok(r: &RateLimitResponse) -> bool {
    r.overall_code == proto::pb::envoy::service::ratelimit::v3::rate_limit_response::Code::Ok as i32
}

/// Sends a request whose strings are raw bytes (possibly not UTF-8), as Envoy may.
pub async fn raw_should_rate_limit(
    url: &str,
    request: ratelimit_service::grpc::RawRequest,
) -> Result<RateLimitResponse, tonic::Status> {
    let channel = Channel::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let codec =
        tonic_prost::ProstCodec::<ratelimit_service::grpc::RawRequest, RateLimitResponse>::default(
        );
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
    );
    grpc.unary(tonic::Request::new(request), path, codec)
        .await
        .map(tonic::Response::into_inner)
}
