//! The HTTP admin side port: the `/healthz`, `/readyz` and `/metrics` every process serves
//! (`xds_client::side`), plus `/status`.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::App;

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let registry = app.metrics.registry.clone();
    let status = Router::new().route("/status", get(status)).with_state(app);
    xds_client::side::serve_admin_with(
        listener,
        // Ready as soon as we serve: `serve` refuses to start without a valid first config.
        Arc::new(|| true),
        registry,
        status,
        shutdown,
    )
    .await
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
