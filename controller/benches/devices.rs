//! One edge agent under 10,000 simulated devices, and the simulator's own ceiling.
//!
//! 1. **The agent**: the real `edge-agent` process (release build, its sandbox worker beside it,
//!    run through WasmEdge's loader as `scripts/wasmedge-run` passes it), the shipped device broker
//!    (mosquitto, mutual TLS, the shipped ACL and limits), the thermostat class assigned by the real
//!    standalone controller over the shipped cloud broker — the harness of `controller/tests/`
//!    (`tests/fleet/mod.rs`). Per row: all of that fresh, then 10,000 devices from
//!    `edgefleet_simulators::devices` (each its own certificate, the oracle checking every command)
//!    connect, and once all are connected they send at a fixed total rate (QoS 1). Measured over a
//!    window after a warm-up: readings sent and answered per second, the answer latency (p50/p99 of
//!    the window), the oracle's verdict (the whole row, drained), CPU as % of one core
//!    (utime+stime over the window) of the agent, its worker processes, mosquitto and this process
//!    (the simulator), and the PSS (/proc/<pid>/smaps_rollup) of the agent and of its workers.
//! 2. **The simulator's ceiling**: the same 10,000 devices on a fresh shipped device broker with no
//!    agent: answered by a trivial responder in this process (one MQTT connection as the node, the
//!    thermostat's logic natively, so the oracle still checks every answer), or by nothing at all
//!    (publish only: what the devices can send with the broker acknowledging). The ratios to the
//!    most the agent answered are printed.
//!
//! `cargo build --release -p edge-agent -p edgefleet-sandbox-worker` first (cargo bench builds only
//! this package), then `cargo bench -p edgefleet-controller --bench devices` (about 20 minutes;
//! `-- --help` for the flags). `EDGEFLEET_TEST_AGENT_LOGS=1` and `EDGEFLEET_TEST_CONTROLLER_LOGS=1`
//! show the agent's and the controller's logs. Progress goes to stderr, the tables to stdout.

#[path = "../tests/fleet/mod.rs"]
mod fleet;
mod process;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgefleet_device_modules::{Handler, handler_wasm};
use edgefleet_guest::cbor;
use edgefleet_protocol::{ClassId, NodeId, Topic};
use edgefleet_simulators::broker::{self, Broker, BrokerOptions, Shipped};
use edgefleet_simulators::devices::{ClassPlan, Connect, Kind, Plan, Simulation, Snapshot};
use edgefleet_simulators::pki::{self, Authority};
use fleet::Fleet;
use process::{children_named, cpu_seconds, pss_mib, raise_open_files};
use rumqttc::{Event, Incoming, MqttOptions, QoS, Transport};

const NODE: &str = "edge-bench";
const CLASS: &str = "thermo";
/// How often progress is printed (and PSS sampled).
const TICK: Duration = Duration::from_secs(5);

const USAGE: &str = "\
cargo bench -p edgefleet-controller --bench devices -- [flags]
  --devices N            simulated devices per row (default 10000)
  --rates R,R,..         total readings/s offered to the agent, one row each
                         (default 1000,2000,4000,6000,8000; empty: none)
  --ceiling-rates R,..   total readings/s offered to the trivial responder (default 4000,8000)
  --publish-rates R,..   total readings/s the devices publish with nothing answering, the broker
                         acknowledging (default 10000,20000,40000)
  --seconds S            measuring window per row (default 30)
  --warmup-s S           after every device is connected, before the window (default 10)
  --drain-s S            longest wait for the answers still due after a row (default 60)
  --connect-concurrency N  devices connecting at once (default 128)
Build the agent first: cargo build --release -p edge-agent -p edgefleet-sandbox-worker";

fn usage_error(message: &str) -> ! {
    process::usage_error(USAGE, message)
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    process::number(USAGE, flag, value)
}

#[derive(Debug, Clone)]
struct Args {
    devices: usize,
    rates: Vec<u32>,
    ceiling_rates: Vec<u32>,
    publish_rates: Vec<u32>,
    seconds: u64,
    warmup_s: u64,
    drain_s: u64,
    connect_concurrency: usize,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            devices: 10_000,
            rates: vec![1000, 2000, 4000, 6000, 8000],
            ceiling_rates: vec![4000, 8000],
            publish_rates: vec![10_000, 20_000, 40_000],
            seconds: 30,
            warmup_s: 10,
            drain_s: 60,
            connect_concurrency: 128,
        };
        for (flag, value) in process::flags(USAGE) {
            fn list(flag: &str, value: &str) -> Vec<u32> {
                value
                    .split(',')
                    .filter(|v| !v.is_empty())
                    .map(|v| number(flag, v))
                    .collect()
            }
            match flag.as_str() {
                "--devices" => args.devices = number(&flag, &value),
                "--rates" => args.rates = list(&flag, &value),
                "--ceiling-rates" => args.ceiling_rates = list(&flag, &value),
                "--publish-rates" => args.publish_rates = list(&flag, &value),
                "--seconds" => args.seconds = number(&flag, &value),
                "--warmup-s" => args.warmup_s = number(&flag, &value),
                "--drain-s" => args.drain_s = number(&flag, &value),
                "--connect-concurrency" => args.connect_concurrency = number(&flag, &value),
                _ => usage_error(&format!("unknown flag {flag}")),
            }
        }
        if args.devices == 0
            || args.seconds == 0
            || args.connect_concurrency == 0
            || (args.rates.is_empty()
                && args.ceiling_rates.is_empty()
                && args.publish_rates.is_empty())
            || args.rates.contains(&0)
            || args.ceiling_rates.contains(&0)
            || args.publish_rates.contains(&0)
        {
            eprintln!(
                "--devices, --seconds, --connect-concurrency and every rate must be positive, \
                 and some rate given\n{USAGE}"
            );
            std::process::exit(2);
        }
        args
    }

    /// The flags as given (for the reproducing command).
    fn command(&self) -> String {
        let list = |rates: &[u32]| {
            rates
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "cargo bench -p edgefleet-controller --bench devices -- --devices {} --rates {} \
             --ceiling-rates {} --publish-rates {} --seconds {} --warmup-s {} --drain-s {} \
             --connect-concurrency {}",
            self.devices,
            list(&self.rates),
            list(&self.ceiling_rates),
            list(&self.publish_rates),
            self.seconds,
            self.warmup_s,
            self.drain_s,
            self.connect_concurrency
        )
    }
}

/// The thermostat class's config: the DeviceClass's, the oracle's and the responder's.
fn class_config() -> serde_json::Value {
    serde_json::json!({"setpoint_c": 21.0, "hysteresis_c": 0.5})
}

// ---------------------------------------------------------------------------------------------
// Processes: CPU and memory from /proc.

/// The processes whose parent is `pid` (the agent's sandbox workers and compile processes).
fn children_of(pid: u32) -> Vec<u32> {
    let parent = pid.to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        if stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            == Some(parent.as_str())
        {
            pids.push(child);
        }
    }
    pids
}

/// CPU seconds of a set of processes, by pid.
struct Cpu(HashMap<u32, f64>);

impl Cpu {
    fn of(pids: &[u32]) -> Cpu {
        Cpu(pids
            .iter()
            .filter_map(|&pid| Some((pid, cpu_seconds(pid)?)))
            .collect())
    }

    /// % of one core from `self` to `later` over `seconds` (a process new in `later` counts from
    /// its start; one gone is not counted after `self`).
    fn percent_until(&self, later: &Cpu, seconds: f64) -> f64 {
        let used: f64 = later
            .0
            .iter()
            .map(|(pid, &t)| t - self.0.get(pid).copied().unwrap_or(0.0))
            .sum();
        100.0 * used / seconds
    }
}

/// What is measured beside the devices: the processes to read, by role.
struct Watched {
    agent: Option<u32>,
}

impl Watched {
    fn workers(&self) -> Vec<u32> {
        self.agent.map(children_of).unwrap_or_default()
    }

    fn sample(&self) -> Sample {
        let workers = self.workers();
        Sample {
            agent: Cpu::of(&self.agent.into_iter().collect::<Vec<_>>()),
            workers: Cpu::of(&workers),
            mosquitto: Cpu::of(&children_named("mosquitto")),
            simulator: Cpu::of(&[std::process::id()]),
            at: Instant::now(),
        }
    }

    /// The PSS of the agent and the sum over its workers (and how many there are), MiB.
    fn memory(&self) -> Option<Memory> {
        let agent = pss_mib(self.agent?)?;
        let workers = self.workers();
        Some(Memory {
            agent,
            workers: workers.iter().filter_map(|&pid| pss_mib(pid)).sum(),
            worker_count: workers.len(),
        })
    }
}

struct Sample {
    agent: Cpu,
    workers: Cpu,
    mosquitto: Cpu,
    simulator: Cpu,
    at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    agent: f64,
    workers: f64,
    worker_count: usize,
}

impl Memory {
    fn total(&self) -> f64 {
        self.agent + self.workers
    }
}

// ---------------------------------------------------------------------------------------------
// One row.

/// What answers the devices of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The real agent.
    Agent,
    /// The trivial responder.
    Responder,
    /// Nothing: the devices publish, the broker acknowledges.
    PublishOnly,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Agent => "agent",
            Target::Responder => "responder",
            Target::PublishOnly => "publish only",
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    target: Target,
    offered: u32,
    sent_per_s: f64,
    answered_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    /// Waited for the answers still due after sending stopped.
    drained_s: f64,
    clean: bool,
    failures: u64,
    /// Readings not sent because the device's client queue was full.
    deferred: u64,
    agent_cpu: f64,
    workers_cpu: f64,
    mosquitto_cpu: f64,
    simulator_cpu: f64,
    /// The largest PSS sample of the window.
    memory: Option<Memory>,
    connect_s: f64,
    verdict: String,
}

/// Devices with certificates from `authority`, on the broker at `port`.
fn connect(authority: Arc<Authority>, port: u16) -> Arc<Connect> {
    Arc::new(move |_, id| {
        let identity = authority
            .client_cert(id.as_str())
            .map_err(|e| e.to_string())?;
        let config = pki::client_config(&authority, &identity).map_err(|e| e.to_string())?;
        let mut options = MqttOptions::new(id.as_str(), "127.0.0.1", port);
        options.set_transport(Transport::tls_with_config(config.into()));
        Ok(options)
    })
}

fn progress(what: &str, snapshot: &Snapshot, previous: Option<&Snapshot>) {
    eprintln!("[{what}] {}", snapshot.progress_line(previous));
}

/// Runs `args.devices` fresh devices (ids `prefix-…`) at `rate` readings/s in total against the
/// broker at `port`, and measures them and `watched`.
async fn run_row(
    args: &Args,
    target: Target,
    prefix: &str,
    rate: u32,
    (authority, port): (Arc<Authority>, u16),
    watched: &Watched,
    drain: Duration,
) -> Result<Row, String> {
    let plan = Plan {
        classes: vec![ClassPlan {
            kind: Kind::Thermostat,
            class: ClassId::new(CLASS).expect("a valid class id"),
            config: class_config(),
            weight: 1,
        }],
        devices: args.devices,
        prefix: prefix.into(),
        rate_per_s: f64::from(rate) / args.devices as f64,
        drain,
        connect_concurrency: args.connect_concurrency,
        // The load starts once every device is connected: the rows measure a steady rate, not
        // the rate plus 20,000 TLS handshakes (see README.md on what those do to the agent).
        send_once_all_connected: true,
        ..Plan::default()
    };
    let what = format!("{} {rate}/s", target.name());
    eprintln!(
        "[{what}] issuing {} device certificates and connecting them ({} at a time)",
        args.devices, args.connect_concurrency
    );
    let started = Instant::now();
    let simulation =
        Simulation::start(plan, connect(authority, port)).map_err(|e| e.to_string())?;
    let mut previous: Option<Snapshot> = None;
    let mut stalled_since = Instant::now();
    let mut connected_before = 0;
    loop {
        let snapshot = simulation.snapshot();
        if snapshot.connected >= args.devices {
            break;
        }
        if snapshot.connected > connected_before {
            connected_before = snapshot.connected;
            stalled_since = Instant::now();
        } else if stalled_since.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "{what}: {} of {} devices connected, none more for 120 s; last error: {:?}",
                snapshot.connected, args.devices, snapshot.last_error
            ));
        }
        progress(&what, &snapshot, previous.as_ref());
        previous = Some(snapshot);
        tokio::time::sleep(TICK).await;
    }
    let connect_s = started.elapsed().as_secs_f64();
    eprintln!(
        "[{what}] every device connected after {connect_s:.0} s; warming up {} s",
        args.warmup_s
    );
    tokio::time::sleep(Duration::from_secs(args.warmup_s)).await;

    simulation.reset_latencies();
    let before = simulation.snapshot();
    let cpu_before = watched.sample();
    let mut memory: Option<Memory> = watched.memory();
    let window = Duration::from_secs(args.seconds);
    let mut previous = before.clone();
    while cpu_before.at.elapsed() < window {
        tokio::time::sleep(TICK.min(window.saturating_sub(cpu_before.at.elapsed()))).await;
        let snapshot = simulation.snapshot();
        progress(&what, &snapshot, Some(&previous));
        previous = snapshot;
        if let Some(now) = watched.memory()
            && memory.is_none_or(|m| now.total() > m.total())
        {
            memory = Some(now);
        }
    }
    let cpu_after = watched.sample();
    let after = simulation.snapshot();
    let seconds = cpu_after.at.duration_since(cpu_before.at).as_secs_f64();
    eprintln!("[{what}] window over; draining the answers still due");
    let report = simulation.stop().await;
    let class = &after.classes[0];
    let row = Row {
        target,
        offered: rate,
        sent_per_s: (after.sent() - before.sent()) as f64 / seconds,
        answered_per_s: (after.answered() - before.answered()) as f64 / seconds,
        p50_ms: class.p50_ms,
        p99_ms: class.p99_ms,
        max_ms: class.max_ms,
        drained_s: report.drained_for_s,
        clean: report.clean(),
        failures: report.at_end.failures(),
        deferred: after.deferred - before.deferred,
        agent_cpu: cpu_before.agent.percent_until(&cpu_after.agent, seconds),
        workers_cpu: cpu_before
            .workers
            .percent_until(&cpu_after.workers, seconds),
        mosquitto_cpu: cpu_before
            .mosquitto
            .percent_until(&cpu_after.mosquitto, seconds),
        simulator_cpu: cpu_before
            .simulator
            .percent_until(&cpu_after.simulator, seconds),
        memory,
        connect_s,
        verdict: report
            .table()
            .lines()
            .find(|l| l.starts_with("oracle:"))
            .unwrap_or("oracle: ?")
            .to_string(),
    };
    eprintln!("[{what}] the row's oracle table:\n{}", report.table());
    Ok(row)
}

// ---------------------------------------------------------------------------------------------
// The agent.

/// The agent's counters that explain a row: reconnects, redeliveries, shed messages, stops of
/// the device link's reading, dropped commands (those not zero).
fn agent_counters(http_port: u16) -> String {
    let (_, body) = edgefleet_testenv::http::get(http_port, "/metrics");
    let counters: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
        .filter(|l| {
            [
                "reconnects_total",
                "redeliveries_total",
                "redelivered_done_total",
                "shed_messages_total",
                "device_reads_paused_total",
                "commands_dropped_total",
                "host_faults_total",
            ]
            .iter()
            .any(|name| l.contains(name))
        })
        .map(|l| l.trim_start_matches("edgefleet_agent_"))
        .collect();
    if counters.is_empty() {
        "nothing shed, paused or reconnected".into()
    } else {
        counters.join(", ")
    }
}

/// The fleet of one node: the standalone controller, the shipped cloud broker, the node's shipped
/// device broker and its agent, running the thermostat class.
async fn fleet_with_one_agent() -> Fleet {
    let mut fleet = Fleet::new();
    std::fs::write(
        fleet.objects_dir().join("thermostat.wasm"),
        handler_wasm(Handler::Thermostat).expect("the thermostat handler builds"),
    )
    .unwrap();
    fleet.write_object(
        "fleet.yaml",
        &format!(
            "{module}---\n\
             apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: {CLASS}\n\
             spec:\n  module: thermostat-1\n  config: {config}\n  nodeSelector:\n    \
             matchLabels: {{site: bench}}\n---\n\
             apiVersion: edgefleet.dev/v1alpha1\nkind: EdgeNode\nmetadata:\n  name: {NODE}\n  \
             labels: {{site: bench}}\n",
            module = fleet::module_object("thermostat-1", "1.0.0", "thermostat.wasm"),
            config = class_config(),
        ),
    );
    fleet.start_standalone_controller();
    fleet.add_node(NODE);
    fleet
        .until_object(
            "edgenodes",
            NODE,
            Duration::from_secs(180),
            "the agent runs the thermostat class",
            |n| {
                n["status"]["classes"]
                    .as_array()
                    .is_some_and(|c| c.len() == 1 && c[0]["active"].is_string())
            },
        )
        .await;
    fleet
}

// ---------------------------------------------------------------------------------------------
// The trivial responder.

/// The thermostat's logic natively, one MQTT connection as the node: reads every device's
/// readings, answers each with its command (state kept per device), QoS 1 both ways.
async fn respond(options: MqttOptions, config: Vec<u8>, answered: Arc<AtomicU64>) {
    let (client, mut eventloop) = broker::client(options, 1 << 16);
    let mut states: HashMap<String, Vec<u8>> = HashMap::new();
    loop {
        let publish = match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::Publish(publish))) => publish,
            // A clean session: subscribe at every connection.
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                let _ = client.try_subscribe(
                    edgefleet_protocol::topic::ALL_DEVICES_UP_FILTER,
                    QoS::AtLeastOnce,
                );
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                eprintln!("[responder] connection: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(Topic::DeviceUp { class, device, .. }) = Topic::parse(&publish.topic) else {
            continue;
        };
        let state = states.get(device.as_str()).map(Vec::as_slice);
        let Ok(outcome) = edgefleet_thermostat::handle(&publish.payload, &config, state) else {
            continue;
        };
        let mut buf = [0u8; 64];
        if let Some(change) = outcome.change {
            let state = edgefleet_thermostat::State { mode: change.mode };
            let bytes = cbor::to_slice(&state, &mut buf)
                .expect("a state fits")
                .to_vec();
            states.insert(device.as_str().to_string(), bytes);
        }
        let command = cbor::to_slice(&outcome.command, &mut buf)
            .expect("a command fits")
            .to_vec();
        let topic = Topic::DeviceCommand { class, device }.to_string();
        if client
            .try_publish(topic, QoS::AtLeastOnce, false, command)
            .is_ok()
        {
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tables.

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} ms"))
}

fn verdict(row: &Row) -> String {
    if row.target == Target::PublishOnly {
        "n/a (nothing answers)".into()
    } else if row.clean {
        "clean".into()
    } else {
        format!("**{} failures**", row.failures)
    }
}

fn agent_table(args: &Args, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "#### One agent under {} simulated devices (thermostat Wasm, shipped device broker, mutual \
         TLS, QoS 1; {} s measured per row after connecting and {} s of warm-up)\n",
        args.devices, args.seconds, args.warmup_s
    );
    let _ = writeln!(
        out,
        "| offered | sent | answered | p50 | p99 | max | drain | oracle | agent CPU | workers CPU \
         | mosquitto CPU | simulator CPU | agent PSS | workers PSS | agent + workers PSS |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let (agent, workers, total) = r.memory.map_or(("-".into(), "-".into(), "-".into()), |m| {
            (
                format!("{:.1} MiB", m.agent),
                format!("{:.1} MiB ({})", m.workers, m.worker_count),
                format!("{:.1} MiB", m.total()),
            )
        });
        let _ = writeln!(
            out,
            "| {}/s | {:.0}/s | {:.0}/s | {} | {} | {} | {:.1} s | {} | {:.0} % | {:.0} % | {:.0} % \
             | {:.0} % | {agent} | {workers} | {total} |",
            r.offered,
            r.sent_per_s,
            r.answered_per_s,
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.max_ms),
            r.drained_s,
            verdict(r),
            r.agent_cpu,
            r.workers_cpu,
            r.mosquitto_cpu,
            r.simulator_cpu,
        );
    }
    out
}

fn ceiling_table(args: &Args, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "#### The simulator's ceiling: the same {} devices on the shipped device broker, no agent; \
         a trivial responder (the thermostat's logic natively, one connection, in the simulator's \
         process), or nothing answering (publish only: the broker acknowledges)\n",
        args.devices
    );
    let _ = writeln!(
        out,
        "| answered by | offered | sent | answered | p50 | p99 | max | drain | oracle | deferred \
         | mosquitto CPU | simulator CPU |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"
    );
    for r in rows {
        let answers = r.target == Target::Responder;
        let or_none = |v: String| if answers { v } else { "-".into() };
        let _ = writeln!(
            out,
            "| {} | {}/s | {:.0}/s | {} | {} | {} | {} | {} | {} | {} | {:.0} % | {:.0} % |",
            r.target.name(),
            r.offered,
            r.sent_per_s,
            or_none(format!("{:.0}/s", r.answered_per_s)),
            or_none(ms(r.p50_ms)),
            or_none(ms(r.p99_ms)),
            or_none(ms(r.max_ms)),
            or_none(format!("{:.1} s", r.drained_s)),
            verdict(r),
            r.deferred,
            r.mosquitto_cpu,
            r.simulator_cpu,
        );
    }
    out
}

/// The final tables, the oracle's verdicts, the ratios and the command.
fn report(args: &Args, agent: &[Row], ceiling: &[Row]) -> String {
    let mut out = String::new();
    if !agent.is_empty() {
        let _ = writeln!(out, "{}", agent_table(args, agent));
    }
    for r in agent {
        let _ = writeln!(out, "agent, {}/s: {}", r.offered, r.verdict);
    }
    if !ceiling.is_empty() {
        let _ = writeln!(out, "\n{}", ceiling_table(args, ceiling));
        for r in ceiling.iter().filter(|r| r.target == Target::Responder) {
            let _ = writeln!(out, "responder, {}/s: {}", r.offered, r.verdict);
        }
    }
    let best = |target: Target, value: fn(&Row) -> f64| {
        agent
            .iter()
            .chain(ceiling)
            .filter(|r| r.target == target)
            .map(value)
            .fold(0.0, f64::max)
    };
    let agent_max = best(Target::Agent, |r| r.answered_per_s);
    if agent_max > 0.0 {
        let answered = best(Target::Responder, |r| r.answered_per_s);
        let sent = best(Target::PublishOnly, |r| r.sent_per_s);
        let _ = writeln!(out, "\nThe most the agent answered: {agent_max:.0}/s.");
        if answered > 0.0 {
            let _ = writeln!(
                out,
                "Round trips: the trivial responder answered up to {answered:.0}/s = {:.1}× the \
                 agent.",
                answered / agent_max
            );
        }
        if sent > 0.0 {
            let _ = writeln!(
                out,
                "Offered load: the devices published up to {sent:.0}/s (the broker acknowledging) \
                 = {:.1}× the agent.",
                sent / agent_max
            );
        }
    }
    let connect: Vec<String> = agent
        .iter()
        .chain(ceiling)
        .map(|r| format!("{:.0} s", r.connect_s))
        .collect();
    let _ = writeln!(
        out,
        "\nCPU as % of one core (utime+stime over the window); PSS from smaps_rollup, the largest \
         sample of the window; p50/p99/max of the answers received in the window; drain: how long \
         the answers still due took once sending stopped. Every row on fresh processes (agent, \
         brokers) and {} fresh devices, which send only once all are connected; connecting them \
         (two TLS handshakes each) took {}.\n\n`{}`",
        args.devices,
        connect.join(", "),
        args.command()
    );
    out
}

// ---------------------------------------------------------------------------------------------

/// The trivial responder on its own thread and runtime (so that 10,000 device tasks do not
/// starve it), until stopped.
struct Responder {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    answered: Arc<AtomicU64>,
}

impl Responder {
    fn start(broker: &Broker, node: &NodeId) -> Result<Responder, String> {
        let mut options = broker
            .mqtt_options(node.as_str())
            .map_err(|e| e.to_string())?;
        // A keep-alive the devices' connection storm cannot outlast; no window on the commands.
        options
            .set_keep_alive(Duration::from_secs(60))
            .set_inflight(u16::MAX);
        let answered = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = edgefleet_protocol::codec::encode(&class_config());
        let count = answered.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the responder");
            runtime.block_on(async move {
                tokio::select! {
                    () = respond(options, config, count) => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Responder {
            stop,
            thread,
            answered,
        })
    }

    /// Stops it; returns how many commands it sent.
    fn stop(self) -> u64 {
        let _ = self.stop.send(());
        let _ = self.thread.join();
        self.answered.load(Ordering::Relaxed)
    }
}

/// Runs every row, each on fresh processes (a fresh agent and brokers: no sessions or device
/// state left from the row before); the rows measured so far stay in `agent_rows` and
/// `ceiling_rows` on an error.
async fn bench(
    args: &Args,
    agent_rows: &mut Vec<Row>,
    ceiling_rows: &mut Vec<Row>,
) -> Result<(), String> {
    let drain = Duration::from_secs(args.drain_s);
    for (i, &rate) in args.rates.iter().enumerate() {
        eprintln!(
            "[agent {rate}/s] controller, cloud broker, device broker, agent; assigning the \
             thermostat"
        );
        let fleet = fleet_with_one_agent().await;
        let watched = Watched {
            agent: fleet.nodes[NODE].agent.as_ref().map(|c| c.id()),
        };
        eprintln!(
            "[agent {rate}/s] the agent (pid {:?}) runs the class; {} worker processes",
            watched.agent,
            watched.workers().len()
        );
        let row = run_row(
            args,
            Target::Agent,
            &format!("a{i}"),
            rate,
            (fleet.authority.clone(), fleet.nodes[NODE].devices.port()),
            &watched,
            drain,
        )
        .await;
        eprintln!(
            "[agent {rate}/s] what the agent did: {}",
            agent_counters(fleet.nodes[NODE].http_port)
        );
        drop(fleet);
        agent_rows.push(row?);
        eprintln!("{}", agent_table(args, agent_rows));
    }
    let authority = Arc::new(Authority::new("ceiling").map_err(|e| e.to_string())?);
    let node = NodeId::new("ceiling").expect("a valid node id");
    let rows = (args.ceiling_rates.iter().map(|&r| (r, Target::Responder)))
        .chain(args.publish_rates.iter().map(|&r| (r, Target::PublishOnly)));
    for (i, (rate, target)) in rows.enumerate() {
        let broker = Broker::with_options(BrokerOptions::shipped(
            authority.clone(),
            Shipped::Device { node: node.clone() },
        ))
        .map_err(|e| format!("the ceiling's broker: {e}"))?;
        let responder = match target {
            Target::Responder => Some(Responder::start(&broker, &node)?),
            _ => None,
        };
        let row = run_row(
            args,
            target,
            &format!("c{i}"),
            rate,
            (authority.clone(), broker.port()),
            &Watched { agent: None },
            // Nothing answers a publish-only row: nothing to wait for.
            if responder.is_some() {
                drain
            } else {
                Duration::from_secs(1)
            },
        )
        .await;
        if let Some(responder) = responder {
            eprintln!(
                "[responder {rate}/s] the responder sent {} commands",
                responder.stop()
            );
        }
        drop(broker);
        ceiling_rows.push(row?);
        eprintln!("{}", ceiling_table(args, ceiling_rows));
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    // Per device one descriptor in this process and one in mosquitto (which inherits the limit),
    // and some to spare.
    let needed = args.devices as u64 + 1024;
    match raise_open_files() {
        Ok(limit) if limit >= needed => eprintln!("[setup] open-files limit {limit}"),
        Ok(limit) => {
            eprintln!(
                "devices bench: the open-files limit is {limit} (the hard limit), {needed} are \
                 needed: raise it (ulimit -Hn, /etc/security/limits.conf) or pass fewer --devices"
            );
            std::process::exit(2);
        }
        Err(message) => {
            eprintln!("devices bench: {message}");
            std::process::exit(2);
        }
    }
    let release = std::path::Path::new(env!("CARGO_BIN_EXE_edgefleet-controller"))
        .parent()
        .expect("target/<profile>")
        .to_path_buf();
    for binary in ["edge-agent", "edgefleet-sandbox-worker"] {
        if !release.join(binary).exists() {
            eprintln!(
                "devices bench: {} is not built: run `cargo build --release -p edge-agent -p \
                 edgefleet-sandbox-worker` first",
                release.join(binary).display()
            );
            std::process::exit(2);
        }
    }
    edgefleet_protocol::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut agent, mut ceiling) = (Vec::new(), Vec::new());
    let result = runtime.block_on(bench(&args, &mut agent, &mut ceiling));
    print!("{}", report(&args, &agent, &ceiling));
    if let Err(message) = result {
        eprintln!("devices bench FAILED: {message}");
        std::process::exit(1);
    }
}
