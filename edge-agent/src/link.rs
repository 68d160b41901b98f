//! One MQTT connection (the device link or the uplink): connecting over mutual TLS (or plain TCP when
//! configured so), reconnecting with backoff, re-subscribing, and handing events to the agent.
//!
//! rumqttc sends and receives only while its event loop is polled, so each link polls in its own
//! task and forwards what matters over a bounded channel. When the agent is saturated that channel
//! is full, the task stops polling, the socket stops being read and the broker holds the messages:
//! backpressure instead of dropping. rumqttc reconnects at once when polled after an error, so the
//! task sleeps with exponential backoff (100 ms doubling to 30 s) between attempts.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, Incoming, LastWill, MqttOptions,
    NetworkOptions, Outgoing, Publish, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};

use crate::config::BrokerUrl;

/// How to connect one link.
#[derive(Clone)]
pub struct LinkSettings {
    /// `device` or `uplink`, for logs and metrics.
    pub name: &'static str,
    pub broker: BrokerUrl,
    /// Stable across restarts: with `persistent_session` the broker keeps the session under it.
    pub client_id: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Keep the session (subscriptions and queued QoS 1 messages) while the agent is away.
    pub persistent_session: bool,
    /// Filters subscribed with QoS 1 on every connection that has no session.
    pub subscriptions: Subscriptions,
    pub last_will: Option<LastWill>,
    /// Largest packet in either direction.
    pub max_packet_bytes: usize,
    /// Acknowledge incoming QoS 1 messages only when [`LinkHandle::ack`] is called.
    pub manual_acks: bool,
}

/// The filters a link subscribes to, shared with whoever adds classes or modules at run time.
#[derive(Debug, Clone, Default)]
pub struct Subscriptions(Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>);

impl Subscriptions {
    pub fn add(&self, filter: String) {
        self.lock().insert(filter);
    }

    pub fn remove(&self, filter: &str) {
        self.lock().remove(filter);
    }

    pub fn list(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a link reports.
#[derive(Debug)]
pub enum LinkEvent {
    Connected {
        session_present: bool,
    },
    Disconnected {
        reason: String,
    },
    Message(Publish),
    /// A QoS 1 publish of ours left with this packet id (in the order they were requested).
    Sent {
        pkid: u16,
    },
    /// The broker acknowledged the QoS 1 publish with this packet id.
    Acked {
        pkid: u16,
    },
}

/// Whether the link is connected now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Connected,
    Down,
}

/// The link's state, since when, and the last connection error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCondition {
    pub state: LinkState,
    /// When the state last changed, in ms since the UNIX epoch.
    pub since_ms: u64,
    pub last_error: Option<String>,
}

/// The client side of a running link.
#[derive(Clone)]
pub struct LinkHandle {
    pub client: AsyncClient,
    pub condition: watch::Receiver<LinkCondition>,
    /// Reconnection attempts so far.
    pub reconnects: Arc<std::sync::atomic::AtomicU64>,
}

impl LinkHandle {
    /// Acknowledges an incoming QoS 1 message (manual-ack links).
    pub async fn ack(&self, publish: &Publish) -> Result<(), rumqttc::ClientError> {
        self.client.ack(publish).await
    }

    pub fn is_connected(&self) -> bool {
        self.condition.borrow().state == LinkState::Connected
    }
}

/// Starts a link: returns its handle and the stream of its events.
pub fn start(settings: LinkSettings, capacity: usize) -> (LinkHandle, mpsc::Receiver<LinkEvent>) {
    let mut options = MqttOptions::new(
        settings.client_id.clone(),
        settings.broker.host.clone(),
        settings.broker.port,
    );
    options
        .set_keep_alive(Duration::from_secs(15))
        .set_clean_session(!settings.persistent_session)
        .set_manual_acks(settings.manual_acks)
        .set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes)
        .set_inflight(100);
    if let Some(will) = settings.last_will.clone() {
        options.set_last_will(will);
    }
    if let (true, Some(tls)) = (settings.broker.tls, settings.tls.clone()) {
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls)));
    }
    let (client, mut eventloop) = AsyncClient::new(options, capacity.max(10));
    let mut network = NetworkOptions::new();
    // Without it every QoS 1 round trip stalls 40+ ms (Nagle + delayed ACK).
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(10);
    eventloop.set_network_options(network);
    let (state_tx, condition) = watch::channel(LinkCondition {
        state: LinkState::Connecting,
        since_ms: crate::interactions::now_ms(),
        last_error: None,
    });
    let (events, rx) = mpsc::channel(capacity.max(1));
    let reconnects = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handle = LinkHandle {
        client: client.clone(),
        condition,
        reconnects: reconnects.clone(),
    };
    tokio::spawn(poll(
        settings, client, eventloop, events, state_tx, reconnects,
    ));
    (handle, rx)
}

async fn poll(
    settings: LinkSettings,
    client: AsyncClient,
    mut eventloop: EventLoop,
    events: mpsc::Sender<LinkEvent>,
    state: watch::Sender<LinkCondition>,
    reconnects: Arc<std::sync::atomic::AtomicU64>,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(ack)))
                if ack.code == ConnectReturnCode::Success =>
            {
                backoff = FIRST_BACKOFF;
                if !ack.session_present {
                    // A new session has no subscriptions; try_subscribe because this task is the
                    // one polling (an awaited request could deadlock on a full channel).
                    for filter in settings.subscriptions.list() {
                        if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                            tracing::warn!(link = settings.name, %filter, "cannot subscribe: {e}");
                        }
                    }
                }
                set_state(&state, LinkState::Connected, None);
                tracing::info!(
                    link = settings.name,
                    session_present = ack.session_present,
                    "connected"
                );
                LinkEvent::Connected {
                    session_present: ack.session_present,
                }
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => LinkEvent::Message(publish),
            Ok(Event::Incoming(Incoming::PubAck(ack))) => LinkEvent::Acked { pkid: ack.pkid },
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => LinkEvent::Sent { pkid },
            Ok(_) => continue,
            Err(e) => {
                let reason = e.to_string();
                set_state(&state, LinkState::Down, Some(reason.clone()));
                reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    link = settings.name,
                    "disconnected: {reason}; retrying in {backoff:?}"
                );
                if events
                    .send(LinkEvent::Disconnected { reason })
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                set_state(&state, LinkState::Connecting, None);
                continue;
            }
        };
        if events.send(event).await.is_err() {
            // The agent is gone.
            return;
        }
    }
}

/// Records a state change; `error` replaces the last error when given, which is kept otherwise.
fn set_state(condition: &watch::Sender<LinkCondition>, state: LinkState, error: Option<String>) {
    condition.send_modify(|c| {
        if c.state != state {
            c.state = state;
            c.since_ms = crate::interactions::now_ms();
        }
        if error.is_some() {
            c.last_error = error;
        }
    });
}
