//! One hollow node: what a real agent does with its assignments and chunks, and the status and
//! events it publishes, without a sandbox. Pure: the connection ([`super::link`]) feeds it the
//! messages it receives and carries out the [`Action`]s it returns; the status schedule asks it
//! for its [`NodeStatus`].
//!
//! As the agent (edge-agent `assignments`): an assignment is decoded and verified with the trust
//! anchor, must name this node and the class of its topic, be valid and newer than the generation
//! applied (a redelivery of the current one is a no-op, an older one a replay); a module the node
//! has not fetched before is fetched by chunks, each checked against the signed manifest as it
//! arrives, the whole blob against its sha256 and size ([`Modules`]); a newer generation of the
//! class supersedes a download under way. Anything refused is counted, set as the class's
//! `last_error` and published as an event, and the class keeps what it runs.
//!
//! Instead of running devices, every status adds `interactions_per_status` interactions to the
//! active version of each class. A version the fleet is told to fail ([`FailVersion`]) traps on
//! all of them: it is quarantined at once and, if the class keeps a previous version, the class
//! falls back to it (`ModuleQuarantined` and `RolledBack` events), as a real agent's breaker and
//! fallback do within a batch or two — so a rollout's gate sees exactly what it would see from
//! real agents. A shadow (a rollout's shadow step) is fetched like a handler and agrees on every
//! interaction, unless it is the failing version.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;

use edgefleet_protocol::assignment::{Assignment, Freshness, HandlerSpec, Rollout};
use edgefleet_protocol::event::{AgentEvent, EventKind};
use edgefleet_protocol::manifest::{ManifestError, ModuleManifest, ModuleRef};
use edgefleet_protocol::status::{
    ClassStatus, Divergence, ErrorReport, LinkState, LinkStatus, MAX_DIVERGENCE_EXAMPLES,
    ModuleStats, NodeState, NodeStatus, OutboxStatus, PendingModule, ShadowReport,
};
use edgefleet_protocol::topic::module_chunk_filter;
use edgefleet_protocol::{ClassId, NodeId, Sha256Digest, Signed, TrustAnchor};
use serde::Serialize;

use super::modules::Modules;
use super::{Counters, count};

/// Devices a hollow node claims per class (active and seen), for the status' device counts.
const DEVICES_PER_CLASS: u32 = 8;

/// Assignments a node remembers for [`super::Fleet::observe`], newest last.
const HISTORY: usize = 32;

/// What the version a hollow fleet is told to fail is matched by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailVersion {
    /// A module version string (`3.0.0`), optionally with the module's name (`thermostat@3.0.0`).
    Version {
        /// The module's name, if given.
        name: Option<String>,
        /// The version string.
        version: String,
    },
    /// The start of the blob's sha256 in hex (at least 12 digits, as `edgefleet get` shows it).
    Digest(String),
}

impl FailVersion {
    /// Whether `module` is the version to fail.
    pub fn matches(&self, module: &ModuleRef) -> bool {
        match self {
            FailVersion::Version { name, version } => {
                module.version == *version && name.as_ref().is_none_or(|n| *n == module.name)
            }
            FailVersion::Digest(prefix) => module.sha256.to_string().starts_with(prefix.as_str()),
        }
    }
}

/// Why a `--fail-version` is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} names no module version: give a version (3.0.0), name@version (thermostat@3.0.0) or at least 12 hex digits of the module's sha256"
)]
pub struct FailVersionError(String);

impl FromStr for FailVersion {
    type Err = FailVersionError;

    fn from_str(s: &str) -> Result<FailVersion, FailVersionError> {
        let text = s.trim();
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.len() >= 12 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(FailVersion::Digest(hex.to_ascii_lowercase()));
        }
        let (name, version) = match text.split_once('@') {
            Some((name, version)) => (Some(name.to_string()), version.to_string()),
            None => (None, text.to_string()),
        };
        if version.is_empty() || name.as_ref().is_some_and(String::is_empty) {
            return Err(FailVersionError(s.to_string()));
        }
        Ok(FailVersion::Version { name, version })
    }
}

impl fmt::Display for FailVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailVersion::Version {
                name: Some(name),
                version,
            } => write!(f, "{name}@{version}"),
            FailVersion::Version {
                name: None,
                version,
            } => f.write_str(version),
            FailVersion::Digest(prefix) => write!(f, "sha256:{prefix}"),
        }
    }
}

/// One verified assignment a hollow node received, and when it got as far as running and
/// reporting its module (times in ms since the UNIX epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assigned {
    /// The class.
    pub class: ClassId,
    /// The assignment's generation.
    pub generation: u64,
    /// Its module (`None`: a withdrawal).
    pub module: Option<ModuleRef>,
    /// Its rollout step.
    pub rollout: Option<Rollout>,
    /// When it arrived and verified.
    pub received_at_ms: u64,
    /// When its module became active (after the chunks arrived and verified).
    pub active_at_ms: Option<u64>,
    /// When the first status claiming it was published.
    pub reported_at_ms: Option<u64>,
}

/// Why a hollow node refused an assignment or a module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refusal {
    #[error("not a signed assignment: {0}")]
    Decode(String),
    #[error("refused signature: {0}")]
    Signature(String),
    #[error("invalid assignment: {0}")]
    Invalid(String),
    #[error("generation {generation} is older than the applied {applied}: a replay")]
    Stale { generation: u64, applied: u64 },
    #[error("module {module} chunk {index} refused: {source}")]
    Chunk {
        module: Sha256Digest,
        index: u32,
        source: ManifestError,
    },
    #[error("module {module} refused: {source}")]
    Module {
        module: Sha256Digest,
        source: ManifestError,
    },
}

impl Refusal {
    fn event_kind(&self) -> EventKind {
        match self {
            Refusal::Chunk { .. } | Refusal::Module { .. } => EventKind::ModuleRefused,
            _ => EventKind::AssignmentRejected,
        }
    }
}

/// What the connection is to do for the node.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action {
    Subscribe(String),
    Unsubscribe(String),
    Event(AgentEvent),
}

/// What a hollow node reads from its fleet while it handles a message or reports.
pub(super) struct Context<'a> {
    pub trust: &'a TrustAnchor,
    pub modules: &'a Modules,
    pub counters: &'a Counters,
    pub failing: Option<&'a FailVersion>,
    pub interactions_per_status: u64,
    pub now_ms: u64,
}

/// A shadow version beside a class's handler.
#[derive(Debug, Clone)]
struct Shadow {
    spec: HandlerSpec,
    loaded: bool,
    compared: u64,
    agreed: u64,
    skipped: u64,
    examples: Vec<Divergence>,
}

/// One class on the node.
#[derive(Debug, Clone, Default)]
struct Class {
    applied: Option<u64>,
    rollout: Option<Rollout>,
    active: Option<ModuleRef>,
    previous: Option<ModuleRef>,
    modules: Vec<ModuleStats>,
    pending: Option<PendingModule>,
    last_error: Option<ErrorReport>,
    shadow: Option<Shadow>,
}

impl Class {
    fn stats(&mut self, module: &ModuleRef) -> &mut ModuleStats {
        if let Some(i) = self.modules.iter().position(|m| m.module == *module) {
            return &mut self.modules[i];
        }
        self.modules.push(ModuleStats {
            module: module.clone(),
            interactions: 0,
            errors: 0,
            traps: 0,
            timeouts: 0,
            rejections: 0,
            quarantined: false,
        });
        self.modules.last_mut().expect("just pushed")
    }

    /// Keeps the counters of the active, previous and quarantined versions (as an agent reports).
    fn prune(&mut self) {
        let (active, previous) = (self.active.clone(), self.previous.clone());
        self.modules.retain(|m| {
            m.quarantined
                || Some(&m.module) == active.as_ref()
                || Some(&m.module) == previous.as_ref()
        });
    }
}

/// A module being fetched by this node.
#[derive(Debug)]
struct Download {
    manifest: ModuleManifest,
    have: Vec<bool>,
    received: u32,
    /// Assignments waiting for it as their handler.
    waiting: Vec<Assignment>,
    /// Classes (and generations) waiting for it as their shadow.
    shadows: Vec<(ClassId, u64)>,
}

/// One hollow node's state (see the module documentation).
#[derive(Debug)]
pub(super) struct Hollow {
    node: NodeId,
    started_at_ms: u64,
    connected_since_ms: u64,
    reconnects: u64,
    last_report_ms: u64,
    classes: BTreeMap<ClassId, Class>,
    downloads: BTreeMap<Sha256Digest, Download>,
    /// Modules this node fetched and verified (its store; the bytes are in [`Modules`]).
    store: BTreeSet<Sha256Digest>,
    history: VecDeque<Assigned>,
    refused: u64,
}

impl Hollow {
    pub(super) fn new(node: NodeId, started_at_ms: u64) -> Hollow {
        Hollow {
            node,
            started_at_ms,
            connected_since_ms: started_at_ms,
            reconnects: 0,
            last_report_ms: started_at_ms,
            classes: BTreeMap::new(),
            downloads: BTreeMap::new(),
            store: BTreeSet::new(),
            history: VecDeque::new(),
            refused: 0,
        }
    }

    pub(super) fn node(&self) -> &NodeId {
        &self.node
    }

    /// The assignments it received, newest last.
    pub(super) fn history(&self) -> impl Iterator<Item = &Assigned> {
        self.history.iter()
    }

    /// Assignments and modules it refused.
    pub(super) fn refused(&self) -> u64 {
        self.refused
    }

    /// The active module of every class.
    pub(super) fn active(&self) -> impl Iterator<Item = (&ClassId, &ModuleRef)> {
        self.classes
            .iter()
            .filter_map(|(class, c)| Some((class, c.active.as_ref()?)))
    }

    /// The chunk filters of the downloads under way (subscribed again on every connection).
    pub(super) fn chunk_filters(&self) -> Vec<String> {
        self.downloads.keys().map(module_chunk_filter).collect()
    }

    /// The uplink connected (again).
    pub(super) fn connected(&mut self, now_ms: u64, first: bool) {
        self.connected_since_ms = now_ms;
        if !first {
            self.reconnects += 1;
        }
    }

    /// The offline status it registers as its last will.
    pub(super) fn last_will(&self, now_ms: u64) -> NodeStatus {
        NodeStatus::last_will(
            self.node.clone(),
            agent_version(),
            WASMEDGE_VERSION,
            edgefleet_protocol::GUEST_ABI_VERSION,
            self.started_at_ms,
            now_ms,
        )
    }

    /// A message on `ef/v1/node/<this node>/assign/<class>`.
    pub(super) fn on_assignment(
        &mut self,
        class: ClassId,
        payload: &[u8],
        ctx: &Context<'_>,
    ) -> Vec<Action> {
        if payload.is_empty() {
            // A cleared retained message: withdrawals are signed assignments.
            return Vec::new();
        }
        let assignment = match Signed::<Assignment>::decode(payload) {
            Err(e) => Err(Refusal::Decode(e.to_string())),
            Ok(signed) => signed
                .verify(ctx.trust)
                .map_err(|e| Refusal::Signature(e.to_string())),
        };
        let assignment = match assignment {
            Ok(a) => a,
            Err(e) => return self.refuse(&class, None, e, ctx),
        };
        let generation = assignment.generation;
        if let Err(e) = assignment
            .check_target(&self.node, &class)
            .and_then(|()| assignment.validate())
        {
            return self.refuse(
                &class,
                Some(generation),
                Refusal::Invalid(e.to_string()),
                ctx,
            );
        }
        let current = self.classes.get(&class);
        let applied = current.and_then(|c| c.applied);
        let mut actions = Vec::new();
        match assignment.freshness(applied) {
            Freshness::Stale => {
                let e = Refusal::Stale {
                    generation,
                    applied: applied.unwrap_or_default(),
                };
                return self.refuse(&class, Some(generation), e, ctx);
            }
            Freshness::Current => {
                // A retained redelivery (a reconnect): nothing to do while the class runs.
                let running = current.is_some_and(|c| c.active.is_some());
                if running
                    || assignment.handler.is_none()
                    || self.is_downloading(&class, generation)
                {
                    return actions;
                }
            }
            Freshness::Newer => {
                if self.is_downloading(&class, generation) {
                    return actions;
                }
                actions.extend(self.supersede(&class, generation));
            }
        }
        count(&ctx.counters.assignments_verified, 1);
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Assigned {
            class: class.clone(),
            generation,
            module: assignment.handler.as_ref().map(|h| h.module.reference()),
            rollout: assignment.rollout.clone(),
            received_at_ms: ctx.now_ms,
            active_at_ms: None,
            reported_at_ms: None,
        });
        let Some(handler) = assignment.handler.clone() else {
            self.classes.remove(&class);
            self.collect_garbage();
            let event = AgentEvent::new(
                ctx.now_ms,
                self.node.clone(),
                EventKind::ClassWithdrawn,
                "class withdrawn from this node",
            )
            .with_class(class)
            .with_generation(generation);
            actions.push(Action::Event(event));
            return actions;
        };
        if self.store.contains(&handler.module.sha256) {
            actions.extend(self.activate(&assignment, ctx));
        } else {
            let c = self.classes.entry(class).or_default();
            c.pending = Some(PendingModule {
                module: handler.module.reference(),
                generation,
                received_chunks: 0,
                total_chunks: handler.module.chunk_count(),
            });
            actions.extend(self.fetch(&handler.module, Some(assignment), None));
        }
        actions
    }

    /// A message on `ef/v1/module/<sha256>/chunk/<index>`.
    pub(super) fn on_chunk(
        &mut self,
        module: Sha256Digest,
        index: u32,
        bytes: &[u8],
        ctx: &Context<'_>,
    ) -> Vec<Action> {
        let Some(download) = self.downloads.get_mut(&module) else {
            return Vec::new();
        };
        if let Err(source) = download.manifest.verify_chunk(index, bytes) {
            // Tampered with or corrupted: the classes keep waiting for a good copy.
            count(&ctx.counters.chunks_refused, 1);
            let waiting = waiting_classes(download);
            let mut actions = Vec::new();
            for (class, generation) in waiting {
                let e = Refusal::Chunk {
                    module,
                    index,
                    source: source.clone(),
                };
                actions.extend(self.refuse(&class, Some(generation), e, ctx));
            }
            return actions;
        }
        if download.have[index as usize] {
            return Vec::new();
        }
        download.have[index as usize] = true;
        download.received += 1;
        count(&ctx.counters.chunks_verified, 1);
        ctx.modules.offer(&download.manifest, index, bytes);
        let received = download.received;
        for a in &download.waiting {
            if let Some(p) = self
                .classes
                .get_mut(&a.class)
                .and_then(|c| c.pending.as_mut())
            {
                p.received_chunks = received;
            }
        }
        if received < download.manifest.chunk_count() {
            return Vec::new();
        }
        let download = self.downloads.remove(&module).expect("looked up above");
        let mut actions = vec![Action::Unsubscribe(module_chunk_filter(&module))];
        if let Err(source) = ctx.modules.finish(&download.manifest) {
            for (class, generation) in waiting_classes(&download) {
                let e = Refusal::Module {
                    module,
                    source: source.clone(),
                };
                actions.extend(self.refuse(&class, Some(generation), e, ctx));
            }
            return actions;
        }
        count(&ctx.counters.modules_verified, 1);
        self.store.insert(module);
        for assignment in &download.waiting {
            actions.extend(self.activate(assignment, ctx));
        }
        for (class, generation) in &download.shadows {
            if let Some(shadow) = self
                .classes
                .get_mut(class)
                .filter(|c| c.applied == Some(*generation))
                .and_then(|c| c.shadow.as_mut())
                .filter(|s| s.spec.module.sha256 == module)
            {
                shadow.loaded = true;
            }
        }
        actions
    }

    /// The next status: every class's active version ran `interactions_per_status` interactions
    /// since the last one (trapping on all of them if it is the failing version).
    pub(super) fn report(&mut self, ctx: &Context<'_>) -> (NodeStatus, Vec<Action>) {
        let n = ctx.interactions_per_status;
        let elapsed_s = (ctx.now_ms.saturating_sub(self.last_report_ms) as f64 / 1000.0).max(0.001);
        self.last_report_ms = ctx.now_ms;
        let mut actions = Vec::new();
        let mut classes = Vec::new();
        let mut total_rate = 0.0;
        for (class, c) in &mut self.classes {
            let mut rate = 0.0;
            if let Some(active) = c.active.clone() {
                rate = n as f64 / elapsed_s;
                count(&ctx.counters.interactions, n);
                let fails = ctx.failing.is_some_and(|f| f.matches(&active));
                let stats = c.stats(&active);
                stats.interactions += n;
                if fails || stats.quarantined {
                    // Every interaction trapped; a quarantined version without a previous one
                    // to fall back to keeps faulting.
                    stats.errors += n;
                    stats.traps += n;
                    count(&ctx.counters.faults, n);
                }
                if fails && !stats.quarantined {
                    stats.quarantined = true;
                    count(&ctx.counters.quarantines, 1);
                    let event = |kind, detail: String| {
                        AgentEvent::new(ctx.now_ms, self.node.clone(), kind, detail)
                            .with_class(class.clone())
                            .with_module(active.sha256)
                    };
                    actions.push(Action::Event(event(
                        EventKind::InteractionFailed,
                        format!("{active}: {n} interactions trapped (hollow node told to fail it)"),
                    )));
                    actions.push(Action::Event(event(
                        EventKind::ModuleQuarantined,
                        format!("{active} quarantined after {n} consecutive faults"),
                    )));
                    if let Some(previous) = c.previous.take() {
                        actions.push(Action::Event(event(
                            EventKind::RolledBack,
                            format!("fell back from {active} to {previous}"),
                        )));
                        c.active = Some(previous);
                    }
                }
            }
            if let Some(shadow) = &mut c.shadow {
                let module = shadow.spec.module.reference();
                if !shadow.loaded || c.active.is_none() {
                    shadow.skipped += n;
                } else if ctx.failing.is_some_and(|f| f.matches(&module)) {
                    shadow.compared += n;
                    if shadow.examples.len() == MAX_DIVERGENCE_EXAMPLES {
                        shadow.examples.remove(0);
                    }
                    shadow.examples.push(Divergence {
                        at_ms: ctx.now_ms,
                        device: "hollow-device".into(),
                        detail: format!("hollow node told to fail {module}: commands differ"),
                    });
                } else {
                    shadow.compared += n;
                    shadow.agreed += n;
                }
            }
            total_rate += rate;
            classes.push(ClassStatus {
                class: class.clone(),
                generation: c.applied,
                rollout: c.rollout.clone(),
                active: c.active.clone(),
                previous: c.previous.clone(),
                pending: c.pending.clone(),
                last_error: c.last_error.clone(),
                active_devices: if c.active.is_some() {
                    DEVICES_PER_CLASS
                } else {
                    0
                },
                seen_devices: if c.active.is_some() {
                    DEVICES_PER_CLASS
                } else {
                    0
                },
                interactions_per_sec: rate,
                modules: c.modules.clone(),
                shadow: c.shadow.as_ref().map(|s| ShadowReport {
                    module: s.spec.module.reference(),
                    compared: s.compared,
                    agreed: s.agreed,
                    skipped: s.skipped,
                    examples: s.examples.clone(),
                }),
            });
        }
        let devices = classes.iter().map(|c| c.active_devices).sum();
        let status = NodeStatus {
            node: self.node.clone(),
            state: NodeState::Online,
            protocol_version: edgefleet_protocol::PROTOCOL_VERSION,
            agent_version: agent_version(),
            wasmedge_version: WASMEDGE_VERSION.into(),
            guest_abi_version: edgefleet_protocol::GUEST_ABI_VERSION,
            started_at_ms: self.started_at_ms,
            updated_at_ms: ctx.now_ms,
            uplink: LinkStatus {
                state: LinkState::Connected,
                since_ms: self.connected_since_ms,
                reconnects: self.reconnects,
                last_error: None,
            },
            device_link: LinkStatus {
                state: LinkState::Connected,
                since_ms: self.started_at_ms,
                reconnects: 0,
                last_error: None,
            },
            outbox: OutboxStatus {
                depth: 0,
                capacity: 100_000,
                dropped: 0,
                oldest_at_ms: None,
            },
            active_devices: devices,
            seen_devices: devices,
            interactions_per_sec: total_rate,
            classes,
        };
        (status, actions)
    }

    /// The status built last was published at `now_ms`: assignments whose module it claims as
    /// active are reported.
    pub(super) fn reported(&mut self, now_ms: u64) {
        for a in self.history.iter_mut().rev() {
            if a.reported_at_ms.is_some() || a.active_at_ms.is_none() {
                continue;
            }
            let claimed = self
                .classes
                .get(&a.class)
                .is_some_and(|c| c.applied == Some(a.generation));
            if claimed {
                a.reported_at_ms = Some(now_ms);
            }
        }
    }

    /// Switches the class to the assignment's handler (its module is in the store).
    fn activate(&mut self, assignment: &Assignment, ctx: &Context<'_>) -> Vec<Action> {
        let Some(handler) = &assignment.handler else {
            return Vec::new();
        };
        let class = self.classes.entry(assignment.class.clone()).or_default();
        if class.applied.is_some_and(|g| g > assignment.generation) {
            return Vec::new();
        }
        let module = handler.module.reference();
        if class.active.as_ref() != Some(&module) {
            class.previous = class.active.replace(module.clone());
        }
        // A new assignment gets a fresh breaker, even for a version quarantined before.
        class.stats(&module).quarantined = false;
        class.prune();
        class.applied = Some(assignment.generation);
        class.rollout = assignment.rollout.clone();
        class.pending = None;
        class.last_error = None;
        let mut actions = vec![Action::Event(
            AgentEvent::new(
                ctx.now_ms,
                self.node.clone(),
                EventKind::AssignmentApplied,
                format!("{}@{} active", module.name, module.version),
            )
            .with_class(assignment.class.clone())
            .with_module(module.sha256)
            .with_generation(assignment.generation),
        )];
        for a in self.history.iter_mut().rev() {
            if a.class == assignment.class && a.generation == assignment.generation {
                a.active_at_ms.get_or_insert(ctx.now_ms);
                break;
            }
        }
        // The shadow after the handler (the handler never waits for it).
        match &assignment.shadow {
            None => class.shadow = None,
            Some(spec) => {
                let same = class.shadow.as_ref().is_some_and(|s| s.spec == *spec);
                if !same {
                    class.shadow = Some(Shadow {
                        spec: spec.clone(),
                        loaded: self.store.contains(&spec.module.sha256),
                        compared: 0,
                        agreed: 0,
                        skipped: 0,
                        examples: Vec::new(),
                    });
                    if !self.store.contains(&spec.module.sha256) {
                        let waiting = (assignment.class.clone(), assignment.generation);
                        actions.extend(self.fetch(&spec.module, None, Some(waiting)));
                    }
                }
            }
        }
        self.collect_garbage();
        actions
    }

    /// Starts or joins the download of `manifest`'s module.
    fn fetch(
        &mut self,
        manifest: &ModuleManifest,
        handler: Option<Assignment>,
        shadow: Option<(ClassId, u64)>,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let download = self.downloads.entry(manifest.sha256).or_insert_with(|| {
            actions.push(Action::Subscribe(module_chunk_filter(&manifest.sha256)));
            Download {
                manifest: manifest.clone(),
                have: vec![false; manifest.chunks.len()],
                received: 0,
                waiting: Vec::new(),
                shadows: Vec::new(),
            }
        });
        download.waiting.extend(handler);
        download.shadows.extend(shadow);
        actions
    }

    fn is_downloading(&self, class: &ClassId, generation: u64) -> bool {
        self.downloads.values().any(|d| {
            d.waiting
                .iter()
                .any(|a| a.class == *class && a.generation == generation)
        })
    }

    /// A newer generation of `class` arrived: older ones stop waiting, and downloads nobody waits
    /// for any more are cancelled.
    fn supersede(&mut self, class: &ClassId, generation: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.downloads.retain(|sha, d| {
            d.waiting
                .retain(|a| a.class != *class || a.generation >= generation);
            d.shadows.retain(|(c, g)| c != class || *g >= generation);
            let keep = !d.waiting.is_empty() || !d.shadows.is_empty();
            if !keep {
                actions.push(Action::Unsubscribe(module_chunk_filter(sha)));
            }
            keep
        });
        if let Some(c) = self.classes.get_mut(class) {
            c.pending = None;
        }
        actions
    }

    /// Forgets modules no class refers to (as active, previous or shadow version).
    fn collect_garbage(&mut self) {
        let referenced: BTreeSet<Sha256Digest> = self
            .classes
            .values()
            .flat_map(|c| {
                [c.active.as_ref(), c.previous.as_ref()]
                    .into_iter()
                    .flatten()
                    .map(|m| m.sha256)
                    .chain(c.shadow.as_ref().map(|s| s.spec.module.sha256))
            })
            .collect();
        self.store.retain(|sha| referenced.contains(sha));
    }

    fn refuse(
        &mut self,
        class: &ClassId,
        generation: Option<u64>,
        error: Refusal,
        ctx: &Context<'_>,
    ) -> Vec<Action> {
        self.refused += 1;
        let counter = match &error {
            Refusal::Decode(_) | Refusal::Signature(_) => &ctx.counters.refused_signature,
            Refusal::Invalid(_) => &ctx.counters.refused_invalid,
            Refusal::Stale { .. } => &ctx.counters.refused_stale,
            Refusal::Chunk { .. } | Refusal::Module { .. } => &ctx.counters.modules_refused,
        };
        count(counter, 1);
        let detail = error.to_string();
        tracing::debug!(node = %self.node, %class, "refused: {detail}");
        self.classes.entry(class.clone()).or_default().last_error = Some(ErrorReport {
            at_ms: ctx.now_ms,
            message: detail.clone(),
        });
        let mut event = AgentEvent::new(ctx.now_ms, self.node.clone(), error.event_kind(), detail)
            .with_class(class.clone());
        if let Some(generation) = generation {
            event = event.with_generation(generation);
        }
        vec![Action::Event(event)]
    }
}

/// The version hollow nodes report as their agent's: the crate's, marked hollow so that
/// `edgefleet get nodes` tells them from real agents.
fn agent_version() -> String {
    format!("{}-hollow", env!("CARGO_PKG_VERSION"))
}

/// What hollow nodes report as their WasmEdge version: they run none.
const WASMEDGE_VERSION: &str = "none (hollow)";

fn waiting_classes(download: &Download) -> Vec<(ClassId, u64)> {
    download
        .waiting
        .iter()
        .map(|a| (a.class.clone(), a.generation))
        .chain(download.shadows.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_protocol::manifest::MIN_CHUNK_SIZE;
    use edgefleet_protocol::{ClassLimits, RolloutStage, SigningKey};

    struct Setup {
        key: SigningKey,
        trust: TrustAnchor,
        modules: Modules,
        counters: Counters,
        failing: Option<FailVersion>,
        now_ms: u64,
    }

    impl Setup {
        fn new() -> Setup {
            let key = SigningKey::generate().unwrap();
            let trust = [key.verifying_key()].into_iter().collect();
            Setup {
                key,
                trust,
                modules: Modules::default(),
                counters: Counters::default(),
                failing: None,
                now_ms: 1_000,
            }
        }

        fn ctx(&mut self) -> Context<'_> {
            self.now_ms += 1000;
            Context {
                trust: &self.trust,
                modules: &self.modules,
                counters: &self.counters,
                failing: self.failing.as_ref(),
                interactions_per_status: 20,
                now_ms: self.now_ms,
            }
        }
    }

    fn blob(version: &str) -> Vec<u8> {
        (0..40_000u32)
            .map(|i| (i % 251) as u8 ^ version.len() as u8 ^ version.as_bytes()[0])
            .collect()
    }

    fn assignment(version: &str, generation: u64) -> Assignment {
        Assignment {
            node: NodeId::new("hollow-1").unwrap(),
            class: thermo(),
            generation,
            issued_at_ms: 1,
            rollout: Some(Rollout {
                id: "thermo-1".into(),
                stage: RolloutStage::Canary,
            }),
            handler: Some(HandlerSpec {
                module: ModuleManifest::for_blob(
                    "thermostat",
                    version,
                    1,
                    &blob(version),
                    MIN_CHUNK_SIZE,
                )
                .unwrap(),
                config: vec![0xa0],
                limits: ClassLimits::default(),
            }),
            shadow: None,
        }
    }

    fn thermo() -> ClassId {
        ClassId::new("thermo").unwrap()
    }

    fn chunks(version: &str) -> Vec<Vec<u8>> {
        blob(version)
            .chunks(MIN_CHUNK_SIZE as usize)
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn events(actions: &[Action]) -> Vec<EventKind> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Event(e) => Some(e.kind),
                _ => None,
            })
            .collect()
    }

    /// Delivers `version`'s assignment and every chunk; returns the actions.
    fn install(hollow: &mut Hollow, s: &mut Setup, version: &str, generation: u64) -> Vec<Action> {
        let a = assignment(version, generation);
        let sha = a.handler.as_ref().unwrap().module.sha256;
        let mut actions = hollow.on_assignment(thermo(), &s.key.sign(&a).encode(), &s.ctx());
        for (i, chunk) in chunks(version).iter().enumerate() {
            actions.extend(hollow.on_chunk(sha, i as u32, chunk, &s.ctx()));
        }
        actions
    }

    fn hollow(s: &Setup) -> Hollow {
        Hollow::new(NodeId::new("hollow-1").unwrap(), s.now_ms)
    }

    #[test]
    fn a_signed_assignment_is_fetched_verified_and_reported() {
        let mut s = Setup::new();
        let mut h = hollow(&s);
        let actions = install(&mut h, &mut s, "1.0.0", 10);
        let sha = assignment("1.0.0", 10).handler.unwrap().module.sha256;
        assert_eq!(actions[0], Action::Subscribe(module_chunk_filter(&sha)));
        assert!(actions.contains(&Action::Unsubscribe(module_chunk_filter(&sha))));
        assert_eq!(events(&actions), [EventKind::AssignmentApplied]);
        let (status, _) = h.report(&s.ctx());
        let class = status.class(&thermo()).unwrap();
        assert_eq!(class.active.as_ref().unwrap().version, "1.0.0");
        assert_eq!(class.generation, Some(10));
        assert_eq!(class.module(&sha).unwrap().interactions, 20);
        h.reported(s.now_ms);
        let seen = h.history().next().unwrap();
        assert!(seen.active_at_ms.is_some() && seen.reported_at_ms == Some(s.now_ms));
        assert_eq!(s.counters.totals().modules_verified, 1);

        // The same generation again is a no-op; a newer one of a version held switches at once,
        // keeping the previous.
        let again = h.on_assignment(
            thermo(),
            &s.key.sign(&assignment("1.0.0", 10)).encode(),
            &s.ctx(),
        );
        assert!(again.is_empty());
        install(&mut h, &mut s, "2.0.0", 11);
        let back = h.on_assignment(
            thermo(),
            &s.key.sign(&assignment("1.0.0", 12)).encode(),
            &s.ctx(),
        );
        assert_eq!(events(&back), [EventKind::AssignmentApplied]);
        let (status, _) = h.report(&s.ctx());
        let class = status.class(&thermo()).unwrap();
        assert_eq!(class.active.as_ref().unwrap().version, "1.0.0");
        assert_eq!(class.previous.as_ref().unwrap().version, "2.0.0");
    }

    #[test]
    fn a_forged_signature_is_refused_and_counted_not_run() {
        let mut s = Setup::new();
        let mut h = hollow(&s);
        let forger = SigningKey::generate().unwrap();
        let actions = h.on_assignment(
            thermo(),
            &forger.sign(&assignment("1.0.0", 10)).encode(),
            &s.ctx(),
        );
        assert_eq!(events(&actions), [EventKind::AssignmentRejected]);
        // Garbage, a payload signed for another node, and a replay are refused too.
        let garbage = h.on_assignment(thermo(), b"not cbor", &s.ctx());
        assert_eq!(events(&garbage), [EventKind::AssignmentRejected]);
        let mut other = assignment("1.0.0", 10);
        other.node = NodeId::new("hollow-2").unwrap();
        h.on_assignment(thermo(), &s.key.sign(&other).encode(), &s.ctx());
        let totals = s.counters.totals();
        assert_eq!(
            (totals.refused_signature, totals.refused_invalid),
            (2, 1),
            "{totals:?}"
        );
        assert_eq!(totals.assignments_verified, 0);
        let (status, _) = h.report(&s.ctx());
        let class = status.class(&thermo()).unwrap();
        assert_eq!(class.active, None);
        assert!(
            class
                .last_error
                .as_ref()
                .unwrap()
                .message
                .contains("hollow-2"),
            "{class:?}"
        );
        assert_eq!(h.refused(), 3);
        assert_eq!(h.active().count(), 0);

        install(&mut h, &mut s, "1.0.0", 20);
        let stale = h.on_assignment(
            thermo(),
            &s.key.sign(&assignment("2.0.0", 19)).encode(),
            &s.ctx(),
        );
        assert_eq!(events(&stale), [EventKind::AssignmentRejected]);
        assert_eq!(s.counters.totals().refused_stale, 1);
    }

    #[test]
    fn a_tampered_chunk_is_refused_and_counted_and_a_good_copy_still_applies() {
        let mut s = Setup::new();
        let mut h = hollow(&s);
        let a = assignment("1.0.0", 10);
        let sha = a.handler.as_ref().unwrap().module.sha256;
        h.on_assignment(thermo(), &s.key.sign(&a).encode(), &s.ctx());
        let good = chunks("1.0.0");
        let mut tampered = good[1].clone();
        tampered[7] ^= 1;
        let actions = h.on_chunk(sha, 1, &tampered, &s.ctx());
        assert_eq!(events(&actions), [EventKind::ModuleRefused]);
        h.on_chunk(sha, 0, &good[0], &s.ctx());
        h.on_chunk(sha, 2, &good[2], &s.ctx());
        let (status, _) = h.report(&s.ctx());
        let class = status.class(&thermo()).unwrap();
        assert_eq!(class.active, None, "not running on a tampered chunk");
        let pending = class.pending.as_ref().unwrap();
        assert_eq!((pending.received_chunks, pending.total_chunks), (2, 3));
        assert!(
            class
                .last_error
                .as_ref()
                .unwrap()
                .message
                .contains("chunk 1"),
            "{class:?}"
        );
        assert_eq!(s.counters.totals().chunks_refused, 1);
        assert_eq!(s.modules.verified().0, 0);

        // The retained good copy comes again (a reconnect): applied.
        let actions = h.on_chunk(sha, 1, &good[1], &s.ctx());
        assert_eq!(events(&actions), [EventKind::AssignmentApplied]);
        let (status, _) = h.report(&s.ctx());
        let class = status.class(&thermo()).unwrap();
        assert_eq!(class.active.as_ref().unwrap().sha256, sha);
        assert_eq!(class.last_error, None);
    }

    #[test]
    fn the_failing_version_is_quarantined_and_the_class_falls_back() {
        let mut s = Setup::new();
        let mut h = hollow(&s);
        install(&mut h, &mut s, "2.0.0", 10);
        install(&mut h, &mut s, "3.0.0", 11);
        s.failing = Some("thermostat@3.0.0".parse().unwrap());
        let (status, actions) = h.report(&s.ctx());
        assert_eq!(
            events(&actions),
            [
                EventKind::InteractionFailed,
                EventKind::ModuleQuarantined,
                EventKind::RolledBack
            ]
        );
        let class = status.class(&thermo()).unwrap();
        assert_eq!(class.active.as_ref().unwrap().version, "2.0.0");
        let v3 = assignment("3.0.0", 11).handler.unwrap().module.sha256;
        let stats = class.module(&v3).unwrap();
        assert!(stats.quarantined && stats.traps == 20 && stats.errors == 20);
        // Falls back once; the next status runs v2 cleanly.
        let (status, actions) = h.report(&s.ctx());
        assert!(actions.is_empty());
        let v2 = assignment("2.0.0", 10).handler.unwrap().module.sha256;
        assert_eq!(
            status.class(&thermo()).unwrap().module(&v2).unwrap().errors,
            0
        );
        let totals = s.counters.totals();
        assert_eq!((totals.quarantines, totals.faults), (1, 20));
    }

    #[test]
    fn fail_versions_parse() {
        let v = |s: &str| s.parse::<FailVersion>();
        let module = ModuleRef {
            name: "thermostat".into(),
            version: "3.0.0".into(),
            sha256: Sha256Digest::of(b"x"),
        };
        assert!(v("3.0.0").unwrap().matches(&module));
        assert!(v("thermostat@3.0.0").unwrap().matches(&module));
        assert!(!v("meter@3.0.0").unwrap().matches(&module));
        let digest = module.sha256.to_string();
        assert!(v(&digest[..12]).unwrap().matches(&module));
        assert!(
            v(&format!("sha256:{}", &digest[..20]))
                .unwrap()
                .matches(&module)
        );
        assert!(v("").is_err() && v("@3").is_err());
    }
}
