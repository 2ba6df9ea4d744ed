//! The HTTP admin side port: `/healthz`, `/readyz`, `/metrics`.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::service::Shared;

pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin server failed");
    }
}

/// Ready after the first policy (and the first fetch of every `jwks_url` it uses): before that
/// every Check would be refused.
async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let ready = shared.is_ready();
    shared.metrics.ready.set(i64::from(ready));
    if ready {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the auth policy\n",
        )
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared.metrics.ready.set(i64::from(shared.is_ready()));
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
}
