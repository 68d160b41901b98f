//! Wiring: the sources of objects and sinks of status of either mode around one [`Controller`],
//! the HTTP endpoints, leader election (cluster mode) and a clean shutdown on SIGTERM or Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edgefleet_protocol::SigningKey;
use edgefleet_sandbox::WorkerCommand;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::cloud::{Cloud, CloudSettings};
use crate::config::{Config, Mode};
use crate::control::{Controller, Progress, Settings};
use crate::http::{self, Endpoints};
use crate::ingest::WritePolicy;
use crate::metrics::Metrics;
use crate::modules::Blobs;
use crate::objects::{self, Objects};
use crate::sink::{LocalStore, Sink};

/// Why the controller could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The signing key could not be read.
    #[error("signing key {path}: {source} (make one with `edgefleet keys generate`)")]
    SigningKey {
        /// The file.
        path: PathBuf,
        /// Why.
        source: edgefleet_protocol::signing::KeyError,
    },
    /// The TLS files could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// A folder could not be made or read.
    #[error("{what} {path}: {source}")]
    Io {
        /// What it was for.
        what: &'static str,
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The Kubernetes API could not be reached.
    #[error("Kubernetes: {0} (in a cluster, check the ServiceAccount; outside, check $KUBECONFIG)")]
    Kube(#[from] kube::Error),
    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(String),
    /// The OCI registry settings are unusable.
    #[error("registry: {0}")]
    Registry(String),
    /// The node identity bootstrap endpoint could not start.
    #[error("bootstrap endpoint: {0}")]
    Bootstrap(#[from] crate::bootstrap::StartError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RunError {
    let path = path.to_path_buf();
    move |source| RunError::Io { what, path, source }
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), RunError> {
    edgefleet_protocol::tls::install_crypto_provider();
    let key = SigningKey::load(&config.signing_key).map_err(|source| RunError::SigningKey {
        path: config.signing_key.clone(),
        source,
    })?;
    tracing::info!(key_id = %key.key_id(), "signing assignments");
    std::fs::create_dir_all(&config.data_dir).map_err(io("cannot create", &config.data_dir))?;
    let blobs = Blobs::open(&config.data_dir)
        .map_err(io("cannot open the blob store in", &config.data_dir))?;
    let cloud = cloud_settings(&config)?;
    let registry = Arc::new(
        crate::oci::Registry::new(config.registry_ca.as_deref(), &config.insecure_registries)
            .map_err(|e| RunError::Registry(e.to_string()))?,
    );
    // The sandbox for test vectors starts when a module first declares some.
    let vectors = Arc::new(crate::vectors::Runner::new(
        WorkerCommand::new(&config.worker_binary),
        &config.artefact_dir,
    ));
    if !config.worker_binary.is_file() {
        tracing::warn!(
            worker = %config.worker_binary.display(),
            "no sandbox worker there: modules that declare test vectors stay unavailable \
             (install edgefleet-sandbox-worker there, or set --worker-binary)"
        );
    }
    let metrics = Arc::new(Metrics::default());
    let mut registry_metrics = Registry::default();
    metrics.register(&mut registry_metrics);
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
    });
    let listener = http::bind(config.listen).await.map_err(io(
        "cannot listen on",
        Path::new(&config.listen.to_string()),
    ))?;
    tracing::info!(addr = %config.listen, "serving /healthz, /readyz, /metrics and the fleet page at /fleet");
    // One view for the page in either mode; each term of leadership's loop publishes into it.
    let (page_tx, page) = watch::channel(Arc::default());
    let settings = |files_dir| Settings {
        key: key.clone(),
        blobs: blobs.clone(),
        files_dir,
        registry: Some(registry.clone()),
        write_policy: WritePolicy {
            writes_per_s: config.status_writes_per_s,
            steady_interval_ms: config.status_steady_interval_s.saturating_mul(1000),
            ..WritePolicy::default()
        },
        vectors: vectors.clone(),
        page: page_tx.clone(),
    };
    match &config.mode {
        Mode::Standalone { objects } => {
            let store = Arc::new(
                LocalStore::open(&config.data_dir)
                    .map_err(io("cannot open the status store in", &config.data_dir))?,
            );
            let objects_rx = watch_folder(objects.clone(), stop.clone());
            let (controller, progress) =
                Controller::new(settings(Some(objects.clone())), metrics.clone());
            let (_leading_tx, leading) = watch::channel(true);
            metrics.leader.set(1);
            let endpoints = Arc::new(Endpoints {
                registry: registry_metrics,
                progress,
                leading,
                fleet: Some((objects_rx.clone(), store.clone())),
                objects_dir: Some(objects.clone()),
                page: page.clone(),
            });
            tokio::spawn(http::serve(listener, endpoints));
            let (cloud, from_cloud) = Cloud::start(cloud);
            controller
                .run(cloud, from_cloud, objects_rx, Sink::Local(store), stop)
                .await;
        }
        Mode::Cluster {
            lease,
            namespace,
            identity,
        } => {
            let client = kube::Client::try_default().await?;
            // Every replica serves node certificates: the endpoint keeps no state.
            if let Some(bootstrap) = &config.bootstrap {
                let addr = crate::bootstrap::start(
                    bootstrap,
                    client.clone(),
                    metrics.clone(),
                    stop.clone(),
                )
                .await?;
                tracing::info!(%addr, audience = %bootstrap.audience, "serving node certificates (POST /v1/node-certificate)");
            }
            let (stores, objects_rx) = crate::kube::watch_objects(client.clone()).await;
            let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), lease)
                .with_namespace(namespace)
                .with_identity(identity)
                .with_duration(15)
                .with_grace(5)
                .build()
                .await
                .map_err(|e| RunError::Lease(e.to_string()))?;
            let (mut leading, lease_task) = manager.watch().await;
            let (progress_tx, progress) = watch::channel(Progress::default());
            let endpoints = Arc::new(Endpoints {
                registry: registry_metrics,
                progress,
                leading: leading.clone(),
                fleet: None,
                objects_dir: None,
                page: page.clone(),
            });
            tokio::spawn(http::serve(listener, endpoints));
            let mut stop_outer = stop.clone();
            loop {
                if *leading.borrow_and_update() {
                    tracing::info!(%identity, "leading");
                    metrics.leader.set(1);
                    let (lead_stop_tx, lead_stop) = watch::channel(false);
                    let (controller, mut loop_progress) =
                        Controller::new(settings(None), metrics.clone());
                    let (cloud, from_cloud) = Cloud::start(cloud.clone());
                    let sink = crate::kube::sink(client.clone(), stores.clone(), identity);
                    let mut round = tokio::spawn(controller.run(
                        cloud,
                        from_cloud,
                        objects_rx.clone(),
                        sink,
                        lead_stop,
                    ));
                    loop {
                        tokio::select! {
                            _ = stop_outer.changed() => break,
                            _ = leading.changed() => if !*leading.borrow() { break },
                            changed = loop_progress.changed() => {
                                if changed.is_err() { break }
                                let _ = progress_tx.send(loop_progress.borrow().clone());
                            }
                            _ = &mut round => break,
                        }
                    }
                    let _ = lead_stop_tx.send(true);
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut round).await;
                    metrics.leader.set(0);
                    // The page shows nothing of this term once it is over (a next term starts
                    // from an empty view, not from this one's last).
                    page_tx.send_replace(Arc::default());
                    tracing::info!(%identity, "no longer leading");
                    if *stop_outer.borrow() {
                        break;
                    }
                } else {
                    tokio::select! {
                        _ = stop_outer.changed() => break,
                        changed = leading.changed() => if changed.is_err() { break },
                    }
                }
            }
            // Closing the channel ends the lease task, which releases the lease for the other
            // replica at once instead of after it expires.
            drop(leading);
            let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
        }
    }
    Ok(())
}

fn cloud_settings(config: &Config) -> Result<CloudSettings, RunError> {
    let tls = match &config.tls {
        Some(files) => {
            let read = |path: &Path| {
                std::fs::read(path)
                    .map_err(|e| RunError::Tls(format!("cannot read {}: {e}", path.display())))
            };
            let tls = edgefleet_protocol::tls::client_config_from_pem(
                &read(&files.ca)?,
                &read(&files.cert)?,
                &read(&files.key)?,
            )
            .map_err(|e| RunError::Tls(e.to_string()))?;
            Some(Arc::new(tls))
        }
        None => None,
    };
    Ok(CloudSettings {
        host: config.cloud_broker.host.clone(),
        port: config.cloud_broker.port,
        tls,
        client_id: "edgefleet-controller".into(),
    })
}

/// Watches a folder of object files: rereads it when a file is added, removed or changed
/// (polled every second: reliable on every file system, bind mounts and ConfigMap volumes alike).
fn watch_folder(dir: PathBuf, mut stop: watch::Receiver<bool>) -> watch::Receiver<Objects> {
    let (tx, rx) = watch::channel(objects::read_folder(&dir));
    report(&rx.borrow());
    tokio::spawn(async move {
        let mut last = fingerprint(&dir);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let now = fingerprint(&dir);
            if now == last {
                continue;
            }
            last = now;
            let objects = objects::read_folder(&dir);
            report(&objects);
            tx.send_if_modified(|current| {
                let changed = *current != objects;
                *current = objects;
                changed
            });
        }
    });
    rx
}

fn report(objects: &Objects) {
    tracing::info!(
        modules = objects.modules.len(),
        classes = objects.classes.len(),
        edge_nodes = objects.edge_nodes.len(),
        "objects read"
    );
    for error in &objects.errors {
        tracing::warn!(%error, "object file refused");
    }
}

/// Names, sizes and modification times of every file in `dir`.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
