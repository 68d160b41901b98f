//! The controller's loop: one task that owns the fleet's state and turns every change — an object
//! declared or changed, a module resolved, a node's status, what the broker holds — into the same
//! level-triggered round: plan (`fleet`), diff against what is published (`distribution`),
//! publish, and write the status that changed (`status`, `ingest`).
//!
//! Where objects come from (Kubernetes watches or a folder) and where status goes (the API server
//! or the local store) are the only differences between the cluster and standalone modes: both
//! hand this loop a `watch` of [`Objects`] and a [`Sink`].
//!
//! Nothing is published before the cloud link has replayed what the broker holds (`Synced`), and
//! only while this replica leads (`leading`): a follower ingests nothing and publishes nothing.
//!
//! A class's rollout (`rollout`) rewrites the plan of its nodes each round: the loop hands
//! `rollout::decide` the record read back from the broker, what each node reports and the gate's
//! window, which the loop fills from every node status as it arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_protocol::{Assignment, ClassId, NodeId, NodeStatus, SigningKey, TrustAnchor};
use tokio::sync::{mpsc, watch};

use crate::cloud::{Cloud, FromCloud};
use crate::distribution::{self, Action, Published, PublishedAssignment};
use crate::fleet::{self, Class, Fleet, Module, Node, Planned, Resolution};
use crate::history::History;
use crate::ingest::{NodeTable, WritePolicy};
use crate::metrics::Metrics;
use crate::modules::{self, Blobs};
use crate::objects::Objects;
use crate::resources::{
    DeviceClassStatus, HandlerModuleSpec, HandlerModuleStatus, ROLLOUT_ACTION_ANNOTATION,
    RolloutStatus,
};
use crate::rollout::{self, NodeView, Record, Role, Window};
use crate::sink::{Kind, Notice, Sink, SinkError};
use crate::status;

/// What the loop needs besides its inputs.
pub struct Settings {
    /// The key assignments are signed with.
    pub key: SigningKey,
    /// The blob store.
    pub blobs: Blobs,
    /// Where `file:` module paths are relative to (the objects folder in standalone mode).
    pub files_dir: Option<PathBuf>,
    /// Fetches `image:` modules.
    pub registry: Option<Arc<crate::oci::Registry>>,
    /// How status writes are paced.
    pub write_policy: WritePolicy,
    /// Runs modules' test vectors before they become ready.
    pub vectors: Arc<crate::vectors::Runner>,
    /// Where the fleet page's view goes, once a tick (`page`).
    pub page: watch::Sender<Arc<crate::page::FleetView>>,
}

/// What the loop reports to readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The cloud link has replayed what the broker holds.
    pub synced: bool,
    /// Every source of objects has been read completely.
    pub complete: bool,
    /// When the loop last went round, ms since the UNIX epoch.
    pub last_round_ms: u64,
    /// Since when every status write has failed (`None`: the last one went through, or none was
    /// needed), ms since the UNIX epoch.
    pub writes_failing_since_ms: Option<u64>,
}

struct ModuleEntry {
    spec: HandlerModuleSpec,
    resolution: Resolution,
    admission: Option<String>,
    /// When to try an unavailable module again, ms since the UNIX epoch.
    retry_at_ms: u64,
    retry_delay_ms: u64,
    resolving: bool,
}

/// A module resolution finished (in a task of its own).
struct Resolved {
    name: String,
    spec: HandlerModuleSpec,
    resolution: Resolution,
    admission: Option<String>,
}

/// The loop's state.
pub struct Controller {
    settings: Settings,
    objects: Objects,
    modules: BTreeMap<String, ModuleEntry>,
    published: Published,
    synced: bool,
    nodes: NodeTable,
    module_status: BTreeMap<String, HandlerModuleStatus>,
    class_status: BTreeMap<String, DeviceClassStatus>,
    /// Each class's rollout record, as published (read back, then as this loop publishes it).
    rollouts: BTreeMap<String, Record>,
    /// The gate's window of each class whose rollout is under way, with its target handler.
    windows: BTreeMap<String, (edgefleet_protocol::HandlerSpec, Window)>,
    rollout_status: BTreeMap<String, RolloutStatus>,
    /// See [`Progress::writes_failing_since_ms`].
    writes_failing_since_ms: Option<u64>,
    dirty: bool,
    /// When the declared state last changed without a round having published it yet (the start
    /// of the publish lag).
    changed_at: Option<std::time::Instant>,
    /// Notices waiting to be recorded (bounded: the oldest go first when it is full).
    notices: std::collections::VecDeque<Notice>,
    metrics: Arc<Metrics>,
    progress: watch::Sender<Progress>,
    /// The fleet's interaction and fault rates, for the fleet page.
    history: History,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Controller {
    /// A controller that has seen nothing yet.
    pub fn new(
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> (Controller, watch::Receiver<Progress>) {
        let (progress, progress_rx) = watch::channel(Progress::default());
        let nodes = NodeTable::new(settings.write_policy.clone());
        (
            Controller {
                settings,
                objects: Objects::default(),
                modules: BTreeMap::new(),
                published: Published::default(),
                synced: false,
                nodes,
                module_status: BTreeMap::new(),
                class_status: BTreeMap::new(),
                rollouts: BTreeMap::new(),
                windows: BTreeMap::new(),
                rollout_status: BTreeMap::new(),
                writes_failing_since_ms: None,
                dirty: true,
                changed_at: None,
                notices: std::collections::VecDeque::new(),
                metrics,
                progress,
                history: History::new(now_ms()),
            },
            progress_rx,
        )
    }

    /// Runs until `stop` turns true.
    pub async fn run(
        mut self,
        cloud: Cloud,
        mut from_cloud: mpsc::Receiver<FromCloud>,
        mut objects: watch::Receiver<Objects>,
        sink: Sink,
        mut stop: watch::Receiver<bool>,
    ) {
        let (resolved_tx, mut resolved_rx) = mpsc::channel::<Resolved>(64);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.objects = objects.borrow_and_update().clone();
        let mut seeded = false;
        let mut ticked = false;
        loop {
            if !seeded && self.objects.complete {
                // What an earlier run wrote: statuses equal to it are not written again.
                seeded = true;
                let now = now_ms();
                for (node, status) in sink.known_nodes() {
                    self.nodes.known(node, status, now);
                }
            }
            tokio::select! {
                _ = stop.changed() => break,
                changed = objects.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.objects = objects.borrow_and_update().clone();
                    self.dirty = true;
                    self.changed_at.get_or_insert_with(std::time::Instant::now);
                }
                message = from_cloud.recv() => {
                    let Some(message) = message else { break };
                    self.observe_cloud(message);
                    // Take whatever else is already waiting before planning again.
                    while let Ok(message) = from_cloud.try_recv() {
                        self.observe_cloud(message);
                    }
                }
                Some(resolved) = resolved_rx.recv() => self.resolved(resolved),
                _ = tick.tick() => ticked = true,
            }
            self.resolve_modules(&resolved_tx);
            if self.dirty && self.synced && self.objects.complete {
                self.dirty = false;
                self.distribute(&cloud).await;
            }
            // After the round, so that what it decided (a rollout's step) is written at once.
            if std::mem::take(&mut ticked) {
                self.write_status(&sink).await;
                let _ = self.progress.send(Progress {
                    synced: self.synced,
                    complete: self.objects.complete,
                    last_round_ms: now_ms(),
                    writes_failing_since_ms: self.writes_failing_since_ms,
                });
                // The fleet page's view: what the loop holds now, bounded, once a tick.
                let view = crate::page::view(
                    &self.nodes,
                    &self.class_status,
                    &mut self.history,
                    self.synced,
                    now_ms(),
                );
                self.settings.page.send_replace(Arc::new(view));
            }
        }
        cloud.disconnect().await;
    }

    fn observe_cloud(&mut self, message: FromCloud) {
        let now = now_ms();
        match message {
            FromCloud::Connected => {
                self.synced = false;
                self.published = Published::default();
                self.rollouts.clear();
            }
            FromCloud::Rollout { class, record } => match record {
                Some(record) => {
                    self.rollouts.insert(class, *record);
                }
                None => {
                    self.rollouts.remove(&class);
                }
            },
            FromCloud::Synced => {
                tracing::info!(
                    assignments = self.published.assignments.len(),
                    modules = self.published.chunks.len(),
                    "cloud broker replayed what it holds"
                );
                self.synced = true;
                self.dirty = true;
            }
            FromCloud::Lost(reason) => {
                tracing::warn!(%reason, "cloud broker connection lost");
                self.synced = false;
            }
            FromCloud::Status(status) => {
                // A node's first status can make it selected: plan at once. Other statuses only
                // change class status, which the next tick's round recomputes.
                let new_node = self.nodes.report(&status.node).is_none();
                self.measure(&status);
                let node = status.node.clone();
                let kind = if self.nodes.observe_status(*status, now) {
                    // Rates from the report as taken (a last will keeps the counters it had).
                    if let Some(report) = self.nodes.report(&node) {
                        self.history.observe(report, now);
                    }
                    "taken"
                } else {
                    "ignored"
                };
                self.metrics.statuses.get_or_create(&kind.into()).inc();
                self.dirty |= new_node;
            }
            FromCloud::Event(event) => {
                self.metrics.node_events.inc();
                if let Some(event) = self.nodes.observe_event(*event, now) {
                    tracing::info!(node = %event.node, kind = event.kind.as_str(), detail = %event.detail, "node event");
                    self.notice(Notice {
                        kind: Kind::Node,
                        name: event.node.to_string(),
                        warning: event.warning,
                        reason: event.reason().to_string(),
                        note: event.message(),
                    });
                }
            }
            FromCloud::Assignment {
                node,
                class,
                assignment,
            } => {
                let target = (node, class);
                match assignment {
                    None => {
                        self.published.assignments.remove(&target);
                    }
                    Some(signed) => {
                        if let Some(published) = self.read_back(&signed) {
                            self.published.assignments.insert(target, published);
                        }
                    }
                }
                // Only an assignment changed behind our back needs a new round; our own come
                // back equal to what `record` already noted.
            }
            FromCloud::Chunk {
                module,
                index,
                digest,
            } => {
                let chunks = self.published.chunks.entry(module).or_default();
                match digest {
                    Some(digest) => {
                        chunks.insert(index, digest);
                    }
                    None => {
                        chunks.remove(&index);
                        if chunks.is_empty() {
                            self.published.chunks.remove(&module);
                        }
                    }
                }
            }
            FromCloud::Refused { topic, reason } => {
                self.metrics.refused_messages.inc();
                tracing::debug!(%topic, %reason, "undecodable message from the cloud broker");
            }
        }
    }

    /// What a retained assignment read back says. One this controller's key cannot verify (an old
    /// key, or damage) is recorded under an unknown key id, so the next round re-signs it.
    fn read_back(
        &self,
        signed: &edgefleet_protocol::Signed<Assignment>,
    ) -> Option<PublishedAssignment> {
        let mut anchor = TrustAnchor::new();
        anchor.insert(self.settings.key.verifying_key());
        match signed.verify(&anchor) {
            Ok(assignment) => Some(PublishedAssignment {
                generation: assignment.generation,
                key: signed.key_id(),
                handler: assignment.handler,
                shadow: assignment.shadow,
            }),
            Err(_) => {
                let assignment: Assignment = edgefleet_protocol::codec::decode(
                    signed.payload(),
                    <Assignment as edgefleet_protocol::SignedKind>::MAX_PAYLOAD_LEN,
                )
                .ok()?;
                Some(PublishedAssignment {
                    generation: assignment.generation,
                    key: edgefleet_protocol::KeyId::of_public_key(&[0; 32]),
                    handler: assignment.handler,
                    shadow: assignment.shadow,
                })
            }
        }
    }

    /// Starts resolving every module that is new, changed, or due for another try.
    fn resolve_modules(&mut self, done: &mpsc::Sender<Resolved>) {
        let now = now_ms();
        self.modules
            .retain(|name, _| self.objects.modules.contains_key(name));
        for (name, declared) in &self.objects.modules {
            let entry = self
                .modules
                .entry(name.clone())
                .or_insert_with(|| ModuleEntry {
                    spec: declared.spec.clone(),
                    resolution: Resolution::Pending,
                    admission: None,
                    retry_at_ms: 0,
                    retry_delay_ms: 1000,
                    resolving: false,
                });
            if entry.spec != declared.spec {
                *entry = ModuleEntry {
                    spec: declared.spec.clone(),
                    resolution: Resolution::Pending,
                    admission: None,
                    retry_at_ms: 0,
                    retry_delay_ms: 1000,
                    resolving: false,
                };
            }
            let due = match &entry.resolution {
                Resolution::Pending | Resolution::Unavailable(_) => entry.retry_at_ms <= now,
                // A file may be rebuilt under the same name (development): read it again when
                // the folder changes.
                Resolution::Ready(_) | Resolution::Refused(_) => {
                    entry.spec.file.is_some() && self.dirty && entry.retry_at_ms <= now
                }
            };
            if !due || entry.resolving {
                continue;
            }
            entry.resolving = true;
            let spec = entry.spec.clone();
            let name = name.clone();
            let blobs = self.settings.blobs.clone();
            let files_dir = self.settings.files_dir.clone();
            let registry = self.settings.registry.clone();
            let vectors = self.settings.vectors.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let (resolution, admission) =
                    resolve(&spec, files_dir, registry, blobs, vectors).await;
                let _ = done
                    .send(Resolved {
                        name,
                        spec,
                        resolution,
                        admission,
                    })
                    .await;
            });
        }
    }

    fn resolved(&mut self, resolved: Resolved) {
        let Some(entry) = self.modules.get_mut(&resolved.name) else {
            return;
        };
        entry.resolving = false;
        if entry.spec != resolved.spec {
            return;
        }
        let now = now_ms();
        match &resolved.resolution {
            Resolution::Unavailable(problem) => {
                entry.retry_at_ms = now + entry.retry_delay_ms;
                entry.retry_delay_ms = (entry.retry_delay_ms * 2).min(300_000);
                tracing::warn!(module = %resolved.name, reason = problem.reason, message = %problem.message, "module unavailable, trying again");
            }
            Resolution::Refused(problem) => {
                // Files are looked at again on the next folder change, at most every 2 s.
                entry.retry_at_ms = now + 2000;
                tracing::warn!(module = %resolved.name, reason = problem.reason, message = %problem.message, "module refused");
            }
            Resolution::Ready(ready) => {
                entry.retry_at_ms = now + 2000;
                entry.retry_delay_ms = 1000;
                tracing::info!(module = %resolved.name, sha256 = %ready.manifest.sha256, "module ready");
            }
            Resolution::Pending => {}
        }
        if entry.resolution != resolved.resolution {
            let notice = match &resolved.resolution {
                Resolution::Ready(ready) => Some((
                    false,
                    "Admitted",
                    format!(
                        "pulled, verified and admitted ({} bytes)",
                        ready.manifest.size
                    ),
                )),
                Resolution::Refused(problem) | Resolution::Unavailable(problem) => {
                    Some((true, problem.reason, problem.message.clone()))
                }
                Resolution::Pending => None,
            };
            entry.resolution = resolved.resolution;
            entry.admission = resolved.admission;
            self.dirty = true;
            self.changed_at.get_or_insert_with(std::time::Instant::now);
            if let Some((warning, reason, note)) = notice {
                self.notice(Notice {
                    kind: Kind::Module,
                    name: resolved.name,
                    warning,
                    reason: reason.to_string(),
                    note,
                });
            }
        }
    }

    /// The declared fleet as planning sees it.
    fn declared(&self) -> Fleet {
        let mut declared = Fleet {
            incomplete: !self.objects.errors.is_empty(),
            ..Fleet::default()
        };
        for (name, entry) in &self.modules {
            declared.modules.insert(
                name.clone(),
                Module {
                    spec: entry.spec.clone(),
                    resolution: entry.resolution.clone(),
                },
            );
        }
        for (name, class) in &self.objects.classes {
            declared.classes.insert(
                name.clone(),
                Class {
                    spec: class.spec.clone(),
                },
            );
        }
        let names: BTreeSet<String> = self
            .objects
            .edge_nodes
            .keys()
            .cloned()
            .chain(self.nodes.reports().map(|(id, _)| id.to_string()))
            .collect();
        for name in names {
            let Ok(id) = NodeId::new(name.as_str()) else {
                continue;
            };
            let mut labels = self
                .objects
                .node_labels
                .get(&name)
                .cloned()
                .unwrap_or_default();
            let edge_node = self.objects.edge_nodes.get(&name);
            if let Some(edge_node) = edge_node {
                labels.extend(edge_node.labels.clone());
            }
            declared.nodes.insert(
                id,
                Node {
                    labels,
                    cordoned: edge_node.is_some_and(|n| n.spec.cordoned),
                },
            );
        }
        declared
    }

    /// One round: plan, diff, publish.
    async fn distribute(&mut self, cloud: &Cloud) {
        let started = std::time::Instant::now();
        let declared = self.declared();
        let mut plan = fleet::plan(&declared);
        let key = self.settings.key.key_id();
        let now = now_ms();
        let records = self.roll_out(&mut plan, now);
        let actions = distribution::diff(&plan, &self.published, key, now);
        for action in &actions {
            match self.carry_out(cloud, action, now).await {
                Ok(()) => distribution::record(&mut self.published, action, key),
                Err(e) => {
                    tracing::warn!(error = %e, "publication failed; the next round retries");
                    self.dirty = true;
                    break;
                }
            }
        }
        if !self.dirty {
            for (class, mut record) in records {
                let mut payload = record
                    .as_ref()
                    .map(edgefleet_protocol::codec::encode)
                    .unwrap_or_default();
                // Two handlers of thousands of minimum-size chunks each may not fit one packet:
                // the one needed to undo a completed rollout goes, the stable one stays.
                if payload.len() > crate::cloud::MAX_RECORD_BYTES
                    && let Some(record) = record.as_mut()
                {
                    tracing::warn!(%class, bytes = payload.len(), "rollout record too large: undo of the last completed rollout will not be possible");
                    record.previous_stable = None;
                    payload = edgefleet_protocol::codec::encode(record);
                }
                if let Err(e) = cloud
                    .publish_retained(crate::cloud::rollout_topic(&class), payload)
                    .await
                {
                    tracing::warn!(error = %e, %class, "rollout record not published; the next round retries");
                    self.dirty = true;
                    break;
                }
                match record {
                    Some(record) => self.rollouts.insert(class, record),
                    None => self.rollouts.remove(&class),
                };
            }
        }
        if !actions.is_empty() {
            tracing::info!(actions = actions.len(), "published");
            if let Some(changed_at) = self.changed_at {
                self.metrics
                    .publish_lag
                    .0
                    .observe(changed_at.elapsed().as_secs_f64());
            }
        }
        if !self.dirty {
            self.changed_at = None;
        }
        // Blobs neither planned nor published are no longer needed here.
        let mut keep = distribution::referenced_modules(&self.published);
        for entry in self.modules.values() {
            if let Resolution::Ready(ready) = &entry.resolution {
                keep.insert(ready.manifest.sha256);
            }
        }
        self.settings.blobs.retain(&keep);
        self.metrics.observe_round(started.elapsed(), actions.len());
        self.plan_status(&plan, now);
    }

    async fn carry_out(&mut self, cloud: &Cloud, action: &Action, now: u64) -> Result<(), String> {
        match action {
            Action::PublishChunks { manifest, indices } => {
                let Some(blob) = self.settings.blobs.get(&manifest.sha256) else {
                    // Gone from the store: resolve the module again.
                    for entry in self.modules.values_mut() {
                        if matches!(&entry.resolution, Resolution::Ready(r) if r.manifest.sha256 == manifest.sha256)
                        {
                            entry.resolution = Resolution::Pending;
                        }
                    }
                    return Err(format!(
                        "module blob {} missing from the store",
                        manifest.sha256
                    ));
                };
                for &index in indices {
                    let start = index as usize * manifest.chunk_size as usize;
                    let end = (start + manifest.chunk_size as usize).min(blob.len());
                    let topic = edgefleet_protocol::topic::Topic::ModuleChunk {
                        module: manifest.sha256,
                        index,
                    };
                    cloud
                        .publish_retained(topic.to_string(), blob[start..end].to_vec())
                        .await
                        .map_err(|e| e.to_string())?;
                    self.metrics.chunks_published.inc();
                }
                Ok(())
            }
            Action::Assign {
                node,
                class,
                generation,
                handler,
                shadow,
                rollout,
            } => {
                let assignment = Assignment {
                    node: node.clone(),
                    class: class.clone(),
                    generation: *generation,
                    issued_at_ms: now,
                    rollout: rollout.clone(),
                    shadow: shadow.clone(),
                    handler: handler.clone(),
                };
                assignment.validate().map_err(|e| e.to_string())?;
                let signed = self.settings.key.sign(&assignment);
                cloud
                    .publish_retained(assignment.topic().to_string(), signed.encode())
                    .await
                    .map_err(|e| e.to_string())?;
                let kind = if handler.is_some() {
                    "assign"
                } else {
                    "withdraw"
                };
                self.metrics
                    .assignments_published
                    .get_or_create(&kind.into())
                    .inc();
                tracing::info!(%node, %class, generation, kind, "assignment published");
                Ok(())
            }
            Action::RemoveChunks { module, indices } => {
                for &index in indices {
                    let topic = edgefleet_protocol::topic::Topic::ModuleChunk {
                        module: *module,
                        index,
                    };
                    cloud
                        .publish_retained(topic.to_string(), Vec::new())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }
    }

    /// Recomputes module and class status after a round.
    fn plan_status(&mut self, plan: &fleet::Plan, now: u64) {
        for (name, entry) in &self.modules {
            let generation = self.objects.modules.get(name).and_then(|m| m.generation);
            let status = status::module_status(
                &entry.resolution,
                entry.admission.as_deref(),
                generation,
                self.module_status.get(name),
                now,
            );
            self.module_status.insert(name.clone(), status);
        }
        self.module_status
            .retain(|name, _| self.objects.modules.contains_key(name));
        if plan.classes.is_empty() {
            self.class_status.clear();
            return;
        }
        let reports: BTreeMap<&NodeId, &NodeStatus> = self.nodes.reports().collect();
        for (name, class_plan) in &plan.classes {
            let Ok(class) = ClassId::new(name.as_str()) else {
                continue;
            };
            let generation = self.objects.classes.get(name).and_then(|c| c.generation);
            let status = status::class_status(
                &class,
                class_plan,
                &self.published,
                &reports,
                generation,
                self.class_status.get(name),
                now,
            );
            let mut status = status;
            status.rollout = self.rollout_status.get(name).cloned();
            if let Some(rollout) = &status.rollout {
                // RolledOut: the latest version reached every selected node through its steps.
                let previous = self
                    .class_status
                    .get(name)
                    .map_or(&[][..], |p| &p.conditions[..]);
                status.conditions.push(status::condition(
                    "RolledOut",
                    rollout.phase == "Completed",
                    &rollout.phase,
                    format!("{} ({}): {}", rollout.id, rollout.step, rollout.message),
                    generation,
                    previous,
                    now,
                ));
            }
            self.class_status.insert(name.clone(), status);
        }
        self.class_status
            .retain(|name, _| self.objects.classes.contains_key(name));
    }

    /// Adds what a node's status says to the gate windows of the rollouts under way.
    fn measure(&mut self, status: &NodeStatus) {
        if self.windows.is_empty() {
            return;
        }
        // Counters restart with the agent: a status of another run has nothing to subtract.
        let previous = self
            .nodes
            .report(&status.node)
            .filter(|p| p.started_at_ms == status.started_at_ms);
        for now in &status.classes {
            let Some((target, window)) = self.windows.get_mut(now.class.as_str()) else {
                continue;
            };
            let Some(assigned) = self
                .published
                .assignments
                .get(&(status.node.clone(), now.class.clone()))
                .and_then(|a| a.handler.as_ref())
            else {
                continue;
            };
            let role = if assigned == target {
                Role::Target
            } else {
                Role::Stable
            };
            window.observe(
                &status.node,
                role,
                assigned.module.sha256,
                target.module.sha256,
                previous.and_then(|p| p.class(&now.class)),
                now,
            );
        }
    }

    /// Lets each class's rollout decide what its nodes run; returns the records to publish
    /// (`None`: remove a deleted class's).
    fn roll_out(&mut self, plan: &mut fleet::Plan, now: u64) -> Vec<(String, Option<Record>)> {
        let mut changed = Vec::new();
        let classes: Vec<(String, edgefleet_protocol::HandlerSpec, Vec<NodeId>)> = plan
            .classes
            .iter()
            .filter_map(|(name, class_plan)| {
                let handler = class_plan.handler.clone()?;
                let nodes = class_plan
                    .selected
                    .iter()
                    .filter(|n| !plan.cordoned.contains(*n))
                    .cloned()
                    .collect();
                Some((name.clone(), handler, nodes))
            })
            .collect();
        for (name, target, nodes) in classes {
            let Ok(class) = ClassId::new(name.as_str()) else {
                continue;
            };
            let declared = self.objects.classes.get(&name);
            let views: BTreeMap<NodeId, NodeView<'_>> = nodes
                .iter()
                .map(|node| {
                    let key = (node.clone(), class.clone());
                    let view = NodeView {
                        published: self
                            .published
                            .assignments
                            .get(&key)
                            .and_then(|a| a.handler.as_ref()),
                        report: self.nodes.report(node).and_then(|r| r.class(&class)),
                        online: self.nodes.presence(node).is_some_and(|p| p.is_online()),
                    };
                    (node.clone(), view)
                })
                .collect();
            let empty = Window::default();
            let decision = rollout::decide(&rollout::Input {
                strategy: declared.and_then(|c| c.spec.rollout.as_ref()),
                target: &target,
                nodes: &views,
                record: self.rollouts.get(&name),
                action: declared
                    .and_then(|c| c.annotations.get(ROLLOUT_ACTION_ANNOTATION))
                    .map(String::as_str),
                window: self.windows.get(&name).map_or(&empty, |(_, w)| w),
                now_ms: now,
            });
            for node in &nodes {
                plan.handlers.remove(&(node.clone(), class.clone()));
            }
            for (node, run) in decision.runs {
                plan.handlers.insert(
                    (node, class.clone()),
                    Planned {
                        handler: run.handler,
                        shadow: run.shadow,
                        rollout: Some(run.rollout),
                    },
                );
            }
            let record = decision.record;
            if record.phase.is_active() {
                if let Some(stable) = &record.stable {
                    plan.retained
                        .insert(stable.module.sha256, stable.module.clone());
                }
                let measuring = self
                    .windows
                    .get(&name)
                    .is_some_and(|(_, w)| w.rollout == record.id && w.step == record.step);
                if !measuring {
                    self.windows.insert(
                        name.clone(),
                        (target.clone(), Window::new(&record.id, record.step)),
                    );
                }
            } else {
                self.windows.remove(&name);
            }
            for note in decision.notes {
                self.metrics
                    .rollout_events
                    .get_or_create(&note.reason.into())
                    .inc();
                tracing::info!(class = %name, reason = note.reason, "{}", note.message);
                self.notice(Notice {
                    kind: Kind::Class,
                    name: name.clone(),
                    warning: note.warning,
                    reason: note.reason.to_string(),
                    note: note.message,
                });
            }
            self.rollout_status.insert(name.clone(), decision.status);
            if self.rollouts.get(&name) != Some(&record) {
                changed.push((name.clone(), Some(record)));
            }
        }
        if !plan.hold_withdrawals {
            for name in self.rollouts.keys() {
                if !self.objects.classes.contains_key(name) {
                    changed.push((name.clone(), None));
                }
            }
        }
        self.rollout_status
            .retain(|name, _| self.objects.classes.contains_key(name));
        self.windows
            .retain(|name, _| self.objects.classes.contains_key(name));
        for phase in [
            rollout::Phase::Progressing,
            rollout::Phase::Paused,
            rollout::Phase::Completed,
            rollout::Phase::RolledBack,
            rollout::Phase::Failed,
        ] {
            let count = self
                .rollout_status
                .values()
                .filter(|s| s.phase == phase.as_str())
                .count();
            self.metrics
                .rollouts
                .get_or_create(&phase.as_str().into())
                .set(count as i64);
        }
        changed
    }

    fn notice(&mut self, notice: Notice) {
        const MAX_WAITING: usize = 1000;
        if self.notices.len() == MAX_WAITING {
            self.notices.pop_front();
        }
        self.notices.push_back(notice);
    }

    /// Writes the status that changed: modules and classes as computed, nodes as the ingest
    /// table paces them; then the waiting notices.
    async fn write_status(&mut self, sink: &Sink) {
        let now = now_ms();
        while let Some(notice) = self.notices.pop_front() {
            if let Err(e) = sink.notice(&notice).await {
                tracing::warn!(error = %e, reason = %notice.reason, "Event not recorded");
                self.metrics
                    .status_write_failures
                    .get_or_create(&"event".into())
                    .inc();
            }
        }
        let (mut went_through, mut failed) = (false, false);
        for (name, status) in &self.module_status {
            let written = sink.module(name, status).await;
            went_through |= matches!(written, Ok(true));
            failed |= !self.count_write("module", written);
        }
        for (name, status) in &self.class_status {
            let written = sink.class(name, status).await;
            went_through |= matches!(written, Ok(true));
            failed |= !self.count_write("class", written);
        }
        for write in self.nodes.tick(now) {
            let kind = if write.significant {
                "significant"
            } else {
                "steady"
            };
            match sink.node(&write.node, &write.status).await {
                Ok(_) => {
                    went_through = true;
                    self.nodes.written(&write.node, now);
                    self.metrics.status_writes.get_or_create(&kind.into()).inc();
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(node = %write.node, error = %e, "EdgeNode status write failed");
                    self.nodes.failed(&write.node, now);
                    self.metrics
                        .status_write_failures
                        .get_or_create(&e.kind().into())
                        .inc();
                }
            }
        }
        if went_through {
            self.writes_failing_since_ms = None;
        } else if failed {
            self.writes_failing_since_ms.get_or_insert(now);
        }
        let counts = self.nodes.presence_counts();
        self.metrics
            .nodes
            .get_or_create(&"online".into())
            .set(counts.online as i64);
        self.metrics
            .nodes
            .get_or_create(&"offline".into())
            .set((counts.offline + counts.silent) as i64);
        // Node reports change class status too: plan again (cheap, and only while nodes report).
        self.dirty |= self.synced && !self.nodes.is_empty();
    }

    /// Counts a module or class status write; false when it failed.
    fn count_write(&self, kind: &str, written: Result<bool, SinkError>) -> bool {
        match written {
            Ok(true) => {
                self.metrics.status_writes.get_or_create(&kind.into()).inc();
                true
            }
            Ok(false) => true,
            Err(e) => {
                tracing::warn!(kind, error = %e, "status write failed");
                self.metrics
                    .status_write_failures
                    .get_or_create(&e.kind().into())
                    .inc();
                false
            }
        }
    }
}

/// Fetches and admits one module, and runs its test vectors (admission and vectors off the async
/// threads: the vectors run in sandbox worker processes).
async fn resolve(
    spec: &HandlerModuleSpec,
    files_dir: Option<PathBuf>,
    registry: Option<Arc<crate::oci::Registry>>,
    blobs: Blobs,
    vectors: Arc<crate::vectors::Runner>,
) -> (Resolution, Option<String>) {
    if let Some(file) = &spec.file {
        let Some(dir) = files_dir else {
            return (
                Resolution::Refused(fleet::Problem::new(
                    "FileNotAllowed",
                    "spec.file works in standalone mode only; push the module to a registry \
                     (edgefleet module push) and set spec.image",
                )),
                None,
            );
        };
        let spec = spec.clone();
        let file = file.clone();
        return tokio::task::spawn_blocking(move || {
            modules::resolve_file(&spec, &file, &dir, &blobs, &vectors)
        })
        .await
        .unwrap_or((Resolution::Pending, None));
    }
    let Some(image) = &spec.image else {
        return (
            Resolution::Refused(fleet::Problem::new(
                "NoSource",
                "set spec.image (or spec.file in standalone mode)",
            )),
            None,
        );
    };
    let Some(registry) = registry else {
        return (
            Resolution::Unavailable(fleet::Problem::new(
                "NoRegistry",
                "this controller has no registry settings",
            )),
            None,
        );
    };
    match registry
        .pull(image, edgefleet_protocol::manifest::MAX_MODULE_BYTES)
        .await
    {
        Ok(pulled) => {
            let bytes = pulled.wasm;
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || {
                match modules::admit(&spec, &bytes, &blobs, &vectors) {
                    Ok((ready, summary)) => (Resolution::Ready(ready), Some(summary)),
                    Err(problem) => modules::refused(problem),
                }
            })
            .await
            .unwrap_or((Resolution::Pending, None))
        }
        Err(e) => (crate::oci::resolution_of(&e), None),
    }
}
