//! The controller's connection to the cloud broker: what it reads (node statuses and events, and its
//! own retained assignments and chunks read back) and what it publishes.
//!
//! On every connection it subscribes again and the broker delivers every retained assignment and
//! chunk; the controller rebuilds what is published from them (`distribution`). To know when that
//! replay is over (MQTT has no end-of-retained marker) it then publishes a marker to itself on
//! `ef/v1/fleet/controller/sync/<nonce>`: the broker delivers a connection's messages in order, so
//! the marker arrives after every retained message of the subscriptions made before it.
//!
//! The rollout records (`rollout`) are retained on `ef/v1/fleet/controller/rollout/<class>` and
//! read back the same way.
//!
//! A polling task owns the rumqttc event loop and never waits on the controller for long: what it
//! receives goes into a bounded channel (when the controller falls behind, the task stops reading
//! and TCP pushes back on the broker, which queues for the controller's persistent session). A lost
//! connection is retried with backoff (1 s doubling to 30 s; rumqttc itself would retry at once).

use std::sync::Arc;
use std::time::Duration;

use edgefleet_protocol::topic::{self, Topic};
use edgefleet_protocol::wire::{MAX_UPLINK_PACKET_BYTES, TopicPayload};
use edgefleet_protocol::{
    AgentEvent, Assignment, ClassId, NodeId, NodeStatus, Sha256Digest, Signed,
};
use rumqttc::{
    AsyncClient, Event, Incoming, MqttOptions, QoS, SubscribeFilter, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;

/// Where the marker that ends a retained replay is published (the controller's own topic space).
const SYNC_TOPIC_PREFIX: &str = "ef/v1/fleet/controller/sync";

/// Where each class's rollout record is retained.
const ROLLOUT_TOPIC_PREFIX: &str = "ef/v1/fleet/controller/rollout";

/// The topic of a class's rollout record.
pub fn rollout_topic(class: &str) -> String {
    format!("{ROLLOUT_TOPIC_PREFIX}/{class}")
}

/// Largest rollout record, in bytes: one packet with its topic.
pub const MAX_RECORD_BYTES: usize = MAX_UPLINK_PACKET_BYTES - 1024;

/// How to reach the cloud broker.
#[derive(Clone)]
pub struct CloudSettings {
    /// Host name (or address) of the broker; with TLS it must be in the broker certificate.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Mutual TLS; `None` is plain TCP (tests and development only).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The MQTT client id (the broker forces it to the certificate's common name).
    pub client_id: String,
}

/// What the cloud broker delivered, in order.
#[derive(Debug)]
pub enum FromCloud {
    /// A new connection: what was read back before is void until the next `Synced`.
    Connected,
    /// Every retained assignment and chunk of this connection has been delivered.
    Synced,
    /// The connection was lost (the task reconnects).
    Lost(String),
    /// A node's status.
    Status(Box<NodeStatus>),
    /// A node's event.
    Event(Box<AgentEvent>),
    /// A retained assignment read back; `None` when it was removed.
    Assignment {
        /// The node of its topic.
        node: NodeId,
        /// The class of its topic.
        class: ClassId,
        /// The signed assignment.
        assignment: Option<Box<Signed<Assignment>>>,
    },
    /// A retained chunk read back: the digest of its bytes, `None` when it was removed.
    Chunk {
        /// The module of its topic.
        module: Sha256Digest,
        /// The chunk index.
        index: u32,
        /// The digest of its bytes.
        digest: Option<Sha256Digest>,
    },
    /// A class's rollout record read back; `None` when it was removed.
    Rollout {
        /// The class of its topic.
        class: String,
        /// The record.
        record: Option<Box<crate::rollout::Record>>,
    },
    /// A message that could not be decoded: counted and logged, otherwise ignored.
    Refused {
        /// The topic it came on.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// Why a publication could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The polling task is gone (the controller is shutting down).
    #[error("the cloud broker connection is closed")]
    Closed,
}

/// The publishing half of the connection.
#[derive(Clone)]
pub struct Cloud {
    client: AsyncClient,
}

impl Cloud {
    /// Connects (in the background) and returns the publishing half and what the broker delivers.
    pub fn start(settings: CloudSettings) -> (Cloud, mpsc::Receiver<FromCloud>) {
        let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
        options
            .set_keep_alive(Duration::from_secs(15))
            // Events queued by the broker while the controller restarts are not lost.
            .set_clean_session(false)
            .set_max_packet_size(MAX_UPLINK_PACKET_BYTES, MAX_UPLINK_PACKET_BYTES)
            .set_inflight(100);
        if let Some(tls) = settings.tls {
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls)));
        }
        let (client, eventloop) = AsyncClient::new(options, 1024);
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(poll(client.clone(), eventloop, tx));
        (Cloud { client }, rx)
    }

    /// Publishes a retained message (QoS 1); an empty payload removes the retained one.
    pub async fn publish_retained(
        &self,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<(), CloudError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
            .map_err(|_| CloudError::Closed)
    }

    /// Disconnects cleanly.
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}

async fn poll(client: AsyncClient, mut eventloop: rumqttc::EventLoop, tx: mpsc::Sender<FromCloud>) {
    let mut backoff = Duration::from_secs(1);
    let mut marker = String::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                backoff = Duration::from_secs(1);
                marker = format!("{SYNC_TOPIC_PREFIX}/{:016x}", nonce());
                if tx.send(FromCloud::Connected).await.is_err() {
                    return;
                }
                let client = client.clone();
                let marker = marker.clone();
                // Queued from another task: the request channel is drained by this loop.
                tokio::spawn(async move {
                    let filters = [
                        topic::NODE_STATUS_FILTER.to_string(),
                        topic::NODE_EVENT_FILTER.to_string(),
                        "ef/v1/node/+/assign/+".to_string(),
                        "ef/v1/module/+/chunk/+".to_string(),
                        format!("{ROLLOUT_TOPIC_PREFIX}/+"),
                        marker.clone(),
                    ]
                    .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce));
                    let _ = client.subscribe_many(filters).await;
                    let _ = client
                        .publish(marker, QoS::AtLeastOnce, false, Vec::new())
                        .await;
                });
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                let message = if publish.topic == marker {
                    FromCloud::Synced
                } else {
                    decode(&publish.topic, &publish.payload)
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if tx.send(FromCloud::Lost(e.to_string())).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// What one delivered message means.
fn decode(topic: &str, payload: &[u8]) -> FromCloud {
    let refused = |reason: String| FromCloud::Refused {
        topic: topic.chars().take(256).collect(),
        reason,
    };
    if let Some(class) = topic
        .strip_prefix(ROLLOUT_TOPIC_PREFIX)
        .and_then(|t| t.strip_prefix('/'))
    {
        if payload.is_empty() {
            return FromCloud::Rollout {
                class: class.to_string(),
                record: None,
            };
        }
        return match edgefleet_protocol::codec::decode(payload, MAX_RECORD_BYTES) {
            Ok(record) => FromCloud::Rollout {
                class: class.to_string(),
                record: Some(Box::new(record)),
            },
            Err(e) => refused(format!("rollout record: {e}")),
        };
    }
    let parsed = match Topic::parse(topic) {
        Ok(parsed) => parsed,
        Err(e) => return refused(e.to_string()),
    };
    match parsed {
        Topic::Status { .. } => match NodeStatus::decode_on(&parsed, payload) {
            Ok(status) => FromCloud::Status(Box::new(status)),
            Err(e) => refused(e.to_string()),
        },
        Topic::Event { .. } => match AgentEvent::decode_on(&parsed, payload) {
            Ok(event) => FromCloud::Event(Box::new(event)),
            Err(e) => refused(e.to_string()),
        },
        Topic::Assignment { node, class } if payload.is_empty() => FromCloud::Assignment {
            node,
            class,
            assignment: None,
        },
        Topic::Assignment { node, class } => match Signed::<Assignment>::decode(payload) {
            Ok(signed) => FromCloud::Assignment {
                node,
                class,
                assignment: Some(Box::new(signed)),
            },
            Err(e) => refused(e.to_string()),
        },
        Topic::ModuleChunk { module, index } => FromCloud::Chunk {
            module,
            index,
            digest: (!payload.is_empty()).then(|| Sha256Digest::of(payload)),
        },
        _ => refused("not a topic the controller reads".into()),
    }
}

fn nonce() -> u64 {
    let mut bytes = [0u8; 8];
    // The nonce only tells this connection's marker from an older one: the time is enough if the
    // system has no randomness to give.
    if getrandom::fill(&mut bytes).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    }
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_decoded_by_their_topic_and_garbage_is_refused() {
        assert!(matches!(
            decode("ef/v1/node/edge-1/status", b"\xff\x00"),
            FromCloud::Refused { .. }
        ));
        assert!(matches!(
            decode("somewhere/else", b""),
            FromCloud::Refused { .. }
        ));
        assert!(matches!(
            decode("ef/v1/node/edge-1/assign/thermo", b""),
            FromCloud::Assignment {
                assignment: None,
                ..
            }
        ));
        let sha = Sha256Digest::of(b"module");
        match decode(&format!("ef/v1/module/{sha}/chunk/3"), b"chunk") {
            FromCloud::Chunk {
                module,
                index: 3,
                digest,
            } => {
                assert_eq!(module, sha);
                assert_eq!(digest, Some(Sha256Digest::of(b"chunk")));
            }
            other => panic!("{other:?}"),
        }
        let status = NodeStatus::last_will(NodeId::new("edge-1").unwrap(), "a", "w", 1, 1, 2);
        let bytes = edgefleet_protocol::codec::encode(&status);
        assert!(matches!(
            decode("ef/v1/node/edge-1/status", &bytes),
            FromCloud::Status(_)
        ));
        // A status naming another node than its topic.
        assert!(matches!(
            decode("ef/v1/node/edge-2/status", &bytes),
            FromCloud::Refused { .. }
        ));
    }
}
