//! The operator's flow in standalone mode, with real parts: objects in a folder, the controller
//! process, the shipped brokers with their ACLs and mutual TLS, two real agents, devices.

mod fleet;

use std::time::Duration;

use fleet::*;

const LIMIT: Duration = Duration::from_secs(60);

fn module_object(name: &str, version: &str, file: &str, sha256: Option<&str>) -> String {
    let sha = sha256.map_or(String::new(), |s| format!("  sha256: \"{s}\"\n"));
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: HandlerModule\nmetadata:\n  name: {name}\n\
         spec:\n  module: thermostat\n  version: {version}\n  file: {file}\n{sha}"
    )
}

fn class_object(module: &str, site: &str) -> String {
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: thermo\n\
         spec:\n  module: {module}\n  config: {{setpoint_c: 21.0, hysteresis_c: 0.5}}\n\
         \x20 nodeSelector:\n    matchLabels: {{site: {site}}}\n"
    )
}

fn edge_node_object(name: &str, site: &str) -> String {
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: EdgeNode\nmetadata:\n  name: {name}\n  labels: {{site: {site}}}\n"
    )
}

fn class_names(node: &serde_json::Value) -> Vec<String> {
    node["status"]["classes"]
        .as_array()
        .map(|classes| {
            classes
                .iter()
                .filter_map(|c| c["class"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn ready_reason(object: &serde_json::Value) -> String {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            format!(
                "{}/{}",
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_class_reaches_the_nodes_it_selects_and_leaves_those_it_no_longer_selects() {
    let mut fleet = Fleet::new();
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    std::fs::write(fleet.objects_dir().join("thermostat.wasm"), &wasm).unwrap();
    fleet.write_object(
        "modules.yaml",
        &module_object("thermostat-1.0.0", "1.0.0", "thermostat.wasm", None),
    );
    fleet.write_object(
        "nodes.yaml",
        &format!(
            "{}---\n{}",
            edge_node_object("edge-a", "a"),
            edge_node_object("edge-b", "b")
        ),
    );
    fleet.write_object("class.yaml", &class_object("thermostat-1.0.0", "a"));
    fleet.start_standalone_controller();
    fleet.add_node("edge-a");
    fleet.add_node("edge-b");

    fleet
        .until_object(
            "handlermodules",
            "thermostat-1.0.0",
            LIMIT,
            "module admitted",
            |m| ready_reason(m) == "True/Admitted",
        )
        .await;
    let node_a = fleet
        .until_object("edgenodes", "edge-a", LIMIT, "edge-a runs thermo", |n| {
            n["status"]["state"] == "Online"
                && n["status"]["classes"][0]["active"] == "thermostat 1.0.0"
        })
        .await;
    assert_eq!(node_a["status"]["summary"], "thermo=1.0.0", "{node_a:#}");

    // A device on edge-a's broker gets thermostat commands.
    let (device, mut commands) = fleet.device("edge-a", "thermo", "t-1").await;
    let command = until_answered(
        &device,
        "ef/v1/dev/thermo/t-1/up/telemetry",
        &reading(18.0),
        &mut commands,
        LIMIT,
    )
    .await;
    let command: edgefleet_thermostat::Command =
        edgefleet_guest::cbor::from_slice(&command.payload).expect("a thermostat command");
    assert_eq!(command.mode, edgefleet_thermostat::Mode::Heat);
    fleet
        .until_object(
            "edgenodes",
            "edge-a",
            LIMIT,
            "edge-a counts the device",
            |n| n["status"]["activeDevices"] == 1,
        )
        .await;

    // edge-b is not selected: it gets nothing.
    let node_b = fleet
        .until_object("edgenodes", "edge-b", LIMIT, "edge-b reports", |n| {
            n["status"]["state"] == "Online"
        })
        .await;
    assert!(class_names(&node_b).is_empty(), "{node_b:#}");
    let class = fleet
        .until_object("deviceclasses", "thermo", LIMIT, "class ready", |c| {
            ready_reason(c) == "True/AllNodesUpdated"
        })
        .await;
    assert_eq!(class["status"]["selectedNodes"], 1);
    assert_eq!(class["status"]["updatedNodes"], 1);

    // Moving the selector withdraws the class from edge-a and gives it to edge-b.
    fleet.write_object("class.yaml", &class_object("thermostat-1.0.0", "b"));
    fleet
        .until_object(
            "edgenodes",
            "edge-a",
            LIMIT,
            "thermo withdrawn from edge-a",
            |n| n["status"]["state"] == "Online" && class_names(n).is_empty(),
        )
        .await;
    fleet
        .until_object("edgenodes", "edge-b", LIMIT, "thermo on edge-b", |n| {
            n["status"]["classes"][0]["active"] == "thermostat 1.0.0"
        })
        .await;

    // Killing an agent turns its node offline (its last will).
    fleet.kill_agent("edge-b");
    fleet
        .until_object("edgenodes", "edge-b", LIMIT, "edge-b offline", |n| {
            n["status"]["state"] == "Offline"
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tampered_or_refused_module_never_reaches_a_node_and_says_why() {
    let mut fleet = Fleet::new();
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    std::fs::write(fleet.objects_dir().join("thermostat.wasm"), &wasm).unwrap();
    // A module whose digest is pinned but whose file differs (tampered after the pin).
    fleet.write_object(
        "tampered.yaml",
        &module_object(
            "thermostat-tampered",
            "1.0.1",
            "thermostat.wasm",
            Some(&"0".repeat(64)),
        ),
    );
    // A module admission refuses: valid Wasm, but no guest ABI section.
    std::fs::write(
        fleet.objects_dir().join("plain.wasm"),
        wat::parse_str("(module (memory 1) (func (export \"edgefleet_handle\") (param i32 i32) (result i32) i32.const 0))").unwrap(),
    )
    .unwrap();
    fleet.write_object(
        "refused.yaml",
        &module_object("thermostat-refused", "1.0.2", "plain.wasm", None),
    );
    fleet.write_object("nodes.yaml", &edge_node_object("edge-a", "a"));
    fleet.write_object("class.yaml", &class_object("thermostat-tampered", "a"));
    fleet.start_standalone_controller();
    fleet.add_node("edge-a");

    let tampered = fleet
        .until_object(
            "handlermodules",
            "thermostat-tampered",
            LIMIT,
            "tampered refused",
            |m| ready_reason(m) == "False/DigestMismatch",
        )
        .await;
    let message = tampered["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains(&"0".repeat(64)), "{message}");
    fleet
        .until_object(
            "handlermodules",
            "thermostat-refused",
            LIMIT,
            "refused by admission",
            |m| ready_reason(m) == "False/AdmissionRefused",
        )
        .await;
    let class = fleet
        .until_object("deviceclasses", "thermo", LIMIT, "class held", |c| {
            ready_reason(c) == "False/ModuleRefused"
        })
        .await;
    assert_eq!(class["status"]["assignedNodes"], 0, "{class:#}");

    // The node reports, and runs nothing.
    let node = fleet
        .until_object("edgenodes", "edge-a", LIMIT, "edge-a reports", |n| {
            n["status"]["state"] == "Online"
        })
        .await;
    assert!(class_names(&node).is_empty(), "{node:#}");
    assert_eq!(
        fleet.controller_metric("edgefleet_controller_assignments_published_total", ""),
        0.0
    );
    assert_eq!(
        fleet.controller_metric("edgefleet_controller_chunks_published_total", ""),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_controller_publishes_nothing_again() {
    let mut fleet = Fleet::new();
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    std::fs::write(fleet.objects_dir().join("thermostat.wasm"), &wasm).unwrap();
    fleet.write_object(
        "modules.yaml",
        &module_object("thermostat-1.0.0", "1.0.0", "thermostat.wasm", None),
    );
    fleet.write_object("nodes.yaml", &edge_node_object("edge-a", "a"));
    fleet.write_object("class.yaml", &class_object("thermostat-1.0.0", "a"));
    fleet.start_standalone_controller();
    fleet.add_node("edge-a");
    let before = fleet
        .until_object("edgenodes", "edge-a", LIMIT, "edge-a runs thermo", |n| {
            n["status"]["classes"][0]["active"] == "thermostat 1.0.0"
        })
        .await;
    let generation = before["status"]["classes"][0]["generation"].clone();

    fleet.stop_controller();
    fleet.start_standalone_controller();
    // Ready means the retained replay is over and rounds run.
    let started = std::time::Instant::now();
    while fleet.controller_get("/readyz").0 != 200 {
        assert!(
            started.elapsed() < LIMIT,
            "controller not ready after a restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give it rounds to (wrongly) republish, observed through its status and metrics.
    fleet
        .until_object("deviceclasses", "thermo", LIMIT, "class ready again", |c| {
            ready_reason(c) == "True/AllNodesUpdated"
        })
        .await;
    let rounds = fleet.controller_metric("edgefleet_controller_rounds_total", "");
    while fleet.controller_metric("edgefleet_controller_rounds_total", "") < rounds + 3.0 {
        assert!(started.elapsed() < LIMIT, "no rounds after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        fleet.controller_metric("edgefleet_controller_assignments_published_total", ""),
        0.0,
        "a restart republished assignments"
    );
    assert_eq!(
        fleet.controller_metric("edgefleet_controller_chunks_published_total", ""),
        0.0
    );
    let after = fleet.object("edgenodes", "edge-a");
    assert_eq!(after["status"]["classes"][0]["generation"], generation);
}

/// Key rotation as README describes it: agents trust old + new key, the controller switches to the
/// new key and re-signs every assignment, then agents drop the old key and keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_signing_key_re_signs_every_assignment() {
    use edgefleet_protocol::signing::{SigningKey, TrustAnchor};
    let mut fleet = Fleet::new();
    let new_key = SigningKey::generate().unwrap();
    let trust_file = fleet.dir.path().join("trust.pem");
    let bundle = |keys: &[&SigningKey]| {
        let mut trust = TrustAnchor::new();
        for key in keys {
            trust.insert(key.verifying_key());
        }
        trust.to_pem_bundle().unwrap()
    };
    // Step 1: every agent trusts the old and the new key.
    std::fs::write(&trust_file, bundle(&[&fleet.key, &new_key])).unwrap();
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    std::fs::write(fleet.objects_dir().join("thermostat.wasm"), &wasm).unwrap();
    fleet.write_object(
        "modules.yaml",
        &module_object("thermostat-1.0.0", "1.0.0", "thermostat.wasm", None),
    );
    fleet.write_object("nodes.yaml", &edge_node_object("edge-a", "a"));
    fleet.write_object("class.yaml", &class_object("thermostat-1.0.0", "a"));
    fleet.start_standalone_controller();
    fleet.add_node("edge-a");
    let before = fleet
        .until_object("edgenodes", "edge-a", LIMIT, "edge-a runs thermo", |n| {
            n["status"]["classes"][0]["active"] == "thermostat 1.0.0"
        })
        .await;
    let old_generation = before["status"]["classes"][0]["generation"]
        .as_u64()
        .unwrap();

    // Step 2: the controller signs with the new key: the assignment is published again, newer.
    fleet.stop_controller();
    let key_file = fleet.dir.path().join("signing-key.pem");
    std::fs::remove_file(&key_file).unwrap();
    new_key.save(&key_file).unwrap();
    fleet.start_standalone_controller();
    fleet
        .until_object(
            "edgenodes",
            "edge-a",
            LIMIT,
            "re-signed assignment applied",
            |n| {
                n["status"]["classes"][0]["generation"]
                    .as_u64()
                    .is_some_and(|g| g > old_generation)
                    && n["status"]["classes"][0]["active"] == "thermostat 1.0.0"
            },
        )
        .await;
    assert_eq!(
        fleet.controller_metric(
            "edgefleet_controller_assignments_published_total",
            "kind=\"assign\""
        ),
        1.0
    );
    assert_eq!(
        fleet.controller_metric("edgefleet_controller_chunks_published_total", ""),
        0.0,
        "re-signing does not publish the module again"
    );

    // Step 3: agents drop the old key; a restarted agent still runs the class and serves devices.
    std::fs::write(&trust_file, bundle(&[&new_key])).unwrap();
    fleet.kill_agent("edge-a");
    fleet.start_agent("edge-a");
    let (device, mut commands) = fleet.device("edge-a", "thermo", "t-9").await;
    until_answered(
        &device,
        "ef/v1/dev/thermo/t-9/up/telemetry",
        &reading(17.0),
        &mut commands,
        LIMIT,
    )
    .await;
}
