//! Which payload travels on which topic: packet and payload size caps, and decoding a node's message
//! together with the topic it arrived on.
//!
//! The topic is authoritative: the cloud broker's ACLs fence a node to `ef/v1/node/<its id>/…`, but
//! nothing fences what a payload claims. A receiver therefore decodes a node's message with
//! [`TopicPayload::decode_on`], which refuses a payload whose ids disagree with its topic (node `a`
//! publishing a status that claims to be node `b`'s).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};
use crate::topic::Topic;

/// Largest MQTT packet edgefleet sends on the uplink (cloud broker), in bytes. Uplink clients set
/// their maximum packet size to this (rumqttc: `set_max_packet_size`, whose default is only 10 KiB);
/// the cloud broker may enforce it (mosquitto: `max_packet_size`). Module chunks, signed assignments
/// and upstream messages are all bounded well below it.
pub const MAX_UPLINK_PACKET_BYTES: usize = 256 * 1024;

/// Largest payload on the device broker (a device's message, a handler's command), in bytes; also the
/// ceiling of [`ClassLimits::max_output_bytes`](crate::ClassLimits::max_output_bytes). Device-broker
/// clients set their maximum packet size to at least this plus 1 KiB for the topic and header.
pub const MAX_DEVICE_PAYLOAD_BYTES: usize = 128 * 1024;

/// Room left in an uplink packet for the fixed header and the longest topic.
const TOPIC_ROOM: usize = 1024;

// Every uplink payload fits a packet with its topic; checked when the crate is compiled.
const _: () = {
    assert!(crate::manifest::MAX_CHUNK_SIZE as usize + TOPIC_ROOM <= MAX_UPLINK_PACKET_BYTES);
    assert!(crate::manifest::DEFAULT_CHUNK_SIZE <= crate::manifest::MAX_CHUNK_SIZE);
    assert!(crate::Signed::<crate::Assignment>::MAX_LEN + TOPIC_ROOM <= MAX_UPLINK_PACKET_BYTES);
    assert!(<crate::NodeStatus as TopicPayload>::MAX_LEN + TOPIC_ROOM <= MAX_UPLINK_PACKET_BYTES);
    assert!(<crate::AgentEvent as TopicPayload>::MAX_LEN + TOPIC_ROOM <= MAX_UPLINK_PACKET_BYTES);
    assert!(
        <crate::UpstreamMessage as TopicPayload>::MAX_LEN + TOPIC_ROOM <= MAX_UPLINK_PACKET_BYTES
    );
};

/// Why a node's message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The payload could not be decoded, or was too large.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The payload belongs on another topic than the one it arrived on.
    #[error("payload for {belongs_on} arrived on {arrived_on}")]
    TopicMismatch {
        /// The topic the message arrived on.
        arrived_on: String,
        /// The topic the payload's ids make.
        belongs_on: String,
    },
}

/// A message a node publishes on a topic of its own, the topic being a function of the message.
pub trait TopicPayload: Serialize + DeserializeOwned {
    /// Largest encoded message accepted, in bytes.
    const MAX_LEN: usize;

    /// The topic this message is published on.
    fn topic(&self) -> Topic;

    /// Decodes `bytes` that arrived on `topic`: at most [`Self::MAX_LEN`] bytes, and the message must
    /// belong on exactly that topic.
    fn decode_on(topic: &Topic, bytes: &[u8]) -> Result<Self, WireError> {
        let message: Self = codec::decode(bytes, Self::MAX_LEN)?;
        let belongs_on = message.topic();
        if belongs_on != *topic {
            return Err(WireError::TopicMismatch {
                arrived_on: topic.to_string(),
                belongs_on: belongs_on.to_string(),
            });
        }
        Ok(message)
    }
}
