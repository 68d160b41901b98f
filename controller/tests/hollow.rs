//! The controller with 200 hollow nodes (`edgefleet_simulators::nodes`): the real controller
//! process in standalone mode, the shipped cloud broker with its ACL and mutual TLS, and 200 node
//! identities that verify the signed assignments and module chunks the controller publishes and
//! report what they run — a first version everywhere, a staged rollout, a failing version rolled
//! back at its canary, nodes going offline and coming back.

mod fleet;

use std::time::{Duration, Instant};

use edgefleet_device_modules::rebuilt;
use edgefleet_protocol::{RolloutStage, TrustAnchor};
use edgefleet_simulators::nodes::{self, FleetOptions, NodeView};
use fleet::*;

const NODES: usize = 200;
const LIMIT: Duration = Duration::from_secs(120);
const CANARY: usize = 10;
/// Nodes taken offline and brought back.
const AWAY: usize = 20;

/// The class on every node; staged: 10 canaries, then waves of 50, 100, …
fn class_object(module: &str, staged: bool) -> String {
    let class = format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: thermo\n\
         spec:\n  module: {module}\n  config: {{setpoint_c: 21.0, hysteresis_c: 0.5}}\n\
         \x20 nodeSelector: {{}}\n"
    );
    if !staged {
        return class;
    }
    format!(
        "{class}\
         \x20 rollout:\n\
         \x20   canary: {{nodes: {CANARY}}}\n\
         \x20   waves: {{base: 50, factor: 2}}\n\
         \x20   gate: {{minInteractions: 100, maxFaultRateIncrease: 0.01, bakeSeconds: 1}}\n\
         \x20   progressDeadlineSeconds: 120\n"
    )
}

/// The class's rollout status once `done` holds for it; the steps it showed on the way.
async fn until_rollout(
    fleet: &Fleet,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, Vec<String>) {
    let started = Instant::now();
    let mut steps: Vec<String> = Vec::new();
    loop {
        let class = fleet.object("deviceclasses", "thermo");
        let r = &class["status"]["rollout"];
        if let Some(step) = r["step"].as_str()
            && steps.last().map(String::as_str) != Some(step)
        {
            steps.push(step.to_string());
        }
        if done(r) {
            return (r.clone(), steps);
        }
        assert!(
            started.elapsed() < LIMIT,
            "{what}: not after {LIMIT:?}; steps {steps:?}:\n{class:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every hollow node runs `version` of thermo.
async fn until_hollow_on(hollow: &nodes::Fleet, version: &str) {
    let started = Instant::now();
    loop {
        let versions = hollow.versions();
        if versions.len() == 1
            && versions[0].module.version == version
            && versions[0].nodes == NODES
        {
            return;
        }
        assert!(
            started.elapsed() < LIMIT,
            "not every hollow node on {version} after {LIMIT:?}: {versions:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The EdgeNodes the standalone API lists: how many online, offline, and with a version active.
#[derive(Debug, Clone, Copy)]
struct EdgeNodeCounts {
    online: usize,
    offline: usize,
    on_version: usize,
}

fn edge_nodes(fleet: &Fleet, version: &str) -> EdgeNodeCounts {
    let (_, body) = fleet.controller_get("/api/v1alpha1/edgenodes");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let state = |s: &str| items.iter().filter(|n| n["status"]["state"] == s).count();
    EdgeNodeCounts {
        online: state("Online"),
        offline: state("Offline"),
        on_version: items
            .iter()
            .filter(|n| n["status"]["classes"][0]["active"] == version)
            .count(),
    }
}

/// Waits until the EdgeNodes' counts (with `version` active) satisfy `check`.
async fn until_edge_nodes(
    fleet: &Fleet,
    what: &str,
    check: impl Fn(EdgeNodeCounts) -> bool,
    version: &str,
) {
    let started = Instant::now();
    loop {
        let seen = edge_nodes(fleet, version);
        if check(seen) {
            return;
        }
        assert!(
            started.elapsed() < LIMIT,
            "{what}: EdgeNodes after {LIMIT:?} (on_version: {version}): {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The latest assignment each node took of `version`.
fn assignments_of<'a>(views: &'a [NodeView], version: &str) -> Vec<&'a nodes::Assigned> {
    views
        .iter()
        .filter_map(|v| {
            v.assignments
                .iter()
                .rev()
                .find(|a| a.module.as_ref().is_some_and(|m| m.version == version))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_hollow_nodes_take_a_version_a_staged_rollout_a_rollback_and_go_offline() {
    let mut fleet = Fleet::new();
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    let dir = fleet.objects_dir();
    std::fs::write(dir.join("thermostat-1.wasm"), &wasm).unwrap();
    std::fs::write(dir.join("thermostat-2.wasm"), rebuilt(&wasm, "2")).unwrap();
    std::fs::write(dir.join("thermostat-3.wasm"), rebuilt(&wasm, "3")).unwrap();
    fleet.write_object(
        "modules.yaml",
        &[
            module_object("thermostat-1", "1.0.0", "thermostat-1.wasm"),
            module_object("thermostat-2", "2.0.0", "thermostat-2.wasm"),
            module_object("thermostat-3", "3.0.0", "thermostat-3.wasm"),
        ]
        .join("---\n"),
    );
    fleet.write_object("class.yaml", &class_object("thermostat-1", false));
    fleet.start_standalone_controller();

    let trust: TrustAnchor = [fleet.key.verifying_key()].into_iter().collect();
    let mut options = FleetOptions::for_broker(&fleet.cloud, trust, NODES).unwrap();
    options.interval = Duration::from_secs(1);
    options.interactions_per_status = 20;
    let hollow = nodes::Fleet::start(options)
        .await
        .expect("the hollow nodes start");

    // v1 everywhere: each node verified its assignment and the module's chunks, and reports v1;
    // the controller's class and EdgeNodes show every one of them.
    until_hollow_on(&hollow, "1.0.0").await;
    let (r, _) = until_rollout(&fleet, "every node healthy on v1", |r| {
        r["targetVersion"] == "thermostat 1.0.0"
            && r["phase"] == "Completed"
            && r["healthyNodes"] == NODES
    })
    .await;
    assert_eq!(r["updatedNodes"], NODES, "{r:#}");
    until_edge_nodes(
        &fleet,
        "every node online on v1",
        |n| n.online == NODES && n.on_version == NODES,
        "thermostat 1.0.0",
    )
    .await;
    let totals = hollow.totals();
    let chunks = wasm.len().div_ceil(64 * 1024) as u64;
    assert_eq!(totals.modules_verified, NODES as u64, "{totals:?}");
    assert_eq!(totals.chunks_verified, NODES as u64 * chunks, "{totals:?}");
    assert_eq!(
        totals.modules_held, 1,
        "one copy of v1 for all nodes: {totals:?}"
    );
    assert_eq!(
        totals.refused_signature + totals.refused_invalid + totals.refused_stale,
        0,
        "{totals:?}"
    );
    assert_eq!(totals.chunks_refused, 0, "{totals:?}");
    let views = hollow.observe();
    let v1 = assignments_of(&views, "1.0.0");
    assert_eq!(v1.len(), NODES);
    for a in &v1 {
        let (active, reported) = (a.active_at_ms.unwrap(), a.reported_at_ms.unwrap());
        assert!(a.received_at_ms <= active && active <= reported, "{a:?}");
    }

    // A staged rollout of v2: canary, waves, completed; every node reports v2, each node's
    // assignment names its step.
    fleet.write_object("class.yaml", &class_object("thermostat-2", true));
    let (r, steps) = until_rollout(&fleet, "v2 completed", |r| {
        r["targetVersion"] == "thermostat 2.0.0" && r["phase"] == "Completed"
    })
    .await;
    for step in ["1/4 canary", "2/4 wave 1", "3/4 wave 2", "4/4 wave 3"] {
        assert!(
            steps.iter().any(|s| s == step),
            "step {step} not seen: {steps:?}"
        );
    }
    assert_eq!(r["stableVersion"], "thermostat 2.0.0", "{r:#}");
    until_hollow_on(&hollow, "2.0.0").await;
    let views = hollow.observe();
    let v2 = assignments_of(&views, "2.0.0");
    assert_eq!(v2.len(), NODES);
    let canaries = v2
        .iter()
        .filter(|a| {
            a.rollout
                .as_ref()
                .is_some_and(|r| r.stage == RolloutStage::Canary)
        })
        .count();
    assert_eq!(canaries, CANARY);

    // v3 fails on every node that runs it: its canaries quarantine it and fall back, the gate
    // fails, and the controller rolls every node back to v2.
    hollow.fail_version(Some("thermostat@3.0.0".parse().unwrap()));
    fleet.write_object("class.yaml", &class_object("thermostat-3", true));
    let (r, _) = until_rollout(&fleet, "v3 rolled back", |r| {
        r["targetVersion"] == "thermostat 3.0.0" && r["phase"] == "RolledBack"
    })
    .await;
    let message = r["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("canary") && message.contains("quarantined"),
        "{r:#}"
    );
    assert_eq!(r["stableVersion"], "thermostat 2.0.0", "{r:#}");
    until_hollow_on(&hollow, "2.0.0").await;
    // A quarantine fails the step at once: the canaries that had not reported v3 yet when the
    // first ones did never quarantined it.
    let totals = hollow.totals();
    assert!(
        (1..=CANARY as u64).contains(&totals.quarantines),
        "between 1 and {CANARY} canaries quarantine v3: {totals:?}"
    );
    let views = hollow.observe();
    let tried_v3 = assignments_of(&views, "3.0.0");
    assert_eq!(tried_v3.len(), CANARY, "v3 went beyond its canary");
    for a in &tried_v3 {
        assert!(
            a.rollout
                .as_ref()
                .is_some_and(|r| r.stage == RolloutStage::Canary),
            "v3 assigned outside its canary step: {a:?}"
        );
    }
    for view in views.iter().filter(|v| {
        v.assignments
            .iter()
            .any(|a| a.module.as_ref().is_some_and(|m| m.version == "3.0.0"))
    }) {
        let last = view.assignments.last().unwrap();
        assert!(
            last.rollout
                .as_ref()
                .is_some_and(|r| r.stage == RolloutStage::Rollback)
                && last.module.as_ref().is_some_and(|m| m.version == "2.0.0"),
            "{}: the canary's last assignment is not v2 by a rollback: {last:?}",
            view.node
        );
    }
    assert_eq!(
        fleet.controller_metric("edgefleet_controller_rollout_events_total", "RolloutFailed"),
        1.0
    );

    // Every event the nodes published reached the controller (AssignmentApplied per node and
    // version, the canaries' quarantines and fallbacks).
    let events = hollow.totals().events as f64;
    let started = Instant::now();
    while fleet.controller_metric("edgefleet_controller_node_events_total", "") < events {
        assert!(
            started.elapsed() < LIMIT,
            "the controller received {} of {events} node events",
            fleet.controller_metric("edgefleet_controller_node_events_total", "")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // AWAY nodes go offline (their last will) and show offline; back, they show online again.
    let away = hollow.spread(AWAY);
    hollow.set_online(&away, false).unwrap();
    until_edge_nodes(
        &fleet,
        "nodes offline",
        |n| n.online == NODES - AWAY && n.offline == AWAY,
        "thermostat 2.0.0",
    )
    .await;
    for node in &away {
        let n = fleet.object("edgenodes", node.as_str());
        assert_eq!(n["status"]["state"], "Offline", "{n:#}");
    }
    hollow.set_online(&away, true).unwrap();
    until_edge_nodes(
        &fleet,
        "back online",
        |n| n.online == NODES && n.on_version == NODES,
        "thermostat 2.0.0",
    )
    .await;
    hollow.stop().await;
}
