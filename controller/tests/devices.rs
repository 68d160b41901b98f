//! The device simulator and its oracle against the real system: the standalone controller, the
//! shipped brokers with their ACLs and mutual TLS, two real agents running the four handler
//! modules in WasmEdge, and hundreds of simulated devices of the four classes — with bursts, a
//! reconnect storm, flooders, garbage senders and impostors among them. The test fails on any
//! wrong, lost, duplicated or out-of-order answer the oracle finds.

mod fleet;

use std::sync::Arc;
use std::time::Duration;

use edgefleet_device_modules::{Handler, handler_wasm};
use edgefleet_protocol::ClassId;
use edgefleet_simulators::devices::{ClassPlan, Connect, Kind, Misbehaviour, Plan, Simulation};
use edgefleet_simulators::pki;
use fleet::*;
use rumqttc::{MqttOptions, Transport};

const LIMIT: Duration = Duration::from_secs(90);

/// The classes, their modules and configs (the same JSON goes to the DeviceClass and the oracle).
fn classes() -> Vec<(Kind, Handler, &'static str, serde_json::Value)> {
    use serde_json::json;
    vec![
        (
            Kind::Thermostat,
            Handler::Thermostat,
            "thermo",
            json!({"setpoint_c": 21.0, "hysteresis_c": 0.5}),
        ),
        (
            Kind::Meter,
            Handler::Meter,
            "meter",
            json!({"window": 20, "min_samples": 5, "summary_every": 5}),
        ),
        // A short lockout, so that lockouts start and end during the run.
        (
            Kind::Lock,
            Handler::Lock,
            "door",
            json!({"allow": ["card-1", "card-2"], "max_failed_attempts": 3, "lockout_ms": 1500}),
        ),
        (
            Kind::AirQuality,
            Handler::AirQuality,
            "air",
            json!({"window": 3, "co2_limit": 800.0, "pm25_limit": 30.0}),
        ),
    ]
}

/// Devices spread over the nodes' device brokers, with certificates from the test PKI.
fn connect(fleet: &Fleet) -> Arc<Connect> {
    let authority = fleet.authority.clone();
    let ports: Vec<u16> = fleet.nodes.values().map(|n| n.devices.port()).collect();
    Arc::new(move |index, id| {
        let identity = authority
            .client_cert(id.as_str())
            .map_err(|e| e.to_string())?;
        let config = pki::client_config(&authority, &identity).map_err(|e| e.to_string())?;
        let mut options = MqttOptions::new(id.as_str(), "127.0.0.1", ports[index % ports.len()]);
        options.set_transport(Transport::tls_with_config(config.into()));
        Ok(options)
    })
}

fn plan(
    prefix: &str,
    devices: usize,
    configs: &[(Kind, Handler, &str, serde_json::Value)],
) -> Plan {
    Plan {
        classes: configs
            .iter()
            .map(|(kind, _, class, config)| ClassPlan {
                kind: *kind,
                class: ClassId::new(*class).unwrap(),
                config: config.clone(),
                weight: 1,
            })
            .collect(),
        devices,
        prefix: prefix.into(),
        ..Plan::default()
    }
}

/// Two nodes running the four classes; `agent_args` go to both agents.
async fn fleet_with_four_classes(agent_args: &[&str]) -> Fleet {
    let mut fleet = Fleet::new();
    fleet.agent_args = agent_args.iter().map(|a| a.to_string()).collect();
    let mut objects = String::new();
    for (_, handler, class, config) in classes() {
        let file = format!("{}.wasm", handler.name());
        std::fs::write(
            fleet.objects_dir().join(&file),
            handler_wasm(handler).expect("the handler builds"),
        )
        .unwrap();
        objects.push_str(&format!(
            "apiVersion: edgefleet.dev/v1alpha1\nkind: HandlerModule\nmetadata:\n  name: {m}-1\n\
             spec:\n  module: {m}\n  version: 1.0.0\n  file: {file}\n---\n\
             apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: {class}\n\
             spec:\n  module: {m}-1\n  config: {config}\n  nodeSelector:\n    matchLabels: {{site: sim}}\n---\n",
            m = handler.name(),
        ));
    }
    for node in ["edge-a", "edge-b"] {
        objects.push_str(&format!(
            "apiVersion: edgefleet.dev/v1alpha1\nkind: EdgeNode\nmetadata:\n  name: {node}\n  labels: {{site: sim}}\n---\n"
        ));
    }
    fleet.write_object("fleet.yaml", &objects);
    fleet.start_standalone_controller();
    fleet.add_node("edge-a");
    fleet.add_node("edge-b");
    for node in ["edge-a", "edge-b"] {
        fleet
            .until_object(
                "edgenodes",
                node,
                LIMIT,
                "the node runs the four classes",
                |n| {
                    n["status"]["classes"]
                        .as_array()
                        .is_some_and(|c| c.len() == 4 && c.iter().all(|c| c["active"].is_string()))
                },
            )
            .await;
    }
    fleet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_devices_get_every_answer_once_in_order_despite_bad_neighbours() {
    let fleet = fleet_with_four_classes(&[]).await;
    let mut plan = plan("sim", 160, &classes());
    plan.rate_per_s = 2.0;
    plan.burst = Some((5, Duration::from_secs(4)));
    plan.misbehaviour = Misbehaviour {
        flooders: 2,
        flood_rate_per_s: 300.0,
        garbage: 4,
        impostors: 3,
    };
    let simulation = Simulation::start(plan, connect(&fleet)).expect("the plan is valid");
    until_connected(&simulation, 169).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    simulation.reconnect_storm();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let report = simulation.stop().await;
    let mut table = report.table();
    // What the agents did about the traffic, to read beside the oracle's verdict.
    for (name, node) in &fleet.nodes {
        let (_, body) = edgefleet_testenv::http::get(node.http_port, "/metrics");
        for line in body.lines().filter(|l| {
            [
                "shed_messages_total{",
                "host_faults_total{",
                "redeliveries_total ",
                "redelivered_done_total ",
            ]
            .iter()
            .any(|m| l.contains(m))
                && !l.ends_with(" 0")
        }) {
            table.push_str(&format!("{name}: {line}\n"));
        }
    }
    println!("{table}");

    assert!(report.clean(), "the oracle found failures:\n{table}");
    let s = &report.at_end;
    for class in &s.classes {
        assert!(class.sent > 0, "{table}");
        // Every message accounted for: answered as expected, or expected to answer nothing.
        assert_eq!(
            class.answered + class.silent,
            class.sent,
            "{}: {table}",
            class.class
        );
        match class.kind {
            "meter" => assert_eq!(class.answered, 0, "{table}"),
            _ => assert!(class.answered > 0, "{}: {table}", class.class),
        }
    }
    // Every thermostat and lock message is answered (garbage excepted: the handler rejects it).
    let m = &s.misbehaviour;
    assert!(m.garbage_sent > 0 && m.impostor_sent > 0, "{table}");
    assert_eq!(m.impostor_received, 0, "{table}");
    // Flooders are answered within their budget, not beyond.
    assert!(
        m.flood_answered > 0 && m.flood_answered < m.flood_sent / 2,
        "{table}"
    );
    assert!(
        s.disconnects >= 160,
        "the storm reconnected every device: {table}"
    );
    // The agents said why they dropped the flood.
    let shed = agents_metric(
        &fleet,
        "edgefleet_agent_shed_messages_total",
        &["reason=\"over_budget\""],
    );
    assert!(shed > 0.0, "no over-budget shedding counted");
}

/// Waits until `devices` of the simulation are connected.
async fn until_connected(simulation: &Simulation, devices: usize) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while simulation.snapshot().connected < devices {
        assert!(
            tokio::time::Instant::now() < deadline,
            "devices did not connect: {:?}",
            simulation.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one agent's `/metrics` says, summed over the fleet's agents.
fn agents_metric(fleet: &Fleet, name: &str, labels: &[&str]) -> f64 {
    fleet
        .nodes
        .values()
        .map(|n| {
            let (_, body) = edgefleet_testenv::http::get(n.http_port, "/metrics");
            edgefleet_testenv::http::metric(&body, name, labels)
        })
        .sum()
}

/// Bursts far beyond what the agents hold (an intake of 64 messages, so it is pressed at 32): the
/// device link stops reading and the broker keeps the rest, so every message is still answered,
/// once and in order, without a message shed for load or a reconnect for redelivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_far_behind_hold_the_broker_back_and_still_answer_everything_once_in_order() {
    let fleet = fleet_with_four_classes(&["--intake-max-messages", "64", "--workers", "1"]).await;
    let mut plan = plan("load", 160, &classes());
    plan.rate_per_s = 4.0;
    // Within the per-device share (a quarter of the intake: 16), far beyond the intake together.
    plan.burst = Some((8, Duration::from_secs(2)));
    plan.drain = Duration::from_secs(60);
    let simulation = Simulation::start(plan, connect(&fleet)).expect("the plan is valid");
    until_connected(&simulation, 160).await;
    // Until the agents have stopped reading a good number of times.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while agents_metric(&fleet, "edgefleet_agent_device_reads_paused_total", &[]) < 20.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agents never fell behind: {:?}",
            simulation.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = simulation.stop().await;
    let table = report.table();
    println!("{table}");
    assert!(report.clean(), "the oracle found failures:\n{table}");
    for class in &report.at_end.classes {
        assert!(class.sent > 0, "{table}");
        assert_eq!(
            class.answered + class.silent,
            class.sent,
            "{}: {table}",
            class.class
        );
    }
    for reason in ["full", "held", "backlog", "over_budget"] {
        let label = format!("reason=\"{reason}\"");
        let shed = agents_metric(&fleet, "edgefleet_agent_shed_messages_total", &[&label]);
        assert_eq!(shed, 0.0, "messages shed as {reason}: {table}");
    }
    let redeliveries = agents_metric(&fleet, "edgefleet_agent_redeliveries_total", &[]);
    assert_eq!(redeliveries, 0.0, "reconnects for redelivery: {table}");
    let dropped = agents_metric(&fleet, "edgefleet_agent_commands_dropped_total", &[]);
    assert_eq!(dropped, 0.0, "commands dropped: {table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_oracle_catches_answers_that_differ_from_the_handler() {
    let fleet = fleet_with_four_classes(&[]).await;
    // The oracle is told the thermostat's setpoint is 25 °C; the class says 21 °C.
    let mut configs = classes();
    configs.truncate(1);
    configs[0].3 = serde_json::json!({"setpoint_c": 25.0, "hysteresis_c": 0.5});
    let mut plan = plan("liar", 10, &configs);
    plan.rate_per_s = 4.0;
    let simulation = Simulation::start(plan, connect(&fleet)).unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while simulation.snapshot().classes[0].wrong == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no wrong answer seen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = simulation.stop().await;
    assert!(!report.clean(), "{}", report.table());
    let example = &report.at_end.classes[0].examples[0];
    assert_eq!(example.kind, "wrong");
    assert!(
        example.detail.contains("at 25.0 °C") && example.detail.contains("at 21.0 °C"),
        "{example:?}"
    );
}
