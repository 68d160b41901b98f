//! Applying the controller's signed assignments: verify, fetch the module, compile, switch in — in a
//! task of its own, so the uplink's polling task never waits for a download or a compile.
//!
//! ```text
//! uplink sink ─try_send─► run(): ef/v1/node/<node>/assign/<class> (retained, Signed<Assignment>)
//!   ─► signature (trust anchor) ─► target node/class ─► generation newer than the applied one?
//!   ─► module in the store? else subscribe ef/v1/module/<sha>/chunk/+ and assemble, each chunk
//!      checked against the signed manifest, the blob against its sha256 and size
//!   ─► Sandbox::load (admission + AOT compile, off the async threads)
//!   ─► store: swap the class's version (one transaction) ─► ClassTable::swap ─► garbage collection
//! ```
//!
//! * Any failure keeps the version that runs now and is reported as an event, in the class's status
//!   and as `edgefleet_agent_refused_assignments_total{reason}` ([`AssignmentError::reason`]).
//! * **Restarts heal.** On start the stored assignments are verified again and their modules loaded
//!   from the store (and the artefact cache). A class that does not come back is retried with
//!   backoff ([`RETRY_FIRST`] doubling to [`RETRY_MAX`]); when its blob is missing or corrupt the blob is
//!   fetched again. A redelivered assignment of the current generation re-activates a class that is
//!   not running (but not the version a class fell back from: see `fallback`). The stored previous
//!   version is loaded too, so that a quarantine after a restart can fall back at once.
//! * **Downloads** time out after [`DOWNLOAD_TIMEOUT`] without progress, and are cancelled when a newer
//!   generation of the class supersedes them; a redelivered assignment joins the download under way
//!   instead of starting another.
//! * **Disk stays bounded**: after every switch, blobs no class references (as active or previous
//!   version) are removed, and compiled artefacts of modules no longer loaded
//!   (`Sandbox::remove_unused_artefacts`).
//! * **Shadows** (`Assignment::shadow`, see `shadow`): once the handler is active, the shadow's
//!   module is loaded from the store or fetched like a handler's (joining any download of the same
//!   blob), with its own config and limits, as a separate sandbox module (its own breaker entry). A
//!   new assignment naming the same shadow keeps it and its counters; one without a shadow drops
//!   it. The stored record names the shadow's blob, so garbage collection keeps it while assigned.
//!   A shadow that fails to load is reported like a refused module; the handler is not affected.
//! * When the uplink sink had to drop a message (this task's queue was full), the task asks the
//!   uplink to reconnect: assignments and chunks are retained, so they come again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use edgefleet_protocol::assignment::{Assignment, Freshness, HandlerSpec};
use edgefleet_protocol::digest::Sha256Digest;
use edgefleet_protocol::event::{AgentEvent, EventKind};
use edgefleet_protocol::id::ClassId;
use edgefleet_protocol::manifest::ModuleAssembly;
use edgefleet_protocol::signing::{Signed, TrustAnchor};
use edgefleet_protocol::status::{ErrorReport, PendingModule};
use edgefleet_protocol::topic::{self, Topic};
use edgefleet_sandbox::{LoadError, ModuleHandle, ModuleSpec};
use rumqttc::Publish;
use tokio::sync::{mpsc, watch};

use crate::classes::{ActiveClass, ClassHandler};
use crate::clock::now_ms;
use crate::context::Context;
use crate::events::report;
use crate::link::{Link, Subscriptions};
use crate::metrics::ReasonLabels;
use crate::shadow::ShadowRun;
use crate::store::ClassVersion;

/// A download that received no chunk for this long is given up (and retried on the next delivery
/// of the assignment).
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// First wait before a class that failed to restore is tried again.
pub const RETRY_FIRST: Duration = Duration::from_secs(5);
/// Longest wait between two restore attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// How often timeouts and retries are looked at.
const TICK: Duration = Duration::from_secs(1);

/// Why an assignment (or its module) was not applied.
#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    #[error("not a signed assignment: {0}")]
    Decode(String),
    #[error("refused signature: {0}")]
    Signature(String),
    #[error("invalid assignment: {0}")]
    Invalid(String),
    #[error("generation {generation} is older than the applied {applied}: a replay")]
    Stale { generation: u64, applied: u64 },
    #[error("the store failed: {0}")]
    Store(String),
    #[error("bad module manifest: {0}")]
    Manifest(String),
    #[error("module {module} chunk {index} refused: {detail}")]
    Chunk {
        module: Sha256Digest,
        index: u32,
        detail: String,
    },
    #[error("module {0} is not in the store")]
    MissingBlob(Sha256Digest),
    #[error("no chunk of module {module} arrived for {DOWNLOAD_TIMEOUT:?}: download given up")]
    DownloadTimeout { module: Sha256Digest },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the module load task failed: {0}")]
    Task(String),
    #[error("the stored assignment no longer verifies: {0}")]
    StoredAssignment(String),
    /// The shadow module failed (the handler is not affected).
    #[error("shadow module: {0}")]
    Shadow(Box<AssignmentError>),
}

impl AssignmentError {
    /// A short stable name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            AssignmentError::Decode(_) | AssignmentError::Signature(_) => "signature",
            AssignmentError::Invalid(_) => "invalid",
            AssignmentError::Stale { .. } => "stale",
            AssignmentError::Store(_) => "store",
            AssignmentError::Manifest(_) => "manifest",
            AssignmentError::Chunk { .. } => "chunk",
            AssignmentError::MissingBlob(_) => "missing_blob",
            AssignmentError::DownloadTimeout { .. } => "download_timeout",
            AssignmentError::Load(e) => e.kind(),
            AssignmentError::Task(_) => "task",
            AssignmentError::StoredAssignment(_) => "stored_assignment",
            AssignmentError::Shadow(e) => e.reason(),
        }
    }

    /// Whether fetching the blob again can help (it is missing, or not the bytes it should be).
    fn refetch_helps(&self) -> bool {
        matches!(
            self,
            AssignmentError::MissingBlob(_)
                | AssignmentError::Load(LoadError::DigestMismatch { .. })
        )
    }

    fn event_kind(&self) -> EventKind {
        match self {
            AssignmentError::Manifest(_)
            | AssignmentError::Chunk { .. }
            | AssignmentError::MissingBlob(_)
            | AssignmentError::DownloadTimeout { .. }
            | AssignmentError::Load(_) => EventKind::ModuleRefused,
            AssignmentError::Shadow(e) => e.event_kind(),
            _ => EventKind::AssignmentRejected,
        }
    }
}

/// A verified assignment with the bytes it was signed as.
#[derive(Debug, Clone)]
struct Verified {
    assignment: Assignment,
    signed: Vec<u8>,
}

/// A module being downloaded.
struct Download {
    assembly: ModuleAssembly,
    /// The assignments waiting for this module as their handler (several classes may share one).
    waiting: Vec<Verified>,
    /// The assignments waiting for it as their shadow.
    shadows: Vec<Verified>,
    last_progress: Instant,
}

/// A class to try activating again.
struct Retry {
    verified: Verified,
    at: Instant,
    backoff: Duration,
}

/// The assignment handler's state.
pub struct Assignments {
    ctx: Arc<Context>,
    trust: TrustAnchor,
    uplink: Link,
    uplink_subscriptions: Subscriptions,
    downloads: HashMap<Sha256Digest, Download>,
    retries: HashMap<ClassId, Retry>,
}

impl Assignments {
    pub fn new(
        ctx: Arc<Context>,
        trust: TrustAnchor,
        uplink: Link,
        uplink_subscriptions: Subscriptions,
    ) -> Assignments {
        Assignments {
            ctx,
            trust,
            uplink,
            uplink_subscriptions,
            downloads: HashMap::new(),
            retries: HashMap::new(),
        }
    }

    /// Loads every stored active class again (after a restart); what fails is retried by [`run`].
    ///
    /// [`run`]: Assignments::run
    pub async fn restore(&mut self) {
        let records = match self.ctx.store.classes() {
            Ok(records) => records,
            Err(e) => {
                tracing::error!("cannot read the stored classes: {e}");
                return;
            }
        };
        for (class, record) in &records {
            if record.active.is_some() {
                self.ctx.classes.expect(class.clone());
            }
        }
        for (class, record) in records {
            let Some(version) = record.active else {
                continue;
            };
            let verified = match self.verify(&version.assignment) {
                Ok(verified) => verified,
                Err(e) => {
                    let e = AssignmentError::StoredAssignment(e.to_string());
                    self.refuse(&class, None, &e);
                    continue;
                }
            };
            match self.activate(&verified, false).await {
                Ok(()) => tracing::info!(%class, version = %version.version, "restored"),
                Err(e) => self.activation_failed(verified, e),
            }
        }
    }

    /// Handles uplink messages until the channel closes or `stop` turns true.
    pub async fn run(
        mut self,
        mut messages: mpsc::Receiver<Publish>,
        overflowed: Arc<AtomicBool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Some(publish) => self.handle(&publish.topic, &publish.payload).await,
                    None => return,
                },
                _ = tick.tick() => self.on_tick().await,
                _ = stop.changed() => return,
            }
            if overflowed.swap(false, Ordering::AcqRel) {
                tracing::warn!(
                    "uplink messages were dropped (queue full); reconnecting to get them again"
                );
                self.uplink.request_redelivery();
            }
        }
    }

    /// Handles one message from the uplink.
    async fn handle(&mut self, topic: &str, payload: &[u8]) {
        match Topic::parse(topic) {
            Ok(Topic::Assignment { node, class }) if node == self.ctx.node => {
                self.on_assignment(class, payload).await
            }
            Ok(Topic::ModuleChunk { module, index }) => self.on_chunk(module, index, payload).await,
            _ => tracing::debug!(%topic, "ignored uplink message"),
        }
    }

    fn verify(&self, signed: &[u8]) -> Result<Verified, AssignmentError> {
        let assignment = Signed::<Assignment>::decode(signed)
            .map_err(|e| AssignmentError::Decode(e.to_string()))?
            .verify(&self.trust)
            .map_err(|e| AssignmentError::Signature(e.to_string()))?;
        Ok(Verified {
            assignment,
            signed: signed.to_vec(),
        })
    }

    async fn on_assignment(&mut self, class: ClassId, payload: &[u8]) {
        if payload.is_empty() {
            // A cleared retained message: withdrawals are signed assignments, so nothing to do.
            return;
        }
        let verified = match self.verify(payload) {
            Ok(verified) => verified,
            Err(e) => return self.refuse(&class, None, &e),
        };
        let assignment = &verified.assignment;
        let generation = assignment.generation;
        if let Err(e) = assignment
            .check_target(&self.ctx.node, &class)
            .and_then(|()| assignment.validate())
        {
            let e = AssignmentError::Invalid(e.to_string());
            return self.refuse(&class, Some(generation), &e);
        }
        let stored = match self.ctx.store.class(&class) {
            Ok(record) => record,
            Err(e) => {
                return self.refuse(
                    &class,
                    Some(generation),
                    &AssignmentError::Store(e.to_string()),
                );
            }
        };
        let applied = stored.as_ref().map(|r| r.generation);
        match assignment.freshness(applied) {
            Freshness::Current => {
                // Running any version is enough: after a fallback the class runs an older
                // generation, and the redelivered assignment it fell back from must not return.
                if self.ctx.classes.get(&class).is_some()
                    || assignment.handler.is_none()
                    || self.is_downloading(&class, generation)
                {
                    return;
                }
                // The store runs another version of this generation (the class fell back before a
                // restart): that one is being restored and retried, not this one.
                if stored
                    .and_then(|r| r.active)
                    .is_some_and(|active| active.assignment != verified.signed)
                {
                    return;
                }
                // Applied before but not running (its restore failed): try again now.
                tracing::info!(%class, generation, "re-activating a class that is not running");
                self.retries.remove(&class);
            }
            Freshness::Stale => {
                let e = AssignmentError::Stale {
                    generation,
                    applied: applied.unwrap_or_default(),
                };
                return self.refuse(&class, Some(generation), &e);
            }
            Freshness::Newer => {
                if self.is_downloading(&class, generation) {
                    return;
                }
                self.supersede(&class, generation).await;
                self.retries.remove(&class);
            }
        }
        let Some(handler) = verified.assignment.handler.clone() else {
            return self.withdraw(&verified.assignment).await;
        };
        self.apply(verified, &handler).await;
    }

    /// Activates from the store, or fetches the module first.
    async fn apply(&mut self, verified: Verified, handler: &HandlerSpec) {
        let sha = handler.module.sha256;
        let record = self.is_newer(&verified.assignment);
        match self.ctx.store.has_module(&sha) {
            Ok(true) => {
                if let Err(e) = self.activate(&verified, record).await {
                    self.activation_failed(verified, e);
                }
            }
            Ok(false) => self.fetch(verified, handler, false).await,
            Err(e) => {
                let a = &verified.assignment;
                self.refuse(
                    &a.class,
                    Some(a.generation),
                    &AssignmentError::Store(e.to_string()),
                );
            }
        }
    }

    /// Whether the store has an older generation than `assignment` (so activating must record it).
    fn is_newer(&self, assignment: &Assignment) -> bool {
        match self.ctx.store.class(&assignment.class) {
            Ok(Some(record)) => record.generation < assignment.generation,
            _ => true,
        }
    }

    fn is_downloading(&self, class: &ClassId, generation: u64) -> bool {
        self.downloads.values().any(|d| {
            d.waiting
                .iter()
                .any(|v| &v.assignment.class == class && v.assignment.generation == generation)
        })
    }

    /// A newer generation of `class` arrived: older ones waiting for a download stop waiting, and a
    /// download nobody waits for any more is cancelled.
    async fn supersede(&mut self, class: &ClassId, generation: u64) {
        let mut cancelled = Vec::new();
        for (sha, download) in &mut self.downloads {
            let current = |v: &Verified| {
                &v.assignment.class != class || v.assignment.generation >= generation
            };
            download.waiting.retain(current);
            download.shadows.retain(current);
            if download.waiting.is_empty() && download.shadows.is_empty() {
                cancelled.push(*sha);
            }
        }
        for sha in cancelled {
            tracing::info!(module = %sha, "download cancelled: superseded by a newer generation");
            self.downloads.remove(&sha);
            self.stop_chunks(&sha).await;
        }
        self.ctx.classes.update_report(class, |r| r.pending = None);
    }

    /// Fetches `module` (joining its download if one is under way) for `verified`'s handler, or
    /// for its shadow when `as_shadow`.
    async fn fetch(&mut self, verified: Verified, module: &HandlerSpec, as_shadow: bool) {
        let (class, generation) = (
            verified.assignment.class.clone(),
            verified.assignment.generation,
        );
        let sha = module.module.sha256;
        if !self.downloads.contains_key(&sha) {
            let assembly = match ModuleAssembly::new(module.module.clone()) {
                Ok(assembly) => assembly,
                Err(e) => {
                    let e = AssignmentError::Manifest(e.to_string());
                    return self.refuse(&class, Some(generation), &e);
                }
            };
            self.downloads.insert(
                sha,
                Download {
                    assembly,
                    waiting: Vec::new(),
                    shadows: Vec::new(),
                    last_progress: Instant::now(),
                },
            );
            let filter = topic::module_chunk_filter(&sha);
            self.uplink_subscriptions.add(filter.clone());
            if let Err(e) = self.uplink.subscribe(filter).await {
                tracing::warn!("cannot subscribe to module chunks yet (will on reconnect): {e}");
            }
            tracing::info!(module = %sha, "fetching module");
        }
        let Some(download) = self.downloads.get_mut(&sha) else {
            return;
        };
        if as_shadow {
            download.shadows.push(verified);
            return;
        }
        let pending = PendingModule {
            module: module.module.reference(),
            generation,
            received_chunks: download.assembly.received(),
            total_chunks: module.module.chunk_count(),
        };
        download.waiting.push(verified);
        self.ctx
            .classes
            .update_report(&class, |r| r.pending = Some(pending));
    }

    async fn stop_chunks(&self, sha: &Sha256Digest) {
        let filter = topic::module_chunk_filter(sha);
        self.uplink_subscriptions.remove(&filter);
        let _ = self.uplink.unsubscribe(filter).await;
    }

    async fn on_chunk(&mut self, module: Sha256Digest, index: u32, bytes: &[u8]) {
        let Some(download) = self.downloads.get_mut(&module) else {
            return;
        };
        if let Err(e) = download.assembly.accept(index, bytes) {
            // A chunk that does not match the signed manifest: tampered with or corrupted in
            // transit. The assignment keeps waiting for a good copy (a retained republish).
            let e = AssignmentError::Chunk {
                module,
                index,
                detail: e.to_string(),
            };
            let waiting: Vec<_> = download
                .waiting
                .iter()
                .chain(&download.shadows)
                .map(|v| (v.assignment.class.clone(), v.assignment.generation))
                .collect();
            for (class, generation) in waiting {
                self.refuse(&class, Some(generation), &e);
            }
            return;
        }
        download.last_progress = Instant::now();
        let received = download.assembly.received();
        for v in &download.waiting {
            self.ctx.classes.update_report(&v.assignment.class, |r| {
                if let Some(p) = &mut r.pending {
                    p.received_chunks = received;
                }
            });
        }
        if !download.assembly.is_complete() {
            return;
        }
        let Some(download) = self.downloads.remove(&module) else {
            return;
        };
        for v in &download.waiting {
            self.ctx
                .classes
                .update_report(&v.assignment.class, |r| r.pending = None);
        }
        self.stop_chunks(&module).await;
        let blob = match download.assembly.finish() {
            Ok(blob) => blob,
            Err(e) => {
                let e = AssignmentError::Manifest(e.to_string());
                for v in download.waiting.iter().chain(&download.shadows) {
                    self.refuse(&v.assignment.class, Some(v.assignment.generation), &e);
                }
                return;
            }
        };
        let store = self.ctx.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.put_module(&blob))
            .await
            .map_err(|e| AssignmentError::Task(e.to_string()))
            .and_then(|r| r.map_err(|e| AssignmentError::Store(e.to_string())));
        if let Err(e) = stored {
            tracing::error!(%module, "cannot store the module: {e}");
            for v in &download.shadows {
                let e = AssignmentError::Shadow(Box::new(AssignmentError::Store(e.to_string())));
                self.refuse(&v.assignment.class, Some(v.assignment.generation), &e);
            }
            for v in download.waiting {
                self.activation_failed(v, AssignmentError::Store(e.to_string()));
            }
            return;
        }
        for verified in download.waiting {
            let record = self.is_newer(&verified.assignment);
            if let Err(e) = self.activate(&verified, record).await {
                self.activation_failed(verified, e);
            }
        }
        for verified in download.shadows {
            self.load_shadow(&verified).await;
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<Sha256Digest> = self
            .downloads
            .iter()
            .filter(|(_, d)| now.saturating_duration_since(d.last_progress) >= DOWNLOAD_TIMEOUT)
            .map(|(sha, _)| *sha)
            .collect();
        for sha in expired {
            let Some(download) = self.downloads.remove(&sha) else {
                continue;
            };
            self.stop_chunks(&sha).await;
            let e = AssignmentError::DownloadTimeout { module: sha };
            for v in download.waiting {
                self.ctx
                    .classes
                    .update_report(&v.assignment.class, |r| r.pending = None);
                self.refuse(&v.assignment.class, Some(v.assignment.generation), &e);
            }
            let e = AssignmentError::Shadow(Box::new(e));
            for v in download.shadows {
                self.refuse(&v.assignment.class, Some(v.assignment.generation), &e);
            }
        }
        let due: Vec<ClassId> = self
            .retries
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(class, _)| class.clone())
            .collect();
        for class in due {
            let Some(retry) = self.retries.remove(&class) else {
                continue;
            };
            tracing::info!(%class, "retrying the activation of a class");
            let Some(handler) = retry.verified.assignment.handler.clone() else {
                continue;
            };
            let backoff = retry.backoff;
            self.apply(retry.verified, &handler).await;
            if let Some(next) = self.retries.get_mut(&class) {
                next.backoff = (backoff * 2).min(RETRY_MAX);
                next.at = Instant::now() + next.backoff;
            }
        }
    }

    /// Records a failed activation, schedules a retry, and fetches the blob again when that can help.
    fn activation_failed(&mut self, verified: Verified, error: AssignmentError) {
        let a = &verified.assignment;
        self.refuse(&a.class, Some(a.generation), &error);
        if error.refetch_helps()
            && let Some(handler) = &a.handler
        {
            let sha = handler.module.sha256;
            if let Err(e) = self.ctx.store.remove_module(&sha) {
                tracing::error!(module = %sha, "cannot remove a bad blob: {e}");
            }
        }
        let backoff = self
            .retries
            .get(&a.class)
            .map_or(RETRY_FIRST, |r| r.backoff);
        self.retries.insert(
            a.class.clone(),
            Retry {
                at: Instant::now() + backoff,
                backoff,
                verified,
            },
        );
    }

    /// Loads the assignment's module into the sandbox and switches the class to it; `record` stores
    /// the switch (false when restoring what the store already says: then the stored previous
    /// version is loaded too, for a fallback).
    async fn activate(&mut self, verified: &Verified, record: bool) -> Result<(), AssignmentError> {
        let assignment = &verified.assignment;
        let active = self.load_version(verified).await?;
        let (sha, version) = (active.sha256, active.version.clone());
        let ctx = self.ctx.clone();
        let switching = ctx.classes.switch_lock().await;
        if record {
            let store = self.ctx.store.clone();
            let class = assignment.class.clone();
            let generation = assignment.generation;
            let applied = ClassVersion {
                assignment: verified.signed.clone(),
                module_sha256: sha,
                version: version.clone(),
                applied_at_ms: now_ms(),
                shadow_sha256: assignment.shadow.as_ref().map(|s| s.module.sha256),
            };
            tokio::task::spawn_blocking(move || {
                store.swap_class(&class, generation, applied)?;
                store.flush()
            })
            .await
            .map_err(|e| AssignmentError::Task(e.to_string()))?
            .map_err(|e| AssignmentError::Store(e.to_string()))?;
        }
        let previous = self.ctx.classes.swap(active);
        drop(switching);
        if !record {
            self.restore_previous(assignment).await;
        }
        self.ctx.metrics.swaps.inc();
        self.ctx
            .classes
            .update_report(&assignment.class, |r| r.last_error = None);
        tracing::info!(class = %assignment.class, %version, replaced = ?previous.map(|p| p.version.clone()), "module active");
        report(
            &self.ctx,
            AgentEvent::new(
                now_ms(),
                self.ctx.node.clone(),
                EventKind::AssignmentApplied,
                format!("{version} active"),
            )
            .with_class(assignment.class.clone())
            .with_module(sha)
            .with_generation(assignment.generation),
        );
        // After the switch: the handler never waits for its shadow.
        self.set_shadow(verified).await;
        if record {
            self.collect_garbage().await;
        }
        Ok(())
    }

    /// Loads the class's previous version that the store keeps, so that a quarantine of the restored
    /// one can fall back at once. When the store's active version is older than the generation it
    /// applied, the class had fallen back from that previous version: it stays retired.
    async fn restore_previous(&mut self, active: &Assignment) {
        let class = &active.class;
        let record = match self.ctx.store.class(class) {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => {
                return tracing::warn!(%class, "cannot read the class's previous version: {e}");
            }
        };
        let Some(previous) = record.previous else {
            return;
        };
        let loaded = match self.verify(&previous.assignment) {
            Ok(verified) => self.load_version(&verified).await,
            Err(e) => Err(AssignmentError::StoredAssignment(e.to_string())),
        };
        match loaded {
            Ok(loaded) => {
                let fell_back = active.generation < record.generation;
                loaded.retired.store(fell_back, Ordering::Relaxed);
                self.ctx.classes.set_previous(loaded);
            }
            Err(e) => tracing::warn!(
                %class,
                version = %previous.version,
                "previous version not loaded, so no fallback until the next switch: {e}"
            ),
        }
    }

    /// Reads the assignment's module from the store and loads it into the sandbox: the class
    /// version it makes, not switched in yet.
    async fn load_version(&self, verified: &Verified) -> Result<ActiveClass, AssignmentError> {
        let assignment = &verified.assignment;
        let Some(handler) = &assignment.handler else {
            return Err(AssignmentError::Invalid(
                "the assignment has no handler".into(),
            ));
        };
        let version = format!("{}@{}", handler.module.name, handler.module.version);
        let module = self.load_module(handler, version.clone()).await?;
        Ok(ActiveClass {
            class: assignment.class.clone(),
            version,
            sha256: handler.module.sha256,
            reference: handler.module.reference(),
            generation: assignment.generation,
            rollout: assignment.rollout.clone(),
            limits: handler.limits.clone(),
            handler: ClassHandler::Wasm(module),
            counters: Default::default(),
            retired: Default::default(),
        })
    }

    /// Reads `spec`'s module from the store and loads it into the sandbox with its config and
    /// limits, as `label` (hashing and compiling off the async threads).
    async fn load_module(
        &self,
        spec: &HandlerSpec,
        label: String,
    ) -> Result<ModuleHandle, AssignmentError> {
        let sha = spec.module.sha256;
        let ctx = self.ctx.clone();
        let (limits, config) = (spec.limits.clone(), spec.config.clone());
        tokio::task::spawn_blocking(move || {
            let blob = ctx
                .store
                .module(&sha)
                .map_err(|e| AssignmentError::Store(e.to_string()))?
                .ok_or(AssignmentError::MissingBlob(sha))?;
            ctx.sandbox
                .load(ModuleSpec {
                    label,
                    wasm: &blob,
                    expected_sha256: Some(*sha.as_bytes()),
                    limits,
                    config,
                })
                .map_err(AssignmentError::from)
        })
        .await
        .map_err(|e| AssignmentError::Task(e.to_string()))?
    }

    /// Makes the assignment's shadow the class's — keeping the one it has if that is the same
    /// module, config and limits (with its counters) — and loads or fetches its module; an
    /// assignment without a shadow drops the class's (its blob then goes by garbage collection).
    async fn set_shadow(&mut self, verified: &Verified) {
        let a = &verified.assignment;
        let Some(spec) = &a.shadow else {
            return self.ctx.classes.set_shadow(&a.class, None);
        };
        let run = match self.ctx.classes.shadow(&a.class) {
            Some(run) if run.is(spec) => run,
            _ => {
                let run = Arc::new(ShadowRun::new(spec));
                self.ctx.classes.set_shadow(&a.class, Some(run.clone()));
                run
            }
        };
        if run.module().is_some() {
            return;
        }
        match self.ctx.store.has_module(&spec.module.sha256) {
            Ok(true) => self.load_shadow(verified).await,
            Ok(false) => self.fetch(verified.clone(), spec, true).await,
            Err(e) => {
                let e = AssignmentError::Shadow(Box::new(AssignmentError::Store(e.to_string())));
                self.refuse(&a.class, Some(a.generation), &e);
            }
        }
    }

    /// Loads the assignment's shadow module for the class's shadow, if the class still has that
    /// shadow (a newer assignment may have changed or dropped it meanwhile).
    async fn load_shadow(&self, verified: &Verified) {
        let a = &verified.assignment;
        let Some(spec) = &a.shadow else {
            return;
        };
        let Some(run) = self.ctx.classes.shadow(&a.class).filter(|run| run.is(spec)) else {
            return;
        };
        let label = format!("{}@{} (shadow)", spec.module.name, spec.module.version);
        match self.load_module(spec, label.clone()).await {
            Ok(module) => {
                run.set_module(module);
                tracing::info!(class = %a.class, shadow = %label, "shadow loaded");
            }
            Err(e) => {
                let e = AssignmentError::Shadow(Box::new(e));
                self.refuse(&a.class, Some(a.generation), &e);
            }
        }
    }

    async fn withdraw(&mut self, assignment: &Assignment) {
        if let Err(e) = self
            .ctx
            .store
            .withdraw_class(&assignment.class, assignment.generation)
        {
            let e = AssignmentError::Store(e.to_string());
            return self.refuse(&assignment.class, Some(assignment.generation), &e);
        }
        self.ctx.classes.remove(&assignment.class);
        report(
            &self.ctx,
            AgentEvent::new(
                now_ms(),
                self.ctx.node.clone(),
                EventKind::ClassWithdrawn,
                "class withdrawn from this node",
            )
            .with_class(assignment.class.clone())
            .with_generation(assignment.generation),
        );
        self.collect_garbage().await;
    }

    /// Removes blobs that no class record references (as active or previous version) and compiled
    /// artefacts of modules no longer loaded.
    async fn collect_garbage(&self) {
        let ctx = self.ctx.clone();
        let downloading: Vec<Sha256Digest> = self.downloads.keys().copied().collect();
        let result = tokio::task::spawn_blocking(move || -> Result<(u64, u64), String> {
            let records = ctx.store.classes().map_err(|e| e.to_string())?;
            let referenced: std::collections::HashSet<Sha256Digest> = records
                .iter()
                .flat_map(|(_, r)| [&r.active, &r.previous])
                .flatten()
                .map(|v| v.module_sha256)
                .chain(
                    records
                        .iter()
                        .filter_map(|(_, r)| r.active.as_ref()?.shadow_sha256),
                )
                .chain(downloading)
                .collect();
            let mut blobs = 0;
            for sha in ctx.store.module_digests().map_err(|e| e.to_string())? {
                if !referenced.contains(&sha)
                    && ctx.store.remove_module(&sha).map_err(|e| e.to_string())?
                {
                    blobs += 1;
                }
            }
            let artefacts = ctx
                .sandbox
                .remove_unused_artefacts()
                .map_err(|e| e.to_string())? as u64;
            Ok((blobs, artefacts))
        })
        .await;
        match result {
            Ok(Ok((blobs, artefacts))) => {
                let collected = &self.ctx.metrics.garbage_collected;
                collected
                    .get_or_create(&ReasonLabels::new("blob"))
                    .inc_by(blobs);
                collected
                    .get_or_create(&ReasonLabels::new("artefact"))
                    .inc_by(artefacts);
                if blobs + artefacts > 0 {
                    tracing::info!(blobs, artefacts, "removed modules no class uses");
                }
            }
            Ok(Err(e)) => tracing::warn!("garbage collection failed: {e}"),
            Err(e) => tracing::warn!("garbage collection task failed: {e}"),
        }
    }

    fn refuse(&self, class: &ClassId, generation: Option<u64>, error: &AssignmentError) {
        let detail = error.to_string();
        self.ctx.classes.update_report(class, |r| {
            r.last_error = Some(ErrorReport {
                at_ms: now_ms(),
                message: detail.clone(),
            });
        });
        let reason = error.reason();
        tracing::warn!(%class, reason, "assignment not applied: {detail}");
        self.ctx
            .metrics
            .refused_assignments
            .get_or_create(&ReasonLabels::new(reason))
            .inc();
        let mut event =
            AgentEvent::new(now_ms(), self.ctx.node.clone(), error.event_kind(), detail)
                .with_class(class.clone());
        if let Some(generation) = generation {
            event = event.with_generation(generation);
        }
        report(&self.ctx, event);
    }
}
