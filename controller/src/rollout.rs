//! Staged rollouts: which version each selected node of a class runs while a new version goes out
//! — shadow, canary, then growing waves, each gated by health measured from node status — and
//! when to go on, hold, or give every node the stable version back. Pure: [`decide`] is a function
//! of the class's strategy, its target handler, what is published, what nodes report, the
//! rollout's [`Record`], an operator's action and the gate's [`Window`].
//!
//! **The record is read back, not remembered.** The controller keeps one [`Record`] per class
//! retained on the cloud broker (`ef/v1/fleet/controller/rollout/<class>`), beside the assignments
//! it describes, and rebuilds it from there at start and on failover — in the cluster and in
//! standalone mode alike. It holds what cannot be derived from the assignments: the stable handler
//! to fall back to (all nodes may already run the target), the phase, the step and when it
//! started, and the last operator action carried out.
//!
//! **Which nodes are updated is sticky.** A node that holds the target stays updated while the
//! rollout goes on; a step adds nodes in a fixed order (a digest of the rollout id and the node
//! name: deterministic, so a restarted controller picks the same ones, and spread across the
//! fleet rather than alphabetical). A node that joins mid-rollout never displaces one.
//!
//! **The gate's window is in memory.** [`Window`] sums, from consecutive statuses of each node,
//! the interactions and faults of the version each node is assigned. A failover starts the window
//! again (the gate waits for its minimum again; the bake time counts from the step's recorded
//! start): conservative, never a pass on data not seen.
//!
//! **A newer spec supersedes.** A target handler other than the record's starts a new rollout at
//! once, whatever the old one's phase: its stable version is the old record's stable version (the
//! last completed one), so nodes a stuck rollout had updated go back to it unless the new rollout
//! picks them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use edgefleet_protocol::status::ClassStatus;
use edgefleet_protocol::{HandlerSpec, NodeId, Rollout, RolloutStage, Sha256Digest};
use serde::{Deserialize, Serialize};

use crate::resources::{DeadlineAction, RolloutStatus, RolloutStrategy, StepSize};

/// Defaults of a strategy's unset fields.
const CANARY_NODES: u32 = 1;
const WAVE_BASE: u32 = 1;
const WAVE_FACTOR: f64 = 2.0;
const MIN_INTERACTIONS: u64 = 100;
const MAX_FAULT_RATE_INCREASE: f64 = 0.01;
const BAKE_SECONDS: u32 = 30;
const PROGRESS_DEADLINE_SECONDS: u32 = 600;
const SHADOW_MIN_COMPARED: u64 = 100;
const SHADOW_MIN_AGREEMENT: f64 = 1.0;
/// Divergence examples a window keeps.
const EXAMPLES: usize = 3;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Steps are being taken.
    Progressing,
    /// Held: no new node gets the target until resumed.
    Paused,
    /// Every selected node has the target; it is the stable version now.
    Completed,
    /// Every selected node has the stable version back (a failed gate, an abort, an undo, a
    /// missed deadline).
    RolledBack,
    /// It failed and there is no stable version to go back to (a class's first version): the
    /// class is withdrawn from the nodes that had it.
    Failed,
}

impl Phase {
    /// The phase's name, as status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Completed => "Completed",
            Phase::RolledBack => "RolledBack",
            Phase::Failed => "Failed",
        }
    }

    /// Progressing or paused: the rollout is not over.
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused)
    }
}

/// What the controller keeps about a class's latest rollout (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The rollout's id: the target's `version-<digest prefix>`.
    pub id: String,
    /// Digest of the target handler ([`handler_digest`]).
    pub target: Sha256Digest,
    /// The target's `name version`.
    pub target_version: String,
    /// The version nodes fall back to; `None` for a class's first version.
    pub stable: Option<HandlerSpec>,
    /// The stable version before the last completed rollout, for `undo`.
    pub previous_stable: Option<HandlerSpec>,
    /// The phase.
    pub phase: Phase,
    /// The step (an index into [`steps`]).
    pub step: u32,
    /// When the step started, ms since the UNIX epoch.
    pub step_started_ms: u64,
    /// Held by an operator's `pause` or by the deadline (as opposed to `spec.rollout.paused`).
    pub held: bool,
    /// The last operator action carried out (the annotation's value).
    pub last_action: Option<String>,
    /// Why the rollout is where it is.
    pub message: String,
    /// The gate's last measurement.
    pub gate: Option<String>,
    /// The shadow step's last measurement, kept after the step.
    #[serde(default)]
    pub shadow: Option<String>,
}

/// One step of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Which.
    pub stage: RolloutStage,
    /// Nodes that run the target once the step started (for the shadow step: that run it as a
    /// shadow).
    pub nodes: usize,
}

/// The steps of a strategy over `selected` nodes: a shadow step if asked for and there is a stable
/// version to run beside, the canary, then waves until every node is covered.
pub fn steps(strategy: &RolloutStrategy, selected: usize, has_stable: bool) -> Vec<Step> {
    let canary = size(strategy.canary.as_ref(), selected, CANARY_NODES).min(selected);
    let mut steps = Vec::new();
    if strategy.shadow.is_some() && has_stable && canary > 0 {
        steps.push(Step {
            stage: RolloutStage::Shadow,
            nodes: canary,
        });
    }
    steps.push(Step {
        stage: RolloutStage::Canary,
        nodes: canary,
    });
    let waves = strategy.waves.clone().unwrap_or_default();
    let base = f64::from(waves.base.unwrap_or(WAVE_BASE).max(1));
    let factor = waves.factor.unwrap_or(WAVE_FACTOR).max(1.0);
    let cap = waves
        .cap
        .as_ref()
        .map(|c| size(Some(c), selected, 1).max(1));
    let mut covered = canary;
    let mut wave = 1u32;
    while covered < selected {
        let grown = (base * factor.powi(wave as i32 - 1)).ceil();
        let mut this = if grown >= selected as f64 {
            selected
        } else {
            grown as usize
        };
        if let Some(cap) = cap {
            this = this.min(cap);
        }
        covered = (covered + this.max(1)).min(selected);
        steps.push(Step {
            stage: RolloutStage::Wave(wave),
            nodes: covered,
        });
        wave += 1;
    }
    steps
}

fn size(step: Option<&StepSize>, selected: usize, default: u32) -> usize {
    match step {
        Some(StepSize {
            percent: Some(p), ..
        }) => (selected * (*p).min(100) as usize).div_ceil(100).max(1),
        Some(StepSize { nodes: Some(n), .. }) => *n as usize,
        _ => default as usize,
    }
}

/// Refuses a strategy no rollout could complete (the API server checks most of this at apply
/// time; standalone mode has only this).
pub fn check(strategy: &RolloutStrategy) -> Result<(), String> {
    let sizes = [
        ("canary", strategy.canary.as_ref()),
        (
            "waves.cap",
            strategy.waves.as_ref().and_then(|w| w.cap.as_ref()),
        ),
    ];
    for (name, step) in sizes {
        if let Some(step) = step {
            match (step.nodes, step.percent) {
                (Some(0), None) => return Err(format!("{name}.nodes must be at least 1")),
                (None, Some(p)) if p == 0 || p > 100 => {
                    return Err(format!("{name}.percent must be 1 to 100"));
                }
                (Some(_), None) | (None, Some(_)) => {}
                _ => return Err(format!("{name}: set exactly one of nodes and percent")),
            }
        }
    }
    if let Some(waves) = &strategy.waves {
        if waves.base == Some(0) {
            return Err("waves.base must be at least 1".into());
        }
        if let Some(factor) = waves.factor
            && !(1.0..=100.0).contains(&factor)
        {
            return Err("waves.factor must be 1 to 100 (waves must not shrink)".into());
        }
    }
    let gate = strategy.gate.clone().unwrap_or_default();
    if let Some(rate) = gate.max_fault_rate_increase
        && !(0.0..=1.0).contains(&rate)
    {
        return Err("gate.maxFaultRateIncrease is a fraction, 0 to 1".into());
    }
    if let Some(agreement) = strategy.shadow.as_ref().and_then(|s| s.min_agreement)
        && !(0.0..=1.0).contains(&agreement)
    {
        return Err("shadow.minAgreement is a fraction, 0 to 1".into());
    }
    let bake = gate.bake_seconds.unwrap_or(BAKE_SECONDS);
    let deadline = strategy
        .progress_deadline_seconds
        .unwrap_or(PROGRESS_DEADLINE_SECONDS);
    if deadline <= bake {
        return Err(format!(
            "progressDeadlineSeconds ({deadline}) must be longer than gate.bakeSeconds ({bake}), \
             or no step could ever pass"
        ));
    }
    Ok(())
}

/// The digest that tells one target handler from another (module, config and limits).
pub fn handler_digest(handler: &HandlerSpec) -> Sha256Digest {
    Sha256Digest::of(&edgefleet_protocol::codec::encode(handler))
}

/// Interactions and faults of one version over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Interactions run.
    pub interactions: u64,
    /// Of which module faults (errors that are not the handler's deliberate rejections).
    pub faults: u64,
}

impl Counts {
    fn rate(self) -> f64 {
        if self.interactions == 0 {
            0.0
        } else {
            self.faults as f64 / self.interactions as f64
        }
    }
}

/// What nodes reported during one step of one rollout (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// The rollout and step measured.
    pub rollout: String,
    /// See `rollout`.
    pub step: u32,
    /// The target, on the nodes assigned it.
    pub target: Counts,
    /// The stable version, on the nodes assigned it.
    pub stable: Counts,
    /// Shadow interactions compared, and of those agreed.
    pub compared: u64,
    /// See `compared`.
    pub agreed: u64,
    /// The latest divergences (`node device: detail`).
    pub examples: VecDeque<String>,
    /// Nodes that quarantined the target or fell back from it.
    pub failing: BTreeSet<NodeId>,
}

/// Which version a node is assigned, for the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The target.
    Target,
    /// The stable version (possibly with the target as a shadow).
    Stable,
}

impl Window {
    /// A window for step `step` of rollout `rollout`.
    pub fn new(rollout: &str, step: u32) -> Window {
        Window {
            rollout: rollout.to_string(),
            step,
            ..Window::default()
        }
    }

    /// Adds what a node's new class status says over its previous one (`None`: none, or the agent
    /// restarted, whose counters start again from zero). `assigned` is the module the node is
    /// assigned, `target` the target's.
    pub fn observe(
        &mut self,
        node: &NodeId,
        role: Role,
        assigned: Sha256Digest,
        target: Sha256Digest,
        previous: Option<&ClassStatus>,
        now: &ClassStatus,
    ) {
        if let Some(stats) = now.module(&assigned) {
            let before = previous.and_then(|p| p.module(&assigned));
            let interactions = stats
                .interactions
                .saturating_sub(before.map_or(0, |b| b.interactions));
            let faults = (stats.errors - stats.errors.min(stats.rejections))
                .saturating_sub(before.map_or(0, |b| b.errors - b.errors.min(b.rejections)));
            let counts = match role {
                Role::Target => &mut self.target,
                Role::Stable => &mut self.stable,
            };
            counts.interactions += interactions;
            counts.faults += faults;
        }
        if role == Role::Target
            && (now.module(&target).is_some_and(|m| m.quarantined)
                || now
                    .active
                    .as_ref()
                    .is_some_and(|a| a.sha256 != target && now.module(&target).is_some()))
        {
            self.failing.insert(node.clone());
        }
        if let Some(shadow) = now.shadow.as_ref().filter(|s| s.module.sha256 == target) {
            let before = previous
                .and_then(|p| p.shadow.as_ref())
                .filter(|s| s.module.sha256 == target);
            self.compared += shadow
                .compared
                .saturating_sub(before.map_or(0, |b| b.compared));
            self.agreed += shadow.agreed.saturating_sub(before.map_or(0, |b| b.agreed));
            for example in &shadow.examples {
                let seen = before.is_some_and(|b| b.examples.contains(example));
                if !seen {
                    if self.examples.len() == EXAMPLES {
                        self.examples.pop_front();
                    }
                    self.examples
                        .push_back(format!("{node} {}: {}", example.device, example.detail));
                }
            }
        }
    }
}

/// What one selected node is told to run.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRun {
    /// The handler.
    pub handler: HandlerSpec,
    /// The target, as a shadow, in the shadow step.
    pub shadow: Option<HandlerSpec>,
    /// The step it belongs to.
    pub rollout: Rollout,
}

/// One selected node, as [`decide`] sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeView<'a> {
    /// The handler published for the class on the node.
    pub published: Option<&'a HandlerSpec>,
    /// What the node reports for the class.
    pub report: Option<&'a ClassStatus>,
    /// Whether the node is online.
    pub online: bool,
}

/// What [`decide`] needs about a class.
pub struct Input<'a> {
    /// The strategy (`None`: every node at once).
    pub strategy: Option<&'a RolloutStrategy>,
    /// The handler the spec asks for.
    pub target: &'a HandlerSpec,
    /// The selected, not cordoned nodes.
    pub nodes: &'a BTreeMap<NodeId, NodeView<'a>>,
    /// The record read back, if any.
    pub record: Option<&'a Record>,
    /// The rollout-action annotation's value, if set.
    pub action: Option<&'a str>,
    /// The gate's window (ignored unless it measures the record's rollout and step).
    pub window: &'a Window,
    /// Now, ms since the UNIX epoch.
    pub now_ms: u64,
}

/// Something worth a Kubernetes Event on the class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// A Warning rather than Normal event.
    pub warning: bool,
    /// The reason (CamelCase).
    pub reason: &'static str,
    /// What happened.
    pub message: String,
}

/// What [`decide`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The record after this round.
    pub record: Record,
    /// What each selected node runs; a node left out runs nothing (a first version not yet
    /// reached, or withdrawn after a failure).
    pub runs: BTreeMap<NodeId, NodeRun>,
    /// Events.
    pub notes: Vec<Note>,
    /// The status to show.
    pub status: RolloutStatus,
}

/// One round of a class's rollout (see the module documentation).
pub fn decide(input: &Input<'_>) -> Decision {
    let digest = handler_digest(input.target);
    let target_version = format!(
        "{} {}",
        input.target.module.name, input.target.module.version
    );
    let mut notes = Vec::new();
    let mut record = match input.record {
        Some(record) if record.target == digest => record.clone(),
        previous => start(input, digest, &target_version, previous, &mut notes),
    };
    let has_strategy = input.strategy.is_some();
    let strategy = input.strategy.cloned().unwrap_or_default();
    let order = order(&record.id, input.nodes);
    let steps = match input.strategy {
        Some(strategy) => steps(strategy, order.len(), record.stable.is_some()),
        None => vec![Step {
            stage: RolloutStage::Complete,
            nodes: order.len(),
        }],
    };

    if let Some(action) = input.action
        && record.last_action.as_deref() != Some(action)
    {
        record.last_action = Some(action.to_string());
        act(&mut record, action, input, &mut notes);
    }
    if record.phase == Phase::Paused && !strategy.paused && !record.held {
        record.phase = Phase::Progressing;
        record.step_started_ms = input.now_ms;
        record.message = "resumed".into();
        notes.push(note(false, "RolloutResumed", &record));
    } else if record.phase == Phase::Progressing && strategy.paused {
        record.phase = Phase::Paused;
        record.message = "paused by spec.rollout.paused".into();
        notes.push(note(false, "RolloutPaused", &record));
    }

    let window = (input.window.rollout == record.id && input.window.step == record.step)
        .then_some(input.window);
    if record.phase == Phase::Progressing && has_strategy {
        gate(
            &mut record,
            &strategy,
            &steps,
            input,
            window,
            &order,
            &mut notes,
        );
    }
    let runs = runs(&record, &steps, input, &order);
    let status = status(&record, &steps, input, &runs, window);
    Decision {
        record,
        runs,
        notes,
        status,
    }
}

/// A new rollout of `digest`, superseding `previous`.
fn start(
    input: &Input<'_>,
    digest: Sha256Digest,
    target_version: &str,
    previous: Option<&Record>,
    notes: &mut Vec<Note>,
) -> Record {
    let id = format!(
        "{}-{}",
        input.target.module.version,
        &digest.to_string()[..8]
    );
    let stable = match previous {
        Some(previous) => previous.stable.clone(),
        // No record (a class's first rollout, or a broker that lost it): the version most
        // nodes hold, if it is not the target.
        None => most_published(input.nodes),
    };
    let previous_stable = previous.and_then(|p| p.previous_stable.clone());
    let mut record = Record {
        id,
        target: digest,
        target_version: target_version.to_string(),
        stable,
        previous_stable,
        phase: Phase::Progressing,
        step: 0,
        step_started_ms: input.now_ms,
        held: false,
        last_action: input.action.map(str::to_string),
        message: String::new(),
        gate: None,
        shadow: None,
    };
    if let Some(previous) = previous
        && previous.phase.is_active()
    {
        notes.push(Note {
            warning: false,
            reason: "RolloutSuperseded",
            message: format!(
                "rollout {} of {} superseded by {} of {target_version}",
                previous.id, previous.target_version, record.id
            ),
        });
    }
    let already = record
        .stable
        .as_ref()
        .is_some_and(|s| handler_digest(s) == digest);
    let everywhere = !input.nodes.is_empty()
        && input
            .nodes
            .values()
            .all(|n| n.published.is_some_and(|p| handler_digest(p) == digest));
    if input.strategy.is_none() || already || everywhere {
        let why = if already || everywhere {
            "every node already runs it"
        } else {
            "no rollout strategy: every node at once"
        };
        complete(&mut record, input.target, why);
        notes.push(note(false, "RolloutCompleted", &record));
    } else {
        record.message = format!(
            "started; stable version {}",
            record.stable.as_ref().map_or("none".into(), version)
        );
        notes.push(note(false, "RolloutStarted", &record));
    }
    record
}

fn complete(record: &mut Record, target: &HandlerSpec, why: &str) {
    if record.stable.as_ref() != Some(target) {
        record.previous_stable = record.stable.take();
    }
    record.stable = Some(target.clone());
    record.phase = Phase::Completed;
    record.held = false;
    record.message = format!("completed: {why}");
}

fn most_published(nodes: &BTreeMap<NodeId, NodeView<'_>>) -> Option<HandlerSpec> {
    let mut counts: BTreeMap<Sha256Digest, (usize, &HandlerSpec)> = BTreeMap::new();
    for handler in nodes.values().filter_map(|n| n.published) {
        counts
            .entry(handler_digest(handler))
            .or_insert((0, handler))
            .0 += 1;
    }
    counts
        .into_values()
        .max_by_key(|(count, _)| *count)
        .map(|(_, handler)| handler.clone())
}

fn version(handler: &HandlerSpec) -> String {
    format!("{} {}", handler.module.name, handler.module.version)
}

fn note(warning: bool, reason: &'static str, record: &Record) -> Note {
    Note {
        warning,
        reason,
        message: format!(
            "rollout {} of {}: {}",
            record.id, record.target_version, record.message
        ),
    }
}

/// Carries out an operator's action.
fn act(record: &mut Record, action: &str, input: &Input<'_>, notes: &mut Vec<Note>) {
    let verb = action.split(':').next().unwrap_or_default().trim();
    let active = record.phase.is_active();
    match verb {
        "pause" if active => {
            record.phase = Phase::Paused;
            record.held = true;
            record.message = "paused by an operator".into();
            notes.push(note(false, "RolloutPaused", record));
        }
        "resume" if record.phase == Phase::Paused => {
            record.held = false;
            // Left to the next check: spec.rollout.paused may still hold it.
        }
        "promote" if active => {
            complete(record, input.target, "promoted by an operator");
            notes.push(note(false, "RolloutPromoted", record));
        }
        "abort" | "undo" if active => roll_back(
            record,
            "RolloutAborted",
            format!("{verb} by an operator"),
            notes,
        ),
        "undo" if record.phase == Phase::Completed && record.previous_stable.is_some() => {
            record.stable = record.previous_stable.take();
            record.phase = Phase::RolledBack;
            record.message = format!(
                "undone by an operator: back to {}",
                record.stable.as_ref().map_or("none".into(), version)
            );
            notes.push(note(true, "RolloutUndone", record));
        }
        "retry" if matches!(record.phase, Phase::RolledBack | Phase::Failed) => {
            record.phase = Phase::Progressing;
            record.step = 0;
            record.step_started_ms = input.now_ms;
            record.held = false;
            record.gate = None;
            record.message = "retried by an operator".into();
            notes.push(note(false, "RolloutRetried", record));
        }
        "pause" | "resume" | "promote" | "abort" | "undo" | "retry" => notes.push(Note {
            warning: true,
            reason: "RolloutActionIgnored",
            message: format!(
                "{verb}: nothing to do while rollout {} is {}",
                record.id,
                record.phase.as_str()
            ),
        }),
        _ => notes.push(Note {
            warning: true,
            reason: "RolloutActionUnknown",
            message: format!(
                "unknown rollout action {action:?}: use pause, resume, promote, abort, undo or retry"
            ),
        }),
    }
}

fn roll_back(record: &mut Record, reason: &'static str, why: String, notes: &mut Vec<Note>) {
    record.held = false;
    if record.stable.is_some() {
        record.phase = Phase::RolledBack;
        record.message = format!(
            "rolled back to {}: {why}",
            record.stable.as_ref().map_or("none".into(), version)
        );
    } else {
        record.phase = Phase::Failed;
        record.message = format!("failed, no stable version to go back to: {why}");
    }
    notes.push(note(true, reason, record));
}

/// The order in which a rollout updates nodes (see the module documentation).
fn order(id: &str, nodes: &BTreeMap<NodeId, NodeView<'_>>) -> Vec<NodeId> {
    let mut order: Vec<(Sha256Digest, &NodeId)> = nodes
        .keys()
        .map(|n| (Sha256Digest::of(format!("{id}/{n}").as_bytes()), n))
        .collect();
    order.sort();
    order.into_iter().map(|(_, n)| n.clone()).collect()
}

/// The nodes that run the target at `step` (the sticky ones first, then in order).
fn updated(
    record: &Record,
    steps: &[Step],
    input: &Input<'_>,
    order: &[NodeId],
) -> BTreeSet<NodeId> {
    let Some(step) = steps.get(record.step as usize) else {
        return order.iter().cloned().collect();
    };
    let mut updated: BTreeSet<NodeId> = order
        .iter()
        .filter(|n| input.nodes[*n].published.is_some_and(|p| p == input.target))
        .cloned()
        .collect();
    let wanted = if step.stage == RolloutStage::Shadow {
        0
    } else {
        step.nodes
    };
    for node in order {
        if updated.len() >= wanted {
            break;
        }
        updated.insert(node.clone());
    }
    updated
}

/// Evaluates the current step's gate and moves on, rolls back, or waits.
fn gate(
    record: &mut Record,
    strategy: &RolloutStrategy,
    steps: &[Step],
    input: &Input<'_>,
    window: Option<&Window>,
    order: &[NodeId],
    notes: &mut Vec<Note>,
) {
    let Some(step) = steps.get(record.step as usize).copied() else {
        complete(record, input.target, "every step passed");
        notes.push(note(false, "RolloutCompleted", record));
        return;
    };
    let empty = Window::default();
    let window = window.unwrap_or(&empty);
    let gate = strategy.gate.clone().unwrap_or_default();
    let elapsed_s = input.now_ms.saturating_sub(record.step_started_ms) / 1000;
    let bake = u64::from(gate.bake_seconds.unwrap_or(BAKE_SECONDS));
    let deadline = u64::from(
        strategy
            .progress_deadline_seconds
            .unwrap_or(PROGRESS_DEADLINE_SECONDS),
    );
    let step_name = step_name_of(record.step, steps);

    if let Some(node) = window.failing.first() {
        record.gate = Some(format!(
            "{} node(s) quarantined the target or fell back from it (first: {node})",
            window.failing.len()
        ));
        let why = format!(
            "step {step_name} failed: {}",
            record.gate.as_deref().unwrap_or_default()
        );
        return roll_back(record, "RolloutFailed", why, notes);
    }
    let (measured, verdict) = if step.stage == RolloutStage::Shadow {
        let shadow = strategy.shadow.clone().unwrap_or_default();
        let min = shadow.min_compared.unwrap_or(SHADOW_MIN_COMPARED);
        let wanted = shadow.min_agreement.unwrap_or(SHADOW_MIN_AGREEMENT);
        let agreement = if window.compared == 0 {
            1.0
        } else {
            window.agreed as f64 / window.compared as f64
        };
        let examples: Vec<&str> = window.examples.iter().map(String::as_str).collect();
        let measured = format!(
            "shadow agreement {:.1}% ({}/{} compared, {min} needed, {:.1}% required){}",
            agreement * 100.0,
            window.agreed,
            window.compared,
            wanted * 100.0,
            if examples.is_empty() {
                String::new()
            } else {
                format!("; divergences: {}", examples.join("; "))
            }
        );
        let verdict = if window.compared < min {
            Verdict::Wait
        } else if agreement + 1e-9 < wanted {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        (measured, verdict)
    } else {
        let min = gate.min_interactions.unwrap_or(MIN_INTERACTIONS);
        let allowed = gate
            .max_fault_rate_increase
            .unwrap_or(MAX_FAULT_RATE_INCREASE);
        let (t, s) = (window.target, window.stable);
        let measured = format!(
            "target fault rate {:.2}% ({}/{}), stable {:.2}% ({}/{}), allowed +{:.2} points; {} of {min} interactions",
            t.rate() * 100.0,
            t.faults,
            t.interactions,
            s.rate() * 100.0,
            s.faults,
            s.interactions,
            allowed * 100.0,
            t.interactions
        );
        let verdict = if t.interactions < min {
            Verdict::Wait
        } else if t.rate() > s.rate() + allowed {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        (measured, verdict)
    };
    record.gate = Some(measured.clone());
    if step.stage == RolloutStage::Shadow {
        record.shadow = Some(measured.clone());
    }
    match verdict {
        Verdict::Fail => {
            let why = format!("step {step_name} failed its gate: {measured}");
            roll_back(record, "RolloutFailed", why, notes)
        }
        Verdict::Pass if elapsed_s >= bake && step_reached(step, input, order) => {
            record.step += 1;
            record.step_started_ms = input.now_ms;
            if record.step as usize >= steps.len() {
                complete(
                    record,
                    input.target,
                    &format!("step {step_name} passed: {measured}"),
                );
                notes.push(note(false, "RolloutCompleted", record));
            } else {
                record.message = format!(
                    "step {step_name} passed ({measured}); now {}",
                    step_name_of(record.step, steps)
                );
                record.gate = None;
                notes.push(note(false, "RolloutStepPassed", record));
            }
        }
        _ if elapsed_s >= deadline => {
            let why =
                format!("step {step_name} missed its {deadline} s progress deadline ({measured})");
            match strategy.on_deadline.unwrap_or_default() {
                DeadlineAction::Rollback => {
                    roll_back(record, "RolloutDeadlineExceeded", why, notes)
                }
                DeadlineAction::Pause => {
                    record.phase = Phase::Paused;
                    record.held = true;
                    record.message = why;
                    notes.push(note(true, "RolloutDeadlineExceeded", record));
                }
            }
        }
        _ => {
            record.message = format!("step {step_name}: waiting for the gate ({measured})");
        }
    }
}

enum Verdict {
    Wait,
    Pass,
    Fail,
}

/// Whether every online node of the step reports what the step gave it.
fn step_reached(step: Step, input: &Input<'_>, order: &[NodeId]) -> bool {
    let target_sha = input.target.module.sha256;
    if step.stage == RolloutStage::Shadow {
        return order.iter().take(step.nodes).all(|n| {
            let view = &input.nodes[n];
            !view.online
                || view
                    .report
                    .and_then(|r| r.shadow.as_ref())
                    .is_some_and(|s| s.module.sha256 == target_sha)
        });
    }
    order
        .iter()
        .filter(|n| input.nodes[*n].published.is_some_and(|p| p == input.target))
        .all(|n| {
            let view = &input.nodes[n];
            !view.online
                || view
                    .report
                    .and_then(|r| r.active.as_ref())
                    .is_some_and(|a| a.sha256 == target_sha)
        })
}

fn step_name_of(step: u32, steps: &[Step]) -> String {
    match steps.get(step as usize) {
        Some(s) => format!("{}/{} {}", step + 1, steps.len(), s.stage),
        None => format!("{}/{}", steps.len(), steps.len()),
    }
}

/// What each node runs in the record's phase.
fn runs(
    record: &Record,
    steps: &[Step],
    input: &Input<'_>,
    order: &[NodeId],
) -> BTreeMap<NodeId, NodeRun> {
    let tag = |stage| Rollout {
        id: record.id.clone(),
        stage,
    };
    let target = |stage| NodeRun {
        handler: input.target.clone(),
        shadow: None,
        rollout: tag(stage),
    };
    let mut runs = BTreeMap::new();
    match record.phase {
        Phase::Completed => {
            for node in order {
                runs.insert(node.clone(), target(RolloutStage::Complete));
            }
        }
        Phase::RolledBack => {
            if let Some(stable) = &record.stable {
                for node in order {
                    runs.insert(
                        node.clone(),
                        NodeRun {
                            handler: stable.clone(),
                            shadow: None,
                            rollout: tag(RolloutStage::Rollback),
                        },
                    );
                }
            }
        }
        Phase::Failed => {}
        Phase::Progressing | Phase::Paused => {
            let updated = updated(record, steps, input, order);
            let step = steps.get(record.step as usize).copied();
            let stage_of = |node: &NodeId| {
                // The step at which the node joined: its position in the order.
                let position = order.iter().position(|n| n == node).unwrap_or(0);
                steps
                    .iter()
                    .find(|s| s.stage != RolloutStage::Shadow && position < s.nodes)
                    .map_or(RolloutStage::Complete, |s| s.stage)
            };
            let shadowed: BTreeSet<&NodeId> = match step {
                Some(s) if s.stage == RolloutStage::Shadow => order.iter().take(s.nodes).collect(),
                _ => BTreeSet::new(),
            };
            for node in order {
                if updated.contains(node) {
                    runs.insert(node.clone(), target(stage_of(node)));
                } else if let Some(stable) = &record.stable {
                    let shadow = shadowed.contains(node).then(|| input.target.clone());
                    let stage = if shadow.is_some() {
                        RolloutStage::Shadow
                    } else {
                        RolloutStage::Canary
                    };
                    runs.insert(
                        node.clone(),
                        NodeRun {
                            handler: stable.clone(),
                            shadow,
                            rollout: tag(stage),
                        },
                    );
                }
            }
        }
    }
    runs
}

/// The status an operator reads.
fn status(
    record: &Record,
    steps: &[Step],
    input: &Input<'_>,
    runs: &BTreeMap<NodeId, NodeRun>,
    window: Option<&Window>,
) -> RolloutStatus {
    let target_sha = input.target.module.sha256;
    let mut status = RolloutStatus {
        id: record.id.clone(),
        phase: record.phase.as_str().to_string(),
        step: match record.phase {
            Phase::Completed => format!("{}/{} complete", steps.len(), steps.len()),
            _ => step_name_of(record.step, steps),
        },
        stable_version: record.stable.as_ref().map(version),
        target_version: record.target_version.clone(),
        gate: record.gate.clone(),
        shadow: record.shadow.clone(),
        message: record.message.clone(),
        step_started_at: Some(crate::status::time(record.step_started_ms).0.to_string()),
        last_action: record.last_action.clone(),
        ..RolloutStatus::default()
    };
    for (node, view) in input.nodes {
        let wanted = runs.get(node);
        let on_target = wanted.is_some_and(|r| &r.handler == input.target);
        let active = view
            .report
            .and_then(|r| r.active.as_ref())
            .map(|a| a.sha256);
        let failing = window.is_some_and(|w| w.failing.contains(node))
            || view
                .report
                .and_then(|r| r.module(&target_sha))
                .is_some_and(|m| m.quarantined);
        if on_target {
            status.updated_nodes += 1;
            if failing {
                status.failing_nodes += 1;
            } else if active == Some(target_sha) {
                status.healthy_nodes += 1;
            }
        }
        let reached = match wanted {
            Some(run) => active == Some(run.handler.module.sha256),
            None => active.is_none(),
        };
        if !reached {
            status.pending_nodes += 1;
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Gate, ShadowStep, Waves};
    use edgefleet_protocol::status::ModuleStats;
    use edgefleet_protocol::{ClassId, ClassLimits, ModuleManifest};

    fn handler(version: &str) -> HandlerSpec {
        HandlerSpec {
            module: ModuleManifest::for_blob(
                "thermostat",
                version,
                1,
                version.as_bytes(),
                16 * 1024,
            )
            .unwrap(),
            config: Vec::new(),
            limits: ClassLimits::default(),
        }
    }

    fn strategy() -> RolloutStrategy {
        RolloutStrategy {
            canary: Some(StepSize {
                nodes: Some(1),
                percent: None,
            }),
            waves: Some(Waves {
                base: Some(2),
                factor: Some(2.0),
                cap: None,
            }),
            gate: Some(Gate {
                min_interactions: Some(10),
                max_fault_rate_increase: Some(0.05),
                bake_seconds: Some(5),
            }),
            progress_deadline_seconds: Some(60),
            ..RolloutStrategy::default()
        }
    }

    fn node(i: usize) -> NodeId {
        NodeId::new(format!("edge-{i}")).unwrap()
    }

    fn class_status(active: &HandlerSpec, interactions: u64, errors: u64) -> ClassStatus {
        ClassStatus {
            class: ClassId::new("thermo").unwrap(),
            generation: Some(1),
            rollout: None,
            active: Some(active.module.reference()),
            previous: None,
            pending: None,
            last_error: None,
            active_devices: 1,
            seen_devices: 1,
            interactions_per_sec: 1.0,
            modules: vec![ModuleStats {
                module: active.module.reference(),
                interactions,
                errors,
                traps: errors,
                timeouts: 0,
                rejections: 0,
                quarantined: false,
            }],
            shadow: None,
        }
    }

    /// A fleet of `n` nodes; each round publishes what the decision says and the nodes report it.
    struct Sim {
        target: HandlerSpec,
        published: BTreeMap<NodeId, HandlerSpec>,
        reports: BTreeMap<NodeId, ClassStatus>,
        record: Option<Record>,
        window: Window,
        strategy: Option<RolloutStrategy>,
        action: Option<String>,
        now_ms: u64,
        notes: Vec<Note>,
    }

    impl Sim {
        fn new(n: usize, stable: &HandlerSpec, target: HandlerSpec) -> Sim {
            let published: BTreeMap<NodeId, HandlerSpec> =
                (0..n).map(|i| (node(i), stable.clone())).collect();
            let reports = published
                .iter()
                .map(|(n, h)| (n.clone(), class_status(h, 0, 0)))
                .collect();
            Sim {
                target,
                published,
                reports,
                record: None,
                window: Window::default(),
                strategy: Some(strategy()),
                action: None,
                now_ms: 1_000_000,
                notes: Vec::new(),
            }
        }

        fn round(&mut self) -> Decision {
            let views: BTreeMap<NodeId, NodeView<'_>> = self
                .published
                .keys()
                .map(|n| {
                    (
                        n.clone(),
                        NodeView {
                            published: self.published.get(n),
                            report: self.reports.get(n),
                            online: true,
                        },
                    )
                })
                .collect();
            let decision = decide(&Input {
                strategy: self.strategy.as_ref(),
                target: &self.target,
                nodes: &views,
                record: self.record.as_ref(),
                action: self.action.as_deref(),
                window: &self.window,
                now_ms: self.now_ms,
            });
            self.record = Some(decision.record.clone());
            self.notes.extend(decision.notes.clone());
            for (node, run) in &decision.runs {
                self.published.insert(node.clone(), run.handler.clone());
                self.reports
                    .insert(node.clone(), class_status(&run.handler, 0, 0));
            }
            if self.window.rollout != decision.record.id || self.window.step != decision.record.step
            {
                self.window = Window::new(&decision.record.id, decision.record.step);
            }
            decision
        }

        /// Every updated node runs `interactions` with `faults`, stable ones the same without.
        fn traffic(&mut self, interactions: u64, faults: u64) {
            let record = self.record.clone().unwrap();
            for (node, handler) in &self.published {
                let role = if handler_digest(handler) == record.target {
                    Role::Target
                } else {
                    Role::Stable
                };
                let f = if role == Role::Target { faults } else { 0 };
                let now = class_status(handler, interactions, f);
                self.window.observe(
                    node,
                    role,
                    handler.module.sha256,
                    self.target.module.sha256,
                    Some(&class_status(handler, 0, 0)),
                    &now,
                );
                self.reports.insert(node.clone(), now);
            }
        }

        fn on_target(&self) -> usize {
            self.published
                .values()
                .filter(|h| **h == self.target)
                .count()
        }

        fn reasons(&self) -> Vec<&'static str> {
            self.notes.iter().map(|n| n.reason).collect()
        }
    }

    #[test]
    fn waves_grow_from_the_canary_and_cover_every_node() {
        let steps = steps(&strategy(), 10, true);
        let covered: Vec<usize> = steps.iter().map(|s| s.nodes).collect();
        assert_eq!(covered, vec![1, 3, 7, 10]);
        assert_eq!(steps[0].stage, RolloutStage::Canary);
        assert_eq!(steps[3].stage, RolloutStage::Wave(3));
        let mut capped = strategy();
        capped.waves.as_mut().unwrap().cap = Some(StepSize {
            nodes: None,
            percent: Some(20),
        });
        let covered: Vec<usize> = super::steps(&capped, 10, true)
            .iter()
            .map(|s| s.nodes)
            .collect();
        assert_eq!(covered, vec![1, 3, 5, 7, 9, 10]);
        let mut shadow = strategy();
        shadow.shadow = Some(ShadowStep::default());
        assert_eq!(
            super::steps(&shadow, 10, true)[0].stage,
            RolloutStage::Shadow
        );
        // Nothing to run beside on a first version.
        assert_eq!(
            super::steps(&shadow, 10, false)[0].stage,
            RolloutStage::Canary
        );
        assert_eq!(super::steps(&strategy(), 1, true).len(), 1);
    }

    #[test]
    fn impossible_strategies_are_refused() {
        assert_eq!(check(&strategy()), Ok(()));
        let mut s = strategy();
        s.progress_deadline_seconds = Some(5);
        assert!(check(&s).unwrap_err().contains("bakeSeconds"));
        let mut s = strategy();
        s.waves.as_mut().unwrap().factor = Some(0.5);
        assert!(check(&s).unwrap_err().contains("shrink"));
        let mut s = strategy();
        s.canary = Some(StepSize {
            nodes: Some(1),
            percent: Some(5),
        });
        assert!(check(&s).unwrap_err().contains("exactly one"));
    }

    #[test]
    fn a_healthy_version_goes_through_canary_and_waves_to_completed() {
        let (v1, v2) = (handler("1.0.0"), handler("2.0.0"));
        let mut sim = Sim::new(10, &v1, v2.clone());
        let d = sim.round();
        assert_eq!(d.record.phase, Phase::Progressing);
        assert_eq!(d.status.step, "1/4 canary");
        assert_eq!(sim.on_target(), 1);
        // The gate waits for its interactions and its bake time.
        sim.traffic(5, 0);
        sim.now_ms += 10_000;
        assert_eq!(sim.round().record.step, 0);
        sim.traffic(20, 0);
        assert_eq!(sim.round().record.step, 1);
        assert_eq!(sim.on_target(), 3);
        for expected in [7, 10] {
            sim.now_ms += 10_000;
            sim.traffic(20, 0);
            sim.round();
            assert_eq!(sim.on_target(), expected);
        }
        sim.now_ms += 10_000;
        sim.traffic(20, 0);
        let d = sim.round();
        assert_eq!(d.record.phase, Phase::Completed, "{}", d.record.message);
        assert_eq!(d.record.stable.as_ref(), Some(&v2));
        assert_eq!(d.record.previous_stable.as_ref(), Some(&v1));
        assert_eq!(d.status.updated_nodes, 10);
        assert_eq!(d.status.healthy_nodes, 10);
        assert_eq!(
            sim.reasons(),
            vec![
                "RolloutStarted",
                "RolloutStepPassed",
                "RolloutStepPassed",
                "RolloutStepPassed",
                "RolloutCompleted"
            ]
        );
        // Another round changes nothing.
        assert_eq!(sim.round().record.phase, Phase::Completed);
        assert_eq!(sim.notes.len(), 5);
    }

    #[test]
    fn a_version_that_faults_fails_its_canary_and_every_node_gets_the_stable_one_back() {
        let (v1, v2) = (handler("1.0.0"), handler("2.0.0"));
        let mut sim = Sim::new(10, &v1, v2);
        sim.round();
        sim.traffic(40, 10);
        let d = sim.round();
        assert_eq!(d.record.phase, Phase::RolledBack);
        assert!(
            d.record.message.contains("failed its gate"),
            "{}",
            d.record.message
        );
        assert!(d.status.gate.unwrap().contains("25.00% (10/40)"));
        assert_eq!(sim.on_target(), 0);
        assert!(
            d.runs
                .values()
                .all(|r| r.handler == v1 && r.rollout.stage == RolloutStage::Rollback)
        );
        assert!(
            sim.notes
                .iter()
                .any(|n| n.warning && n.reason == "RolloutFailed")
        );
    }

    #[test]
    fn a_quarantine_fails_the_step_at_once() {
        let (v1, v2) = (handler("1.0.0"), handler("2.0.0"));
        let mut sim = Sim::new(4, &v1, v2.clone());
        sim.round();
        let canary = sim
            .published
            .iter()
            .find(|(_, h)| **h == v2)
            .map(|(n, _)| n.clone())
            .unwrap();
        let mut quarantined = class_status(&v1, 3, 0);
        quarantined.modules.push(ModuleStats {
            quarantined: true,
            ..class_status(&v2, 3, 3).modules[0].clone()
        });
        sim.window.observe(
            &canary,
            Role::Target,
            v2.module.sha256,
            v2.module.sha256,
            None,
            &quarantined,
        );
        assert_eq!(sim.round().record.phase, Phase::RolledBack);
    }

    #[test]
    fn operators_pause_resume_promote_abort_undo_and_retry() {
        let (v1, v2) = (handler("1.0.0"), handler("2.0.0"));
        let mut sim = Sim::new(10, &v1, v2.clone());
        sim.round();
        sim.action = Some("pause:1".into());
        assert_eq!(sim.round().record.phase, Phase::Paused);
        sim.traffic(50, 0);
        sim.now_ms += 60_000;
        assert_eq!(
            sim.round().record.phase,
            Phase::Paused,
            "a paused rollout takes no step"
        );
        sim.action = Some("resume:2".into());
        assert_eq!(sim.round().record.phase, Phase::Progressing);
        // spec.rollout.paused holds it too.
        sim.strategy.as_mut().unwrap().paused = true;
        assert_eq!(sim.round().record.phase, Phase::Paused);
        sim.strategy.as_mut().unwrap().paused = false;
        assert_eq!(sim.round().record.phase, Phase::Progressing);
        sim.action = Some("promote:3".into());
        let d = sim.round();
        assert_eq!(d.record.phase, Phase::Completed);
        assert_eq!(sim.on_target(), 10);
        // The same value again is not a new action.
        assert_eq!(sim.round().record.phase, Phase::Completed);
        sim.action = Some("undo:4".into());
        let d = sim.round();
        assert_eq!(d.record.phase, Phase::RolledBack);
        assert!(sim.published.values().all(|h| *h == v1));
        sim.action = Some("retry:5".into());
        let d = sim.round();
        assert_eq!(d.record.phase, Phase::Progressing);
        assert_eq!(sim.on_target(), 1);
        sim.action = Some("abort:6".into());
        assert_eq!(sim.round().record.phase, Phase::RolledBack);
        assert_eq!(sim.on_target(), 0);
        sim.action = Some("dance".into());
        sim.round();
        assert_eq!(sim.notes.last().unwrap().reason, "RolloutActionUnknown");
    }

    #[test]
    fn a_stuck_rollout_misses_its_deadline_and_a_newer_spec_supersedes_any() {
        let (v1, v2, v3) = (handler("1.0.0"), handler("2.0.0"), handler("3.0.0"));
        let mut sim = Sim::new(10, &v1, v2);
        sim.round();
        sim.now_ms += 61_000;
        let d = sim.round();
        assert_eq!(d.record.phase, Phase::RolledBack);
        assert_eq!(sim.notes.last().unwrap().reason, "RolloutDeadlineExceeded");

        let mut sim = Sim::new(10, &v1, handler("2.0.0"));
        sim.round();
        sim.traffic(20, 0);
        sim.now_ms += 10_000;
        sim.round();
        assert_eq!(sim.on_target(), 3);
        sim.target = v3.clone();
        let d = sim.round();
        assert_eq!(
            d.record.stable.as_ref(),
            Some(&v1),
            "the last completed version"
        );
        assert_eq!(d.record.step, 0);
        assert_eq!(sim.on_target(), 1);
        assert!(sim.published.values().all(|h| *h == v1 || *h == v3));
        assert!(sim.reasons().contains(&"RolloutSuperseded"));
    }

    #[test]
    fn the_shadow_step_runs_the_target_beside_the_stable_version_and_gates_on_agreement() {
        let (v1, v2) = (handler("1.0.0"), handler("2.0.0"));
        let mut sim = Sim::new(4, &v1, v2.clone());
        sim.strategy.as_mut().unwrap().shadow = Some(ShadowStep {
            min_compared: Some(10),
            min_agreement: Some(0.99),
        });
        let d = sim.round();
        let shadowed: Vec<&NodeRun> = d.runs.values().filter(|r| r.shadow.is_some()).collect();
        assert_eq!(shadowed.len(), 1);
        assert_eq!(shadowed[0].handler, v1);
        assert_eq!(shadowed[0].rollout.stage, RolloutStage::Shadow);
        assert_eq!(sim.on_target(), 0);
        sim.window.compared = 20;
        sim.window.agreed = 15;
        sim.window
            .examples
            .push_back("edge-1 t-1: commands differ".into());
        let d = sim.round();
        assert_eq!(d.record.phase, Phase::RolledBack);
        assert!(d.record.message.contains("75.0%"), "{}", d.record.message);
        assert!(d.record.message.contains("commands differ"));
    }

    #[test]
    fn the_window_adds_differences_between_statuses_and_sees_quarantines_and_fallbacks() {
        let (v1, v2) = (handler("1.0.0"), handler("2.0.0"));
        let (a, b) = (node(0), node(1));
        let mut w = Window::new("r", 1);
        let (t, s) = (v2.module.sha256, v1.module.sha256);
        // The first status of an agent run counts whole; later ones by their difference.
        w.observe(&a, Role::Target, t, t, None, &class_status(&v2, 10, 1));
        w.observe(
            &a,
            Role::Target,
            t,
            t,
            Some(&class_status(&v2, 10, 1)),
            &class_status(&v2, 25, 2),
        );
        w.observe(&b, Role::Stable, s, t, None, &class_status(&v1, 40, 0));
        assert_eq!(
            w.target,
            Counts {
                interactions: 25,
                faults: 2
            }
        );
        assert_eq!(w.stable.interactions, 40);
        assert!(w.failing.is_empty());
        // Rejections are the device's fault, not the module's.
        let mut rejecting = class_status(&v2, 35, 12);
        rejecting.modules[0].rejections = 10;
        rejecting.modules[0].traps = 2;
        w.observe(
            &a,
            Role::Target,
            t,
            t,
            Some(&class_status(&v2, 25, 2)),
            &rejecting,
        );
        assert_eq!(w.target.faults, 2);
        // A node that runs the stable version while it reports the target's stats fell back.
        let mut fell_back = class_status(&v1, 1, 0);
        fell_back
            .modules
            .push(class_status(&v2, 30, 30).modules[0].clone());
        w.observe(&b, Role::Target, t, t, None, &fell_back);
        assert_eq!(w.failing.iter().collect::<Vec<_>>(), vec![&b]);
    }

    #[test]
    fn without_a_strategy_every_node_gets_the_version_at_once() {
        let (v1, v2) = (handler("1.0.0"), handler("2.0.0"));
        let mut sim = Sim::new(5, &v1, v2.clone());
        sim.strategy = None;
        let d = sim.round();
        assert_eq!(d.record.phase, Phase::Completed);
        assert_eq!(sim.on_target(), 5);
        assert_eq!(d.record.previous_stable, Some(v1));
    }
}
