//! The operator's flow in cluster mode against a real kube-apiserver (RBAC on; the controller runs
//! with its ServiceAccount's credentials only), a real OCI registry, the shipped brokers, real
//! agents and devices.

mod fleet;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgefleet_testenv::ControlPlane;
use edgefleet_testenv::registry::Registry;
use fleet::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn kubectl(plane: &ControlPlane, args: &[&str]) -> Result<String, edgefleet_testenv::TestenvError> {
    let mut command = plane.kubectl();
    command.args(args);
    edgefleet_testenv::run_kubectl(command)
}

fn get_json(plane: &ControlPlane, kind: &str, name: &str) -> Value {
    kubectl(plane, &["get", kind, name, "-o", "json"])
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

async fn until_json(
    plane: &ControlPlane,
    kind: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let object = get_json(plane, kind, name);
        if check(&object) {
            return object;
        }
        assert!(
            started.elapsed() < LIMIT,
            "{what}: {kind}/{name} after {LIMIT:?}:\n{object:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn condition(object: &Value, type_: &str) -> String {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .map(|c| {
            format!(
                "{}/{}",
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default()
}

fn class_names(node: &Value) -> Vec<String> {
    node["status"]["classes"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["class"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Pushes a module to the registry; the reference pinned by digest.
async fn push(registry: &Registry, repository: &str, wasm: &[u8]) -> String {
    let client = edgefleet_controller::oci::Registry::with_options(
        edgefleet_controller::oci::RegistryOptions {
            extra_ca_pem: Some(registry.ca_pem().as_bytes().to_vec()),
            ..Default::default()
        },
    )
    .unwrap();
    client
        .push(
            &format!("{}/{repository}:1.0.0", registry.host_port()),
            wasm,
            &BTreeMap::new(),
        )
        .await
        .unwrap()
        .pinned
}

fn handler_module(name: &str, version: &str, image: &str) -> String {
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: HandlerModule\nmetadata:\n  name: {name}\n\
         spec:\n  module: thermostat\n  version: {version}\n  image: {image}\n"
    )
}

fn device_class(module: &str, site: &str) -> String {
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: thermo\n\
         spec:\n  module: {module}\n  config: {{setpoint_c: 21.0}}\n\
         \x20 nodeSelector:\n    matchLabels: {{site: {site}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_apply_refuses_nonsense() {
    let (plane, _) = controller_plane();
    let digest = "a".repeat(64);
    let refused = |yaml: &str, expect: &str| {
        let error = plane.apply_yaml(yaml).expect_err(yaml).to_string();
        assert!(error.contains(expect), "{yaml}\n→ {error}");
    };
    refused(
        &handler_module("t-1", "1.0.0", "registry.local/thermostat:1.0.0"),
        "spec.image",
    );
    refused(
        &handler_module("t-2", "one", &format!("registry.local/t@sha256:{digest}")),
        "spec.version",
    );
    refused(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: HandlerModule\nmetadata: {name: t-3}\n\
         spec: {module: thermostat, version: 1.0.0}\n",
        "exactly one of image",
    );
    refused(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata: {name: c}\n\
         spec: {module: m, limits: {timeBudgetMs: 0}}\n",
        "timeBudgetMs",
    );
    // Rollout strategies no rollout could complete.
    let strategy = |rollout: &str| {
        format!(
            "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata: {{name: c}}\n\
             spec: {{module: m, rollout: {rollout}}}\n"
        )
    };
    refused(
        &strategy("{gate: {bakeSeconds: 600}, progressDeadlineSeconds: 60}"),
        "progressDeadlineSeconds must be longer",
    );
    refused(&strategy("{waves: {factor: 0.5}}"), "factor");
    refused(
        &strategy("{canary: {nodes: 1, percent: 10}}"),
        "exactly one of nodes and percent",
    );
    refused(&strategy("{canary: {percent: 150}}"), "percent");
    refused(
        &strategy("{gate: {maxFaultRateIncrease: 2}}"),
        "maxFaultRateIncrease",
    );
    // A module version is immutable.
    plane
        .apply_yaml(&handler_module(
            "t-4",
            "1.0.0",
            &format!("r.local/t@sha256:{digest}"),
        ))
        .unwrap();
    refused(
        &handler_module("t-4", "1.0.1", &format!("r.local/t@sha256:{digest}")),
        "immutable",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operators_flow_on_a_real_api_server() {
    let (plane, kubeconfig) = controller_plane();
    let registry = Registry::start().unwrap();
    let registry_ca = plane.dir().join("registry-ca.crt");
    std::fs::write(&registry_ca, registry.ca_pem()).unwrap();
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    let image = push(&registry, "edgefleet/thermostat", &wasm).await;

    // Kubernetes Nodes (no kubelet runs: created by hand), the site label on the Node.
    plane
        .apply_yaml(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: edge-a\n  labels: {site: a}\n---\n\
             apiVersion: v1\nkind: Node\nmetadata:\n  name: edge-b\n",
        )
        .unwrap();
    plane
        .apply_yaml(&handler_module("thermostat-1.0.0", "1.0.0", &image))
        .unwrap();
    plane
        .apply_yaml(&device_class("thermostat-1.0.0", "a"))
        .unwrap();

    let mut fleet = Fleet::new();
    let mut replica_1 = fleet.start_cluster_controller(&kubeconfig, "replica-1", &registry_ca);
    let port_1 = replica_1.port;
    fleet.add_node("edge-a");
    fleet.add_node("edge-b");

    until_json(
        &plane,
        "handlermodule",
        "thermostat-1.0.0",
        "module ready",
        |m| condition(m, "Ready") == "True/Admitted",
    )
    .await;
    let node_a = until_json(&plane, "edgenode", "edge-a", "edge-a runs thermo", |n| {
        n["status"]["state"] == "Online" && n["status"]["summary"] == "thermo=1.0.0"
    })
    .await;
    assert_eq!(
        node_a["metadata"]["ownerReferences"][0]["kind"], "Node",
        "{node_a:#}"
    );

    let (device, mut commands) = fleet.device("edge-a", "thermo", "t-1").await;
    until_answered(
        &device,
        "ef/v1/dev/thermo/t-1/up/telemetry",
        &reading(18.0),
        &mut commands,
        LIMIT,
    )
    .await;
    until_json(
        &plane,
        "edgenode",
        "edge-a",
        "edge-a counts the device",
        |n| n["status"]["activeDevices"] == 1,
    )
    .await;
    let node_b = until_json(&plane, "edgenode", "edge-b", "edge-b reports", |n| {
        n["status"]["state"] == "Online"
    })
    .await;
    assert!(class_names(&node_b).is_empty(), "{node_b:#}");
    until_json(
        &plane,
        "deviceclasses.edgefleet.dev",
        "thermo",
        "class ready",
        |c| condition(c, "Ready") == "True/AllNodesUpdated",
    )
    .await;

    // The fleet at a glance, as an operator sees it.
    let table = kubectl(&plane, &["get", "edgenodes"]).unwrap();
    println!("$ kubectl get edgenodes\n{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("edge-a"))
        .unwrap_or_default();
    assert!(
        row.contains("Online") && row.contains("thermo=1.0.0"),
        "{table}"
    );
    for kind in ["dc", "hm"] {
        println!(
            "$ kubectl get {kind}\n{}",
            kubectl(&plane, &["get", kind]).unwrap()
        );
    }
    let all = kubectl(&plane, &["get", "edgefleet"]).unwrap();
    println!("$ kubectl get edgefleet\n{all}");
    assert!(all.contains("deviceclass.edgefleet.dev/thermo"), "{all}");

    // Fail over: a second replica stands by; the first one stops; the second takes over and
    // publishes nothing again.
    let mut replica_2 = fleet.start_cluster_controller(&kubeconfig, "replica-2", &registry_ca);
    let port_2 = replica_2.port;
    let started = Instant::now();
    while http_get(port_2, "/readyz").0 != 200 {
        assert!(started.elapsed() < LIMIT, "replica-2 not ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        metric(
            &http_get(port_2, "/metrics").1,
            "edgefleet_controller_leader",
            ""
        ),
        0.0
    );
    let published_by_1 = metric(
        &http_get(port_1, "/metrics").1,
        "edgefleet_controller_assignments_published_total",
        "",
    );
    assert_eq!(published_by_1, 1.0, "replica-1 published one assignment");
    replica_1.stop();
    let started = Instant::now();
    while metric(
        &http_get(port_2, "/metrics").1,
        "edgefleet_controller_rounds_total",
        "",
    ) < 3.0
    {
        assert!(started.elapsed() < LIMIT, "replica-2 did not take over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics_2 = http_get(port_2, "/metrics").1;
    assert_eq!(metric(&metrics_2, "edgefleet_controller_leader", ""), 1.0);
    assert_eq!(
        metric(
            &metrics_2,
            "edgefleet_controller_assignments_published_total",
            ""
        ),
        0.0,
        "the new leader republished"
    );
    assert_eq!(
        metric(
            &metrics_2,
            "edgefleet_controller_chunks_published_total",
            ""
        ),
        0.0
    );

    // Changing the selector withdraws the class.
    kubectl(
        &plane,
        &[
            "patch",
            "deviceclasses.edgefleet.dev",
            "thermo",
            "--type=merge",
            "-p",
            r#"{"spec":{"nodeSelector":{"matchLabels":{"site":"b"}}}}"#,
        ],
    )
    .unwrap();
    until_json(
        &plane,
        "edgenode",
        "edge-a",
        "thermo withdrawn from edge-a",
        |n| n["status"]["state"] == "Online" && class_names(n).is_empty(),
    )
    .await;
    // edge-b's Node has no site label; an EdgeNode label selects it.
    kubectl(&plane, &["label", "edgenode", "edge-b", "site=b"]).unwrap();
    until_json(&plane, "edgenode", "edge-b", "thermo on edge-b", |n| {
        n["status"]["summary"] == "thermo=1.0.0"
    })
    .await;

    // Killing an agent turns its EdgeNode offline.
    fleet.kill_agent("edge-b");
    until_json(&plane, "edgenode", "edge-b", "edge-b offline", |n| {
        n["status"]["state"] == "Offline"
    })
    .await;
    replica_2.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tampered_registry_blob_never_reaches_a_node() {
    let (plane, kubeconfig) = controller_plane();
    let registry = Registry::start().unwrap();
    let registry_ca = plane.dir().join("registry-ca.crt");
    std::fs::write(&registry_ca, registry.ca_pem()).unwrap();
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    let image = push(&registry, "edgefleet/thermostat", &wasm).await;
    let layer = format!("sha256:{}", edgefleet_protocol::Sha256Digest::of(&wasm));
    let blob = registry.blob_path(&layer).expect("the layer's blob file");
    let mut tampered = std::fs::read(&blob).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    std::fs::write(&blob, tampered).unwrap();

    plane
        .apply_yaml(&handler_module("thermostat-1.0.0", "1.0.0", &image))
        .unwrap();
    plane
        .apply_yaml(
            "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: thermo\n\
             spec:\n  module: thermostat-1.0.0\n  nodeSelector: {}\n",
        )
        .unwrap();
    let mut fleet = Fleet::new();
    let mut replica = fleet.start_cluster_controller(&kubeconfig, "replica-1", &registry_ca);
    let port = replica.port;
    fleet.add_node("edge-a");

    let module = until_json(
        &plane,
        "handlermodule",
        "thermostat-1.0.0",
        "tampered refused",
        |m| condition(m, "Ready") == "False/DigestMismatch",
    )
    .await;
    println!("{}", module["status"]["conditions"][0]["message"]);
    until_json(
        &plane,
        "deviceclasses.edgefleet.dev",
        "thermo",
        "class held",
        // A damaged registry may be repaired (re-pushed): the pull is retried, the class waits.
        |c| condition(c, "Ready") == "False/ModuleUnavailable",
    )
    .await;
    let node = until_json(&plane, "edgenode", "edge-a", "edge-a reports", |n| {
        n["status"]["state"] == "Online"
    })
    .await;
    assert!(class_names(&node).is_empty(), "{node:#}");
    let metrics = http_get(port, "/metrics").1;
    assert_eq!(
        metric(
            &metrics,
            "edgefleet_controller_assignments_published_total",
            ""
        ),
        0.0
    );
    assert_eq!(
        metric(&metrics, "edgefleet_controller_chunks_published_total", ""),
        0.0
    );
    // `kubectl describe` shows why, as a Warning Event on the HandlerModule.
    let started = Instant::now();
    loop {
        let events = kubectl(
            &plane,
            &["get", "events.events.k8s.io", "-n", "default", "-o", "json"],
        )
        .unwrap();
        let events: Value = serde_json::from_str(&events).unwrap();
        let found = events["items"].as_array().into_iter().flatten().any(|e| {
            e["reason"] == "DigestMismatch"
                && e["type"] == "Warning"
                && e["regarding"]["name"] == "thermostat-1.0.0"
        });
        if found {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "no DigestMismatch Event:\n{events:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Its status writes and Events were all allowed by its RBAC.
    assert_eq!(
        metric(
            &metrics,
            "edgefleet_controller_status_write_failures_total",
            ""
        ),
        0.0
    );
    replica.stop();
}

/// Events the API server holds about DeviceClass `name`: their reasons, one per occurrence (the
/// recorder folds repeats into one Event's `series`).
fn class_event_reasons(plane: &ControlPlane, name: &str) -> Vec<String> {
    let events = kubectl(
        plane,
        &["get", "events.events.k8s.io", "-n", "default", "-o", "json"],
    )
    .unwrap_or_default();
    let events: Value = serde_json::from_str(&events).unwrap_or(Value::Null);
    let mut found: Vec<(String, String)> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["kind"] == "DeviceClass" && e["regarding"]["name"] == name)
        .flat_map(|e| {
            let count = e["series"]["count"].as_u64().unwrap_or(1) as usize;
            let reason = e["reason"].as_str().unwrap_or_default().to_string();
            std::iter::repeat_n(
                (
                    e["eventTime"].as_str().unwrap_or_default().to_string(),
                    reason,
                ),
                count,
            )
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, reason)| reason).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_shows_its_steps_in_kubectl_and_events_and_obeys_kubectl_annotate() {
    let (plane, kubeconfig) = controller_plane();
    let registry = Registry::start().unwrap();
    let registry_ca = plane.dir().join("registry-ca.crt");
    std::fs::write(&registry_ca, registry.ca_pem()).unwrap();
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    // v2: the same handler as another binary (a custom section appended).
    let mut v2 = wasm.clone();
    v2.extend([0, 3, 2, b'v', b'2']);
    let image_1 = push(&registry, "edgefleet/thermostat", &wasm).await;
    let image_2 = push(&registry, "edgefleet/thermostat-2", &v2).await;
    plane
        .apply_yaml(&handler_module("thermostat-1", "1.0.0", &image_1))
        .unwrap();
    plane
        .apply_yaml(&handler_module("thermostat-2", "2.0.0", &image_2))
        .unwrap();
    let class = |module: &str| {
        format!(
            "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: thermo\n\
             spec:\n  module: {module}\n  nodeSelector: {{}}\n  rollout:\n\
             \x20   canary: {{nodes: 1}}\n\
             \x20   gate: {{minInteractions: 5, bakeSeconds: 1}}\n\
             \x20   progressDeadlineSeconds: 120\n"
        )
    };
    // The first version: no stable one yet, so the canary node serves first and alone.
    plane.apply_yaml(&class("thermostat-1")).unwrap();
    let mut fleet = Fleet::new();
    let mut replica = fleet.start_cluster_controller(&kubeconfig, "replica-1", &registry_ca);
    fleet.add_node("edge-a");
    fleet.add_node("edge-b");

    // Devices on both nodes send readings all along (the gate needs interactions).
    let mut senders = Vec::new();
    for node in ["edge-a", "edge-b"] {
        let id = format!("t-{node}");
        let (device, commands) = fleet.device(node, "thermo", &id).await;
        senders.push(tokio::spawn(async move {
            let _commands = commands;
            let topic = format!("ef/v1/dev/thermo/{id}/up/telemetry");
            loop {
                let _ = device
                    .publish(&topic, rumqttc::QoS::AtLeastOnce, false, reading(18.0))
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    until_json(
        &plane,
        "deviceclasses.edgefleet.dev",
        "thermo",
        "v1 completed",
        |c| c["status"]["rollout"]["phase"] == "Completed",
    )
    .await;

    plane.apply_yaml(&class("thermostat-2")).unwrap();
    let class_object = until_json(
        &plane,
        "deviceclasses.edgefleet.dev",
        "thermo",
        "v2 completed",
        |c| {
            c["status"]["rollout"]["phase"] == "Completed"
                && c["status"]["rollout"]["targetVersion"] == "thermostat 2.0.0"
        },
    )
    .await;
    assert_eq!(class_object["status"]["rollout"]["step"], "2/2 complete");
    let table = kubectl(&plane, &["get", "dc", "thermo"]).unwrap();
    assert!(
        table.contains("ROLLOUT") && table.contains("Completed") && table.contains("2/2 complete"),
        "{table}"
    );
    // Every step is an Event on the class.
    let started = Instant::now();
    loop {
        let reasons = class_event_reasons(&plane, "thermo");
        let passed = reasons.iter().filter(|r| *r == "RolloutStepPassed").count();
        let completed = reasons.iter().filter(|r| *r == "RolloutCompleted").count();
        if reasons.iter().any(|r| r == "RolloutStarted") && passed >= 2 && completed >= 2 {
            break;
        }
        assert!(started.elapsed() < LIMIT, "Events: {reasons:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Plain kubectl steers it: undo gives every node v1 back.
    kubectl(
        &plane,
        &[
            "annotate",
            "deviceclasses.edgefleet.dev",
            "thermo",
            "edgefleet.dev/rollout-action=undo:1",
            "--overwrite",
        ],
    )
    .unwrap();
    until_json(
        &plane,
        "deviceclasses.edgefleet.dev",
        "thermo",
        "undone",
        |c| {
            c["status"]["rollout"]["phase"] == "RolledBack"
                && c["status"]["rollout"]["lastAction"] == "undo:1"
        },
    )
    .await;
    for node in ["edge-a", "edge-b"] {
        until_json(&plane, "edgenode", node, "back on v1", |n| {
            n["status"]["classes"][0]["active"] == "thermostat 1.0.0"
        })
        .await;
    }
    assert!(class_event_reasons(&plane, "thermo").contains(&"RolloutUndone".to_string()));
    let metrics = http_get(replica.port, "/metrics").1;
    assert_eq!(
        metric(
            &metrics,
            "edgefleet_controller_status_write_failures_total",
            ""
        ),
        0.0,
        "RBAC allowed every write"
    );
    for sender in senders {
        sender.abort();
    }
    replica.stop();
}
