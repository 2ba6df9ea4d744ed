//! A gRPC endpoint with exactly one unary method, served with a codec of the service's choice.
//!
//! Both policy services answer Envoy with a codec that never refuses a request (Envoy copies
//! client bytes into protobuf `string` fields unchecked, and a decode error would become a gRPC
//! error that Envoy's failure mode may turn into an allow). tonic's generated servers fix the
//! codec, so each service implements [`UnaryMethod`] and [`OneMethod`] does the routing.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codec::Codec;
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::server::NamedService;
use tonic::Status;

/// The one method an endpoint serves.
pub trait UnaryMethod: Send + Sync + 'static {
    /// The gRPC service name, e.g. `envoy.service.auth.v3.Authorization`.
    const SERVICE: &'static str;
    /// The method's full HTTP/2 path, e.g. `/envoy.service.auth.v3.Authorization/Check`.
    const PATH: &'static str;
    type Codec: Codec + Default + Send + 'static;

    fn call(
        self: Arc<Self>,
        request: tonic::Request<<Self::Codec as Codec>::Decode>,
    ) -> BoxFuture<tonic::Response<<Self::Codec as Codec>::Encode>, Status>;
}

/// The tower service tonic routes `/<M::SERVICE>/*` to: `M::PATH` goes to `M`, any other method
/// is `UNIMPLEMENTED`.
pub struct OneMethod<M>(Arc<M>);

impl<M> OneMethod<M> {
    /// Takes the method's handler, or an `Arc` of it.
    pub fn new(method: impl Into<Arc<M>>) -> Self {
        Self(method.into())
    }
}

impl<M> Clone for OneMethod<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: UnaryMethod> NamedService for OneMethod<M> {
    const NAME: &'static str = M::SERVICE;
}

struct Call<M>(Arc<M>);

impl<M: UnaryMethod> tonic::server::UnaryService<<M::Codec as Codec>::Decode> for Call<M> {
    type Response = <M::Codec as Codec>::Encode;
    type Future = BoxFuture<tonic::Response<Self::Response>, Status>;

    fn call(&mut self, request: tonic::Request<<M::Codec as Codec>::Decode>) -> Self::Future {
        self.0.clone().call(request)
    }
}

impl<M, B> tower_service::Service<http::Request<B>> for OneMethod<M>
where
    M: UnaryMethod,
    <M::Codec as Codec>::Decode: Send,
    <M::Codec as Codec>::Encode: Send,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = self.0.clone();
        if req.uri().path() == M::PATH {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(M::Codec::default());
                Ok(grpc.unary(Call(method), req).await)
            })
        } else {
            Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) })
        }
    }
}

/// A request Envoy sent on the plain-text gRPC port, as hyper hands it over.
pub type PlainRequest = http::Request<hyper::body::Incoming>;
type PlainCall = Arc<
    dyn Fn(PlainRequest) -> BoxFuture<http::Response<tonic::body::Body>, std::convert::Infallible>
        + Send
        + Sync,
>;

/// The gRPC service a policy service serves, in the two forms the wiring needs: tonic's
/// [`Routes`](tonic::service::Routes) for the TLS port, and a direct call for the plain-text
/// one, which hyper's HTTP/2 server drives without tonic's transport layers (request
/// extensions, timeouts, error recovery) and axum's router in front: a tenth of a call's
/// instructions, for a port that serves one service and that Envoy alone calls. What the plain
/// port gives up: `tonic::Request::remote_addr` is `None` (no service reads it; the client's
/// address and certificate arrive inside the Check), and tonic's `grpc-timeout` (Envoy resets
/// a stream at its own deadline, which drops the call; each service keeps its own budget).
#[derive(Clone)]
pub struct Endpoint {
    routes: tonic::service::Routes,
    plain: PlainCall,
}

impl Endpoint {
    pub fn new<S>(service: S) -> Self
    where
        S: tower_service::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let prefix: Arc<str> = format!("/{}/", S::NAME).into();
        let routes = tonic::service::Routes::new(service.clone());
        let plain: PlainCall = Arc::new(move |req: PlainRequest| {
            // As tonic's router answers a path it does not serve.
            if !req.uri().path().starts_with(&*prefix) {
                return Box::pin(async {
                    Ok(Status::unimplemented("no such service").into_http())
                });
            }
            let mut service = service.clone();
            Box::pin(async move {
                std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                service.call(req.map(tonic::body::Body::new)).await
            })
        });
        Self { routes, plain }
    }

    /// tonic's routes, for `tonic::transport::Server`.
    pub fn routes(&self) -> tonic::service::Routes {
        self.routes.clone()
    }

    /// Answers one request on the plain-text port.
    pub fn call(
        &self,
        req: PlainRequest,
    ) -> BoxFuture<http::Response<tonic::body::Body>, std::convert::Infallible> {
        (self.plain)(req)
    }
}
