//! The admin HTTP endpoint: `/health`, `/status` and `/metrics`.
//!
//! It stays up when the pipeline halts, so an operator (or an orchestrator's
//! probe) can see why.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::status::{State, Status};

/// Binds `listen` and serves until `shutdown`. Returns the bound address
/// (useful when `listen` has port 0).
pub async fn serve(
    listen: SocketAddr,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/health", get(health))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
        .with_state(status);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin endpoint failed");
        }
    });
    Ok(addr)
}

async fn health(Extract(status): Extract<Arc<Status>>) -> impl IntoResponse {
    match status.state() {
        State::Running | State::Starting => (StatusCode::OK, "ok\n".to_string()),
        State::Halted(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("halted: {reason}\n"),
        ),
        State::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopped\n".to_string()),
    }
}

async fn status_json(Extract(status): Extract<Arc<Status>>) -> impl IntoResponse {
    axum::Json(status.snapshot())
}

async fn metrics(Extract(status): Extract<Arc<Status>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        status.metrics(),
    )
}
