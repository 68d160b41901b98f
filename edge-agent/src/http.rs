//! `/healthz`, `/readyz` and Prometheus `/metrics` for Kubernetes probes and scraping.
//!
//! Healthy means the process serves requests; ready means device messages are making progress, as
//! the watchdog last assessed it ([`crate::health`]): the body of a 503 lists each reason.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::health::Health;

/// What the endpoints read.
pub struct Endpoints {
    pub registry: Registry,
    pub health: Arc<Health>,
}

/// Serves the endpoints on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, endpoints: Arc<Endpoints>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(endpoints);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz, /metrics");
    axum::serve(listener, app).await
}

async fn ready(State(endpoints): State<Arc<Endpoints>>) -> (StatusCode, String) {
    let unready = endpoints.health.unready();
    if unready.is_empty() {
        return (StatusCode::OK, "ready\n".into());
    }
    let body = unready
        .iter()
        .map(|u| format!("unready: {}: {}\n", u.reason, u.detail))
        .collect();
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

async fn metrics(State(endpoints): State<Arc<Endpoints>>) -> (StatusCode, String) {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &endpoints.registry) {
        Ok(()) => (StatusCode::OK, text),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        ),
    }
}
