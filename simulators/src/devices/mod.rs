//! Simulated MQTT devices, thousands at a time, each a real client with its own identity, its own
//! physical model ([`model`]) and its own correctness oracle ([`oracle`]).
//!
//! [`Simulation::start`] connects the devices of a [`Plan`] (a mix of classes, a rate, bursts,
//! reconnect storms, misbehaving devices) and runs them until [`Simulation::stop`], which stops
//! sending, waits for the answers still due (at most [`Plan::drain`]), and returns the
//! [`Report`]. [`Simulation::snapshot`] reads the counters while it runs. For a benchmark, the
//! load can wait until every device is connected ([`Plan::send_once_all_connected`]) and the
//! latencies can start afresh at the measuring window ([`Simulation::reset_latencies`]).
//!
//! Each device is two tasks: one polls its rumqttc event loop (never cancelled mid-poll; it
//! reconnects after a broker restart or a storm), the other owns the model and the oracle and
//! sends on a jittered timer. A device subscribes to its command topic before it sends anything,
//! keeps its session across reconnects (commands sent meanwhile are queued by the broker), and
//! disconnects for a storm only once the broker has acknowledged everything it sent, so that a
//! storm causes no resend and therefore no duplicate the system could not avoid. The other way
//! round, the broker sends a command again (MQTT's DUP flag) when the device's ack was lost with
//! the connection; like any careful MQTT client, the device recognises such a copy of a command it
//! already received (same packet id and payload) and ignores it, counted as resent.
//!
//! Misbehaving devices ([`Misbehaviour`]) are extra devices next to the well-behaved ones:
//! **flooders** send far beyond the class's rate budget (their answers are counted, not
//! checked: the agent sheds what is over budget by design), **garbage** devices send bytes no
//! handler can decode every fourth message (checked: the handler must reject them and answer
//! nothing, and their state must not suffer), and **impostors** publish on another device's
//! topic and subscribe to its commands (the broker's ACL must drop both: anything an impostor
//! receives is counted as leaked, and its messages would show up as wrong answers at the victim).

pub mod model;
pub mod oracle;
mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgefleet_protocol::id::{ClassId, DeviceId};
use edgefleet_protocol::topic::{ClassTopic, Topic};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use model::{Model, Rng};
use oracle::Oracle;
pub use report::{ClassRow, Example, MisbehaviourRow, Report, Snapshot};
use report::{ClassStats, Counters};

/// The device classes a simulator can play: one per handler in `device-modules/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Thermostat,
    Meter,
    Lock,
    AirQuality,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Thermostat, Kind::Meter, Kind::Lock, Kind::AirQuality];

    /// The name used on the command line and in tables (also the class id by default).
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Thermostat => "thermostat",
            Kind::Meter => "meter",
            Kind::Lock => "lock",
            Kind::AirQuality => "air-quality",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Short tag in device ids.
    const fn tag(self) -> &'static str {
        match self {
            Kind::Thermostat => "th",
            Kind::Meter => "me",
            Kind::Lock => "lk",
            Kind::AirQuality => "aq",
        }
    }

    /// The channel below `up/` a device of this kind publishes on.
    const fn channel(self) -> &'static str {
        match self {
            Kind::Lock => "attempt",
            _ => "reading",
        }
    }
}

/// One class the devices belong to: which handler it runs and with what config.
#[derive(Debug, Clone)]
pub struct ClassPlan {
    pub kind: Kind,
    /// The DeviceClass's name (the class level of the devices' topics).
    pub class: ClassId,
    /// The class config, as JSON in the DeviceClass (`null`: none).
    pub config: serde_json::Value,
    /// Share of the devices, relative to the other classes' weights.
    pub weight: u32,
}

impl ClassPlan {
    /// The config as the handler receives it (CBOR; no config is an empty map, as the controller
    /// hands it over).
    fn config_cbor(&self) -> Vec<u8> {
        let empty = serde_json::Value::Object(serde_json::Map::new());
        let config = if self.config.is_null() {
            &empty
        } else {
            &self.config
        };
        edgefleet_protocol::codec::encode(config)
    }

    /// The lock's allow-list, so that its people present credentials that work.
    fn allowed(&self) -> Vec<String> {
        self.config
            .get("allow")
            .and_then(serde_json::Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Misbehaving devices, on top of [`Plan::devices`].
#[derive(Debug, Clone, Default)]
pub struct Misbehaviour {
    /// Devices sending at [`Misbehaviour::flood_rate_per_s`].
    pub flooders: usize,
    pub flood_rate_per_s: f64,
    /// Devices sending undecodable bytes every fourth message.
    pub garbage: usize,
    /// Devices publishing on another device's topic and listening to its commands.
    pub impostors: usize,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Plan {
    pub classes: Vec<ClassPlan>,
    /// Well-behaved devices, spread over the classes by weight.
    pub devices: usize,
    /// Prefix of every device id (`<prefix>-<tag>-<n>`), so that runs side by side do not
    /// collide; device ids are MQTT client ids, and a second client with the same id takes the
    /// first one's session over.
    pub prefix: String,
    /// Messages per second per device (jittered ±10 %).
    pub rate_per_s: f64,
    /// Every `every`, each device sends `messages` extra messages back to back (keep it within
    /// the class's `deviceBurst`, or the agent sheds them as over budget — by design).
    pub burst: Option<(u32, Duration)>,
    /// Every so often, every device disconnects and reconnects within two seconds.
    pub reconnect_every: Option<Duration>,
    pub misbehaviour: Misbehaviour,
    /// Longest wait for the answers still due after sending stops.
    pub drain: Duration,
    /// Most devices connecting at once (TLS handshakes load the broker).
    pub connect_concurrency: usize,
    /// Devices send nothing until every device is connected (then each starts at a random point
    /// of its interval): a benchmark's steady load, without thousands of TLS handshakes beside it.
    /// Otherwise each device starts sending as soon as it is connected.
    pub send_once_all_connected: bool,
    pub seed: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            classes: Vec::new(),
            devices: 100,
            prefix: "sim".into(),
            rate_per_s: 1.0,
            burst: None,
            reconnect_every: None,
            misbehaviour: Misbehaviour {
                flood_rate_per_s: 200.0,
                ..Misbehaviour::default()
            },
            drain: Duration::from_secs(15),
            connect_concurrency: 64,
            send_once_all_connected: false,
            seed: 1,
        }
    }
}

/// Why a simulation cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no device classes: give at least one (e.g. --class thermostat)")]
    NoClasses,
    #[error("the class weights add up to 0")]
    NoWeight,
    #[error("rate {0}/s per device: give a rate above 0")]
    BadRate(f64),
    #[error("device id {id:?} is not valid ({source}); choose another --prefix")]
    BadId {
        id: String,
        source: edgefleet_protocol::id::IdError,
    },
    #[error("cannot make the client options of {device}: {message}")]
    Connect { device: String, message: String },
}

/// Client options for a device: its identity (certificate), its broker. The simulator sets the
/// session, keep-alive and packet limits itself.
pub type Connect = dyn Fn(usize, &DeviceId) -> Result<MqttOptions, String> + Send + Sync;

/// What a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    WellBehaved,
    Garbage,
    Flooder,
    /// Publishes as the device at this index.
    Impostor(usize),
}

/// What the coordinator tells the devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connecting; no sending until every device is ([`Plan::send_once_all_connected`]).
    Connecting,
    Running,
    /// No more sending; answers still come in.
    Draining,
    /// Account for what is left and disconnect.
    Stopped,
}

struct Shared {
    classes: Vec<ClassStats>,
    counters: Counters,
    phase: watch::Sender<Phase>,
    /// Bumped for every reconnect storm.
    storm: watch::Sender<u64>,
    /// Bumped for every burst.
    burst: watch::Sender<u64>,
    /// Extra messages per device per burst.
    burst_messages: u32,
    /// Every device, misbehaving ones included.
    devices: usize,
    /// Devices with no answer still due (while draining).
    settled: AtomicUsize,
    connecting: Semaphore,
}

/// A running simulation.
pub struct Simulation {
    plan: Plan,
    shared: Arc<Shared>,
    devices: Vec<JoinHandle<()>>,
    timers: JoinHandle<()>,
    started: Instant,
    total_devices: usize,
}

/// Which class each well-behaved device belongs to: by weight, interleaved.
fn class_of(index: usize, classes: &[ClassPlan]) -> usize {
    let total: u64 = classes.iter().map(|c| u64::from(c.weight)).sum();
    let slot = (index as u64).wrapping_mul(0x9e37_79b9) % total;
    let mut acc = 0;
    for (i, class) in classes.iter().enumerate() {
        acc += u64::from(class.weight);
        if slot < acc {
            return i;
        }
    }
    classes.len() - 1
}

impl Simulation {
    /// Connects the plan's devices (in the background) and starts them sending.
    pub fn start(plan: Plan, connect: Arc<Connect>) -> Result<Simulation, PlanError> {
        if plan.classes.is_empty() {
            return Err(PlanError::NoClasses);
        }
        if plan.classes.iter().all(|c| c.weight == 0) {
            return Err(PlanError::NoWeight);
        }
        if !(plan.rate_per_s > 0.0 && plan.rate_per_s.is_finite()) {
            return Err(PlanError::BadRate(plan.rate_per_s));
        }
        let configs: Vec<Arc<[u8]>> = plan
            .classes
            .iter()
            .map(|c| Arc::from(c.config_cbor()))
            .collect();
        let m = &plan.misbehaviour;
        let total_devices = plan.devices + m.garbage + m.flooders + m.impostors.min(plan.devices);
        let shared = Arc::new(Shared {
            classes: plan
                .classes
                .iter()
                .map(|c| ClassStats::new(c.kind, c.class.clone()))
                .collect(),
            counters: Counters::default(),
            phase: watch::Sender::new(if plan.send_once_all_connected {
                Phase::Connecting
            } else {
                Phase::Running
            }),
            storm: watch::Sender::new(0),
            burst: watch::Sender::new(0),
            burst_messages: plan.burst.map_or(0, |(messages, _)| messages),
            devices: total_devices,
            settled: AtomicUsize::new(0),
            connecting: Semaphore::new(plan.connect_concurrency.max(1)),
        });

        let mut specs = Vec::new();
        let mut per_class = vec![0usize; plan.classes.len()];
        for index in 0..plan.devices {
            let class = class_of(index, &plan.classes);
            per_class[class] += 1;
            let n = per_class[class];
            let kind = plan.classes[class].kind;
            specs.push((
                format!("{}-{}-{n:05}", plan.prefix, kind.tag()),
                class,
                Role::WellBehaved,
            ));
        }
        for i in 0..m.garbage {
            specs.push((
                format!("{}-garbage-{i:03}", plan.prefix),
                i % plan.classes.len(),
                Role::Garbage,
            ));
        }
        for i in 0..m.flooders {
            specs.push((
                format!("{}-flood-{i:03}", plan.prefix),
                i % plan.classes.len(),
                Role::Flooder,
            ));
        }
        for i in 0..m.impostors.min(plan.devices) {
            let victim = i * plan.devices / m.impostors.max(1);
            specs.push((
                format!("{}-impostor-{i:03}", plan.prefix),
                specs[victim].1,
                Role::Impostor(victim),
            ));
        }
        let ids: Vec<DeviceId> = specs
            .iter()
            .map(|(id, _, _)| {
                DeviceId::new(id.as_str()).map_err(|source| PlanError::BadId {
                    id: id.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;

        let mut devices = Vec::with_capacity(specs.len());
        for (index, ((_, class, role), id)) in specs.iter().zip(&ids).enumerate() {
            let options = connect(index, id).map_err(|message| PlanError::Connect {
                device: id.to_string(),
                message,
            })?;
            let class_plan = &plan.classes[*class];
            let mut rng = Rng::new(plan.seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
            let (topic_device, oracle) = match role {
                Role::Impostor(victim) => (ids[*victim].clone(), None),
                Role::Flooder => (id.clone(), None),
                _ => (
                    id.clone(),
                    Some(Oracle::new(class_plan.kind, configs[*class].clone())),
                ),
            };
            if oracle.is_some() {
                shared.classes[*class]
                    .devices
                    .fetch_add(1, Ordering::Relaxed);
            }
            let device = Device {
                class: *class,
                kind: class_plan.kind,
                role: *role,
                up: Topic::DeviceUp {
                    class: class_plan.class.clone(),
                    device: topic_device.clone(),
                    channel: ClassTopic::new(class_plan.kind.channel()).expect("a valid channel"),
                }
                .to_string(),
                down: Topic::DeviceCommand {
                    class: class_plan.class.clone(),
                    device: topic_device,
                }
                .to_string(),
                model: Model::new(class_plan.kind, &mut rng, &class_plan.allowed()),
                rng,
                oracle,
                interval: Duration::from_secs_f64(
                    1.0 / if *role == Role::Flooder {
                        m.flood_rate_per_s.max(plan.rate_per_s)
                    } else {
                        plan.rate_per_s
                    },
                ),
                seq: 0,
                received: std::collections::VecDeque::new(),
            };
            devices.push(tokio::spawn(device.run(options, shared.clone())));
        }
        let timers = tokio::spawn(timers(plan.clone(), shared.clone()));
        Ok(Simulation {
            total_devices: devices.len(),
            plan,
            shared,
            devices,
            timers,
            started: Instant::now(),
        })
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        report::snapshot(
            &self.shared.classes,
            &self.shared.counters,
            self.total_devices,
            self.started.elapsed(),
        )
    }

    /// Starts the answer latencies afresh: later snapshots and the report give p50, p99 and max
    /// of the answers received from now on (a benchmark's measuring window, after connecting and
    /// warming up). Counts are not reset: subtract an earlier snapshot's.
    pub fn reset_latencies(&self) {
        for class in &self.shared.classes {
            class.reset_latency();
        }
    }

    /// Every device disconnects and reconnects within two seconds (as soon as what it sent is
    /// acknowledged).
    pub fn reconnect_storm(&self) {
        self.shared.storm.send_modify(|n| *n += 1);
    }

    /// Stops sending, waits until no answer is due any more (or [`Plan::drain`]), disconnects
    /// every device and reports.
    pub async fn stop(self) -> Report {
        let sent_for = self.started.elapsed();
        self.timers.abort();
        let _ = self.shared.phase.send(Phase::Draining);
        let deadline = Instant::now() + self.plan.drain;
        let oracled = self.total_devices
            - self.plan.misbehaviour.flooders
            - self.plan.misbehaviour.impostors.min(self.plan.devices);
        while Instant::now() < deadline && self.shared.settled.load(Ordering::Relaxed) < oracled {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let drained_for = self.started.elapsed() - sent_for;
        let _ = self.shared.phase.send(Phase::Stopped);
        for device in self.devices {
            let _ = device.await;
        }
        report::report(
            &self.shared.classes,
            &self.shared.counters,
            self.total_devices,
            sent_for,
            drained_for,
        )
    }
}

/// Bursts and storms on their schedules.
async fn timers(plan: Plan, shared: Arc<Shared>) {
    let mut burst = plan
        .burst
        .map(|(_, every)| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let mut storm = plan
        .reconnect_every
        .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    loop {
        tokio::select! {
            _ = async { burst.as_mut().expect("guarded").tick().await }, if burst.is_some() => {
                shared.burst.send_modify(|n| *n += 1);
            }
            _ = async { storm.as_mut().expect("guarded").tick().await }, if storm.is_some() => {
                shared.storm.send_modify(|n| *n += 1);
            }
            else => return,
        }
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Most messages a device has unacknowledged by the broker before it waits.
const MAX_UNACKED: usize = 16;

/// What the event-loop task reports to its device.
enum Link {
    Event(Event),
    Down(String),
}

struct Device {
    class: usize,
    kind: Kind,
    role: Role,
    up: String,
    down: String,
    model: Model,
    rng: Rng,
    oracle: Option<Oracle>,
    interval: Duration,
    seq: u64,
    /// The last commands received, (packet id, payload digest), to recognise the broker's resends.
    received: std::collections::VecDeque<(u16, u64)>,
}

/// Commands remembered per device to recognise the broker's resends: those whose acks a dropped
/// connection can lose.
const RECEIVED_REMEMBERED: usize = 16;

/// Polls one device's event loop until the device goes away; after a connection error it waits
/// `hold` (a storm's spread, or a backoff) before polling — and so reconnecting — again.
async fn poll_link(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Link>,
    hold: watch::Receiver<Duration>,
) {
    loop {
        match eventloop.poll().await {
            Ok(event) => {
                if tx.send(Link::Event(event)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                if tx.send(Link::Down(error.to_string())).await.is_err() {
                    return;
                }
                let hold = *hold.borrow();
                tokio::time::sleep(hold).await;
                if tx.is_closed() {
                    return;
                }
                // Only the first connection is clean (see `Device::run`); every later one
                // resumes the session, so commands sent meanwhile are delivered.
                eventloop.mqtt_options.set_clean_session(false);
            }
        }
    }
}

impl Device {
    async fn run(mut self, mut options: MqttOptions, shared: Arc<Shared>) {
        let cap = edgefleet_protocol::wire::MAX_UPLINK_PACKET_BYTES;
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(cap, cap);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        eventloop.set_network_options(crate::broker::network_options());
        let (tx, mut link) = mpsc::channel(64);
        let (hold_tx, hold) = watch::channel(Duration::from_secs(1));
        let permit = shared.connecting.acquire().await.ok();
        let poller = tokio::spawn(poll_link(eventloop, tx, hold));
        let mut permit = permit;

        let stats = &shared.classes[self.class];
        let counters = &shared.counters;
        let mut phase = shared.phase.subscribe();
        let mut storm = shared.storm.subscribe();
        let mut burst = shared.burst.subscribe();
        let mut fresh = true;
        let mut rejoining = false;
        let mut connected = false;
        let mut subscribed = false;
        let mut unacked = 0usize;
        let mut leaving = false;
        let mut settled = false;
        let mut extra = 0u32;
        let mut last_sent = Instant::now();
        let start = tokio::time::Instant::now() + self.interval.mul_f64(self.rng.unit());
        let mut next_send = start;

        loop {
            let sending = *phase.borrow() == Phase::Running
                && subscribed
                && !leaving
                && unacked < MAX_UNACKED;
            tokio::select! {
                biased;
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow() == Phase::Stopped {
                        break;
                    }
                    if *phase.borrow() == Phase::Running {
                        // Every device is connected: start at a random point of the interval.
                        next_send = tokio::time::Instant::now()
                            + self.interval.mul_f64(self.rng.unit());
                        last_sent = Instant::now();
                    }
                }
                Some(event) = link.recv() => match event {
                    Link::Event(Event::Incoming(Incoming::ConnAck(_))) if fresh => {
                        // A clean session cleared what an earlier run left; the session the
                        // device works in must persist, so it connects again without.
                        fresh = false;
                        rejoining = true;
                        let _ = hold_tx.send(Duration::ZERO);
                        let _ = client.try_disconnect();
                    }
                    Link::Event(Event::Incoming(Incoming::ConnAck(_))) => {
                        connected = true;
                        drop(permit.take());
                        // Should the connection drop: back off before reconnecting.
                        let _ = hold_tx.send(Duration::from_secs_f64(self.rng.range(0.5, 1.5)));
                        if counters.connected.fetch_add(1, Ordering::Relaxed) + 1 == shared.devices {
                            shared.phase.send_if_modified(|phase| {
                                let all = *phase == Phase::Connecting;
                                if all {
                                    *phase = Phase::Running;
                                }
                                all
                            });
                        }
                        let _ = client.try_subscribe(self.down.clone(), QoS::AtLeastOnce);
                    }
                    Link::Event(Event::Incoming(Incoming::SubAck(_))) => subscribed = true,
                    Link::Event(Event::Incoming(Incoming::PubAck(_))) => {
                        unacked = unacked.saturating_sub(1);
                        if leaving && unacked == 0 {
                            let _ = client.try_disconnect();
                        }
                    }
                    Link::Event(Event::Incoming(Incoming::Publish(publish))) => {
                        if self.resent(&publish) {
                            counters.resent.fetch_add(1, Ordering::Relaxed);
                        } else {
                            self.on_command(&publish.payload, stats, counters);
                        }
                    }
                    Link::Event(Event::Outgoing(Outgoing::Disconnect)) => {}
                    Link::Event(_) => {}
                    Link::Down(_) if rejoining => rejoining = false,
                    Link::Down(error) => {
                        drop(permit.take());
                        if connected {
                            counters.connected.fetch_sub(1, Ordering::Relaxed);
                            counters.disconnects.fetch_add(1, Ordering::Relaxed);
                        } else {
                            counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                            counters.set_last_error(&error);
                        }
                        connected = false;
                        // rumqttc sends the unacknowledged publishes again on reconnect.
                        unacked = 0;
                        leaving = false;
                    }
                },
                changed = storm.changed() => {
                    if changed.is_ok() && connected {
                        leaving = true;
                        // The storm's spread: everyone is back within two seconds.
                        let _ = hold_tx.send(Duration::from_secs_f64(self.rng.range(0.0, 2.0)));
                        if unacked == 0 {
                            let _ = client.try_disconnect();
                        }
                    }
                }
                changed = burst.changed() => {
                    if changed.is_ok() {
                        extra += shared.burst_messages;
                    }
                }
                _ = tokio::time::sleep_until(next_send), if sending => {
                    let now = tokio::time::Instant::now();
                    let dt = last_sent.elapsed().as_secs_f64();
                    last_sent = Instant::now();
                    if self.send(&client, dt, stats, counters) {
                        unacked += 1;
                    }
                    if extra > 0 {
                        extra -= 1;
                        next_send = now;
                    } else {
                        next_send = now + self.interval.mul_f64(self.rng.range(0.9, 1.1));
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(100)), if *phase.borrow() == Phase::Draining && !settled => {}
            }
            if !settled && *phase.borrow() == Phase::Draining {
                let due = self
                    .oracle
                    .as_ref()
                    .map_or(0, |o| o.awaiting(now_us() / 1000));
                if due == 0 && self.oracle.is_some() {
                    settled = true;
                    shared.settled.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(oracle) = &mut self.oracle {
            for verdict in oracle.finish(now_us() / 1000) {
                stats.count(&self.device_name(), verdict);
            }
        }
        if connected {
            counters.connected.fetch_sub(1, Ordering::Relaxed);
        }
        let _ = client.try_disconnect();
        drop(link);
        poller.abort();
    }

    fn device_name(&self) -> String {
        self.down.split('/').nth(4).unwrap_or_default().to_string()
    }

    /// Sends the next message; false when the client's queue was full (nothing sent).
    fn send(
        &mut self,
        client: &AsyncClient,
        dt_s: f64,
        stats: &ClassStats,
        counters: &Counters,
    ) -> bool {
        let garbage = self.role == Role::Garbage && self.seq % 4 == 3;
        let payload = if garbage {
            model::garbage(&mut self.rng)
        } else {
            self.model.next_message(&mut self.rng, dt_s)
        };
        let at_us = now_us();
        if client
            .try_publish(self.up.clone(), QoS::AtLeastOnce, false, payload.clone())
            .is_err()
        {
            counters.deferred.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.seq += 1;
        match self.role {
            Role::Flooder => counters.flood_sent.fetch_add(1, Ordering::Relaxed),
            Role::Impostor(_) => counters.impostor_sent.fetch_add(1, Ordering::Relaxed),
            Role::Garbage | Role::WellBehaved => {
                if garbage {
                    counters.garbage_sent.fetch_add(1, Ordering::Relaxed);
                }
                stats.sent.fetch_add(1, Ordering::Relaxed)
            }
        };
        if let Some(oracle) = &mut self.oracle {
            oracle.sent(self.seq, payload, at_us);
        }
        true
    }

    /// Whether `publish` is the broker's copy of a command received before; remembers it if not.
    fn resent(&mut self, publish: &rumqttc::Publish) -> bool {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        publish.payload.hash(&mut hasher);
        let seen = (publish.pkid, hasher.finish());
        if publish.dup && self.received.contains(&seen) {
            return true;
        }
        // A packet id comes back without DUP only once its earlier use was acknowledged.
        self.received.retain(|(pkid, _)| *pkid != publish.pkid);
        if self.received.len() == RECEIVED_REMEMBERED {
            self.received.pop_front();
        }
        self.received.push_back(seen);
        false
    }

    fn on_command(&mut self, payload: &[u8], stats: &ClassStats, counters: &Counters) {
        match self.role {
            Role::Impostor(_) => {
                counters.impostor_received.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Role::Flooder => {
                counters.flood_answered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Role::Garbage | Role::WellBehaved => {}
        }
        let answer = oracle::decode(self.kind, payload);
        if let Ok(answer) = &answer {
            self.model.act(answer);
        }
        let name = self.device_name();
        if let Some(oracle) = &mut self.oracle {
            for verdict in oracle.received(answer, now_us()) {
                stats.count(&name, verdict);
            }
        }
    }
}

/// Devices get their certificates from the device CA of a fleet PKI (`edgefleet certs init`),
/// issued in memory (CN = device id, as `edgefleet certs issue device` would), trust the fleet
/// CA for the broker's certificate, and are spread over `brokers` round-robin.
pub fn connect_with_pki(
    pki: Arc<edgefleet_pki::FleetPki>,
    brokers: Vec<(String, u16)>,
) -> Result<Arc<Connect>, String> {
    use edgefleet_pki::CaRole;
    if brokers.is_empty() {
        return Err("no device broker given (--broker HOST:PORT)".into());
    }
    edgefleet_pki::install_crypto_provider();
    Ok(Arc::new(move |index, id| {
        let identity = pki
            .authority(CaRole::Device)
            .client_cert(id.as_str())
            .map_err(|e| format!("cannot issue its certificate: {e}"))?;
        let config = edgefleet_pki::client_config(pki.authority(CaRole::Fleet), &identity)
            .map_err(|e| format!("cannot build its TLS configuration: {e}"))?;
        let (host, port) = &brokers[index % brokers.len()];
        let mut options = MqttOptions::new(id.as_str(), host.as_str(), *port);
        options.set_transport(rumqttc::Transport::tls_with_config(config.into()));
        Ok(options)
    }))
}
