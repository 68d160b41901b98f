//! Agent events: noteworthy things an agent did or refused, published on `ef/v1/node/<node>/event`
//! (not retained). The controller turns them into Kubernetes Events (`reason` = [`EventKind::as_str`],
//! `type` = Normal or Warning after [`EventKind::is_warning`]) and uses quarantines and failures in
//! its rollout health decisions.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::id::{ClassId, DeviceId, NodeId};
use crate::topic::Topic;
use crate::wire::TopicPayload;

/// Longest [`AgentEvent::detail`], in bytes; [`AgentEvent::new`] truncates longer text.
pub const MAX_DETAIL_BYTES: usize = 1024;

/// Something an agent did or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEvent {
    /// When, in ms since the UNIX epoch.
    pub at_ms: u64,
    /// The node the agent runs on.
    pub node: NodeId,
    /// What happened.
    pub kind: EventKind,
    /// The class concerned, if any.
    pub class: Option<ClassId>,
    /// The device concerned, if any.
    pub device: Option<DeviceId>,
    /// The module concerned, if any.
    pub module: Option<Sha256Digest>,
    /// The assignment generation concerned, if any.
    pub generation: Option<u64>,
    /// What happened, for humans (at most [`MAX_DETAIL_BYTES`]).
    pub detail: String,
}

/// What happened. Unknown kinds from a newer agent decode as [`EventKind::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// An assignment was verified and its module activated.
    AssignmentApplied,
    /// An assignment was refused: bad signature, untrusted key, wrong node or class, stale
    /// generation, invalid content.
    AssignmentRejected,
    /// A class was withdrawn from the node.
    ClassWithdrawn,
    /// A module was refused: digest or size mismatch, unsupported ABI, forbidden imports, too large.
    ModuleRefused,
    /// A module version was stopped for its failures.
    ModuleQuarantined,
    /// A quarantined module version was allowed to run again.
    ModuleReleased,
    /// The agent fell back to the class's previous module (after a quarantine).
    RolledBack,
    /// A device message was not valid for its class.
    MalformedPayload,
    /// A device message arrived for a class this node does not have.
    UnknownClass,
    /// A message arrived on a topic outside the namespace or with invalid levels.
    BadTopic,
    /// A message larger than allowed was dropped.
    OversizedPayload,
    /// The outbox is full; new messages are being dropped.
    OutboxFull,
    /// Messages were dropped from the outbox.
    OutboxDropped,
    /// An interaction failed (trap, timeout, limit, worker crash).
    InteractionFailed,
    /// A device sent more than its class's rate budget; the excess was dropped.
    DeviceOverBudget,
    /// Device messages could not be handled because of a fault of the node itself (workers
    /// unavailable, the store failing); they were left for the broker to deliver again.
    HostFault,
    /// A kind this side does not know (sent by a newer agent).
    #[serde(other)]
    Other,
}

impl EventKind {
    /// The kind's name, CamelCase (a Kubernetes Event `reason`).
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::AssignmentApplied => "AssignmentApplied",
            EventKind::AssignmentRejected => "AssignmentRejected",
            EventKind::ClassWithdrawn => "ClassWithdrawn",
            EventKind::ModuleRefused => "ModuleRefused",
            EventKind::ModuleQuarantined => "ModuleQuarantined",
            EventKind::ModuleReleased => "ModuleReleased",
            EventKind::RolledBack => "RolledBack",
            EventKind::MalformedPayload => "MalformedPayload",
            EventKind::UnknownClass => "UnknownClass",
            EventKind::BadTopic => "BadTopic",
            EventKind::OversizedPayload => "OversizedPayload",
            EventKind::OutboxFull => "OutboxFull",
            EventKind::OutboxDropped => "OutboxDropped",
            EventKind::InteractionFailed => "InteractionFailed",
            EventKind::DeviceOverBudget => "DeviceOverBudget",
            EventKind::HostFault => "HostFault",
            EventKind::Other => "Other",
        }
    }

    /// Whether the event signals a problem (a Kubernetes Warning rather than Normal event).
    pub fn is_warning(&self) -> bool {
        !matches!(
            self,
            EventKind::AssignmentApplied | EventKind::ClassWithdrawn | EventKind::ModuleReleased
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AgentEvent {
    /// An event with no class, device, module or generation; `detail` is cut to
    /// [`MAX_DETAIL_BYTES`] at a character boundary.
    pub fn new(at_ms: u64, node: NodeId, kind: EventKind, detail: impl Into<String>) -> AgentEvent {
        let mut detail = detail.into();
        if detail.len() > MAX_DETAIL_BYTES {
            let mut end = MAX_DETAIL_BYTES;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        AgentEvent {
            at_ms,
            node,
            kind,
            class: None,
            device: None,
            module: None,
            generation: None,
            detail,
        }
    }

    /// Names the class concerned.
    pub fn with_class(mut self, class: ClassId) -> AgentEvent {
        self.class = Some(class);
        self
    }

    /// Names the device concerned.
    pub fn with_device(mut self, device: DeviceId) -> AgentEvent {
        self.device = Some(device);
        self
    }

    /// Names the module concerned.
    pub fn with_module(mut self, module: Sha256Digest) -> AgentEvent {
        self.module = Some(module);
        self
    }

    /// Names the assignment generation concerned.
    pub fn with_generation(mut self, generation: u64) -> AgentEvent {
        self.generation = Some(generation);
        self
    }
}

impl TopicPayload for AgentEvent {
    const MAX_LEN: usize = 4 * 1024;

    fn topic(&self) -> Topic {
        Topic::Event {
            node: self.node.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn node() -> NodeId {
        NodeId::new("edge-1").unwrap()
    }

    #[test]
    fn truncates_detail_at_a_char_boundary() {
        let long = "é".repeat(MAX_DETAIL_BYTES);
        let event = AgentEvent::new(1, node(), EventKind::BadTopic, long);
        assert_eq!(event.detail.len(), MAX_DETAIL_BYTES);
        assert!(event.detail.chars().all(|c| c == 'é'));
        let odd = format!("x{}", "é".repeat(MAX_DETAIL_BYTES));
        let event = AgentEvent::new(1, node(), EventKind::BadTopic, odd);
        assert_eq!(event.detail.len(), MAX_DETAIL_BYTES - 1);
        assert_eq!(
            AgentEvent::new(1, node(), EventKind::BadTopic, "short").detail,
            "short"
        );
    }

    #[test]
    fn kinds_encode_as_their_names() {
        for kind in [
            EventKind::AssignmentApplied,
            EventKind::ModuleQuarantined,
            EventKind::OutboxDropped,
            EventKind::Other,
        ] {
            assert_eq!(codec::encode(&kind), codec::encode(kind.as_str()));
            assert_eq!(
                codec::decode::<EventKind>(&codec::encode(&kind), 64),
                Ok(kind)
            );
        }
        assert!(!EventKind::AssignmentApplied.is_warning());
        assert!(EventKind::ModuleQuarantined.is_warning());
    }

    #[test]
    fn unknown_kinds_from_newer_agents_decode_as_other() {
        assert_eq!(
            codec::decode::<EventKind>(&codec::encode("SomethingNew"), 64),
            Ok(EventKind::Other)
        );
    }

    #[test]
    fn largest_event_fits() {
        let event = AgentEvent::new(
            u64::MAX,
            NodeId::new("n".repeat(64)).unwrap(),
            EventKind::InteractionFailed,
            "\u{10ffff}".repeat(MAX_DETAIL_BYTES),
        )
        .with_class(ClassId::new("c".repeat(64)).unwrap())
        .with_device(DeviceId::new("d".repeat(64)).unwrap())
        .with_module(Sha256Digest::of(b"m"))
        .with_generation(u64::MAX);
        assert!(codec::encode(&event).len() <= AgentEvent::MAX_LEN);
    }
}
