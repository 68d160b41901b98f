//! Cluster mode's two ends: the declared objects, from watches of the API server (reflectors of
//! HandlerModules, DeviceClasses, EdgeNodes and the metadata of Nodes), and the status, written back
//! by server-side apply on the status subresource.
//!
//! The objects are handed on only once every reflector has listed its kind: planning from a
//! partial list would withdraw the classes not listed yet. Status is compared with what the
//! reflectors hold before it is written, so a restarted controller writes only what changed.

use std::sync::Arc;

use edgefleet_protocol::NodeId;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node as KubeNode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use tokio::sync::watch;

use crate::objects::{Declared, Objects};
use crate::resources::{
    API_VERSION, DeviceClass, DeviceClassStatus, EdgeNode, EdgeNodeSpec, EdgeNodeStatus,
    HandlerModule, HandlerModuleStatus,
};
use crate::sink::{Kind, Notice, SinkError};

/// The field manager of everything the controller writes.
pub const MANAGER: &str = "edgefleet-controller";

/// The reflectors' stores.
#[derive(Clone)]
pub struct Stores {
    modules: Store<HandlerModule>,
    classes: Store<DeviceClass>,
    edge_nodes: Store<EdgeNode>,
    nodes: Store<PartialObjectMeta<KubeNode>>,
}

/// Starts the watches; the returned receiver gets the objects once every kind is listed, then on
/// every change.
pub async fn watch_objects(client: Client) -> (Stores, watch::Receiver<Objects>) {
    let config = watcher::Config::default().page_size(50);
    let (modules, modules_writer) = reflector::store();
    let (classes, classes_writer) = reflector::store();
    let (edge_nodes, edge_nodes_writer) = reflector::store();
    let (nodes, nodes_writer) = reflector::store();
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(16);

    fn spawn_reflector<S>(stream: S, changed: tokio::sync::mpsc::Sender<()>)
    where
        S: futures::Stream + Send + 'static,
    {
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while stream.next().await.is_some() {
                let _ = changed.try_send(());
            }
        });
    }
    spawn_reflector(
        reflector::reflector(
            modules_writer,
            watcher(Api::<HandlerModule>::all(client.clone()), config.clone()),
        )
        .default_backoff(),
        changed_tx.clone(),
    );
    spawn_reflector(
        reflector::reflector(
            classes_writer,
            watcher(Api::<DeviceClass>::all(client.clone()), config.clone()),
        )
        .default_backoff(),
        changed_tx.clone(),
    );
    spawn_reflector(
        reflector::reflector(
            edge_nodes_writer,
            watcher(Api::<EdgeNode>::all(client.clone()), config.clone()),
        )
        .default_backoff(),
        changed_tx.clone(),
    );
    spawn_reflector(
        reflector::reflector(
            nodes_writer,
            watcher(Api::<PartialObjectMeta<KubeNode>>::all(client), config),
        )
        .default_backoff(),
        changed_tx,
    );
    let stores = Stores {
        modules,
        classes,
        edge_nodes,
        nodes,
    };
    let (objects_tx, objects_rx) = watch::channel(Objects::default());
    let ready = stores.clone();
    tokio::spawn(async move {
        for ready in [
            ready.modules.wait_until_ready().await,
            ready.classes.wait_until_ready().await,
            ready.edge_nodes.wait_until_ready().await,
            ready.nodes.wait_until_ready().await,
        ] {
            if ready.is_err() {
                return;
            }
        }
        let mut last = None;
        loop {
            let objects = ready.objects();
            if last.as_ref() != Some(&objects) {
                last = Some(objects.clone());
                if objects_tx.send(objects).is_err() {
                    return;
                }
            }
            if changed_rx.recv().await.is_none() {
                return;
            }
            // Rebuilding the objects walks every cached object (10,000 EdgeNodes, whose status
            // writes come back as events): take the changes of the next 250 ms together.
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            while changed_rx.try_recv().is_ok() {}
        }
    });
    (stores, objects_rx)
}

impl Stores {
    fn objects(&self) -> Objects {
        let mut objects = Objects {
            complete: true,
            ..Objects::default()
        };
        for module in self.modules.state() {
            objects.modules.insert(
                module.name_any(),
                Declared {
                    spec: module.spec.clone(),
                    labels: module.labels().clone(),
                    annotations: Default::default(),
                    generation: module.metadata.generation,
                },
            );
        }
        for class in self.classes.state() {
            objects.classes.insert(
                class.name_any(),
                Declared {
                    spec: class.spec.clone(),
                    labels: class.labels().clone(),
                    annotations: class.annotations().clone(),
                    generation: class.metadata.generation,
                },
            );
        }
        for node in self.edge_nodes.state() {
            objects.edge_nodes.insert(
                node.name_any(),
                Declared {
                    spec: node.spec.clone(),
                    labels: node.labels().clone(),
                    annotations: Default::default(),
                    generation: node.metadata.generation,
                },
            );
        }
        for node in self.nodes.state() {
            objects
                .node_labels
                .insert(node.name_any(), node.labels().clone());
        }
        objects
    }
}

/// Writes status by server-side apply, creating EdgeNodes on a node's first status, and records
/// Kubernetes Events (events.k8s.io; for these cluster-scoped objects in the `default` namespace).
pub struct StatusWriter {
    client: Client,
    stores: Stores,
    recorder: Recorder,
}

impl StatusWriter {
    /// A writer comparing against `stores`; `identity` names this replica in Events.
    pub fn new(client: Client, stores: Stores, identity: &str) -> StatusWriter {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: Some(identity.into()),
            },
        );
        StatusWriter {
            client,
            stores,
            recorder,
        }
    }

    pub(crate) async fn notice(&self, notice: &Notice) -> Result<(), SinkError> {
        let reference = match notice.kind {
            Kind::Module => self
                .stores
                .modules
                .get(&ObjectRef::new(&notice.name))
                .map(|m| m.object_ref(&())),
            Kind::Class => self
                .stores
                .classes
                .get(&ObjectRef::new(&notice.name))
                .map(|c| c.object_ref(&())),
            Kind::Node => self
                .stores
                .edge_nodes
                .get(&ObjectRef::new(&notice.name))
                .map(|n| n.object_ref(&())),
        };
        // An object not (yet) in the cache: nothing to attach the Event to.
        let Some(reference) = reference else {
            return Ok(());
        };
        let event = Event {
            type_: if notice.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: notice.reason.chars().take(128).collect(),
            note: Some(notice.note.chars().take(1000).collect()),
            action: notice.reason.chars().take(128).collect(),
            secondary: None,
        };
        self.recorder.publish(&event, &reference).await?;
        Ok(())
    }

    pub(crate) fn known_nodes(&self) -> Vec<(String, EdgeNodeStatus)> {
        self.stores
            .edge_nodes
            .state()
            .into_iter()
            .filter_map(|node| Some((node.name_any(), node.status.clone()?)))
            .collect()
    }

    pub(crate) async fn module(
        &self,
        name: &str,
        status: &HandlerModuleStatus,
    ) -> Result<bool, SinkError> {
        let current = self.stores.modules.get(&ObjectRef::new(name));
        if current.is_none() || current.and_then(|m| m.status.clone()).as_ref() == Some(status) {
            return Ok(false);
        }
        apply_status::<HandlerModule, _>(&self.client, name, status).await?;
        Ok(true)
    }

    pub(crate) async fn class(
        &self,
        name: &str,
        status: &DeviceClassStatus,
    ) -> Result<bool, SinkError> {
        let current = self.stores.classes.get(&ObjectRef::new(name));
        if current.is_none() || current.and_then(|c| c.status.clone()).as_ref() == Some(status) {
            return Ok(false);
        }
        apply_status::<DeviceClass, _>(&self.client, name, status).await?;
        Ok(true)
    }

    pub(crate) async fn node(
        &self,
        node: &NodeId,
        status: &EdgeNodeStatus,
    ) -> Result<bool, SinkError> {
        let name = node.as_str();
        match self.stores.edge_nodes.get(&ObjectRef::new(name)) {
            Some(current) if current.status.as_ref() == Some(status) => return Ok(false),
            Some(_) => {}
            None => self.create_edge_node(name).await?,
        }
        apply_status::<EdgeNode, _>(&self.client, name, status).await?;
        Ok(true)
    }

    /// Creates the EdgeNode of a node that reported for the first time, owned by the Kubernetes
    /// Node of the same name when there is one (deleting the Node then deletes the EdgeNode).
    async fn create_edge_node(&self, name: &str) -> Result<(), SinkError> {
        let owner = Api::<KubeNode>::all(self.client.clone())
            .get_metadata_opt(name)
            .await?
            .and_then(|node| {
                Some(OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.into(),
                    uid: node.metadata.uid?,
                    ..OwnerReference::default()
                })
            });
        let edge_node = EdgeNode {
            metadata: ObjectMeta {
                name: Some(name.into()),
                owner_references: owner.map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            spec: EdgeNodeSpec::default(),
            status: None,
        };
        match Api::<EdgeNode>::all(self.client.clone())
            .create(&PostParams::default(), &edge_node)
            .await
        {
            Ok(_) => {
                tracing::info!(node = name, "EdgeNode created");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

async fn apply_status<K, S>(client: &Client, name: &str, status: &S) -> Result<(), SinkError>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": K::kind(&()),
        "status": status,
    });
    Api::<K>::all(client.clone())
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

/// Cluster mode's sink.
pub fn sink(client: Client, stores: Stores, identity: &str) -> crate::sink::Sink {
    crate::sink::Sink::Kube(Arc::new(StatusWriter::new(client, stores, identity)))
}
