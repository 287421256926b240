//! The admin HTTP endpoint: `/health`, `/status`, `/metrics`, and
//! `/plugins` (`GET` lists them; `PUT /plugins/{name}` with a component as
//! the body deploys a new version of one).
//!
//! It stays up when the pipeline halts, so an operator (or an orchestrator's
//! probe) can see why. It has no authentication: bind it to loopback or a
//! private network.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State as Extract};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use tokio_util::sync::CancellationToken;

use crate::reload::DeployError;
use crate::status::{State, Status};

/// The largest component `PUT /plugins/{name}` takes. Python components
/// are around 20 MB.
const MAX_COMPONENT_BYTES: usize = 256 << 20;

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
        .route("/plugins", get(plugins))
        .route(
            "/plugins/{name}",
            put(deploy).layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES)),
        )
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
        State::Running | State::Starting => match status.degraded() {
            Some((sink, failing)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("degraded: sink {sink} failing for {}s\n", failing.as_secs()),
            ),
            None => (StatusCode::OK, "ok\n".to_string()),
        },
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

async fn plugins(Extract(status): Extract<Arc<Status>>) -> impl IntoResponse {
    axum::Json(status.plugins.snapshot())
}

async fn deploy(
    Extract(status): Extract<Arc<Status>>,
    Path(name): Path<String>,
    body: Bytes,
) -> impl IntoResponse {
    let Some(deployer) = status.plugins.deployer() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": "the pipeline is not running yet"})),
        );
    };
    match deployer.deploy(&name, body.to_vec()).await {
        Ok(deployed) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "plugin": deployed.plugin,
                "version": deployed.version,
                "previous": deployed.previous,
                "state": "validated; takes over at the next transaction boundary",
            })),
        ),
        Err(e) => {
            let code = match e {
                DeployError::UnknownPlugin { .. } => StatusCode::NOT_FOUND,
                DeployError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                DeployError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (
                code,
                axum::Json(serde_json::json!({"error": e.to_string()})),
            )
        }
    }
}
