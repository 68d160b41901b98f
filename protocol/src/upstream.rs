//! Upstream messages: what handlers publish toward the cloud, forwarded by the agent's outbox on
//! `ef/v1/node/<node>/up/<class>/<device>/<topic>`.
//!
//! Delivery is at least once: the outbox keeps a message until the cloud broker acknowledges it
//! (QoS 1) and resends it after a reconnect, so a consumer may see it twice. `(node, epoch, seq)`
//! identifies a message: `seq` increases by one per message in a node's outbox and survives agent
//! restarts with the outbox; `epoch` changes when the outbox is created afresh (first start, lost
//! disk), so a restarted sequence is not mistaken for duplicates. A consumer de-duplicates on
//! [`UpstreamMessage::dedup_key`], e.g. with a window of recently seen `seq`s per node and epoch (MQTT
//! orders messages per topic, not across a node's topics, so "highest seq seen" is not enough).

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::id::{ClassId, DeviceId, NodeId};
use crate::topic::{ClassTopic, Topic};
use crate::wire::{MAX_DEVICE_PAYLOAD_BYTES, TopicPayload};

/// A handler's upstream publish, as the cloud receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamMessage {
    /// The node whose agent ran the handler.
    pub node: NodeId,
    /// The handler's class.
    pub class: ClassId,
    /// The device whose interaction produced the message.
    pub device: DeviceId,
    /// The class-relative topic the handler published on (allowed by the class's limits).
    pub topic: ClassTopic,
    /// The module version that produced it.
    pub module: Sha256Digest,
    /// The handler's payload (CBOR by convention of the class; opaque here).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// The interaction's time (the handler's `now_ms`), in ms since the UNIX epoch.
    pub at_ms: u64,
    /// Identifies the node's outbox incarnation (see the module documentation).
    pub epoch: u64,
    /// Position in the node's outbox within `epoch`, from 0, increasing by one per message.
    pub seq: u64,
}

impl UpstreamMessage {
    /// The key a consumer de-duplicates on: (node, epoch, seq).
    pub fn dedup_key(&self) -> (&NodeId, u64, u64) {
        (&self.node, self.epoch, self.seq)
    }
}

impl TopicPayload for UpstreamMessage {
    const MAX_LEN: usize = MAX_DEVICE_PAYLOAD_BYTES + 1024;

    fn topic(&self) -> Topic {
        Topic::Upstream {
            node: self.node.clone(),
            class: self.class.clone(),
            device: self.device.clone(),
            topic: self.topic.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn topic_and_dedup_key() {
        let message = UpstreamMessage {
            node: NodeId::new("edge-1").unwrap(),
            class: ClassId::new("meter").unwrap(),
            device: DeviceId::new("m-9").unwrap(),
            topic: ClassTopic::new("event/tamper").unwrap(),
            module: Sha256Digest::of(b"meter"),
            payload: vec![1, 2, 3],
            at_ms: 5,
            epoch: 77,
            seq: 12,
        };
        assert_eq!(
            message.topic().to_string(),
            "ef/v1/node/edge-1/up/meter/m-9/event/tamper"
        );
        assert!(!message.topic().retained());
        assert_eq!(message.dedup_key(), (&message.node, 77, 12));
        let bytes = codec::encode(&message);
        // The payload is a CBOR byte string, not an array of integers.
        assert!(bytes.windows(4).any(|w| w == [0x43, 1, 2, 3]));
        assert_eq!(
            UpstreamMessage::decode_on(&message.topic(), &bytes),
            Ok(message)
        );
    }
}
