//! Benchmark of the controller ingesting status from a simulated fleet: the real controller binary
//! in cluster mode (its ServiceAccount's identity, the shipped RBAC) against a real kube-apiserver +
//! etcd (`edgefleet_testenv::ControlPlane`), statuses through the shipped cloud broker (mutual TLS).
//! Prints, per fleet size, the statuses/s the controller took in, the API writes/s it produced
//! (its own counters, cross-checked on the API server's), its CPU and memory, how long a node
//! going offline took to show on its EdgeNode, and how old the EdgeNodes' data got.
//!
//! `cargo bench -p edgefleet-controller --bench ingest -- --nodes 1000,10000` (`--help` for the
//! flags; the default is 10,000 nodes).
//!
//! What is simulated, and why it is enough:
//! - **The nodes**: a few tasks over a few MQTT connections publish every node's retained
//!   `NodeStatus` (QoS 0, as agents do) every `--interval-s`, spread evenly over it: 2 classes with
//!   module counters that move every report; now and then a class error (a new `lastError`) or the
//!   node going offline (its last will; it comes back `--offline-for-s` later as a new agent run).
//!   One connection per node would change what the broker does, not what the controller sees (one
//!   subscription receiving the same messages), so the broker runs the shipped configuration and
//!   ACL plus bench-only users `bench-publisher-<k>` allowed to write every node's status topic.
//! - **The fleet is established**: before the controller starts, every EdgeNode exists with the
//!   status the controller would write for the node's first report (created by the bench with the
//!   controller's field manager), and the broker holds every node's retained status — a controller
//!   (re)started on a running fleet. (A first contact — every node new, each EdgeNode created — is
//!   one significant write per node: `nodes / --writes-per-s` seconds before the fleet shows.)
//! - Nothing is declared (no HandlerModule, no DeviceClass): status ingest only.
//!
//! Measured over `--duration-s` after `--warmup-s` (from the controller's readiness; steady writes
//! start 30 s after it seeds its table from the EdgeNodes): CPU (utime+stime in /proc/<pid>/stat,
//! as cores), VmRSS sampled every second and VmHWM (/proc/<pid>/status), the controller's
//! `edgefleet_controller_statuses_total` and `..._status_writes_total{kind}`, and the API server's
//! `apiserver_request_total{resource="edgenodes"}` by verb. Latencies: from publishing a change to
//! the bench's watch of EdgeNodes seeing it (MQTT, the controller's 1 s tick, the write, the watch).
//! The machine is shared: the table also gives the host's CPU use and steal.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgefleet_controller::ingest::{Presence, edge_node_status};
use edgefleet_controller::resources::{API_VERSION, EdgeNode, EdgeNodeSpec};
use edgefleet_protocol::status::{
    ClassStatus, ErrorReport, LinkState, LinkStatus, ModuleStats, OutboxStatus,
};
use edgefleet_protocol::{ClassId, ModuleRef, NodeId, NodeState, NodeStatus, Sha256Digest};
use edgefleet_simulators::broker::{self, Broker, BrokerOptions, Shipped};
use edgefleet_simulators::pki::{Authority, TlsFiles};
use edgefleet_testenv::ControlPlane;
use edgefleet_testenv::http::{get as http_get, metric};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use rumqttc::QoS;

mod process;
use process::{Controller, children_named, cpu_seconds, now_ms, vm_mib};

const CLOUD_ACL: &str = include_str!("../../brokers/cloud/acl");
const FIELD_MANAGER: &str = "edgefleet-controller";

const USAGE: &str = "\
cargo bench -p edgefleet-controller --bench ingest -- [flags]
  --nodes N[,N...]          fleet sizes, one fresh setup each (default 10000)
  --interval-s S            every node reports every S seconds (default 10)
  --warmup-s S              after the controller is ready, before measuring (default 60)
  --duration-s S            measuring window (default 120)
  --writes-per-s W          the controller's --status-writes-per-s (default 20)
  --connections C           MQTT connections publishing the statuses (default 4)
  --offline-pct-per-min P   % of the nodes going offline per minute (default 1)
  --offline-for-s S         how long an offline node stays away (default 30)
  --error-pct-per-min P     % of the nodes reporting a new class error per minute (default 1)
EDGEFLEET_BENCH_LOGS=1 shows the controller's log (warnings).";

fn usage_error(message: &str) -> ! {
    process::usage_error(USAGE, message)
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    process::number(USAGE, flag, value)
}

#[derive(Debug, Clone)]
struct Args {
    nodes: Vec<usize>,
    interval_s: u64,
    warmup_s: u64,
    duration_s: u64,
    writes_per_s: u32,
    connections: usize,
    offline_pct_per_min: f64,
    offline_for_s: u64,
    error_pct_per_min: f64,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            nodes: vec![10_000],
            interval_s: 10,
            warmup_s: 60,
            duration_s: 120,
            writes_per_s: 20,
            connections: 4,
            offline_pct_per_min: 1.0,
            offline_for_s: 30,
            error_pct_per_min: 1.0,
        };
        for (flag, value) in process::flags(USAGE) {
            match flag.as_str() {
                "--nodes" => {
                    args.nodes = value.split(',').map(|n| number(&flag, n.trim())).collect()
                }
                "--interval-s" => args.interval_s = number(&flag, &value),
                "--warmup-s" => args.warmup_s = number(&flag, &value),
                "--duration-s" => args.duration_s = number(&flag, &value),
                "--writes-per-s" => args.writes_per_s = number(&flag, &value),
                "--connections" => args.connections = number(&flag, &value),
                "--offline-pct-per-min" => args.offline_pct_per_min = number(&flag, &value),
                "--offline-for-s" => args.offline_for_s = number(&flag, &value),
                "--error-pct-per-min" => args.error_pct_per_min = number(&flag, &value),
                _ => usage_error(&format!("unknown flag {flag}")),
            }
        }
        if args.nodes.contains(&0) || args.interval_s == 0 || args.connections == 0 {
            eprintln!("--nodes, --interval-s and --connections must be positive\n{USAGE}");
            std::process::exit(2);
        }
        args
    }

    /// The flags as given (for the reproducing command).
    fn command(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.to_string()).collect();
        format!(
            "cargo bench -p edgefleet-controller --bench ingest -- --nodes {} --interval-s {} \
             --warmup-s {} --duration-s {} --writes-per-s {} --connections {} \
             --offline-pct-per-min {} --offline-for-s {} --error-pct-per-min {}",
            nodes.join(","),
            self.interval_s,
            self.warmup_s,
            self.duration_s,
            self.writes_per_s,
            self.connections,
            self.offline_pct_per_min,
            self.offline_for_s,
            self.error_pct_per_min
        )
    }
}

fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

// ---------------------------------------------------------------------------------------------
// The simulated nodes.

fn module(name: &str, version: &str) -> ModuleRef {
    ModuleRef {
        name: name.into(),
        version: version.into(),
        sha256: Sha256Digest::of(format!("{name} {version}").as_bytes()),
    }
}

fn stats(module: ModuleRef, interactions: u64) -> ModuleStats {
    ModuleStats {
        module,
        interactions,
        errors: 0,
        traps: 0,
        timeouts: 0,
        rejections: 0,
        quarantined: false,
    }
}

fn connected(since_ms: u64) -> LinkStatus {
    LinkStatus {
        state: LinkState::Connected,
        since_ms,
        reconnects: 0,
        last_error: None,
    }
}

/// A node as its agent reports it right after starting at `started_at_ms`: two classes (the
/// thermostat one with the previous version's counters kept), links up, an empty outbox.
fn fresh_status(node: &NodeId, started_at_ms: u64) -> NodeStatus {
    let thermostat = module("thermostat", "1.2.0");
    let meter = module("smart-meter", "2.1.0");
    NodeStatus {
        node: node.clone(),
        state: NodeState::Online,
        protocol_version: edgefleet_protocol::PROTOCOL_VERSION,
        agent_version: "0.1.0".into(),
        wasmedge_version: "0.17.1".into(),
        guest_abi_version: 1,
        started_at_ms,
        updated_at_ms: started_at_ms,
        uplink: connected(started_at_ms),
        device_link: connected(started_at_ms),
        outbox: OutboxStatus {
            depth: 0,
            capacity: 100_000,
            dropped: 0,
            oldest_at_ms: None,
        },
        active_devices: 12,
        seen_devices: 12,
        interactions_per_sec: 2.4,
        classes: vec![
            ClassStatus {
                class: ClassId::new("thermo").unwrap(),
                generation: Some(3),
                shadow: None,
                rollout: None,
                active: Some(thermostat.clone()),
                previous: Some(module("thermostat", "1.1.0")),
                pending: None,
                last_error: None,
                active_devices: 8,
                seen_devices: 8,
                interactions_per_sec: 1.6,
                modules: vec![
                    stats(module("thermostat", "1.1.0"), 0),
                    stats(thermostat, 0),
                ],
            },
            ClassStatus {
                class: ClassId::new("meter").unwrap(),
                generation: Some(1),
                shadow: None,
                rollout: None,
                active: Some(meter.clone()),
                previous: None,
                pending: None,
                last_error: None,
                active_devices: 4,
                seen_devices: 4,
                interactions_per_sec: 0.8,
                modules: vec![stats(meter, 0)],
            },
        ],
    }
}

/// A small deterministic generator (the runs are comparable).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct SimNode {
    status: NodeStatus,
    /// Offline (its last will published) until then; it comes back as a new agent run.
    away_until: Option<Instant>,
    errors: u64,
}

impl SimNode {
    /// The next regular report: counters move, rates and device counts wander a little.
    fn report(&mut self, random: &mut Random, interval_s: u64, now: u64) -> &NodeStatus {
        let status = &mut self.status;
        let mut total = 0.0;
        for class in &mut status.classes {
            let rate = class.active_devices as f64 * (0.15 + 0.1 * random.unit());
            class.interactions_per_sec = (rate * 100.0).round() / 100.0;
            total += class.interactions_per_sec;
            let interactions = (rate * interval_s as f64).round() as u64 + 1;
            if let Some(active) = class.modules.last_mut() {
                active.interactions += interactions;
                if random.next().is_multiple_of(50) {
                    active.rejections += 1;
                    active.errors += 1;
                }
            }
        }
        status.interactions_per_sec = (total * 100.0).round() / 100.0;
        status.active_devices = 11 + (random.next() % 3) as u32;
        status.updated_at_ms = now;
        status
    }
}

/// What the bench watches for: changes published and not yet seen on the EdgeNode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum ChangeKind {
    Offline,
    ClassError,
}

struct Change {
    kind: ChangeKind,
    /// The class error's message, for `ClassError`.
    message: Option<String>,
    sent: Instant,
}

/// The publishers' and the watch's shared state.
#[derive(Default)]
struct Probe {
    published: AtomicU64,
    publish_failures: AtomicU64,
    /// Changes start once the controller runs.
    changes_on: AtomicBool,
    stop: AtomicBool,
    pending: Mutex<HashMap<String, Vec<Change>>>,
    /// (kind, sent, seen after).
    seen: Mutex<Vec<(ChangeKind, Instant, Duration)>>,
    /// EdgeNode name -> (online, lastSeen in ms), as the watch last saw it.
    edge_nodes: Mutex<HashMap<String, (bool, i64)>>,
    /// EdgeNode events seen by the watch.
    events: AtomicU64,
}

impl Probe {
    fn changed(&self, node: &str, kind: ChangeKind, message: Option<String>) {
        self.pending
            .lock()
            .unwrap()
            .entry(node.to_string())
            .or_default()
            .push(Change {
                kind,
                message,
                sent: Instant::now(),
            });
    }

    fn observe(&self, edge_node: &EdgeNode) {
        let seen_at = Instant::now();
        self.events.fetch_add(1, Ordering::Relaxed);
        let Some(name) = edge_node.metadata.name.as_deref() else {
            return;
        };
        let Some(status) = &edge_node.status else {
            return;
        };
        let online = status.state.as_deref() == Some("Online");
        let last_seen = status
            .last_seen
            .as_deref()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map_or(0, |t| t.as_millisecond());
        self.edge_nodes
            .lock()
            .unwrap()
            .insert(name.to_string(), (online, last_seen));
        let mut pending = self.pending.lock().unwrap();
        let Some(changes) = pending.get_mut(name) else {
            return;
        };
        let mut seen = self.seen.lock().unwrap();
        changes.retain(|change| {
            let shows = match change.kind {
                ChangeKind::Offline => status.state.as_deref() == Some("Offline"),
                ChangeKind::ClassError => status
                    .classes
                    .iter()
                    .any(|c| c.last_error.is_some() && c.last_error == change.message),
            };
            if shows {
                seen.push((change.kind, change.sent, seen_at - change.sent));
            }
            !shows
        });
        if changes.is_empty() {
            pending.remove(name);
        }
    }
}

/// One publisher connection: its nodes, each reporting at its offset into every interval.
async fn publish_statuses(
    broker_options: rumqttc::MqttOptions,
    mut nodes: Vec<(Duration, SimNode)>,
    epoch: Instant,
    args: Args,
    probe: Arc<Probe>,
    seed: u64,
) {
    let (client, mut events) = broker::client(broker_options, 10_000);
    let driver = tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let interval = Duration::from_secs(args.interval_s);
    let reports_per_min = 60.0 / args.interval_s as f64;
    let p_offline = args.offline_pct_per_min / 100.0 / reports_per_min;
    let p_error = args.error_pct_per_min / 100.0 / reports_per_min;
    let mut random = Random(seed | 1);
    let mut cycle = 0u32;
    'run: loop {
        for (offset, node) in &mut nodes {
            tokio::time::sleep_until((epoch + interval * cycle + *offset).into()).await;
            if probe.stop.load(Ordering::Relaxed) {
                break 'run;
            }
            let now = now_ms();
            let name = node.status.node.to_string();
            let topic = format!("ef/v1/node/{name}/status");
            let changes = probe.changes_on.load(Ordering::Relaxed);
            let payload = match node.away_until {
                Some(until) if Instant::now() < until => continue,
                Some(_) => {
                    // Back: a new agent run, counters from zero.
                    node.away_until = None;
                    node.status = fresh_status(&node.status.node, now);
                    edgefleet_protocol::codec::encode(&node.status)
                }
                None => {
                    let roll = random.unit();
                    if changes && roll < p_offline {
                        // Gone: its last will, as the broker would publish it.
                        let s = &node.status;
                        let will = NodeStatus::last_will(
                            s.node.clone(),
                            s.agent_version.clone(),
                            s.wasmedge_version.clone(),
                            s.guest_abi_version,
                            s.started_at_ms,
                            s.uplink.since_ms,
                        );
                        node.away_until =
                            Some(Instant::now() + Duration::from_secs(args.offline_for_s));
                        probe.changed(&name, ChangeKind::Offline, None);
                        edgefleet_protocol::codec::encode(&will)
                    } else if changes && roll < p_offline + p_error {
                        node.errors += 1;
                        let message = format!(
                            "interaction failed: trap: unreachable executed (device t-{}, #{})",
                            random.next() % 12,
                            node.errors
                        );
                        let class = (random.next() % 2) as usize;
                        let report = node.report(&mut random, args.interval_s, now);
                        let mut report = report.clone();
                        let target = &mut report.classes[class];
                        target.last_error = Some(ErrorReport {
                            at_ms: now,
                            message: message.clone(),
                        });
                        if let Some(active) = target.modules.last_mut() {
                            active.errors += 1;
                            active.traps += 1;
                        }
                        node.status = report;
                        probe.changed(&name, ChangeKind::ClassError, Some(message));
                        edgefleet_protocol::codec::encode(&node.status)
                    } else {
                        edgefleet_protocol::codec::encode(node.report(
                            &mut random,
                            args.interval_s,
                            now,
                        ))
                    }
                }
            };
            match client.publish(topic, QoS::AtMostOnce, true, payload).await {
                Ok(()) => probe.published.fetch_add(1, Ordering::Relaxed),
                Err(_) => probe.publish_failures.fetch_add(1, Ordering::Relaxed),
            };
        }
        cycle += 1;
    }
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    driver.abort();
}

// ---------------------------------------------------------------------------------------------
// Processes, /proc and metrics.

/// The host's CPU time from /proc/stat: (busy, steal, total) in ticks.
fn host_cpu() -> (f64, f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let get = |i: usize| values.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal (guest time is counted in user).
    let total: f64 = (0..8).map(get).sum();
    let idle = get(3) + get(4);
    (total - idle - get(7), get(7), total)
}

/// A snapshot at the start or the end of the window.
struct Snapshot {
    at: Instant,
    controller_cpu: f64,
    plane_cpu: f64,
    broker_cpu: f64,
    bench_cpu: f64,
    host: (f64, f64, f64),
    published: u64,
    controller: String,
    apiserver: String,
}

struct Pids {
    controller: u32,
    plane: Vec<u32>,
    broker: Vec<u32>,
}

async fn snapshot(pids: &Pids, port: u16, admin: &kube::Client, probe: &Probe) -> Snapshot {
    let sum = |pids: &[u32]| pids.iter().filter_map(|&p| cpu_seconds(p)).sum::<f64>();
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap();
    let apiserver = admin.request_text(request).await.unwrap_or_default();
    Snapshot {
        at: Instant::now(),
        controller_cpu: cpu_seconds(pids.controller).unwrap_or(0.0),
        plane_cpu: sum(&pids.plane),
        broker_cpu: sum(&pids.broker),
        bench_cpu: cpu_seconds(std::process::id()).unwrap_or(0.0),
        host: host_cpu(),
        published: probe.published.load(Ordering::Relaxed),
        controller: http_get(port, "/metrics").1,
        apiserver,
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let index = ((values.len() - 1) as f64 * p).round() as usize;
    values[index]
}

// ---------------------------------------------------------------------------------------------
// One fleet size.

#[derive(Debug, Default, Clone)]
struct Row {
    nodes: usize,
    precreate_s: f64,
    published_per_s: f64,
    statuses_per_s: f64,
    ignored_per_s: f64,
    significant_per_s: f64,
    steady_per_s: f64,
    failures: f64,
    api_writes_per_s: BTreeMap<String, f64>,
    rounds_per_s: f64,
    cpu_cores: f64,
    rss_mean_mib: f64,
    rss_max_mib: f64,
    hwm_mib: f64,
    offline_ms: Vec<f64>,
    offline_missed: usize,
    error_ms: Vec<f64>,
    error_missed: usize,
    /// EdgeNodes online at the end.
    online: usize,
    /// The oldest `lastSeen` among them, in seconds.
    oldest_s: f64,
    plane_cores: f64,
    broker_cores: f64,
    bench_cores: f64,
    host_busy_cores: f64,
    host_steal_cores: f64,
}

fn edge_node_names(nodes: usize) -> Vec<NodeId> {
    (0..nodes)
        .map(|i| NodeId::new(format!("edge-{i:05}")).unwrap())
        .collect()
}

fn kube_client(kubeconfig: &Path, runtime: &tokio::runtime::Runtime) -> kube::Client {
    runtime.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(kubeconfig).expect("the admin kubeconfig"),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("a kube config");
        kube::Client::try_from(config).expect("a kube client")
    })
}

fn measure(args: &Args, nodes: usize, runtime: &tokio::runtime::Runtime) -> Row {
    eprintln!("== {nodes} nodes: starting the control plane");
    let plane =
        ControlPlane::start().expect("the test control plane starts (scripts/setup.sh builds it)");
    plane.apply(repo_path("k3s/crds")).unwrap();
    plane
        .apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: edgefleet\n")
        .unwrap();
    plane.apply(repo_path("k3s/rbac/controller.yaml")).unwrap();
    let kubeconfig = plane
        .service_account_kubeconfig("edgefleet", "edgefleet-controller")
        .unwrap();
    let admin = kube_client(plane.admin_kubeconfig(), runtime);

    // The shipped cloud broker (configuration, ACL, mutual TLS), plus the bench's publishers.
    let authority = Arc::new(Authority::new("bench").unwrap());
    let mut acl = format!(
        "{CLOUD_ACL}\n# Bench only (controller/benches/ingest.rs): load generators writing every \
         simulated node's status.\n"
    );
    for k in 0..args.connections {
        acl.push_str(&format!(
            "user bench-publisher-{k}\ntopic write ef/v1/node/+/status\n"
        ));
    }
    let cloud =
        Broker::with_options(BrokerOptions::shipped(authority.clone(), Shipped::Cloud).acl(acl))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    TlsFiles::write(
        d,
        "controller",
        &authority,
        &authority.client_cert("edgefleet-controller").unwrap(),
    )
    .unwrap();
    edgefleet_protocol::SigningKey::generate()
        .unwrap()
        .save(&d.join("signing-key.pem"))
        .unwrap();

    // The established fleet: every EdgeNode with the status of its node's first report.
    let names = edge_node_names(nodes);
    let started_at = now_ms();
    let sims: Vec<SimNode> = names
        .iter()
        .map(|n| SimNode {
            status: fresh_status(n, started_at),
            away_until: None,
            errors: 0,
        })
        .collect();
    let began = Instant::now();
    runtime.block_on(async {
        let api = Api::<EdgeNode>::all(admin.clone());
        futures::stream::iter(sims.iter())
            .map(|sim| {
                let api = api.clone();
                async move {
                    let name = sim.status.node.as_str();
                    let object = EdgeNode::new(name, EdgeNodeSpec::default());
                    api.create(&PostParams::default(), &object).await?;
                    let status = edge_node_status(&sim.status, Presence::Online, now_ms(), None);
                    let patch = serde_json::json!({
                        "apiVersion": API_VERSION,
                        "kind": "EdgeNode",
                        "status": status,
                    });
                    api.patch_status(
                        name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&patch),
                    )
                    .await?;
                    Ok::<_, kube::Error>(())
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await
            .expect("EdgeNodes created");
    });
    let precreate_s = began.elapsed().as_secs_f64();
    eprintln!(
        "   {nodes} EdgeNodes created with status in {precreate_s:.1} s ({:.0}/s, 2 requests each)",
        nodes as f64 / precreate_s
    );

    let probe = Arc::new(Probe::default());
    let _guard = runtime.enter();

    // The watch: what the API server shows, as a client sees it.
    let watch = runtime.spawn({
        let probe = probe.clone();
        let api = Api::<EdgeNode>::all(admin.clone());
        async move {
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if let Ok(edge_node) = item {
                    probe.observe(&edge_node);
                }
            }
        }
    });

    // The publishers: node i at i/nodes into every interval, on connection i % connections.
    let epoch = Instant::now() + Duration::from_millis(200);
    let interval_ms = args.interval_s * 1000;
    let mut per_connection: Vec<Vec<(Duration, SimNode)>> =
        (0..args.connections).map(|_| Vec::new()).collect();
    for (i, sim) in sims.into_iter().enumerate() {
        let offset = Duration::from_micros(i as u64 * interval_ms * 1000 / nodes as u64);
        per_connection[i % args.connections].push((offset, sim));
    }
    let publishers: Vec<_> = per_connection
        .into_iter()
        .enumerate()
        .map(|(k, nodes)| {
            let options = cloud.mqtt_options(&format!("bench-publisher-{k}")).unwrap();
            runtime.spawn(publish_statuses(
                options,
                nodes,
                epoch,
                args.clone(),
                probe.clone(),
                0x9e37_79b9_7f4a_7c15 ^ ((k as u64 + 1) * 0x1000_0000_01b3),
            ))
        })
        .collect();
    // One whole interval first: the broker holds every node's retained status.
    std::thread::sleep(Duration::from_secs(args.interval_s) + Duration::from_millis(500));
    eprintln!(
        "   publishing: {} statuses so far; starting the controller",
        probe.published.load(Ordering::Relaxed)
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut controller = Controller(
        Command::new(env!("CARGO_BIN_EXE_edgefleet-controller"))
            .arg("run")
            .arg("--data-dir")
            .arg(d.join("controller-data"))
            .args([
                "--cloud-broker",
                &format!("mqtts://127.0.0.1:{}", cloud.port()),
            ])
            .arg("--tls-ca")
            .arg(d.join("controller-ca.crt"))
            .arg("--tls-cert")
            .arg(d.join("controller.crt"))
            .arg("--tls-key")
            .arg(d.join("controller.key"))
            .arg("--signing-key")
            .arg(d.join("signing-key.pem"))
            .args(["--namespace", "edgefleet", "--identity", "bench"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--status-writes-per-s", &args.writes_per_s.to_string()])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("EDGEFLEET_BENCH_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("the controller starts"),
    );
    let started = Instant::now();
    while http_get(port, "/readyz").0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the controller is not ready after 180 s"
        );
        if let Ok(Some(status)) = controller.0.try_wait() {
            panic!("the controller exited: {status} (EDGEFLEET_BENCH_LOGS=1 shows its log)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "   controller ready after {:.1} s; changes on; warming up {} s",
        started.elapsed().as_secs_f64(),
        args.warmup_s
    );
    probe.changes_on.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(args.warmup_s));

    let pids = Pids {
        controller: controller.0.id(),
        plane: [children_named("etcd"), children_named("kube-apiserver")].concat(),
        broker: children_named("mosquitto"),
    };
    let first = runtime.block_on(snapshot(&pids, port, &admin, &probe));
    eprintln!("   measuring {} s", args.duration_s);
    let mut rss = Vec::new();
    let end = first.at + Duration::from_secs(args.duration_s);
    while Instant::now() < end {
        if let Some(mib) = vm_mib(pids.controller, "VmRSS:") {
            rss.push(mib);
        }
        std::thread::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        );
    }
    let last = runtime.block_on(snapshot(&pids, port, &admin, &probe));
    let hwm_mib = vm_mib(pids.controller, "VmHWM:").unwrap_or(f64::NAN);
    let window = (first.at, last.at);

    // Changes made in the window: give the last ones time to show, then count the rest missed.
    probe.changes_on.store(false, Ordering::Relaxed);
    let in_window_pending = |probe: &Probe| {
        probe
            .pending
            .lock()
            .unwrap()
            .values()
            .flatten()
            .filter(|c| c.sent >= window.0 && c.sent <= window.1)
            .map(|c| c.kind)
            .collect::<Vec<_>>()
    };
    let grace = Instant::now() + Duration::from_secs(15);
    while !in_window_pending(&probe).is_empty() && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(200));
    }
    let missed = in_window_pending(&probe);
    let now = now_ms() as i64;
    let ages: Vec<f64> = probe
        .edge_nodes
        .lock()
        .unwrap()
        .values()
        .filter(|(online, _)| *online)
        .map(|(_, seen)| (now - seen) as f64 / 1000.0)
        .collect();
    probe.stop.store(true, Ordering::Relaxed);
    controller.stop();
    runtime.block_on(async {
        for publisher in publishers {
            let _ = tokio::time::timeout(Duration::from_secs(15), publisher).await;
        }
    });
    watch.abort();

    let seconds = last.at.duration_since(first.at).as_secs_f64();
    let per_s = |name: &str, labels: &[&str]| {
        (metric(&last.controller, name, labels) - metric(&first.controller, name, labels)) / seconds
    };
    let mut api_writes_per_s = BTreeMap::new();
    for verb in ["APPLY", "PATCH", "UPDATE", "CREATE"] {
        let labels = [
            r#"resource="edgenodes""#,
            &format!(r#"verb="{verb}""#) as &str,
        ];
        let delta = metric(&last.apiserver, "apiserver_request_total", &labels)
            - metric(&first.apiserver, "apiserver_request_total", &labels);
        if delta > 0.0 {
            api_writes_per_s.insert(verb.to_string(), delta / seconds);
        }
    }
    let seen = probe.seen.lock().unwrap();
    let latencies = |kind: ChangeKind| {
        seen.iter()
            .filter(|(k, sent, _)| *k == kind && *sent >= window.0 && *sent <= window.1)
            .map(|(_, _, after)| after.as_secs_f64() * 1000.0)
            .collect::<Vec<f64>>()
    };
    let host_ticks = last.host.2 - first.host.2;
    let host_cores = |ticks: f64| ticks / host_ticks.max(1.0) * host_total_cores();
    let row = Row {
        nodes,
        precreate_s,
        published_per_s: (last.published - first.published) as f64 / seconds,
        statuses_per_s: per_s("edgefleet_controller_statuses_total", &[]),
        ignored_per_s: per_s(
            "edgefleet_controller_statuses_total",
            &[r#"kind="ignored""#],
        ),
        significant_per_s: per_s(
            "edgefleet_controller_status_writes_total",
            &[r#"kind="significant""#],
        ),
        steady_per_s: per_s(
            "edgefleet_controller_status_writes_total",
            &[r#"kind="steady""#],
        ),
        failures: metric(
            &last.controller,
            "edgefleet_controller_status_write_failures_total",
            &[],
        ) - metric(
            &first.controller,
            "edgefleet_controller_status_write_failures_total",
            &[],
        ),
        api_writes_per_s,
        rounds_per_s: per_s("edgefleet_controller_rounds_total", &[]),
        cpu_cores: (last.controller_cpu - first.controller_cpu) / seconds,
        rss_mean_mib: rss.iter().sum::<f64>() / rss.len().max(1) as f64,
        rss_max_mib: rss.iter().copied().fold(0.0, f64::max),
        hwm_mib,
        offline_ms: latencies(ChangeKind::Offline),
        offline_missed: missed.iter().filter(|k| **k == ChangeKind::Offline).count(),
        error_ms: latencies(ChangeKind::ClassError),
        error_missed: missed
            .iter()
            .filter(|k| **k == ChangeKind::ClassError)
            .count(),
        online: ages.len(),
        oldest_s: ages.iter().copied().fold(f64::NAN, f64::max),
        plane_cores: (last.plane_cpu - first.plane_cpu) / seconds,
        broker_cores: (last.broker_cpu - first.broker_cpu) / seconds,
        bench_cores: (last.bench_cpu - first.bench_cpu) / seconds,
        host_busy_cores: host_cores(last.host.0 - first.host.0),
        host_steal_cores: host_cores(last.host.1 - first.host.1),
    };
    eprintln!(
        "   {:.0} statuses/s in, {:.1} + {:.1} writes/s, {:.2} cores, {:.0} MiB, {} offline changes seen",
        row.statuses_per_s,
        row.significant_per_s,
        row.steady_per_s,
        row.cpu_cores,
        row.rss_max_mib,
        row.offline_ms.len()
    );
    drop(cloud);
    drop(plane);
    row
}

fn host_total_cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

// ---------------------------------------------------------------------------------------------
// The table.

fn ms(values: &[f64], p: f64) -> String {
    let mut values = values.to_vec();
    let v = percentile(&mut values, p);
    if v.is_nan() {
        "-".into()
    } else if v >= 10_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

fn print_table(args: &Args, rows: &[Row]) {
    println!(
        "\n#### Controller ingesting node status (cluster mode, real kube-apiserver + etcd; every \
         node reports every {} s; budget {} writes/s; {} s measured after {} s of warm-up)\n",
        args.interval_s, args.writes_per_s, args.duration_s, args.warmup_s
    );
    println!(
        "| nodes | statuses/s in | API writes/s: significant | steady | API server: writes/s on edgenodes | controller CPU | RSS (max) | offline → EdgeNode p50 | max | every EdgeNode refreshed every |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let api: Vec<String> = r
            .api_writes_per_s
            .iter()
            .map(|(verb, rate)| format!("{rate:.1} {verb}"))
            .collect();
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {} | {:.2} cores | {:.0} MiB | {} | {} | {:.0} s |",
            r.nodes,
            r.statuses_per_s,
            r.significant_per_s,
            r.steady_per_s,
            if api.is_empty() {
                "-".into()
            } else {
                api.join(", ")
            },
            r.cpu_cores,
            r.rss_max_mib,
            ms(&r.offline_ms, 0.5),
            ms(&r.offline_ms, 1.0),
            r.online as f64 / r.steady_per_s,
        );
    }
    if rows.len() > 1 {
        let (a, b) = (&rows[0], &rows[rows.len() - 1]);
        println!(
            "\n{} vs {} nodes: {:.1}× the statuses, {:.1}× the CPU, {:.1}× the RSS, {:.1}× the API writes, {:.2}× the planning rounds",
            b.nodes,
            a.nodes,
            b.statuses_per_s / a.statuses_per_s,
            b.cpu_cores / a.cpu_cores,
            b.rss_max_mib / a.rss_max_mib,
            (b.significant_per_s + b.steady_per_s) / (a.significant_per_s + a.steady_per_s),
            b.rounds_per_s / a.rounds_per_s
        );
    }
    println!(
        "\n| nodes | published/s | ignored/s | planning rounds/s | RSS mean / VmHWM | class error → EdgeNode p50 / max | changes seen (missed) | write failures | kube-apiserver + etcd CPU | mosquitto CPU | bench CPU | host busy (steal) of {:.0} cores | oldest lastSeen | EdgeNodes made before (2 requests each) |",
        host_total_cores()
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.0} / {:.0} MiB | {} / {} | {} ({}) offline, {} ({}) errors | {:.0} | {:.2} cores | {:.2} cores | {:.2} cores | {:.2} ({:.2}) | {:.0} s | {:.0} s |",
            r.nodes,
            r.published_per_s,
            r.ignored_per_s,
            r.rounds_per_s,
            r.rss_mean_mib,
            r.hwm_mib,
            ms(&r.error_ms, 0.5),
            ms(&r.error_ms, 1.0),
            r.offline_ms.len(),
            r.offline_missed,
            r.error_ms.len(),
            r.error_missed,
            r.failures,
            r.plane_cores,
            r.broker_cores,
            r.bench_cores,
            r.host_busy_cores,
            r.host_steal_cores,
            r.oldest_s,
            r.precreate_s,
        );
    }
    println!(
        "\nStatuses through the shipped cloud broker (its configuration and ACL, mutual TLS) from \
         {} bench connections allowed to write every node's status (bench-only ACL users: one \
         connection per node would load the broker, not the controller); QoS 0 retained, as agents \
         publish. Offline = the node's last will; latencies from publishing to a watch of the \
         EdgeNode showing it. Refreshed every: online EdgeNodes / steady writes/s (steady writes go \
         oldest first, round robin); the oldest lastSeen at the end is bounded by it, or by the \
         time since the EdgeNodes were made when that is shorter. CPU: utime+stime from /proc \
         over the window; a planning round follows every batch of statuses.\n\n`{}`",
        args.connections,
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
    let rows: Vec<Row> = args
        .nodes
        .iter()
        .map(|&nodes| measure(&args, nodes, &runtime))
        .collect();
    print_table(&args, &rows);
}
