//! `/healthz`, `/readyz`, `/metrics`, and in standalone mode the fleet API that `edgefleet get`
//! reads: `/api/v1alpha1/{handlermodules,deviceclasses,edgenodes}[/<name>]`, objects in the same
//! JSON form as the Kubernetes API (`apiVersion`, `kind`, `metadata`, `spec`, `status`), and
//! `POST /api/v1alpha1/apply`, which `edgefleet apply` sends its YAML to (see [`apply_documents`]);
//! in both modes the fleet page, `/fleet` and `/api/v1alpha1/fleet` (`page`), and `/` leads there.
//!
//! Ready means the loop goes round (a round in the last 10 s) and the cloud link has replayed what
//! the broker holds; a follower replica is ready too (it stands by). The body of a 503 says why.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Redirect;
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::control::Progress;
use crate::objects::{self, Objects};
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
    /// Standalone mode: the objects folder, which `POST /api/v1alpha1/apply` writes into.
    pub objects_dir: Option<PathBuf>,
    /// The fleet page's view, as the loop last built it.
    pub page: watch::Receiver<Arc<crate::page::FleetView>>,
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
        .route("/", get(|| async { Redirect::temporary("/fleet") }))
        .route("/fleet", get(crate::page::page))
        .route("/api/v1alpha1/fleet", get(crate::page::fleet))
        .route("/api/v1alpha1/apply", post(apply))
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
    let reasons = unready(&progress, now_ms());
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.concat())
    }
}

/// How long every status write may fail before the controller says it is not ready: a brief
/// API-server hiccup is retried, a lasting one (RBAC taken away, a full etcd) means nothing an
/// operator reads is true any more.
const WRITES_FAILING_MS: u64 = 60_000;

/// Why the leading controller is not ready, one line each (none: ready).
fn unready(progress: &crate::control::Progress, now_ms: u64) -> Vec<String> {
    let mut reasons = Vec::new();
    if now_ms.saturating_sub(progress.last_round_ms) > 10_000 {
        reasons.push("unready: loop_stalled: no round in the last 10 s\n".to_string());
    }
    if !progress.complete {
        reasons.push(
            "unready: objects_incomplete: the objects are not listed or read yet\n".to_string(),
        );
    }
    if !progress.synced {
        reasons.push(
            "unready: cloud_not_synced: the cloud broker link is down or replaying\n".to_string(),
        );
    }
    if let Some(since) = progress.writes_failing_since_ms
        && now_ms.saturating_sub(since) > WRITES_FAILING_MS
    {
        reasons.push(format!(
            "unready: status_writes_failing: every status write has failed for {} s \
             (edgefleet_controller_status_write_failures_total and the log say why)\n",
            now_ms.saturating_sub(since) / 1000
        ));
    }
    reasons
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
                let mut class = object(
                    "DeviceClass",
                    name,
                    &c.labels,
                    json!(c.spec),
                    json!(view.classes.get(name)),
                );
                if !c.annotations.is_empty() {
                    class["metadata"]["annotations"] = json!(c.annotations);
                }
                class
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

/// How long `POST /api/v1alpha1/apply` waits for the folder watcher to read what it wrote.
const APPLY_READ_WAIT: Duration = Duration::from_secs(5);

/// One applies at a time: the checks against the folder and the writes are one step.
static APPLY_LOCK: Mutex<()> = Mutex::new(());

/// What `POST /api/v1alpha1/apply` did with one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// `HandlerModule`, `DeviceClass` or `EdgeNode`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// The file in the objects folder, `<kind in lower case>-<name>.yaml`.
    pub file: String,
    /// `created`, `configured` (the file changed) or `unchanged`.
    pub result: &'static str,
}

/// Why an apply was refused: the status code and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    /// 400 (invalid objects), 409 (a conflict with the folder) or 500 (the folder cannot be
    /// written).
    pub status: StatusCode,
    /// The message for the operator.
    pub message: String,
}

impl ApplyError {
    fn invalid(message: String) -> ApplyError {
        ApplyError {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }

    fn conflict(message: String) -> ApplyError {
        ApplyError {
            status: StatusCode::CONFLICT,
            message,
        }
    }

    fn io(what: &str, path: &FsPath, e: std::io::Error) -> ApplyError {
        ApplyError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!(
                "cannot {what} {}: {e} (is the objects folder writable by the controller?)",
                path.display()
            ),
        }
    }
}

/// One object of an apply: its identity, the text to write and what it declares.
struct Document {
    kind: String,
    name: String,
    file: String,
    text: String,
    declared: Objects,
}

/// Writes the objects of `text` (YAML or JSON, one or more `---` documents of the edgefleet
/// kinds) into the objects folder `dir`, one file each, `<kind in lower case>-<name>.yaml`.
///
/// Nothing is written unless every object is valid ([`objects::add_documents`], the rules the
/// folder reader applies) and none conflicts with the folder: an object declared in another file
/// (edit that file instead), a file of that name holding other objects, a HandlerModule whose spec
/// would change (a module version is immutable, as in a cluster), an object twice in `text`. Each
/// file is written to a temporary file in the folder (no object extension, so the reader skips it),
/// synced and renamed over the old one, so the folder watcher never reads a partial file. A file
/// with the same content is left alone (`unchanged`).
pub fn apply_documents(dir: &FsPath, text: &str) -> Result<Vec<Applied>, ApplyError> {
    let documents = parse_documents(text)?;
    let _guard = APPLY_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let files = objects::object_files(dir).map_err(|e| ApplyError::io("list", dir, e))?;
    let mut existing = Vec::new();
    for path in files {
        let Some(file) = path.file_name().and_then(|f| f.to_str()).map(str::to_owned) else {
            continue;
        };
        let Ok(content) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut declared = Objects::default();
        // A broken file declares what it could be read of, as the folder reader sees it.
        let _ = objects::add_documents(&mut declared, &content);
        existing.push((file, content, declared));
    }
    let mut results = Vec::new();
    for document in &documents {
        let mut current = None;
        for (file, content, declared) in &existing {
            let holds = declares(declared, &document.kind, &document.name);
            if *file == document.file {
                let others = names(declared)
                    .into_iter()
                    .filter(|(kind, name)| *kind != document.kind || *name != document.name)
                    .map(|(kind, name)| format!("{kind} {name}"))
                    .collect::<Vec<_>>();
                if !others.is_empty() {
                    return Err(ApplyError::conflict(format!(
                        "{} in the objects folder holds other objects too ({}): move them to files of their own, then apply again",
                        file,
                        others.join(", ")
                    )));
                }
                current = Some((content, declared, holds));
            } else if holds {
                return Err(ApplyError::conflict(format!(
                    "{} {} is declared in {file} in the objects folder: edit that file, or remove the object from it to manage it with apply",
                    document.kind, document.name
                )));
            }
        }
        let result = match current {
            None => "created",
            Some((content, _, _)) if *content == document.text => "unchanged",
            Some((_, declared, holds)) => {
                if document.kind == "HandlerModule"
                    && holds
                    && declared.modules.get(&document.name).map(|m| &m.spec)
                        != document
                            .declared
                            .modules
                            .get(&document.name)
                            .map(|m| &m.spec)
                {
                    return Err(ApplyError::conflict(format!(
                        "HandlerModule {}: a HandlerModule is one immutable module version: create a new object for a new version",
                        document.name
                    )));
                }
                "configured"
            }
        };
        results.push(Applied {
            kind: document.kind.clone(),
            name: document.name.clone(),
            file: document.file.clone(),
            result,
        });
    }
    for (document, applied) in documents.iter().zip(&results) {
        if applied.result != "unchanged" {
            write_atomically(dir, &document.file, &document.text)?;
        }
    }
    Ok(results)
}

/// The documents of `text`, each validated on its own and rendered as the file to write.
fn parse_documents(text: &str) -> Result<Vec<Document>, ApplyError> {
    let values: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| ApplyError::invalid(format!("not YAML: {e}")))?;
    let values: Vec<Value> = values.into_iter().filter(|v| !v.is_null()).collect();
    if values.is_empty() {
        return Err(ApplyError::invalid(
            "no object to apply: the text holds no YAML document".into(),
        ));
    }
    let several = values.len() > 1;
    let mut seen = BTreeSet::new();
    let mut documents = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        let text = render(&value);
        let mut declared = Objects::default();
        objects::add_documents(&mut declared, &text).map_err(|e| {
            ApplyError::invalid(if several {
                format!("document {}: {e}", index + 1)
            } else {
                e
            })
        })?;
        let (kind, name) = names(&declared)
            .into_iter()
            .next()
            .expect("a valid document declares one object");
        if !seen.insert((kind.clone(), name.clone())) {
            return Err(ApplyError::invalid(format!(
                "{kind} {name} appears more than once: apply each object once"
            )));
        }
        documents.push(Document {
            file: format!("{}-{name}.yaml", kind.to_lowercase()),
            kind,
            name,
            text,
            declared,
        });
    }
    Ok(documents)
}

/// `value` as YAML when that reads back as the same value, else as JSON (which YAML reads too).
/// Long strings stay on one line (an OCI reference reads better whole than folded).
fn render(value: &Value) -> String {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    if let Ok(yaml) = serde_saphyr::to_string_with_options(value, options)
        && serde_saphyr::from_str::<Value>(&yaml).is_ok_and(|back| back == *value)
    {
        return yaml;
    }
    let mut json = serde_json::to_string_pretty(value).unwrap_or_default();
    json.push('\n');
    json
}

/// Every (kind, name) `objects` declares.
fn names(objects: &Objects) -> Vec<(String, String)> {
    let of = |kind: &str, names: Vec<&String>| {
        names
            .into_iter()
            .map(|n| (kind.to_owned(), n.clone()))
            .collect::<Vec<_>>()
    };
    let mut all = of("HandlerModule", objects.modules.keys().collect());
    all.extend(of("DeviceClass", objects.classes.keys().collect()));
    all.extend(of("EdgeNode", objects.edge_nodes.keys().collect()));
    all
}

fn declares(objects: &Objects, kind: &str, name: &str) -> bool {
    match kind {
        "HandlerModule" => objects.modules.contains_key(name),
        "DeviceClass" => objects.classes.contains_key(name),
        "EdgeNode" => objects.edge_nodes.contains_key(name),
        _ => false,
    }
}

/// Whether `current` (what the folder watcher read) holds every object of `applied` as applied.
fn reflects(current: &Objects, applied: &Objects) -> bool {
    applied.modules.iter().all(|(name, m)| {
        current
            .modules
            .get(name)
            .is_some_and(|c| c.spec == m.spec && c.labels == m.labels)
    }) && applied.classes.iter().all(|(name, c)| {
        current.classes.get(name).is_some_and(|x| {
            x.spec == c.spec && x.labels == c.labels && x.annotations == c.annotations
        })
    }) && applied.edge_nodes.iter().all(|(name, n)| {
        current
            .edge_nodes
            .get(name)
            .is_some_and(|x| x.spec == n.spec && x.labels == n.labels)
    })
}

fn write_atomically(dir: &FsPath, file: &str, text: &str) -> Result<(), ApplyError> {
    let path = dir.join(file);
    let mut tmp = tempfile::Builder::new()
        .prefix(".apply-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| ApplyError::io("create a temporary file in", dir, e))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| ApplyError::io("write", tmp.path(), e))?;
    tmp.persist(&path)
        .map_err(|e| ApplyError::io("write", &path, e.error))?;
    Ok(())
}

async fn apply(State(endpoints): State<Arc<Endpoints>>, body: String) -> (StatusCode, Json<Value>) {
    let (Some(dir), Some((objects_rx, _))) = (endpoints.objects_dir.clone(), &endpoints.fleet)
    else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": "this controller reads its objects from the Kubernetes API, not a folder: apply them to the cluster (edgefleet apply with a kubeconfig, or kubectl apply)",
            })),
        );
    };
    let text = body.clone();
    let written = tokio::task::spawn_blocking(move || apply_documents(&dir, &text)).await;
    let applied = match written {
        Ok(Ok(applied)) => applied,
        Ok(Err(e)) => return (e.status, Json(json!({"error": e.message}))),
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": format!("the apply failed: {e}")})),
            );
        }
    };
    // Answer once the controller has read the files, so that a `get` right after shows them.
    let mut declared = Objects::default();
    let _ = objects::add_documents(&mut declared, &body);
    let mut rx = objects_rx.clone();
    let read = tokio::time::timeout(APPLY_READ_WAIT, rx.wait_for(|o| reflects(o, &declared)))
        .await
        .is_ok_and(|r| r.is_ok());
    (
        StatusCode::OK,
        Json(json!({"applied": applied, "read": read})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_tells_a_loop_that_moves_nothing_apart() {
        let now = 1_000_000;
        let fine = crate::control::Progress {
            synced: true,
            complete: true,
            last_round_ms: now - 1000,
            writes_failing_since_ms: None,
        };
        assert!(unready(&fine, now).is_empty());
        let stalled = crate::control::Progress {
            last_round_ms: now - 11_000,
            ..fine.clone()
        };
        assert!(unready(&stalled, now)[0].contains("loop_stalled"));
        // Failing writes are retried for a while before readiness says so.
        let failing = |since| crate::control::Progress {
            writes_failing_since_ms: Some(since),
            ..fine.clone()
        };
        assert!(unready(&failing(now - 30_000), now).is_empty());
        let reasons = unready(&failing(now - 61_000), now);
        assert!(
            reasons[0].contains("status_writes_failing") && reasons[0].contains("61 s"),
            "{reasons:?}"
        );
    }

    const MODULE: &str = "apiVersion: edgefleet.dev/v1alpha1\nkind: HandlerModule\n\
        metadata: {name: thermostat-1.0.0}\n\
        spec: {module: thermostat, version: 1.0.0, file: thermostat.wasm, sha256: \"0123456789012345678901234567890123456789012345678901234567890123\"}\n";
    const CLASS: &str = "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\n\
        metadata: {name: thermo, labels: {tier: \"1\"}}\n\
        spec: {module: thermostat-1.0.0, config: {setpoint_c: 21.5, mode: \"on\"}, nodeSelector: {}}\n";

    fn results(applied: &[Applied]) -> Vec<String> {
        applied
            .iter()
            .map(|a| format!("{} {} {}", a.file, a.result, a.kind))
            .collect()
    }

    #[test]
    fn apply_writes_one_file_per_object_that_the_folder_reader_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let applied = apply_documents(dir.path(), &format!("{MODULE}---\n{CLASS}")).unwrap();
        assert_eq!(
            results(&applied),
            [
                "handlermodule-thermostat-1.0.0.yaml created HandlerModule",
                "deviceclass-thermo.yaml created DeviceClass",
            ]
        );
        let read = objects::read_folder(dir.path());
        assert!(read.errors.is_empty(), "{:?}", read.errors);
        let mut expected = Objects::default();
        objects::add_documents(&mut expected, &format!("{MODULE}---\n{CLASS}")).unwrap();
        assert!(reflects(&read, &expected), "{read:#?}");
        assert_eq!(read.classes["thermo"].labels["tier"], "1");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        // Again: unchanged; a changed class: configured.
        let again = apply_documents(dir.path(), &format!("{MODULE}---\n{CLASS}")).unwrap();
        assert!(again.iter().all(|a| a.result == "unchanged"), "{again:?}");
        let changed = apply_documents(dir.path(), &CLASS.replace("21.5", "19")).unwrap();
        assert_eq!(
            results(&changed),
            ["deviceclass-thermo.yaml configured DeviceClass"]
        );
        let read = objects::read_folder(dir.path());
        assert_eq!(
            read.classes["thermo"].spec.config.as_ref().unwrap()["setpoint_c"],
            19
        );
    }

    #[test]
    fn apply_refuses_invalid_objects_and_conflicts_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |text: &str, status: StatusCode, expect: &str| {
            let before = objects::object_files(dir.path()).unwrap();
            let e = apply_documents(dir.path(), text).expect_err(text);
            assert_eq!(e.status, status, "{}", e.message);
            assert!(e.message.contains(expect), "{text}\n→ {}", e.message);
            assert_eq!(objects::object_files(dir.path()).unwrap(), before);
        };
        refused("kind: [unclosed", StatusCode::BAD_REQUEST, "not YAML");
        refused("", StatusCode::BAD_REQUEST, "no object");
        // A valid first document does not get written when the second is invalid.
        refused(
            &format!(
                "{MODULE}---\napiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata: {{name: x}}\nspec: {{}}\n"
            ),
            StatusCode::BAD_REQUEST,
            "document 2: DeviceClass x: bad spec: missing field `module`",
        );
        refused(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            StatusCode::BAD_REQUEST,
            "apiVersion \"v1\" is not edgefleet.dev/v1alpha1",
        );
        refused(
            "apiVersion: edgefleet.dev/v1alpha1\nkind: EdgeNode\nmetadata: {name: ../etc}\n",
            StatusCode::BAD_REQUEST,
            "not a valid name",
        );
        refused(
            &format!("{CLASS}---\n{CLASS}"),
            StatusCode::BAD_REQUEST,
            "DeviceClass thermo appears more than once",
        );
        // Declared in a file of the operator's: edit that one.
        std::fs::write(dir.path().join("fleet.yaml"), CLASS).unwrap();
        refused(
            CLASS,
            StatusCode::CONFLICT,
            "DeviceClass thermo is declared in fleet.yaml",
        );
        // A module version is immutable.
        apply_documents(dir.path(), MODULE).unwrap();
        refused(
            &MODULE.replace("thermostat.wasm", "other.wasm"),
            StatusCode::CONFLICT,
            "immutable",
        );
    }

    #[test]
    fn digits_only_strings_stay_strings() {
        let value: Value =
            serde_json::json!({"a": "0123", "b": "1.0", "c": "true", "d": 7, "e": "~", "f": ""});
        let text = render(&value);
        assert_eq!(serde_saphyr::from_str::<Value>(&text).unwrap(), value);
    }
}
