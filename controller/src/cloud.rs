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
//!
//! The same event loop drains the controller's publications, so the task must not stop while the
//! controller waits for room to publish: a round that publishes thousands of assignments (a
//! 10,000-node fleet connecting) fills the request queue, the broker's copies of them (the
//! controller reads its own assignments back) and node statuses fill the channel, and each side
//! would wait for the other for good. So a publication that waits says so ([`Cloud`]'s waiting
//! count), and while one does the task keeps polling and holds what arrives in memory (as much as
//! arrives during the controller's burst), handing it over as the controller takes it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edgefleet_protocol::topic::{self, Topic};
use edgefleet_protocol::wire::{MAX_UPLINK_PACKET_BYTES, TopicPayload};
use edgefleet_protocol::{
    AgentEvent, Assignment, ClassId, NodeId, NodeStatus, Sha256Digest, Signed,
};
use rumqttc::{
    AsyncClient, Event, Incoming, MqttOptions, QoS, SubscribeFilter, TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc};

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
    waiting: Arc<Waiting>,
}

/// Requests of the controller queued or waiting for room in the request queue: while there are
/// any, the polling task keeps draining the queue even when the controller is not reading.
#[derive(Default)]
struct Waiting {
    requests: AtomicUsize,
    /// Told when one starts.
    started: Notify,
}

impl Waiting {
    async fn during<T>(&self, request: impl std::future::Future<Output = T>) -> T {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        let outcome = request.await;
        self.requests.fetch_sub(1, Ordering::SeqCst);
        outcome
    }

    fn any(&self) -> bool {
        self.requests.load(Ordering::SeqCst) > 0
    }
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
        let waiting = Arc::new(Waiting::default());
        tokio::spawn(poll(client.clone(), eventloop, tx, waiting.clone()));
        (Cloud { client, waiting }, rx)
    }

    /// Publishes a retained message (QoS 1); an empty payload removes the retained one.
    pub async fn publish_retained(
        &self,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<(), CloudError> {
        self.waiting
            .during(self.client.publish(topic, QoS::AtLeastOnce, true, payload))
            .await
            .map_err(|_| CloudError::Closed)
    }

    /// Disconnects cleanly.
    pub async fn disconnect(&self) {
        let _ = self.waiting.during(self.client.disconnect()).await;
    }
}

async fn poll(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    tx: mpsc::Sender<FromCloud>,
    waiting: Arc<Waiting>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut marker = String::new();
    // What arrived and the controller has no room for yet, oldest first.
    let mut held: VecDeque<FromCloud> = VecDeque::new();
    loop {
        if hand_over(&mut held, &tx).is_err() {
            return;
        }
        if !held.is_empty() && !waiting.any() {
            // The controller is behind and waits for nothing from here: stop reading (TCP pushes
            // back on the broker) until it takes a message or starts waiting to publish.
            tokio::select! {
                permit = tx.reserve() => match (permit, held.pop_front()) {
                    (Ok(permit), Some(message)) => permit.send(message),
                    (Err(_), _) => return,
                    (Ok(_), None) => {}
                },
                _ = waiting.started.notified() => {}
            }
            continue;
        }
        // Not cancelled by anything: a request taken from the queue is written before it returns.
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                backoff = Duration::from_secs(1);
                marker = format!("{SYNC_TOPIC_PREFIX}/{:016x}", nonce());
                held.push_back(FromCloud::Connected);
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
                held.push_back(if publish.topic == marker {
                    FromCloud::Synced
                } else {
                    decode(&publish.topic, &publish.payload)
                });
            }
            Ok(_) => {}
            Err(e) => {
                held.push_back(FromCloud::Lost(e.to_string()));
                if hand_over(&mut held, &tx).is_err() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Hands over what is held, oldest first, as far as the channel has room; `Err` once the
/// controller is gone.
fn hand_over(held: &mut VecDeque<FromCloud>, tx: &mpsc::Sender<FromCloud>) -> Result<(), ()> {
    while let Some(message) = held.pop_front() {
        match tx.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                held.push_front(message);
                break;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
        }
    }
    Ok(())
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

    /// A round publishing more than the request queue and the channel hold, each publication read
    /// back by the controller's own subscription, while the controller reads nothing: before the
    /// polling task kept draining requests while publications waited, both sides waited for good
    /// (a 10,000-node fleet connecting stopped the controller's loop at 3,949 assignments).
    #[tokio::test]
    async fn a_burst_of_publications_read_back_while_the_controller_reads_nothing_completes() {
        const BURST: usize = 4096 + 1024 + 3000;
        let broker = edgefleet_simulators::broker::Broker::plain().unwrap();
        let (cloud, mut from_cloud) = Cloud::start(CloudSettings {
            host: "127.0.0.1".into(),
            port: broker.port(),
            tls: None,
            client_id: "edgefleet-controller".into(),
        });
        let synced = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(message) = from_cloud.recv().await {
                if matches!(message, FromCloud::Synced) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(synced, Ok(true), "the replay never ended");
        let published = tokio::time::timeout(Duration::from_secs(60), async {
            for i in 0..BURST {
                cloud
                    .publish_retained(format!("ef/v1/node/n{i}/assign/c"), vec![1, 2, 3])
                    .await
                    .unwrap();
            }
        })
        .await;
        assert!(
            published.is_ok(),
            "the publications stalled while the controller was not reading"
        );
        // Every one of them is read back, in order, none lost on the way.
        let read_back = tokio::time::timeout(Duration::from_secs(60), async {
            let mut topics = Vec::with_capacity(BURST);
            while topics.len() < BURST {
                match from_cloud.recv().await {
                    Some(FromCloud::Refused { topic, .. }) => topics.push(topic),
                    Some(_) => {}
                    None => break,
                }
            }
            topics
        })
        .await
        .expect("the publications are read back");
        let expected: Vec<String> = (0..BURST)
            .map(|i| format!("ef/v1/node/n{i}/assign/c"))
            .collect();
        assert_eq!(read_back, expected);
    }

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
