//! Node status: what an agent reports about itself, retained on `ef/v1/node/<node>/status`, and what
//! the controller writes back to Kubernetes and judges a rollout's health by.
//!
//! The agent publishes a full status periodically and on every change of assignment, module, link or
//! quarantine. Its MQTT last will, registered at connect time, is [`NodeStatus::last_will`]: an
//! offline status without per-class data (its timestamps are those of the connect). A consumer keeps
//! the per-class data of the last online status when an offline one arrives, and should trust its own
//! receive time over `updated_at_ms` for staleness.
//!
//! Counters (interactions, errors, …) are cumulative since `started_at_ms`; when `started_at_ms`
//! changes the agent restarted and the counters started again from zero, so health is judged on the
//! differences between two statuses of one agent run.

use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::assignment::Rollout;
use crate::id::{ClassId, NodeId};
use crate::manifest::ModuleRef;
use crate::topic::Topic;
use crate::wire::TopicPayload;

/// The window of [`ClassStatus::active_devices`] and [`NodeStatus::active_devices`], in ms.
pub const ACTIVE_DEVICE_WINDOW_MS: u64 = 60_000;

/// An edge node's state, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub node: NodeId,
    /// Online, or offline (the last will, or a clean shutdown).
    pub state: NodeState,
    /// The agent's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The agent's version (its crate version, plus a build id if any).
    pub agent_version: String,
    /// The WasmEdge library version the agent runs handlers with.
    pub wasmedge_version: String,
    /// The guest ABI version the agent's sandbox supports (see docs/guest-abi.md).
    pub guest_abi_version: u32,
    /// When the agent process started, in ms since the UNIX epoch; counters count from here.
    pub started_at_ms: u64,
    /// When this status was produced, in ms since the UNIX epoch.
    pub updated_at_ms: u64,
    /// The agent's connection to the cloud broker.
    pub uplink: LinkStatus,
    /// The agent's connection to the device broker.
    pub device_link: LinkStatus,
    /// The store-and-forward queue of messages waiting for the uplink.
    pub outbox: OutboxStatus,
    /// Devices of every class heard from in the last [`ACTIVE_DEVICE_WINDOW_MS`].
    pub active_devices: u32,
    /// Distinct devices of every class heard from since `started_at_ms`.
    pub seen_devices: u32,
    /// Interactions per second over every class, averaged since the previous status.
    pub interactions_per_sec: f64,
    /// One entry per class assigned to the node (withdrawn classes are left out).
    pub classes: Vec<ClassStatus>,
}

/// Whether an agent is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// The agent runs and its uplink is connected.
    Online,
    /// The agent's uplink is gone (last will) or the agent shut down.
    Offline,
}

/// The state of one MQTT connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Connected or not.
    pub state: LinkState,
    /// Since when the link is in `state`, in ms since the UNIX epoch.
    pub since_ms: u64,
    /// Reconnections since `started_at_ms` (a flapping link shows here).
    pub reconnects: u64,
    /// The last connection error, if any since `started_at_ms`.
    pub last_error: Option<String>,
}

/// Connected or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// Connected to the broker.
    Connected,
    /// Trying to (re)connect.
    Connecting,
    /// Not connected and not trying (not configured yet, or shutting down).
    #[default]
    Disconnected,
}

/// The store-and-forward queue of upstream messages and events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStatus {
    /// Messages waiting.
    pub depth: u64,
    /// Messages it can hold.
    pub capacity: u64,
    /// Messages dropped because it was full, since `started_at_ms`.
    pub dropped: u64,
    /// When the oldest waiting message was queued, in ms since the UNIX epoch.
    pub oldest_at_ms: Option<u64>,
}

/// One class on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassStatus {
    /// The class.
    pub class: ClassId,
    /// The generation of the assignment applied last, if any.
    pub generation: Option<u64>,
    /// The rollout step of that assignment.
    pub rollout: Option<Rollout>,
    /// The module handling the class's devices now (`None`: none loaded yet, or quarantined without
    /// a previous one to fall back to).
    pub active: Option<ModuleRef>,
    /// The module active before it, kept to fall back to.
    pub previous: Option<ModuleRef>,
    /// A module of a newer assignment still being fetched.
    pub pending: Option<PendingModule>,
    /// The last error for this class (refused assignment or module, failed interaction, ...).
    pub last_error: Option<ErrorReport>,
    /// Devices of this class heard from in the last [`ACTIVE_DEVICE_WINDOW_MS`].
    pub active_devices: u32,
    /// Distinct devices of this class heard from since `started_at_ms`.
    pub seen_devices: u32,
    /// Interactions per second, averaged since the previous status.
    pub interactions_per_sec: f64,
    /// Counters per module version run since `started_at_ms` (the active, previous and quarantined
    /// ones at least).
    pub modules: Vec<ModuleStats>,
    /// The shadow version the assignment asks to try beside the active one, and how it agrees.
    #[serde(default)]
    pub shadow: Option<ShadowReport>,
}

/// Longest [`Divergence::detail`], in bytes.
pub const MAX_DIVERGENCE_DETAIL_BYTES: usize = 512;

/// Most [`ShadowReport::examples`] an agent reports.
pub const MAX_DIVERGENCE_EXAMPLES: usize = 3;

/// How a shadow version's outputs compared with the active version's on the same interactions,
/// since `started_at_ms` (or since the shadow was assigned, if later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowReport {
    /// The shadow version.
    pub module: ModuleRef,
    /// Interactions both versions ran and were compared on.
    pub compared: u64,
    /// Of which both produced the same commands, upstream messages and new state (or failed
    /// alike).
    pub agreed: u64,
    /// Interactions the shadow could not run (its module not loaded yet, quarantined, or the node
    /// too busy to run both); not compared.
    pub skipped: u64,
    /// The latest divergences (at most [`MAX_DIVERGENCE_EXAMPLES`], newest last).
    pub examples: Vec<Divergence>,
}

/// One interaction on which the shadow version disagreed with the active one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// When, in ms since the UNIX epoch.
    pub at_ms: u64,
    /// The device whose message it was.
    pub device: String,
    /// What differed, for humans (at most [`MAX_DIVERGENCE_DETAIL_BYTES`]), e.g.
    /// `commands: active [{"heat":true}], shadow []`.
    pub detail: String,
}

/// A module being fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingModule {
    /// The module.
    pub module: ModuleRef,
    /// The generation of the assignment that asks for it.
    pub generation: u64,
    /// Chunks received and verified.
    pub received_chunks: u32,
    /// Chunks in the module.
    pub total_chunks: u32,
}

/// An error, with when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// When, in ms since the UNIX epoch.
    pub at_ms: u64,
    /// What, for humans.
    pub message: String,
}

/// How one module version fared on this node, since `started_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleStats {
    /// The module version.
    pub module: ModuleRef,
    /// Interactions run, successful or not.
    pub interactions: u64,
    /// Interactions that committed nothing, whatever the cause: `traps`, `timeouts` and
    /// `rejections` are parts of this count; the rest are limit violations and worker crashes.
    pub errors: u64,
    /// Interactions ended by a trap.
    pub traps: u64,
    /// Interactions that overran their time budget.
    pub timeouts: u64,
    /// Interactions whose handler rejected the message (a non-zero return): usually the device's
    /// fault rather than the module's.
    pub rejections: u64,
    /// Whether the agent quarantined this version (stopped running it for its failures).
    pub quarantined: bool,
}

impl NodeStatus {
    /// The status an agent registers as its MQTT last will when it connects: offline, no classes,
    /// links disconnected, `updated_at_ms` = `connected_at_ms`.
    pub fn last_will(
        node: NodeId,
        agent_version: impl Into<String>,
        wasmedge_version: impl Into<String>,
        guest_abi_version: u32,
        started_at_ms: u64,
        connected_at_ms: u64,
    ) -> NodeStatus {
        NodeStatus {
            node,
            state: NodeState::Offline,
            protocol_version: PROTOCOL_VERSION,
            agent_version: agent_version.into(),
            wasmedge_version: wasmedge_version.into(),
            guest_abi_version,
            started_at_ms,
            updated_at_ms: connected_at_ms,
            uplink: LinkStatus::default(),
            device_link: LinkStatus::default(),
            outbox: OutboxStatus::default(),
            active_devices: 0,
            seen_devices: 0,
            interactions_per_sec: 0.0,
            classes: Vec::new(),
        }
    }

    /// The status of `class`, if the node has it.
    pub fn class(&self, class: &ClassId) -> Option<&ClassStatus> {
        self.classes.iter().find(|c| c.class == *class)
    }
}

impl TopicPayload for NodeStatus {
    const MAX_LEN: usize = 128 * 1024;

    fn topic(&self) -> Topic {
        Topic::Status {
            node: self.node.clone(),
        }
    }
}

impl ClassStatus {
    /// The counters of module `sha256`, if it ran here.
    pub fn module(&self, sha256: &crate::Sha256Digest) -> Option<&ModuleStats> {
        self.modules.iter().find(|m| m.module.sha256 == *sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::digest::Sha256Digest;

    fn module(name: &str) -> ModuleRef {
        ModuleRef {
            name: name.into(),
            version: "1.0.0".into(),
            sha256: Sha256Digest::of(name.as_bytes()),
        }
    }

    #[test]
    fn last_will_is_an_offline_status_on_the_status_topic() {
        let node = NodeId::new("edge-1").unwrap();
        let will = NodeStatus::last_will(node.clone(), "0.1.0", "0.17.1", 1, 100, 250);
        assert_eq!(will.state, NodeState::Offline);
        assert_eq!(will.protocol_version, PROTOCOL_VERSION);
        assert_eq!((will.started_at_ms, will.updated_at_ms), (100, 250));
        assert_eq!(will.uplink.state, LinkState::Disconnected);
        assert!(will.classes.is_empty());
        assert_eq!(will.topic().to_string(), "ef/v1/node/edge-1/status");
        assert!(will.topic().retained());
        let bytes = codec::encode(&will);
        assert_eq!(NodeStatus::decode_on(&will.topic(), &bytes), Ok(will));
    }

    #[test]
    fn looks_up_classes_and_modules() {
        let thermo = ClassId::new("thermo").unwrap();
        let class = ClassStatus {
            class: thermo.clone(),
            generation: Some(3),
            rollout: None,
            shadow: None,
            active: Some(module("b")),
            previous: Some(module("a")),
            pending: None,
            last_error: None,
            active_devices: 1,
            seen_devices: 2,
            interactions_per_sec: 0.5,
            modules: [module("a"), module("b")]
                .into_iter()
                .map(|module| ModuleStats {
                    quarantined: module.name == "a",
                    module,
                    interactions: 1,
                    errors: 0,
                    traps: 0,
                    timeouts: 0,
                    rejections: 0,
                })
                .collect(),
        };
        let mut status = NodeStatus::last_will(NodeId::new("n").unwrap(), "v", "w", 1, 0, 0);
        status.classes.push(class);
        let found = status.class(&thermo).unwrap();
        assert!(found.module(&module("a").sha256).unwrap().quarantined);
        assert!(!found.module(&module("b").sha256).unwrap().quarantined);
        assert!(found.module(&module("c").sha256).is_none());
        assert!(status.class(&ClassId::new("door").unwrap()).is_none());
    }
}
