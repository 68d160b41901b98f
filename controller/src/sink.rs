//! Where status goes: the API server (cluster mode, `kube`) or a local store (standalone mode),
//! which keeps the last status of every object in memory for the HTTP API and in JSON files under
//! `<data>/status/` so that a restarted standalone controller shows the fleet at once.
//!
//! Either way a status equal to the one last written is not written again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use edgefleet_protocol::NodeId;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::resources::{DeviceClassStatus, EdgeNodeStatus, HandlerModuleStatus};

/// Why a status could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The local store's file could not be written.
    #[error("cannot write {path}: {source} (is the data folder writable, the disk not full?)")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The API server refused or could not be reached.
    #[error("API server: {0}")]
    Api(#[from] kube::Error),
}

impl SinkError {
    /// A label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Io { .. } => "io",
            SinkError::Api(kube::Error::Api(status)) if status.code == 403 => "forbidden",
            SinkError::Api(kube::Error::Api(status)) if status.code == 409 => "conflict",
            SinkError::Api(kube::Error::Api(status)) if status.code == 404 => "not_found",
            SinkError::Api(_) => "api",
        }
    }
}

/// The last status of every object, as standalone mode keeps it.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// HandlerModules.
    pub modules: BTreeMap<String, HandlerModuleStatus>,
    /// DeviceClasses.
    pub classes: BTreeMap<String, DeviceClassStatus>,
    /// EdgeNodes.
    pub nodes: BTreeMap<String, EdgeNodeStatus>,
}

/// Standalone mode's status store.
pub struct LocalStore {
    dir: PathBuf,
    view: RwLock<View>,
}

const MODULES: &str = "handlermodules";
const CLASSES: &str = "deviceclasses";
const NODES: &str = "edgenodes";

impl LocalStore {
    /// Opens the store under `data_dir`, loading what an earlier run wrote.
    pub fn open(data_dir: &Path) -> std::io::Result<LocalStore> {
        let dir = data_dir.join("status");
        for kind in [MODULES, CLASSES, NODES] {
            std::fs::create_dir_all(dir.join(kind))?;
        }
        let view = View {
            modules: load(&dir.join(MODULES)),
            classes: load(&dir.join(CLASSES)),
            nodes: load(&dir.join(NODES)),
        };
        Ok(LocalStore {
            dir,
            view: RwLock::new(view),
        })
    }

    /// A copy of what the store holds.
    pub fn view(&self) -> View {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn write<T: Serialize + PartialEq + Clone>(
        &self,
        kind: &str,
        name: &str,
        status: &T,
        select: impl Fn(&mut View) -> &mut BTreeMap<String, T>,
    ) -> Result<bool, SinkError> {
        {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            if select(&mut view).get(name) == Some(status) {
                return Ok(false);
            }
        }
        let path = self.dir.join(kind).join(format!("{name}.json"));
        let bytes = serde_json::to_vec_pretty(status).expect("status serializes");
        write_atomically(&path, &bytes).map_err(|source| SinkError::Io {
            path: path.clone(),
            source,
        })?;
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        select(&mut view).insert(name.to_string(), status.clone());
        Ok(true)
    }

    /// Forgets the objects that are no longer declared (nodes stay: they report on their own).
    pub fn retain(&self, modules: &dyn Fn(&str) -> bool, classes: &dyn Fn(&str) -> bool) {
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        for (kind, map_names) in [
            (MODULES, remove_unlisted(&mut view.modules, modules)),
            (CLASSES, remove_unlisted(&mut view.classes, classes)),
        ] {
            for name in map_names {
                let _ = std::fs::remove_file(self.dir.join(kind).join(format!("{name}.json")));
            }
        }
    }
}

fn remove_unlisted<T>(map: &mut BTreeMap<String, T>, keep: &dyn Fn(&str) -> bool) -> Vec<String> {
    let gone: Vec<String> = map.keys().filter(|n| !keep(n)).cloned().collect();
    for name in &gone {
        map.remove(name);
    }
    gone
}

fn load<T: DeserializeOwned>(dir: &Path) -> BTreeMap<String, T> {
    let mut map = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return map;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        match std::fs::read(&path).map(|b| serde_json::from_slice::<T>(&b)) {
            Ok(Ok(status)) => {
                map.insert(name.to_string(), status);
            }
            _ => tracing::warn!(path = %path.display(), "unreadable status file ignored"),
        }
    }
    map
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Which kind an [`Notice`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A HandlerModule.
    Module,
    /// A DeviceClass.
    Class,
    /// An EdgeNode.
    Node,
}

/// Something an operator should see in `kubectl describe` (a Kubernetes Event in cluster mode;
/// a log line in standalone mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The object's kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// What happened.
    pub note: String,
}

/// Where status goes.
#[derive(Clone)]
pub enum Sink {
    /// Standalone mode.
    Local(Arc<LocalStore>),
    /// Cluster mode.
    Kube(Arc<crate::kube::StatusWriter>),
}

impl Sink {
    /// Writes a HandlerModule's status if it changed; `Ok(true)` when written.
    pub async fn module(
        &self,
        name: &str,
        status: &HandlerModuleStatus,
    ) -> Result<bool, SinkError> {
        match self {
            Sink::Local(store) => store.write(MODULES, name, status, |v| &mut v.modules),
            Sink::Kube(writer) => writer.module(name, status).await,
        }
    }

    /// Writes a DeviceClass's status if it changed.
    pub async fn class(&self, name: &str, status: &DeviceClassStatus) -> Result<bool, SinkError> {
        match self {
            Sink::Local(store) => store.write(CLASSES, name, status, |v| &mut v.classes),
            Sink::Kube(writer) => writer.class(name, status).await,
        }
    }

    /// The EdgeNode status every node has where status goes (what an earlier run wrote).
    pub fn known_nodes(&self) -> Vec<(NodeId, EdgeNodeStatus)> {
        let nodes = match self {
            Sink::Local(store) => store.view().nodes.into_iter().collect::<Vec<_>>(),
            Sink::Kube(writer) => writer.known_nodes(),
        };
        nodes
            .into_iter()
            .filter_map(|(name, status)| Some((NodeId::new(name).ok()?, status)))
            .collect()
    }

    /// Records a notice (throttled by the caller).
    pub async fn notice(&self, notice: &Notice) -> Result<(), SinkError> {
        match self {
            Sink::Local(_) => {
                // Standalone mode has no Events: the log is where an operator looks.
                if notice.warning {
                    tracing::warn!(kind = ?notice.kind, name = %notice.name, reason = %notice.reason, "{}", notice.note);
                } else {
                    tracing::info!(kind = ?notice.kind, name = %notice.name, reason = %notice.reason, "{}", notice.note);
                }
                Ok(())
            }
            Sink::Kube(writer) => writer.notice(notice).await,
        }
    }

    /// Writes an EdgeNode's status (creating the EdgeNode if needed).
    pub async fn node(&self, node: &NodeId, status: &EdgeNodeStatus) -> Result<bool, SinkError> {
        match self {
            Sink::Local(store) => store.write(NODES, node.as_str(), status, |v| &mut v.nodes),
            Sink::Kube(writer) => writer.node(node, status).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_store_writes_only_changes_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let status = EdgeNodeStatus {
            state: Some("Online".into()),
            ..EdgeNodeStatus::default()
        };
        assert!(
            store
                .write(NODES, "edge-1", &status, |v| &mut v.nodes)
                .unwrap()
        );
        assert!(
            !store
                .write(NODES, "edge-1", &status, |v| &mut v.nodes)
                .unwrap()
        );
        let again = LocalStore::open(dir.path()).unwrap();
        assert_eq!(again.view().nodes["edge-1"], status);
        assert!(
            !again
                .write(NODES, "edge-1", &status, |v| &mut v.nodes)
                .unwrap()
        );
    }
}
