//! `k3s/`: the kustomize base and overlays an operator installs (k3s/README.md is the guide), checked
//! against the programs they run and against a real kube-apiserver from testenv (RBAC and the
//! PodSecurity admission on).
//!
//! That server runs no scheduler, controller-manager or kubelet: objects are stored and admitted,
//! nothing runs. So these tests show that the manifests render, are accepted (Deployments and
//! DaemonSets applied for real, the Pods their controllers would make by server-side dry run),
//! are wired to each other and to the programs' flags, and grant the rights the code needs and no
//! more. They do not show that the images start, that the probes answer, that mounted files are
//! readable by uid 65532 or that packets pass the NetworkPolicies (evaluated here by the rules of
//! the NetworkPolicy API, not by a CNI).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use clap::{Args, CommandFactory, FromArgMatches, Parser};
use edgefleet_controller::config::{Config, Mode, RunArgs};
use edgefleet_protocol::DeviceId;
use edgefleet_protocol::signing::{SigningKey, TrustAnchor};
use edgefleet_simulators::pki::{FleetPki, Validity};
use edgefleet_testenv::{Binaries, ControlPlane, run_kubectl};
use serde_json::{Value, json};

const NAMESPACE: &str = "edgefleet";
/// What an operator may install: the base and each overlay.
const TARGETS: [&str; 3] = [
    "k3s/base",
    "k3s/overlays/single-node",
    "k3s/overlays/edge-brokers",
];
/// The overlay the install guide names.
const GUIDE_OVERLAY: &str = "k3s/overlays/single-node";
const IMAGES: [&str; 3] = [
    "localhost/edgefleet-controller",
    "localhost/edgefleet-agent",
    "localhost/edgefleet-mosquitto",
];
/// The images' user (images/Containerfile).
const UID: i64 = 65532;
const EDGE_LABEL: &str = "edgefleet.dev/edge";
const BOOTSTRAP_AUDIENCE: &str = "edgefleet.dev/node-bootstrap";
const CONTROLLER: &str = "edgefleet-controller";
const AGENT: &str = "edgefleet-agent";
const CLOUD_BROKER: &str = "edgefleet-cloud-broker";
const DEVICE_BROKER: &str = "edgefleet-device-broker";
/// Init containers that run as root, with exactly CHOWN and FOWNER: they hand a host path to UID.
const ROOT_INITS: [(&str, &str); 2] = [(AGENT, "prepare-store"), (DEVICE_BROKER, "prepare-data")];

// --- Rendering ------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The version in the workspace's Cargo.toml ([workspace.package]).
fn workspace_version() -> String {
    let manifest: toml::Table = toml::from_str(&read(&repo().join("Cargo.toml"))).unwrap();
    manifest["workspace"]["package"]["version"]
        .as_str()
        .expect("workspace.package.version")
        .to_owned()
}

/// testenv's kubectl (its kustomize renders what `kubectl apply -k` applies).
fn kubectl_binary() -> PathBuf {
    Binaries::locate()
        .expect("the test control plane's binaries (scripts/setup.sh builds them)")
        .kubectl
}

/// `kubectl kustomize <target>`, from the repository's root as the guide runs it.
fn render(target: &str) -> String {
    let output = Command::new(kubectl_binary())
        .args(["kustomize", target])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl kustomize {target}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("kustomize renders YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Every target's objects, rendered once per test process.
fn rendered() -> &'static [(&'static str, Vec<Value>)] {
    static RENDERED: OnceLock<Vec<(&'static str, Vec<Value>)>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        TARGETS
            .iter()
            .map(|target| (*target, documents(&render(target))))
            .collect()
    })
}

fn objects_of(target: &str) -> &'static [Value] {
    &rendered()
        .iter()
        .find(|(t, _)| *t == target)
        .expect("a target")
        .1
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// A Deployment, DaemonSet or other object with a pod template.
#[derive(Clone, Copy)]
struct Workload<'a> {
    object: &'a Value,
}

impl<'a> Workload<'a> {
    fn kind(&self) -> &'a str {
        self.object["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &'a str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
    fn id(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }
    fn template(&self) -> &'a Value {
        &self.object["spec"]["template"]
    }
    fn pod(&self) -> &'a Value {
        &self.object["spec"]["template"]["spec"]
    }
    /// (container, is an init container), init containers first.
    fn containers(&self) -> Vec<(&'a Value, bool)> {
        let pod = self.pod();
        let mut all: Vec<(&'a Value, bool)> = Vec::new();
        for (key, init) in [("initContainers", true), ("containers", false)] {
            if let Some(list) = pod[key].as_array() {
                all.extend(list.iter().map(|c| (c, init)));
            }
        }
        all
    }
    /// The first container: the program the workload is.
    fn main(&self) -> &'a Value {
        &self.pod()["containers"][0]
    }
    fn init(&self, name: &str) -> Option<&'a Value> {
        self.pod()["initContainers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)
    }
    fn volume(&self, name: &str) -> &'a Value {
        self.pod()["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == name))
            .unwrap_or_else(|| panic!("{}: no volume {name}", self.id()))
    }
}

fn workloads(objects: &[Value]) -> Vec<Workload<'_>> {
    objects
        .iter()
        .filter(|o| o["spec"]["template"]["spec"].is_object())
        .map(|object| Workload { object })
        .collect()
}

fn workload<'a>(objects: &'a [Value], name: &str) -> Workload<'a> {
    workloads(objects)
        .into_iter()
        .find(|w| w.name() == name)
        .unwrap_or_else(|| panic!("no workload {name}"))
}

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of `--name=value` in a container's args.
fn flag(container: &Value, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    args(container)
        .iter()
        .find_map(|a| a.strip_prefix(&prefix).map(String::from))
}

fn port_of(address: &str) -> i64 {
    address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{address}: no port"))
}

/// A container port by name or number.
fn container_port(container: &Value, port: &Value) -> Option<i64> {
    if let Some(number) = port.as_i64() {
        return Some(number);
    }
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == *port)
        .and_then(|p| p["containerPort"].as_i64())
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A label selector (matchLabels, matchExpressions) against labels.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    for key in selector.as_object().map(|m| m.keys()).into_iter().flatten() {
        assert!(
            key == "matchLabels" || key == "matchExpressions",
            "selector field {key} is not understood by this test"
        );
    }
    let match_labels = self::labels(&selector["matchLabels"]);
    if !match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let value = labels.get(key).map(String::as_str);
            match e["operator"].as_str() {
                Some("In") => value.is_some_and(|v| values.contains(&v)),
                Some("NotIn") => !value.is_some_and(|v| values.contains(&v)),
                Some("Exists") => value.is_some(),
                Some("DoesNotExist") => value.is_none(),
                other => panic!("selector operator {other:?} is not understood by this test"),
            }
        })
}

// --- The copies in k3s/base/generated -------------------------------------------------------------

/// The command that refreshes k3s/base/generated/ (also in k3s/README.md).
const REFRESH: &str = "cp k3s/crds/*.yaml k3s/base/generated/crds/ && cp k3s/rbac/controller.yaml k3s/base/generated/rbac/ && cp brokers/cloud/mosquitto.conf brokers/cloud/acl k3s/base/generated/brokers/cloud/ && cp brokers/device/mosquitto.conf brokers/device/acl k3s/base/generated/brokers/device/";

/// (source, copy), relative to the repository.
fn copies() -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for folder in ["crds", "rbac"] {
        let mut files: Vec<String> = std::fs::read_dir(repo().join("k3s").join(folder))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".yaml"))
            .collect();
        files.sort();
        for file in files {
            pairs.push((
                format!("k3s/{folder}/{file}"),
                format!("k3s/base/generated/{folder}/{file}"),
            ));
        }
    }
    for broker in ["cloud", "device"] {
        for file in ["mosquitto.conf", "acl"] {
            pairs.push((
                format!("brokers/{broker}/{file}"),
                format!("k3s/base/generated/brokers/{broker}/{file}"),
            ));
        }
    }
    pairs
}

fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
}

#[test]
fn the_copies_in_k3s_base_generated_are_their_sources_byte_for_byte() {
    let root = repo();
    let kustomization = read(&root.join("k3s/base/kustomization.yaml"));
    let mut problems = Vec::new();
    let pairs = copies();
    for (source, copy) in &pairs {
        let original = std::fs::read(root.join(source)).unwrap();
        match std::fs::read(root.join(copy)) {
            Ok(bytes) if bytes == original => {}
            Ok(_) => problems.push(format!("{copy} differs from {source}")),
            Err(e) => problems.push(format!("{copy}: {e}")),
        }
        // Each copy is used: a resource, or a file of a ConfigMap generator.
        let relative = copy.trim_start_matches("k3s/base/");
        if !kustomization.contains(&format!("- {relative}\n"))
            && !kustomization.contains(&format!("={relative}\n"))
        {
            problems.push(format!(
                "k3s/base/kustomization.yaml does not use {relative}"
            ));
        }
    }
    let expected: BTreeSet<PathBuf> = pairs.iter().map(|(_, copy)| root.join(copy)).collect();
    let mut found = Vec::new();
    files_under(&root.join("k3s/base/generated"), &mut found);
    for stray in found.iter().filter(|f| !expected.contains(*f)) {
        problems.push(format!("{} is a copy of nothing", stray.display()));
    }
    assert!(
        problems.is_empty(),
        "{}\nrefresh the copies (from the repository's root) with\n  {REFRESH}",
        problems.join("\n")
    );
    assert!(
        read(&root.join("k3s/README.md")).contains(REFRESH),
        "k3s/README.md shows the refresh command the test prints"
    );
}

// --- What every workload is -----------------------------------------------------------------------

fn expected_workloads(target: &str) -> BTreeSet<String> {
    let device_broker = if target.ends_with("edge-brokers") {
        "DaemonSet"
    } else {
        "Deployment"
    };
    [
        format!("Deployment/{CONTROLLER}"),
        format!("DaemonSet/{AGENT}"),
        format!("Deployment/{CLOUD_BROKER}"),
        format!("{device_broker}/{DEVICE_BROKER}"),
    ]
    .into_iter()
    .collect()
}

fn hardening_problems(w: &Workload, version: &str) -> Vec<String> {
    let pod = w.pod();
    let id = w.id();
    let mut problems = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            problems.push(format!("{id}: {what}"));
        }
    };
    let pod_sc = &pod["securityContext"];
    expect(
        pod_sc["seccompProfile"]["type"] == "RuntimeDefault",
        "the pod's seccomp profile is not RuntimeDefault".into(),
    );
    expect(
        pod_sc["runAsUser"] == UID,
        format!("the pod does not run as {UID}"),
    );
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        expect(pod[host] != true, format!("{host} is on"));
    }
    expect(
        pod["automountServiceAccountToken"] == (w.name() == CONTROLLER),
        "automountServiceAccountToken is not true for the controller and false for the rest".into(),
    );
    for (c, init) in w.containers() {
        let name = c["name"].as_str().unwrap_or_default();
        let image = c["image"].as_str().unwrap_or_default();
        let tagged = image
            .rsplit_once(':')
            .is_some_and(|(repository, tag)| IMAGES.contains(&repository) && tag == version);
        expect(
            tagged,
            format!("{name}: image {image}, not one of {IMAGES:?} tagged {version}"),
        );
        expect(
            c["imagePullPolicy"] == "IfNotPresent",
            format!("{name}: imagePullPolicy is not IfNotPresent (the images are imported)"),
        );
        let sc = &c["securityContext"];
        expect(
            sc["allowPrivilegeEscalation"] == false,
            format!("{name}: privilege escalation"),
        );
        expect(
            sc["readOnlyRootFilesystem"] == true,
            format!("{name}: writable root filesystem"),
        );
        expect(sc["privileged"] != true, format!("{name}: privileged"));
        expect(
            sc["capabilities"]["drop"] == json!(["ALL"]),
            format!("{name}: capabilities not dropped"),
        );
        let uid = sc["runAsUser"].as_i64().or(pod_sc["runAsUser"].as_i64());
        let non_root = sc["runAsNonRoot"]
            .as_bool()
            .or(pod_sc["runAsNonRoot"].as_bool());
        if ROOT_INITS.contains(&(w.name(), name)) {
            expect(
                init && uid == Some(0) && sc["capabilities"]["add"] == json!(["CHOWN", "FOWNER"]),
                format!("{name}: the host path's init container runs as root with CHOWN, FOWNER"),
            );
        } else {
            expect(
                uid == Some(UID) && non_root == Some(true),
                format!("{name}: not non-root as {UID}"),
            );
            expect(
                sc["capabilities"]["add"].is_null(),
                format!("{name}: adds capabilities"),
            );
        }
        let resources = &c["resources"];
        expect(
            !resources["requests"]["cpu"].is_null()
                && !resources["requests"]["memory"].is_null()
                && !resources["limits"]["memory"].is_null(),
            format!("{name}: no cpu and memory requests and memory limit"),
        );
        if !init {
            expect(
                !c["livenessProbe"].is_null(),
                format!("{name}: no liveness probe"),
            );
        }
    }
    problems
}

/// Every object labelled part-of edgefleet. Every container: one of the three images at the
/// workspace version, IfNotPresent; non-root as 65532 (but the two init containers that chown a
/// host path), read-only root filesystem, no privilege escalation, no capabilities, seccomp
/// RuntimeDefault; requests and a memory limit.
#[test]
fn every_workload_is_hardened_sized_and_tagged_with_the_workspace_version() {
    let version = workspace_version();
    let mut problems = Vec::new();
    for (target, objects) in rendered() {
        // k3s/components/common: on every object, those of the overlays too.
        for object in objects.iter() {
            if object["metadata"]["labels"]["app.kubernetes.io/part-of"] != "edgefleet" {
                problems.push(format!(
                    "{target}: {}/{} lacks the label app.kubernetes.io/part-of=edgefleet",
                    object["kind"], object["metadata"]["name"]
                ));
            }
        }
        let found: BTreeSet<String> = workloads(objects).iter().map(Workload::id).collect();
        assert_eq!(found, expected_workloads(target), "{target}: its workloads");
        for w in workloads(objects) {
            problems.extend(
                hardening_problems(&w, &version)
                    .into_iter()
                    .map(|p| format!("{target}: {p}")),
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `(host, port)` of a URL such as `mqtts://name.edgefleet.svc:8883` or `https://…:8443/path`.
fn service_address(url: &str) -> (String, i64) {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority.rsplit_once(':').expect("a port in the URL");
    (host.to_owned(), port.parse().unwrap())
}

/// The workload and container port a Service URL reaches, following the Service's selector and
/// target port.
fn reached<'a>(objects: &'a [Value], url: &str) -> (Workload<'a>, i64) {
    let (host, port) = service_address(url);
    let service_name = host
        .strip_suffix(&format!(".{NAMESPACE}.svc"))
        .unwrap_or_else(|| panic!("{url}: not <service>.{NAMESPACE}.svc"));
    let service = find(objects, "Service", service_name)
        .unwrap_or_else(|| panic!("{url}: no Service {service_name}"));
    let service_port = service["spec"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["port"] == port))
        .unwrap_or_else(|| panic!("{url}: Service {service_name} has no port {port}"));
    let selector = labels(&service["spec"]["selector"]);
    let targets: Vec<Workload> = workloads(objects)
        .into_iter()
        .filter(|w| {
            let pod_labels = labels(&w.template()["metadata"]["labels"]);
            !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
        })
        .collect();
    assert_eq!(
        targets.len(),
        1,
        "{url}: Service {service_name} selects {} workloads",
        targets.len()
    );
    let target = targets[0];
    let container_port = container_port(target.main(), &service_port["targetPort"])
        .unwrap_or_else(|| panic!("{url}: target port not in {}", target.id()));
    (target, container_port)
}

/// The `listener` port of the mosquitto configuration a broker workload runs.
fn broker_listener(objects: &[Value], w: &Workload) -> i64 {
    let conf = broker_config(objects, w);
    conf.lines()
        .find_map(|l| l.strip_prefix("listener "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}: no listener in its configuration", w.id()))
}

/// The mosquitto.conf a broker workload's `-c` names, from the ConfigMap its volume mounts.
fn broker_config(objects: &[Value], w: &Workload) -> String {
    let configmap = w.pod()["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|v| {
            v["configMap"]["name"]
                .as_str()
                .map(String::from)
                .or_else(|| {
                    v["projected"]["sources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find_map(|s| s["configMap"]["name"].as_str().map(String::from))
                })
        })
        .unwrap_or_else(|| panic!("{}: no configuration ConfigMap", w.id()));
    find(objects, "ConfigMap", &configmap)
        .and_then(|c| c["data"]["mosquitto.conf"].as_str())
        .unwrap_or_else(|| panic!("{}: ConfigMap {configmap} has no mosquitto.conf", w.id()))
        .to_owned()
}

fn env_field(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["valueFrom"]["fieldRef"]["fieldPath"].as_str())
        .map(String::from)
}

/// The mount under which a container sees `path`: (mount, path relative to it).
fn mount_for<'a>(container: &'a Value, path: &str) -> Option<(&'a Value, String)> {
    container["volumeMounts"]
        .as_array()?
        .iter()
        .filter_map(|m| {
            let mount_path = m["mountPath"].as_str()?;
            let rest = path.strip_prefix(mount_path)?;
            if rest.is_empty() || rest.starts_with('/') {
                Some((m, rest.trim_start_matches('/').to_owned()))
            } else {
                None
            }
        })
        .max_by_key(|(m, _)| m["mountPath"].as_str().map(str::len))
}

/// The workloads reach each other where the programs are told to dial, probe the address and
/// routes the programs serve, and carry the node's identity where it belongs.
#[test]
fn the_workloads_find_each_other_and_the_nodes_identity() {
    let routes = [
        (CONTROLLER, read(&repo().join("controller/src/http.rs"))),
        (AGENT, read(&repo().join("edge-agent/src/http.rs"))),
    ];
    for (target, objects) in rendered() {
        let controller = workload(objects, CONTROLLER);
        let agent = workload(objects, AGENT);
        let cloud_broker = workload(objects, CLOUD_BROKER);
        let device_broker = workload(objects, DEVICE_BROKER);

        // Probes: the routes of the program's http.rs, on the port of its --listen.
        for (name, source) in &routes {
            let c = workload(objects, name).main();
            let listen = port_of(&flag(c, "--listen").expect("--listen"));
            for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                let get = &c[probe]["httpGet"];
                assert_eq!(get["path"], path, "{target}: {name}'s {probe}");
                assert_eq!(
                    container_port(c, &get["port"]),
                    Some(listen),
                    "{target}: {name}'s {probe} port is its --listen"
                );
                assert!(
                    source.contains(&format!(".route(\"{path}\"")),
                    "{name} serves {path}"
                );
            }
        }

        // Who dials whom, through which Service, onto which port.
        let dials = [
            (controller, "--cloud-broker", CLOUD_BROKER),
            (agent, "--uplink-broker", CLOUD_BROKER),
            (agent, "--device-broker", DEVICE_BROKER),
            (agent, "--bootstrap-url", CONTROLLER),
        ];
        for (from, name, to) in dials {
            let url = flag(from.main(), name).unwrap_or_else(|| panic!("{}: {name}", from.id()));
            let (reached, port) = reached(objects, &url);
            assert_eq!(reached.name(), to, "{target}: {} {name}={url}", from.id());
            let served = if to == CONTROLLER {
                port_of(&flag(controller.main(), "--bootstrap-listen").expect("--bootstrap-listen"))
            } else {
                broker_listener(objects, &reached)
            };
            assert_eq!(
                port,
                served,
                "{target}: {url} reaches port {port} of {}, which serves {served}",
                reached.id()
            );
        }
        let device_service = find(objects, "Service", DEVICE_BROKER).unwrap();
        assert_eq!(
            device_service["spec"]["internalTrafficPolicy"], "Local",
            "{target}: an agent must reach its own node's device broker only"
        );

        // The node's identity: the agent's NODE_NAME and the device ACL's @NODE_NAME@ are the
        // node's name; both run on the edge nodes only.
        assert_eq!(
            env_field(agent.main(), "NODE_NAME").as_deref(),
            Some("spec.nodeName")
        );
        let render_acl = device_broker.init("render-acl").expect("render-acl");
        assert_eq!(
            env_field(render_acl, "NODE_NAME").as_deref(),
            Some("spec.nodeName")
        );
        let render_command = format!("{}", render_acl["args"]);
        assert!(
            render_command.contains("s/@NODE_NAME@/$NODE_NAME/g"),
            "{target}: render-acl renders the placeholder: {render_command}"
        );
        let acl_file = broker_config(objects, &device_broker)
            .lines()
            .find_map(|l| l.strip_prefix("acl_file ").map(str::to_owned))
            .expect("acl_file");
        let (acl_mount, acl_name) = mount_for(device_broker.main(), &acl_file).expect("the ACL");
        let init_mount = render_acl["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == acl_mount["name"])
            .and_then(|m| m["mountPath"].as_str())
            .expect("render-acl writes into the volume mosquitto reads the ACL from");
        assert!(
            render_command.contains(&format!("> {init_mount}/{acl_name}")),
            "{target}: render-acl writes {init_mount}/{acl_name}: {render_command}"
        );
        for w in [agent, device_broker] {
            assert_eq!(
                w.pod()["nodeSelector"],
                json!({ EDGE_LABEL: "true" }),
                "{target}: {} runs on edge nodes",
                w.id()
            );
        }

        // The agent's store: a host path under /var/lib/edgefleet at its --data-dir, handed to
        // its user by prepare-store.
        let data_dir = flag(agent.main(), "--data-dir").expect("--data-dir");
        let (store_mount, rest) = mount_for(agent.main(), &data_dir).expect("the store's mount");
        assert!(rest.is_empty(), "{target}: the store is the mount itself");
        let store = agent.volume(store_mount["name"].as_str().unwrap());
        assert!(
            store["hostPath"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/var/lib/edgefleet/")),
            "{target}: the agent's store is a host path under /var/lib/edgefleet: {store}"
        );
        let prepare = agent.init("prepare-store").expect("prepare-store");
        assert_eq!(prepare["volumeMounts"][0]["name"], store_mount["name"]);

        // The bootstrap token: a projected ServiceAccount token for the bootstrap audience, at the
        // path the agent reads.
        let token_file = flag(agent.main(), "--bootstrap-token-file").expect("token file");
        assert_eq!(token_file, "/var/run/secrets/edgefleet/token");
        let (token_mount, token_path) = mount_for(agent.main(), &token_file).expect("token mount");
        let sources = &agent.volume(token_mount["name"].as_str().unwrap())["projected"]["sources"];
        assert_eq!(
            sources,
            &json!([{ "serviceAccountToken": {
                "audience": BOOTSTRAP_AUDIENCE, "expirationSeconds": 3600, "path": token_path,
            }}]),
            "{target}: the agent's bootstrap token"
        );
        assert_eq!(
            flag(controller.main(), "--bootstrap-audience").as_deref(),
            Some(BOOTSTRAP_AUDIENCE)
        );

        // Identities.
        for (w, account) in [
            (controller, CONTROLLER),
            (agent, AGENT),
            (cloud_broker, "edgefleet-broker"),
            (device_broker, "edgefleet-broker"),
        ] {
            assert_eq!(w.pod()["serviceAccountName"], account, "{target}");
            let sa = find(objects, "ServiceAccount", account)
                .unwrap_or_else(|| panic!("{target}: no ServiceAccount {account}"));
            assert_eq!(sa["metadata"]["namespace"], NAMESPACE);
        }
    }
}

/// The device broker runs the same pod in every layout but for where its persistence is (and the
/// init container that hands a host path to its user); the cloud broker's persistence is an
/// emptyDir in the base and a claim the overlay makes in each overlay.
#[test]
fn the_brokers_run_one_pod_template_and_keep_their_state_where_the_overlay_says() {
    fn normalized(w: &Workload) -> Value {
        let mut template = w.template().clone();
        let pod = &mut template["spec"];
        if let Some(inits) = pod["initContainers"].as_array_mut() {
            inits.retain(|c| c["name"] != "prepare-data");
        }
        let volumes = pod["volumes"].as_array_mut().unwrap();
        for volume in volumes.iter_mut() {
            if volume["name"] == "data" {
                *volume = json!({ "name": "data" });
            }
        }
        // A patch may reorder them; the pod does not care.
        volumes.sort_by_key(|v| v["name"].as_str().map(String::from));
        template
    }
    let base = workload(objects_of("k3s/base"), DEVICE_BROKER);
    for target in TARGETS {
        let objects = objects_of(target);
        let device = workload(objects, DEVICE_BROKER);
        assert_eq!(
            normalized(&device),
            normalized(&base),
            "{target}: {} runs the base's pod template",
            device.id()
        );
        for w in [device, workload(objects, CLOUD_BROKER)] {
            let data = w.volume("data");
            let (mount, _) = mount_for(w.main(), "/var/lib/mosquitto").expect("persistence");
            assert_eq!(mount["name"], "data");
            let shown = format!("{target}: {}: {data}", w.id());
            if target == "k3s/base" {
                assert!(!data["emptyDir"].is_null(), "{shown}");
            } else if w.kind() == "DaemonSet" {
                assert!(
                    data["hostPath"]["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("/var/lib/edgefleet/")),
                    "{shown}"
                );
                let prepare = w.init("prepare-data").expect("prepare-data");
                assert_eq!(prepare["volumeMounts"][0]["name"], "data");
            } else {
                let claim = data["persistentVolumeClaim"]["claimName"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{shown}"));
                let pvc = find(objects, "PersistentVolumeClaim", claim);
                assert!(pvc.is_some(), "{target}: no claim {claim}");
            }
            assert_eq!(w.object["spec"]["replicas"].as_i64().unwrap_or(1), 1);
            if w.kind() == "Deployment" {
                assert_eq!(w.object["spec"]["strategy"]["type"], "Recreate", "{shown}");
            }
        }
    }
}

// --- The programs' flags ---------------------------------------------------------------------------

/// The variables a container sets that the program does not read (besides its log filter).
fn unread_variables(container: &Value, command: &clap::Command) -> Vec<String> {
    let read: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .filter(|name| *name != "RUST_LOG" && !read.contains(*name))
        .map(String::from)
        .collect()
}

/// The controller's and the agent's args are parsed by their own command lines (clap), and the
/// configuration resolves (the downward-API variables filled in as a pod would have them).
#[test]
fn the_programs_take_the_flags_and_variables_the_manifests_give() {
    for (target, objects) in rendered() {
        let c = workload(objects, CONTROLLER).main();
        let controller_args = args(c);
        assert_eq!(
            controller_args.first().map(String::as_str),
            Some("run"),
            "{target}"
        );
        let command = RunArgs::augment_args(clap::Command::new("run").no_binary_name(true));
        assert_eq!(
            unread_variables(c, &command),
            Vec::<String>::new(),
            "{target}: the controller's variables"
        );
        let matches = command
            .try_get_matches_from(&controller_args[1..])
            .unwrap_or_else(|e| panic!("{target}: the controller's args: {e}"));
        let mut run = RunArgs::from_arg_matches(&matches).unwrap();
        run.namespace = Some(NAMESPACE.into());
        run.identity = Some("edgefleet-controller-7c9d5-x2x4q".into());
        let config = Config::load(run)
            .unwrap_or_else(|e| panic!("{target}: the controller's configuration: {e}"));
        match &config.mode {
            Mode::Cluster { lease, .. } => assert_eq!(lease, CONTROLLER),
            Mode::Standalone { .. } => panic!("{target}: the controller runs standalone"),
        }
        let bootstrap = config.bootstrap.expect("the bootstrap endpoint is on");
        assert_eq!(bootstrap.audience, BOOTSTRAP_AUDIENCE, "{target}");
        assert_eq!(
            bootstrap.agent.username(),
            service_account(AGENT),
            "{target}"
        );

        let c = workload(objects, AGENT).main();
        let command = edge_agent::config::Cli::command();
        assert_eq!(
            unread_variables(c, &command),
            Vec::<String>::new(),
            "{target}: the agent's variables"
        );
        let mut cli = edge_agent::config::Cli::try_parse_from(
            std::iter::once("edge-agent".to_owned()).chain(args(c)),
        )
        .unwrap_or_else(|e| panic!("{target}: the agent's args: {e}"));
        cli.node_name = Some("edge-1".into());
        let config = edge_agent::config::AgentConfig::load(cli)
            .unwrap_or_else(|e| panic!("{target}: the agent's configuration: {e}"));
        // Its certificate from the bootstrap endpoint, with the projected token.
        let identity = config.tls.expect("mutual TLS").identity;
        assert_eq!(
            identity,
            edge_agent::config::ClientIdentity::Bootstrap(edge_agent::config::Bootstrap {
                endpoint:
                    "https://edgefleet-controller-bootstrap.edgefleet.svc:8443/v1/node-certificate"
                        .into(),
                token_file: "/var/run/secrets/edgefleet/token".into(),
                ca: "/etc/edgefleet/trust/fleet-ca.crt".into(),
            }),
            "{target}: the agent's identity"
        );
    }
}

// --- NetworkPolicies ----------------------------------------------------------------------------

/// A party to a connection: a pod (namespace, labels) or something outside the cluster.
#[derive(Clone, Debug)]
enum Peer {
    Pod {
        namespace: String,
        labels: BTreeMap<String, String>,
    },
    Outside(&'static str),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Pod { namespace, labels } => write!(f, "a pod in {namespace} {labels:?}"),
            Peer::Outside(what) => f.write_str(what),
        }
    }
}

impl Peer {
    fn pod(namespace: &str, labels: &[(&str, &str)]) -> Peer {
        Peer::Pod {
            namespace: namespace.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }
}

fn peer_matches(policy_namespace: &str, peer: &Value, target: &Peer) -> bool {
    for key in peer.as_object().map(|m| m.keys()).into_iter().flatten() {
        assert!(
            ["podSelector", "namespaceSelector", "ipBlock"].contains(&key.as_str()),
            "peer field {key} is not understood by this test"
        );
    }
    match target {
        // The policies name outside addresses only as "anywhere"; this evaluator does no CIDRs.
        Peer::Outside(_) => {
            if peer["ipBlock"].is_null() {
                return false;
            }
            assert_eq!(peer["ipBlock"], json!({ "cidr": "0.0.0.0/0" }), "CIDRs");
            true
        }
        // A pod is matched by selectors only (an ipBlock is meant for addresses outside the
        // cluster; whether a CNI also matches pod addresses with it is its own business).
        Peer::Pod { namespace, labels } => {
            if !peer["ipBlock"].is_null() {
                return false;
            }
            let namespace_labels =
                BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), namespace.clone())]);
            let namespace_ok = match peer.get("namespaceSelector") {
                None => namespace == policy_namespace,
                Some(selector) => selects(selector, &namespace_labels),
            };
            let pod_ok = match peer.get("podSelector") {
                None => true,
                Some(selector) => selects(selector, labels),
            };
            namespace_ok && pod_ok
        }
    }
}

fn port_matches(rule: &Value, port: u16, protocol: &str) -> bool {
    let Some(ports) = rule["ports"].as_array().filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        let rule_protocol = p["protocol"].as_str().unwrap_or("TCP");
        let number = match &p["port"] {
            Value::Null => return rule_protocol == protocol,
            Value::Number(n) => n.as_u64().unwrap(),
            named => panic!("named port {named} is not understood by this test"),
        };
        let end = p["endPort"].as_u64().unwrap_or(number);
        rule_protocol == protocol && (number..=end).contains(&u64::from(port))
    })
}

/// Whether the policies let `from` open a connection to `to` on `port`: `Err` says which side
/// refuses it.
fn allowed(
    policies: &[&Value],
    from: &Peer,
    to: &Peer,
    port: u16,
    protocol: &str,
) -> Result<(), String> {
    for (side, direction, peers_key, this, other) in [
        ("egress", "Egress", "to", from, to),
        ("ingress", "Ingress", "from", to, from),
    ] {
        let Peer::Pod { namespace, labels } = this else {
            continue;
        };
        let isolating: Vec<&&Value> = policies
            .iter()
            .filter(|p| {
                let types = p["spec"]["policyTypes"]
                    .as_array()
                    .expect("policyTypes, explicit in every policy");
                p["metadata"]["namespace"] == namespace.as_str()
                    && selects(&p["spec"]["podSelector"], labels)
                    && types.iter().any(|t| t == direction)
            })
            .collect();
        if isolating.is_empty() {
            continue;
        }
        let admitted = isolating.iter().any(|p| {
            let policy_namespace = p["metadata"]["namespace"].as_str().unwrap();
            p["spec"][side]
                .as_array()
                .into_iter()
                .flatten()
                .any(|rule| {
                    port_matches(rule, port, protocol)
                        && match rule[peers_key].as_array().filter(|peers| !peers.is_empty()) {
                            None => true,
                            Some(peers) => peers
                                .iter()
                                .any(|peer| peer_matches(policy_namespace, peer, other)),
                        }
                })
        });
        if !admitted {
            return Err(format!("its {side} is refused"));
        }
    }
    Ok(())
}

/// Default deny, then what must flow: agents to the cloud broker, their device broker and the
/// bootstrap endpoint; the controller to the cloud broker, the API server and registries; devices
/// to the device broker; DNS; metrics. And some of what must not.
#[test]
fn network_policies_let_through_what_must_flow_and_not_the_rest() {
    let dns = Peer::pod("kube-system", &[("k8s-app", "kube-dns")]);
    let prometheus = Peer::pod("monitoring", &[("app", "prometheus")]);
    let device = Peer::Outside("a device on the node's LAN");
    let outside = Peer::Outside("an address outside the cluster (API server, registry)");
    for (target, objects) in rendered() {
        let policies: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy")
            .collect();
        assert!(
            policies
                .iter()
                .any(|p| p["spec"]["podSelector"] == json!({})
                    && p["spec"]["policyTypes"] == json!(["Ingress", "Egress"])
                    && p["spec"]["ingress"].is_null()
                    && p["spec"]["egress"].is_null()),
            "{target}: a default-deny policy"
        );
        let pod = |name: &str| {
            let w = workload(objects, name);
            Peer::Pod {
                namespace: w.object["metadata"]["namespace"].as_str().unwrap().into(),
                labels: labels(&w.template()["metadata"]["labels"]),
            }
        };
        let (controller, agent, cloud, devices) = (
            pod(CONTROLLER),
            pod(AGENT),
            pod(CLOUD_BROKER),
            pod(DEVICE_BROKER),
        );
        let must_pass = [
            (&agent, &cloud, 8883, "TCP"),
            (&agent, &devices, 8883, "TCP"),
            (&agent, &controller, 8443, "TCP"),
            (&agent, &dns, 53, "UDP"),
            (&agent, &dns, 53, "TCP"),
            (&controller, &cloud, 8883, "TCP"),
            (&controller, &outside, 6443, "TCP"),
            (&controller, &outside, 443, "TCP"),
            (&controller, &dns, 53, "UDP"),
            (&device, &devices, 8883, "TCP"),
            (&prometheus, &controller, 8080, "TCP"),
            (&prometheus, &agent, 9464, "TCP"),
        ];
        let must_not = [
            (&outside, &cloud, 8883, "TCP"),
            (&device, &controller, 8443, "TCP"),
            (&outside, &agent, 9464, "TCP"),
            (&devices, &cloud, 8883, "TCP"),
            (&devices, &outside, 443, "TCP"),
            (&devices, &dns, 53, "UDP"),
            (&cloud, &outside, 443, "TCP"),
            (&agent, &outside, 6443, "TCP"),
            (&agent, &outside, 443, "TCP"),
            (&controller, &devices, 8883, "TCP"),
            (&prometheus, &cloud, 8883, "TCP"),
            (&prometheus, &controller, 8443, "TCP"),
        ];
        for (from, to, port, protocol) in must_pass {
            if let Err(why) = allowed(&policies, from, to, port, protocol) {
                panic!("{target}: {from} → {to} {port}/{protocol} must pass: {why}");
            }
        }
        for (from, to, port, protocol) in must_not {
            assert!(
                allowed(&policies, from, to, port, protocol).is_err(),
                "{target}: {from} → {to} {port}/{protocol} must not pass"
            );
        }
    }
}

// --- The API server -------------------------------------------------------------------------------

fn kubectl(plane: &ControlPlane, args: &[&str]) -> Result<String, String> {
    let mut command = plane.kubectl();
    command.args(args);
    run_kubectl(command).map_err(|e| e.to_string())
}

/// Waits (watching, not polling) until the CRDs are served.
fn wait_for_crds(plane: &ControlPlane) {
    kubectl(
        plane,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/handlermodules.edgefleet.dev",
            "crd/deviceclasses.edgefleet.dev",
            "crd/edgenodes.edgefleet.dev",
        ],
    )
    .expect("the CRDs are established");
}

fn write_json(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

fn dry_run_pod(plane: &ControlPlane, dir: &Path, pod: &Value) -> Result<String, String> {
    let name = pod["metadata"]["name"].as_str().unwrap();
    let namespace = pod["metadata"]["namespace"].as_str().unwrap();
    let path = write_json(dir, &format!("pod-{namespace}-{name}.json"), pod);
    kubectl(
        plane,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            path.to_str().unwrap(),
        ],
    )
}

fn as_pod(w: &Workload, namespace: &str, spec: &Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{}-{}", w.name(), w.kind().to_lowercase()),
            "namespace": namespace,
            "labels": w.template()["metadata"]["labels"],
        },
        "spec": spec,
    })
}

/// A pod spec without host paths (emptyDirs instead) and host ports, and what was taken away.
fn without_host_access(spec: &Value) -> (Value, Vec<String>) {
    let mut spec = spec.clone();
    let mut removed = Vec::new();
    for volume in spec["volumes"].as_array_mut().into_iter().flatten() {
        if !volume["hostPath"].is_null() {
            removed.push(format!(
                "hostPath volume {}",
                volume["name"].as_str().unwrap()
            ));
            *volume = json!({ "name": volume["name"], "emptyDir": {} });
        }
    }
    for key in ["initContainers", "containers"] {
        for container in spec[key].as_array_mut().into_iter().flatten() {
            for port in container["ports"].as_array_mut().into_iter().flatten() {
                if let Some(host) = port.as_object_mut().and_then(|p| p.remove("hostPort")) {
                    removed.push(format!("hostPort {host}"));
                }
            }
        }
    }
    (spec, removed)
}

/// A pod spec without its root init containers, and their names.
fn without_root(spec: &Value) -> (Value, Vec<String>) {
    let mut spec = spec.clone();
    let mut removed = Vec::new();
    if let Some(inits) = spec["initContainers"].as_array_mut() {
        inits.retain(|c| {
            let root = c["securityContext"]["runAsUser"] == 0;
            if root {
                removed.push(format!(
                    "root init container {}",
                    c["name"].as_str().unwrap()
                ));
            }
            !root
        });
    }
    (spec, removed)
}

/// What in each workload's pod is outside the Pod Security Standards, shown with the real
/// PodSecurity admission: the Pods each workload's controller would create are dry-run in the
/// edgefleet namespace (accepted), and in namespaces that enforce "baseline" and "restricted".
fn check_pods(plane: &ControlPlane, dir: &Path, objects: &[Value], target: &str) {
    for (namespace, level) in [
        ("psa-baseline", "baseline"),
        ("psa-restricted", "restricted"),
    ] {
        plane
            .apply_yaml(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  labels:\n    \
                 pod-security.kubernetes.io/enforce: {level}\n"
            ))
            .unwrap();
    }
    for w in workloads(objects) {
        let shown = format!("{target}: {}", w.id());
        dry_run_pod(plane, dir, &as_pod(&w, NAMESPACE, w.pod()))
            .unwrap_or_else(|e| panic!("{shown}: its pod is refused: {e}"));
        let (no_host, host_access) = without_host_access(w.pod());
        let (unprivileged, root) = without_root(&no_host);
        let mut exceptions: Vec<String> = host_access.iter().chain(&root).cloned().collect();
        exceptions.sort();
        let expected: &[&str] = match (w.name(), w.kind()) {
            (AGENT, _) => &["hostPath volume store", "root init container prepare-store"],
            (DEVICE_BROKER, "DaemonSet") => &[
                "hostPath volume data",
                "hostPort 8883",
                "root init container prepare-data",
            ],
            (DEVICE_BROKER, _) => &["hostPort 8883"],
            _ => &[],
        };
        assert_eq!(exceptions, expected, "{shown}: outside restricted");
        if exceptions.is_empty() {
            dry_run_pod(plane, dir, &as_pod(&w, "psa-restricted", w.pod()))
                .unwrap_or_else(|e| panic!("{shown}: refused by restricted: {e}"));
            continue;
        }
        // Refused as it is where enforced, for its host access (baseline) …
        let refusal = dry_run_pod(plane, dir, &as_pod(&w, "psa-restricted", w.pod()))
            .expect_err("restricted refuses a pod with host access or root");
        assert!(
            refusal.contains("violates PodSecurity"),
            "{shown}: {refusal}"
        );
        if !host_access.is_empty() {
            let refusal = dry_run_pod(plane, dir, &as_pod(&w, "psa-baseline", w.pod()))
                .expect_err("baseline refuses host paths and ports");
            for (what, named) in [
                ("hostPath volume", "hostPath volumes"),
                ("hostPort", "hostPort"),
            ] {
                assert_eq!(
                    refusal.contains(named),
                    host_access.iter().any(|h| h.starts_with(what)),
                    "{shown}: baseline names {named} exactly when the pod has one: {refusal}"
                );
            }
        }
        // … and nothing else: baseline takes it without the host access, restricted also
        // without the root init container.
        dry_run_pod(plane, dir, &as_pod(&w, "psa-baseline", &no_host))
            .unwrap_or_else(|e| panic!("{shown}: without host access, refused by baseline: {e}"));
        dry_run_pod(plane, dir, &as_pod(&w, "psa-restricted", &unprivileged)).unwrap_or_else(|e| {
            panic!("{shown}: without host access and root, refused by restricted: {e}")
        });
    }
}

/// The base and the edge-brokers overlay, each applied to a fresh API server with the guide's
/// command, and the Pods their controllers would make dry-run (the guide's single-node overlay:
/// the next test).
#[test]
fn the_base_and_the_edge_brokers_overlay_apply_to_a_real_api_server() {
    for target in ["k3s/base", "k3s/overlays/edge-brokers"] {
        let plane = ControlPlane::start().expect("the test control plane starts");
        let mut command = plane.kubectl();
        command
            .args(["apply", "--server-side", "-k", target])
            .current_dir(repo());
        let applied = run_kubectl(command).unwrap_or_else(|e| panic!("{target}: {e}"));
        let objects = objects_of(target);
        assert_eq!(
            applied.lines().count(),
            objects.len(),
            "{target}: one line per object:\n{applied}"
        );
        wait_for_crds(&plane);
        let dir = tempfile::tempdir().unwrap();
        check_pods(&plane, dir.path(), objects, target);
    }
}

// --- The install guide ----------------------------------------------------------------------------

/// A command of the guide: its section and the line.
struct GuideCommand {
    section: String,
    line: String,
}

/// Every line of the guide's `sh` blocks, with its section.
fn guide() -> Vec<GuideCommand> {
    let text = read(&repo().join("k3s/README.md"));
    let mut commands = Vec::new();
    let mut section = String::new();
    let mut in_sh = false;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = heading.to_owned();
        } else if line.starts_with("```") {
            in_sh = !in_sh && line == "```sh";
        } else if in_sh && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            assert!(!line.ends_with('\\'), "one command per line: {line}");
            commands.push(GuideCommand {
                section: section.clone(),
                line: line.trim().to_owned(),
            });
        }
    }
    commands
}

/// Guide commands this test does not run, and why.
const NEEDS_A_NODE: [(&str, &str); 7] = [
    (
        "scripts/images.sh",
        "builds the images (podman, buildah): the image script's own test",
    ),
    (
        "k3s ctr images import ",
        "imports into a K3s node's containerd",
    ),
    (
        "kubectl -n edgefleet rollout status ",
        "waits for pods, which need a scheduler, the controller-manager and kubelets",
    ),
    (
        "kubectl -n edgefleet get lease ",
        "the Lease is taken by a running controller",
    ),
    (
        "kubectl -n edgefleet port-forward ",
        "needs a kubelet and a running pod",
    ),
    (
        "rm /var/lib/rancher/k3s/server/manifests/",
        "runs on the K3s server",
    ),
    ("rm -rf /var/lib/edgefleet", "runs on each edge node"),
];

/// Words of a command line, single and double quotes kept together.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    assert!(quote.is_none(), "unbalanced quotes: {line}");
    if started {
        words.push(word);
    }
    words
}

/// Runs `edgefleet keys|certs …` of the guide through the library calls the CLI makes
/// (cli/src/keys.rs, cli/src/certs.rs), with the CLI's flags and defaults; what the CLI prints is
/// tested in cli/tests/.
fn edgefleet(dir: &Path, words: &[&str]) -> Result<String, String> {
    let error = |e: &dyn std::fmt::Display| e.to_string();
    match words {
        ["keys", "generate", "--out", out] => {
            let out = dir.join(out);
            std::fs::create_dir_all(&out).map_err(|e| error(&e))?;
            let key = SigningKey::generate().map_err(|e| error(&e))?;
            key.save(&out.join("signing-key.pem"))
                .map_err(|e| error(&e))?;
            let anchor: TrustAnchor = [key.verifying_key()].into_iter().collect();
            let bundle = anchor.to_pem_bundle().map_err(|e| error(&e))?;
            std::fs::write(out.join("trust.pem"), bundle).map_err(|e| error(&e))?;
            Ok(format!("signing key {}", key.key_id()))
        }
        ["certs", "issue", kind, rest @ ..] => {
            let (mut pki_dir, mut name, mut hosts, mut positional) = ("pki", None, vec![], vec![]);
            let mut rest = rest.iter();
            while let Some(word) = rest.next() {
                let mut value = || rest.next().copied().ok_or(format!("{word} needs a value"));
                match *word {
                    "--dir" => pki_dir = value()?,
                    "--name" => name = Some(value()?),
                    "--host" => hosts.push(value()?),
                    flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
                    word => positional.push(word),
                }
            }
            let (pki, _) =
                FleetPki::init(&dir.join(pki_dir), Validity::ca()).map_err(|e| error(&e))?;
            let issued = match (*kind, positional.as_slice()) {
                ("controller", []) => pki.issue_controller(Validity::leaf(), false),
                ("broker", []) => pki.issue_broker(&hosts, name, Validity::leaf(), false),
                ("device", [id]) => {
                    let id = DeviceId::new(*id).map_err(|e| error(&e))?;
                    pki.issue_device(&id, Validity::leaf(), false)
                }
                _ => {
                    return Err(format!(
                        "not a command of `edgefleet certs issue`: {words:?}"
                    ));
                }
            }
            .map_err(|e| error(&e))?;
            Ok(format!("{}", issued.cert_file.display()))
        }
        _ => Err(format!(
            "this test does not run `edgefleet {}`: add it here or to NEEDS_A_NODE",
            words.join(" ")
        )),
    }
}

/// Runs one guide command in `dir` (which has the guide's `k3s/`, and gets its `pki/`, `keys/`);
/// a redirection to an absolute path lands under `dir`. `None`: a command listed in NEEDS_A_NODE.
fn run_guide_command(plane: &ControlPlane, dir: &Path, line: &str) -> Option<String> {
    if NEEDS_A_NODE
        .iter()
        .any(|(prefix, _)| line.starts_with(prefix))
    {
        return None;
    }
    let mut words = words(line);
    let redirect = match words.iter().position(|w| w == ">") {
        Some(at) => {
            let target = words.get(at + 1).expect("a redirection target").clone();
            words.truncate(at);
            Some(dir.join(target.trim_start_matches('/')))
        }
        None => None,
    };
    let output = match words[0].as_str() {
        "kubectl" => {
            let mut command = plane.kubectl();
            command.args(&words[1..]).current_dir(dir);
            // No namespace controller runs here to empty and remove the namespace, which
            // `kubectl delete` would otherwise wait for (the rest is deleted, checked below).
            if words.get(1).is_some_and(|w| w == "delete") {
                command.arg("--wait=false");
            }
            run_kubectl(command).unwrap_or_else(|e| panic!("`{line}`: {e}"))
        }
        "edgefleet" => {
            let words: Vec<&str> = words[1..].iter().map(String::as_str).collect();
            edgefleet(dir, &words).unwrap_or_else(|e| panic!("`{line}`: {e}"))
        }
        other => panic!("`{line}`: the test cannot run {other}: add it to NEEDS_A_NODE or run it"),
    };
    if let Some(path) = redirect {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &output).unwrap();
    }
    if words[0] == "kubectl" && words.get(1).is_some_and(|w| w == "apply") {
        wait_for_crds(plane);
    }
    Some(output)
}

/// What the controller calls, as `kubectl auth can-i` arguments (without a namespace: cluster-wide),
/// and the Rust type or call in controller/src that makes it (for the tripwire in `check_rbac`):
/// kube.rs's reflectors, EdgeNode creation, status by server-side apply and Events recorder;
/// run.rs's Lease; bootstrap.rs's TokenReview and the agent's Pod.
const CONTROLLER_CALLS: [(&str, &str); 19] = [
    ("list handlermodules.edgefleet.dev", "HandlerModule"),
    ("watch handlermodules.edgefleet.dev", "HandlerModule"),
    ("list deviceclasses.edgefleet.dev", "DeviceClass"),
    ("watch deviceclasses.edgefleet.dev", "DeviceClass"),
    ("list edgenodes.edgefleet.dev", "EdgeNode"),
    ("watch edgenodes.edgefleet.dev", "EdgeNode"),
    ("create edgenodes.edgefleet.dev", "EdgeNode"),
    (
        "patch handlermodules.edgefleet.dev --subresource=status",
        "HandlerModule",
    ),
    (
        "patch deviceclasses.edgefleet.dev --subresource=status",
        "DeviceClass",
    ),
    (
        "patch edgenodes.edgefleet.dev --subresource=status",
        "EdgeNode",
    ),
    ("list nodes", "KubeNode"),
    ("watch nodes", "KubeNode"),
    ("get nodes", "KubeNode"),
    (
        "get leases.coordination.k8s.io/edgefleet-controller -n edgefleet",
        "LeaseManagerBuilder",
    ),
    (
        "create leases.coordination.k8s.io -n edgefleet",
        "LeaseManagerBuilder",
    ),
    (
        "patch leases.coordination.k8s.io/edgefleet-controller -n edgefleet",
        "LeaseManagerBuilder",
    ),
    ("create events.events.k8s.io -n default", "Recorder"),
    ("create tokenreviews.authentication.k8s.io", "TokenReview"),
    ("get pods -n edgefleet", "Pod"),
];

/// What the controller must not be able to do.
const CONTROLLER_REFUSED: [&str; 15] = [
    "delete nodes",
    "patch nodes",
    "get secrets",
    "get secrets -n edgefleet",
    "list configmaps",
    "create pods -n edgefleet",
    "get pods -n kube-system",
    "list pods",
    "delete edgenodes.edgefleet.dev",
    "update deviceclasses.edgefleet.dev",
    "patch handlermodules.edgefleet.dev",
    "create serviceaccounts --subresource=token -n edgefleet",
    "create certificatesigningrequests.certificates.k8s.io",
    "bind clusterroles.rbac.authorization.k8s.io",
    "impersonate users",
];

/// What the workloads that need no API must not do either (besides the test that their rules
/// are an unbound identity's).
const NOBODY_REFUSED: [&str; 8] = [
    "get nodes",
    "get pods -n edgefleet",
    "get secrets -n edgefleet",
    "get configmaps -n edgefleet",
    "get edgenodes.edgefleet.dev",
    "patch edgenodes.edgefleet.dev --subresource=status",
    "create tokenreviews.authentication.k8s.io",
    "get leases.coordination.k8s.io -n edgefleet",
];

fn service_account(name: &str) -> String {
    format!("system:serviceaccount:{NAMESPACE}:{name}")
}

/// `kubectl auth can-i <access> --as=<the ServiceAccount>`; without `-n`, in every namespace.
fn can_i(plane: &ControlPlane, account: &str, access: &str) -> bool {
    let mut command = plane.kubectl();
    command.args(["auth", "can-i"]).args(access.split(' '));
    if !access.contains(" -n ") {
        command.arg("--all-namespaces");
    }
    command.arg(format!("--as={}", service_account(account)));
    let output = command.output().unwrap();
    match String::from_utf8_lossy(&output.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {access}: {other} {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Rust types the controller reaches the API with (`Api<T>`, `Api::<T>`, the Lease manager, the
/// Events recorder) in its source.
fn api_types_in_controller() -> BTreeSet<String> {
    let mut files = Vec::new();
    files_under(&repo().join("controller/src"), &mut files);
    let mut found = BTreeSet::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        let text = read(file);
        for marker in ["LeaseManagerBuilder", "Recorder::new"] {
            if text.contains(marker) {
                found.insert(marker.trim_end_matches("::new").to_owned());
            }
        }
        for opening in ["Api::<", "Api<"] {
            for (at, _) in text.match_indices(opening) {
                let mut rest = &text[at + opening.len()..];
                if let Some(inner) = rest.strip_prefix("PartialObjectMeta<") {
                    rest = inner;
                }
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

/// The controller may do what its code calls and not more; the agent and the brokers may do
/// nothing beyond what any identity may. The tripwire: every API type in controller/src must be
/// covered by CONTROLLER_CALLS (`K` is the generic status writer, covered by the status entries).
fn check_rbac(plane: &ControlPlane) {
    let used = api_types_in_controller();
    let covered: BTreeSet<&str> = CONTROLLER_CALLS.iter().map(|(_, code)| *code).collect();
    let uncovered: Vec<&String> = used
        .iter()
        .filter(|t| *t != "K" && !covered.contains(t.as_str()))
        .collect();
    assert!(
        uncovered.is_empty(),
        "controller/src reaches the API with {uncovered:?}: add what it calls to CONTROLLER_CALLS \
         (and to k3s/rbac/controller.yaml)"
    );
    let refused: Vec<&str> = CONTROLLER_CALLS
        .iter()
        .map(|(access, _)| *access)
        .filter(|access| !can_i(plane, CONTROLLER, access))
        .collect();
    assert!(
        refused.is_empty(),
        "the controller's code calls these, its RBAC (k3s/rbac/controller.yaml) refuses them:\n{}",
        refused.join("\n")
    );
    let allowed: Vec<&str> = CONTROLLER_REFUSED
        .into_iter()
        .filter(|access| can_i(plane, CONTROLLER, access))
        .collect();
    assert!(
        allowed.is_empty(),
        "the controller may do what it must not:\n{}",
        allowed.join("\n")
    );

    // The agent's code makes no API call at all: no Kubernetes client among its dependencies.
    let manifest: toml::Table =
        toml::from_str(&read(&repo().join("edge-agent/Cargo.toml"))).unwrap();
    let dependencies = manifest["dependencies"].as_table().unwrap();
    assert!(
        !dependencies.contains_key("kube") && !dependencies.contains_key("k8s-openapi"),
        "the agent talks to the API server now: give edgefleet-agent the rights it needs here"
    );
    let rules = |account: &str| {
        kubectl(
            plane,
            &[
                "auth",
                "can-i",
                "--list",
                "-n",
                NAMESPACE,
                &format!("--as={}", service_account(account)),
            ],
        )
        .unwrap()
    };
    let nobody = rules("edgefleet-unbound-identity");
    for account in [AGENT, "edgefleet-broker"] {
        assert_eq!(
            rules(account),
            nobody,
            "{account} may do exactly what an identity no binding names may"
        );
        let allowed: Vec<&str> = NOBODY_REFUSED
            .into_iter()
            .filter(|access| can_i(plane, account, access))
            .collect();
        assert!(allowed.is_empty(), "{account} may {allowed:?}");
    }
}

/// The agent's bootstrap token: the TokenRequest the kubelet makes for its projected volume (the
/// same audience and lifetime), refused by the API server as a credential, and accepted by a
/// TokenReview for that audience made with the controller's rights.
fn check_bootstrap_token(plane: &ControlPlane, dir: &Path) {
    let token = kubectl(
        plane,
        &[
            "-n",
            NAMESPACE,
            "create",
            "token",
            AGENT,
            &format!("--audience={BOOTSTRAP_AUDIENCE}"),
            "--duration=3600s",
        ],
    )
    .unwrap()
    .trim()
    .to_owned();
    // The token as the only credential (the harness's kubeconfig holds a client certificate).
    let ca = dir.join("apiserver-ca.crt");
    std::fs::write(&ca, plane.ca_pem()).unwrap();
    let empty = dir.join("empty-kubeconfig");
    std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").unwrap();
    let mut bare = Command::new(kubectl_binary());
    bare.arg("--kubeconfig")
        .arg(&empty)
        .arg("--cache-dir")
        .arg(dir.join("kubectl-cache"))
        .arg(format!("--server={}", plane.server_url()))
        .arg(format!("--certificate-authority={}", ca.display()))
        .arg(format!("--token={token}"))
        .args(["get", "--raw", "/api"]);
    let refused = run_kubectl(bare).expect_err("the bootstrap token is no API credential");
    assert!(
        refused.to_string().contains("Unauthorized"),
        "the API server refuses the token: {refused}"
    );

    for (audiences, authenticated) in [(json!([BOOTSTRAP_AUDIENCE]), true), (json!([]), false)] {
        let review = write_json(
            dir,
            "tokenreview.json",
            &json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": { "token": token, "audiences": audiences },
            }),
        );
        let answer = kubectl(
            plane,
            &[
                "create",
                // kubectl's own schema check lists CRDs, which the controller may not; the
                // server checks the review either way.
                "--validate=false",
                "-o",
                "json",
                "-f",
                review.to_str().unwrap(),
                &format!("--as={}", service_account(CONTROLLER)),
            ],
        )
        .expect("the controller may review tokens");
        let status = serde_json::from_str::<Value>(&answer).unwrap()["status"].clone();
        assert_eq!(
            status["authenticated"].as_bool().unwrap_or(false),
            authenticated,
            "a review for audiences {audiences}: {status}"
        );
        if authenticated {
            assert_eq!(status["user"]["username"], service_account(AGENT));
            assert_eq!(status["audiences"], json!([BOOTSTRAP_AUDIENCE]));
        }
    }
}

/// The names of each ConfigMap's and Secret's keys in the namespace.
fn keys_in_namespace(plane: &ControlPlane) -> BTreeMap<(String, String), BTreeSet<String>> {
    let list: Value = serde_json::from_str(
        &kubectl(
            plane,
            &["-n", NAMESPACE, "get", "configmaps,secrets", "-o", "json"],
        )
        .unwrap(),
    )
    .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let mut keys = BTreeSet::new();
            for field in ["data", "binaryData"] {
                if let Some(map) = item[field].as_object() {
                    keys.extend(map.keys().cloned());
                }
            }
            (
                (
                    item["kind"].as_str().unwrap().to_owned(),
                    item["metadata"]["name"].as_str().unwrap().to_owned(),
                ),
                keys,
            )
        })
        .collect()
}

/// Whether a container finds a file at `path`, from its volumes and the ConfigMaps and Secrets
/// the API server holds (or an init container writes it into a shared volume).
fn provides_file(
    w: &Workload,
    container: &Value,
    path: &str,
    keys: &BTreeMap<(String, String), BTreeSet<String>>,
) -> Result<(), String> {
    let (mount, relative) =
        mount_for(container, path).ok_or_else(|| "no volume is mounted there".to_owned())?;
    let volume = w.volume(mount["name"].as_str().unwrap());
    let from = |kind: &str, source: &Value, name_key: &str| -> Option<Result<(), String>> {
        let name = source[name_key].as_str()?;
        let held = keys.get(&(kind.to_owned(), name.to_owned()));
        let Some(held) = held else {
            return Some(Err(format!("{kind} {name} does not exist")));
        };
        let key = match source["items"].as_array() {
            Some(items) => items
                .iter()
                .find(|i| i["path"] == relative.as_str())
                .and_then(|i| i["key"].as_str())?
                .to_owned(),
            None => relative.clone(),
        };
        Some(if held.contains(&key) {
            Ok(())
        } else {
            Err(format!("{kind} {name} has no key {key}"))
        })
    };
    let mut sources = vec![volume.clone()];
    if let Some(projected) = volume["projected"]["sources"].as_array() {
        sources.extend(projected.iter().cloned());
    }
    for source in &sources {
        if source["serviceAccountToken"]["path"] == relative.as_str() {
            return Ok(());
        }
        for (kind, field, name_key) in [
            ("ConfigMap", "configMap", "name"),
            ("Secret", "secret", "secretName"),
            ("Secret", "secret", "name"),
        ] {
            if let Some(found) = from(kind, &source[field], name_key) {
                return found;
            }
        }
    }
    if !volume["emptyDir"].is_null() {
        let written_by_init = w.containers().iter().any(|(c, init)| {
            *init
                && c["volumeMounts"].as_array().into_iter().flatten().any(|m| {
                    m["name"] == mount["name"]
                        && format!("{}", c["args"]).contains(&format!(
                            "> {}/{relative}",
                            m["mountPath"].as_str().unwrap()
                        ))
                })
        });
        if written_by_init {
            return Ok(());
        }
    }
    Err(format!("volume {volume} does not hold {relative}"))
}

/// Whether `path` is a writable directory of the container that outlives its restarts.
fn writable_dir(w: &Workload, container: &Value, path: &str) -> Result<(), String> {
    let (mount, relative) = mount_for(container, path).ok_or("no volume is mounted there")?;
    let volume = w.volume(mount["name"].as_str().unwrap());
    let kept = ["emptyDir", "persistentVolumeClaim", "hostPath"]
        .iter()
        .any(|k| !volume[k].is_null());
    if relative.is_empty() && kept && mount["readOnly"] != true {
        Ok(())
    } else {
        Err(format!("{mount} of {volume}"))
    }
}

/// Every file the programs are told to read is in their pods' volumes, from the Secrets and
/// ConfigMaps the guide made (what the kubelet would mount; not whether uid 65532 can read them).
fn check_files(plane: &ControlPlane, objects: &[Value]) {
    let keys = keys_in_namespace(plane);
    let mut problems = Vec::new();
    let mut check = |w: &Workload, what: &str, result: Result<(), String>| {
        if let Err(e) = result {
            problems.push(format!("{}: {what}: {e}", w.id()));
        }
    };
    let controller = workload(objects, CONTROLLER);
    for name in [
        "--tls-ca",
        "--tls-cert",
        "--tls-key",
        "--signing-key",
        "--bootstrap-tls-cert",
        "--bootstrap-tls-key",
        "--node-ca-cert",
        "--node-ca-key",
    ] {
        let path = flag(controller.main(), name).unwrap_or_default();
        check(
            &controller,
            &format!("{name}={path}"),
            provides_file(&controller, controller.main(), &path, &keys),
        );
    }
    let agent = workload(objects, AGENT);
    for name in ["--tls-ca", "--trust-anchor", "--bootstrap-token-file"] {
        let path = flag(agent.main(), name).unwrap_or_default();
        check(
            &agent,
            &format!("{name}={path}"),
            provides_file(&agent, agent.main(), &path, &keys),
        );
    }
    for (w, name) in [(controller, "--data-dir"), (agent, "--data-dir")] {
        let path = flag(w.main(), name).unwrap_or_default();
        check(
            &w,
            &format!("{name}={path}"),
            writable_dir(&w, w.main(), &path),
        );
    }
    for w in [
        workload(objects, CLOUD_BROKER),
        workload(objects, DEVICE_BROKER),
    ] {
        let c = w.main();
        let config_path = args(c).get(1).cloned().unwrap_or_default();
        check(
            &w,
            &format!("-c {config_path}"),
            provides_file(&w, c, &config_path, &keys),
        );
        for line in broker_config(objects, &w).lines() {
            let Some((option, value)) = line.split_once(' ') else {
                continue;
            };
            match option {
                "acl_file" | "cafile" | "certfile" | "keyfile" => {
                    check(&w, line, provides_file(&w, c, value, &keys));
                }
                "persistence_location" => {
                    check(&w, line, writable_dir(&w, c, value.trim_end_matches('/')));
                }
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// k3s/README.md from the top: every command of its `sh` blocks against a real API server (but
/// those NEEDS_A_NODE lists), then what the install must have made, then the uninstall.
#[test]
fn the_install_guide_runs_against_a_real_api_server() {
    let plane = ControlPlane::start().expect("the test control plane starts");
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo().join("k3s"), dir.path().join("k3s")).unwrap();
    // The node the guide labels: a Node object (no kubelet behind it).
    plane
        .apply_yaml("apiVersion: v1\nkind: Node\nmetadata:\n  name: edge-1\n")
        .unwrap();

    let commands = guide();
    let (install, uninstall): (Vec<&GuideCommand>, Vec<&GuideCommand>) = commands
        .iter()
        .partition(|c| !c.section.contains("Uninstall"));
    assert!(!uninstall.is_empty(), "the guide says how to uninstall");
    for step in &install {
        match run_guide_command(&plane, dir.path(), &step.line) {
            Some(_) => println!("ran      [{}] {}", step.section, step.line),
            None => println!("not here [{}] {}", step.section, step.line),
        }
    }
    for (prefix, why) in NEEDS_A_NODE {
        assert!(
            commands.iter().any(|c| c.line.starts_with(prefix)),
            "NEEDS_A_NODE lists `{prefix}`, which the guide no longer has"
        );
        println!("not run here: `{prefix}…`: {why}");
    }

    // The guide installs the overlay it names; K3s's auto-deploy file is that rendering.
    let applies_overlay = |line: &str| line.contains(GUIDE_OVERLAY);
    assert!(
        install
            .iter()
            .any(|c| c.line.starts_with("kubectl apply --server-side -k")
                && applies_overlay(&c.line))
    );
    let auto_deploy = dir
        .path()
        .join("var/lib/rancher/k3s/server/manifests/edgefleet.yaml");
    let rendering = render(GUIDE_OVERLAY);
    assert_eq!(read(&auto_deploy), rendering, "the auto-deploy file");
    // What K3s's deploy controller does with it (in its own way: it applies it with its own field
    // manager, not kubectl's).
    kubectl(
        &plane,
        &[
            "apply",
            "--server-side",
            "-f",
            auto_deploy.to_str().unwrap(),
        ],
    )
    .unwrap();
    let objects = objects_of(GUIDE_OVERLAY);
    let listed = kubectl(
        &plane,
        &["get", "-f", auto_deploy.to_str().unwrap(), "-o", "name"],
    )
    .unwrap();
    assert_eq!(
        listed.lines().count(),
        objects.len(),
        "every object is there:\n{listed}"
    );
    let node: Value =
        serde_json::from_str(&kubectl(&plane, &["get", "node", "edge-1", "-o", "json"]).unwrap())
            .unwrap();
    assert_eq!(node["metadata"]["labels"][EDGE_LABEL], "true");

    check_files(&plane, objects);
    check_rbac(&plane);
    check_bootstrap_token(&plane, dir.path());
    check_pods(&plane, dir.path(), objects, GUIDE_OVERLAY);

    for step in &uninstall {
        match run_guide_command(&plane, dir.path(), &step.line) {
            Some(_) => println!("ran      [{}] {}", step.section, step.line),
            None => println!("not here [{}] {}", step.section, step.line),
        }
    }
    // Gone, but the namespace, which waits for the namespace controller to empty it (the
    // operator's Secrets go with it in a real cluster).
    kubectl(
        &plane,
        &[
            "wait",
            "--for=delete",
            "--timeout=60s",
            "crd/handlermodules.edgefleet.dev",
            "crd/deviceclasses.edgefleet.dev",
            "crd/edgenodes.edgefleet.dev",
        ],
    )
    .expect("the CRDs are deleted");
    // What is left is being deleted and waits for a controller this server lacks: the namespace
    // (the namespace controller empties it; the operator's Secrets go with it) and claims
    // (the pvc-protection controller releases them).
    let left: Value = serde_json::from_str(
        &kubectl(
            &plane,
            &[
                "get",
                "-f",
                auto_deploy.to_str().unwrap(),
                "--ignore-not-found",
                "-o",
                "json",
            ],
        )
        .unwrap(),
    )
    .unwrap();
    for object in left["items"].as_array().into_iter().flatten() {
        let kind = object["kind"].as_str().unwrap_or_default();
        assert!(
            ["Namespace", "PersistentVolumeClaim"].contains(&kind)
                && !object["metadata"]["deletionTimestamp"].is_null(),
            "left after the uninstall: {kind}/{}",
            object["metadata"]["name"]
        );
    }
}
