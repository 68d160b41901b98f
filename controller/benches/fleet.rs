//! Benchmark of the controller with a fleet of hollow edge agents (issue 14): how long until every
//! node shows in the controller's status, what the controller and the broker cost while the fleet
//! connects and while it reports, and how long each step of a 1,000-node rollout takes from the
//! step's start until all its nodes report the new version.
//!
//! `cargo bench -p edgefleet-controller --bench fleet` (`-- --help` for the flags; the default is
//! one fresh setup per fleet size, 1,000 and 10,000 nodes; `EDGEFLEET_BENCH_NODES=2000,5000`
//! chooses others too).
//!
//! What runs, per fleet size N:
//! - **The real controller binary** in standalone mode (release build, `edgefleet-controller run
//!   --objects DIR`) with three HandlerModules from files (a tiny WAT handler, builds told apart by
//!   a custom section): `meter 1.0.0`, `thermostat 1.0.0` and `2.0.0`; the DeviceClass `meter` on
//!   every node, the DeviceClass `thermo` on the ring: `--rollout-nodes` nodes spread evenly over
//!   the fleet, declared as EdgeNodes labelled `ring: rollout` (its `nodeSelector`).
//! - **The shipped cloud broker** (its configuration, its ACL, mutual TLS), nothing added.
//! - **N hollow edge agents** (`edgefleet_simulators::nodes`, in the bench's process): one MQTT
//!   connection each with its own node certificate, fenced by the shipped ACL like an agent; each
//!   verifies its signed assignments and every module chunk, reports its retained `NodeStatus`
//!   every `--interval-s` (the agents' default, 10 s; the nodes spread evenly over it) with 20
//!   interactions per class per status, and publishes its events. `--connecting` nodes handshake at
//!   a time (mosquitto's listen backlog is 100; more at once only time out and retry).
//!
//! The run: the controller is started and ready, then the hollow fleet starts. Polled every
//! 250 ms: the nodes connected (the simulator), the nodes the controller counts online
//! (`edgefleet_controller_nodes{kind="online"}`), the EdgeNodes its status store holds (the
//! files `status/edgenodes/*.json` under its data folder, which the standalone API
//! `/api/v1alpha1/edgenodes` serves; one list GET at the end checks all N are there and Online),
//! and both classes' status until every node runs its version. Then the controller, mosquitto and
//! the bench are measured for `--steady-s` (the same statuses, nothing else happening). Then the
//! class `thermo` is switched to `thermostat 2.0.0` with a staged strategy (canary `--canary`
//! nodes, waves `--wave-base` × `--wave-factor`^i, gate `--min-interactions` at most 1 % more
//! faults and `--bake-s`) and its status polled every 100 ms until the rollout is Completed.
//!
//! Per step: its start is when the class's status first shows it (`status.rollout.step`; the
//! controller writes class status right after the round that decided it); from there, the last of
//! its nodes receiving its signed v2 assignment, the last one publishing a status that claims v2
//! active (the simulator's record of each assignment), and the next step shown (the gate passed;
//! the last step: Completed shown). CPU is utime+stime from /proc/<pid>/stat as % of one core,
//! memory the PSS of /proc/<pid>/smaps_rollup (sampled every second; the maximum). The bench fails
//! (a message, exit status 1) on a missed deadline, a rollback, a node left without v2, a refused
//! assignment or chunk, or a node missing from the API.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use edgefleet_protocol::{NodeId, RolloutStage};
use edgefleet_simulators::broker::{Broker, BrokerOptions, Shipped};
use edgefleet_simulators::nodes::{self, FleetOptions};
use edgefleet_simulators::pki::Authority;
use edgefleet_testenv::http::{get as http_get, metric};

mod process;
use process::{Standalone, children_named, cpu_seconds, now_ms, pss_mib, raise_open_files};

const V1: &str = "thermostat 1.0.0";
const V2: &str = "thermostat 2.0.0";
/// Open files the bench needs besides its nodes' connections (as the simulator counts them).
const SPARE_FILES: u64 = 256;

const USAGE: &str = "\
cargo bench -p edgefleet-controller --bench fleet -- [flags]
  --nodes N[,N...]          fleet sizes, one fresh setup each (default 1000,10000;
                            also EDGEFLEET_BENCH_NODES)
  --rollout-nodes R         nodes of the class rolled out, spread over the fleet (default 1000)
  --interval-s S            every node reports every S seconds (default 10, as agents)
  --connecting C            hollow nodes connecting at a time (default 32)
  --status-writes-per-s W   the controller's EdgeNode status write budget (default: its own, 20)
  --steady-s S              the controller measured with every node reporting (default 30)
  --canary N                canary nodes (default 10)
  --wave-base N             the first wave's nodes (default 50)
  --wave-factor F           each wave grows by F (default 2)
  --min-interactions N      the gate's minimum interactions on v2 per step (default 100)
  --bake-s S                the gate's bake time (default 1)
  --deadline-s S            the rollout must complete within S seconds (default 600)
EDGEFLEET_BENCH_LOGS=1 shows the controller's log (warnings).";

#[derive(Debug, Clone)]
struct Args {
    nodes: Vec<usize>,
    rollout_nodes: usize,
    interval_s: u64,
    connecting: usize,
    status_writes_per_s: Option<u32>,
    steady_s: u64,
    canary: u32,
    wave_base: u32,
    wave_factor: f64,
    min_interactions: u64,
    bake_s: u32,
    deadline_s: u64,
}

fn usage_error(message: &str) -> ! {
    process::usage_error(USAGE, message)
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    process::number(USAGE, flag, value)
}

fn sizes(flag: &str, value: &str) -> Vec<usize> {
    value
        .split(',')
        .map(|n| number(flag, n.trim().replace('_', "").as_str()))
        .collect()
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            nodes: vec![1000, 10_000],
            rollout_nodes: 1000,
            interval_s: 10,
            connecting: 32,
            status_writes_per_s: None,
            steady_s: 30,
            canary: 10,
            wave_base: 50,
            wave_factor: 2.0,
            min_interactions: 100,
            bake_s: 1,
            deadline_s: 600,
        };
        if let Ok(value) = std::env::var("EDGEFLEET_BENCH_NODES") {
            args.nodes = sizes("EDGEFLEET_BENCH_NODES", &value);
        }
        for (flag, value) in process::flags(USAGE) {
            match flag.as_str() {
                "--nodes" => args.nodes = sizes(&flag, &value),
                "--rollout-nodes" => args.rollout_nodes = number(&flag, &value),
                "--interval-s" => args.interval_s = number(&flag, &value),
                "--connecting" => args.connecting = number(&flag, &value),
                "--status-writes-per-s" => args.status_writes_per_s = Some(number(&flag, &value)),
                "--steady-s" => args.steady_s = number(&flag, &value),
                "--canary" => args.canary = number(&flag, &value),
                "--wave-base" => args.wave_base = number(&flag, &value),
                "--wave-factor" => args.wave_factor = number(&flag, &value),
                "--min-interactions" => args.min_interactions = number(&flag, &value),
                "--bake-s" => args.bake_s = number(&flag, &value),
                "--deadline-s" => args.deadline_s = number(&flag, &value),
                _ => usage_error(&format!("unknown flag {flag}")),
            }
        }
        if args.nodes.is_empty()
            || args.nodes.contains(&0)
            || args.rollout_nodes == 0
            || args.interval_s == 0
            || args.connecting == 0
            || args.status_writes_per_s == Some(0)
            || args.canary == 0
            || args.wave_base == 0
            || args.wave_factor < 1.0
        {
            usage_error(
                "--nodes, --rollout-nodes, --interval-s, --connecting, --status-writes-per-s, \
                 --canary and --wave-base must be positive, --wave-factor at least 1",
            );
        }
        args
    }

    /// The flags as given (for the reproducing command).
    fn command(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(usize::to_string).collect();
        let writes = self
            .status_writes_per_s
            .map_or(String::new(), |w| format!(" --status-writes-per-s {w}"));
        format!(
            "cargo bench -p edgefleet-controller --bench fleet -- --nodes {} --rollout-nodes {} \
             --interval-s {} --connecting {}{writes} --steady-s {} --canary {} --wave-base {} \
             --wave-factor {} --min-interactions {} --bake-s {} --deadline-s {}",
            nodes.join(","),
            self.rollout_nodes,
            self.interval_s,
            self.connecting,
            self.steady_s,
            self.canary,
            self.wave_base,
            self.wave_factor,
            self.min_interactions,
            self.bake_s,
            self.deadline_s
        )
    }

    /// The controller's status write budget (its default when not given).
    fn writes_per_s(&self) -> u32 {
        self.status_writes_per_s.unwrap_or(20)
    }
}

// ---------------------------------------------------------------------------------------------
// The objects.

/// A DeviceClass on the nodes `selector` picks; with `args`' strategy when `staged`.
fn class_object(name: &str, module: &str, selector: &str, staged: Option<&Args>) -> String {
    let class = format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: {name}\n\
         spec:\n  module: {module}\n  config: {{setpoint_c: 21.0}}\n\
         \x20 nodeSelector: {selector}\n"
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
         \x20   progressDeadlineSeconds: {}\n",
        args.canary,
        args.wave_base,
        args.wave_factor,
        args.min_interactions,
        args.bake_s,
        args.deadline_s
    )
}

const RING: &str = "{matchLabels: {ring: rollout}}";

/// The ring's EdgeNodes, labelled for [`RING`].
fn ring_objects(ring: &[NodeId]) -> String {
    ring.iter()
        .map(|node| {
            format!(
                "apiVersion: edgefleet.dev/v1alpha1\nkind: EdgeNode\nmetadata:\n  name: {node}\n\
                 \x20 labels: {{ring: rollout}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

// ---------------------------------------------------------------------------------------------
// What is polled.

/// The processes measured and their CPU seconds at one moment.
#[derive(Clone, Copy)]
struct Usage {
    at: Instant,
    controller: f64,
    broker: f64,
    bench: f64,
}

struct Processes {
    controller: u32,
    brokers: Vec<u32>,
    /// The largest PSS seen, MiB.
    controller_pss: f64,
    broker_pss: f64,
    bench_pss: f64,
    pss_sampled: Option<Instant>,
}

impl Processes {
    fn usage(&self) -> Usage {
        Usage {
            at: Instant::now(),
            controller: cpu_seconds(self.controller).unwrap_or(f64::NAN),
            broker: self.brokers.iter().filter_map(|&p| cpu_seconds(p)).sum(),
            bench: cpu_seconds(std::process::id()).unwrap_or(f64::NAN),
        }
    }

    /// Samples the PSS of each, at most once a second.
    fn sample_memory(&mut self) {
        if self
            .pss_sampled
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.pss_sampled = Some(Instant::now());
        let pss = |pid| pss_mib(pid).unwrap_or(0.0);
        self.controller_pss = self.controller_pss.max(pss(self.controller));
        self.broker_pss = self
            .broker_pss
            .max(self.brokers.iter().map(|&p| pss(p)).sum());
        self.bench_pss = self.bench_pss.max(pss(std::process::id()));
    }
}

/// CPU between two usages, as % of one core: (controller, broker, bench).
fn percent(from: &Usage, to: &Usage) -> (f64, f64, f64) {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    let p = |a: f64, b: f64| (b - a) / wall * 100.0;
    (
        p(from.controller, to.controller),
        p(from.broker, to.broker),
        p(from.bench, to.bench),
    )
}

/// A class's status as the standalone API shows it.
#[derive(Debug, Clone, Default)]
struct ClassView {
    target: String,
    phase: String,
    step: String,
    updated: u64,
    healthy: u64,
    message: String,
}

fn class_view(port: u16, class: &str) -> ClassView {
    let (code, body) = http_get(port, &format!("/api/v1alpha1/deviceclasses/{class}"));
    let class: serde_json::Value = if code == 200 {
        serde_json::from_str(&body).unwrap_or_default()
    } else {
        serde_json::Value::Null
    };
    let r = &class["status"]["rollout"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    ClassView {
        target: text(&r["targetVersion"]),
        phase: text(&r["phase"]),
        step: text(&r["step"]),
        updated: r["updatedNodes"].as_u64().unwrap_or(0),
        healthy: r["healthyNodes"].as_u64().unwrap_or(0),
        message: text(&r["message"]),
    }
}

/// Whether the class shows `nodes` healthy on `version`, its rollout completed.
fn settled(view: &ClassView, version: &str, nodes: usize) -> bool {
    view.target == version && view.phase == "Completed" && view.healthy == nodes as u64
}

/// EdgeNode statuses in the standalone controller's store.
fn stored_edge_nodes(data: &Path) -> usize {
    std::fs::read_dir(data.join("status").join("edgenodes"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json")))
                .count()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// One fleet size.

/// When (seconds after the hollow fleet started) each part of the fleet showed.
#[derive(Debug, Default, Clone, Copy)]
struct Shown {
    connected: Option<f64>,
    controller_online: Option<f64>,
    api_listed: Option<f64>,
    on_versions: Option<f64>,
}

struct StepRow {
    step: String,
    nodes: usize,
    /// When the class's status first showed the step (ms since the epoch).
    shown_ms: u64,
    first_assigned_ms: u64,
    last_assigned_ms: u64,
    last_reported_ms: Option<u64>,
    /// The next step (or Completed) shown.
    next_ms: u64,
}

struct Row {
    nodes: usize,
    ring: usize,
    controller_ready_s: f64,
    shown: Shown,
    connect_rate: f64,
    /// CPU % of a core (controller, broker, bench) while connecting (until every node shows, or
    /// runs its versions, whichever is later) and while steady, and during the rollout.
    connecting_cpu: (f64, f64, f64),
    steady_cpu: (f64, f64, f64),
    rollout_cpu: (f64, f64, f64),
    controller_pss: f64,
    broker_pss: f64,
    bench_pss: f64,
    statuses_per_s: f64,
    list_ms: u128,
    list_bytes: usize,
    connection_failures: u64,
    steps: Vec<StepRow>,
    written_ms: u64,
    completed_ms: u64,
}

fn measure(args: &Args, n: usize, runtime: &tokio::runtime::Runtime) -> Result<Row, String> {
    let limit = raise_open_files()?;
    let needed = n as u64 + SPARE_FILES;
    if limit < needed {
        return Err(format!(
            "{n} hollow nodes need about {needed} open files in this process and as many in \
             mosquitto (which inherits the limit), but the hard RLIMIT_NOFILE is {limit}: raise it \
             (`ulimit -Hn`) or run fewer nodes"
        ));
    }
    let authority = std::sync::Arc::new(Authority::new("bench").unwrap());
    let cloud = Broker::with_options(BrokerOptions::shipped(authority.clone(), Shipped::Cloud))
        .map_err(|e| format!("the cloud broker: {e}"))?;
    let standalone = Standalone::new(&authority);

    let mut options =
        FleetOptions::for_broker(&cloud, standalone.trust(), n).map_err(|e| e.to_string())?;
    options.interval = Duration::from_secs(args.interval_s);
    options.interactions_per_status = 20;
    options.connecting_at_once = args.connecting;
    let ring_size = args.rollout_nodes.min(n);
    let ring: Vec<NodeId> = (0..ring_size)
        .map(|k| NodeId::new(options.node_name(k * n / ring_size)).unwrap())
        .collect();

    let (_, meter) = standalone.handler_module("meter-1", "meter", "1.0.0");
    let (_, v1) = standalone.handler_module("thermostat-1", "thermostat", "1.0.0");
    let (_, v2) = standalone.handler_module("thermostat-2", "thermostat", "2.0.0");
    standalone.write_object("modules.yaml", &[meter, v1, v2].join("---\n"));
    standalone.write_object("ring.yaml", &ring_objects(&ring));
    standalone.write_object("meter.yaml", &class_object("meter", "meter-1", "{}", None));
    standalone.write_object(
        "thermo.yaml",
        &class_object("thermo", "thermostat-1", RING, None),
    );

    let ready_from = Instant::now();
    let extra: Vec<String> = args
        .status_writes_per_s
        .map(|w| vec!["--status-writes-per-s".into(), w.to_string()])
        .unwrap_or_default();
    let (mut controller, port) = standalone.start(cloud.port(), &extra)?;
    let controller_ready_s = ready_from.elapsed().as_secs_f64();
    // The classes are planned (no node yet) before the fleet comes.
    let planned = Instant::now();
    while class_view(port, "thermo").target != V1 {
        if planned.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "the class thermo does not target {V1} after 30 s: {:?}",
                class_view(port, "thermo")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut procs = Processes {
        controller: controller.0.id(),
        brokers: children_named("mosquitto"),
        controller_pss: 0.0,
        broker_pss: 0.0,
        bench_pss: 0.0,
        pss_sampled: None,
    };
    eprintln!(
        "== {n} nodes: controller ready after {controller_ready_s:.1} s; starting the hollow fleet \
         ({} connecting at a time)",
        args.connecting
    );

    // The fleet connects and shows.
    let began = Instant::now();
    let began_usage = procs.usage();
    let hollow = runtime
        .block_on(nodes::Fleet::start(options))
        .map_err(|e| format!("the hollow fleet: {e}"))?;
    let since = |at: Instant| at.duration_since(began).as_secs_f64();
    let mut shown = Shown::default();
    let connect_limit = Duration::from_secs(120 + n as u64 / 20);
    let show_limit =
        Duration::from_secs(300 + (3 * n as u64).div_ceil(u64::from(args.writes_per_s())));
    let mut last_line = Instant::now();
    let data = standalone.data();
    loop {
        let now = Instant::now();
        let totals = hollow.totals();
        let online = metric(
            &http_get(port, "/metrics").1,
            "edgefleet_controller_nodes",
            &["kind=\"online\""],
        ) as usize;
        let stored = stored_edge_nodes(&data);
        let (meter_view, thermo_view) = (class_view(port, "meter"), class_view(port, "thermo"));
        procs.sample_memory();
        if shown.connected.is_none() && totals.connected as usize == n {
            shown.connected = Some(since(now));
        }
        if shown.controller_online.is_none() && online == n {
            shown.controller_online = Some(since(now));
        }
        if shown.api_listed.is_none() && stored == n {
            shown.api_listed = Some(since(now));
        }
        if shown.on_versions.is_none()
            && settled(&meter_view, "meter 1.0.0", n)
            && settled(&thermo_view, V1, ring_size)
        {
            shown.on_versions = Some(since(now));
        }
        if shown.api_listed.is_some() && shown.on_versions.is_some() {
            break;
        }
        if last_line.elapsed() > Duration::from_secs(10) {
            last_line = Instant::now();
            eprintln!(
                "   {:>6.1} s  {} connected, the controller counts {online} online, {stored} \
                 EdgeNodes stored; meter: {} healthy, thermo: {} healthy",
                since(now),
                totals.connected,
                meter_view.healthy,
                thermo_view.healthy
            );
        }
        if let Some(exited) = controller.exited() {
            return Err(exited);
        }
        if shown.connected.is_none() && began.elapsed() > connect_limit {
            return Err(format!(
                "{} of {n} hollow nodes connected after {connect_limit:?} ({} connection \
                 failures); the broker's log: {}",
                totals.connected,
                totals.connection_failures,
                cloud.log_tail(5)
            ));
        }
        if began.elapsed() > show_limit {
            return Err(format!(
                "after {show_limit:?}: {stored} of {n} EdgeNodes stored; meter {meter_view:?}; \
                 thermo {thermo_view:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let connected_usage = procs.usage();
    let totals = hollow.totals();
    if totals.refused_signature + totals.refused_invalid + totals.refused_stale > 0
        || totals.chunks_refused + totals.modules_refused > 0
    {
        return Err(format!("hollow nodes refused what they got: {totals:?}"));
    }
    // What the API serves: every node, Online.
    let listed_at = Instant::now();
    let (code, body) = http_get(port, "/api/v1alpha1/edgenodes");
    let list_ms = listed_at.elapsed().as_millis();
    let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let listed_online = items
        .iter()
        .filter(|n| n["status"]["state"] == "Online")
        .count();
    if code != 200 || listed_online != n {
        return Err(format!(
            "GET /api/v1alpha1/edgenodes: {code}, {listed_online} of {n} nodes Online"
        ));
    }
    eprintln!(
        "== every node shows after {:.1} s; measuring for {} s",
        since(Instant::now()),
        args.steady_s
    );

    // Steady: every node reporting, nothing else happening (a measuring window).
    let statuses = || {
        metric(
            &http_get(port, "/metrics").1,
            "edgefleet_controller_statuses_total",
            &[],
        )
    };
    let (steady_from, statuses_from) = (procs.usage(), statuses());
    let steady_end = Instant::now() + Duration::from_secs(args.steady_s);
    while Instant::now() < steady_end {
        procs.sample_memory();
        std::thread::sleep(Duration::from_millis(250));
    }
    let steady_to = procs.usage();
    let statuses_per_s =
        (statuses() - statuses_from) / steady_to.at.duration_since(steady_from.at).as_secs_f64();

    // The rollout of thermostat 2.0.0 to the ring.
    let rollout_from = procs.usage();
    let written_ms = now_ms();
    standalone.write_object(
        "thermo.yaml",
        &class_object("thermo", "thermostat-2", RING, Some(args)),
    );
    eprintln!("== thermo switched to v2 with the staged strategy");
    let deadline = Instant::now() + Duration::from_secs(args.deadline_s);
    let mut steps_shown: Vec<(String, u64)> = Vec::new();
    let completed_ms = loop {
        let view = class_view(port, "thermo");
        let at = now_ms();
        procs.sample_memory();
        if view.target == V2 {
            if steps_shown.last().map(|(s, _)| s.as_str()) != Some(view.step.as_str())
                && !view.step.is_empty()
            {
                eprintln!(
                    "   {:>6.1} s  {} {} ({} updated, {} healthy)",
                    (at - written_ms) as f64 / 1000.0,
                    view.phase,
                    view.step,
                    view.updated,
                    view.healthy
                );
                steps_shown.push((view.step.clone(), at));
            }
            match view.phase.as_str() {
                "Completed" => break at,
                "RolledBack" | "Failed" => {
                    return Err(format!(
                        "the rollout of v2 ended {} at step {}: {}",
                        view.phase, view.step, view.message
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
                "the rollout of v2 did not complete within {} s: {view:?}",
                args.deadline_s
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let rollout_to = procs.usage();

    // Each ring node's v2 assignment: its step, when it arrived, when a status first claimed it.
    let views = hollow.observe();
    let in_ring: std::collections::HashSet<&NodeId> = ring.iter().collect();
    let mut by_stage: BTreeMap<String, Vec<(u64, Option<u64>)>> = BTreeMap::new();
    for view in &views {
        let v2 = view.assignments.iter().rev().find(|a| {
            a.module
                .as_ref()
                .is_some_and(|m| m.name.as_str() == "thermostat" && m.version == "2.0.0")
        });
        match (in_ring.contains(&view.node), v2) {
            (true, Some(a)) => {
                let stage = a
                    .rollout
                    .as_ref()
                    .map_or(RolloutStage::Complete, |r| r.stage);
                by_stage
                    .entry(stage.to_string())
                    .or_default()
                    .push((a.received_at_ms, a.reported_at_ms));
            }
            (true, None) => return Err(format!("{} never received v2", view.node)),
            (false, Some(_)) => return Err(format!("{} is not in the ring but got v2", view.node)),
            (false, None) => {}
        }
    }
    let mut steps = Vec::new();
    for (i, (step, shown_ms)) in steps_shown.iter().enumerate() {
        let stage = step.split_once(' ').map_or("", |(_, s)| s);
        let Some(of) = by_stage.get(stage) else {
            continue;
        };
        steps.push(StepRow {
            step: step.clone(),
            nodes: of.len(),
            shown_ms: *shown_ms,
            first_assigned_ms: of.iter().map(|(a, _)| *a).min().unwrap_or(0),
            last_assigned_ms: of.iter().map(|(a, _)| *a).max().unwrap_or(0),
            last_reported_ms: of
                .iter()
                .map(|(_, r)| *r)
                .collect::<Option<Vec<u64>>>()
                .and_then(|r| r.into_iter().max()),
            next_ms: steps_shown.get(i + 1).map_or(completed_ms, |(_, at)| *at),
        });
    }
    let counted: usize = steps.iter().map(|s| s.nodes).sum();
    if counted != ring_size {
        return Err(format!(
            "the steps shown ({steps_shown:?}) account for {counted} of the {ring_size} ring \
             nodes' v2 assignments ({:?})",
            by_stage.keys().collect::<Vec<_>>()
        ));
    }
    let connection_failures = hollow.totals().connection_failures;
    runtime.block_on(hollow.stop());
    controller.stop();
    drop(cloud);
    Ok(Row {
        nodes: n,
        ring: ring_size,
        controller_ready_s,
        shown,
        connect_rate: shown.connected.map_or(f64::NAN, |s| n as f64 / s),
        connecting_cpu: percent(&began_usage, &connected_usage),
        steady_cpu: percent(&steady_from, &steady_to),
        rollout_cpu: percent(&rollout_from, &rollout_to),
        controller_pss: procs.controller_pss,
        broker_pss: procs.broker_pss,
        bench_pss: procs.bench_pss,
        statuses_per_s,
        list_ms,
        list_bytes: body.len(),
        connection_failures,
        steps,
        written_ms,
        completed_ms,
    })
}

// ---------------------------------------------------------------------------------------------
// The tables.

fn seconds(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{s:.1} s"))
}

fn after(from: u64, to: Option<u64>) -> String {
    match to {
        Some(to) if to >= from => {
            let ms = to - from;
            if ms >= 10_000 {
                format!("{:.1} s", ms as f64 / 1000.0)
            } else {
                format!("{ms} ms")
            }
        }
        // Before the poll saw the step (it polls every 100 ms).
        Some(to) => format!("−{} ms", from - to),
        None => "-".into(),
    }
}

fn cpu((controller, broker, bench): (f64, f64, f64)) -> String {
    format!("{controller:.0} % / {broker:.0} % / {bench:.0} %")
}

fn print_tables(args: &Args, rows: &[Row]) {
    println!(
        "\n#### The controller with a hollow fleet (standalone, shipped cloud broker, one mutual-TLS \
         connection per node; every node reports every {} s; {} connecting at a time; status write \
         budget {}/s)\n",
        args.interval_s,
        args.connecting,
        args.writes_per_s()
    );
    println!(
        "| nodes | all connected | controller counts all online | API lists all | all run their versions | connect rate |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} nodes/s |",
            r.nodes,
            seconds(r.shown.connected),
            seconds(r.shown.controller_online),
            seconds(r.shown.api_listed),
            seconds(r.shown.on_versions),
            r.connect_rate
        );
    }
    println!(
        "\n| nodes | CPU connecting: controller / mosquitto / nodes | steady | rollout | PSS max: controller | mosquitto | nodes (bench) | statuses/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} |",
            r.nodes,
            cpu(r.connecting_cpu),
            cpu(r.steady_cpu),
            cpu(r.rollout_cpu),
            r.controller_pss,
            r.broker_pss,
            r.bench_pss,
            r.statuses_per_s
        );
    }
    for r in rows {
        println!(
            "\n#### Rollout of thermostat 2.0.0 to {} of {} nodes (canary {}, waves {} × {}^i; \
             gate: {} interactions, {} s bake)\n",
            r.ring,
            r.nodes,
            args.canary,
            args.wave_base,
            args.wave_factor,
            args.min_interactions,
            args.bake_s
        );
        println!(
            "| step | nodes | step shown → first assignment received | → last assignment received | → last node reports v2 | → next step shown |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for s in &r.steps {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                s.step,
                s.nodes,
                after(s.shown_ms, Some(s.first_assigned_ms)),
                after(s.shown_ms, Some(s.last_assigned_ms)),
                after(s.shown_ms, s.last_reported_ms),
                after(s.shown_ms, Some(s.next_ms))
            );
        }
        println!(
            "\nClass switched → Completed shown: {}. Controller ready {:.1} s after start; \
             GET /api/v1alpha1/edgenodes ({} nodes): {} ms, {} KiB; {} connection failures.",
            after(r.written_ms, Some(r.completed_ms)),
            r.controller_ready_s,
            r.nodes,
            r.list_ms,
            r.list_bytes / 1024,
            r.connection_failures
        );
    }
    println!(
        "\nTimes from the hollow fleet's start; CPU as % of one core (utime+stime), PSS from \
         smaps_rollup.\n\n`{}`",
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
    let mut rows = Vec::new();
    for &n in &args.nodes {
        match measure(&args, n, &runtime) {
            Ok(row) => rows.push(row),
            Err(message) => {
                if !rows.is_empty() {
                    print_tables(&args, &rows);
                }
                eprintln!("fleet bench FAILED at {n} nodes: {message}");
                std::process::exit(1);
            }
        }
    }
    print_tables(&args, &rows);
}
