//! From device message to committed effects: the interaction pipeline.
//!
//! ```text
//! device link ─► accept (topic, size, class checks) ─► lane (hash of class+device) ─► rounds
//!    round: ≤ 1 message per device, grouped by class ─► Sandbox::run_batch (fresh instance each)
//!           ─► commit state + outbox entries (one sled transaction per interaction) ─► flush
//!           ─► commands to the devices ─► ack the device messages
//! ```
//!
//! * **Per-device order**: a device always maps to the same lane, a lane handles its queue in
//!   arrival order, and a round takes at most one message per device, so a device's next message
//!   always sees the state its previous one committed.
//! * **Parallelism and backpressure**: lanes run concurrently (classes and devices in parallel on the
//!   sandbox's workers); each lane's queue is bounded, and when it is full `accept` waits, the link
//!   task stops reading, and the broker holds the messages.
//! * **Nothing lost**: a device message is acked only after its effects are flushed to disk; a crash
//!   before that makes the broker deliver it again (at least once).
//! * **Bad input** (foreign topic, unknown class, oversized payload) is counted, reported as an event,
//!   and acked so it does not come back; a payload the handler cannot parse is its `Rejected` answer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use edgefleet_protocol::event::{AgentEvent, EventKind};
use edgefleet_protocol::id::{ClassId, DeviceId, NodeId};
use edgefleet_protocol::topic::{ClassTopic, Topic};
use edgefleet_protocol::upstream::UpstreamMessage;
use rumqttc::{Publish, QoS};
use tokio::sync::{Notify, mpsc};

use crate::classes::{ActiveClass, ClassHandler, ClassTable};
use crate::link::LinkHandle;
use crate::metrics::{AgentMetrics, InteractionLabels};
use crate::store::{OutboxEntry, Store};
use edgefleet_sandbox::{Interaction, InteractionError, Outcome, Sandbox};

/// Messages a lane takes into one round at most.
const MAX_ROUND: usize = 64;
/// Messages waiting per lane before `accept` waits (backpressure).
const LANE_CAPACITY: usize = 1024;

/// What the pipeline shares.
pub struct Pipeline {
    pub node: NodeId,
    pub sandbox: Arc<Sandbox>,
    pub store: Store,
    pub classes: ClassTable,
    pub device_link: LinkHandle,
    pub metrics: Arc<AgentMetrics>,
    /// Woken whenever something was appended to the outbox.
    pub outbox_ready: Arc<Notify>,
    pub max_payload_bytes: usize,
    /// When each device was last heard from.
    pub activity: DeviceActivity,
    /// Limits events caused by device traffic.
    pub throttle: EventThrottle,
}

/// When each device was last heard from (for the status' active-device counts).
#[derive(Debug, Default)]
pub struct DeviceActivity(std::sync::Mutex<HashMap<(ClassId, DeviceId), Instant>>);

impl DeviceActivity {
    fn seen(&self, class: &ClassId, device: &DeviceId) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert((class.clone(), device.clone()), Instant::now());
    }

    /// Devices of `class` heard from within `window`.
    pub fn active(&self, class: &ClassId, window: std::time::Duration) -> u32 {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|((c, _), at)| c == class && at.elapsed() <= window)
            .count() as u32
    }
}

/// A device message routed to a lane.
struct Routed {
    class: ClassId,
    device: DeviceId,
    channel: ClassTopic,
    publish: Publish,
    arrived: Instant,
}

/// The entry point of device messages.
pub struct Interactions {
    pipeline: Arc<Pipeline>,
    lanes: Vec<mpsc::Sender<Routed>>,
}

impl Interactions {
    /// Starts `lanes` lanes.
    pub fn start(pipeline: Arc<Pipeline>, lanes: usize) -> Interactions {
        let lanes = (0..lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_CAPACITY);
                tokio::spawn(run_lane(pipeline.clone(), rx));
                tx
            })
            .collect();
        Interactions { pipeline, lanes }
    }

    /// Takes one message from the device link; waits while its lane is full.
    pub async fn accept(&self, publish: Publish) {
        let p = &self.pipeline;
        let (class, device, channel) = match Topic::parse(&publish.topic) {
            Ok(Topic::DeviceUp {
                class,
                device,
                channel,
            }) => (class, device, channel),
            Ok(_) | Err(_) => {
                let detail = format!("message on {:?} is not a device topic", publish.topic);
                return self
                    .refuse(publish, "bad_topic", EventKind::BadTopic, detail, None)
                    .await;
            }
        };
        if publish.payload.len() > p.max_payload_bytes {
            let detail = format!(
                "{}-byte payload exceeds the {}-byte limit",
                publish.payload.len(),
                p.max_payload_bytes
            );
            let ids = Some((class, device));
            return self
                .refuse(
                    publish,
                    "oversized",
                    EventKind::OversizedPayload,
                    detail,
                    ids,
                )
                .await;
        }
        if p.classes.get(&class).is_none() {
            let detail = format!("class {class} is not assigned to this node");
            let ids = Some((class, device));
            return self
                .refuse(
                    publish,
                    "unknown_class",
                    EventKind::UnknownClass,
                    detail,
                    ids,
                )
                .await;
        }
        let lane = lane_of(&class, &device, self.lanes.len());
        p.metrics.queue_depth.inc();
        let routed = Routed {
            class,
            device,
            channel,
            publish,
            arrived: Instant::now(),
        };
        if self.lanes[lane].send(routed).await.is_err() {
            p.metrics.queue_depth.dec();
        }
    }

    async fn refuse(
        &self,
        publish: Publish,
        reason: &str,
        kind: EventKind,
        detail: String,
        ids: Option<(ClassId, DeviceId)>,
    ) {
        let p = &self.pipeline;
        tracing::warn!(topic = %publish.topic, "refused device message: {detail}");
        p.metrics.refuse_message(reason);
        let mut event = AgentEvent::new(now_ms(), p.node.clone(), kind, detail);
        if let Some((class, device)) = ids {
            event = event.with_class(class).with_device(device);
        }
        report_traffic(p, event);
        // Acked: refusing it again on every redelivery would only repeat the event.
        if let Err(e) = p.device_link.ack(&publish).await {
            tracing::debug!("cannot ack a refused message: {e}");
        }
    }
}

/// Events caused by device traffic (refused messages, failed interactions), at most one per class and
/// kind per window: a chatty device with a broken handler must not fill the outbox with events and
/// push real telemetry out. The rest are counted (`edgefleet_agent_events_suppressed_total`).
#[derive(Debug)]
pub struct EventThrottle {
    window: std::time::Duration,
    last: std::sync::Mutex<HashMap<(Option<ClassId>, EventKind), Instant>>,
}

impl EventThrottle {
    pub fn new(window: std::time::Duration) -> EventThrottle {
        EventThrottle {
            window,
            last: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn allows(&self, event: &AgentEvent) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let key = (event.class.clone(), event.kind);
        match last.get(&key) {
            Some(at) if at.elapsed() < self.window => false,
            _ => {
                last.insert(key, Instant::now());
                true
            }
        }
    }
}

/// Reports an event caused by device traffic, subject to the pipeline's [`EventThrottle`].
fn report_traffic(p: &Pipeline, event: AgentEvent) {
    if p.throttle.allows(&event) {
        report(p, event);
    } else {
        p.metrics.events_suppressed.inc();
    }
}

/// Appends an agent event to the outbox.
pub fn report(p: &Pipeline, event: AgentEvent) {
    match p.store.outbox_append(&[OutboxEntry::Event(event)]) {
        Ok(appended) => {
            p.metrics.outbox_dropped.inc_by(appended.dropped);
            p.outbox_ready.notify_one();
        }
        Err(e) => tracing::error!("cannot store an agent event: {e}"),
    }
}

fn lane_of(class: &ClassId, device: &DeviceId, lanes: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (class, device).hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn run_lane(p: Arc<Pipeline>, mut rx: mpsc::Receiver<Routed>) {
    let mut queue: VecDeque<Routed> = VecDeque::new();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(message) => queue.push_back(message),
                None => return,
            }
        }
        while queue.len() < MAX_ROUND * 4 {
            match rx.try_recv() {
                Ok(message) => queue.push_back(message),
                Err(_) => break,
            }
        }
        let round = take_round(&mut queue);
        p.metrics.queue_depth.dec_by(round.len() as i64);
        run_round(&p, round).await;
    }
}

/// The earliest message of each device, in arrival order, up to [`MAX_ROUND`]; the rest stay queued
/// in their order.
fn take_round(queue: &mut VecDeque<Routed>) -> Vec<Routed> {
    let mut seen = HashSet::new();
    let mut round = Vec::new();
    let mut rest = VecDeque::with_capacity(queue.len());
    while let Some(message) = queue.pop_front() {
        if round.len() < MAX_ROUND && seen.insert((message.class.clone(), message.device.clone())) {
            round.push(message);
        } else {
            rest.push_back(message);
        }
    }
    *queue = rest;
    round
}

async fn run_round(p: &Arc<Pipeline>, round: Vec<Routed>) {
    let mut by_class: HashMap<ClassId, Vec<Routed>> = HashMap::new();
    for message in round {
        by_class
            .entry(message.class.clone())
            .or_default()
            .push(message);
    }
    let mut done = Vec::new();
    for (class, messages) in by_class {
        // Taken once per batch: a swap during the batch applies to the next one.
        let Some(active) = p.classes.get(&class) else {
            for message in messages {
                let detail = format!("class {class} was withdrawn while the message waited");
                p.metrics.refuse_message("unknown_class");
                report_traffic(
                    p,
                    AgentEvent::new(now_ms(), p.node.clone(), EventKind::UnknownClass, detail)
                        .with_class(class.clone())
                        .with_device(message.device.clone()),
                );
                done.push((message, None));
            }
            continue;
        };
        let results = run_batch(p, &active, &messages).await;
        for (message, result) in messages.into_iter().zip(results) {
            let commands = commit(p, &active, &message, result);
            done.push((message, commands));
        }
    }
    // State and outbox on disk first, then commands, then acks: a crash before the flush makes the
    // broker deliver the messages again (at least once), and no command ever announces a state that
    // could still be lost.
    if let Err(e) = p.store.flush_async().await {
        tracing::error!("cannot flush the store; messages stay unacked and will come again: {e}");
        return;
    }
    p.outbox_ready.notify_one();
    for (message, commands) in done {
        if let Some((topic, commands)) = commands {
            for command in commands {
                if let Err(e) = p
                    .device_link
                    .client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, command)
                    .await
                {
                    tracing::warn!(device = %message.device, "cannot queue a command: {e}");
                }
            }
            p.metrics
                .latency
                .observe(message.arrived.elapsed().as_secs_f64());
        }
        if let Err(e) = p.device_link.ack(&message.publish).await {
            tracing::debug!("cannot ack: {e}");
        }
    }
}

/// A device's command topic and the command payloads to send on it.
type Commands = Option<(String, Vec<Vec<u8>>)>;

async fn run_batch(
    p: &Arc<Pipeline>,
    active: &Arc<ActiveClass>,
    messages: &[Routed],
) -> Vec<Result<Outcome, InteractionError>> {
    let mut items = Vec::with_capacity(messages.len());
    for message in messages {
        let state = match p.store.device_state(&message.class, &message.device) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(device = %message.device, "cannot read device state: {e}");
                None
            }
        };
        items.push(Interaction {
            device: message.device.as_str().to_string(),
            channel: message.channel.as_str().to_string(),
            payload: message.publish.payload.to_vec(),
            state: state.map(Into::into),
            now_ms: now_ms() as i64,
        });
    }
    let module = match &active.handler {
        ClassHandler::Wasm(module) => module.clone(),
        ClassHandler::Native(handle) => return items.iter().map(handle).collect(),
    };
    let sandbox = p.sandbox.clone();
    let len = items.len();
    match tokio::task::spawn_blocking(move || sandbox.run_batch(&module, items)).await {
        Ok(results) => results,
        Err(e) => (0..len)
            .map(|_| {
                Err(InteractionError::Unavailable {
                    detail: format!("sandbox call failed: {e}"),
                })
            })
            .collect(),
    }
}

/// Counts the interaction and commits its effects; returns the commands to send after the flush.
fn commit(
    p: &Arc<Pipeline>,
    active: &ActiveClass,
    message: &Routed,
    result: Result<Outcome, InteractionError>,
) -> Commands {
    let outcome_label = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    active.counters.count(outcome_label);
    p.activity.seen(&active.class, &message.device);
    p.metrics
        .interactions
        .get_or_create(&InteractionLabels {
            class: active.class.as_str().to_string(),
            version: active.version.clone(),
            outcome: outcome_label.to_string(),
        })
        .inc();
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            let kind = match error {
                InteractionError::Rejected { .. } => EventKind::MalformedPayload,
                InteractionError::Quarantined { .. } => EventKind::ModuleQuarantined,
                _ => EventKind::InteractionFailed,
            };
            report_traffic(
                p,
                AgentEvent::new(now_ms(), p.node.clone(), kind, error.to_string())
                    .with_class(active.class.clone())
                    .with_device(message.device.clone())
                    .with_module(active.sha256),
            );
            return None;
        }
    };
    for line in &outcome.logs {
        tracing::info!(class = %active.class, device = %message.device, level = ?line.level, "handler: {}", line.text);
    }
    let mut entries = Vec::with_capacity(outcome.upstream.len());
    for upstream in &outcome.upstream {
        // The sandbox only lets allowed, well-formed class topics through.
        let Ok(topic) = ClassTopic::new(upstream.topic.clone()) else {
            continue;
        };
        entries.push(OutboxEntry::Upstream(UpstreamMessage {
            node: p.node.clone(),
            class: active.class.clone(),
            device: message.device.clone(),
            topic,
            module: active.sha256,
            payload: upstream.payload.clone(),
            at_ms: now_ms(),
            epoch: 0,
            seq: 0,
        }));
    }
    let new_state = outcome.new_state.as_deref().map(|s| s.as_slice());
    match p
        .store
        .commit_interaction(&active.class, &message.device, new_state, &entries)
    {
        Ok(appended) => {
            p.metrics.outbox_dropped.inc_by(appended.dropped);
        }
        Err(e) => {
            tracing::error!(device = %message.device, "cannot commit the interaction: {e}");
            return None;
        }
    }
    let topic = Topic::DeviceCommand {
        class: active.class.clone(),
        device: message.device.clone(),
    }
    .to_string();
    Some((
        topic,
        outcome.commands.into_iter().map(|c| c.into_vec()).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(class: &str, kind: EventKind) -> AgentEvent {
        AgentEvent::new(0, NodeId::new("n").unwrap(), kind, "x")
            .with_class(ClassId::new(class).unwrap())
    }

    #[test]
    fn the_throttle_lets_one_event_per_class_and_kind_through_per_window() {
        let throttle = EventThrottle::new(std::time::Duration::from_secs(60));
        assert!(throttle.allows(&event("a", EventKind::MalformedPayload)));
        assert!(!throttle.allows(&event("a", EventKind::MalformedPayload)));
        assert!(throttle.allows(&event("a", EventKind::InteractionFailed)));
        assert!(throttle.allows(&event("b", EventKind::MalformedPayload)));
        let instant = EventThrottle::new(std::time::Duration::ZERO);
        assert!(instant.allows(&event("a", EventKind::MalformedPayload)));
        assert!(instant.allows(&event("a", EventKind::MalformedPayload)));
    }

    #[test]
    fn a_round_takes_each_device_once_in_arrival_order() {
        fn routed(device: &str) -> Routed {
            Routed {
                class: ClassId::new("c").unwrap(),
                device: DeviceId::new(device).unwrap(),
                channel: ClassTopic::new("telemetry").unwrap(),
                publish: Publish::new("t", QoS::AtLeastOnce, device.as_bytes().to_vec()),
                arrived: Instant::now(),
            }
        }
        let mut queue: VecDeque<Routed> = ["a", "b", "a", "c", "b", "a"]
            .into_iter()
            .map(routed)
            .collect();
        let devices = |round: &[Routed]| {
            round
                .iter()
                .map(|r| r.device.as_str().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(devices(&take_round(&mut queue)), ["a", "b", "c"]);
        assert_eq!(devices(&take_round(&mut queue)), ["a", "b"]);
        assert_eq!(devices(&take_round(&mut queue)), ["a"]);
        assert!(queue.is_empty());
    }
}
