//! The HTTP admin side port: `/healthz`, `/readyz`, `/metrics`, `/status`.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::server::App;

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        // Ready as soon as we serve: `serve` refuses to start without a valid first config.
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(app);
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin server failed");
    }
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

async fn status(State(app): State<Arc<App>>) -> impl IntoResponse {
    let st = app.status();
    Json(json!({
        "version": st.version,
        "config_path": st.config_path,
        "loaded_at": st.loaded_at,
        "last_error": st.last_error,
        "reloads": st.reloads,
        "clients": app.registry.clients(),
    }))
}
