//! Pre-flight test vectors with real parts: the thermostat's cases (examples/thermostat.yaml) in
//! the real sandbox (worker processes, WasmEdge), admission running them before a module is stored,
//! and a standalone controller with a real agent that never distributes a module whose cases fail.

mod fleet;

use std::time::Duration;

use edgefleet_controller::fleet::Resolution;
use edgefleet_controller::modules::{self, Blobs};
use edgefleet_controller::objects::{Objects, add_documents};
use edgefleet_controller::resources::{HandlerModuleSpec, TestVector};
use edgefleet_controller::vectors::Runner;
use edgefleet_protocol::Sha256Digest;
use edgefleet_sandbox::WorkerCommand;
use fleet::*;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

const EXAMPLE: &str = include_str!("../../examples/thermostat.yaml");

/// The example HandlerModule's spec (its vectors are the thermostat's documented behaviour).
fn example_spec() -> HandlerModuleSpec {
    let mut objects = Objects::default();
    add_documents(&mut objects, EXAMPLE).expect("the example reads as the controller reads it");
    objects
        .modules
        .remove("thermostat-1.0.0")
        .expect("the example declares thermostat-1.0.0")
        .spec
}

fn thermostat() -> Vec<u8> {
    edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
        .expect("the thermostat module builds")
}

/// The thermostat with a custom section added: the same behaviour, another binary (digest).
fn thermostat_rebuilt() -> Vec<u8> {
    edgefleet_device_modules::rebuilt(&thermostat(), "v2")
}

fn runner(artefacts: &std::path::Path) -> Runner {
    Runner::new(
        WorkerCommand::new(workspace_binary("edgefleet-sandbox-worker")),
        artefacts,
    )
}

/// The example's first case ("heats below the dead band") expecting the unit to cool.
fn wrong_vector() -> TestVector {
    let mut vector = example_spec().test_vectors.remove(0);
    vector.expect.commands = vec![json!({"mode": "cool", "setpoint_c": 21})];
    vector
}

const WRONG_DIFFERENCE: &str = r#"case "heats below the dead band": commands: expected [{"mode":"cool","setpoint_c":21}], got [{"mode":"heat","setpoint_c":21.0}]"#;

#[test]
fn the_thermostat_passes_its_vectors_and_a_wrong_expectation_fails_with_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(dir.path());
    let spec = example_spec();
    assert_eq!(spec.test_vectors.len(), 4);
    let report = runner
        .run("thermostat@1.0.0", &thermostat(), &spec.test_vectors)
        .expect("the sandbox runs the vectors");
    assert_eq!(report.failure(), None, "{report:#?}");
    assert_eq!(report.passed(), 4);

    let report = runner
        .run("thermostat@1.0.0", &thermostat(), &[wrong_vector()])
        .unwrap();
    assert_eq!(
        report.failure().unwrap(),
        format!("1 of 1 test vectors failed: {WRONG_DIFFERENCE}")
    );

    // A message the handler refuses, and a module that never returns, fail their case; the
    // others still run.
    let mut refused = spec.test_vectors[0].clone();
    refused.name = "no temperature".into();
    refused.message = json!({"temperature": 19});
    let report = runner
        .run(
            "thermostat@1.0.0",
            &thermostat(),
            &[refused, spec.test_vectors[1].clone()],
        )
        .unwrap();
    let difference = report.cases[0].difference.as_deref().unwrap();
    assert!(
        difference.starts_with("the handler rejected the message"),
        "{difference}"
    );
    assert_eq!(report.cases[1].difference, None);
    let looping = edgefleet_device_modules::hostile_wasm("infinite_loop");
    let report = runner
        .run("infinite_loop", &looping, &spec.test_vectors[..1])
        .unwrap();
    assert_eq!(
        report.cases[0].difference.as_deref(),
        Some("the interaction ran past its time budget of 1000 ms and its worker was killed")
    );
}

#[test]
fn admission_runs_the_vectors_before_a_module_is_stored_and_needs_a_sandbox_only_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(&dir.path().join("data")).unwrap();
    let runner = runner(&dir.path().join("artefacts"));

    let good = example_spec();
    let (ready, summary) = modules::admit(&good, &thermostat(), &blobs, &runner).unwrap();
    assert!(summary.ends_with("; 4 test vectors passed"), "{summary}");
    assert!(blobs.get(&ready.manifest.sha256).is_some());

    // A failing case refuses the module, with the difference; it is not stored.
    let rebuilt = thermostat_rebuilt();
    let mut bad = good.clone();
    bad.version = "1.0.1".into();
    bad.test_vectors.push(wrong_vector());
    let problem = modules::admit(&bad, &rebuilt, &blobs, &runner).unwrap_err();
    assert_eq!(problem.reason, "TestVectorFailed");
    assert_eq!(
        problem.message,
        format!("1 of 5 test vectors failed: {WRONG_DIFFERENCE}")
    );
    assert!(blobs.get(&Sha256Digest::of(&rebuilt)).is_none());
    assert!(matches!(
        modules::refused(problem).0,
        Resolution::Refused(p) if p.reason == "TestVectorFailed"
    ));

    // Without a sandbox, a module with vectors is unavailable (tried again) and says what to
    // install; one without vectors needs none.
    let no_sandbox = Runner::new(
        WorkerCommand::new(dir.path().join("no-such-worker")),
        dir.path().join("artefacts"),
    );
    let problem = modules::admit(&good, &rebuilt, &blobs, &no_sandbox).unwrap_err();
    assert_eq!(problem.reason, "SandboxUnavailable");
    assert!(
        problem.message.contains("no-such-worker")
            && problem.message.contains("--worker-binary")
            && problem.message.contains("4 test vectors"),
        "{}",
        problem.message
    );
    assert!(matches!(
        modules::refused(problem).0,
        Resolution::Unavailable(_)
    ));
    let mut plain = good.clone();
    plain.test_vectors.clear();
    let (_, summary) = modules::admit(&plain, &rebuilt, &blobs, &no_sandbox).unwrap();
    assert!(!summary.contains("test vector"), "{summary}");
}

fn module_object(name: &str, version: &str, file: &str, vectors: &[TestVector]) -> String {
    let object = json!({
        "apiVersion": "edgefleet.dev/v1alpha1",
        "kind": "HandlerModule",
        "metadata": {"name": name},
        "spec": {"module": "thermostat", "version": version, "file": file, "testVectors": vectors},
    });
    serde_json::to_string(&object).unwrap()
}

fn class_object(module: &str) -> String {
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: thermo\n\
         spec:\n  module: {module}\n  config: {{setpoint_c: 21.0, hysteresis_c: 0.5}}\n\
         \x20 nodeSelector:\n    matchLabels: {{site: a}}\n"
    )
}

fn ready_condition(object: &serde_json::Value) -> (String, String, String) {
    let condition = object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    let text = |key: &str| condition[key].as_str().unwrap_or_default().to_string();
    (text("status"), text("reason"), text("message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_module_whose_vectors_fail_never_reaches_a_node_and_says_why() {
    let mut fleet = Fleet::new();
    std::fs::write(fleet.objects_dir().join("thermostat.wasm"), thermostat()).unwrap();
    std::fs::write(
        fleet.objects_dir().join("thermostat-1.0.1.wasm"),
        thermostat_rebuilt(),
    )
    .unwrap();
    let good = example_spec().test_vectors;
    fleet.write_object(
        "module-1.0.0.yaml",
        &module_object("thermostat-1.0.0", "1.0.0", "thermostat.wasm", &good),
    );
    fleet.write_object(
        "nodes.yaml",
        "apiVersion: edgefleet.dev/v1alpha1\nkind: EdgeNode\nmetadata:\n  name: edge-a\n  labels: {site: a}\n",
    );
    fleet.write_object("class.yaml", &class_object("thermostat-1.0.0"));
    fleet.start_standalone_controller();
    fleet.add_node("edge-a");

    // The version whose cases pass is admitted, says so, and reaches the node.
    let module = fleet
        .until_object(
            "handlermodules",
            "thermostat-1.0.0",
            LIMIT,
            "1.0.0 admitted",
            |m| ready_condition(m).1 == "Admitted",
        )
        .await;
    let admission = module["status"]["admission"].as_str().unwrap_or_default();
    assert!(admission.ends_with("; 4 test vectors passed"), "{module:#}");
    fleet
        .until_object("edgenodes", "edge-a", LIMIT, "edge-a runs 1.0.0", |n| {
            n["status"]["classes"][0]["active"] == "thermostat 1.0.0"
        })
        .await;
    fleet
        .until_object("deviceclasses", "thermo", LIMIT, "class updated", |c| {
            c["status"]["updatedNodes"] == 1
        })
        .await;
    let chunks = fleet.controller_metric("edgefleet_controller_chunks_published_total", "");
    let assignments =
        fleet.controller_metric("edgefleet_controller_assignments_published_total", "");
    assert!(chunks > 0.0 && assignments > 0.0);

    // 1.0.1 is another binary whose vectors include a wrong one; the class moves to it.
    let mut bad = good.clone();
    bad.push(wrong_vector());
    fleet.write_object(
        "module-1.0.1.yaml",
        &module_object("thermostat-1.0.1", "1.0.1", "thermostat-1.0.1.wasm", &bad),
    );
    fleet.write_object("class.yaml", &class_object("thermostat-1.0.1"));
    let module = fleet
        .until_object(
            "handlermodules",
            "thermostat-1.0.1",
            LIMIT,
            "1.0.1 refused by its vectors",
            |m| ready_condition(m).1 == "TestVectorFailed",
        )
        .await;
    let (ready, _, message) = ready_condition(&module);
    assert_eq!(ready, "False");
    assert_eq!(
        message,
        format!("1 of 5 test vectors failed: {WRONG_DIFFERENCE}")
    );
    assert!(module["status"]["sha256"].is_null(), "{module:#}");
    // The class is held on what its node runs: a round has planned with the refusal.
    let class = fleet
        .until_object("deviceclasses", "thermo", LIMIT, "class held", |c| {
            let (ready, reason, message) = ready_condition(c);
            ready == "False" && reason == "ModuleRefused" && message.contains(WRONG_DIFFERENCE)
        })
        .await;
    assert_eq!(class["status"]["updatedNodes"], 0, "{class:#}");
    // Nothing was published for 1.0.1: no chunk, no assignment.
    assert_eq!(
        fleet.controller_metric("edgefleet_controller_chunks_published_total", ""),
        chunks
    );
    assert_eq!(
        fleet.controller_metric("edgefleet_controller_assignments_published_total", ""),
        assignments
    );
    // The node still runs 1.0.0, and devices are still served by it.
    let node = fleet
        .until_object("edgenodes", "edge-a", LIMIT, "edge-a reports", |n| {
            n["status"]["state"] == "Online"
        })
        .await;
    assert_eq!(
        node["status"]["classes"][0]["active"], "thermostat 1.0.0",
        "{node:#}"
    );
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
}
