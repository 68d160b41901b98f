//! The protocol shared by the edge agent, the cloud controller and the simulators.
//!
//! Everything two edgefleet components exchange is defined here, once: the MQTT topic namespace,
//! the CBOR messages, module manifests and their signatures, and the per-class limits a handler runs
//! under.
//!
//! | module | owns |
//! |---|---|
//! | [`id`] | node, class and device identifiers (one topic level each) |
//! | [`topic`] | the topic namespace: builders, parsers, class-relative topics, filter matching |
//! | [`codec`] | the CBOR encoding (the only user of the CBOR library) |
//! | [`digest`] | SHA-256 digests |
//! | [`signing`] | ed25519 keys, key files, trust anchors, the `Signed<T>` envelope |
//! | [`manifest`] | module manifests, chunk layout, reassembly |
//! | [`assignment`] | what a node runs for a class (signed) |
//! | [`status`] | what a node reports about itself |
//! | [`event`] | what an agent did or refused |
//! | [`upstream`] | what handlers publish toward the cloud |
//! | [`limits`] | what a handler may use |
//! | [`wire`] | packet and payload caps, decoding a message with its topic |
//!
//! # Topic namespace (v1)
//!
//! `<class>`, `<device>`, `<node>` are one level each ([`id`]); `<channel>` and `<topic>` are
//! class-relative topics of 1–3 levels ([`topic::ClassTopic`]). Every message is QoS 1.
//!
//! | topic | broker | publisher → subscriber | retained | payload |
//! |---|---|---|---|---|
//! | `ef/v1/dev/<class>/<device>/up/<channel>` | device | device → agent | no | the device's message, opaque (CBOR by class convention), ≤ [`wire::MAX_DEVICE_PAYLOAD_BYTES`] |
//! | `ef/v1/dev/<class>/<device>/down/cmd` | device | agent → device | no | a handler's command, opaque |
//! | `ef/v1/node/<node>/status` | cloud | agent → controller | yes | [`NodeStatus`]; also the agent's last will, with state offline |
//! | `ef/v1/node/<node>/event` | cloud | agent → controller | no | [`AgentEvent`] |
//! | `ef/v1/node/<node>/up/<class>/<device>/<topic>` | cloud | agent → controller, data consumers | no | [`UpstreamMessage`] |
//! | `ef/v1/node/<node>/assign/<class>` | cloud | controller → agent | yes | `Signed<`[`Assignment`]`>` |
//! | `ef/v1/module/<sha256>/chunk/<index>` | cloud | controller → agents | yes | raw bytes of chunk `index` of the module blob |
//! | `ef/v1/fleet/controller/sync/<nonce>` | cloud | controller → itself | no | empty: marks the end of the retained replay after the controller subscribes |
//! | `ef/v1/fleet/…` (other) | cloud | controller → agents | — | reserved for fleet-wide broadcasts; unused in v1 |
//!
//! Subscriptions: an agent subscribes on the device broker to [`topic::device_up_filter`] for each
//! assigned class, and on the cloud broker to [`topic::node_assignment_filter`] and to the chunk
//! topics of the modules it fetches ([`topic::module_chunk_filter`], or single chunk topics to
//! resume). The controller subscribes to [`topic::NODE_STATUS_FILTER`],
//! [`topic::NODE_EVENT_FILTER`] and [`topic::NODE_UPSTREAM_FILTER`], and decodes each message with
//! [`wire::TopicPayload::decode_on`], which refuses a payload whose ids disagree with its topic.
//!
//! Broker ACLs (mosquitto) fence each identity to its own levels, which the one-level ids make
//! possible; the rules both brokers run are shipped in `brokers/` (see brokers/README.md).
//!
//! # Module blobs are chunked
//!
//! A module blob (up to [`manifest::MAX_MODULE_BYTES`], 4 MiB by default class limits) is published
//! as retained raw-byte chunks of [`manifest::DEFAULT_CHUNK_SIZE`] (64 KiB; a manifest may choose
//! 16–128 KiB) on `ef/v1/module/<sha256>/chunk/<index>`, not as one message, because:
//!
//! - the uplink is one TCP stream shared with status, events and assignments: a multi-megabyte
//!   publish on a slow edge link holds all of them up (and can outlast the MQTT keep-alive, so the
//!   transfer restarts from zero forever), where chunks interleave with other traffic;
//! - every uplink client can keep a small, fixed maximum packet size
//!   ([`wire::MAX_UPLINK_PACKET_BYTES`], 256 KiB; rumqttc's default is 10 KiB and its buffers are
//!   sized from it), independent of module size, and so can the broker;
//! - an interrupted download resumes: the agent subscribes only to the missing chunks' topics;
//! - each chunk is checked on arrival against its digest in the signed manifest
//!   ([`manifest::ModuleAssembly`]), so a forged or corrupt chunk is refused at once instead of after
//!   megabytes, and the whole blob is checked against `sha256` and `size` before use.
//!
//! The manifest travels inside the signed assignment, so no extra index topic is needed. Chunk topics
//! are content-addressed and immutable; the controller deletes them (empty retained publishes) when
//! no assignment refers to the module any more.
//!
//! # Compatibility rules
//!
//! - The topic prefix carries the protocol version ([`PROTOCOL_VERSION`], [`TOPIC_PREFIX`]); an
//!   incompatible change of topics or messages is a new version, served alongside the old one during
//!   a fleet upgrade.
//! - Within a version, messages are CBOR maps keyed by field name and unknown fields are ignored, so a
//!   field may be added if older readers can ignore it and newer readers give it a `#[serde(default)]`
//!   when it is missing. Fields are never removed or repurposed.
//! - Enums a newer agent may extend ([`EventKind`]) decode unknown variants as a catch-all.
//! - Signed documents are domain-separated by kind ([`signing`]); a new document kind gets a new
//!   [`SignedKind::KIND`].

pub mod assignment;
pub mod codec;
pub mod digest;
pub mod event;
pub mod id;
pub mod limits;
pub mod manifest;
pub mod signing;
pub mod status;
pub mod tls;
pub mod topic;
pub mod upstream;
pub mod wire;

mod fixed_bytes;

pub use assignment::{Assignment, Freshness, HandlerSpec, Rollout, RolloutStage};
pub use codec::CodecError;
pub use digest::Sha256Digest;
pub use event::{AgentEvent, EventKind};
pub use id::{ClassId, DeviceId, NodeId};
pub use limits::ClassLimits;
pub use manifest::{ModuleAssembly, ModuleManifest, ModuleRef};
pub use signing::{KeyId, Signed, SignedKind, SigningKey, TrustAnchor, VerifyingKey};
pub use status::{ClassStatus, NodeState, NodeStatus};
pub use topic::{ClassTopic, TOPIC_PREFIX, Topic, TopicFilter};
pub use upstream::UpstreamMessage;
pub use wire::TopicPayload;

/// The version of this protocol: the `v1` of [`TOPIC_PREFIX`] and of the signature domain.
pub const PROTOCOL_VERSION: u32 = 1;

/// The guest ABI version this protocol's agents and modules speak (docs/guest-abi.md): what
/// [`ModuleManifest::abi_version`] and [`NodeStatus::guest_abi_version`] are compared against.
pub const GUEST_ABI_VERSION: u32 = 1;
