//! From device message to committed effects, with a verdict for every message.
//!
//! ```text
//! device link (polling task) ─► Interactions::offer: topic, size, class ─► Intake (fair, bounded)
//!   lanes (tasks): take_round (≤ 1 message per device) ─► state read ─► Sandbox::run_batch
//!     ─► commit state + outbox entries (one sled transaction per interaction) ─► flush
//!     ─► commands to the devices ─► ack ─► Intake::finish
//! ```
//!
//! **Verdicts.** Every message ends in exactly one of:
//!
//! | verdict | when | broker ack | also |
//! |---|---|---|---|
//! | done | the interaction succeeded and its effects are flushed | yes, after the flush and the commands | |
//! | module fault | the *module* failed: trap, timeout, worker crash, output/state limit, forbidden topic, rejection, quarantine without a version to fall back to | yes (a poison message must not come back into a crash loop) | counted, a throttled event |
//! | refused | not a device topic, oversized, class not assigned here | yes | counted, a throttled event |
//! | host fault | the *node* failed: workers unavailable, the class not restored yet, state read, commit or flush failed | **no** | the device is held, the link reconnects so that the broker delivers it again; counted, a throttled event |
//!
//! **Quarantine: fall back and run on the previous version.** When a batch finds its class's
//! active version quarantined (`InteractionError::Quarantined`) and the class keeps a previous
//! version, the class falls back to it at once (`fallback`), and the interactions the quarantine
//! refused run on that version in the same round: they never ran (a quarantine refuses without
//! touching a worker), so they get the verdict of the version that now runs — done once flushed,
//! like any other. Running them now rather than leaving them for redelivery keeps the device
//! answered without a reconnect and keeps per-device order. The messages whose faults tripped the
//! breaker keep their module-fault verdict (acked: a poison message must not come back). Either way
//! nothing is acked before its effects are durable.
//!
//! **Shadow.** When the class has a shadow version, each batch's interactions and the results acted
//! upon are handed to `shadow::run_beside` after the batch ran: it compares in a task of its own,
//! or skips when the sandbox is busy, and nothing it produces is committed or sent.
//!
//! **Fairness and bounds** are the [`Intake`]'s (see there): the polling task only offers and never
//! waits, so no lane can stall the link and the link cannot stall a lane. Lanes wait on the sandbox
//! and the store, never on the intake nor on the link (`Link::command` and `Link::ack` queue replies
//! that the polling task writes). **Backpressure**: while the intake is half full the device link
//! stops reading (`Pressure`), so under overload the broker keeps what the node cannot take yet, in
//! order; nothing is shed or redelivered for load alone, and `Shed::Full` is a last resort.
//!
//! **QoS 0** device messages are best effort: shed first when the node is busy, not redelivered
//! after a host fault (the broker keeps no copy), counted either way.
//!
//! **Duplicates.** When the device link reconnects (a host fault asks for it, the broker restarts),
//! the broker delivers again what it had not seen acknowledged, with MQTT's DUP flag — including
//! messages done here whose ack was still on its way. The intake recognises those copies
//! (`Offered::AlreadyDone`: same packet id, device and payload) and they are acked again without
//! running, so one device's fault does not make the others' messages run twice. A message can
//! still be handled twice (at least once) across a restart of the agent, which forgets those ids.
//! A message is never acked before its effects are durable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use edgefleet_protocol::event::{AgentEvent, EventKind};
use edgefleet_protocol::id::{ClassId, DeviceId};
use edgefleet_protocol::topic::{ClassTopic, Topic};
use edgefleet_protocol::upstream::UpstreamMessage;
use edgefleet_sandbox::{Interaction, InteractionError, Outcome};
use rumqttc::{Publish, QoS};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::classes::{ActiveClass, ClassHandler};
use crate::clock::now_ms;
use crate::context::Context;
use crate::events::report_traffic;
use crate::fallback;
use crate::health::Observations;
use crate::intake::{Budget, Envelope, Intake, IntakeLimits, Offered, Shed, Taken};
use crate::link::{Link, Pressure};
use crate::metrics::{InteractionLabels, ReasonLabels};
use crate::shadow;
use crate::store::OutboxEntry;

/// Messages a lane takes into one round at most.
const MAX_ROUND: usize = 64;

/// A device: the class and id its topic names.
type DeviceKey = (ClassId, DeviceId);

/// A device message in the intake.
struct Message {
    channel: ClassTopic,
    publish: Publish,
}

/// Host-side faults, for readiness.
#[derive(Debug, Default)]
struct Faults {
    flush_failing_since: Option<Instant>,
    held_since: Option<Instant>,
}

struct IntakeState {
    intake: Intake<DeviceKey, Message>,
    /// The device link connection the intake last saw; a new one delivers held messages again.
    connection: u64,
}

/// The entry point of device messages and the lanes that handle them.
pub struct Interactions {
    ctx: Arc<Context>,
    link: OnceLock<Link>,
    state: Mutex<IntakeState>,
    faults: Mutex<Faults>,
    /// Woken when a device has a message ready for a lane.
    work: Notify,
    max_payload_bytes: usize,
    /// Set at shutdown: new messages are left unacknowledged (the broker delivers them next time).
    closing: AtomicBool,
    /// Set while a shadow batch runs (`shadow::run_beside`: one at a time).
    shadow_busy: Arc<AtomicBool>,
    /// Stops the device link reading while the intake is pressed (see `link`'s backpressure).
    pressure: Arc<Pressure>,
}

/// A message of a round with its verdict and the class version that judged it.
type Judged = (Taken<DeviceKey, Message>, Verdict, Option<Arc<ActiveClass>>);

/// One message's verdict (see the module documentation).
enum Verdict {
    Done { commands: Vec<Vec<u8>> },
    ModuleFault,
    Refused,
    HostFault { reason: &'static str },
}

impl Interactions {
    pub fn new(ctx: Arc<Context>, limits: IntakeLimits, max_payload_bytes: usize) -> Arc<Self> {
        Arc::new(Interactions {
            ctx,
            link: OnceLock::new(),
            state: Mutex::new(IntakeState {
                intake: Intake::new(limits),
                connection: 0,
            }),
            faults: Mutex::new(Faults::default()),
            work: Notify::new(),
            max_payload_bytes,
            closing: AtomicBool::new(false),
            shadow_busy: Arc::new(AtomicBool::new(false)),
            pressure: Arc::new(Pressure::default()),
        })
    }

    /// What the device link watches to stop reading while the intake is pressed.
    pub fn pressure(&self) -> Arc<Pressure> {
        self.pressure.clone()
    }

    /// The device link that delivers messages here (set once, right after it starts).
    pub fn attach(&self, link: Link) {
        let _ = self.link.set(link);
    }

    /// Starts `lanes` lane tasks; they run until [`Interactions::close`] and the intake is empty.
    pub fn start_lanes(self: &Arc<Self>, lanes: usize) -> Vec<tokio::task::JoinHandle<()>> {
        (0..lanes.max(1))
            .map(|_| tokio::spawn(self.clone().run_lane()))
            .collect()
    }

    /// Takes one message from the device link's polling task. Never waits.
    pub fn offer(&self, publish: Publish) {
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        let (class, device, channel) = match Topic::parse(&publish.topic) {
            Ok(Topic::DeviceUp {
                class,
                device,
                channel,
            }) => (class, device, channel),
            Ok(_) | Err(_) => {
                let detail = format!("message on {:?} is not a device topic", publish.topic);
                return self.refuse(&publish, "bad_topic", EventKind::BadTopic, detail, None);
            }
        };
        if publish.payload.len() > self.max_payload_bytes {
            let detail = format!(
                "{}-byte payload exceeds the {}-byte limit",
                publish.payload.len(),
                self.max_payload_bytes
            );
            let kind = EventKind::OversizedPayload;
            return self.refuse(&publish, "oversized", kind, detail, Some((class, device)));
        }
        let Some(active) = self.ctx.classes.get(&class) else {
            if self.ctx.classes.is_expected(&class) {
                // Applied here but not running yet (restoring): a fault of the node, not of the
                // device. Left for redelivery.
                self.ctx
                    .metrics
                    .host_faults
                    .get_or_create(&ReasonLabels::new("class_unavailable"))
                    .inc();
                if publish.qos != QoS::AtMostOnce
                    && let Some(link) = self.link.get()
                {
                    link.request_redelivery();
                }
                return;
            }
            let detail = format!("class {class} is not assigned to this node");
            let kind = EventKind::UnknownClass;
            return self.refuse(
                &publish,
                "unknown_class",
                kind,
                detail,
                Some((class, device)),
            );
        };
        if let Some(link) = self.link.get()
            && link.congested()
        {
            // The node is a full command window behind: taking more would only lengthen the
            // wait for the PUBACKs behind what it has not read.
            let shed = if publish.qos == QoS::AtMostOnce {
                Shed::BestEffort
            } else {
                Shed::Overload
            };
            return self.shed(&publish, &(class, device), shed);
        }
        let budget = Budget {
            rate_per_s: f64::from(active.limits.device_rate_per_s),
            burst: f64::from(active.limits.device_burst),
        };
        let envelope = Envelope {
            acknowledged: publish.qos != QoS::AtMostOnce,
            pkid: publish.pkid,
            bytes: publish.payload.len(),
            redelivered: publish.dup,
            digest: digest(&publish.payload),
        };
        let key = (class, device);
        let offered = {
            let mut state = self.lock_state();
            self.resume_on_new_connection(&mut state);
            let message = Message {
                channel,
                publish: publish.clone(),
            };
            let offered =
                state
                    .intake
                    .offer(key.clone(), envelope, message, budget, Instant::now());
            if offered == Offered::Shed(Shed::Full) {
                // Its later messages must not overtake it: the device waits for the redelivery.
                state.intake.hold(&key);
                self.note_held();
            }
            self.intake_changed(&state);
            offered
        };
        match offered {
            Offered::Queued => self.work.notify_one(),
            // Its first copy is still here; that copy's ack covers both.
            Offered::Duplicate => {}
            // Done and acked before the connection dropped; the broker had not seen the ack.
            Offered::AlreadyDone => {
                self.ctx.metrics.redelivered_done.inc();
                self.ack(&publish);
            }
            Offered::Shed(shed) => self.shed(&publish, &key, shed),
        }
    }

    fn shed(&self, publish: &Publish, (class, device): &DeviceKey, shed: Shed) {
        self.ctx
            .metrics
            .shed_messages
            .get_or_create(&ReasonLabels::new(shed.label()))
            .inc();
        match shed {
            Shed::OverBudget | Shed::Backlog => {
                let detail = if shed == Shed::OverBudget {
                    format!(
                        "device sends faster than its class's budget; the excess is dropped ({})",
                        publish.topic
                    )
                } else {
                    format!(
                        "device has more messages waiting than its share of the node; the excess is dropped ({})",
                        publish.topic
                    )
                };
                report_traffic(
                    &self.ctx,
                    AgentEvent::new(
                        now_ms(),
                        self.ctx.node.clone(),
                        EventKind::DeviceOverBudget,
                        detail,
                    )
                    .with_class(class.clone())
                    .with_device(device.clone()),
                );
                self.ack(publish);
            }
            Shed::Overload => {
                tracing::debug!(topic = %publish.topic, "shed: the node is behind on commands");
                self.ack(publish);
            }
            Shed::BestEffort => {}
            Shed::Full | Shed::Held => {
                if let Some(link) = self.link.get() {
                    link.request_redelivery();
                }
            }
        }
    }

    fn refuse(
        &self,
        publish: &Publish,
        reason: &str,
        kind: EventKind,
        detail: String,
        ids: Option<DeviceKey>,
    ) {
        tracing::debug!(topic = %publish.topic, "refused device message: {detail}");
        self.ctx.metrics.refuse_message(reason);
        let mut event = AgentEvent::new(now_ms(), self.ctx.node.clone(), kind, detail);
        if let Some((class, device)) = ids {
            event = event.with_class(class).with_device(device);
        }
        report_traffic(&self.ctx, event);
        // Acked: refusing it again on every redelivery would only repeat the event.
        self.ack(publish);
    }

    fn ack(&self, publish: &Publish) {
        if publish.qos == QoS::AtMostOnce {
            return;
        }
        if let Some(link) = self.link.get()
            && let Err(e) = link.ack(publish)
        {
            // Not acked: the broker delivers it again after the next reconnect.
            tracing::debug!("cannot ack: {e}");
            link.request_redelivery();
        }
    }

    /// Stops taking new messages; lanes finish what the intake holds (see [`Interactions::drain`]).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.work.notify_waiters();
    }

    /// Waits until the intake is empty or `deadline` passes; returns the messages left.
    pub async fn drain(&self, deadline: Instant) -> usize {
        loop {
            let left = self.lock_state().intake.depth().messages;
            if left == 0 || Instant::now() >= deadline {
                self.work.notify_waiters();
                return left;
            }
            self.work.notify_waiters();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the watchdog looks at; also forgets idle devices and refreshes the gauges.
    pub fn observe(&self, device_link_connected: bool) -> Observations {
        let now = Instant::now();
        let (waiting, in_lane, any_held) = {
            let mut state = self.lock_state();
            self.resume_on_new_connection(&mut state);
            state.intake.forget_idle(now);
            self.intake_changed(&state);
            let (waiting, in_lane) = state.intake.oldest();
            (waiting, in_lane, state.intake.any_held())
        };
        let mut faults = self.lock_faults();
        if !any_held {
            faults.held_since = None;
        }
        Observations {
            device_link_connected,
            oldest_waiting: waiting.map(|at| now.saturating_duration_since(at)),
            longest_in_lane: in_lane.map(|at| now.saturating_duration_since(at)),
            flush_failing_for: faults
                .flush_failing_since
                .map(|at| now.saturating_duration_since(at)),
            held_for: faults
                .held_since
                .map(|at| now.saturating_duration_since(at)),
        }
    }

    async fn run_lane(self: Arc<Self>) {
        loop {
            let round = self
                .lock_state()
                .intake
                .take_round(MAX_ROUND, Instant::now());
            if round.is_empty() {
                if self.closing.load(Ordering::Acquire) {
                    return;
                }
                self.work.notified().await;
                continue;
            }
            if self.lock_state().intake.has_ready() {
                // More work than this lane took: wake another.
                self.work.notify_one();
            }
            let span = tracing::debug_span!("round", messages = round.len());
            self.run_round(round).instrument(span).await;
        }
    }

    async fn run_round(&self, round: Vec<Taken<DeviceKey, Message>>) {
        let mut by_class: Vec<(ClassId, Vec<Taken<DeviceKey, Message>>)> = Vec::new();
        for taken in round {
            let class = &taken.device.0;
            match by_class.iter_mut().find(|(c, _)| c == class) {
                Some((_, list)) => list.push(taken),
                None => by_class.push((class.clone(), vec![taken])),
            }
        }
        let mut verdicts: Vec<Judged> = Vec::new();
        for (class, messages) in by_class {
            // Taken once per batch: a swap during the batch applies to the next one.
            let Some(active) = self.ctx.classes.get(&class) else {
                for taken in messages {
                    let detail = format!("class {class} was withdrawn while the message waited");
                    self.ctx.metrics.refuse_message("unknown_class");
                    report_traffic(
                        &self.ctx,
                        AgentEvent::new(
                            now_ms(),
                            self.ctx.node.clone(),
                            EventKind::UnknownClass,
                            detail,
                        )
                        .with_class(class.clone())
                        .with_device(taken.device.1.clone()),
                    );
                    verdicts.push((taken, Verdict::Refused, None));
                }
                continue;
            };
            for (taken, verdict) in self.run_class(&active, messages).await {
                verdicts.push((taken, verdict, Some(active.clone())));
            }
        }
        // State and outbox on disk first, then commands, then acks: a crash before the flush makes the
        // broker deliver the messages again, and no command ever announces a state that could still be
        // lost.
        if verdicts
            .iter()
            .any(|(_, v, _)| matches!(v, Verdict::Done { .. }))
        {
            let flushed = self.ctx.store.flush_async().await;
            let mut faults = self.lock_faults();
            match flushed {
                Ok(()) => faults.flush_failing_since = None,
                Err(e) => {
                    faults.flush_failing_since.get_or_insert_with(Instant::now);
                    drop(faults);
                    tracing::error!(
                        "cannot flush the store; the messages stay unacknowledged: {e}"
                    );
                    for (_, verdict, _) in &mut verdicts {
                        if matches!(verdict, Verdict::Done { .. }) {
                            *verdict = Verdict::HostFault { reason: "flush" };
                        }
                    }
                }
            }
            self.ctx.outbox_ready.notify_one();
        }
        let link = self.link.get();
        let mut held = Vec::new();
        for (taken, verdict, active) in &verdicts {
            match verdict {
                Verdict::Done { commands } => {
                    self.ctx
                        .metrics
                        .latency
                        .observe(taken.arrived.elapsed().as_secs_f64());
                    if let (Some(link), Some(active)) = (link, active) {
                        let topic = Topic::DeviceCommand {
                            class: active.class.clone(),
                            device: taken.device.1.clone(),
                        }
                        .to_string();
                        let commands = commands.iter().map(|c| (topic.clone(), c.clone()));
                        // The ack goes out behind the commands.
                        if let Err(e) = link.answer(&taken.message.publish, commands) {
                            self.ctx
                                .metrics
                                .commands_dropped
                                .inc_by(commands_len(verdict));
                            tracing::warn!(device = %taken.device.1, "answer not sent: {e}");
                            link.request_redelivery();
                        }
                    }
                }
                Verdict::ModuleFault | Verdict::Refused => self.ack(&taken.message.publish),
                Verdict::HostFault { reason } => {
                    self.ctx
                        .metrics
                        .host_faults
                        .get_or_create(&ReasonLabels::new(reason))
                        .inc();
                    if taken.envelope.acknowledged {
                        held.push(taken.device.clone());
                    }
                }
            }
        }
        if !held.is_empty()
            && let Some(link) = link
        {
            link.request_redelivery();
        }
        let mut state = self.lock_state();
        for device in &held {
            state.intake.hold(device);
        }
        for (taken, verdict, _) in &verdicts {
            let acked = !matches!(verdict, Verdict::HostFault { .. });
            state.intake.finish(&taken.device, taken.envelope, acked);
        }
        self.intake_changed(&state);
        let ready = state.intake.has_ready();
        drop(state);
        if !held.is_empty() {
            self.note_held();
        }
        if ready {
            self.work.notify_one();
        }
    }

    /// Runs one class's messages of a round and commits what succeeded; the verdict of each.
    async fn run_class(
        &self,
        active: &Arc<ActiveClass>,
        messages: Vec<Taken<DeviceKey, Message>>,
    ) -> Vec<(Taken<DeviceKey, Message>, Verdict)> {
        let store = self.ctx.store.clone();
        let keys: Vec<DeviceKey> = messages.iter().map(|t| t.device.clone()).collect();
        let states = tokio::task::spawn_blocking(move || {
            keys.iter()
                .map(|(class, device)| store.device_state(class, device).map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|e| vec![Err(format!("state read task failed: {e}")); messages.len()]);
        let mut items = Vec::new();
        let mut readable = Vec::new();
        for (taken, state) in messages.iter().zip(states) {
            match state {
                Ok(state) => {
                    items.push(Interaction {
                        device: taken.device.1.as_str().to_string(),
                        channel: taken.message.channel.as_str().to_string(),
                        payload: taken.message.publish.payload.to_vec(),
                        state: state.map(Into::into),
                        now_ms: now_ms() as i64,
                    });
                    readable.push(true);
                }
                Err(e) => {
                    // Running the handler without its state would overwrite the state with a
                    // result computed from nothing.
                    tracing::error!(device = %taken.device.1, "cannot read device state: {e}");
                    readable.push(false);
                }
            }
        }
        // The batch's results are in the order of the readable messages, each with the version
        // that ran it.
        let copies = items.clone();
        let ran = self.run_with_fallback(active, items, &copies).await;
        // The shadow gets the same interactions and the results acted upon; it is run after them,
        // in a task of its own, and never delays what follows.
        if let Some(run) = self.ctx.classes.shadow(&active.class) {
            let results = ran.iter().map(|(_, result)| result.clone()).collect();
            shadow::run_beside(&self.ctx, &self.shadow_busy, run, copies, results);
        }
        let mut ran = ran.into_iter();
        let mut verdicts = Vec::with_capacity(messages.len());
        let mut to_commit = Vec::new();
        for (index, (taken, readable)) in messages.into_iter().zip(readable).enumerate() {
            let Some((runner, result)) = readable.then(|| ran.next()).flatten() else {
                verdicts.push((
                    taken,
                    Verdict::HostFault {
                        reason: "state_read",
                    },
                ));
                continue;
            };
            let label = match &result {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            };
            self.count(&runner, &taken.device.1, label);
            match result {
                Ok(outcome) => {
                    to_commit.push((index, runner, outcome));
                    verdicts.push((
                        taken,
                        Verdict::Done {
                            commands: Vec::new(),
                        },
                    ));
                }
                Err(InteractionError::Unavailable { detail }) => {
                    tracing::error!(class = %runner.class, "sandbox unavailable: {detail}");
                    self.report_host_fault(&runner, &taken.device.1, &detail);
                    verdicts.push((
                        taken,
                        Verdict::HostFault {
                            reason: "unavailable",
                        },
                    ));
                }
                Err(error) => {
                    let kind = match error {
                        InteractionError::Rejected { .. } => EventKind::MalformedPayload,
                        InteractionError::Quarantined { .. } => EventKind::ModuleQuarantined,
                        _ => EventKind::InteractionFailed,
                    };
                    report_traffic(
                        &self.ctx,
                        AgentEvent::new(now_ms(), self.ctx.node.clone(), kind, error.to_string())
                            .with_class(runner.class.clone())
                            .with_device(taken.device.1.clone())
                            .with_module(runner.sha256),
                    );
                    verdicts.push((taken, Verdict::ModuleFault));
                }
            }
        }
        if to_commit.is_empty() {
            return verdicts;
        }
        let devices: Vec<DeviceId> = to_commit
            .iter()
            .map(|(index, _, _)| verdicts[*index].0.device.1.clone())
            .collect();
        let committed = self.commit(devices, to_commit).await;
        for (index, result) in committed {
            let (taken, verdict) = &mut verdicts[index];
            *verdict = match result {
                Ok(commands) => Verdict::Done { commands },
                Err(e) => {
                    tracing::error!(device = %taken.device.1, "cannot commit the interaction: {e}");
                    Verdict::HostFault { reason: "commit" }
                }
            };
        }
        verdicts
    }

    /// Runs the batch on `active`; when `active` turns out to be quarantined, falls the class back
    /// to its previous version ([`fallback`]) and runs the interactions the quarantine refused on
    /// that one (they never ran: a quarantine refuses without touching a worker; `copies` are the
    /// items). Each result comes with the version that produced it.
    async fn run_with_fallback(
        &self,
        active: &Arc<ActiveClass>,
        items: Vec<Interaction>,
        copies: &[Interaction],
    ) -> Vec<(Arc<ActiveClass>, Result<Outcome, InteractionError>)> {
        let mut ran: Vec<_> = self
            .run_batch(active, items)
            .await
            .into_iter()
            .map(|result| (active.clone(), result))
            .collect();
        let refused: Vec<usize> = ran
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| matches!(r, Err(InteractionError::Quarantined { .. })))
            .map(|(index, _)| index)
            .collect();
        if refused.is_empty() {
            return ran;
        }
        let Some(back) = fallback::fall_back(&self.ctx, active).await else {
            return ran;
        };
        let again: Vec<Interaction> = refused.iter().map(|&i| copies[i].clone()).collect();
        for (index, result) in refused.into_iter().zip(self.run_batch(&back, again).await) {
            ran[index] = (back.clone(), result);
        }
        ran
    }

    async fn run_batch(
        &self,
        active: &ActiveClass,
        items: Vec<Interaction>,
    ) -> Vec<Result<Outcome, InteractionError>> {
        if items.is_empty() {
            return Vec::new();
        }
        let module = match &active.handler {
            ClassHandler::Wasm(module) => module.clone(),
            ClassHandler::Native(handle) => return items.iter().map(handle).collect(),
        };
        let sandbox = self.ctx.sandbox.clone();
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

    /// Commits the outcomes, each of the version that produced it (one transaction each, off the
    /// async threads); the commands of each, by index.
    async fn commit(
        &self,
        devices: Vec<DeviceId>,
        outcomes: Vec<(usize, Arc<ActiveClass>, Outcome)>,
    ) -> Vec<(usize, Result<Vec<Vec<u8>>, String>)> {
        let ctx = self.ctx.clone();
        let indices: Vec<usize> = outcomes.iter().map(|(i, _, _)| *i).collect();
        let task = tokio::task::spawn_blocking(move || {
            devices
                .into_iter()
                .zip(outcomes)
                .map(|(device, (index, runner, outcome))| {
                    (index, commit_one(&ctx, &runner, &device, outcome))
                })
                .collect::<Vec<_>>()
        });
        match task.await {
            Ok(committed) => committed,
            Err(e) => indices
                .into_iter()
                .map(|i| (i, Err(format!("commit task failed: {e}"))))
                .collect(),
        }
    }

    fn count(&self, active: &ActiveClass, device: &DeviceId, label: &str) {
        active.counters.count(label);
        self.ctx
            .activity
            .seen(&active.class, device, Instant::now());
        self.ctx
            .metrics
            .interactions
            .get_or_create(&InteractionLabels {
                class: active.class.as_str().to_string(),
                version: active.version.clone(),
                outcome: label.to_string(),
            })
            .inc();
    }

    fn report_host_fault(&self, active: &ActiveClass, device: &DeviceId, detail: &str) {
        report_traffic(
            &self.ctx,
            AgentEvent::new(
                now_ms(),
                self.ctx.node.clone(),
                EventKind::HostFault,
                format!("left for redelivery: {detail}"),
            )
            .with_class(active.class.clone())
            .with_device(device.clone()),
        );
    }

    fn resume_on_new_connection(&self, state: &mut IntakeState) {
        let Some(link) = self.link.get() else { return };
        let connection = link.connections();
        if connection != state.connection {
            state.connection = connection;
            state.intake.resume();
            self.lock_faults().held_since = None;
        }
    }

    fn note_held(&self) {
        self.lock_faults()
            .held_since
            .get_or_insert_with(Instant::now);
    }

    /// After any change to the intake: the link's pressure and the gauges.
    fn intake_changed(&self, state: &IntakeState) {
        if state.intake.is_pressed() {
            if self.pressure.hold() {
                self.ctx.metrics.reads_paused.inc();
            }
        } else if state.intake.is_eased() {
            self.pressure.ease();
        }
        let depth = state.intake.depth();
        let metrics = &self.ctx.metrics;
        metrics.queue_depth.set(depth.messages as i64);
        metrics.queue_bytes.set(depth.bytes as i64);
        metrics.queue_devices.set(depth.devices as i64);
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, IntakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn commands_len(verdict: &Verdict) -> u64 {
    match verdict {
        Verdict::Done { commands } => commands.len() as u64,
        _ => 0,
    }
}

/// Commits one successful interaction: its state and upstream messages in one transaction.
/// A digest of a payload, to tell a redelivered copy from a new message with a reused packet id
/// (`Intake`). Not a defence: a device that forges a collision only loses its own message.
fn digest(payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    payload.hash(&mut hasher);
    hasher.finish()
}

fn commit_one(
    ctx: &Context,
    active: &ActiveClass,
    device: &DeviceId,
    outcome: Outcome,
) -> Result<Vec<Vec<u8>>, String> {
    for line in &outcome.logs {
        tracing::info!(class = %active.class, %device, level = ?line.level, "handler: {}", line.text);
    }
    let mut entries = Vec::with_capacity(outcome.upstream.len());
    for upstream in &outcome.upstream {
        // The sandbox only lets allowed, well-formed class topics through.
        let Ok(topic) = ClassTopic::new(upstream.topic.clone()) else {
            continue;
        };
        entries.push(OutboxEntry::Upstream(UpstreamMessage {
            node: ctx.node.clone(),
            class: active.class.clone(),
            device: device.clone(),
            topic,
            module: active.sha256,
            payload: upstream.payload.clone(),
            at_ms: now_ms(),
            epoch: 0,
            seq: 0,
        }));
    }
    let new_state = outcome.new_state.as_deref().map(|s| s.as_slice());
    let appended = ctx
        .store
        .commit_interaction(&active.class, device, new_state, &entries)
        .map_err(|e| e.to_string())?;
    ctx.metrics.outbox_dropped.inc_by(appended.dropped);
    Ok(outcome.commands.into_iter().map(|c| c.into_vec()).collect())
}
