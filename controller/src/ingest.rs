//! Node statuses and events from the cloud broker, turned into EdgeNode status writes at a bounded
//! rate: a pure state machine (no I/O, no clock: every call is given `now_ms`), in the manner of
//! rumqttc's `MqttState`. The caller feeds it what the broker delivers ([`NodeTable::observe_status`],
//! [`NodeTable::observe_event`]), asks it what to write ([`NodeTable::tick`]), writes that by
//! server-side apply, and reports how it went ([`NodeTable::written`], [`NodeTable::failed`]).
//!
//! It owns three things: the latest report of every node (which the rest of the controller reads
//! through [`NodeTable::reports`] to compute DeviceClass status), whether each node is online (its
//! own word, or silence: no status for [`WritePolicy::stale_after_ms`]), and the pacing of writes.
//!
//! **Why pacing.** 10,000 nodes reporting every 10 s are 1,000 statuses a second; written as they
//! come they would be 1,000 API writes a second. So a status only changes what *should* be written
//! (the node's desired [`EdgeNodeStatus`], from the pure [`edge_node_status`]), and writes go out
//! within a global budget ([`WritePolicy::writes_per_s`], a token bucket holding one second's
//! worth), one in flight per node at most:
//!
//! - a **significant** change — online ↔ offline (silence included), the set of classes or their
//!   active or pending versions, a class's last error, a version quarantined, a link up or down,
//!   the `Ready`/`Degraded` conditions changing, a failure told by an event — is due at once, and
//!   significant writes go first, oldest change first;
//! - a **steady** change (counters, rates, devices, `lastSeen`, download progress) is due when the
//!   node's last write is [`WritePolicy::steady_interval_ms`] old; every status that arrives in
//!   between only replaces what the next write carries (coalesced). Due steady writes go oldest
//!   write first, so with more nodes than the budget can refresh every interval each node is
//!   refreshed every `nodes / writes_per_s` seconds instead, round robin;
//! - a failed write is retried after [`WritePolicy::retry_after_ms`], doubling to
//!   [`WritePolicy::retry_max_ms`], and stays due until it succeeds.
//!
//! **Stable output.** [`edge_node_status`] depends on the report only (never on when it was
//! received, unless the node's clock runs ahead of the controller's), and conditions keep their
//! `lastTransitionTime` while their status stays, taking the report's time when it changes: two
//! identical statuses give identical EdgeNode statuses, so a change that is not one is never
//! written, and a restarted controller that is told what the API server holds
//! ([`NodeTable::known`]) writes nothing for the retained statuses it reads again.
//!
//! **Ordering.** Retained statuses come again on every reconnect, and a last will is published by
//! the broker with the timestamps of the agent's start. A status is taken when it is from a newer
//! agent run (`started_at_ms`), when it is an offline status (last will or shutdown) of the run
//! held, or when it is newer (`updated_at_ms`) than the held one; anything else — a duplicate, a
//! redelivery, a reordered older status — is ignored and does not count as hearing from the node.
//! An offline status without classes (the will) keeps the per-class data of the last report, as
//! the protocol asks (`edgefleet_protocol::status`).
//!
//! **Events** ([`NodeTable::observe_event`]) become Kubernetes Events at most once per (node, kind)
//! per [`WritePolicy::event_interval_ms`] and [`WritePolicy::events_per_s`] over the fleet; the
//! rest are counted, and the next one that passes says how many of its kind were dropped. An event
//! that tells of a failure makes the node's pending change significant.

use std::collections::{BTreeMap, BTreeSet};

use edgefleet_protocol::status::{ClassStatus, LinkState, LinkStatus, ModuleStats};
use edgefleet_protocol::{
    AgentEvent, ClassId, DeviceId, EventKind, NodeId, NodeState, NodeStatus, Sha256Digest,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use crate::resources::{EdgeNodeStatus, NodeClassStatus, NodeModuleStatus};
use crate::status::{RECENT_ERROR_MS, time};

/// How status writes and events are paced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritePolicy {
    /// A node's steady changes (counters, rates) are written at most this often, in ms.
    pub steady_interval_ms: u64,
    /// A node that was online and sent no status for this long is offline (reason `NoStatus`), in
    /// ms. Agents report every 10 s: this is four reports missed and some slack.
    pub stale_after_ms: u64,
    /// The API write budget over every node, per second (at least 1); up to one second's worth may
    /// go at once.
    pub writes_per_s: u32,
    /// The wait before writing again after a failed write, in ms; doubled at each failure in a row.
    pub retry_after_ms: u64,
    /// The longest wait between retries, in ms.
    pub retry_max_ms: u64,
    /// At most one Kubernetes Event per node and event kind this often, in ms.
    pub event_interval_ms: u64,
    /// At most this many Kubernetes Events per second over every node (at least 1).
    pub events_per_s: u32,
}

impl Default for WritePolicy {
    fn default() -> Self {
        WritePolicy {
            steady_interval_ms: 30_000,
            stale_after_ms: 45_000,
            writes_per_s: 20,
            retry_after_ms: 1_000,
            retry_max_ms: 60_000,
            event_interval_ms: 60_000,
            events_per_s: 10,
        }
    }
}

/// Whether a node is online, as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Presence {
    /// Its last status says online and came less than [`WritePolicy::stale_after_ms`] ago.
    Online,
    /// Its last status says offline: its last will, or a clean shutdown.
    Offline,
    /// Its last status says online, but none came for [`WritePolicy::stale_after_ms`].
    Silent,
}

impl Presence {
    /// What a status says, before any silence.
    pub fn of(status: &NodeStatus) -> Presence {
        match status.state {
            NodeState::Online => Presence::Online,
            NodeState::Offline => Presence::Offline,
        }
    }

    /// Online.
    pub fn is_online(self) -> bool {
        self == Presence::Online
    }

    /// `online`, `offline` or `silent` (a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Offline => "offline",
            Presence::Silent => "silent",
        }
    }
}

/// One EdgeNode status write to make now.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// The node (the EdgeNode's name).
    pub node: NodeId,
    /// The whole status to apply.
    pub status: EdgeNodeStatus,
    /// Whether it carries a significant change (or only steady ones).
    pub significant: bool,
}

/// An agent event that should become a Kubernetes Event on the node's EdgeNode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// The node.
    pub node: NodeId,
    /// What happened (the Event's `reason`, [`EventKind::as_str`]).
    pub kind: EventKind,
    /// A `Warning` rather than a `Normal` Event ([`EventKind::is_warning`]).
    pub warning: bool,
    /// When it happened on the node, ms since the UNIX epoch.
    pub at_ms: u64,
    /// The class concerned, if any.
    pub class: Option<ClassId>,
    /// The device concerned, if any.
    pub device: Option<DeviceId>,
    /// The module concerned, if any.
    pub module: Option<Sha256Digest>,
    /// The assignment generation concerned, if any.
    pub generation: Option<u64>,
    /// What happened, from the agent.
    pub detail: String,
    /// Events of this node and kind dropped by throttling since the last one that passed.
    pub suppressed: u64,
}

impl NodeEvent {
    /// The Event's `type`: `Warning` or `Normal`.
    pub fn event_type(&self) -> &'static str {
        if self.warning { "Warning" } else { "Normal" }
    }

    /// The Event's `reason`.
    pub fn reason(&self) -> &'static str {
        self.kind.as_str()
    }

    /// The Event's `message`: the detail, what it concerns, and how many like it were dropped.
    pub fn message(&self) -> String {
        let mut message = self.detail.clone();
        let mut about = Vec::new();
        if let Some(class) = &self.class {
            about.push(format!("class {class}"));
        }
        if let Some(device) = &self.device {
            about.push(format!("device {device}"));
        }
        if let Some(module) = &self.module {
            about.push(format!("module {module}"));
        }
        if let Some(generation) = self.generation {
            about.push(format!("generation {generation}"));
        }
        if !about.is_empty() {
            message.push_str(&format!(" ({})", about.join(", ")));
        }
        if self.suppressed > 0 {
            message.push_str(&format!(
                "; {} more {} events were not recorded",
                self.suppressed,
                self.kind.as_str()
            ));
        }
        message
    }
}

/// What the table has done since it was made, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Statuses observed.
    pub statuses: u64,
    /// Of which ignored: duplicates, redeliveries, reordered older ones.
    pub statuses_ignored: u64,
    /// Statuses that changed what a node's next write carries while an earlier change was still
    /// waiting: each saved a write.
    pub coalesced: u64,
    /// Writes handed out carrying a significant change.
    pub writes_significant: u64,
    /// Writes handed out carrying steady changes only.
    pub writes_steady: u64,
    /// Writes reported failed.
    pub writes_failed: u64,
    /// Times a node went silent (online, then no status for `stale_after_ms`).
    pub went_silent: u64,
    /// Events observed.
    pub events: u64,
    /// Of which passed on to become Kubernetes Events.
    pub events_passed: u64,
    /// Of which dropped by throttling.
    pub events_dropped: u64,
}

/// Nodes by [`Presence`], for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceCounts {
    /// Online.
    pub online: usize,
    /// Offline by their own word.
    pub offline: usize,
    /// Offline by silence.
    pub silent: usize,
}

/// Every node's latest report and the pacing of its EdgeNode status writes (see the module
/// documentation).
#[derive(Debug)]
pub struct NodeTable {
    policy: WritePolicy,
    nodes: BTreeMap<NodeId, Entry>,
    /// What the API server holds for nodes not heard from yet ([`NodeTable::known`]).
    seeds: BTreeMap<NodeId, (EdgeNodeStatus, u64)>,
    queues: Queues,
    /// (when it goes silent, node) for every online node.
    deadlines: BTreeSet<(u64, NodeId)>,
    marks: BTreeMap<NodeId, Vec<EventMark>>,
    write_budget: Bucket,
    event_budget: Bucket,
    counters: Counters,
}

#[derive(Debug)]
struct Entry {
    /// The latest report as taken (a last will merged into the report before it); its state is
    /// `Offline` while the node is silent.
    report: NodeStatus,
    received_at_ms: u64,
    silent: bool,
    /// What the EdgeNode's status should be now.
    desired: EdgeNodeStatus,
    /// What the API server holds, as far as this table knows.
    written: Option<EdgeNodeStatus>,
    /// When the last write succeeded (or the server's status became known).
    written_at_ms: u64,
    in_flight: Option<InFlight>,
    /// A failure event made the pending change significant.
    promoted: bool,
    /// Changes seen until then are significant (a failure event came).
    urgent_until_ms: u64,
    /// When the pending significant change was first seen.
    significant_since_ms: Option<u64>,
    retry_at_ms: u64,
    backoff_ms: u64,
    queued: Option<(Lane, u64)>,
    deadline: Option<u64>,
}

#[derive(Debug)]
struct InFlight {
    status: EdgeNodeStatus,
    significant: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Significant,
    Steady,
}

/// Nodes with a write due, keyed by (due at, node): the first key of a lane is the next write.
#[derive(Debug, Default)]
struct Queues {
    significant: BTreeSet<(u64, NodeId)>,
    steady: BTreeSet<(u64, NodeId)>,
}

impl Queues {
    fn lane(&mut self, lane: Lane) -> &mut BTreeSet<(u64, NodeId)> {
        match lane {
            Lane::Significant => &mut self.significant,
            Lane::Steady => &mut self.steady,
        }
    }
}

#[derive(Debug)]
struct EventMark {
    kind: EventKind,
    passed_at_ms: Option<u64>,
    suppressed: u64,
}

/// A token bucket in thousandths of a token: `per_s` tokens a second, holding one second's worth.
#[derive(Debug)]
struct Bucket {
    per_s: u64,
    milli: u64,
    at_ms: Option<u64>,
}

impl Bucket {
    fn new(per_s: u32) -> Bucket {
        let per_s = u64::from(per_s.max(1));
        Bucket {
            per_s,
            milli: per_s * 1000,
            at_ms: None,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        if let Some(at) = self.at_ms {
            let elapsed = now_ms.saturating_sub(at);
            self.milli = self
                .milli
                .saturating_add(elapsed.saturating_mul(self.per_s))
                .min(self.per_s * 1000);
        }
        self.at_ms = Some(self.at_ms.map_or(now_ms, |at| at.max(now_ms)));
    }

    fn has_token(&self) -> bool {
        self.milli >= 1000
    }

    fn take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.has_token() {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

impl NodeTable {
    /// An empty table.
    pub fn new(policy: WritePolicy) -> NodeTable {
        NodeTable {
            write_budget: Bucket::new(policy.writes_per_s),
            event_budget: Bucket::new(policy.events_per_s),
            policy,
            nodes: BTreeMap::new(),
            seeds: BTreeMap::new(),
            queues: Queues::default(),
            deadlines: BTreeSet::new(),
            marks: BTreeMap::new(),
            counters: Counters::default(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &WritePolicy {
        &self.policy
    }

    /// A status from the broker, already decoded on its topic (so its node is the topic's).
    /// Returns whether it was taken (an older or repeated status is ignored, see the module
    /// documentation).
    pub fn observe_status(&mut self, status: NodeStatus, now_ms: u64) -> bool {
        self.counters.statuses += 1;
        let node = status.node.clone();
        let Some(entry) = self.nodes.get_mut(&node) else {
            let (written, written_at_ms) = match self.seeds.remove(&node) {
                Some((status, at)) => (Some(status), at),
                None => (None, 0),
            };
            let presence = Presence::of(&status);
            let desired = edge_node_status(&status, presence, now_ms, written.as_ref());
            let mut entry = Entry {
                report: status,
                received_at_ms: now_ms,
                silent: false,
                desired,
                written,
                written_at_ms,
                in_flight: None,
                promoted: false,
                urgent_until_ms: 0,
                significant_since_ms: None,
                retry_at_ms: 0,
                backoff_ms: 0,
                queued: None,
                deadline: None,
            };
            set_deadline(&mut self.deadlines, &self.policy, &node, &mut entry);
            requeue(&mut self.queues, &self.policy, &node, &mut entry, now_ms);
            self.nodes.insert(node, entry);
            return true;
        };
        if !supersedes(&status, entry) {
            self.counters.statuses_ignored += 1;
            return false;
        }
        entry.report = merge(status, &entry.report);
        entry.received_at_ms = now_ms;
        entry.silent = false;
        set_deadline(&mut self.deadlines, &self.policy, &node, entry);
        if refresh(entry, None) {
            if entry.queued.is_some() {
                self.counters.coalesced += 1;
            }
            if now_ms < entry.urgent_until_ms {
                entry.promoted = true;
            }
        }
        requeue(&mut self.queues, &self.policy, &node, entry, now_ms);
        true
    }

    /// An event from the broker, already decoded on its topic. Returns what should become a
    /// Kubernetes Event, unless throttling drops it (counted; the next one of its node and kind
    /// that passes tells how many). One that tells of a failure (a refused assignment or module, a
    /// quarantine, a rollback, a failed interaction, a host fault, a full outbox) and passes the
    /// per-node throttle makes the node's pending change, and those of the next
    /// `steady_interval_ms`, significant.
    pub fn observe_event(&mut self, event: AgentEvent, now_ms: u64) -> Option<NodeEvent> {
        self.counters.events += 1;
        let marks = self.marks.entry(event.node.clone()).or_default();
        let index = match marks.iter().position(|m| m.kind == event.kind) {
            Some(index) => index,
            None => {
                marks.push(EventMark {
                    kind: event.kind,
                    passed_at_ms: None,
                    suppressed: 0,
                });
                marks.len() - 1
            }
        };
        let mark = &mut marks[index];
        if mark
            .passed_at_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < self.policy.event_interval_ms)
        {
            mark.suppressed += 1;
            self.counters.events_dropped += 1;
            return None;
        }
        // Past the per-node throttle: the failure counts even if the global cap drops the Event.
        if tells_of_failure(event.kind)
            && let Some(entry) = self.nodes.get_mut(&event.node)
        {
            entry.urgent_until_ms = now_ms.saturating_add(self.policy.steady_interval_ms);
            if entry.queued.is_some() || entry.in_flight.is_some() {
                entry.promoted = true;
            }
            requeue(&mut self.queues, &self.policy, &event.node, entry, now_ms);
        }
        if !self.event_budget.take(now_ms) {
            mark.suppressed += 1;
            self.counters.events_dropped += 1;
            return None;
        }
        mark.passed_at_ms = Some(now_ms);
        let suppressed = std::mem::take(&mut mark.suppressed);
        self.counters.events_passed += 1;
        Some(NodeEvent {
            warning: event.kind.is_warning(),
            node: event.node,
            kind: event.kind,
            at_ms: event.at_ms,
            class: event.class,
            device: event.device,
            module: event.module,
            generation: event.generation,
            detail: event.detail,
            suppressed,
        })
    }

    /// The writes to make now, within the budget: significant ones first (oldest change first),
    /// then steady ones whose last write is at least `steady_interval_ms` old (oldest first). Each
    /// node in the result has its write in flight until [`NodeTable::written`] or
    /// [`NodeTable::failed`]; it gets no other write meanwhile. Nodes silent for
    /// `stale_after_ms` turn offline here.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Write> {
        self.expire(now_ms);
        let mut writes = Vec::new();
        loop {
            self.write_budget.refill(now_ms);
            if !self.write_budget.has_token() {
                break;
            }
            let due = |lane: &BTreeSet<(u64, NodeId)>| {
                lane.first()
                    .filter(|(at, _)| *at <= now_ms)
                    .map(|(at, node)| (*at, node.clone()))
            };
            let (lane, key) = match due(&self.queues.significant) {
                Some(key) => (Lane::Significant, key),
                None => match due(&self.queues.steady) {
                    Some(key) => (Lane::Steady, key),
                    None => break,
                },
            };
            self.queues.lane(lane).remove(&key);
            let node = key.1;
            let Some(entry) = self.nodes.get_mut(&node) else {
                continue;
            };
            self.write_budget.take(now_ms);
            let significant = lane == Lane::Significant;
            entry.queued = None;
            entry.promoted = false;
            entry.significant_since_ms = None;
            entry.in_flight = Some(InFlight {
                status: entry.desired.clone(),
                significant,
            });
            if significant {
                self.counters.writes_significant += 1;
            } else {
                self.counters.writes_steady += 1;
            }
            writes.push(Write {
                node,
                status: entry.desired.clone(),
                significant,
            });
        }
        writes
    }

    /// The write of `node` handed out by [`NodeTable::tick`] succeeded.
    pub fn written(&mut self, node: &NodeId, now_ms: u64) {
        let Some(entry) = self.nodes.get_mut(node) else {
            return;
        };
        let Some(flight) = entry.in_flight.take() else {
            return;
        };
        entry.written = Some(flight.status);
        entry.written_at_ms = now_ms;
        entry.backoff_ms = 0;
        entry.retry_at_ms = 0;
        requeue(&mut self.queues, &self.policy, node, entry, now_ms);
    }

    /// The write of `node` handed out by [`NodeTable::tick`] failed: it is due again after a
    /// backoff (`retry_after_ms`, doubling to `retry_max_ms`), carrying whatever is newest then.
    pub fn failed(&mut self, node: &NodeId, now_ms: u64) {
        let Some(entry) = self.nodes.get_mut(node) else {
            return;
        };
        let Some(flight) = entry.in_flight.take() else {
            return;
        };
        self.counters.writes_failed += 1;
        entry.promoted |= flight.significant;
        entry.backoff_ms = if entry.backoff_ms == 0 {
            self.policy.retry_after_ms
        } else {
            entry.backoff_ms.saturating_mul(2)
        }
        .min(self.policy.retry_max_ms);
        entry.retry_at_ms = now_ms.saturating_add(entry.backoff_ms);
        requeue(&mut self.queues, &self.policy, node, entry, now_ms);
    }

    /// What the API server holds for `node` (from a watch or a list, e.g. at start): later writes
    /// are compared with it, and its conditions' transition times are kept. A status equal to
    /// what the node's reports give is then not written again.
    pub fn known(&mut self, node: NodeId, status: EdgeNodeStatus, now_ms: u64) {
        let Some(entry) = self.nodes.get_mut(&node) else {
            self.seeds.insert(node, (status, now_ms));
            return;
        };
        if entry.in_flight.is_some() {
            return;
        }
        if entry.written.is_none() {
            entry.written_at_ms = now_ms;
        }
        refresh(entry, Some(&status));
        entry.written = Some(status);
        requeue(&mut self.queues, &self.policy, &node, entry, now_ms);
    }

    /// Forgets `node` (its EdgeNode was deleted). A status that arrives later starts it again.
    pub fn remove(&mut self, node: &NodeId) {
        self.seeds.remove(node);
        self.marks.remove(node);
        if let Some(entry) = self.nodes.remove(node) {
            if let Some((lane, at)) = entry.queued {
                self.queues.lane(lane).remove(&(at, node.clone()));
            }
            if let Some(at) = entry.deadline {
                self.deadlines.remove(&(at, node.clone()));
            }
        }
    }

    /// Every node's latest report, by node: as the agent sent it, except that a last will keeps
    /// the report's per-class data and a silent node's state is `Offline`. So
    /// `report.state == NodeState::Online` says whether the node is online now.
    pub fn reports(&self) -> impl Iterator<Item = (&NodeId, &NodeStatus)> {
        self.nodes.iter().map(|(node, entry)| (node, &entry.report))
    }

    /// The latest report of `node`.
    pub fn report(&self, node: &NodeId) -> Option<&NodeStatus> {
        self.nodes.get(node).map(|e| &e.report)
    }

    /// Whether `node` is online, offline or silent; `None` if never heard from.
    pub fn presence(&self, node: &NodeId) -> Option<Presence> {
        self.nodes.get(node).map(presence)
    }

    /// The EdgeNode status `node` should have now (written or not).
    pub fn status(&self, node: &NodeId) -> Option<&EdgeNodeStatus> {
        self.nodes.get(node).map(|e| &e.desired)
    }

    /// Nodes heard from.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No node heard from.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// What the table has done.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Nodes by presence.
    pub fn presence_counts(&self) -> PresenceCounts {
        let mut counts = PresenceCounts::default();
        for entry in self.nodes.values() {
            match presence(entry) {
                Presence::Online => counts.online += 1,
                Presence::Offline => counts.offline += 1,
                Presence::Silent => counts.silent += 1,
            }
        }
        counts
    }

    /// Nodes waiting for a write (due or not yet), significant and steady: a backlog that keeps
    /// growing means the budget is too small for the fleet.
    pub fn waiting(&self) -> (usize, usize) {
        (self.queues.significant.len(), self.queues.steady.len())
    }

    /// Turns online nodes that sent nothing for `stale_after_ms` silent.
    fn expire(&mut self, now_ms: u64) {
        while let Some((at, node)) = self.deadlines.first().cloned() {
            if at > now_ms {
                break;
            }
            self.deadlines.remove(&(at, node.clone()));
            let Some(entry) = self.nodes.get_mut(&node) else {
                continue;
            };
            entry.deadline = None;
            entry.silent = true;
            entry.report.state = NodeState::Offline;
            self.counters.went_silent += 1;
            refresh(entry, None);
            requeue(&mut self.queues, &self.policy, &node, entry, now_ms);
        }
    }
}

fn presence(entry: &Entry) -> Presence {
    if entry.silent {
        Presence::Silent
    } else {
        Presence::of(&entry.report)
    }
}

/// Whether `status` should replace what `entry` holds (see the module documentation).
fn supersedes(status: &NodeStatus, entry: &Entry) -> bool {
    let held = &entry.report;
    if status.started_at_ms != held.started_at_ms {
        return status.started_at_ms > held.started_at_ms;
    }
    // A silent node's report said online: only a newer online status, or its will, replaces it.
    let held_state = if entry.silent {
        NodeState::Online
    } else {
        held.state
    };
    match (status.state, held_state) {
        (NodeState::Offline, NodeState::Online) => true,
        _ => status.updated_at_ms > held.updated_at_ms,
    }
}

/// `status` as it should be held after `held`: an offline status without classes (a last will)
/// keeps the per-class data, device counts, outbox, device link and times of `held`.
fn merge(status: NodeStatus, held: &NodeStatus) -> NodeStatus {
    if status.state == NodeState::Online || !status.classes.is_empty() {
        return status;
    }
    NodeStatus {
        state: NodeState::Offline,
        protocol_version: status.protocol_version,
        agent_version: status.agent_version,
        wasmedge_version: status.wasmedge_version,
        guest_abi_version: status.guest_abi_version,
        uplink: status.uplink,
        ..held.clone()
    }
}

/// Recomputes the desired status of `entry` (keeping transition times from `previous`, else from
/// what it desired before); returns whether it changed.
fn refresh(entry: &mut Entry, previous: Option<&EdgeNodeStatus>) -> bool {
    let desired = edge_node_status(
        &entry.report,
        presence(entry),
        entry.received_at_ms,
        Some(previous.unwrap_or(&entry.desired)),
    );
    let changed = desired != entry.desired;
    entry.desired = desired;
    changed
}

fn set_deadline(
    deadlines: &mut BTreeSet<(u64, NodeId)>,
    policy: &WritePolicy,
    node: &NodeId,
    entry: &mut Entry,
) {
    if let Some(at) = entry.deadline.take() {
        deadlines.remove(&(at, node.clone()));
    }
    if presence(entry) == Presence::Online {
        let at = entry.received_at_ms.saturating_add(policy.stale_after_ms);
        deadlines.insert((at, node.clone()));
        entry.deadline = Some(at);
    }
}

/// Puts `node` in the lane its pending change belongs to, due when it may go (or in none).
fn requeue(queues: &mut Queues, policy: &WritePolicy, node: &NodeId, entry: &mut Entry, now: u64) {
    if let Some((lane, at)) = entry.queued.take() {
        queues.lane(lane).remove(&(at, node.clone()));
    }
    // Compared with what will be on the server once the write in flight (if any) lands.
    let base = match &entry.in_flight {
        Some(flight) => Some(&flight.status),
        None => entry.written.as_ref(),
    };
    if base == Some(&entry.desired) {
        entry.significant_since_ms = None;
        entry.promoted = false;
        return;
    }
    let significant = entry.promoted || base.is_none_or(|b| !same_significant(b, &entry.desired));
    let (lane, at) = if significant {
        let since = *entry.significant_since_ms.get_or_insert(now);
        (Lane::Significant, since)
    } else {
        entry.significant_since_ms = None;
        let due = entry
            .written_at_ms
            .saturating_add(policy.steady_interval_ms);
        (Lane::Steady, due)
    };
    if entry.in_flight.is_some() {
        return;
    }
    let at = at.max(entry.retry_at_ms);
    queues.lane(lane).insert((at, node.clone()));
    entry.queued = Some((lane, at));
}

/// Events whose news is a failure: they make the node's pending change significant.
fn tells_of_failure(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::AssignmentRejected
            | EventKind::ModuleRefused
            | EventKind::ModuleQuarantined
            | EventKind::RolledBack
            | EventKind::InteractionFailed
            | EventKind::HostFault
            | EventKind::OutboxFull
    )
}

/// Whether `a` and `b` differ only in steady fields: counters, rates, device counts, `lastSeen`,
/// download progress, condition messages and times.
fn same_significant(a: &EdgeNodeStatus, b: &EdgeNodeStatus) -> bool {
    fn pending_version(pending: &Option<String>) -> Option<&str> {
        pending
            .as_deref()
            .map(|p| p.rsplit_once(" (").map_or(p, |(version, _)| version))
    }
    fn quarantined(class: &NodeClassStatus) -> impl Iterator<Item = &str> {
        class
            .modules
            .iter()
            .filter(|m| m.quarantined)
            .map(|m| m.sha256.as_str())
    }
    a.state == b.state
        && a.uplink == b.uplink
        && a.device_link == b.device_link
        && a.agent_version == b.agent_version
        && a.wasmedge_version == b.wasmedge_version
        && a.guest_abi_version == b.guest_abi_version
        && a.summary == b.summary
        && a.conditions.len() == b.conditions.len()
        && a.conditions
            .iter()
            .zip(&b.conditions)
            .all(|(x, y)| x.type_ == y.type_ && x.status == y.status && x.reason == y.reason)
        && a.classes.len() == b.classes.len()
        && a.classes.iter().zip(&b.classes).all(|(x, y)| {
            x.class == y.class
                && x.generation == y.generation
                && x.active == y.active
                && x.active_sha256 == y.active_sha256
                && pending_version(&x.pending) == pending_version(&y.pending)
                && x.last_error == y.last_error
                && quarantined(x).eq(quarantined(y))
        })
}

/// The EdgeNode status a report gives. `presence` is the controller's view (an online report
/// whose node went silent is [`Presence::Silent`]); `received_at_ms` only bounds `lastSeen` (the
/// report's `updated_at_ms`, never later than its arrival, in case the node's clock runs ahead).
/// A condition keeps its `lastTransitionTime` from `previous` while its status stays; a new one
/// takes `lastSeen`'s time (whole seconds), so identical reports give identical statuses.
pub fn edge_node_status(
    status: &NodeStatus,
    presence: Presence,
    received_at_ms: u64,
    previous: Option<&EdgeNodeStatus>,
) -> EdgeNodeStatus {
    let seen_ms = status.updated_at_ms.min(received_at_ms);
    let mut classes: Vec<&ClassStatus> = status.classes.iter().collect();
    classes.sort_by(|a, b| a.class.cmp(&b.class));
    let summary = if classes.is_empty() {
        "-".to_string()
    } else {
        classes
            .iter()
            .map(|c| {
                let version = c.active.as_ref().map_or("-", |m| m.version.as_str());
                format!("{}={version}", c.class)
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let modules = || classes.iter().flat_map(|c| c.modules.iter());
    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions[..]);
    let conditions = conditions(status, &classes, presence, seen_ms, previous_conditions);
    EdgeNodeStatus {
        state: Some(
            if presence.is_online() {
                "Online"
            } else {
                "Offline"
            }
            .to_string(),
        ),
        last_seen: Some(rfc3339(seen_ms)),
        agent_version: Some(status.agent_version.clone()),
        wasmedge_version: Some(status.wasmedge_version.clone()),
        guest_abi_version: Some(status.guest_abi_version),
        summary: Some(summary),
        active_devices: status.active_devices,
        seen_devices: status.seen_devices,
        rate: Some(format!("{:.1}/s", finite(status.interactions_per_sec))),
        errors: modules().map(|m| m.errors).fold(0, u64::saturating_add),
        traps: modules().map(|m| m.traps).fold(0, u64::saturating_add),
        outbox_depth: status.outbox.depth,
        uplink: Some(link_state(status.uplink.state).to_string()),
        device_link: Some(link_state(status.device_link.state).to_string()),
        classes: classes.iter().map(|c| node_class_status(c)).collect(),
        conditions,
    }
}

fn node_class_status(class: &ClassStatus) -> NodeClassStatus {
    let mut modules: Vec<&ModuleStats> = class.modules.iter().collect();
    modules.sort_by(|a, b| {
        (&a.module.name, &a.module.version, a.module.sha256).cmp(&(
            &b.module.name,
            &b.module.version,
            b.module.sha256,
        ))
    });
    NodeClassStatus {
        class: class.class.to_string(),
        generation: class.generation,
        active: class
            .active
            .as_ref()
            .map(|m| format!("{} {}", m.name, m.version)),
        active_sha256: class.active.as_ref().map(|m| m.sha256.to_string()),
        pending: class.pending.as_ref().map(|p| {
            format!(
                "{} {} ({}/{} chunks)",
                p.module.name, p.module.version, p.received_chunks, p.total_chunks
            )
        }),
        last_error: class.last_error.as_ref().map(|e| e.message.clone()),
        active_devices: class.active_devices,
        interactions_per_sec: (finite(class.interactions_per_sec) * 100.0).round() / 100.0,
        modules: modules
            .into_iter()
            .map(|m| NodeModuleStatus {
                version: format!("{} {}", m.module.name, m.module.version),
                sha256: m.module.sha256.to_string(),
                interactions: m.interactions,
                errors: m.errors,
                traps: m.traps,
                timeouts: m.timeouts,
                quarantined: m.quarantined,
            })
            .collect(),
    }
}

/// `Ready` and `Degraded`.
fn conditions(
    status: &NodeStatus,
    classes: &[&ClassStatus],
    presence: Presence,
    seen_ms: u64,
    previous: &[Condition],
) -> Vec<Condition> {
    let make = |type_: &str, value: &str, reason: &str, message: String| {
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == value)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| time(seen_ms));
        Condition {
            type_: type_.to_string(),
            status: value.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: None,
            last_transition_time,
        }
    };
    match presence {
        Presence::Offline => {
            return vec![
                make(
                    "Ready",
                    "False",
                    "Offline",
                    "the agent is offline (its last will, or a clean shutdown)".to_string(),
                ),
                make(
                    "Degraded",
                    "Unknown",
                    "Offline",
                    "not known while the node is offline".to_string(),
                ),
            ];
        }
        Presence::Silent => {
            return vec![
                make(
                    "Ready",
                    "False",
                    "NoStatus",
                    format!("no status from the agent since {}", rfc3339(seen_ms)),
                ),
                make(
                    "Degraded",
                    "Unknown",
                    "NoStatus",
                    "not known while the node sends no status".to_string(),
                ),
            ];
        }
        Presence::Online => {}
    }
    let mut failing = Vec::new();
    let mut fetching = Vec::new();
    let mut idle = Vec::new();
    for class in classes {
        let recent_error = class
            .last_error
            .as_ref()
            .filter(|e| status.updated_at_ms.saturating_sub(e.at_ms) < RECENT_ERROR_MS);
        let quarantined: Vec<String> = class
            .modules
            .iter()
            .filter(|m| m.quarantined)
            .map(|m| format!("{} {}", m.module.name, m.module.version))
            .collect();
        if let Some(error) = recent_error {
            failing.push(format!("{}: {}", class.class, error.message));
        } else if !quarantined.is_empty() {
            failing.push(format!(
                "{}: {} quarantined",
                class.class,
                quarantined.join(", ")
            ));
        } else if class.active.is_none() {
            match &class.pending {
                Some(p) => fetching.push(format!(
                    "{} for {}",
                    format_args!("{} {}", p.module.name, p.module.version),
                    class.class
                )),
                None => idle.push(class.class.to_string()),
            }
        }
    }
    let device_link_down = status.device_link.state != LinkState::Connected;
    let outbox_full = status.outbox.capacity > 0 && status.outbox.depth >= status.outbox.capacity;
    let ready = if !failing.is_empty() {
        make("Ready", "False", "ClassFailing", failing.join("; "))
    } else if device_link_down {
        make(
            "Ready",
            "False",
            "DeviceLinkDown",
            link_message(&status.device_link),
        )
    } else if !fetching.is_empty() {
        make(
            "Ready",
            "False",
            "Fetching",
            format!("fetching {}", fetching.join(", ")),
        )
    } else if !idle.is_empty() {
        make(
            "Ready",
            "False",
            "NoModule",
            format!("no module to run for {}", idle.join(", ")),
        )
    } else {
        let message = match classes.len() {
            0 => "online; no class assigned".to_string(),
            1 => "serving 1 class".to_string(),
            n => format!("serving {n} classes"),
        };
        make("Ready", "True", "Serving", message)
    };
    let degraded = if !failing.is_empty() {
        make("Degraded", "True", "ClassFailing", failing.join("; "))
    } else if device_link_down {
        make(
            "Degraded",
            "True",
            "DeviceLinkDown",
            link_message(&status.device_link),
        )
    } else if outbox_full {
        make(
            "Degraded",
            "True",
            "OutboxFull",
            format!(
                "the outbox is full ({} messages): the oldest are being dropped",
                status.outbox.capacity
            ),
        )
    } else {
        make("Degraded", "False", "Healthy", "nothing fails".to_string())
    };
    vec![ready, degraded]
}

fn link_message(link: &LinkStatus) -> String {
    match &link.last_error {
        Some(error) => format!("the device link is {}: {error}", link_state(link.state)),
        None => format!("the device link is {}", link_state(link.state)),
    }
}

fn link_state(state: LinkState) -> &'static str {
    match state {
        LinkState::Connected => "connected",
        LinkState::Connecting => "connecting",
        LinkState::Disconnected => "disconnected",
    }
}

/// RFC 3339, with milliseconds when there are any.
fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

/// A rate as reported, or 0 when it is not a finite non-negative number (it would not round-trip
/// through JSON).
fn finite(rate: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use edgefleet_protocol::ModuleRef;
    use edgefleet_protocol::status::{ErrorReport, OutboxStatus, PendingModule};

    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn id(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn module(name: &str, version: &str) -> ModuleRef {
        ModuleRef {
            name: name.into(),
            version: version.into(),
            sha256: Sha256Digest::of(format!("{name} {version}").as_bytes()),
        }
    }

    fn stats(module: ModuleRef, interactions: u64, errors: u64) -> ModuleStats {
        ModuleStats {
            module,
            interactions,
            errors,
            traps: errors / 2,
            timeouts: 0,
            rejections: 0,
            quarantined: false,
        }
    }

    fn class(name: &str, active: ModuleRef, interactions: u64) -> ClassStatus {
        ClassStatus {
            class: ClassId::new(name).unwrap(),
            generation: Some(1),
            shadow: None,
            rollout: None,
            active: Some(active.clone()),
            previous: None,
            pending: None,
            last_error: None,
            active_devices: 3,
            seen_devices: 4,
            interactions_per_sec: 1.25,
            modules: vec![stats(active, interactions, 0)],
        }
    }

    fn connected(since_ms: u64) -> LinkStatus {
        LinkStatus {
            state: LinkState::Connected,
            since_ms,
            reconnects: 0,
            last_error: None,
        }
    }

    /// An online status of `node`, started at T0, produced `at` ms after T0.
    fn online(node: &str, at: u64) -> NodeStatus {
        NodeStatus {
            node: id(node),
            state: NodeState::Online,
            protocol_version: edgefleet_protocol::PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
            wasmedge_version: "0.17.1".into(),
            guest_abi_version: 1,
            started_at_ms: T0,
            updated_at_ms: T0 + at,
            uplink: connected(T0),
            device_link: connected(T0),
            outbox: OutboxStatus {
                depth: 0,
                capacity: 10_000,
                dropped: 0,
                oldest_at_ms: None,
            },
            active_devices: 3,
            seen_devices: 4,
            interactions_per_sec: 12.5,
            classes: vec![class("thermo", module("thermostat", "1.0.0"), at / 100)],
        }
    }

    fn will(node: &str) -> NodeStatus {
        NodeStatus::last_will(id(node), "0.1.0", "0.17.1", 1, T0, T0)
    }

    fn table() -> NodeTable {
        NodeTable::new(WritePolicy::default())
    }

    /// Ticks at `now` and reports every write as done.
    fn tick_ok(table: &mut NodeTable, now: u64) -> Vec<Write> {
        let writes = table.tick(now);
        for write in &writes {
            table.written(&write.node, now);
        }
        writes
    }

    fn condition<'a>(status: &'a EdgeNodeStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn fills_every_field() {
        let mut status = online("edge-1", 5_000);
        status.classes.push(ClassStatus {
            pending: Some(PendingModule {
                module: module("lock", "2.1.0"),
                generation: 4,
                received_chunks: 3,
                total_chunks: 10,
            }),
            last_error: Some(ErrorReport {
                at_ms: T0,
                message: "trap in handle".into(),
            }),
            interactions_per_sec: 0.333_333,
            modules: vec![
                stats(module("lock", "2.0.0"), 50, 6),
                ModuleStats {
                    quarantined: true,
                    ..stats(module("lock", "1.9.0"), 10, 4)
                },
            ],
            ..class("lock", module("lock", "2.0.0"), 0)
        });
        status.device_link.reconnects = 2;
        let at = T0 + 5_000;
        let node = edge_node_status(&status, Presence::Online, at + 40, None);
        assert_eq!(node.state.as_deref(), Some("Online"));
        assert_eq!(node.last_seen.as_deref(), Some("2023-11-14T22:13:25Z"));
        assert_eq!(node.agent_version.as_deref(), Some("0.1.0"));
        assert_eq!(node.wasmedge_version.as_deref(), Some("0.17.1"));
        assert_eq!(node.guest_abi_version, Some(1));
        assert_eq!(node.summary.as_deref(), Some("lock=2.0.0,thermo=1.0.0"));
        assert_eq!((node.active_devices, node.seen_devices), (3, 4));
        assert_eq!(node.rate.as_deref(), Some("12.5/s"));
        assert_eq!((node.errors, node.traps), (10, 5));
        assert_eq!(node.outbox_depth, 0);
        assert_eq!(node.uplink.as_deref(), Some("connected"));
        assert_eq!(node.device_link.as_deref(), Some("connected"));
        let lock = &node.classes[0];
        assert_eq!(lock.class, "lock");
        assert_eq!(lock.generation, Some(1));
        assert_eq!(lock.active.as_deref(), Some("lock 2.0.0"));
        assert_eq!(
            lock.active_sha256,
            Some(module("lock", "2.0.0").sha256.to_string())
        );
        assert_eq!(lock.pending.as_deref(), Some("lock 2.1.0 (3/10 chunks)"));
        assert_eq!(lock.last_error.as_deref(), Some("trap in handle"));
        assert_eq!(lock.interactions_per_sec, 0.33);
        let versions: Vec<_> = lock.modules.iter().map(|m| m.version.as_str()).collect();
        assert_eq!(versions, ["lock 1.9.0", "lock 2.0.0"]);
        assert!(lock.modules[0].quarantined && !lock.modules[1].quarantined);
        assert_eq!(lock.modules[1].interactions, 50);
        assert_eq!(node.classes[1].class, "thermo");
        // The lock class failed 5 s ago: not ready, degraded.
        let ready = condition(&node, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ClassFailing")
        );
        assert_eq!(ready.message, "lock: trap in handle");
        assert_eq!(ready.last_transition_time, time(at));
        let degraded = condition(&node, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ClassFailing")
        );
        // The JSON the API server gets round-trips.
        let json = serde_json::to_value(&node).unwrap();
        assert_eq!(json["summary"], "lock=2.0.0,thermo=1.0.0");
        assert_eq!(
            serde_json::from_value::<EdgeNodeStatus>(json).unwrap(),
            node
        );

        let healthy = edge_node_status(&online("edge-1", 0), Presence::Online, T0, None);
        let ready = condition(&healthy, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Serving")
        );
        let degraded = condition(&healthy, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("False", "Healthy")
        );
        let mut empty = online("edge-1", 0);
        empty.classes.clear();
        empty.interactions_per_sec = f64::NAN;
        let empty = edge_node_status(&empty, Presence::Online, T0, None);
        assert_eq!(empty.summary.as_deref(), Some("-"));
        assert_eq!(empty.rate.as_deref(), Some("0.0/s"));
    }

    #[test]
    fn ready_says_why_not() {
        let reason = |status: &NodeStatus, presence| {
            let node = edge_node_status(status, presence, u64::MAX, None);
            let ready = condition(&node, "Ready");
            let degraded = condition(&node, "Degraded");
            (
                ready.status.clone(),
                ready.reason.clone(),
                degraded.status.clone(),
            )
        };
        let triple = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        let base = online("edge-1", 1_000);
        assert_eq!(
            reason(&base, Presence::Online),
            triple("True", "Serving", "False")
        );
        assert_eq!(
            reason(&base, Presence::Silent),
            triple("False", "NoStatus", "Unknown")
        );
        assert_eq!(
            reason(&will("edge-1"), Presence::Offline),
            triple("False", "Offline", "Unknown")
        );

        let mut down = base.clone();
        down.device_link.state = LinkState::Connecting;
        assert_eq!(
            reason(&down, Presence::Online),
            triple("False", "DeviceLinkDown", "True")
        );

        let mut fetching = base.clone();
        fetching.classes[0].active = None;
        fetching.classes[0].pending = Some(PendingModule {
            module: module("thermostat", "1.0.0"),
            generation: 1,
            received_chunks: 0,
            total_chunks: 2,
        });
        assert_eq!(
            reason(&fetching, Presence::Online),
            triple("False", "Fetching", "False")
        );
        fetching.classes[0].pending = None;
        assert_eq!(
            reason(&fetching, Presence::Online),
            triple("False", "NoModule", "False")
        );

        let mut quarantined = base.clone();
        quarantined.classes[0].modules[0].quarantined = true;
        assert_eq!(
            reason(&quarantined, Presence::Online),
            triple("False", "ClassFailing", "True")
        );

        // A class error counts for RECENT_ERROR_MS of the node's time.
        let mut failed = base.clone();
        failed.classes[0].last_error = Some(ErrorReport {
            at_ms: base.updated_at_ms - 1_000,
            message: "refused".into(),
        });
        assert_eq!(
            reason(&failed, Presence::Online),
            triple("False", "ClassFailing", "True")
        );
        failed.updated_at_ms += RECENT_ERROR_MS;
        assert_eq!(
            reason(&failed, Presence::Online),
            triple("True", "Serving", "False")
        );

        let mut full = base.clone();
        full.outbox.depth = full.outbox.capacity;
        assert_eq!(
            reason(&full, Presence::Online),
            triple("True", "Serving", "True")
        );
    }

    #[test]
    fn transition_times_stay_while_the_status_does() {
        let first = edge_node_status(&online("edge-1", 0), Presence::Online, T0, None);
        assert_eq!(condition(&first, "Ready").last_transition_time, time(T0));
        // Counters and time move on: the conditions keep their transition time.
        let later = online("edge-1", 600_000);
        let second = edge_node_status(&later, Presence::Online, T0 + 600_000, Some(&first));
        assert_eq!(condition(&second, "Ready").last_transition_time, time(T0));
        assert_eq!(
            condition(&second, "Degraded").last_transition_time,
            time(T0)
        );
        assert_ne!(second, first);
        // Ready turns False: a new transition time; Degraded stays False and keeps its time.
        let mut fetching = online("edge-1", 700_000);
        fetching.classes[0].active = None;
        let third = edge_node_status(&fetching, Presence::Online, T0 + 700_000, Some(&second));
        assert_eq!(condition(&third, "Ready").status, "False");
        assert_eq!(
            condition(&third, "Ready").last_transition_time,
            time(T0 + 700_000)
        );
        assert_eq!(condition(&third, "Degraded").last_transition_time, time(T0));
        // And back: True again since now, not since T0.
        let fourth = edge_node_status(
            &online("edge-1", 800_000),
            Presence::Online,
            T0 + 800_000,
            Some(&third),
        );
        assert_eq!(
            condition(&fourth, "Ready").last_transition_time,
            time(T0 + 800_000)
        );
        // The same report gives the same status however late it is received (a retained status
        // read again after a restart), with or without the status before.
        let again = edge_node_status(&later, Presence::Online, T0 + 3_600_000, Some(&first));
        assert_eq!(again, second);
        let fresh = |at| edge_node_status(&later, Presence::Online, at, None);
        assert_eq!(fresh(T0 + 600_000), fresh(T0 + 7_200_000));
        // A clock ahead of the controller's is bounded by the arrival time.
        let ahead = edge_node_status(&later, Presence::Online, T0 + 1_000, None);
        assert_eq!(ahead.last_seen.as_deref(), Some("2023-11-14T22:13:21Z"));
    }

    #[test]
    fn the_first_status_and_significant_changes_are_written_at_once() {
        let mut table = table();
        table.observe_status(online("edge-1", 0), T0);
        let writes = tick_ok(&mut table, T0);
        assert_eq!(writes.len(), 1);
        assert!(writes[0].significant);
        assert_eq!(writes[0].status.state.as_deref(), Some("Online"));
        assert!(tick_ok(&mut table, T0 + 1_000).is_empty());

        // A class error: due at once.
        let mut failing = online("edge-1", 10_000);
        failing.classes[0].last_error = Some(ErrorReport {
            at_ms: T0 + 9_000,
            message: "assignment refused: bad signature".into(),
        });
        table.observe_status(failing, T0 + 10_000);
        let writes = tick_ok(&mut table, T0 + 10_000);
        assert_eq!(writes.len(), 1);
        assert!(writes[0].significant);
        assert_eq!(
            writes[0].status.classes[0].last_error.as_deref(),
            Some("assignment refused: bad signature")
        );
        assert_eq!(condition(&writes[0].status, "Ready").reason, "ClassFailing");

        // A new version: due at once.
        let mut updated = online("edge-1", 20_000);
        let v2 = module("thermostat", "1.1.0");
        updated.classes[0] = class("thermo", v2, 0);
        table.observe_status(updated, T0 + 20_000);
        let writes = tick_ok(&mut table, T0 + 20_000);
        assert_eq!(writes.len(), 1);
        assert!(writes[0].significant);
        assert_eq!(writes[0].status.summary.as_deref(), Some("thermo=1.1.0"));

        // The last will: offline at once, with the classes of the last report kept.
        table.observe_status(will("edge-1"), T0 + 25_000);
        let writes = tick_ok(&mut table, T0 + 25_000);
        assert_eq!(writes.len(), 1);
        assert!(writes[0].significant);
        let status = &writes[0].status;
        assert_eq!(status.state.as_deref(), Some("Offline"));
        assert_eq!(status.uplink.as_deref(), Some("disconnected"));
        assert_eq!(status.summary.as_deref(), Some("thermo=1.1.0"));
        assert_eq!(status.last_seen.as_deref(), Some("2023-11-14T22:13:40Z"));
        assert_eq!(condition(status, "Ready").reason, "Offline");
        assert_eq!(table.presence(&id("edge-1")), Some(Presence::Offline));
        assert_eq!(
            table.report(&id("edge-1")).unwrap().state,
            NodeState::Offline
        );
        assert_eq!(table.counters().writes_significant, 4);
        assert_eq!(table.counters().writes_steady, 0);
    }

    #[test]
    fn steady_changes_are_coalesced_to_one_write_per_interval() {
        let mut table = table();
        let mut writes = Vec::new();
        for second in 0..=125u64 {
            let now = T0 + second * 1_000;
            if second % 10 == 0 {
                // Counters, rate and lastSeen change with every status.
                let mut status = online("edge-1", second * 1_000);
                status.interactions_per_sec = second as f64;
                table.observe_status(status, now);
            }
            writes.extend(tick_ok(&mut table, now).into_iter().map(|w| (second, w)));
        }
        let seconds: Vec<u64> = writes.iter().map(|(s, _)| *s).collect();
        assert_eq!(seconds, [0, 30, 60, 90, 120]);
        assert!(writes[0].1.significant);
        assert!(writes[1..].iter().all(|(_, w)| !w.significant));
        // Each write carries the newest status.
        assert_eq!(writes[4].1.status.rate.as_deref(), Some("120.0/s"));
        let counters = table.counters();
        assert_eq!(
            (counters.writes_significant, counters.writes_steady),
            (1, 4)
        );
        // The statuses at 10, 20 and 30 s went in the write at 30 s: two writes saved, and so on.
        assert_eq!(counters.coalesced, 8);
        assert_eq!(table.waiting(), (0, 0));
    }

    #[test]
    fn a_silent_node_turns_offline_once() {
        let mut table = table();
        table.observe_status(online("edge-1", 0), T0);
        tick_ok(&mut table, T0);
        assert!(tick_ok(&mut table, T0 + 44_999).is_empty());
        let writes = tick_ok(&mut table, T0 + 45_000);
        assert_eq!(writes.len(), 1);
        assert!(writes[0].significant);
        let status = &writes[0].status;
        assert_eq!(status.state.as_deref(), Some("Offline"));
        assert_eq!(condition(status, "Ready").reason, "NoStatus");
        // Everything else is kept.
        assert_eq!(status.summary.as_deref(), Some("thermo=1.0.0"));
        assert_eq!(status.uplink.as_deref(), Some("connected"));
        assert_eq!(table.presence(&id("edge-1")), Some(Presence::Silent));
        assert_eq!(
            table.report(&id("edge-1")).unwrap().state,
            NodeState::Offline
        );
        assert_eq!(
            table.presence_counts(),
            PresenceCounts {
                online: 0,
                offline: 0,
                silent: 1
            }
        );
        // Once: no more writes, and the retained status read again does not revive it.
        for second in 46..300 {
            assert!(tick_ok(&mut table, T0 + second * 1_000).is_empty());
        }
        assert!(!table.observe_status(online("edge-1", 0), T0 + 300_000));
        assert!(tick_ok(&mut table, T0 + 300_000).is_empty());
        assert_eq!(table.counters().went_silent, 1);
        // Its will arrives late: offline by its own word now, classes still kept.
        assert!(table.observe_status(will("edge-1"), T0 + 301_000));
        let writes = tick_ok(&mut table, T0 + 301_000);
        assert_eq!(writes.len(), 1);
        assert_eq!(condition(&writes[0].status, "Ready").reason, "Offline");
        assert_eq!(writes[0].status.summary.as_deref(), Some("thermo=1.0.0"));
        // A new status: online again, at once.
        assert!(table.observe_status(online("edge-1", 310_000), T0 + 310_000));
        let writes = tick_ok(&mut table, T0 + 310_000);
        assert!(writes[0].significant);
        assert_eq!(writes[0].status.state.as_deref(), Some("Online"));
        assert_eq!(table.counters().went_silent, 1);
    }

    #[test]
    fn older_and_repeated_statuses_are_ignored() {
        let mut table = table();
        assert!(table.observe_status(online("edge-1", 20_000), T0 + 20_000));
        // Reordered, and a retained redelivery.
        assert!(!table.observe_status(online("edge-1", 10_000), T0 + 21_000));
        assert!(!table.observe_status(online("edge-1", 20_000), T0 + 22_000));
        assert_eq!(
            table.report(&id("edge-1")).unwrap().updated_at_ms,
            T0 + 20_000
        );
        // Hearing an old status again does not count as hearing from the node.
        tick_ok(&mut table, T0 + 22_000);
        assert!(!table.observe_status(online("edge-1", 20_000), T0 + 60_000));
        tick_ok(&mut table, T0 + 65_000);
        assert_eq!(table.presence(&id("edge-1")), Some(Presence::Silent));
        // A previous run's status.
        let mut old_run = online("edge-1", 90_000);
        old_run.started_at_ms = T0 - 1;
        assert!(!table.observe_status(old_run, T0 + 90_000));
        // The will of this run (its timestamps are the run's start) is taken; then again, not.
        assert!(table.observe_status(will("edge-1"), T0 + 91_000));
        assert!(!table.observe_status(will("edge-1"), T0 + 92_000));
        // The agent reconnects: a newer online status is taken.
        assert!(table.observe_status(online("edge-1", 95_000), T0 + 95_000));
        assert_eq!(table.presence(&id("edge-1")), Some(Presence::Online));
        // The agent restarts: a later run, whatever its times.
        let mut new_run = will("edge-1");
        new_run.started_at_ms = T0 + 100_000;
        new_run.updated_at_ms = T0 + 100_000;
        assert!(table.observe_status(new_run, T0 + 100_000));
        assert_eq!(table.presence(&id("edge-1")), Some(Presence::Offline));
        assert_eq!(table.counters().statuses_ignored, 5);
        assert_eq!(table.counters().statuses, 9);
    }

    #[test]
    fn failed_writes_are_retried_with_backoff_and_not_lost() {
        // No silence in this test: it waits long between statuses.
        let mut table = NodeTable::new(WritePolicy {
            stale_after_ms: 3_600_000,
            ..WritePolicy::default()
        });
        let node = id("edge-1");
        table.observe_status(online("edge-1", 0), T0);
        let writes = table.tick(T0);
        assert_eq!(writes.len(), 1);
        // While it is in flight, a change gives no second write.
        table.observe_status(will("edge-1"), T0 + 100);
        assert!(table.tick(T0 + 200).is_empty());
        table.failed(&node, T0 + 300);
        // Retried after 1 s, 2 s, 4 s: with the newest status each time.
        let mut at = T0 + 300;
        for backoff in [1_000, 2_000, 4_000] {
            assert!(table.tick(at + backoff - 1).is_empty());
            let writes = table.tick(at + backoff);
            assert_eq!(writes.len(), 1);
            assert!(writes[0].significant);
            assert_eq!(writes[0].status.state.as_deref(), Some("Offline"));
            at += backoff;
            table.failed(&node, at);
        }
        assert_eq!(table.counters().writes_failed, 4);
        let writes = table.tick(at + 8_000);
        assert_eq!(writes.len(), 1);
        table.written(&node, at + 8_000);
        assert!(tick_ok(&mut table, at + 100_000).is_empty());
        // The backoff starts again from 1 s, and caps at retry_max_ms.
        table.observe_status(online("edge-1", 200_000), T0 + 200_000);
        let mut at = T0 + 200_000;
        assert_eq!(table.tick(at).len(), 1);
        let mut waits = Vec::new();
        for _ in 0..9 {
            table.failed(&node, at);
            let mut wait = 0;
            while table.tick(at + wait).is_empty() {
                wait += 500;
            }
            waits.push(wait);
            at += wait;
        }
        assert_eq!(
            waits,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000
            ]
        );
        // A failed steady write stays due (the server may not hold it).
        table.written(&node, at);
        table.observe_status(online("edge-1", 300_000), at + 1);
        let writes = table.tick(at + 30_000);
        assert!(!writes[0].significant);
        table.failed(&node, at + 30_000);
        let writes = table.tick(at + 31_000);
        assert_eq!(writes.len(), 1);
        table.written(&node, at + 31_000);
    }

    #[test]
    fn a_restarted_controller_told_what_the_server_holds_writes_nothing_new() {
        // Before the restart: written and acknowledged.
        let mut before = table();
        before.observe_status(online("edge-1", 0), T0);
        let written = tick_ok(&mut before, T0).remove(0).status;
        // After: the server's copy is known, then the retained status comes again, later.
        let mut after = table();
        after.known(id("edge-1"), written.clone(), T0 + 500_000);
        after.observe_status(online("edge-1", 0), T0 + 500_000);
        assert_eq!(after.status(&id("edge-1")), Some(&written));
        for second in 0..40 {
            assert!(tick_ok(&mut after, T0 + 500_000 + second * 1_000).is_empty());
        }
        // The order does not matter, and transition times come from the server's copy.
        let mut early = written.clone();
        for c in &mut early.conditions {
            c.last_transition_time = time(T0 - 86_400_000);
        }
        let mut after = table();
        after.observe_status(online("edge-1", 0), T0 + 500_000);
        after.known(id("edge-1"), early.clone(), T0 + 500_000);
        assert_eq!(after.status(&id("edge-1")), Some(&early));
        assert!(tick_ok(&mut after, T0 + 501_000).is_empty());
        // A steady change is then written when the interval since learning it has passed.
        after.observe_status(online("edge-1", 10_000), T0 + 510_000);
        assert!(tick_ok(&mut after, T0 + 529_999).is_empty());
        let writes = tick_ok(&mut after, T0 + 530_000);
        assert_eq!(writes.len(), 1);
        assert!(!writes[0].significant);
        assert_eq!(
            condition(&writes[0].status, "Ready").last_transition_time,
            time(T0 - 86_400_000)
        );
    }

    #[test]
    fn removed_nodes_are_forgotten() {
        let mut table = table();
        table.observe_status(online("edge-1", 0), T0);
        table.observe_status(online("edge-2", 0), T0);
        table.remove(&id("edge-1"));
        let writes = tick_ok(&mut table, T0);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].node, id("edge-2"));
        let nodes: Vec<_> = table.reports().map(|(node, _)| node.clone()).collect();
        assert_eq!(nodes, [id("edge-2")]);
        // No staleness for it either; a later status starts it again.
        assert_eq!(table.tick(T0 + 50_000).len(), 1);
        table.written(&id("edge-2"), T0 + 50_000);
        table.observe_status(online("edge-1", 60_000), T0 + 60_000);
        let writes = tick_ok(&mut table, T0 + 60_000);
        assert_eq!(writes.len(), 1);
        assert!(writes[0].significant);
        assert_eq!(table.len(), 2);
    }

    fn event(node: &str, kind: EventKind) -> AgentEvent {
        AgentEvent::new(
            T0,
            id(node),
            kind,
            "module thermostat 1.1.0 quarantined after 3 traps",
        )
        .with_class(ClassId::new("thermo").unwrap())
    }

    #[test]
    fn events_are_throttled_per_node_and_kind_and_over_the_fleet() {
        let mut table = table();
        let first = table
            .observe_event(event("edge-1", EventKind::ModuleQuarantined), T0)
            .unwrap();
        assert!(first.warning);
        assert_eq!(first.event_type(), "Warning");
        assert_eq!(first.reason(), "ModuleQuarantined");
        assert_eq!(first.suppressed, 0);
        assert_eq!(
            first.message(),
            "module thermostat 1.1.0 quarantined after 3 traps (class thermo)"
        );
        // Four more of the same within the minute: dropped; another kind or node: passes.
        for i in 1..5 {
            let kind = EventKind::ModuleQuarantined;
            assert!(
                table
                    .observe_event(event("edge-1", kind), T0 + i * 10_000)
                    .is_none()
            );
        }
        let applied = table.observe_event(event("edge-1", EventKind::AssignmentApplied), T0 + 1);
        assert!(!applied.unwrap().warning);
        assert!(
            table
                .observe_event(event("edge-2", EventKind::ModuleQuarantined), T0 + 2)
                .is_some()
        );
        // A minute after the first: passes, telling how many were dropped.
        let next = table
            .observe_event(event("edge-1", EventKind::ModuleQuarantined), T0 + 60_000)
            .unwrap();
        assert_eq!(next.suppressed, 4);
        assert!(
            next.message()
                .ends_with("; 4 more ModuleQuarantined events were not recorded")
        );
        let counters = table.counters();
        assert_eq!(
            (
                counters.events,
                counters.events_passed,
                counters.events_dropped
            ),
            (8, 4, 4)
        );

        // Over the fleet: at most events_per_s a second (one second's worth at once).
        let mut fleet = self::table();
        let passed = (0..100)
            .filter(|i| {
                let node = format!("edge-{i}");
                fleet
                    .observe_event(event(&node, EventKind::HostFault), T0)
                    .is_some()
            })
            .count();
        assert_eq!(passed, 10);
        let passed = (100..200)
            .filter(|i| {
                let node = format!("edge-{i}");
                fleet
                    .observe_event(event(&node, EventKind::HostFault), T0 + 500)
                    .is_some()
            })
            .count();
        assert_eq!(passed, 5);
        // A node dropped by the fleet cap gets its next event through, with the count.
        let later = fleet
            .observe_event(event("edge-50", EventKind::HostFault), T0 + 2_000)
            .unwrap();
        assert_eq!(later.suppressed, 1);
        assert_eq!(fleet.counters().events_dropped, 185);
    }

    #[test]
    fn a_failure_event_makes_the_pending_change_significant() {
        let mut table = table();
        let node = id("edge-1");
        table.observe_status(online("edge-1", 0), T0);
        tick_ok(&mut table, T0);
        // Counters only: steady, not due before 30 s.
        table.observe_status(online("edge-1", 10_000), T0 + 10_000);
        assert!(tick_ok(&mut table, T0 + 11_000).is_empty());
        table.observe_event(event("edge-1", EventKind::InteractionFailed), T0 + 12_000);
        let writes = tick_ok(&mut table, T0 + 12_000);
        assert_eq!(writes.len(), 1);
        assert!(writes[0].significant);
        // The event comes first, the status with the new counters after: written at once too.
        table.observe_event(event("edge-1", EventKind::RolledBack), T0 + 15_000);
        assert!(tick_ok(&mut table, T0 + 15_000).is_empty());
        table.observe_status(online("edge-1", 16_000), T0 + 16_000);
        let writes = tick_ok(&mut table, T0 + 16_000);
        assert_eq!(writes.len(), 1);
        assert!(writes[0].significant);
        // Changes a steady interval after the failure are steady again (this one is due: the last
        // write was at 16 s); a normal event promotes nothing.
        table.observe_event(event("edge-1", EventKind::AssignmentApplied), T0 + 50_000);
        table.observe_status(online("edge-1", 50_000), T0 + 50_000);
        let writes = tick_ok(&mut table, T0 + 50_000);
        assert_eq!(writes.len(), 1);
        assert!(!writes[0].significant);
        table.observe_status(online("edge-1", 60_000), T0 + 60_000);
        assert!(tick_ok(&mut table, T0 + 60_000).is_empty());
        assert_eq!(table.presence(&node), Some(Presence::Online));
    }

    /// What a simulated fleet saw.
    struct Simulation {
        writes: u64,
        seconds: u64,
        /// Per node: the times of its steady writes.
        steady: Vec<Vec<u64>>,
        /// Injected significant changes: how long until a write carried each.
        latencies: Vec<u64>,
        /// Nodes that went silent: from their last status to the write saying so.
        silent_latencies: Vec<u64>,
    }

    enum Change {
        Error,
        Version,
        Will,
        Silence,
    }

    /// `nodes` nodes reporting every 10 s (spread over the 10 s), a controller ticking every
    /// second with `writes_per_s`, every write succeeding at once. The server's copies are known
    /// at the start (a running fleet). From 20 s on, every 10 s, four nodes change significantly
    /// (a class error, a new version, a last will, silence) when `inject`.
    fn simulate(nodes: usize, writes_per_s: u32, seconds: u64, inject: bool) -> Simulation {
        let policy = WritePolicy {
            writes_per_s,
            ..WritePolicy::default()
        };
        let mut table = NodeTable::new(policy);
        let names: Vec<String> = (0..nodes).map(|i| format!("edge-{i:05}")).collect();
        let mut templates: Vec<NodeStatus> = names.iter().map(|n| online(n, 0)).collect();
        for template in &templates {
            let status = edge_node_status(template, Presence::Online, T0, None);
            table.known(template.node.clone(), status, T0);
        }
        let mut reporting = vec![true; nodes];
        // (node, when, the change, what a write must show).
        let mut pending: Vec<(usize, u64, Change)> = Vec::new();
        let mut sim = Simulation {
            writes: 0,
            seconds,
            steady: vec![Vec::new(); nodes],
            latencies: Vec::new(),
            silent_latencies: Vec::new(),
        };
        let mut last_status = vec![0u64; nodes];
        let mut seed = 12_345u64;
        let mut random = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize
        };
        let step = 100u64;
        for t in (0..=seconds * 1_000).step_by(step as usize) {
            let now = T0 + t;
            if inject && t >= 20_000 && t % 10_000 == 500 {
                for change in [
                    Change::Error,
                    Change::Version,
                    Change::Will,
                    Change::Silence,
                ] {
                    let node = loop {
                        let node = random() % nodes;
                        if reporting[node] && pending.iter().all(|p| p.0 != node) {
                            break node;
                        }
                    };
                    let template = &mut templates[node];
                    match change {
                        Change::Error => {
                            template.classes[0].last_error = Some(ErrorReport {
                                at_ms: now,
                                message: format!("interaction failed at {t}"),
                            });
                        }
                        Change::Version => {
                            let v2 = module("thermostat", "1.1.0");
                            template.classes[0].active = Some(v2.clone());
                            template.classes[0].modules.push(stats(v2, 0, 0));
                        }
                        Change::Will | Change::Silence => reporting[node] = false,
                    }
                    match change {
                        Change::Error | Change::Version => {
                            // The agent reports a change at once.
                            let mut status = template.clone();
                            status.updated_at_ms = now;
                            table.observe_status(status, now);
                            last_status[node] = t;
                        }
                        Change::Will => {
                            table.observe_status(will(&names[node]), now);
                        }
                        Change::Silence => {}
                    }
                    pending.push((node, t, change));
                }
            }
            // Statuses due in this step: node i reports at i * 10 s / nodes into every 10 s.
            let from = t % 10_000;
            let first = (from as usize * nodes).div_ceil(10_000);
            let last = ((from + step) as usize * nodes).div_ceil(10_000).min(nodes);
            for node in first..last {
                if !reporting[node] || t == 0 {
                    continue;
                }
                let template = &mut templates[node];
                template.classes[0].modules[0].interactions += 100;
                template.interactions_per_sec = (t % 7_000) as f64 / 100.0;
                let mut status = template.clone();
                status.updated_at_ms = now;
                table.observe_status(status, now);
                last_status[node] = t;
            }
            if t % 1_000 != 0 {
                continue;
            }
            for write in table.tick(now) {
                sim.writes += 1;
                let node: usize = write.node.as_str()[5..].parse().unwrap();
                if let Some(index) = pending.iter().position(|p| p.0 == node) {
                    let (_, at, change) = &pending[index];
                    let shows = match change {
                        Change::Error => write.status.classes[0].last_error.is_some(),
                        Change::Version => write.status.summary.as_deref() == Some("thermo=1.1.0"),
                        Change::Will => condition(&write.status, "Ready").reason == "Offline",
                        Change::Silence => condition(&write.status, "Ready").reason == "NoStatus",
                    };
                    if shows {
                        assert!(write.significant);
                        match change {
                            Change::Silence => {
                                sim.silent_latencies.push(t - last_status[node]);
                            }
                            _ => sim.latencies.push(t - at),
                        }
                        pending.remove(index);
                    }
                } else if !write.significant {
                    sim.steady[node].push(t);
                }
                table.written(&write.node, now);
            }
        }
        assert!(pending.iter().all(|p| p.1 + 50_000 > seconds * 1_000));
        let counters = table.counters();
        assert_eq!(
            counters.writes_significant + counters.writes_steady,
            sim.writes
        );
        eprintln!(
            "{nodes} nodes, budget {writes_per_s}/s, {seconds} s: {} statuses, {} writes \
             ({:.1}/s; {} significant, {} steady), {} coalesced, significant latency max {} ms, \
             silence written {} ms after the last status at most",
            counters.statuses,
            sim.writes,
            sim.writes as f64 / seconds as f64,
            counters.writes_significant,
            counters.writes_steady,
            counters.coalesced,
            sim.latencies.iter().max().unwrap_or(&0),
            sim.silent_latencies.iter().max().unwrap_or(&0),
        );
        sim
    }

    #[test]
    fn ten_thousand_nodes_stay_within_the_budget_and_significant_changes_go_first() {
        let sim = simulate(10_000, 20, 240, true);
        // The budget: one second's worth at once, then writes_per_s.
        assert!(sim.writes <= 20 * sim.seconds + 20, "{} writes", sim.writes);
        // It is used: from 30 s on (the first steady writes are due) every token goes.
        assert!(
            sim.writes >= 20 * (sim.seconds - 31),
            "{} writes",
            sim.writes
        );
        // Every significant change was written within 2 s (ticks are 1 s apart).
        assert!(sim.latencies.len() >= 3 * 20);
        assert!(
            sim.latencies.iter().all(|&l| l <= 2_000),
            "{:?}",
            sim.latencies
        );
        // Silence is noticed after stale_after_ms (45 s) and written at the next tick or so.
        assert!(!sim.silent_latencies.is_empty());
        assert!(
            sim.silent_latencies
                .iter()
                .all(|&l| (45_000..=47_000).contains(&l)),
            "{:?}",
            sim.silent_latencies
        );
        // 10,000 nodes at 20/s are refreshed every 500 s: in 240 s no node was written twice
        // while others waited (oldest write first).
        assert!(sim.steady.iter().all(|w| w.len() <= 1));
    }

    #[test]
    fn with_budget_enough_every_node_is_refreshed_every_steady_interval() {
        // 10,000 nodes every 30 s need 334 writes/s; at 400/s one wave takes 25 s.
        let sim = simulate(10_000, 400, 180, false);
        assert!(sim.writes <= 400 * sim.seconds + 400);
        let mut gaps = Vec::new();
        for writes in &sim.steady {
            assert!(!writes.is_empty());
            // The first refresh of a node comes at most 30 s + one wave after the start.
            assert!(writes[0] <= 30_000 + 26_000, "{writes:?}");
            gaps.extend(writes.windows(2).map(|w| w[1] - w[0]));
        }
        let (min, max) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
        eprintln!("steady gaps between writes of a node: {min}..{max} ms");
        assert!(*min >= 30_000);
        assert!(*max <= 30_000 + 26_000);
        // In the last minute, after the start's wave has spread: at most one write per node per
        // ~30 s (a tick of rounding), so ~10,000 / 30 writes a second, not 1,000.
        let last_minute = sim
            .steady
            .iter()
            .flatten()
            .filter(|&&t| t > (sim.seconds - 60) * 1_000)
            .count();
        eprintln!("last minute: {:.1} writes/s", last_minute as f64 / 60.0);
        assert!(last_minute as f64 / 60.0 <= 10_000.0 / 30.0 * 1.05);
    }
}
