//! Benchmark of what the fleet page costs the controller's loop: per node status, adding its
//! counters to the rate history (`History::observe`), and once a tick, building the page's view
//! (`page::view`: every node's health, the worst `MAX_NODES` listed, the settled samples), plus
//! what serving it costs (the JSON's size and encoding time). The inputs are the loop's own
//! structures (a `NodeTable` fed real `NodeStatus`es of two classes with two module versions
//! each, 10 % of the nodes failing a class, 2 % offline), so the figures are the loop's.
//!
//! `cargo bench -p edgefleet-controller --bench page -- --nodes 1000,10000 --rounds 20`
//!
//! The last column is the share of one core the page adds at fleet scale: every node reporting
//! every 10 s (nodes / 10 statuses a second) and one view a second.

use std::collections::BTreeMap;
use std::time::Instant;

use edgefleet_controller::history::History;
use edgefleet_controller::ingest::{NodeTable, WritePolicy};
use edgefleet_controller::page;
use edgefleet_protocol::manifest::ModuleRef;
use edgefleet_protocol::status::{ClassStatus, ErrorReport, LinkState, ModuleStats};
use edgefleet_protocol::{ClassId, NodeId, NodeState, NodeStatus, Sha256Digest};

const USAGE: &str = "\
cargo bench -p edgefleet-controller --bench page -- [flags]
  --nodes N[,N...]   fleet sizes (default 1000,10000)
  --rounds R         statuses per node and views built, each measured (default 20)";

/// Node `i`'s status in `round`: counters grow by 100 interactions and 1 error per module.
fn status(i: usize, round: u64, now_ms: u64) -> NodeStatus {
    let mut status = NodeStatus::last_will(
        NodeId::new(format!("edge-{i:05}")).unwrap(),
        "0.1.0",
        "0.17.1",
        1,
        1,
        now_ms,
    );
    status.state = if i % 50 == 7 {
        NodeState::Offline
    } else {
        NodeState::Online
    };
    status.device_link.state = LinkState::Connected;
    status.classes = ["thermo", "meter"]
        .iter()
        .map(|class| ClassStatus {
            class: ClassId::new(*class).unwrap(),
            generation: Some(1),
            rollout: None,
            active: Some(module(class, "2.0.0")),
            previous: Some(module(class, "1.0.0")),
            pending: None,
            last_error: (i % 10 == 3).then(|| ErrorReport {
                at_ms: now_ms,
                message: "interaction failed: trap".into(),
            }),
            active_devices: 20,
            seen_devices: 20,
            interactions_per_sec: 10.0,
            modules: ["1.0.0", "2.0.0"]
                .iter()
                .map(|version| ModuleStats {
                    module: module(class, version),
                    interactions: 100 * round,
                    errors: round,
                    traps: round,
                    timeouts: 0,
                    rejections: 0,
                    quarantined: false,
                })
                .collect(),
            shadow: None,
        })
        .collect();
    status
}

fn module(class: &str, version: &str) -> ModuleRef {
    ModuleRef {
        name: class.into(),
        version: version.into(),
        sha256: Sha256Digest::of(format!("{class} {version}").as_bytes()),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Row {
    nodes: usize,
    observe_ns: f64,
    view_ms: f64,
    json_bytes: usize,
    json_ms: f64,
}

fn measure(nodes: usize, rounds: u64) -> Row {
    let start_ms = 1_800_000_000_000;
    let mut table = NodeTable::new(WritePolicy::default());
    let mut history = History::new(start_ms);
    let mut observe = Vec::new();
    let mut views = Vec::new();
    let mut json = Vec::new();
    let mut json_bytes = 0;
    for round in 0..rounds {
        // Ten seconds a round: every node reports once.
        let now = start_ms + round * 10_000;
        let mut spent = 0.0;
        for i in 0..nodes {
            let status = status(i, round, now);
            let node = status.node.clone();
            table.observe_status(status, now);
            let report = table.report(&node).unwrap();
            let started = Instant::now();
            history.observe(report, now);
            spent += started.elapsed().as_nanos() as f64;
        }
        observe.push(spent / nodes as f64);
        let started = Instant::now();
        let view = page::view(&table, &BTreeMap::new(), &mut history, true, now);
        views.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        let bytes = serde_json::to_vec(&view).unwrap();
        json.push(started.elapsed().as_secs_f64() * 1000.0);
        json_bytes = bytes.len();
        assert_eq!(view.counts.total, nodes);
    }
    Row {
        nodes,
        observe_ns: median(observe),
        view_ms: median(views),
        json_bytes,
        json_ms: median(json),
    }
}

fn main() {
    let mut nodes = vec![1_000, 10_000];
    let mut rounds = 20;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        match flag.as_str() {
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => continue,
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            "--nodes" | "--rounds" => {
                let value = inline.or_else(|| args.next()).unwrap_or_default();
                let parsed = if flag == "--nodes" {
                    value
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<Vec<usize>, _>>()
                        .map(|n| nodes = n)
                        .is_ok()
                } else {
                    value.parse().map(|r| rounds = r).is_ok()
                };
                if !parsed || nodes.contains(&0) || rounds < 2 {
                    eprintln!("{flag}: bad value {value:?}\n{USAGE}");
                    std::process::exit(2);
                }
            }
            _ => {
                eprintln!("unknown flag {arg}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    println!(
        "| nodes | History::observe per status | page::view per tick | view JSON | JSON encode | share of a core (nodes/10 statuses/s + 1 view/s) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in nodes {
        let row = measure(n, rounds);
        let per_s = row.observe_ns * 1e-9 * (row.nodes as f64 / 10.0) + row.view_ms / 1000.0;
        println!(
            "| {} | {:.2} µs | {:.2} ms | {:.0} KiB | {:.2} ms | {:.2} % |",
            row.nodes,
            row.observe_ns / 1000.0,
            row.view_ms,
            row.json_bytes as f64 / 1024.0,
            row.json_ms,
            per_s * 100.0
        );
    }
}
