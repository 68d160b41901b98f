//! `edgefleet demo`: the whole system on this machine, in one command.
//!
//! It makes a development PKI and a signing key, starts the shipped brokers (mosquitto with
//! mutual TLS and the per-identity ACLs of `brokers/`: one cloud broker, one device broker per
//! node), the controller in standalone mode on an objects folder, three real edge agents (each
//! with its WasmEdge sandbox workers) and a thousand simulated devices of the four classes, each
//! with its own certificate and a correctness oracle (`edgefleet-simulators`). Then it does what
//! an operator does: the four classes run version 1.0.0 everywhere, and thermostat 1.1.0 is
//! rolled out through a canary node and waves while the devices keep talking. A live table shows
//! the fleet as `edgefleet get` does; the end shows the oracle's verdict and where to look next.
//!
//! Thermostat 1.1.0 is the same handler rebuilt (another binary, another digest: what a
//! toolchain update or a rebuild produces), so the oracle's answers hold for both versions and
//! any answer that changes during the rollout is a real fault.
//!
//! With `--kube` the controller runs in cluster mode instead, against the test control plane of
//! `edgefleet-testenv` (a real kube-apiserver and etcd, RBAC on) with its own ServiceAccount's
//! rights (`k3s/rbac`), and the modules are pushed to a real OCI registry as `edgefleet module
//! push` pushes them; the objects are applied to the API server, the EdgeNodes are the
//! controller's, and the end shows the real `kubectl get` tables. Only where the objects go, how a
//! module is named (a file or a digest) and the [`Target`] the tables are read from differ.
//!
//! Everything it starts is a child of this process (brokers, controller, agents; the agents'
//! workers die with their agent; with `--kube` the control plane and registry too): Ctrl-C, an
//! error or the end stops them all, politely first (SIGTERM), and removes the folder unless
//! `--dir` or `--keep` says to keep it.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use edgefleet_controller::resources::{DeviceClass, EdgeNode};
use edgefleet_device_modules::{Handler, handler_wasm, rebuilt};
use edgefleet_pki::{BrokerKind, FleetPki, Validity};
use edgefleet_protocol::id::{ClassId, NodeId};
use edgefleet_protocol::signing::{SigningKey, TrustAnchor};
use edgefleet_simulators::broker::{Broker, BrokerOptions, Shipped};
use edgefleet_simulators::devices::{self, ClassPlan, Kind, Plan, Report, Simulation, Snapshot};
use edgefleet_testenv::registry::Registry;
use edgefleet_testenv::{Binaries, ControlPlane, run_kubectl};
use serde_json::json;

use crate::Error;
use crate::get::{class_row, node_row, objects_table};
use crate::module::{Push, RegistryFlags, push_module};
use crate::output::to_yaml;
use crate::target::Target;

/// The nodes of the demo fleet.
const NODES: [&str; 3] = ["edge-1", "edge-2", "edge-3"];

/// `--kube`: the controller's namespace and ServiceAccount, as in `k3s/rbac/controller.yaml`.
const NAMESPACE: &str = "edgefleet";
const SERVICE_ACCOUNT: &str = "edgefleet-controller";
const CONTROLLER_RBAC: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../k3s/rbac/controller.yaml"
));

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the PKI, objects, stores and logs (kept afterwards). Default: a new temporary
    /// folder, removed at the end unless --keep.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the temporary folder (its logs/ and objects/) after the demo.
    #[arg(long)]
    keep: bool,
    /// Simulated devices, spread over the three nodes (70 % thermostats, 10 % each of meters,
    /// locks and air-quality sensors).
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Messages per second per device.
    #[arg(long, default_value_t = 0.5)]
    rate: f64,
    /// Where the controller serves its API, metrics and the fleet page.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Seconds of traffic on version 1.0.0 before the rollout starts.
    #[arg(long, default_value_t = 20)]
    before_rollout_s: u64,
    /// Seconds of traffic after the rollout completed.
    #[arg(long, default_value_t = 10)]
    after_rollout_s: u64,
    /// After the verdict, keep the brokers, the controller and the agents running (the devices
    /// stop) until Ctrl-C, to look at the fleet page and `edgefleet get`.
    #[arg(long)]
    stay: bool,
    /// Run the controller in cluster mode against the test Kubernetes control plane (a real
    /// kube-apiserver and etcd with RBAC, built by scripts/setup.sh) and a real OCI registry,
    /// instead of standalone on a folder; the end shows the real `kubectl get` output.
    #[arg(long)]
    kube: bool,
}

pub const EXAMPLES: &str = "\
Examples:
  # The local fleet: 3 nodes, 1,000 devices, a rollout (about two minutes). From a checkout,
  # scripts/demo.sh builds the binaries and runs this.
  edgefleet demo
  # Bigger, and keep the logs and objects to look at afterwards
  edgefleet demo --devices 3000 --dir ./demo
  # The same against a real kube-apiserver (scripts/setup.sh builds it); --stay keeps it up for kubectl
  edgefleet demo --kube --stay
";

pub fn run(args: DemoArgs) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Fleet(format!("cannot start the async runtime: {e}")))?;
    let interrupted = Arc::new(AtomicBool::new(false));
    runtime.block_on(async {
        let flag = interrupted.clone();
        let kube = args.kube;
        tokio::spawn(async move {
            // Ctrl-C at a terminal, SIGTERM from a supervisor or `timeout`: the same clean stop.
            let terminate = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut signal) => signal.recv().await,
                    Err(_) => std::future::pending().await,
                }
            };
            let name = tokio::select! {
                Ok(()) = tokio::signal::ctrl_c() => "Ctrl-C",
                Some(()) = terminate => "SIGTERM",
                else => return,
            };
            flag.store(true, Ordering::Relaxed);
            eprintln!(
                "\nstopping ({name}): the devices, the agents, the controller, the brokers{}",
                if kube { ", the control plane" } else { "" }
            );
        });
        let (folder, temporary) = match &args.dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("edgefleet-demo-")
                    .tempdir()
                    .map_err(|e| Error::Fleet(format!("cannot make a temporary folder: {e}")))?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        let mut demo = Demo {
            args: &args,
            dir: folder,
            interrupted,
            children: Vec::new(),
            brokers: Vec::new(),
            cluster: None,
        };
        let result = demo.run().await;
        demo.stop_all();
        match temporary {
            Some(dir) if args.keep => {
                println!("kept {}", dir.keep().display());
            }
            _ => {}
        }
        result
    })
}

/// A process the demo started.
struct Process {
    name: String,
    child: Child,
}

struct Demo<'a> {
    args: &'a DemoArgs,
    dir: PathBuf,
    interrupted: Arc<AtomicBool>,
    children: Vec<Process>,
    brokers: Vec<Broker>,
    /// `--kube`: the control plane and the registry, stopped after the children.
    cluster: Option<Cluster>,
}

/// `--kube`: what the controller runs against.
struct Cluster {
    plane: ControlPlane,
    registry: Registry,
    /// The registry's CA, for the controller and the pushes.
    registry_ca: PathBuf,
    /// The controller's ServiceAccount identity (the RBAC of `k3s/rbac`, nothing more).
    controller_kubeconfig: PathBuf,
    /// The control plane's kubectl, for the operator.
    kubectl: PathBuf,
}

impl Cluster {
    /// The control plane with the CRDs, the controller's namespace and RBAC, and a registry
    /// (blocking: tens of seconds at most).
    fn start(binaries: Binaries, dir: &Path) -> Result<Cluster, Error> {
        let plane = ControlPlane::start().map_err(|e| {
            fail(
                "cannot start the test control plane (kube-apiserver, etcd)",
                e,
            )
        })?;
        let crds = edgefleet_controller::crds::all();
        let manifests: String = crds
            .iter()
            .map(|(_, crd)| format!("{}\n---\n", edgefleet_controller::crds::to_yaml(crd)))
            .collect();
        plane
            .apply_yaml(&manifests)
            .map_err(|e| fail("cannot install the CRDs", e))?;
        let mut established = plane.kubectl();
        established.args(["wait", "--for=condition=Established", "--timeout=60s"]);
        for (_, crd) in &crds {
            established.arg(format!(
                "crd/{}",
                crd.metadata.name.as_deref().unwrap_or_default()
            ));
        }
        run_kubectl(established).map_err(|e| fail("the CRDs were not established", e))?;
        plane
            .apply_yaml(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
            ))
            .and_then(|_| plane.apply_yaml(CONTROLLER_RBAC))
            .map_err(|e| fail("cannot install the controller's RBAC", e))?;
        let controller_kubeconfig = plane
            .service_account_kubeconfig(NAMESPACE, SERVICE_ACCOUNT)
            .map_err(|e| fail("cannot make the controller's kubeconfig", e))?;
        let registry = Registry::start().map_err(|e| fail("cannot start the OCI registry", e))?;
        let registry_ca = dir.join("registry-ca.crt");
        write(&registry_ca, registry.ca_pem())?;
        Ok(Cluster {
            plane,
            registry,
            registry_ca,
            controller_kubeconfig,
            kubectl: binaries.kubectl,
        })
    }

    /// `kubectl get <kind>` as the admin: the real table, or why not.
    async fn get(&self, kind: &str) -> String {
        let mut get = self.plane.kubectl();
        get.args(["get", kind]);
        match tokio::task::spawn_blocking(move || run_kubectl(get)).await {
            Ok(Ok(table)) => table,
            Ok(Err(e)) => format!("(kubectl failed: {e})\n"),
            Err(e) => format!("(kubectl did not run: {e})\n"),
        }
    }
}

/// The demo's classes: kind, class name, handler, config (to the DeviceClass and the oracle),
/// share of the devices.
fn classes() -> Vec<(Kind, &'static str, Handler, serde_json::Value, u32)> {
    vec![
        (
            Kind::Thermostat,
            "thermostat",
            Handler::Thermostat,
            json!({"setpoint_c": 21.0, "hysteresis_c": 0.5}),
            70,
        ),
        (
            Kind::Meter,
            "meter",
            Handler::Meter,
            json!({"window": 60, "sigma": 3.0, "min_samples": 10, "summary_every": 30}),
            10,
        ),
        (
            Kind::Lock,
            "door-lock",
            Handler::Lock,
            json!({"allow": ["card-0001", "card-0002", "card-0003"], "max_failed_attempts": 5, "lockout_ms": 20000}),
            10,
        ),
        (
            Kind::AirQuality,
            "air-quality",
            Handler::AirQuality,
            json!({"window": 5, "co2_limit": 1000.0, "pm25_limit": 35.0}),
            10,
        ),
    ]
}

fn module_object(name: &str, module: &str, version: &str, file: &str) -> String {
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: HandlerModule\nmetadata:\n  name: {name}\n\
         spec:\n  module: {module}\n  version: {version}\n  file: {file}\n"
    )
}

fn class_object(
    name: &str,
    module: &str,
    config: &serde_json::Value,
    rollout: bool,
    selector: &str,
) -> String {
    let rollout = if rollout {
        "  rollout:\n    canary: {nodes: 1}\n    waves: {base: 1, factor: 2}\n    \
         gate: {minInteractions: 100, maxFaultRateIncrease: 0.01, bakeSeconds: 10}\n    \
         progressDeadlineSeconds: 300\n"
    } else {
        ""
    };
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: {name}\n\
         spec:\n  module: {module}\n  config: {config}\n  nodeSelector: {selector}\n{rollout}"
    )
}

fn fail(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Fleet(format!("{what}: {e}"))
}

/// A binary installed beside this one.
fn sibling(name: &str) -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| fail("cannot find this program's path", e))?;
    let path = exe.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::Refused(format!(
            "{} is missing: the demo runs the controller, the agent and its sandbox worker from \
             beside {}; build them with `cargo build --release -p edgefleet-cli \
             -p edgefleet-controller -p edge-agent -p edgefleet-sandbox-worker` (scripts/demo.sh \
             does, then runs the demo)",
            path.display(),
            exe.display()
        )))
    }
}

/// How the agents start their WasmEdge workers: through the private sysroot's loader when
/// scripts/setup.sh installed WasmEdge from Debian sid (as scripts/wasmedge-run does), else
/// directly.
fn sandbox_loader() -> String {
    if let Ok(loader) = std::env::var("EDGEFLEET_SANDBOX_LOADER") {
        return loader;
    }
    let prefix = std::env::var("EDGEFLEET_WASMEDGE_PREFIX")
        .unwrap_or_else(|_| "/opt/edgefleet/wasmedge".into());
    let lib = format!("{prefix}/sysroot/usr/lib/x86_64-linux-gnu");
    if Path::new(&lib).join("ld-linux-x86-64.so.2").exists() {
        format!("{lib}/ld-linux-x86-64.so.2 --library-path {lib}")
    } else {
        String::new()
    }
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|e| fail(&format!("cannot write {}", path.display()), e))
}

/// Writes an object file so that the controller never reads half of it.
fn write_object(dir: &Path, file: &str, yaml: &str) -> Result<(), Error> {
    let path = dir.join(file);
    let tmp = dir.join(format!(".{file}.tmp"));
    write(&tmp, yaml)?;
    std::fs::rename(&tmp, &path).map_err(|e| fail(&format!("cannot write {}", path.display()), e))
}

fn step(n: usize, text: &str) {
    println!("[{n}/7] {text}");
}

impl Demo<'_> {
    fn interrupted(&self) -> Result<(), Error> {
        if self.interrupted.load(Ordering::Relaxed) {
            Err(Error::Refused("stopped (Ctrl-C or SIGTERM)".into()))
        } else {
            Ok(())
        }
    }

    async fn run(&mut self) -> Result<(), Error> {
        let controller_bin = sibling("edgefleet-controller")?;
        let agent_bin = sibling("edge-agent")?;
        sibling("edgefleet-sandbox-worker")?;
        // --kube: the control plane's binaries, before anything starts.
        let binaries = if self.args.kube {
            Some(Binaries::locate().map_err(|e| Error::Refused(e.to_string()))?)
        } else {
            None
        };
        let d = self.dir.clone();
        for sub in ["pki", "objects", "logs"] {
            std::fs::create_dir_all(d.join(sub))
                .map_err(|e| fail(&format!("cannot make {}", d.join(sub).display()), e))?;
        }
        println!(
            "edgefleet demo: a local fleet in {} (Ctrl-C stops everything)",
            d.display()
        );

        step(
            1,
            "PKI (fleet, node and device CAs) and the controller's signing key",
        );
        let pki = FleetPki::init(&d.join("pki"), Validity::ca())
            .map(|(pki, _)| pki)
            .or_else(|_| FleetPki::open(&d.join("pki")))
            .map_err(|e| fail("cannot make the PKI", e))?;
        let hosts = ["127.0.0.1", "localhost"];
        let key = SigningKey::generate().map_err(|e| fail("cannot generate the signing key", e))?;
        key.save(&d.join("signing-key.pem"))
            .map_err(|e| fail("cannot save the signing key", e))?;
        let mut trust = TrustAnchor::new();
        trust.insert(key.verifying_key());
        write(
            &d.join("trust.pem"),
            trust
                .to_pem_bundle()
                .map_err(|e| fail("cannot write the trust bundle", e))?,
        )?;
        let controller_cert = pki
            .issue_controller(Validity::leaf(), true)
            .map_err(|e| fail("cannot issue the controller's certificate", e))?;

        step(2, "brokers: mosquitto with mutual TLS and the shipped ACLs");
        let cloud_cert = pki
            .issue_broker(&hosts, Some("cloud"), Validity::leaf(), true)
            .map_err(|e| fail("cannot issue the cloud broker's certificate", e))?;
        let cloud = Broker::with_options(BrokerOptions::shipped_with_files(
            pki.broker_tls_files(&cloud_cert, BrokerKind::Cloud),
            Shipped::Cloud,
        ))
        .map_err(|e| fail("cannot start the cloud broker (is mosquitto installed? scripts/setup.sh installs it)", e))?;
        let cloud_port = cloud.port();
        println!("      cloud broker     127.0.0.1:{cloud_port}");
        self.brokers.push(cloud);
        let mut device_ports = Vec::new();
        for node in NODES {
            let cert = pki
                .issue_broker(
                    &hosts,
                    Some(&format!("{node}-devices")),
                    Validity::leaf(),
                    true,
                )
                .map_err(|e| fail("cannot issue a device broker's certificate", e))?;
            let broker = Broker::with_options(BrokerOptions::shipped_with_files(
                pki.broker_tls_files(&cert, BrokerKind::Device),
                Shipped::Device {
                    node: NodeId::new(node).expect("a valid node name"),
                },
            ))
            .map_err(|e| fail("cannot start a device broker", e))?;
            println!("      {node} devices  127.0.0.1:{}", broker.port());
            device_ports.push(broker.port());
            self.brokers.push(broker);
        }

        let listen = self.args.listen;
        if std::net::TcpListener::bind(listen).is_err() {
            return Err(Error::Refused(format!(
                "{listen} is taken: choose another address for the controller with --listen"
            )));
        }
        let base = format!("http://{listen}");
        let target = match binaries {
            None => {
                step(3, "the controller, standalone, on an objects folder");
                Target::standalone(&base)?
            }
            Some(binaries) => {
                step(
                    3,
                    "the controller in cluster mode: a real kube-apiserver and etcd (RBAC on), \
                     modules in an OCI registry",
                );
                let dir = d.clone();
                let cluster = tokio::task::spawn_blocking(move || Cluster::start(binaries, &dir))
                    .await
                    .map_err(|e| fail("the control plane's start failed", e))??;
                println!("      kube-apiserver   {}", cluster.plane.server_url());
                println!("      control plane    {}", cluster.plane.dir().display());
                println!("      OCI registry     {}", cluster.registry.host_port());
                let target = Target::cluster_of(cluster.plane.admin_kubeconfig()).await?;
                self.cluster = Some(cluster);
                target
            }
        };
        let objects = d.join("objects");
        let mut fleet = String::new();
        for (_, class, handler, config, _) in classes() {
            let wasm =
                handler_wasm(handler).map_err(|e| fail("cannot build the handler modules", e))?;
            fleet.push_str(&self.module(handler, "1.0.0", &wasm).await?);
            fleet.push_str("---\n");
            // Version 1.0.0 everywhere at once; the staged rollout comes with 1.1.0 (a class's
            // first version would otherwise wait at its canary for traffic the devices, started
            // once every node runs every class, do not send yet).
            let module = format!("{}-1.0.0", handler.name());
            fleet.push_str(&class_object(
                class,
                &module,
                &config,
                false,
                self.selector(),
            ));
            fleet.push_str("---\n");
        }
        if self.cluster.is_none() {
            // In a cluster the controller creates them on each node's first status.
            for node in NODES {
                fleet.push_str(&format!(
                    "apiVersion: edgefleet.dev/v1alpha1\nkind: EdgeNode\nmetadata:\n  name: {node}\n  labels: {{fleet: demo}}\n---\n"
                ));
            }
        }
        self.apply(&target, "fleet.yaml", &fleet).await?;
        let controller_files = pki.client_tls_files(&controller_cert);
        let log = |name: &str| -> Result<Stdio, Error> {
            let path = d.join("logs").join(format!("{name}.log"));
            std::fs::File::create(&path)
                .map(Stdio::from)
                .map_err(|e| fail(&format!("cannot write {}", path.display()), e))
        };
        let mut controller = Command::new(&controller_bin);
        controller.arg("run");
        match &self.cluster {
            None => {
                controller
                    .arg("--objects")
                    .arg(&objects)
                    .env("RUST_LOG", "info");
            }
            Some(cluster) => {
                controller
                    .arg("--registry-ca")
                    .arg(&cluster.registry_ca)
                    .args(["--namespace", NAMESPACE, "--identity", "demo-controller"])
                    .env("KUBECONFIG", &cluster.controller_kubeconfig)
                    .env("RUST_LOG", "info,kube_lease_manager=warn");
            }
        }
        controller
            .arg("--data-dir")
            .arg(d.join("controller-data"))
            .args(["--cloud-broker", &format!("mqtts://127.0.0.1:{cloud_port}")])
            .arg("--tls-ca")
            .arg(&controller_files.ca_file)
            .arg("--tls-cert")
            .arg(&controller_files.cert_file)
            .arg("--tls-key")
            .arg(&controller_files.key_file)
            .arg("--signing-key")
            .arg(d.join("signing-key.pem"))
            .args(["--listen", &listen.to_string()])
            // Rates in the live table a few seconds old, not thirty (the local store is cheap).
            .args(["--status-steady-interval-s", "2"])
            .stdout(log("controller")?)
            .stderr(log("controller.err")?);
        self.spawn("controller", &mut controller)?;
        self.until(
            "the controller is ready",
            Duration::from_secs(30),
            || async {
                reqwest::get(format!("{base}/readyz"))
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
        )
        .await?;
        let api = if self.cluster.is_some() { "" } else { "API, " };
        println!("      {base}  ({api}/metrics, the fleet page at {base}/fleet)");

        step(
            4,
            "three edge agents, each with its device broker and sandbox workers",
        );
        for (node, port) in NODES.iter().zip(&device_ports) {
            let cert = pki
                .issue_node(
                    &NodeId::new(*node).expect("a valid node name"),
                    Validity::leaf(),
                    true,
                )
                .map_err(|e| fail("cannot issue a node certificate", e))?;
            let files = pki.client_tls_files(&cert);
            let mut agent = Command::new(&agent_bin);
            agent
                .args(["--node-name", node])
                .arg("--data-dir")
                .arg(d.join(format!("{node}-data")))
                .args(["--device-broker", &format!("mqtts://127.0.0.1:{port}")])
                .args([
                    "--uplink-broker",
                    &format!("mqtts://127.0.0.1:{cloud_port}"),
                ])
                .arg("--tls-ca")
                .arg(&files.ca_file)
                .arg("--tls-cert")
                .arg(&files.cert_file)
                .arg("--tls-key")
                .arg(&files.key_file)
                .arg("--trust-anchor")
                .arg(d.join("trust.pem"))
                .args(["--listen", "127.0.0.1:0"])
                .args(["--status-interval-s", "2"])
                .env("EDGEFLEET_SANDBOX_LOADER", sandbox_loader())
                .env("RUST_LOG", "info")
                .stdout(log(node)?)
                .stderr(log(&format!("{node}.err"))?);
            self.spawn(node, &mut agent)?;
        }

        step(
            5,
            "version 1.0.0 of thermostat, meter, door-lock and air-quality on every node",
        );
        let all_classes = classes().len();
        self.until(
            "every node runs the four classes",
            Duration::from_secs(180),
            || async {
                target.list::<EdgeNode>().await.is_ok_and(|nodes| {
                    nodes.len() == NODES.len()
                        && nodes.iter().all(|n| {
                            n.status.as_ref().is_some_and(|s| {
                                s.state.as_deref() == Some("Online")
                                    && s.classes.len() == all_classes
                                    && s.classes.iter().all(|c| c.active.is_some())
                            })
                        })
                })
            },
        )
        .await?;
        // The class status trails the nodes' by a round: wait for it too, so the table agrees.
        self.until(
            "every class reports ready",
            Duration::from_secs(60),
            || async {
                target.list::<DeviceClass>().await.is_ok_and(|classes| {
                    classes.len() == all_classes
                        && classes.iter().all(|c| {
                            c.status.as_ref().is_some_and(|s| {
                                s.conditions
                                    .iter()
                                    .any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                        })
                })
            },
        )
        .await?;
        print!("{}", self.fleet_table(&target).await);

        step(
            6,
            &format!(
                "{} simulated devices, {} messages/s each",
                self.args.devices, self.args.rate
            ),
        );
        let plan = Plan {
            classes: classes()
                .into_iter()
                .map(|(kind, class, _, config, weight)| ClassPlan {
                    kind,
                    class: ClassId::new(class).expect("a valid class name"),
                    config,
                    weight,
                })
                .collect(),
            devices: self.args.devices,
            prefix: "demo".into(),
            rate_per_s: self.args.rate,
            ..Plan::default()
        };
        let brokers = device_ports
            .iter()
            .map(|p| ("127.0.0.1".to_string(), *p))
            .collect();
        let connect = devices::connect_with_pki(Arc::new(pki), brokers).map_err(Error::Refused)?;
        let simulation =
            Simulation::start(plan, connect).map_err(|e| fail("cannot start the devices", e))?;
        let outcome = self.watch(&target, simulation).await;
        let (report, rollout) = outcome?;
        println!();
        print!("{}", report.table());
        print!("{}", self.fleet_table(&target).await);
        if let Some(cluster) = &self.cluster {
            // What the real kubectl shows (the CRDs' printer columns), as the admin. Since
            // Kubernetes 1.34 a bare `deviceclasses` is resource.k8s.io's (dynamic resource
            // allocation): the group, or the short name `dc`, says which.
            for kind in ["edgenodes", "deviceclasses.edgefleet.dev"] {
                print!("\n$ kubectl get {kind}\n{}", cluster.get(kind).await);
            }
        }
        println!("\nwhere to look next:");
        let running = if self.args.stay {
            ""
        } else {
            "  (with --stay)"
        };
        let fleet_flag = match &self.cluster {
            None => format!("--server {base}"),
            Some(cluster) => format!(
                "--kubeconfig {}",
                cluster.plane.admin_kubeconfig().display()
            ),
        };
        if let Some(cluster) = &self.cluster {
            println!(
                "  kubectl:          export KUBECONFIG={}; kubectl get edgefleet{running}",
                cluster.plane.admin_kubeconfig().display()
            );
            println!(
                "                    (the control plane's own kubectl: {})",
                cluster.kubectl.display()
            );
        }
        println!("  the fleet page:   {base}/fleet{running}");
        println!(
            "  the same tables:  edgefleet get nodes {fleet_flag}; edgefleet get classes {fleet_flag}{running}"
        );
        println!("  the rollout:      edgefleet rollout status thermostat {fleet_flag}{running}");
        let kept = if self.args.dir.is_some() || self.args.keep {
            ""
        } else {
            "  (removed at the end; --keep or --dir keeps it)"
        };
        if let Some(cluster) = &self.cluster {
            println!(
                "  control plane:    {}  (kube-apiserver and etcd logs; removed at the end)",
                cluster.plane.dir().display()
            );
            println!("  logs:             {}{kept}", d.join("logs").display());
        } else {
            println!("  logs and objects: {}{kept}", d.display());
        }
        println!("  docs:             docs/architecture.md, docs/rollouts.md");
        match (rollout.as_deref(), report.clean()) {
            (Some("Completed"), true) => {
                println!(
                    "\nverdict: thermostat 1.1.0 rolled out to every node, and every device got every answer right, once, in order."
                );
                if self.args.stay {
                    println!(
                        "\nthe fleet keeps running{} (the devices have stopped); Ctrl-C stops it",
                        if self.cluster.is_some() {
                            ", and the control plane with it"
                        } else {
                            ""
                        }
                    );
                    while self.interrupted().is_ok() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Ok(())
            }
            (phase, clean) => Err(Error::Refused(format!(
                "the demo did not end well: rollout {}, oracle {}",
                phase.unwrap_or("not seen"),
                if clean {
                    "clean"
                } else {
                    "found wrong, lost or duplicated answers (above)"
                }
            ))),
        }
    }

    /// Live view until the rollout is over, then the final report and the rollout's phase.
    async fn watch(
        &mut self,
        target: &Target,
        simulation: Simulation,
    ) -> Result<(Report, Option<String>), Error> {
        let started = Instant::now();
        let mut rollout_started: Option<Instant> = None;
        let mut completed: Option<Instant> = None;
        let mut phase: Option<String> = None;
        let mut previous: Option<Snapshot> = None;
        let tty = std::io::stdout().is_terminal();
        // Lines of the live view on screen, redrawn in place at a terminal (what is above stays).
        let mut drawn = 0usize;
        let mut ticks = tokio::time::interval(Duration::from_secs(2));
        let result = loop {
            ticks.tick().await;
            if let Err(e) = self.interrupted() {
                break Err(e);
            }
            let snapshot = simulation.snapshot();
            if rollout_started.is_none()
                && started.elapsed() >= Duration::from_secs(self.args.before_rollout_s)
            {
                if tty && drawn > 0 {
                    // The live view goes below the new step.
                    print!("\x1b[{drawn}F\x1b[J");
                }
                step(
                    7,
                    "thermostat 1.1.0: a canary node, then a wave of 1 node and one of the rest, each \
                     gated on 100 interactions without more faults and a 10 s bake",
                );
                drawn = 0;
                if let Err(e) = self.start_rollout(target).await {
                    break Err(e);
                }
                rollout_started = Some(Instant::now());
            }
            if rollout_started.is_some() {
                phase = target
                    .get::<DeviceClass>("thermostat")
                    .await
                    .ok()
                    .flatten()
                    .and_then(|c| c.status?.rollout)
                    // `thermostat 1.1.0`; the rollout of 1.0.0 before it is over.
                    .filter(|r| r.target_version.split_whitespace().last() == Some("1.1.0"))
                    .map(|r| r.phase);
                let over = matches!(
                    phase.as_deref(),
                    Some("Completed" | "Failed" | "RolledBack")
                );
                if over && completed.is_none() {
                    completed = Some(Instant::now());
                }
            }
            let headline = match (rollout_started, &phase) {
                (None, _) => format!(
                    "traffic on 1.0.0; thermostat 1.1.0 rolls out in {} s",
                    self.args
                        .before_rollout_s
                        .saturating_sub(started.elapsed().as_secs())
                ),
                (Some(_), Some(phase)) => format!("rollout of thermostat 1.1.0: {phase}"),
                (Some(_), None) => "rollout of thermostat 1.1.0: starting".into(),
            };
            let view = format!(
                "{headline}\n{}devices: {}\n",
                self.fleet_table(target).await,
                snapshot.progress_line(previous.as_ref()).trim_start()
            );
            if tty && drawn > 0 {
                // Up to the view's first line, and clear from there down.
                print!("\x1b[{drawn}F\x1b[J");
            }
            print!("{view}");
            drawn = view.lines().count();
            let _ = std::io::stdout().flush();
            previous = Some(snapshot);
            if let Some(at) = completed
                && at.elapsed() >= Duration::from_secs(self.args.after_rollout_s)
            {
                break Ok(());
            }
            if rollout_started.is_some_and(|at| at.elapsed() > Duration::from_secs(360)) {
                break Err(Error::Refused(format!(
                    "the rollout did not finish within 6 minutes (phase {}); the controller's log is in {}",
                    phase.as_deref().unwrap_or("unknown"),
                    self.dir.join("logs/controller.err.log").display()
                )));
            }
        };
        println!("stopping the devices; waiting for the answers still due");
        let report = simulation.stop().await;
        result.map(|()| (report, phase))
    }

    /// Thermostat 1.1.0: the module object and the class pointing at it.
    async fn start_rollout(&self, target: &Target) -> Result<(), Error> {
        let wasm = handler_wasm(Handler::Thermostat)
            .map_err(|e| fail("cannot build the thermostat", e))?;
        let module = self
            .module(Handler::Thermostat, "1.1.0", &rebuilt(&wasm, "1.1.0"))
            .await?;
        self.apply(target, "thermostat-1.1.0.yaml", &module).await?;
        let config = &classes()[0].3;
        let after = class_object(
            "thermostat",
            "thermostat-1.1.0",
            config,
            true,
            self.selector(),
        );
        if self.cluster.is_some() {
            return self.apply(target, "deviceclass/thermostat", &after).await;
        }
        let objects = self.dir.join("objects");
        let mut fleet = std::fs::read_to_string(objects.join("fleet.yaml"))
            .map_err(|e| fail("cannot read the objects", e))?;
        let before = class_object(
            "thermostat",
            "thermostat-1.0.0",
            config,
            false,
            self.selector(),
        );
        if !fleet.contains(&before) {
            return Err(Error::Refused(format!(
                "{} was changed during the demo; cannot roll out",
                objects.join("fleet.yaml").display()
            )));
        }
        fleet = fleet.replace(&before, &after);
        write_object(&objects, "fleet.yaml", &fleet)
    }

    /// The classes' node selector: the demo's label on the EdgeNode objects of the folder; in a
    /// cluster, where the controller makes the EdgeNodes, every node.
    fn selector(&self) -> &'static str {
        if self.cluster.is_some() {
            "{}"
        } else {
            "{matchLabels: {fleet: demo}}"
        }
    }

    /// A module version as a HandlerModule (YAML): in the folder, its file beside it; in a
    /// cluster, pushed to the registry as `edgefleet module push` pushes, named by digest.
    async fn module(&self, handler: Handler, version: &str, wasm: &[u8]) -> Result<String, Error> {
        let name = format!("{}-{version}", handler.name());
        let Some(cluster) = &self.cluster else {
            let file = format!("{name}.wasm");
            write(&self.dir.join("objects").join(&file), wasm)?;
            return Ok(module_object(&name, handler.name(), version, &file));
        };
        let reference = format!(
            "{}/edgefleet/{}:{version}",
            cluster.registry.host_port(),
            handler.name()
        );
        let pushed = push_module(
            &Push {
                wasm,
                source: &format!("the demo's {name}"),
                reference: &reference,
                name: Some(handler.name()),
                version: Some(version),
                object_name: Some(&name),
            },
            &RegistryFlags::trusting(cluster.registry_ca.clone()),
        )
        .await?;
        let image = pushed.module.spec.image.as_deref().unwrap_or_default();
        println!("      pushed {name:<18} {image}");
        let mut yaml = to_yaml(&pushed.module)?;
        if !yaml.ends_with('\n') {
            yaml.push('\n');
        }
        Ok(yaml)
    }

    /// Objects to the fleet: written into the objects folder (`file`, atomically), or applied to
    /// the API server (server-side apply, as `edgefleet apply` does).
    async fn apply(&self, target: &Target, file: &str, yaml: &str) -> Result<(), Error> {
        if self.cluster.is_none() {
            return write_object(&self.dir.join("objects"), file, yaml);
        }
        target
            .apply(&[(file.to_owned(), yaml.to_owned())], false)
            .await
            .map(drop)
    }

    async fn fleet_table(&self, target: &Target) -> String {
        let nodes = target.list::<EdgeNode>().await.unwrap_or_default();
        let classes = target.list::<DeviceClass>().await.unwrap_or_default();
        format!(
            "\n{}\n{}\n",
            objects_table(&nodes, node_row, false, false),
            objects_table(&classes, class_row, false, false)
        )
    }

    fn spawn(&mut self, name: &str, command: &mut Command) -> Result<(), Error> {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| fail(&format!("cannot start the {name}"), e))?;
        self.children.push(Process {
            name: name.to_string(),
            child,
        });
        Ok(())
    }

    /// Waits for `ready`, checking that no child died and that Ctrl-C was not pressed.
    async fn until<F, Fut>(
        &mut self,
        what: &str,
        limit: Duration,
        mut ready: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        loop {
            self.interrupted()?;
            if ready().await {
                return Ok(());
            }
            for process in &mut self.children {
                if let Ok(Some(status)) = process.child.try_wait() {
                    return Err(Error::Fleet(format!(
                        "the {} exited ({status}) while waiting until {what}; its log is in {}",
                        process.name,
                        self.dir.join("logs").display()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Fleet(format!(
                    "waited {} s, but not yet: {what}; the logs are in {}",
                    limit.as_secs(),
                    self.dir.join("logs").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// SIGTERM to every child (agents first, the controller, then the brokers), then SIGKILL to
    /// those still running after 10 s; then the control plane and registry of --kube.
    fn stop_all(&mut self) {
        for process in self.children.iter().rev() {
            // Our own child, not reaped yet, so the pid is still its.
            if let Some(pid) = rustix::process::Pid::from_raw(process.child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for process in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = process.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        self.children.clear();
        self.brokers.clear();
        self.cluster = None;
    }
}
