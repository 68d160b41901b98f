//! Applying the controller's signed assignments: verify, fetch the module, compile, switch in.
//!
//! ```text
//! ef/v1/node/<node>/assign/<class> (retained, Signed<Assignment>)
//!   ─► signature (trust anchor) ─► target node/class ─► generation newer than the applied one?
//!   ─► module in the store? else subscribe ef/v1/module/<sha>/chunk/+ and assemble, each chunk
//!      checked against the signed manifest, the blob against its sha256 and size
//!   ─► Sandbox::load (admission + AOT compile, off the async runtime)
//!   ─► store: swap the class's version (one transaction) ─► ClassTable::swap
//! ```
//! Any failure keeps the version that runs now and is reported as an event and a metric. On start
//! the stored assignments are verified again and their modules loaded from the store and the
//! artefact cache: no download, no recompilation.

use std::collections::HashMap;
use std::sync::Arc;

use edgefleet_protocol::assignment::{Assignment, Freshness, HandlerSpec};
use edgefleet_protocol::digest::Sha256Digest;
use edgefleet_protocol::event::{AgentEvent, EventKind};
use edgefleet_protocol::id::ClassId;
use edgefleet_protocol::manifest::ModuleAssembly;
use edgefleet_protocol::signing::{Signed, TrustAnchor};
use edgefleet_protocol::status::{ErrorReport, PendingModule};
use edgefleet_protocol::topic::{self, Topic};
use rumqttc::QoS;

use crate::classes::{ActiveClass, ClassHandler};
use crate::interactions::{Pipeline, now_ms, report};
use crate::link::{LinkHandle, Subscriptions};
use crate::metrics::ReasonLabels;
use crate::store::ClassVersion;
use edgefleet_sandbox::ModuleSpec;

/// An assignment waiting for its module's chunks.
struct Pending {
    assembly: ModuleAssembly,
    /// The signed assignments waiting for this module (several classes may share one).
    waiting: Vec<(Assignment, Vec<u8>)>,
}

/// The assignment handler's state.
pub struct Assignments {
    pipeline: Arc<Pipeline>,
    trust: TrustAnchor,
    uplink: LinkHandle,
    uplink_subscriptions: Subscriptions,
    pending: HashMap<Sha256Digest, Pending>,
}

impl Assignments {
    pub fn new(
        pipeline: Arc<Pipeline>,
        trust: TrustAnchor,
        uplink: LinkHandle,
        uplink_subscriptions: Subscriptions,
    ) -> Assignments {
        Assignments {
            pipeline,
            trust,
            uplink,
            uplink_subscriptions,
            pending: HashMap::new(),
        }
    }

    /// Loads every stored active class again (after a restart).
    pub async fn restore(&mut self) {
        let records = match self.pipeline.store.classes() {
            Ok(records) => records,
            Err(e) => {
                tracing::error!("cannot read the stored classes: {e}");
                return;
            }
        };
        for (class, record) in records {
            let Some(version) = record.active else {
                continue;
            };
            let assignment = match Signed::<Assignment>::decode(&version.assignment)
                .map_err(|e| e.to_string())
                .and_then(|s| s.verify(&self.trust).map_err(|e| e.to_string()))
            {
                Ok(assignment) => assignment,
                Err(e) => {
                    self.refuse(
                        &class,
                        None,
                        "stored_assignment",
                        format!("stored assignment no longer verifies: {e}"),
                    );
                    continue;
                }
            };
            match self.activate(&assignment, &version.assignment, false).await {
                Ok(()) => tracing::info!(%class, version = %version.version, "restored"),
                Err(e) => self.refuse(&class, Some(assignment.generation), "restore", e),
            }
        }
    }

    /// Handles one message from the uplink.
    pub async fn handle(&mut self, topic: &str, payload: &[u8]) {
        match Topic::parse(topic) {
            Ok(Topic::Assignment { node, class }) if node == self.pipeline.node => {
                self.on_assignment(class, payload).await
            }
            Ok(Topic::ModuleChunk { module, index }) => self.on_chunk(module, index, payload).await,
            _ => tracing::debug!(%topic, "ignored uplink message"),
        }
    }

    async fn on_assignment(&mut self, class: ClassId, payload: &[u8]) {
        if payload.is_empty() {
            // A cleared retained message: withdrawals are signed assignments, so nothing to do.
            return;
        }
        let assignment = match Signed::<Assignment>::decode(payload)
            .map_err(|e| format!("not a signed assignment: {e}"))
            .and_then(|s| {
                s.verify(&self.trust)
                    .map_err(|e| format!("refused signature: {e}"))
            }) {
            Ok(assignment) => assignment,
            Err(e) => return self.refuse(&class, None, "signature", e),
        };
        if let Err(e) = assignment
            .check_target(&self.pipeline.node, &class)
            .and_then(|()| assignment.validate())
        {
            return self.refuse(
                &class,
                Some(assignment.generation),
                "invalid",
                e.to_string(),
            );
        }
        let applied = match self.pipeline.store.class(&class) {
            Ok(record) => record.map(|r| r.generation),
            Err(e) => {
                return self.refuse(&class, Some(assignment.generation), "store", e.to_string());
            }
        };
        match assignment.freshness(applied) {
            Freshness::Current => return,
            Freshness::Stale => {
                let detail = format!(
                    "generation {} is older than the applied {}: a replay",
                    assignment.generation,
                    applied.unwrap_or_default()
                );
                return self.refuse(&class, Some(assignment.generation), "stale", detail);
            }
            Freshness::Newer => {}
        }
        let Some(handler) = &assignment.handler else {
            return self.withdraw(&assignment);
        };
        let sha = handler.module.sha256;
        match self.pipeline.store.has_module(&sha) {
            Ok(true) => {
                if let Err(e) = self.activate(&assignment, payload, true).await {
                    self.refuse(&class, Some(assignment.generation), "module", e);
                }
            }
            Ok(false) => self.fetch(assignment.clone(), handler, payload.to_vec()),
            Err(e) => self.refuse(&class, Some(assignment.generation), "store", e.to_string()),
        }
    }

    fn fetch(&mut self, assignment: Assignment, handler: &HandlerSpec, signed: Vec<u8>) {
        let sha = handler.module.sha256;
        if let Some(pending) = self.pending.get_mut(&sha) {
            let received = pending.assembly.received();
            self.pipeline.classes.update_report(&assignment.class, |r| {
                r.pending = Some(PendingModule {
                    module: handler.module.reference(),
                    generation: assignment.generation,
                    received_chunks: received,
                    total_chunks: handler.module.chunk_count(),
                });
            });
            pending.waiting.push((assignment, signed));
            return;
        }
        self.pipeline.classes.update_report(&assignment.class, |r| {
            r.pending = Some(PendingModule {
                module: handler.module.reference(),
                generation: assignment.generation,
                received_chunks: 0,
                total_chunks: handler.module.chunk_count(),
            });
        });
        let assembly = match ModuleAssembly::new(handler.module.clone()) {
            Ok(assembly) => assembly,
            Err(e) => {
                return self.refuse(
                    &assignment.class,
                    Some(assignment.generation),
                    "manifest",
                    e.to_string(),
                );
            }
        };
        self.pending.insert(
            sha,
            Pending {
                assembly,
                waiting: vec![(assignment, signed)],
            },
        );
        let filter = topic::module_chunk_filter(&sha);
        self.uplink_subscriptions.add(filter.clone());
        if let Err(e) = self.uplink.client.try_subscribe(filter, QoS::AtLeastOnce) {
            tracing::warn!("cannot subscribe to module chunks yet (will on reconnect): {e}");
        }
        tracing::info!(module = %sha, "fetching module");
    }

    async fn on_chunk(&mut self, module: Sha256Digest, index: u32, bytes: &[u8]) {
        let Some(pending) = self.pending.get_mut(&module) else {
            return;
        };
        match pending.assembly.accept(index, bytes) {
            Ok(_) => {}
            Err(e) => {
                // A chunk that does not match the signed manifest: tampered with or corrupted in
                // transit. The assignment keeps waiting for a good copy (a retained republish).
                let detail = format!("module {module} chunk {index} refused: {e}");
                let waiting: Vec<_> = pending
                    .waiting
                    .iter()
                    .map(|(a, _)| (a.class.clone(), a.generation))
                    .collect();
                for (class, generation) in waiting {
                    self.refuse(&class, Some(generation), "module", detail.clone());
                }
                return;
            }
        }
        let received = pending.assembly.received();
        for (assignment, _) in &pending.waiting {
            self.pipeline.classes.update_report(&assignment.class, |r| {
                if let Some(p) = &mut r.pending {
                    p.received_chunks = received;
                }
            });
        }
        if !pending.assembly.is_complete() {
            return;
        }
        let Some(pending) = self.pending.remove(&module) else {
            return;
        };
        for (assignment, _) in &pending.waiting {
            self.pipeline
                .classes
                .update_report(&assignment.class, |r| r.pending = None);
        }
        let filter = topic::module_chunk_filter(&module);
        self.uplink_subscriptions.remove(&filter);
        let _ = self.uplink.client.try_unsubscribe(filter);
        let blob = match pending.assembly.finish() {
            Ok(blob) => blob,
            Err(e) => {
                for (assignment, _) in &pending.waiting {
                    self.refuse(
                        &assignment.class,
                        Some(assignment.generation),
                        "module",
                        e.to_string(),
                    );
                }
                return;
            }
        };
        if let Err(e) = self.pipeline.store.put_module(&blob) {
            tracing::error!(%module, "cannot store the module: {e}");
            return;
        }
        for (assignment, signed) in pending.waiting {
            if let Err(e) = self.activate(&assignment, &signed, true).await {
                self.refuse(&assignment.class, Some(assignment.generation), "module", e);
            }
        }
    }

    /// Loads the assignment's module into the sandbox and switches the class to it; `record` stores
    /// the switch (false when restoring what the store already says).
    async fn activate(
        &mut self,
        assignment: &Assignment,
        signed: &[u8],
        record: bool,
    ) -> Result<(), String> {
        let Some(handler) = &assignment.handler else {
            return Err("the assignment has no handler".into());
        };
        let sha = handler.module.sha256;
        let blob = self
            .pipeline
            .store
            .module(&sha)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("module {sha} is not in the store"))?;
        let version = format!("{}@{}", handler.module.name, handler.module.version);
        let spec = (
            version.clone(),
            blob,
            sha,
            handler.limits.clone(),
            handler.config.clone(),
        );
        let sandbox = self.pipeline.sandbox.clone();
        let module = tokio::task::spawn_blocking(move || {
            let (label, blob, sha, limits, config) = spec;
            sandbox.load(ModuleSpec {
                label,
                wasm: &blob,
                expected_sha256: Some(*sha.as_bytes()),
                limits,
                config,
            })
        })
        .await
        .map_err(|e| format!("the module load task failed: {e}"))?
        .map_err(|e| e.to_string())?;
        if record {
            self.pipeline
                .store
                .swap_class(
                    &assignment.class,
                    assignment.generation,
                    ClassVersion {
                        assignment: signed.to_vec(),
                        module_sha256: sha,
                        version: version.clone(),
                        applied_at_ms: now_ms(),
                    },
                )
                .map_err(|e| e.to_string())?;
            self.pipeline
                .store
                .flush_async()
                .await
                .map_err(|e| e.to_string())?;
        }
        let previous = self.pipeline.classes.swap(ActiveClass {
            class: assignment.class.clone(),
            version: version.clone(),
            sha256: sha,
            reference: handler.module.reference(),
            generation: assignment.generation,
            limits: handler.limits.clone(),
            handler: ClassHandler::Wasm(module),
            counters: Default::default(),
        });
        self.pipeline.metrics.swaps.inc();
        tracing::info!(class = %assignment.class, %version, replaced = ?previous.map(|p| p.version.clone()), "module active");
        report(
            &self.pipeline,
            AgentEvent::new(
                now_ms(),
                self.pipeline.node.clone(),
                EventKind::AssignmentApplied,
                format!("{version} active"),
            )
            .with_class(assignment.class.clone())
            .with_module(sha)
            .with_generation(assignment.generation),
        );
        Ok(())
    }

    fn withdraw(&mut self, assignment: &Assignment) {
        if let Err(e) = self
            .pipeline
            .store
            .withdraw_class(&assignment.class, assignment.generation)
        {
            return self.refuse(
                &assignment.class,
                Some(assignment.generation),
                "store",
                e.to_string(),
            );
        }
        self.pipeline.classes.remove(&assignment.class);
        report(
            &self.pipeline,
            AgentEvent::new(
                now_ms(),
                self.pipeline.node.clone(),
                EventKind::ClassWithdrawn,
                "class withdrawn from this node",
            )
            .with_class(assignment.class.clone())
            .with_generation(assignment.generation),
        );
    }

    fn refuse(&self, class: &ClassId, generation: Option<u64>, reason: &str, detail: String) {
        self.pipeline.classes.update_report(class, |r| {
            r.last_error = Some(ErrorReport {
                at_ms: now_ms(),
                message: detail.clone(),
            });
        });
        tracing::warn!(%class, reason, "assignment refused: {detail}");
        self.pipeline
            .metrics
            .refused_assignments
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
        let kind = match reason {
            "module" | "manifest" => EventKind::ModuleRefused,
            _ => EventKind::AssignmentRejected,
        };
        let mut event = AgentEvent::new(now_ms(), self.pipeline.node.clone(), kind, detail)
            .with_class(class.clone());
        if let Some(generation) = generation {
            event = event.with_generation(generation);
        }
        report(&self.pipeline, event);
    }
}
