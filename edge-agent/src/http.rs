//! `/healthz`, `/readyz` and Prometheus `/metrics` for Kubernetes probes and scraping.
//!
//! Healthy means the process serves requests; ready means the agent can serve devices: the device
//! link is connected (a node whose device broker is unreachable should not count as ready).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::link::LinkHandle;

/// What the endpoints read.
pub struct Endpoints {
    pub registry: Registry,
    pub device_link: LinkHandle,
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

async fn ready(State(endpoints): State<Arc<Endpoints>>) -> (StatusCode, &'static str) {
    if endpoints.device_link.is_connected() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "device link not connected\n",
        )
    }
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
