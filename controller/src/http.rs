//! `/healthz`, `/readyz`, `/metrics`, and in standalone mode the fleet API that `edgefleet get`
//! reads: `/api/v1alpha1/{handlermodules,deviceclasses,edgenodes}[/<name>]`, objects in the same
//! JSON form as the Kubernetes API (`apiVersion`, `kind`, `metadata`, `spec`, `status`).
//!
//! Ready means the loop goes round (a round in the last 10 s) and the cloud link has replayed what
//! the broker holds; a follower replica is ready too (it stands by). The body of a 503 says why.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::control::Progress;
use crate::objects::Objects;
use crate::resources::API_VERSION;
use crate::sink::LocalStore;

/// What the endpoints read.
pub struct Endpoints {
    /// Metrics.
    pub registry: Registry,
    /// The loop's progress.
    pub progress: watch::Receiver<Progress>,
    /// Whether this replica leads (always, in standalone mode).
    pub leading: watch::Receiver<bool>,
    /// Standalone mode: the objects and their status.
    pub fleet: Option<(watch::Receiver<Objects>, Arc<LocalStore>)>,
}

/// Serves the endpoints on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    endpoints: Arc<Endpoints>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1alpha1/{kind}", get(list))
        .route("/api/v1alpha1/{kind}/{name}", get(one))
        .with_state(endpoints);
    axum::serve(listener, app).await
}

/// Binds `addr`, saying what to do when it is taken.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e} (choose another address with --listen)"),
        )
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn ready(State(endpoints): State<Arc<Endpoints>>) -> (StatusCode, String) {
    if !*endpoints.leading.borrow() {
        return (
            StatusCode::OK,
            "ready (standing by: another replica leads)\n".into(),
        );
    }
    let progress = endpoints.progress.borrow().clone();
    let mut reasons = Vec::new();
    if now_ms().saturating_sub(progress.last_round_ms) > 10_000 {
        reasons.push("unready: loop_stalled: no round in the last 10 s\n");
    }
    if !progress.complete {
        reasons.push("unready: objects_incomplete: the objects are not listed or read yet\n");
    }
    if !progress.synced {
        reasons.push("unready: cloud_not_synced: the cloud broker link is down or replaying\n");
    }
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.concat())
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

/// Every object of `kind` with its status, in name order.
fn objects_of(endpoints: &Endpoints, kind: &str) -> Option<Vec<Value>> {
    let (objects, store) = endpoints.fleet.as_ref()?;
    let objects = objects.borrow().clone();
    let view = store.view();
    let object =
        |kind: &str, name: &str, labels: &crate::fleet::Labels, spec: Value, status: Value| {
            json!({
                "apiVersion": API_VERSION,
                "kind": kind,
                "metadata": {"name": name, "labels": labels},
                "spec": spec,
                "status": status,
            })
        };
    let list = match kind {
        "handlermodules" => objects
            .modules
            .iter()
            .map(|(name, m)| {
                object(
                    "HandlerModule",
                    name,
                    &m.labels,
                    json!(m.spec),
                    json!(view.modules.get(name)),
                )
            })
            .collect(),
        "deviceclasses" => objects
            .classes
            .iter()
            .map(|(name, c)| {
                object(
                    "DeviceClass",
                    name,
                    &c.labels,
                    json!(c.spec),
                    json!(view.classes.get(name)),
                )
            })
            .collect(),
        "edgenodes" => {
            let mut names: Vec<&String> =
                objects.edge_nodes.keys().chain(view.nodes.keys()).collect();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .map(|name| {
                    let declared = objects.edge_nodes.get(name);
                    object(
                        "EdgeNode",
                        name,
                        &declared.map(|n| n.labels.clone()).unwrap_or_default(),
                        json!(declared.map(|n| n.spec.clone()).unwrap_or_default()),
                        json!(view.nodes.get(name)),
                    )
                })
                .collect()
        }
        _ => return None,
    };
    Some(list)
}

async fn list(
    State(endpoints): State<Arc<Endpoints>>,
    Path(kind): Path<String>,
) -> (StatusCode, Json<Value>) {
    match objects_of(&endpoints, &kind) {
        Some(items) => (
            StatusCode::OK,
            Json(json!({"apiVersion": API_VERSION, "kind": "List", "items": items})),
        ),
        None => not_found(&kind),
    }
}

async fn one(
    State(endpoints): State<Arc<Endpoints>>,
    Path((kind, name)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    let found = objects_of(&endpoints, &kind).and_then(|items| {
        items
            .into_iter()
            .find(|o| o["metadata"]["name"] == name.as_str())
    });
    match found {
        Some(object) => (StatusCode::OK, Json(object)),
        None => not_found(&format!("{kind}/{name}")),
    }
}

fn not_found(what: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": format!("{what} not found: kinds are handlermodules, deviceclasses, edgenodes"),
        })),
    )
}
