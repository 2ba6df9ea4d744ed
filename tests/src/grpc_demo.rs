//! `GrpcUpstream`: a real tonic gRPC server of tests/protos/demo_v2.proto's `demo.Greeter`
//! (compiled by tests/build.rs with protox), for the `grpc.transcode` and `grpc.web` tests, and
//! the descriptor sets Envoy's transcoder reads.
//!
//! `SayHello` greets `name` and lists the `x-` request headers it saw; `CreateItem` echoes the
//! item with an id, or fails with NOT_FOUND for the name `fail` and PERMISSION_DENIED for
//! `forbidden`; `SayBye` exists only in demo_v2.proto. Every call counts in [`GrpcUpstream::calls`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

/// The generated messages and server of `demo.Greeter`.
#[allow(clippy::all, rust_2018_idioms)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/demo.rs"));
}

use pb::greeter_server::{Greeter, GreeterServer};
use pb::{HelloReply, HelloRequest, Item};

/// demo.proto's descriptor set (`SayHello`, `CreateItem`), with its imports.
pub const DESCRIPTOR_V1: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo.fds.bin"));
/// demo_v2.proto's: demo.proto's plus `SayBye`.
pub const DESCRIPTOR_V2: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo_v2.fds.bin"));

#[derive(Default)]
struct Demo {
    calls: Arc<AtomicU64>,
}

fn seen_headers<T>(req: &Request<T>) -> Vec<String> {
    let mut seen: Vec<String> = req
        .metadata()
        .clone()
        .into_headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-"))
        .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?")))
        .collect();
    seen.sort();
    seen
}

#[tonic::async_trait]
impl Greeter for Demo {
    async fn say_hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let seen_headers = seen_headers(&req);
        let r = req.into_inner();
        let greeting = if r.greeting.is_empty() {
            "hello"
        } else {
            &r.greeting
        };
        Ok(Response::new(HelloReply {
            message: format!("{greeting}, {}", r.name),
            seen_headers,
        }))
    }

    async fn create_item(&self, req: Request<Item>) -> Result<Response<Item>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let item = req.into_inner();
        match item.name.as_str() {
            "fail" => Err(Status::not_found("no such item: fail")),
            "forbidden" => Err(Status::permission_denied("not yours")),
            _ => Ok(Response::new(Item {
                id: format!("item-{}", item.name),
                ..item
            })),
        }
    }

    async fn say_bye(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(HelloReply {
            message: format!("bye, {}", req.into_inner().name),
            seen_headers: Vec::new(),
        }))
    }
}

/// The server on a free 127.0.0.1 port, served by the current tokio runtime until dropped.
pub struct GrpcUpstream {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl GrpcUpstream {
    pub async fn start() -> GrpcUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a gRPC upstream port");
        let addr = listener.local_addr().expect("local_addr");
        let calls = Arc::new(AtomicU64::new(0));
        let demo = Demo {
            calls: calls.clone(),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(GreeterServer::new(demo))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.await;
                })
                .await;
        });
        GrpcUpstream {
            addr,
            calls,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `127.0.0.1:port`, as gateway.yaml's `endpoints` take it.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// How many calls reached the server.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for GrpcUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
