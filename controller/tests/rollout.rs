//! Staged rollouts in standalone mode, with real parts: the controller process, the shipped brokers
//! with their ACLs and mutual TLS, three real agents, devices sending readings the whole time.

mod fleet;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgefleet_device_modules::rebuilt;
use fleet::*;
use rumqttc::QoS;

const LIMIT: Duration = Duration::from_secs(90);
const NODES: [&str; 3] = ["edge-a", "edge-b", "edge-c"];

/// The class on every node; staged: one canary, then waves of 1 and 2.
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
         \x20   canary: {{nodes: 1}}\n\
         \x20   waves: {{base: 1, factor: 2}}\n\
         \x20   gate: {{minInteractions: 5, maxFaultRateIncrease: 0.05, bakeSeconds: 1}}\n\
         \x20   progressDeadlineSeconds: 60\n"
    )
}

/// The thermostat handler module.
fn thermostat() -> Vec<u8> {
    edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
        .expect("the thermostat module builds")
}

/// A standalone controller, three nodes and three versions: thermostat-1 (the thermostat, which
/// the class runs everywhere without a strategy), thermostat-2 (the same as another binary) and
/// thermostat-3 (`third`).
fn fleet_of_three(third: Vec<u8>) -> Fleet {
    let mut fleet = Fleet::new();
    let wasm = thermostat();
    let dir = fleet.objects_dir();
    std::fs::write(dir.join("thermostat-1.wasm"), &wasm).unwrap();
    std::fs::write(dir.join("thermostat-2.wasm"), rebuilt(&wasm, "2")).unwrap();
    std::fs::write(dir.join("thermostat-3.wasm"), third).unwrap();
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
    for node in NODES {
        fleet.add_node(node);
    }
    fleet
}

/// Echoes a message back as a command, but traps on messages longer than 12 bytes (a reading
/// that carries a setpoint).
const TRAPS_ON_SETPOINTS: &str = r#"
(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (import "edgefleet_v1" "message" (func $message (param i32 i32) (result i32)))
  (import "edgefleet_v1" "command" (func $command (param i32 i32)))
  (import "env" "memory" (memory 1))
  (func (export "edgefleet_handle") (result i32)
    (local $len i32)
    (local.set $len (call $message (i32.const 0) (i32.const 65536)))
    (if (i32.gt_u (local.get $len) (i32.const 12)) (then unreachable))
    (call $command (i32.const 0) (local.get $len))
    (i32.const 0)))
"#;

fn reading_with_setpoint(temp_c: f32) -> Vec<u8> {
    let mut buf = [0u8; 64];
    edgefleet_guest::cbor::to_slice(
        &edgefleet_thermostat::Reading {
            temp_c,
            setpoint_c: Some(22.5),
        },
        &mut buf,
    )
    .unwrap()
    .to_vec()
}

/// One device per node sending a reading every 50 ms (every third with a setpoint), counting what
/// it sent and the commands it got.
struct Traffic {
    stop: Arc<AtomicBool>,
    counts: Vec<(String, Arc<AtomicU64>, Arc<AtomicU64>)>,
    /// Commands that were not a thermostat's (another version's outputs reaching a device).
    foreign: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// `phase` names the devices apart from an earlier phase's (whose clients still run).
    async fn start(fleet: &Fleet, phase: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mut counts = Vec::new();
        let mut tasks = Vec::new();
        let foreign = Arc::new(AtomicU64::new(0));
        for node in NODES {
            let id = format!("t-{node}-{phase}");
            let (device, mut commands) = fleet.device(node, "thermo", &id).await;
            // The first answer says the device's subscription and the class are in place.
            until_answered(
                &device,
                &format!("ef/v1/dev/thermo/{id}/up/telemetry"),
                &reading(18.0),
                &mut commands,
                LIMIT,
            )
            .await;
            let (sent, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            counts.push((node.to_string(), sent.clone(), answered.clone()));
            let not_thermostat = foreign.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(command) = commands.recv().await {
                    answered.fetch_add(1, Ordering::SeqCst);
                    let decoded: Result<edgefleet_thermostat::Command, _> =
                        edgefleet_guest::cbor::from_slice(&command.payload);
                    if decoded.is_err() {
                        not_thermostat.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
            let stop = stop.clone();
            let topic = format!("ef/v1/dev/thermo/{id}/up/telemetry");
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let payload = if i % 3 == 2 {
                        reading_with_setpoint(17.0 + (i % 8) as f32)
                    } else {
                        reading(17.0 + (i % 8) as f32)
                    };
                    device
                        .publish(&topic, QoS::AtLeastOnce, false, payload)
                        .await
                        .unwrap();
                    sent.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // Keep the client (and its event loop) until the test ends.
                std::future::pending::<()>().await;
            }));
        }
        Traffic {
            stop,
            counts,
            foreign,
            tasks,
        }
    }

    /// Stops sending and waits until every device got one command per reading (the first
    /// answered reading not counted on either side).
    async fn stop_and_count(self) -> BTreeMap<String, (u64, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        let started = Instant::now();
        loop {
            let counts: BTreeMap<String, (u64, u64)> = self
                .counts
                .iter()
                .map(|(node, sent, answered)| {
                    (
                        node.clone(),
                        (sent.load(Ordering::SeqCst), answered.load(Ordering::SeqCst)),
                    )
                })
                .collect();
            let settled = counts.values().all(|(sent, answered)| answered >= sent);
            if settled || started.elapsed() > Duration::from_secs(20) {
                for task in self.tasks {
                    task.abort();
                }
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn rollout(class: &serde_json::Value) -> &serde_json::Value {
    &class["status"]["rollout"]
}

/// Polls the class until its rollout of `target` is in `phase`, recording every step it showed
/// on the way.
async fn until_phase(fleet: &Fleet, target: &str, phase: &str) -> (serde_json::Value, Vec<String>) {
    let started = Instant::now();
    let mut steps: Vec<String> = Vec::new();
    loop {
        let class = fleet.object("deviceclasses", "thermo");
        let r = rollout(&class);
        if r["targetVersion"] != target {
            assert!(
                started.elapsed() < LIMIT,
                "no rollout of {target}:\n{class:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if let Some(step) = r["step"].as_str()
            && steps.last().map(String::as_str) != Some(step)
        {
            steps.push(step.to_string());
        }
        if r["phase"] == phase {
            return (class, steps);
        }
        assert!(
            started.elapsed() < LIMIT,
            "rollout not {phase} after {LIMIT:?}; steps seen {steps:?}:\n{class:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fleet_on(fleet: &Fleet, version: &str) {
    for node in NODES {
        fleet
            .until_object("edgenodes", node, LIMIT, "node on the version", |n| {
                n["status"]["classes"][0]["active"] == version
            })
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_good_version_goes_through_canary_and_waves_and_a_trapping_one_is_rolled_back() {
    let fleet = fleet_of_three(wat::parse_str(TRAPS_ON_SETPOINTS).unwrap());
    // Without a strategy a version goes to every node at once.
    let (_, steps) = until_phase(&fleet, "thermostat 1.0.0", "Completed").await;
    assert_eq!(steps, vec!["1/1 complete"]);
    fleet_on(&fleet, "thermostat 1.0.0").await;

    // A good v2, under traffic: canary, wave 1, wave 2, completed; nothing lost or handled twice.
    let traffic = Traffic::start(&fleet, "v2").await;
    fleet.write_object("class.yaml", &class_object("thermostat-2", true));
    let (class, steps) = until_phase(&fleet, "thermostat 2.0.0", "Completed").await;
    for step in ["1/3 canary", "2/3 wave 1", "3/3 wave 2", "3/3 complete"] {
        assert!(
            steps.iter().any(|s| s == step),
            "step {step} not seen: {steps:?}"
        );
    }
    let r = rollout(&class);
    assert_eq!(r["targetVersion"], "thermostat 2.0.0", "{class:#}");
    assert_eq!(r["stableVersion"], "thermostat 2.0.0", "{class:#}");
    assert_eq!(r["updatedNodes"], 3, "{class:#}");
    fleet_on(&fleet, "thermostat 2.0.0").await;
    let counts = traffic.stop_and_count().await;
    for (node, (sent, answered)) in &counts {
        assert!(*sent > 20, "{node}: only {sent} readings sent");
        assert_eq!(sent, answered, "{node}: readings sent vs commands received");
    }

    // A v3 that traps on every third reading fails its canary and every node is back on v2.
    let traffic = Traffic::start(&fleet, "v3").await;
    fleet.write_object("class.yaml", &class_object("thermostat-3", true));
    let (class, _) = until_phase(&fleet, "thermostat 3.0.0", "RolledBack").await;
    let r = rollout(&class);
    assert_eq!(r["stableVersion"], "thermostat 2.0.0", "{class:#}");
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains("1/3 canary")
            && (message.contains("fault rate") || message.contains("quarantined")),
        "{message}"
    );
    fleet_on(&fleet, "thermostat 2.0.0").await;
    assert_eq!(
        fleet.controller_metric("edgefleet_controller_rollout_events_total", "RolloutFailed"),
        1.0
    );
    assert_eq!(
        fleet.controller_metric("edgefleet_controller_rollouts", "RolledBack"),
        1.0
    );
    let counts = traffic.stop_and_count().await;
    // The canary's device lost the readings v3 trapped on (module faults are not retried: a
    // poison message must not loop); the others lost nothing.
    for (node, (sent, answered)) in &counts {
        assert!(
            answered <= sent,
            "{node}: {answered} commands for {sent} readings"
        );
    }
    let whole = counts
        .values()
        .filter(|(sent, answered)| sent == answered)
        .count();
    assert!(
        whole >= 2,
        "the nodes outside the canary lost readings: {counts:?}"
    );
    // Every device is answered by v2 again: a thermostat command, not v3's echo.
    for node in NODES {
        let id = format!("t-{node}-after");
        let (device, mut commands) = fleet.device(node, "thermo", &id).await;
        let command = until_answered(
            &device,
            &format!("ef/v1/dev/thermo/{id}/up/telemetry"),
            &reading(18.0),
            &mut commands,
            LIMIT,
        )
        .await;
        let command: edgefleet_thermostat::Command =
            edgefleet_guest::cbor::from_slice(&command.payload).expect("a thermostat command");
        assert_eq!(command.mode, edgefleet_thermostat::Mode::Heat, "{node}");
    }
}

/// The class with a rollout that never passes its canary gate on its own (an hour's bake), and
/// an operator's action in its annotation.
fn held_class_object(module: &str, action: Option<&str>) -> String {
    let annotations = action.map_or(String::new(), |a| {
        format!("  annotations: {{edgefleet.dev/rollout-action: \"{a}\"}}\n")
    });
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: thermo\n{annotations}\
         spec:\n  module: {module}\n  nodeSelector: {{}}\n\
         \x20 rollout:\n\
         \x20   canary: {{nodes: 1}}\n\
         \x20   gate: {{minInteractions: 5, bakeSeconds: 3600}}\n\
         \x20   progressDeadlineSeconds: 7200\n"
    )
}

/// Versions the nodes report active, in node order.
fn versions(fleet: &Fleet) -> Vec<String> {
    NODES
        .iter()
        .map(|n| {
            fleet.object("edgenodes", n)["status"]["classes"][0]["active"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

async fn until_versions(fleet: &Fleet, what: &str, check: impl Fn(&[String]) -> bool) {
    let started = Instant::now();
    loop {
        let now = versions(fleet);
        if check(&now) {
            return;
        }
        assert!(started.elapsed() < LIMIT, "{what}: nodes run {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Applies an action and waits until the controller carried it out, in `phase`.
async fn act(fleet: &Fleet, module: &str, target: &str, action: &str, phase: &str) {
    fleet.write_object("class.yaml", &held_class_object(module, Some(action)));
    let started = Instant::now();
    loop {
        let class = fleet.object("deviceclasses", "thermo");
        let r = rollout(&class);
        if r["lastAction"] == action && r["targetVersion"] == target {
            assert_eq!(r["phase"], phase, "after {action}:\n{class:#}");
            return;
        }
        assert!(
            started.elapsed() < LIMIT,
            "{action} not carried out:\n{class:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_pause_resume_promote_undo_retry_abort_and_supersede_and_offline_nodes_catch_up()
{
    let mut fleet = fleet_of_three(rebuilt(&thermostat(), "3"));
    let on = |version: &'static str| move |v: &[String]| v.iter().all(|x| x == version);
    until_versions(&fleet, "v1 everywhere", on("thermostat 1.0.0")).await;

    // v2 stops at its canary: one node on v2, the others on v1.
    fleet.write_object("class.yaml", &held_class_object("thermostat-2", None));
    let one_on_v2 = |v: &[String]| {
        v.iter().filter(|x| *x == "thermostat 2.0.0").count() == 1
            && v.iter().filter(|x| *x == "thermostat 1.0.0").count() == 2
    };
    until_versions(&fleet, "the canary on v2", one_on_v2).await;

    act(
        &fleet,
        "thermostat-2",
        "thermostat 2.0.0",
        "pause:1",
        "Paused",
    )
    .await;
    act(
        &fleet,
        "thermostat-2",
        "thermostat 2.0.0",
        "resume:2",
        "Progressing",
    )
    .await;
    act(
        &fleet,
        "thermostat-2",
        "thermostat 2.0.0",
        "promote:3",
        "Completed",
    )
    .await;
    until_versions(&fleet, "promoted", on("thermostat 2.0.0")).await;
    act(
        &fleet,
        "thermostat-2",
        "thermostat 2.0.0",
        "undo:4",
        "RolledBack",
    )
    .await;
    until_versions(&fleet, "undone", on("thermostat 1.0.0")).await;
    act(
        &fleet,
        "thermostat-2",
        "thermostat 2.0.0",
        "retry:5",
        "Progressing",
    )
    .await;
    until_versions(&fleet, "retried: the canary again", one_on_v2).await;
    act(
        &fleet,
        "thermostat-2",
        "thermostat 2.0.0",
        "abort:6",
        "RolledBack",
    )
    .await;
    until_versions(&fleet, "aborted", on("thermostat 1.0.0")).await;

    // A node offline through a rollout gets the version once it is back.
    fleet.kill_agent("edge-c");
    fleet
        .until_object("edgenodes", "edge-c", LIMIT, "edge-c offline", |n| {
            n["status"]["state"] == "Offline"
        })
        .await;
    act(
        &fleet,
        "thermostat-2",
        "thermostat 2.0.0",
        "retry:7",
        "Progressing",
    )
    .await;
    act(
        &fleet,
        "thermostat-2",
        "thermostat 2.0.0",
        "promote:8",
        "Completed",
    )
    .await;
    until_versions(&fleet, "the online nodes on v2", |v| {
        v[0] == "thermostat 2.0.0" && v[1] == "thermostat 2.0.0"
    })
    .await;
    fleet.start_agent("edge-c");
    until_versions(&fleet, "edge-c caught up", on("thermostat 2.0.0")).await;

    // A rollout stuck at its canary is superseded by a newer spec at once.
    fleet.write_object("class.yaml", &held_class_object("thermostat-3", None));
    let one_on_v3 = |v: &[String]| {
        v.iter().filter(|x| *x == "thermostat 3.0.0").count() == 1
            && v.iter().filter(|x| *x == "thermostat 2.0.0").count() == 2
    };
    until_versions(&fleet, "v3's canary", one_on_v3).await;
    fleet.write_object("class.yaml", &held_class_object("thermostat-1", None));
    let class = fleet
        .until_object("deviceclasses", "thermo", LIMIT, "v1 supersedes v3", |c| {
            rollout(c)["targetVersion"] == "thermostat 1.0.0"
        })
        .await;
    assert_eq!(
        rollout(&class)["stableVersion"],
        "thermostat 2.0.0",
        "{class:#}"
    );
    until_versions(&fleet, "v1's canary, the rest back on v2", |v| {
        v.iter().filter(|x| *x == "thermostat 1.0.0").count() == 1
            && v.iter().filter(|x| *x == "thermostat 2.0.0").count() == 2
    })
    .await;

    // The canary goes offline, the rollout is aborted: it gets the stable version when back.
    let canary = NODES[versions(&fleet)
        .iter()
        .position(|v| v == "thermostat 1.0.0")
        .unwrap()];
    fleet.kill_agent(canary);
    fleet
        .until_object("edgenodes", canary, LIMIT, "the canary offline", |n| {
            n["status"]["state"] == "Offline"
        })
        .await;
    act(
        &fleet,
        "thermostat-1",
        "thermostat 1.0.0",
        "abort:9",
        "RolledBack",
    )
    .await;
    fleet.start_agent(canary);
    until_versions(
        &fleet,
        "the canary rolled back once back",
        on("thermostat 2.0.0"),
    )
    .await;
}

/// The class with a shadow step before a canary that holds (its gate wants more interactions
/// than the test makes; the shadow step's gate is its own).
fn shadowed_class_object(module: &str) -> String {
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: thermo\n\
         spec:\n  module: {module}\n  config: {{setpoint_c: 21.0, hysteresis_c: 0.5}}\n\
         \x20 nodeSelector: {{}}\n\
         \x20 rollout:\n\
         \x20   shadow: {{minCompared: 20, minAgreement: 1.0}}\n\
         \x20   canary: {{nodes: 1}}\n\
         \x20   gate: {{minInteractions: 1000000, bakeSeconds: 1}}\n\
         \x20   progressDeadlineSeconds: 7200\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shadow_step_agrees_on_an_equal_version_and_stops_one_that_behaves_differently() {
    let fleet = fleet_of_three(edgefleet_device_modules::probe_wasm("echo"));
    until_phase(&fleet, "thermostat 1.0.0", "Completed").await;
    let traffic = Traffic::start(&fleet, "shadow").await;

    // The same behaviour as another binary: full agreement, on to the canary.
    fleet.write_object("class.yaml", &shadowed_class_object("thermostat-2"));
    let class = fleet
        .until_object(
            "deviceclasses",
            "thermo",
            LIMIT,
            "the shadow step passed",
            |c| {
                rollout(c)["targetVersion"] == "thermostat 2.0.0"
                    && rollout(c)["step"]
                        .as_str()
                        .is_some_and(|s| s.ends_with("canary"))
            },
        )
        .await;
    let shadow = rollout(&class)["shadow"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(shadow.starts_with("shadow agreement 100.0%"), "{class:#}");

    // A version that answers otherwise: divergence, with examples, and rolled back before any
    // device saw one of its commands.
    fleet.write_object("class.yaml", &shadowed_class_object("thermostat-3"));
    let (class, steps) = until_phase(&fleet, "thermostat 3.0.0", "RolledBack").await;
    assert!(steps.iter().any(|s| s.ends_with("shadow")), "{steps:?}");
    let r = rollout(&class);
    let shadow = r["shadow"].as_str().unwrap_or_default();
    println!("shadow step of a version that answers otherwise: {shadow}");
    assert!(
        shadow.contains("divergences:") && !shadow.starts_with("shadow agreement 100.0%"),
        "{class:#}"
    );
    assert_eq!(r["stableVersion"], "thermostat 1.0.0", "{class:#}");
    fleet_on(&fleet, "thermostat 1.0.0").await;
    let foreign = traffic.foreign.load(Ordering::SeqCst);
    let counts = traffic.stop_and_count().await;
    assert_eq!(foreign, 0, "devices received another version's commands");
    for (node, (sent, answered)) in &counts {
        assert_eq!(sent, answered, "{node}: readings sent vs commands received");
    }
}
