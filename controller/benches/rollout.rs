//! Benchmark of a staged rollout to a simulated fleet: how long each step of a rollout takes from
//! its first assignment to every node of the step running the new version (as the nodes report
//! it, and as the controller's status shows it), and what the controller's CPU and memory are
//! meanwhile.
//!
//! `cargo bench -p edgefleet-controller --bench rollout` (`-- --help` for the flags; the default
//! is 1,000 nodes reporting every second, well under a minute).
//!
//! What runs:
//! - **The real controller binary** in standalone mode (`edgefleet-controller run --objects DIR`),
//!   with two HandlerModules from files (`thermostat 1.0.0` and `2.0.0`: a tiny WAT handler, two
//!   builds told apart by a custom section) and one DeviceClass `thermo` selecting every node.
//! - **The shipped cloud broker** (its configuration and ACL, mutual TLS), plus bench-only ACL users:
//!   `bench-hollow-<k>` may write every node's status topic, `bench-hollow-assignments` may read
//!   every node's assignments and the class's rollout record (one connection per node would load
//!   the broker, not the controller, which sees the same messages on its one subscription either
//!   way).
//! - **Hollow nodes** (no agent, no WasmEdge, no module download): one subscription receives every
//!   node's retained signed assignment (`ef/v1/node/+/assign/+`), verified with the trust anchor of
//!   the signing key the bench generated, and the controller's rollout record
//!   (`ef/v1/fleet/controller/rollout/thermo`); every node publishes its `NodeStatus` every
//!   `--interval-ms` (spread evenly over the interval, QoS 0 retained, as agents do) claiming, for
//!   class `thermo`, the module of its latest assignment as active (the previous one kept), the
//!   assignment's generation and rollout, and its active module's interactions going up by 20 per
//!   status with no fault, so the gate's interaction minimum is met and no fault rate trips it.
//!   A real agent also fetches and compiles the module first: that time is not in these numbers.
//!
//! The run: the class starts on v1 without a strategy (every node at once); once every node reports
//! v1 and the class shows them all healthy, the controller's CPU is measured for `--baseline-s`
//! (the same statuses, no rollout), then the class is switched to v2 with the strategy (canary
//! `--canary` nodes, waves `--wave-base` × `--wave-factor`^i, gate `--min-interactions` and
//! `--bake-s`, a progress deadline of 600 s) and the bench polls the standalone API
//! (`GET /api/v1alpha1/deviceclasses/thermo`, every 100 ms: phase, step, updated and healthy nodes)
//! until the rollout is Completed. It fails (a message, exit status 1) when the rollout does not
//! complete within `--deadline-s`, rolls back, or any node is left without v2.
//!
//! Per step (the nodes grouped by the rollout stage of their first v2 assignment), from that step's
//! first v2 assignment received by a hollow node: the last one received, the last node's first
//! status claiming v2, the gate passed (the next step's first assignment received; for the last
//! step the controller's Completed record received — it is retained after a round's assignments,
//! and that round publishes none), and the class's status in the API first showing all the step's
//! nodes (cumulative) healthy. The controller's CPU (utime+stime from /proc/<pid>/stat, as cores)
//! per step and over the whole rollout; VmRSS sampled at every poll and VmHWM (/proc/<pid>/status).
//! Times are wall clock in ms, the bench's own observations (the controller's `stepStartedAt` has
//! whole seconds only). The controller evaluates gates in the round after its 1 s tick and writes
//! the class status it computed at the next tick, so the API shows a step's result up to a second
//! after its assignments went out.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgefleet_controller::cloud::rollout_topic;
use edgefleet_controller::rollout::{Phase, Record};
use edgefleet_protocol::status::{LinkState, LinkStatus, ModuleStats, OutboxStatus};
use edgefleet_protocol::{
    Assignment, ClassId, ClassStatus, ModuleRef, NodeId, NodeState, NodeStatus, Rollout,
    RolloutStage, Sha256Digest, Signed, TrustAnchor,
};
use edgefleet_simulators::broker::{self, Broker, BrokerOptions, Shipped};
use edgefleet_simulators::pki::Authority;
use edgefleet_testenv::http::get as http_get;
use rumqttc::{Event, Incoming, QoS};

mod process;
use process::{Standalone, children_named, cpu_seconds, now_ms, vm_mib};

const CLOUD_ACL: &str = include_str!("../../brokers/cloud/acl");
const V1: &str = "thermostat 1.0.0";
const V2: &str = "thermostat 2.0.0";
/// Interactions a hollow node adds to its active module per status.
const INTERACTIONS_PER_STATUS: u64 = 20;
/// How often the bench reads the class's status (and samples the controller's CPU and RSS).
const POLL: Duration = Duration::from_millis(100);

const USAGE: &str = "\
cargo bench -p edgefleet-controller --bench rollout -- [flags]
  --nodes N              hollow nodes (default 1000)
  --interval-ms MS       every node reports every MS ms (default 1000)
  --connections C        MQTT connections publishing the statuses (default 4)
  --canary N             canary nodes (default 10)
  --wave-base N          the first wave's nodes (default 50)
  --wave-factor F        each wave grows by F (default 2)
  --min-interactions N   the gate's minimum interactions on v2 per step (default 100)
  --bake-s S             the gate's bake time (default 1)
  --baseline-s S         controller CPU measured on v1 before the rollout (default 5)
  --deadline-s S         the rollout must complete within S seconds, or the bench fails (default 120)
EDGEFLEET_BENCH_LOGS=1 shows the controller's log (warnings).";

fn usage_error(message: &str) -> ! {
    process::usage_error(USAGE, message)
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    process::number(USAGE, flag, value)
}

#[derive(Debug, Clone)]
struct Args {
    nodes: usize,
    interval_ms: u64,
    connections: usize,
    canary: u32,
    wave_base: u32,
    wave_factor: f64,
    min_interactions: u64,
    bake_s: u32,
    baseline_s: u64,
    deadline_s: u64,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            nodes: 1000,
            interval_ms: 1000,
            connections: 4,
            canary: 10,
            wave_base: 50,
            wave_factor: 2.0,
            min_interactions: 100,
            bake_s: 1,
            baseline_s: 5,
            deadline_s: 120,
        };
        for (flag, value) in process::flags(USAGE) {
            match flag.as_str() {
                "--nodes" => args.nodes = number(&flag, &value),
                "--interval-ms" => args.interval_ms = number(&flag, &value),
                "--connections" => args.connections = number(&flag, &value),
                "--canary" => args.canary = number(&flag, &value),
                "--wave-base" => args.wave_base = number(&flag, &value),
                "--wave-factor" => args.wave_factor = number(&flag, &value),
                "--min-interactions" => args.min_interactions = number(&flag, &value),
                "--bake-s" => args.bake_s = number(&flag, &value),
                "--baseline-s" => args.baseline_s = number(&flag, &value),
                "--deadline-s" => args.deadline_s = number(&flag, &value),
                _ => usage_error(&format!("unknown flag {flag}")),
            }
        }
        if args.nodes == 0
            || args.interval_ms == 0
            || args.connections == 0
            || args.canary == 0
            || args.wave_base == 0
            || args.wave_factor < 1.0
        {
            eprintln!(
                "--nodes, --interval-ms, --connections, --canary and --wave-base must be \
                 positive, --wave-factor at least 1\n{USAGE}"
            );
            std::process::exit(2);
        }
        args
    }

    /// The flags as given (for the reproducing command).
    fn command(&self) -> String {
        format!(
            "cargo bench -p edgefleet-controller --bench rollout -- --nodes {} --interval-ms {} \
             --connections {} --canary {} --wave-base {} --wave-factor {} --min-interactions {} \
             --bake-s {} --baseline-s {} --deadline-s {}",
            self.nodes,
            self.interval_ms,
            self.connections,
            self.canary,
            self.wave_base,
            self.wave_factor,
            self.min_interactions,
            self.bake_s,
            self.baseline_s,
            self.deadline_s
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The objects.

/// The class on every node; with `args`' strategy when `staged`.
fn class_object(module: &str, staged: Option<&Args>) -> String {
    let class = format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: thermo\n\
         spec:\n  module: {module}\n  config: {{setpoint_c: 21.0, hysteresis_c: 0.5}}\n\
         \x20 nodeSelector: {{}}\n"
    );
    let Some(args) = staged else {
        return class;
    };
    format!(
        "{class}\
         \x20 rollout:\n\
         \x20   canary: {{nodes: {}}}\n\
         \x20   waves: {{base: {}, factor: {}}}\n\
         \x20   gate: {{minInteractions: {}, maxFaultRateIncrease: 0.01, bakeSeconds: {}}}\n\
         \x20   progressDeadlineSeconds: 600\n",
        args.canary, args.wave_base, args.wave_factor, args.min_interactions, args.bake_s
    )
}

// ---------------------------------------------------------------------------------------------
// The hollow nodes.

/// One hollow node: what it was assigned and what it claims to run.
struct Hollow {
    node: NodeId,
    started_at_ms: u64,
    /// The latest assignment for `thermo` (highest generation).
    assigned: Option<Assignment>,
    active: Option<ModuleRef>,
    previous: Option<ModuleRef>,
    modules: Vec<ModuleStats>,
    /// When it first received an assignment of v2, and that assignment's stage.
    v2_assigned: Option<(u64, RolloutStage)>,
    /// When it first published a status claiming v2.
    v2_reported: Option<u64>,
}

impl Hollow {
    fn new(node: NodeId, started_at_ms: u64) -> Hollow {
        Hollow {
            node,
            started_at_ms,
            assigned: None,
            active: None,
            previous: None,
            modules: Vec::new(),
            v2_assigned: None,
            v2_reported: None,
        }
    }

    /// The next status: the latest assignment's module active (switched to at once), its
    /// interactions going up.
    fn report(&mut self, now: u64) -> NodeStatus {
        let mut classes = Vec::new();
        if let Some(assignment) = &self.assigned
            && let Some(handler) = &assignment.handler
        {
            let wanted = handler.module.reference();
            if self.active.as_ref() != Some(&wanted) {
                self.previous = self.active.replace(wanted.clone());
                if !self.modules.iter().any(|m| m.module == wanted) {
                    self.modules.push(ModuleStats {
                        module: wanted.clone(),
                        interactions: 0,
                        errors: 0,
                        traps: 0,
                        timeouts: 0,
                        rejections: 0,
                        quarantined: false,
                    });
                }
            }
            if let Some(stats) = self.modules.iter_mut().find(|m| m.module == wanted) {
                stats.interactions += INTERACTIONS_PER_STATUS;
            }
            classes.push(ClassStatus {
                class: ClassId::new("thermo").unwrap(),
                generation: Some(assignment.generation),
                rollout: assignment.rollout.clone(),
                active: self.active.clone(),
                previous: self.previous.clone(),
                pending: None,
                last_error: None,
                active_devices: 8,
                seen_devices: 8,
                interactions_per_sec: 8.0,
                modules: self.modules.clone(),
                shadow: None,
            });
        }
        let link = LinkStatus {
            state: LinkState::Connected,
            since_ms: self.started_at_ms,
            reconnects: 0,
            last_error: None,
        };
        NodeStatus {
            node: self.node.clone(),
            state: NodeState::Online,
            protocol_version: edgefleet_protocol::PROTOCOL_VERSION,
            agent_version: "0.1.0-hollow".into(),
            wasmedge_version: "0.17.1".into(),
            guest_abi_version: 1,
            started_at_ms: self.started_at_ms,
            updated_at_ms: now,
            uplink: link.clone(),
            device_link: link,
            outbox: OutboxStatus {
                depth: 0,
                capacity: 100_000,
                dropped: 0,
                oldest_at_ms: None,
            },
            active_devices: 8,
            seen_devices: 8,
            interactions_per_sec: 8.0,
            classes,
        }
    }
}

/// The hollow fleet, shared by the assignment subscriber, the publishers and the main thread.
struct Fleet {
    nodes: Vec<Mutex<Hollow>>,
    v1: Sha256Digest,
    v2: Sha256Digest,
    anchor: TrustAnchor,
    published: AtomicU64,
    publish_failures: AtomicU64,
    /// Signed assignments received, verified or not.
    assignments: AtomicU64,
    bad_signatures: AtomicU64,
    /// The class's rollout records as the controller retained them: (received at, record).
    records: Mutex<Vec<(u64, Record)>>,
    stop: AtomicBool,
}

impl Fleet {
    fn index(&self, node: &NodeId) -> Option<usize> {
        node.as_str()
            .strip_prefix("edge-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&i| i < self.nodes.len())
    }

    /// Nodes that claim `module` in their last status.
    fn reporting(&self, module: Sha256Digest) -> usize {
        self.nodes
            .iter()
            .filter(|n| {
                n.lock()
                    .unwrap()
                    .active
                    .as_ref()
                    .is_some_and(|a| a.sha256 == module)
            })
            .count()
    }

    /// One retained assignment or rollout record as delivered.
    fn delivered(&self, topic: &str, payload: &[u8]) {
        let at = now_ms();
        if topic == rollout_topic("thermo") {
            if let Ok(record) = edgefleet_protocol::codec::decode::<Record>(payload, 1 << 20) {
                self.records.lock().unwrap().push((at, record));
            }
            return;
        }
        if payload.is_empty() || !topic.ends_with("/assign/thermo") {
            return;
        }
        self.assignments.fetch_add(1, Ordering::Relaxed);
        let verified = Signed::<Assignment>::decode(payload)
            .ok()
            .and_then(|signed| signed.verify(&self.anchor).ok());
        let Some(assignment) = verified else {
            self.bad_signatures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(index) = self.index(&assignment.node) else {
            return;
        };
        if !topic.contains(&format!("/node/{}/", assignment.node)) {
            self.bad_signatures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut node = self.nodes[index].lock().unwrap();
        if node
            .assigned
            .as_ref()
            .is_some_and(|a| a.generation >= assignment.generation)
        {
            return;
        }
        let module = assignment.handler.as_ref().map(|h| h.module.sha256);
        if module == Some(self.v2) && node.v2_assigned.is_none() {
            let stage = assignment
                .rollout
                .as_ref()
                .map_or(RolloutStage::Complete, |r: &Rollout| r.stage);
            node.v2_assigned = Some((at, stage));
        }
        node.assigned = Some(assignment);
    }
}

/// The subscription to every node's assignments and to the class's rollout record; `subscribed`
/// is told once the broker granted both.
async fn receive_assignments(
    options: rumqttc::MqttOptions,
    fleet: Arc<Fleet>,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let (client, mut events) = broker::client(options, 1000);
    let filters = || {
        ["ef/v1/node/+/assign/+".to_string(), rollout_topic("thermo")]
            .map(|path| rumqttc::SubscribeFilter::new(path, QoS::AtLeastOnce))
    };
    client.subscribe_many(filters()).await.unwrap();
    let mut subscribed = Some(subscribed);
    while !fleet.stop.load(Ordering::Relaxed) {
        match events.poll().await {
            Ok(Event::Incoming(Incoming::SubAck(_))) => {
                if let Some(tx) = subscribed.take() {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => fleet.delivered(&p.topic, &p.payload),
            Ok(_) => {}
            // Polling again reconnects (a clean session: subscribe again, the broker then
            // delivers the retained assignments anew).
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = client.try_subscribe_many(filters());
            }
        }
    }
}

/// One publisher connection: its nodes, each reporting at its offset into every interval.
async fn publish_statuses(
    options: rumqttc::MqttOptions,
    nodes: Vec<(Duration, usize)>,
    epoch: Instant,
    interval: Duration,
    fleet: Arc<Fleet>,
) {
    let (client, mut events) = broker::client(options, 10_000);
    let driver = tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let mut cycle = 0u32;
    'run: loop {
        for &(offset, index) in &nodes {
            // The schedule of reports (a pace, not a synchronization).
            tokio::time::sleep_until((epoch + interval * cycle + offset).into()).await;
            if fleet.stop.load(Ordering::Relaxed) {
                break 'run;
            }
            let now = now_ms();
            let (topic, payload, claims_v2) = {
                let mut node = fleet.nodes[index].lock().unwrap();
                let status = node.report(now);
                let claims_v2 = node.active.as_ref().is_some_and(|a| a.sha256 == fleet.v2)
                    && node.v2_reported.is_none();
                (
                    format!("ef/v1/node/{}/status", node.node),
                    edgefleet_protocol::codec::encode(&status),
                    claims_v2,
                )
            };
            match client.publish(topic, QoS::AtMostOnce, true, payload).await {
                Ok(()) => {
                    fleet.published.fetch_add(1, Ordering::Relaxed);
                    if claims_v2 {
                        fleet.nodes[index].lock().unwrap().v2_reported = Some(now);
                    }
                }
                Err(_) => {
                    fleet.publish_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        cycle += 1;
    }
    let _ = client.disconnect().await;
    driver.abort();
}

// ---------------------------------------------------------------------------------------------
// The class's status, polled.

/// One poll of the class and the controller's process.
#[derive(Debug, Clone)]
struct Sample {
    at_ms: u64,
    cpu_s: f64,
    rss_mib: f64,
    target: String,
    phase: String,
    step: String,
    updated: u64,
    healthy: u64,
    message: String,
}

fn sample(port: u16, pid: u32) -> Sample {
    let (code, body) = http_get(port, "/api/v1alpha1/deviceclasses/thermo");
    let class: serde_json::Value = if code == 200 {
        serde_json::from_str(&body).unwrap_or_default()
    } else {
        serde_json::Value::Null
    };
    let r = &class["status"]["rollout"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    Sample {
        at_ms: now_ms(),
        cpu_s: cpu_seconds(pid).unwrap_or(f64::NAN),
        rss_mib: vm_mib(pid, "VmRSS:").unwrap_or(f64::NAN),
        target: text(&r["targetVersion"]),
        phase: text(&r["phase"]),
        step: text(&r["step"]),
        updated: r["updatedNodes"].as_u64().unwrap_or(0),
        healthy: r["healthyNodes"].as_u64().unwrap_or(0),
        message: text(&r["message"]),
    }
}

/// The controller's CPU over [from, to] (ms), as cores, from the samples nearest after each end.
fn cores(samples: &[Sample], from: u64, to: u64) -> f64 {
    let at = |t: u64| samples.iter().find(|s| s.at_ms >= t).or(samples.last());
    match (at(from), at(to)) {
        (Some(a), Some(b)) if b.at_ms > a.at_ms => {
            (b.cpu_s - a.cpu_s) / ((b.at_ms - a.at_ms) as f64 / 1000.0)
        }
        _ => f64::NAN,
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

struct StepRow {
    stage: RolloutStage,
    nodes: usize,
    cumulative: usize,
    first_assigned: u64,
    last_assigned: u64,
    last_reported: Option<u64>,
    controller_saw: Option<u64>,
    next: u64,
    cores: f64,
}

struct Report {
    steps: Vec<StepRow>,
    written_ms: u64,
    /// When the controller's Completed record arrived.
    completed_record: Option<u64>,
    /// When the API first showed the rollout Completed.
    completed_ms: u64,
    setup_s: f64,
    baseline_cores: f64,
    rollout_cores: f64,
    rss_max_mib: f64,
    hwm_mib: f64,
    assignments: u64,
    statuses_per_s: f64,
    broker_cores: f64,
    bench_cores: f64,
}

fn run(args: &Args, runtime: &tokio::runtime::Runtime) -> Result<Report, String> {
    let setup_began = Instant::now();
    let authority = Arc::new(Authority::new("bench").unwrap());
    let mut acl = format!(
        "{CLOUD_ACL}\n# Bench only (controller/benches/rollout.rs): hollow nodes' statuses and \
         assignments.\nuser bench-hollow-assignments\ntopic read ef/v1/node/+/assign/+\ntopic read {}\n",
        rollout_topic("thermo")
    );
    for k in 0..args.connections {
        acl.push_str(&format!(
            "user bench-hollow-{k}\ntopic write ef/v1/node/+/status\n"
        ));
    }
    let cloud =
        Broker::with_options(BrokerOptions::shipped(authority.clone(), Shipped::Cloud).acl(acl))
            .map_err(|e| format!("the cloud broker: {e}"))?;
    let standalone = Standalone::new(&authority);
    let anchor = standalone.trust();
    let (v1_wasm, v1) = standalone.handler_module("thermostat-1", "thermostat", "1.0.0");
    let (v2_wasm, v2) = standalone.handler_module("thermostat-2", "thermostat", "2.0.0");
    standalone.write_object("modules.yaml", &[v1, v2].join("---\n"));
    standalone.write_object("class.yaml", &class_object("thermostat-1", None));

    let started = Instant::now();
    let (mut controller, port) = standalone.start(cloud.port(), &[])?;
    let pid = controller.0.id();
    eprintln!(
        "== controller ready after {:.1} s; starting {} hollow nodes",
        started.elapsed().as_secs_f64(),
        args.nodes
    );

    let started_at = now_ms();
    let fleet = Arc::new(Fleet {
        nodes: (0..args.nodes)
            .map(|i| {
                Mutex::new(Hollow::new(
                    NodeId::new(format!("edge-{i:05}")).unwrap(),
                    started_at,
                ))
            })
            .collect(),
        v1: Sha256Digest::of(&v1_wasm),
        v2: Sha256Digest::of(&v2_wasm),
        anchor,
        published: AtomicU64::new(0),
        publish_failures: AtomicU64::new(0),
        assignments: AtomicU64::new(0),
        bad_signatures: AtomicU64::new(0),
        records: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let subscriber = runtime.spawn(receive_assignments(
        cloud.mqtt_options("bench-hollow-assignments").unwrap(),
        fleet.clone(),
        subscribed_tx,
    ));
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), subscribed_rx).await })
        .map_err(|_| "the assignment subscription was not granted within 30 s".to_string())?
        .map_err(|_| "the assignment subscriber stopped".to_string())?;

    // Node i at i/nodes into every interval, on connection i % connections.
    let interval = Duration::from_millis(args.interval_ms);
    let epoch = Instant::now() + Duration::from_millis(100);
    let mut per_connection: Vec<Vec<(Duration, usize)>> =
        (0..args.connections).map(|_| Vec::new()).collect();
    for i in 0..args.nodes {
        let offset = Duration::from_micros(i as u64 * args.interval_ms * 1000 / args.nodes as u64);
        per_connection[i % args.connections].push((offset, i));
    }
    let publishers: Vec<_> = per_connection
        .into_iter()
        .enumerate()
        .map(|(k, nodes)| {
            runtime.spawn(publish_statuses(
                cloud.mqtt_options(&format!("bench-hollow-{k}")).unwrap(),
                nodes,
                epoch,
                interval,
                fleet.clone(),
            ))
        })
        .collect();

    // v1 everywhere: every node reports it and the class shows them all healthy.
    let limit = Instant::now() + Duration::from_secs(120);
    loop {
        let s = sample(port, pid);
        let reporting = fleet.reporting(fleet.v1);
        if s.target == V1
            && s.phase == "Completed"
            && s.healthy == args.nodes as u64
            && reporting == args.nodes
        {
            break;
        }
        if let Some(exited) = controller.exited() {
            return Err(exited);
        }
        if Instant::now() > limit {
            return Err(format!(
                "v1 is not on every node after 120 s: {reporting} nodes report it; the class \
                 shows {} healthy, phase {:?}, target {:?}: {}",
                s.healthy, s.phase, s.target, s.message
            ));
        }
        std::thread::sleep(POLL);
    }
    let setup_s = setup_began.elapsed().as_secs_f64();
    eprintln!(
        "== every node on v1 after {setup_s:.1} s; measuring the controller for {} s",
        args.baseline_s
    );

    // The baseline: the same statuses, no rollout (a measuring window, not a wait for an event).
    let broker_pids = children_named("mosquitto");
    let broker_cpu = || {
        broker_pids
            .iter()
            .filter_map(|&p| cpu_seconds(p))
            .sum::<f64>()
    };
    let bench_cpu = || cpu_seconds(std::process::id()).unwrap_or(f64::NAN);
    let base_from = (Instant::now(), cpu_seconds(pid).unwrap_or(f64::NAN));
    std::thread::sleep(Duration::from_secs(args.baseline_s));
    let baseline_cores =
        (cpu_seconds(pid).unwrap_or(f64::NAN) - base_from.1) / base_from.0.elapsed().as_secs_f64();

    // The rollout.
    let published_before = fleet.published.load(Ordering::Relaxed);
    let assignments_before = fleet.assignments.load(Ordering::Relaxed);
    let (broker_before, bench_before) = (broker_cpu(), bench_cpu());
    let mut samples = vec![sample(port, pid)];
    let written_ms = now_ms();
    standalone.write_object("class.yaml", &class_object("thermostat-2", Some(args)));
    eprintln!("== class switched to v2 with the staged strategy");
    let deadline = Instant::now() + Duration::from_secs(args.deadline_s);
    let mut last_step = String::new();
    let completed_ms = loop {
        let s = sample(port, pid);
        samples.push(s.clone());
        if s.target == V2 {
            if s.step != last_step {
                eprintln!(
                    "   {:>6.1} s  {} {} ({} updated, {} healthy)",
                    (s.at_ms - written_ms) as f64 / 1000.0,
                    s.phase,
                    s.step,
                    s.updated,
                    s.healthy
                );
                last_step = s.step.clone();
            }
            match s.phase.as_str() {
                "Completed" => break s.at_ms,
                "RolledBack" | "Failed" => {
                    return Err(format!(
                        "the rollout of v2 ended {} at step {}: {}",
                        s.phase, s.step, s.message
                    ));
                }
                _ => {}
            }
        }
        if let Some(exited) = controller.exited() {
            return Err(exited);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the rollout of v2 did not complete within {} s: phase {:?}, step {:?}, {} \
                 updated, {} healthy, {} nodes report v2: {}",
                args.deadline_s,
                s.phase,
                s.step,
                s.updated,
                s.healthy,
                fleet.reporting(fleet.v2),
                s.message
            ));
        }
        std::thread::sleep(POLL);
    };
    let hwm_mib = vm_mib(pid, "VmHWM:").unwrap_or(f64::NAN);
    let seconds = (completed_ms - written_ms) as f64 / 1000.0;
    let statuses_per_s =
        (fleet.published.load(Ordering::Relaxed) - published_before) as f64 / seconds;
    let assignments = fleet.assignments.load(Ordering::Relaxed) - assignments_before;
    let broker_cores = (broker_cpu() - broker_before) / seconds;
    let bench_cores = (bench_cpu() - bench_before) / seconds;

    fleet.stop.store(true, Ordering::Relaxed);
    controller.stop();
    runtime.block_on(async {
        for publisher in publishers {
            let _ = tokio::time::timeout(Duration::from_secs(5), publisher).await;
        }
    });
    subscriber.abort();

    let bad = fleet.bad_signatures.load(Ordering::Relaxed);
    if bad > 0 {
        return Err(format!("{bad} assignments did not verify"));
    }
    // Every node: its first v2 assignment and its first status claiming v2.
    let mut per_node = Vec::new();
    for (i, node) in fleet.nodes.iter().enumerate() {
        let node = node.lock().unwrap();
        match (node.v2_assigned, node.v2_reported) {
            (Some((assigned, stage)), reported) => per_node.push((stage, assigned, reported)),
            (None, _) => {
                return Err(format!(
                    "the rollout completed but edge-{i:05} never received v2"
                ));
            }
        }
    }
    let order = |stage: &RolloutStage| match stage {
        RolloutStage::Shadow => 0,
        RolloutStage::Canary => 1,
        RolloutStage::Wave(n) => 1 + *n as u64,
        RolloutStage::Complete | RolloutStage::Rollback => u64::MAX,
    };
    let mut stages: Vec<RolloutStage> = per_node.iter().map(|(s, _, _)| *s).collect();
    stages.sort_by_key(order);
    stages.dedup();
    let mut steps = Vec::new();
    let mut cumulative = 0;
    for stage in &stages {
        let of: Vec<&(RolloutStage, u64, Option<u64>)> =
            per_node.iter().filter(|(s, _, _)| s == stage).collect();
        cumulative += of.len();
        let first_assigned = of.iter().map(|(_, a, _)| *a).min().unwrap_or(0);
        let last_assigned = of.iter().map(|(_, a, _)| *a).max().unwrap_or(0);
        let last_reported = of
            .iter()
            .map(|(_, _, r)| *r)
            .collect::<Option<Vec<u64>>>()
            .and_then(|r| r.into_iter().max());
        let controller_saw = samples
            .iter()
            .find(|s| {
                s.at_ms >= first_assigned
                    && s.target == V2
                    && (s.healthy >= cumulative as u64 || s.phase == "Completed")
            })
            .map(|s| s.at_ms);
        steps.push(StepRow {
            stage: *stage,
            nodes: of.len(),
            cumulative,
            first_assigned,
            last_assigned,
            last_reported,
            controller_saw,
            next: 0,
            cores: f64::NAN,
        });
    }
    // The controller retains the record after a round's assignments: its Completed record is when
    // the last gate passed (that round publishes nothing).
    let completed_record = fleet
        .records
        .lock()
        .unwrap()
        .iter()
        .find(|(_, r)| r.target_version == V2 && r.phase == Phase::Completed)
        .map(|(at, _)| *at);
    let last_gate = completed_record.unwrap_or(completed_ms);
    for i in 0..steps.len() {
        let next = steps.get(i + 1).map_or(last_gate, |s| s.first_assigned);
        steps[i].next = next;
        steps[i].cores = cores(&samples, steps[i].first_assigned, next);
    }
    drop(cloud);
    Ok(Report {
        rollout_cores: cores(&samples, written_ms, completed_ms),
        rss_max_mib: samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max),
        steps,
        written_ms,
        completed_record,
        completed_ms,
        setup_s,
        baseline_cores,
        hwm_mib,
        assignments,
        statuses_per_s,
        broker_cores,
        bench_cores,
    })
}

// ---------------------------------------------------------------------------------------------
// The table.

fn after(from: u64, to: Option<u64>) -> String {
    match to {
        Some(to) => {
            let ms = to.saturating_sub(from);
            if ms >= 10_000 {
                format!("{:.1} s", ms as f64 / 1000.0)
            } else {
                format!("{ms} ms")
            }
        }
        None => "-".into(),
    }
}

fn print_table(args: &Args, report: &Report) {
    println!(
        "\n#### Staged rollout to {} hollow nodes (standalone controller, shipped cloud broker; every \
         node reports every {} ms; canary {}, waves {} × {}^i; gate: {} interactions, {} s bake)\n",
        args.nodes,
        args.interval_ms,
        args.canary,
        args.wave_base,
        args.wave_factor,
        args.min_interactions,
        args.bake_s
    );
    println!(
        "| step | nodes (total) | last assignment received | last node reports v2 | gate passed | API shows them healthy | controller CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let n = report.steps.len();
    for (i, s) in report.steps.iter().enumerate() {
        println!(
            "| {}/{n} {} | {} ({}) | {} | {} | {} | {} | {:.2} cores |",
            i + 1,
            s.stage,
            s.nodes,
            s.cumulative,
            after(s.first_assigned, Some(s.last_assigned)),
            after(s.first_assigned, s.last_reported),
            after(s.first_assigned, Some(s.next)),
            after(s.first_assigned, s.controller_saw),
            s.cores
        );
    }
    let first = report
        .steps
        .first()
        .map_or(report.written_ms, |s| s.first_assigned);
    println!(
        "\nTimes from the step's first v2 assignment received by a hollow node; gate passed: the \
         next step's first assignment received (the last step: the controller's Completed record \
         received); API: the class's status polled every 100 ms. Class switched to v2 → first \
         canary assignment {}; → Completed record {}; → the API shows Completed {}. Controller \
         over the rollout: {:.2} cores \
         (on v1 before it, same statuses: {:.2} cores), RSS max {:.0} MiB, VmHWM {:.0} MiB. {} \
         assignments received during the rollout ({} nodes), {:.0} statuses/s; mosquitto {:.2} \
         cores, the bench {:.2} cores. Setup (controller start, every node on v1): {:.1} s.\n\n`{}`",
        after(report.written_ms, Some(first)),
        after(report.written_ms, report.completed_record),
        after(report.written_ms, Some(report.completed_ms)),
        report.rollout_cores,
        report.baseline_cores,
        report.rss_max_mib,
        report.hwm_mib,
        report.assignments,
        args.nodes,
        report.statuses_per_s,
        report.broker_cores,
        report.bench_cores,
        report.setup_s,
        args.command()
    );
}

fn main() {
    let args = Args::parse();
    edgefleet_protocol::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match run(&args, &runtime) {
        Ok(report) => print_table(&args, &report),
        Err(message) => {
            eprintln!("rollout bench FAILED: {message}");
            std::process::exit(1);
        }
    }
}
