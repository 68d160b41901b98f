//! One MQTT connection (the device link or the uplink): connecting over mutual TLS (or plain TCP when
//! configured so), reconnecting with backoff, re-subscribing, and a narrow API for the rest of the
//! agent: [`Link::command`], [`Link::ack`], [`Link::publish_status`], [`Link::request_redelivery`],
//! and, on the uplink, the [`Outbound`] queue of tracked QoS 1 publishes.
//!
//! rumqttc sends and receives only while its event loop is polled, and requests from clients go
//! through a bounded channel that only the polling task drains. So **the polling task never waits on
//! the agent**: incoming messages go to a synchronous sink (the device link's [`crate::intake`], or a
//! `try_send` to the assignment task) that decides at once — queue, shed or refuse — and connection
//! changes go to a `watch`. Whoever waits on the link (a lane sending a command) therefore waits on a
//! task that is always making progress, never on itself. rumqttc reconnects at once when polled after
//! an error, so the task sleeps with exponential backoff (100 ms doubling to 30 s) between attempts.
//!
//! **Redelivery.** With a persistent session (the device link) the broker sends unacknowledged QoS 1
//! messages again only when the client reconnects (MQTT 3.1.1 §4.4). A message the agent could not
//! handle because of its own fault (workers unavailable, a failed write) is left unacknowledged and
//! [`Link::request_redelivery`] makes the link reconnect — at most once per [`REDELIVERY_SPACING`],
//! doubling while faults keep coming — so it comes back instead of blocking the broker's in-flight
//! window for good.
//!
//! **Replies: commands and acknowledgements** (device link). [`Link::answer`] and [`Link::ack`]
//! never wait: they queue replies, and the polling task writes every reply that may go between two
//! polls with one flush for the batch (rumqttc alone writes one request per poll, and only when its
//! select picks the request branch, which under load lets acks fall behind reads). Commands go in
//! order, at most [`COMMAND_WINDOW`] unacknowledged (rumqttc's packet ids must not collide); a
//! message's ack goes once its own commands are written, and the ack of a message without commands
//! at once. Acks queued when a connection drops are dropped with it (the broker delivers those
//! messages again, see `Offered::AlreadyDone`); commands are kept and go out on the next connection.
//! When a full window of commands waits behind the one in flight the link is [congested]
//! (`Link::congested`): the PUBACKs it needs are behind the messages it has not read, so it reads
//! whatever the receiver's pressure, and the receiver sheds what it cannot take.
//!
//! **Backpressure** (device link). While the receiver is full ([`Pressure::hold`]) the polling task
//! stops reading from the broker — it still writes replies, so the receiver keeps draining — until
//! [`Pressure::ease`]. TCP then pushes back on the broker, which keeps the messages, in order, and
//! nothing is shed or redelivered for load alone. Once per [`MAX_PAUSE`] it polls anyway, so a
//! receiver that never eases cannot silence the connection; and a PINGREQ whose answer waits behind
//! unread messages does not fail the connection while anything else still arrives.
//!
//! **Tracked publishes and packet ids** (uplink). The publisher must know which outbox entry a PUBACK
//! acknowledges. The polling task itself assigns the packet id of every tracked publish (from a
//! free list of [`OUTBOUND_WINDOW`] ids, reused only after their PUBACK) and hands it to rumqttc
//! between two polls, so a PUBACK maps to exactly one entry, whatever reconnects or other requests do
//! in between. No other QoS 1 publish is made on a link that tracks publishes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, Incoming, LastWill, MqttOptions,
    NetworkOptions, PubAck, Publish, QoS, Request, StateError, TlsConfiguration, Transport,
};
use tokio::sync::{Notify, watch};

use crate::clock::now_ms;
use crate::config::BrokerUrl;

/// Tracked publishes in flight at most (and the packet ids they use: 1..=this).
pub const OUTBOUND_WINDOW: u16 = 64;
/// Shortest time between two reconnects asked for by [`Link::request_redelivery`].
pub const REDELIVERY_SPACING: Duration = Duration::from_secs(2);
/// Longest time between them while host-side faults go on.
const MAX_REDELIVERY_SPACING: Duration = Duration::from_secs(60);
/// How long a request to the client waits for room in its queue, and shutdown for the replies.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands written and not yet acknowledged by the broker, at most (on the link that sends them).
/// Large on purpose: the broker's PUBACKs queue behind every device message it has for the agent,
/// so while the link reads slowly (backpressure) they come back late, and a small window would
/// stall commands — and the acks behind them — until the backlog is read. rumqttc gets twice as
/// many packet ids, so subscriptions taking ids from the same sequence cannot make a command
/// collide with one still in flight.
pub const COMMAND_WINDOW: u16 = 16_384;
/// Replies queued at most; beyond it a command is dropped (counted by the caller) and an ack is
/// left for redelivery. The intake's bound keeps the queue far below it.
const MAX_REPLIES: usize = 1 << 18;
/// Longest stretch without a poll while the receiver holds the link (see "Backpressure").
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// Requests (commands, acks) queued for the polling task, at most.
const REQUEST_QUEUE: usize = 4096;
/// A filter no one subscribes to: unsubscribing from it wakes an idle event loop (see `Outbound`).
const WAKE_FILTER: &str = "ef/v1/wake";

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
    /// Largest packet read; a larger one from the broker drops the connection (the broker's own
    /// `max_packet_size` must be at most this, see docs/architecture.md "Broker access rules").
    pub max_incoming_bytes: usize,
    /// Largest packet written.
    pub max_outgoing_bytes: usize,
    /// Acknowledge incoming QoS 1 messages only when [`Link::ack`] is called.
    pub manual_acks: bool,
    /// The receiver's way to stop the link reading while it catches up.
    pub pressure: Option<Arc<Pressure>>,
}

/// A receiver telling its link to stop reading (see "Backpressure" in the module documentation).
#[derive(Debug, Default)]
pub struct Pressure {
    held: AtomicBool,
    eased: Notify,
}

impl Pressure {
    /// Stop reading: the receiver is full. Returns whether the link was reading until now.
    pub fn hold(&self) -> bool {
        !self.held.swap(true, Ordering::AcqRel)
    }

    /// Read again.
    pub fn ease(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            self.eased.notify_one();
        }
    }

    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }
}

/// The filters a link subscribes to, shared with whoever adds classes or modules at run time.
#[derive(Debug, Clone, Default)]
pub struct Subscriptions(Arc<Mutex<std::collections::BTreeSet<String>>>);

impl Subscriptions {
    pub fn add(&self, filter: String) {
        self.lock().insert(filter);
    }

    pub fn remove(&self, filter: &str) {
        self.lock().remove(filter);
    }

    fn list(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
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
    /// Connections made so far (a new value means a new connection).
    pub connections: u64,
}

/// Why a request to the link did not go out.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the {link} link's request queue stayed full for {COMMAND_TIMEOUT:?}")]
    Timeout { link: &'static str },
    #[error("the {link} link has {MAX_REPLIES} replies waiting")]
    TooManyReplies { link: &'static str },
    #[error("the {link} link refused the request: {detail}")]
    Refused { link: &'static str, detail: String },
}

/// A running link.
#[derive(Clone)]
pub struct Link {
    name: &'static str,
    client: AsyncClient,
    condition: watch::Receiver<LinkCondition>,
    reconnects: Arc<AtomicU64>,
    redelivery: Arc<Redelivery>,
    outbound: Option<Arc<Outbound>>,
    replies: Arc<Replies>,
}

/// What the polling task does with an incoming message. It runs on the polling task: it must decide
/// at once and never wait.
pub type MessageSink = Box<dyn FnMut(Publish) + Send>;

impl Link {
    /// Starts a link. `sink` receives every incoming publish; `outbound`, when given, carries the
    /// link's tracked QoS 1 publishes (see the module documentation).
    pub fn start(
        settings: LinkSettings,
        sink: MessageSink,
        outbound: Option<Arc<Outbound>>,
    ) -> Link {
        let mut options = MqttOptions::new(
            settings.client_id.clone(),
            settings.broker.host.clone(),
            settings.broker.port,
        );
        options
            .set_keep_alive(Duration::from_secs(15))
            .set_clean_session(!settings.persistent_session)
            .set_manual_acks(settings.manual_acks)
            .set_max_packet_size(settings.max_incoming_bytes, settings.max_outgoing_bytes)
            // rumqttc keeps a slot per packet id: the command window only where commands go.
            .set_inflight(if settings.manual_acks {
                2 * COMMAND_WINDOW
            } else {
                2 * OUTBOUND_WINDOW
            });
        if let Some(will) = settings.last_will.clone() {
            options.set_last_will(will);
        }
        if let (true, Some(tls)) = (settings.broker.tls, settings.tls.clone()) {
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls)));
        }
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        let mut network = NetworkOptions::new();
        // Without it every QoS 1 round trip stalls 40+ ms (Nagle + delayed ACK).
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(10);
        eventloop.set_network_options(network);
        let (state_tx, condition) = watch::channel(LinkCondition {
            state: LinkState::Connecting,
            since_ms: now_ms(),
            last_error: None,
            connections: 0,
        });
        let link = Link {
            name: settings.name,
            client,
            condition,
            reconnects: Arc::new(AtomicU64::new(0)),
            redelivery: Arc::new(Redelivery::default()),
            outbound,
            replies: Arc::new(Replies::default()),
        };
        let shared = Shared {
            state: state_tx,
            reconnects: link.reconnects.clone(),
            redelivery: link.redelivery.clone(),
            outbound: link.outbound.clone(),
            replies: link.replies.clone(),
        };
        tokio::spawn(poll(settings, eventloop, sink, shared));
        link
    }

    /// Queues the commands that answer `message` (QoS 1) and, behind them, its acknowledgement:
    /// the ack goes out once the commands are written. Never waits; when the queue is full nothing
    /// is queued, and the message stays unacknowledged (it comes again after a reconnect).
    pub fn answer(
        &self,
        message: &Publish,
        commands: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<(), LinkError> {
        let acknowledged = message.qos != QoS::AtMostOnce;
        let pkid = message.pkid;
        self.reply(|queue| {
            for (topic, payload) in commands {
                let seq = queue.next_seq;
                queue.next_seq += 1;
                queue
                    .commands
                    .push_back((seq, Publish::new(topic, QoS::AtLeastOnce, payload)));
            }
            if acknowledged {
                let after = queue.next_seq;
                queue.after_commands.push_back((after, pkid));
            }
        })
    }

    /// Queues the acknowledgement of an incoming QoS 1 message that answers nothing (manual-ack
    /// links). Never waits: when it cannot be queued the message stays unacknowledged and comes
    /// again after a reconnect.
    pub fn ack(&self, publish: &Publish) -> Result<(), LinkError> {
        if publish.qos == QoS::AtMostOnce {
            return Ok(());
        }
        let pkid = publish.pkid;
        self.reply(|queue| queue.now.push(pkid))
    }

    /// Whether commands wait for lack of PUBACKs (a full window queued behind the one in flight):
    /// the link then reads whatever the receiver's pressure (the PUBACKs are behind what it has
    /// not read), and the receiver sheds what it cannot take.
    pub fn congested(&self) -> bool {
        self.replies.congested()
    }

    fn reply(&self, queue_it: impl FnOnce(&mut ReplyQueue)) -> Result<(), LinkError> {
        // The polling task may be idle inside `poll`: any request wakes it up. One wake-up at a
        // time: under load a wake-up per batch would be thousands of packets a second.
        if self.replies.push(self.name, queue_it)?
            && self.client.try_unsubscribe(WAKE_FILTER).is_err()
        {
            self.replies.woken.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Publishes a retained QoS 0 message (the node status): lost ones are replaced by the next.
    pub async fn publish_status(&self, topic: String, payload: Vec<u8>) -> Result<(), LinkError> {
        let request = self.client.publish(topic, QoS::AtMostOnce, true, payload);
        match tokio::time::timeout(COMMAND_TIMEOUT, request).await {
            Ok(result) => result.map_err(|e| self.refused(e)),
            Err(_) => Err(LinkError::Timeout { link: self.name }),
        }
    }

    /// Subscribes now (the filter must also be in the link's [`Subscriptions`] to survive a
    /// reconnect without a session).
    pub async fn subscribe(&self, filter: String) -> Result<(), LinkError> {
        let request = self.client.subscribe(filter, QoS::AtLeastOnce);
        match tokio::time::timeout(COMMAND_TIMEOUT, request).await {
            Ok(result) => result.map_err(|e| self.refused(e)),
            Err(_) => Err(LinkError::Timeout { link: self.name }),
        }
    }

    /// Unsubscribes now.
    pub async fn unsubscribe(&self, filter: String) -> Result<(), LinkError> {
        let request = self.client.unsubscribe(filter);
        match tokio::time::timeout(COMMAND_TIMEOUT, request).await {
            Ok(result) => result.map_err(|e| self.refused(e)),
            Err(_) => Err(LinkError::Timeout { link: self.name }),
        }
    }

    /// Asks for the broker to deliver the unacknowledged messages again: the link reconnects soon
    /// (see the module documentation for the spacing).
    pub fn request_redelivery(&self) {
        self.redelivery.requested.store(true, Ordering::Release);
        // The polling task may be idle inside `poll`: any request wakes it up.
        let _ = self.client.try_unsubscribe(WAKE_FILTER);
    }

    /// Disconnects cleanly (at shutdown), once the queued replies are written (a few seconds at
    /// most).
    pub async fn disconnect(&self) {
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        loop {
            // Created before the check, so a batch written in between still wakes it.
            let written = self.replies.written.notified();
            if self.replies.is_empty() || !self.is_connected() {
                break;
            }
            if tokio::time::timeout_at(deadline, written).await.is_err() {
                break;
            }
        }
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.client.disconnect()).await;
    }

    pub fn is_connected(&self) -> bool {
        self.condition.borrow().state == LinkState::Connected
    }

    /// The state, since when, the last error.
    pub fn condition(&self) -> LinkCondition {
        self.condition.borrow().clone()
    }

    /// Connections made so far (cheap: read on every device message).
    pub fn connections(&self) -> u64 {
        self.condition.borrow().connections
    }

    /// A receiver that sees every change of the link's condition.
    pub fn watch(&self) -> watch::Receiver<LinkCondition> {
        self.condition.clone()
    }

    /// Reconnection attempts so far.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Reconnects made to have unacknowledged messages delivered again.
    pub fn redeliveries(&self) -> u64 {
        self.redelivery.done.load(Ordering::Relaxed)
    }

    /// Wakes the polling task so that it hands newly queued tracked publishes to rumqttc (and
    /// writes queued replies).
    pub(crate) fn wake(&self) {
        let _ = self.client.try_unsubscribe(WAKE_FILTER);
    }

    fn refused(&self, e: rumqttc::ClientError) -> LinkError {
        LinkError::Refused {
            link: self.name,
            detail: e.to_string(),
        }
    }
}

/// Replies waiting for the polling task.
#[derive(Debug, Default)]
struct Replies {
    queue: Mutex<ReplyQueue>,
    /// Woken when a reply is queued.
    ready: Notify,
    /// Set while a wake-up (an unsubscribe from [`WAKE_FILTER`]) is on its way to the polling task,
    /// cleared when rumqttc has sent it or the connection dropped: one wake-up at a time.
    woken: AtomicBool,
    /// Woken (all waiters) after each batch written.
    written: Notify,
}

#[derive(Debug, Default)]
struct ReplyQueue {
    /// Commands in order, each with its sequence number.
    commands: VecDeque<(u64, Publish)>,
    /// The sequence number the next command gets.
    next_seq: u64,
    /// Commands written so far: every command with a lower sequence number is on the wire.
    written: u64,
    /// Acks that wait for commands: (the sequence number their commands end before, packet id);
    /// in sequence order.
    after_commands: VecDeque<(u64, u16)>,
    /// Acks of messages without commands: they go out at once.
    now: Vec<u16>,
}

impl ReplyQueue {
    fn len(&self) -> usize {
        self.commands.len() + self.after_commands.len() + self.now.len()
    }
}

impl Replies {
    /// Runs `queue_it` on the queue; true when the polling task must be woken for it.
    fn push(
        &self,
        link: &'static str,
        queue_it: impl FnOnce(&mut ReplyQueue),
    ) -> Result<bool, LinkError> {
        let mut queue = self.lock();
        if queue.len() >= MAX_REPLIES {
            return Err(LinkError::TooManyReplies { link });
        }
        queue_it(&mut queue);
        drop(queue);
        self.ready.notify_one();
        Ok(!self.woken.swap(true, Ordering::AcqRel))
    }

    fn is_empty(&self) -> bool {
        self.lock().len() == 0
    }

    /// A full window of commands waits behind the one in flight: their PUBACKs are late.
    fn congested(&self) -> bool {
        self.lock().commands.len() >= usize::from(COMMAND_WINDOW)
    }

    /// What may go out now: every ack whose commands are written, and commands while fewer than
    /// [`COMMAND_WINDOW`] are in flight (`room`). Acks of later commands wait; no command passes
    /// another.
    fn take(&self, room: usize) -> (Vec<u16>, Vec<Publish>) {
        let mut queue = self.lock();
        let take = room.min(queue.commands.len());
        let commands: Vec<Publish> = queue.commands.drain(..take).map(|(_, p)| p).collect();
        queue.written += commands.len() as u64;
        let mut acks = std::mem::take(&mut queue.now);
        while let Some(&(after, pkid)) = queue.after_commands.front() {
            if after > queue.written {
                break;
            }
            acks.push(pkid);
            queue.after_commands.pop_front();
        }
        (acks, commands)
    }

    /// The connection dropped: its acks go with it (the broker delivers those messages again and
    /// an ack from the old connection could meet a packet id reused since); commands stay.
    fn connection_lost(&self) {
        let mut queue = self.lock();
        queue.now.clear();
        queue.after_commands.clear();
        drop(queue);
        // A new session drops rumqttc's pending requests, the wake-up among them.
        self.woken.store(false, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplyQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the polling task shares with the [`Link`] handles.
struct Shared {
    state: watch::Sender<LinkCondition>,
    reconnects: Arc<AtomicU64>,
    redelivery: Arc<Redelivery>,
    outbound: Option<Arc<Outbound>>,
    replies: Arc<Replies>,
}

/// Writes the replies that may go out now (commands first, then the acks they free), then
/// flushes once. Returns how many commands it wrote.
async fn write_replies(
    eventloop: &mut EventLoop,
    replies: &Replies,
    commands_in_flight: usize,
) -> Result<usize, StateError> {
    // A collision (a packet id still in flight) stops commands until rumqttc resolves it.
    let room = if eventloop.state.collision.is_none() {
        usize::from(COMMAND_WINDOW).saturating_sub(commands_in_flight)
    } else {
        0
    };
    let (acks, commands) = replies.take(room);
    if acks.is_empty() && commands.is_empty() {
        return Ok(0);
    }
    let Some(network) = eventloop.network.as_mut() else {
        return Err(StateError::ConnectionAborted);
    };
    let written = commands.len();
    let requests = commands.into_iter().map(Request::Publish).chain(
        acks.into_iter()
            .map(|pkid| Request::PubAck(PubAck::new(pkid))),
    );
    for request in requests {
        if let Some(packet) = eventloop.state.handle_outgoing_packet(request)? {
            network.write(packet).await?;
        }
    }
    network.flush().await?;
    replies.written.notify_waiters();
    Ok(written)
}

/// The redelivery request flag and its spacing.
#[derive(Debug, Default)]
struct Redelivery {
    requested: AtomicBool,
    done: AtomicU64,
}

/// Tracked QoS 1 publishes of one link: queued by the publisher, given packet ids and handed to
/// rumqttc by the polling task, reported back as acknowledged by tag.
#[derive(Debug, Default)]
pub struct Outbound {
    state: Mutex<OutboundState>,
    /// Woken when something was acknowledged or the connection changed.
    pub changed: Notify,
}

#[derive(Debug, Default)]
struct OutboundState {
    /// Connections so far; the queue and everything in flight belong to the current one.
    connection: u64,
    connected: bool,
    queued: VecDeque<Tracked>,
    in_flight: HashMap<u16, u64>,
    free: Vec<u16>,
    acked: Vec<u64>,
}

/// One tracked publish.
#[derive(Debug)]
pub struct Tracked {
    /// The caller's identifier (the outbox seq), reported back on PUBACK.
    pub tag: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What the publisher learns from [`Outbound::take`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OutboundNews {
    /// The current connection (0 while none was made); a change means everything not acked must be
    /// sent again.
    pub connection: u64,
    pub connected: bool,
    /// Tags acknowledged since the last call.
    pub acked: Vec<u64>,
    /// Publishes queued or in flight now.
    pub outstanding: usize,
}

impl Outbound {
    /// What changed since the last call.
    pub fn take(&self) -> OutboundNews {
        let mut state = self.lock();
        OutboundNews {
            connection: state.connection,
            connected: state.connected,
            acked: std::mem::take(&mut state.acked),
            outstanding: state.queued.len() + state.in_flight.len(),
        }
    }

    /// Queues publishes for `connection`; returns false (queuing nothing) when the link is no longer
    /// on that connection. Call [`Link::wake`] afterwards.
    pub fn queue(&self, connection: u64, publishes: impl IntoIterator<Item = Tracked>) -> bool {
        let mut state = self.lock();
        if !state.connected || state.connection != connection {
            return false;
        }
        state.queued.extend(publishes);
        true
    }

    fn connected(&self) {
        let mut state = self.lock();
        state.connection += 1;
        state.connected = true;
        state.queued.clear();
        state.in_flight.clear();
        state.free = (1..=OUTBOUND_WINDOW).rev().collect();
        drop(state);
        self.changed.notify_one();
    }

    /// Everything queued or in flight is forgotten: a clean session drops rumqttc's pending
    /// publishes at the next CONNACK, and the publisher sends them again on the new connection.
    fn disconnected(&self) {
        let mut state = self.lock();
        state.connected = false;
        state.queued.clear();
        state.in_flight.clear();
        state.free.clear();
        drop(state);
        self.changed.notify_one();
    }

    /// Hands queued publishes to rumqttc's pending queue (sent before any new request), each with a
    /// free packet id.
    fn hand_over(&self, pending: &mut VecDeque<Request>) {
        let mut state = self.lock();
        while !state.queued.is_empty() {
            let Some(pkid) = state.free.pop() else { break };
            let Some(tracked) = state.queued.pop_front() else {
                break;
            };
            let mut publish = Publish::new(tracked.topic, QoS::AtLeastOnce, tracked.payload);
            publish.pkid = pkid;
            state.in_flight.insert(pkid, tracked.tag);
            pending.push_back(Request::Publish(publish));
        }
    }

    fn acked(&self, pkid: u16) {
        let mut state = self.lock();
        if let Some(tag) = state.in_flight.remove(&pkid) {
            state.acked.push(tag);
            state.free.push(pkid);
            drop(state);
            self.changed.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboundState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn poll(
    settings: LinkSettings,
    mut eventloop: EventLoop,
    mut sink: MessageSink,
    shared: Shared,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
    let Shared {
        state,
        reconnects,
        redelivery,
        outbound,
        replies,
    } = shared;
    let mut backoff = FIRST_BACKOFF;
    let mut redelivery_spacing = REDELIVERY_SPACING;
    let mut last_redelivery: Option<Instant> = None;
    let mut connected = false;
    let mut commands_in_flight = 0usize;
    let mut last_poll = Instant::now();
    // Whether anything came from the broker since the last PINGREQ (see below).
    let mut heard_since_ping = true;
    loop {
        if state.is_closed() {
            // Every handle is gone: the agent stopped.
            return;
        }
        let mut failure = None;
        if connected {
            if let Some(outbound) = &outbound {
                outbound.hand_over(&mut eventloop.pending);
            }
            if redelivery.requested.load(Ordering::Acquire) {
                let due = last_redelivery.is_none_or(|at| at.elapsed() >= redelivery_spacing);
                if due {
                    redelivery.requested.store(false, Ordering::Release);
                    redelivery_spacing = match last_redelivery {
                        Some(at) if at.elapsed() < MAX_REDELIVERY_SPACING => {
                            (redelivery_spacing * 2).min(MAX_REDELIVERY_SPACING)
                        }
                        _ => REDELIVERY_SPACING,
                    };
                    last_redelivery = Some(Instant::now());
                    redelivery.done.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        link = settings.name,
                        "reconnecting so that the broker delivers unacknowledged messages again"
                    );
                    // Dropping the network makes the next poll connect again; the persistent session
                    // keeps the unacknowledged messages, which the broker then sends again.
                    // Commands in flight stay in rumqttc's pending queue and go out again on the resumed
                    // session (at least once).
                    eventloop.clean();
                    replies.connection_lost();
                    connected = false;
                    if let Some(outbound) = &outbound {
                        outbound.disconnected();
                    }
                    set_state(&state, LinkState::Connecting, None);
                    continue;
                }
            }
            match write_replies(&mut eventloop, &replies, commands_in_flight).await {
                Ok(commands) => {
                    commands_in_flight += commands;
                    // rumqttc reports each written packet as an event; nothing here needs them, and
                    // left in its buffer they would be handed out one poll at a time before it
                    // reads from the network again.
                    eventloop
                        .state
                        .events
                        .retain(|event| matches!(event, Event::Incoming(_)));
                }
                Err(e) => failure = Some(e.to_string()),
            }
            let held = settings
                .pressure
                .as_ref()
                .filter(|p| p.is_held() && !replies.congested());
            if let (None, Some(pressure)) = (&failure, held)
                && eventloop.state.events.is_empty()
            {
                let resume_at = last_poll + MAX_PAUSE;
                if Instant::now() < resume_at {
                    tokio::select! {
                        _ = pressure.eased.notified() => {}
                        _ = replies.ready.notified() => {}
                        _ = tokio::time::sleep_until(resume_at.into()) => {}
                    }
                    continue;
                }
            }
        }
        if eventloop.state.await_pingresp && heard_since_ping {
            // rumqttc fails the connection when a keep-alive is due before the last PINGRESP came.
            // But the broker answers a ping behind every message it queued for us, and a link that
            // reads slower than it is sent to (backpressure) reads that answer late. Something
            // heard since the ping proves the connection alive; silence still fails it.
            eventloop.state.await_pingresp = false;
        }
        let event = match failure {
            Some(reason) => {
                // The same recovery as a failed poll: what rumqttc had in flight goes out again on
                // the next connection.
                eventloop.clean();
                Err(reason)
            }
            None => {
                last_poll = Instant::now();
                eventloop.poll().await.map_err(|e| e.to_string())
            }
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(ack)))
                if ack.code == ConnectReturnCode::Success =>
            {
                backoff = FIRST_BACKOFF;
                heard_since_ping = true;
                if !ack.session_present {
                    // A new session has no subscriptions. Straight into the pending queue: this task
                    // is the one that would drain the request channel.
                    for filter in settings.subscriptions.list() {
                        eventloop
                            .pending
                            .push_back(Request::Subscribe(rumqttc::Subscribe::new(
                                filter,
                                QoS::AtLeastOnce,
                            )));
                    }
                }
                // rumqttc sends these again itself, before anything new.
                commands_in_flight = eventloop
                    .pending
                    .iter()
                    .filter(|r| matches!(r, Request::Publish(p) if p.qos != QoS::AtMostOnce))
                    .count();
                connected = true;
                if let Some(outbound) = &outbound {
                    outbound.connected();
                }
                state.send_modify(|c| c.connections += 1);
                set_state(&state, LinkState::Connected, None);
                tracing::info!(
                    link = settings.name,
                    session_present = ack.session_present,
                    "connected"
                );
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::PingReq)) => heard_since_ping = false,
            // A wake-up went through: the next reply may send another.
            Ok(Event::Outgoing(rumqttc::Outgoing::Unsubscribe(_))) => {
                replies.woken.store(false, Ordering::Release);
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                heard_since_ping = true;
                sink(publish);
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                heard_since_ping = true;
                commands_in_flight = commands_in_flight.saturating_sub(1);
                if let Some(outbound) = &outbound {
                    outbound.acked(ack.pkid);
                }
            }
            Ok(Event::Incoming(_)) => heard_since_ping = true,
            Ok(_) => {}
            Err(reason) => {
                connected = false;
                replies.connection_lost();
                if let Some(outbound) = &outbound {
                    outbound.disconnected();
                }
                set_state(&state, LinkState::Down, Some(reason.clone()));
                reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    link = settings.name,
                    "disconnected: {reason}; retrying in {backoff:?}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                set_state(&state, LinkState::Connecting, None);
            }
        }
    }
}

/// Records a state change; `error` replaces the last error when given, which is kept otherwise.
fn set_state(condition: &watch::Sender<LinkCondition>, state: LinkState, error: Option<String>) {
    condition.send_modify(|c| {
        if c.state != state {
            c.state = state;
            c.since_ms = now_ms();
        }
        if error.is_some() {
            c.last_error = error;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(tag: u64) -> Tracked {
        Tracked {
            tag,
            topic: format!("t/{tag}"),
            payload: vec![tag as u8],
        }
    }

    #[test]
    fn a_puback_acknowledges_exactly_the_publish_that_got_its_packet_id() {
        let outbound = Outbound::default();
        assert!(
            !outbound.queue(0, [tracked(1)]),
            "nothing is queued while down"
        );
        outbound.connected();
        let news = outbound.take();
        assert_eq!((news.connection, news.connected), (1, true));
        assert!(outbound.queue(1, (10..20).map(tracked)));
        let mut pending = VecDeque::new();
        outbound.hand_over(&mut pending);
        let ids: HashMap<String, u16> = pending
            .iter()
            .map(|r| match r {
                Request::Publish(p) => (p.topic.clone(), p.pkid),
                other => panic!("unexpected request {other:?}"),
            })
            .collect();
        assert_eq!(ids.len(), 10);
        // Acknowledged out of order: each PUBACK names its own entry.
        outbound.acked(ids["t/17"]);
        outbound.acked(ids["t/11"]);
        outbound.acked(999);
        let news = outbound.take();
        assert_eq!(news.acked, [17, 11]);
        assert_eq!(news.outstanding, 8);
    }

    #[test]
    fn a_new_connection_forgets_what_was_in_flight_and_refuses_stale_queuing() {
        let outbound = Outbound::default();
        outbound.connected();
        assert!(outbound.queue(1, [tracked(1), tracked(2)]));
        let mut pending = VecDeque::new();
        outbound.hand_over(&mut pending);
        let Request::Publish(first) = &pending[0] else {
            panic!()
        };
        let old_pkid = first.pkid;
        outbound.disconnected();
        assert!(!outbound.queue(1, [tracked(3)]));
        outbound.connected();
        assert!(
            !outbound.queue(1, [tracked(3)]),
            "queued for an old connection"
        );
        assert!(outbound.queue(2, [tracked(4)]));
        // A late PUBACK of the old connection's packet id acknowledges nothing.
        outbound.acked(old_pkid);
        assert!(outbound.take().acked.is_empty());
    }

    #[test]
    fn packet_ids_are_reused_only_after_their_puback() {
        let outbound = Outbound::default();
        outbound.connected();
        assert!(outbound.queue(1, (0..u64::from(OUTBOUND_WINDOW) + 5).map(tracked)));
        let mut pending = VecDeque::new();
        outbound.hand_over(&mut pending);
        assert_eq!(pending.len(), usize::from(OUTBOUND_WINDOW));
        let Request::Publish(first) = &pending[0] else {
            panic!()
        };
        outbound.acked(first.pkid);
        let mut more = VecDeque::new();
        outbound.hand_over(&mut more);
        assert_eq!(more.len(), 1);
        let Request::Publish(next) = &more[0] else {
            panic!()
        };
        assert_eq!(next.pkid, first.pkid);
    }
}
