//! One hollow node's connection to the cloud broker: its own MQTT session with its own certificate
//! (CN = node name, issued in memory from the node CA), so the shipped ACL fences it as it fences a
//! real agent. The task polls rumqttc's event loop and never waits on anything else: what arrives
//! goes to the node's state ([`Hollow`]) under a short lock, and what the node asks for (chunk
//! subscriptions, events) is queued with `try_*` calls. Statuses are published by the fleet's
//! schedule through the client this task hands out while connected.
//!
//! Like the agent's uplink: clean session, keep-alive 15 s, the offline [`NodeStatus`] as QoS 1
//! retained last will, the assignment filter and the chunk filters of downloads under way
//! subscribed on every connection (the broker then delivers the retained assignments again),
//! reconnects with backoff (1 s doubling to 30 s, spread per node so that a broker restart is not
//! met by every node at once). Connecting is limited to a few nodes at a time
//! ([`super::FleetOptions::connecting_at_once`]): mosquitto's listen backlog is small, and 10,000
//! TLS handshakes at once would only time out and retry.
//!
//! Taken offline, a node drops its TCP connection without a DISCONNECT, as a node losing power or
//! network does: the broker publishes its last will and the controller shows it offline. On
//! [`super::Fleet::stop`] it shuts down like an agent: an offline status, then DISCONNECT.

use std::sync::Arc;
use std::time::Duration;

use edgefleet_protocol::codec;
use edgefleet_protocol::topic::{Topic, node_assignment_filter};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, LastWill,
    MqttOptions, Outgoing, QoS, TlsConfiguration, Transport,
};
use tokio::sync::watch;

use super::node::Action;
use super::{Shared, Slot, count, now_ms};

const KEEP_ALIVE: Duration = Duration::from_secs(15);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Requests a node may have queued for its connection (statuses, events, subscriptions).
const REQUESTS: usize = 64;
/// How long a stopping node waits for its DISCONNECT to go out.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How one connection ended.
enum Ended {
    Stopped,
    Offline,
    /// It was connected, then lost: reconnect soon.
    Lost,
    /// It never got connected: back off.
    Failed,
}

/// Runs node `slot` until the fleet stops.
pub(super) async fn run(slot: Arc<Slot>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut online = slot.online.subscribe();
    let mut backoff = BACKOFF_FIRST;
    loop {
        while !*online.borrow_and_update() {
            tokio::select! {
                changed = online.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
            }
        }
        if *stop.borrow() {
            return;
        }
        match session(&slot, &shared, &mut online, &mut stop).await {
            Ended::Stopped => return,
            Ended::Offline => backoff = BACKOFF_FIRST,
            Ended::Lost | Ended::Failed => {
                // Spread by node so that nodes cut off together do not come back together.
                let spread = 1.0 + (slot.index % 97) as f64 / 97.0;
                let wait = backoff.mul_f64(spread);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One connection, from connecting until it ends.
async fn session(
    slot: &Slot,
    shared: &Shared,
    online: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let permit = tokio::select! {
        permit = shared.connecting.acquire() => permit.ok(),
        _ = stop.changed() => return Ended::Stopped,
    };
    let mut permit = Some(permit);
    let options = match options(slot, shared) {
        Ok(options) => options,
        Err(message) => {
            shared.failed(message);
            return Ended::Failed;
        }
    };
    let (client, mut events) = crate::broker::client(options, REQUESTS);
    let filters = {
        let hollow = slot.hollow.lock().unwrap();
        let mut filters = vec![node_assignment_filter(hollow.node())];
        filters.extend(hollow.chunk_filters());
        filters
    };
    for filter in filters {
        // Queued before the connection is up; sent right after CONNECT.
        let _ = client.try_subscribe(filter, QoS::AtLeastOnce);
    }
    let mut connected = false;
    let ended = loop {
        tokio::select! {
            biased;
            _ = stop.changed() => {
                shut_down(slot, shared, &client, &mut events, connected).await;
                break Ended::Stopped;
            }
            changed = online.changed() => {
                if changed.is_err() || !*online.borrow() {
                    // Dropping the event loop closes the socket without a DISCONNECT.
                    break Ended::Offline;
                }
            }
            event = events.poll() => match event {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    if ack.code != ConnectReturnCode::Success {
                        shared.failed(refused(shared, ack.code));
                        break Ended::Failed;
                    }
                    permit = None;
                    connected = true;
                    slot.connected(shared, client.clone());
                }
                Ok(Event::Incoming(Incoming::Publish(publish))) => {
                    received(slot, shared, &client, &publish.topic, &publish.payload);
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::debug!(node = %slot.node, "connection lost: {e}");
                        break Ended::Lost;
                    }
                    shared.failed(describe(shared, &e));
                    break Ended::Failed;
                }
            },
        }
    };
    drop(permit);
    if connected {
        slot.disconnected(shared);
    }
    ended
}

/// The node's MQTT options: its identity, its last will.
fn options(slot: &Slot, shared: &Shared) -> Result<MqttOptions, String> {
    let tls = slot.tls(shared).map_err(|e| e.to_string())?;
    let will = {
        let hollow = slot.hollow.lock().unwrap();
        codec::encode(&hollow.last_will(now_ms()))
    };
    let cap = edgefleet_protocol::wire::MAX_UPLINK_PACKET_BYTES;
    let mut options = MqttOptions::new(slot.node.as_str(), shared.host.as_str(), shared.port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(cap, cap)
        .set_inflight(16)
        .set_last_will(LastWill::new(
            status_topic(slot),
            will,
            QoS::AtLeastOnce,
            true,
        ))
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    Ok(options)
}

pub(super) fn status_topic(slot: &Slot) -> String {
    Topic::Status {
        node: slot.node.clone(),
    }
    .to_string()
}

/// One message from the broker.
fn received(slot: &Slot, shared: &Shared, client: &AsyncClient, topic: &str, payload: &[u8]) {
    let actions = {
        let failing = shared.failing.read().unwrap();
        let ctx = shared.context(failing.as_ref());
        let mut hollow = slot.hollow.lock().unwrap();
        match Topic::parse(topic) {
            Ok(Topic::Assignment { node, class }) if node == slot.node => {
                hollow.on_assignment(class, payload, &ctx)
            }
            Ok(Topic::ModuleChunk { module, index }) => {
                hollow.on_chunk(module, index, payload, &ctx)
            }
            _ => {
                tracing::debug!(node = %slot.node, %topic, "ignored message");
                Vec::new()
            }
        }
    };
    carry_out(slot, shared, client, actions);
}

/// Queues what the node asked for on its connection.
pub(super) fn carry_out(slot: &Slot, shared: &Shared, client: &AsyncClient, actions: Vec<Action>) {
    let c = &shared.counters;
    for action in actions {
        let queued = match action {
            Action::Subscribe(filter) => client.try_subscribe(filter, QoS::AtLeastOnce),
            Action::Unsubscribe(filter) => client.try_unsubscribe(filter),
            Action::Event(event) => {
                let topic = Topic::Event {
                    node: slot.node.clone(),
                }
                .to_string();
                let queued =
                    client.try_publish(topic, QoS::AtLeastOnce, false, codec::encode(&event));
                count(
                    if queued.is_ok() {
                        &c.events
                    } else {
                        &c.events_dropped
                    },
                    1,
                );
                queued
            }
        };
        if let Err(e) = queued {
            // A full request queue: the connection is stuck; subscriptions come again with the
            // next connection.
            tracing::debug!(node = %slot.node, "request not queued: {e}");
        }
    }
}

/// Shuts down like an agent: an offline status, then DISCONNECT.
async fn shut_down(
    slot: &Slot,
    shared: &Shared,
    client: &AsyncClient,
    events: &mut EventLoop,
    connected: bool,
) {
    if !connected {
        return;
    }
    slot.disconnected(shared);
    let offline = slot.hollow.lock().unwrap().last_will(now_ms());
    let _ = client.try_publish(
        status_topic(slot),
        QoS::AtLeastOnce,
        true,
        codec::encode(&offline),
    );
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(STOP_GRACE, async {
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

fn refused(shared: &Shared, code: ConnectReturnCode) -> String {
    format!(
        "the broker at {}:{} refused the connection ({code:?}): its cafile must hold the node CA \
         that issued the hollow nodes' certificates (node-ca.crt of `edgefleet certs`), and its ACL \
         must let nodes in",
        shared.host, shared.port
    )
}

/// What went wrong, and what to check.
fn describe(shared: &Shared, e: &ConnectionError) -> String {
    let address = format!("{}:{}", shared.host, shared.port);
    let text = e.to_string();
    let hint = match e {
        ConnectionError::ConnectionRefused(code) => return refused(shared, *code),
        ConnectionError::NetworkTimeout => {
            "no answer within 5 s: is that the broker's address and port, and is it reachable \
             from here (firewall)?"
                .to_string()
        }
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "nothing listens there: is the broker running, and is --cloud its host:port?"
                .to_string()
        }
        _ if text.contains("certificate") || text.contains("TLS") || text.contains("alert") => {
            format!(
                "the TLS handshake failed: the broker's certificate must chain to the broker CA \
                 given (fleet-ca.crt of `edgefleet certs`) and name {}, and the broker must \
                 trust the node CA",
                shared.host
            )
        }
        _ => "is the broker running, with TLS and client certificates required?".to_string(),
    };
    format!("cannot connect to the cloud broker at {address}: {text}; {hint}")
}
