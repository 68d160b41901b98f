//! A small real fleet for the controller's tests: the shipped cloud broker (its ACL), per node a
//! shipped device broker and a real edge agent process, the controller process itself, and one PKI
//! made at test time. Objects go into a folder (standalone mode) or the API server.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_protocol::NodeId;
use edgefleet_protocol::signing::{SigningKey, TrustAnchor};
use edgefleet_simulators::broker::{self, Broker, BrokerOptions, Shipped};
use edgefleet_simulators::pki::{Authority, TlsFiles};
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use tokio::sync::mpsc;

/// A path in the repository (relative to its root).
pub fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A test control plane with the CRDs, the controller's namespace and its RBAC installed, and a
/// kubeconfig with the controller's ServiceAccount identity.
pub fn controller_plane() -> (edgefleet_testenv::ControlPlane, PathBuf) {
    let plane = edgefleet_testenv::ControlPlane::start()
        .expect("the test control plane starts (scripts/setup.sh builds it)");
    plane.apply(repo_path("k3s/crds")).unwrap();
    plane
        .apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: edgefleet\n")
        .unwrap();
    plane.apply(repo_path("k3s/rbac/controller.yaml")).unwrap();
    let kubeconfig = plane
        .service_account_kubeconfig("edgefleet", "edgefleet-controller")
        .unwrap();
    (plane, kubeconfig)
}

/// A binary of another workspace package, beside this test's own target folder (`cargo test
/// --workspace` builds every package's binaries).
pub fn workspace_binary(name: &str) -> PathBuf {
    // This package's own binary lives in the same folder (the test binary itself may run through
    // the WasmEdge sysroot's loader, so its current_exe says nothing).
    let dir = Path::new(env!("CARGO_BIN_EXE_edgefleet-controller"))
        .parent()
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p edge-agent -p edgefleet-sandbox-worker` \
         (or the whole `cargo test --workspace`)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A controller process, killed when dropped.
pub struct Replica {
    pub child: Child,
    pub port: u16,
}

impl Replica {
    /// Stops it with SIGTERM and waits.
    pub fn stop(&mut self) {
        terminate(&mut self.child);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One edge node: its device broker and its agent.
pub struct EdgeNode {
    pub devices: Broker,
    pub agent: Option<Child>,
    pub http_port: u16,
    pub data_dir: PathBuf,
    /// The controller's bootstrap URL and the token file, when the agent gets its certificate
    /// from the controller rather than from files made here.
    pub bootstrap: Option<(String, PathBuf)>,
}

pub struct Fleet {
    pub authority: Arc<Authority>,
    pub cloud: Broker,
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
    pub nodes: BTreeMap<String, EdgeNode>,
    pub controller: Option<Child>,
    pub controller_port: u16,
    /// Flags every agent started from now on gets besides the harness's own.
    pub agent_args: Vec<String>,
}

impl Fleet {
    /// The cloud broker, the PKI, the signing key; no node, no controller yet.
    pub fn new() -> Fleet {
        edgefleet_protocol::tls::install_crypto_provider();
        let authority = Arc::new(Authority::new("fleet").unwrap());
        let cloud = Broker::with_options(BrokerOptions::shipped(authority.clone(), Shipped::Cloud))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        key.save(&dir.path().join("signing-key.pem")).unwrap();
        let mut trust = TrustAnchor::new();
        trust.insert(key.verifying_key());
        std::fs::write(dir.path().join("trust.pem"), trust.to_pem_bundle().unwrap()).unwrap();
        TlsFiles::write(
            dir.path(),
            "controller",
            &authority,
            &authority.client_cert("edgefleet-controller").unwrap(),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("objects")).unwrap();
        Fleet {
            authority,
            cloud,
            dir,
            key,
            nodes: BTreeMap::new(),
            controller: None,
            controller_port: free_port(),
            agent_args: Vec::new(),
        }
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.dir.path().join("objects")
    }

    /// Writes an object file into the objects folder (standalone mode).
    pub fn write_object(&self, file: &str, yaml: &str) {
        let path = self.objects_dir().join(file);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// Starts the controller in standalone mode on the objects folder.
    pub fn start_standalone_controller(&mut self) {
        let d = self.dir.path();
        let child = Command::new(env!("CARGO_BIN_EXE_edgefleet-controller"))
            .arg("run")
            .arg("--objects")
            .arg(self.objects_dir())
            .arg("--data-dir")
            .arg(d.join("controller-data"))
            .args([
                "--cloud-broker",
                &format!("mqtts://127.0.0.1:{}", self.cloud.port()),
            ])
            .arg("--tls-ca")
            .arg(d.join("controller-ca.crt"))
            .arg("--tls-cert")
            .arg(d.join("controller.crt"))
            .arg("--tls-key")
            .arg(d.join("controller.key"))
            .arg("--signing-key")
            .arg(d.join("signing-key.pem"))
            .args(["--listen", &format!("127.0.0.1:{}", self.controller_port)])
            .env("RUST_LOG", "info")
            .stderr(logs("EDGEFLEET_TEST_CONTROLLER_LOGS"))
            .spawn()
            .expect("the controller starts");
        self.controller = Some(child);
    }

    /// Starts a controller replica in cluster mode with `kubeconfig`'s identity; returns it and
    /// its HTTP port.
    pub fn start_cluster_controller(
        &self,
        kubeconfig: &Path,
        identity: &str,
        registry_ca: &Path,
    ) -> Replica {
        self.start_cluster_controller_with(
            kubeconfig,
            identity,
            &["--registry-ca".as_ref(), registry_ca.as_os_str()],
        )
    }

    /// [`Fleet::start_cluster_controller`] with `extra_args` instead of a registry CA.
    pub fn start_cluster_controller_with(
        &self,
        kubeconfig: &Path,
        identity: &str,
        extra_args: &[&std::ffi::OsStr],
    ) -> Replica {
        let d = self.dir.path();
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_edgefleet-controller"))
            .arg("run")
            .arg("--data-dir")
            .arg(d.join(format!("{identity}-data")))
            .args([
                "--cloud-broker",
                &format!("mqtts://127.0.0.1:{}", self.cloud.port()),
            ])
            .arg("--tls-ca")
            .arg(d.join("controller-ca.crt"))
            .arg("--tls-cert")
            .arg(d.join("controller.crt"))
            .arg("--tls-key")
            .arg(d.join("controller.key"))
            .arg("--signing-key")
            .arg(d.join("signing-key.pem"))
            .args(extra_args)
            .args(["--namespace", "edgefleet", "--identity", identity])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube_lease_manager=warn")
            .stderr(logs("EDGEFLEET_TEST_CONTROLLER_LOGS"))
            .spawn()
            .expect("the controller starts");
        Replica { child, port }
    }

    pub fn stop_controller(&mut self) {
        if let Some(mut child) = self.controller.take() {
            terminate(&mut child);
        }
    }

    /// Adds a node: its device broker (shipped configuration) and its agent.
    pub fn add_node(&mut self, name: &str) {
        TlsFiles::write(
            self.dir.path(),
            name,
            &self.authority,
            &self.authority.client_cert(name).unwrap(),
        )
        .unwrap();
        self.insert_node(name, None);
        self.start_agent(name);
    }

    /// Adds a node whose agent gets its certificate from the controller's bootstrap endpoint at
    /// `url`, proving its node with the token in `token_file` (no certificate is made here).
    pub fn add_bootstrapped_node(&mut self, name: &str, url: &str, token_file: &Path) {
        let ca = self.dir.path().join(format!("{name}-ca.crt"));
        std::fs::write(ca, self.authority.ca_pem()).unwrap();
        self.insert_node(name, Some((url.to_owned(), token_file.to_owned())));
        self.start_agent(name);
    }

    /// A node's device broker (shipped configuration) and its data folder.
    fn insert_node(&mut self, name: &str, bootstrap: Option<(String, PathBuf)>) {
        let node = NodeId::new(name).unwrap();
        let devices = Broker::with_options(BrokerOptions::shipped(
            self.authority.clone(),
            Shipped::Device { node },
        ))
        .unwrap();
        let data_dir = self.dir.path().join(format!("{name}-data"));
        self.nodes.insert(
            name.to_string(),
            EdgeNode {
                devices,
                agent: None,
                http_port: free_port(),
                data_dir,
                bootstrap,
            },
        );
    }

    pub fn start_agent(&mut self, name: &str) {
        let d = self.dir.path().to_path_buf();
        let cloud_port = self.cloud.port();
        let node = self.nodes.get_mut(name).unwrap();
        let identity: Vec<std::ffi::OsString> = match &node.bootstrap {
            Some((url, token_file)) => vec![
                "--bootstrap-url".into(),
                url.into(),
                "--bootstrap-token-file".into(),
                token_file.into(),
            ],
            None => vec![
                "--tls-cert".into(),
                d.join(format!("{name}.crt")).into(),
                "--tls-key".into(),
                d.join(format!("{name}.key")).into(),
            ],
        };
        let child = Command::new(workspace_binary("edge-agent"))
            .args(["--node-name", name])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args([
                "--device-broker",
                &format!("mqtts://127.0.0.1:{}", node.devices.port()),
            ])
            .args([
                "--uplink-broker",
                &format!("mqtts://127.0.0.1:{cloud_port}"),
            ])
            .arg("--tls-ca")
            .arg(d.join(format!("{name}-ca.crt")))
            .args(identity)
            .arg("--trust-anchor")
            .arg(d.join("trust.pem"))
            .args(["--listen", &format!("127.0.0.1:{}", node.http_port)])
            .args(["--status-interval-s", "1"])
            .args(&self.agent_args)
            .env("RUST_LOG", "info")
            .stdout(logs("EDGEFLEET_TEST_AGENT_LOGS"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the agent starts");
        node.agent = Some(child);
    }

    pub fn kill_agent(&mut self, name: &str) {
        if let Some(mut child) = self.nodes.get_mut(name).unwrap().agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A device on `node`'s device broker (certificate CN = `id`), subscribed to its commands.
    pub async fn device(
        &self,
        node: &str,
        class: &str,
        id: &str,
    ) -> (AsyncClient, mpsc::Receiver<rumqttc::Publish>) {
        let broker = &self.nodes[node].devices;
        let (client, events) = broker::client(broker.mqtt_options(id).unwrap(), 1000);
        let (tx, rx) = mpsc::channel(10_000);
        tokio::spawn(drain(events, tx));
        client
            .subscribe(format!("ef/v1/dev/{class}/{id}/down/cmd"), QoS::AtLeastOnce)
            .await
            .unwrap();
        (client, rx)
    }

    /// GET from the controller's HTTP endpoints.
    pub fn controller_get(&self, path: &str) -> (u16, String) {
        http_get(self.controller_port, path)
    }

    /// The standalone API's object, as JSON (`Value::Null` while it does not exist).
    pub fn object(&self, kind: &str, name: &str) -> serde_json::Value {
        let (code, body) = self.controller_get(&format!("/api/v1alpha1/{kind}/{name}"));
        if code != 200 {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// Waits until `check` holds for the object; fails with the object's last state.
    pub async fn until_object(
        &self,
        kind: &str,
        name: &str,
        limit: Duration,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let object = self.object(kind, name);
            if check(&object) {
                return object;
            }
            assert!(
                started.elapsed() < limit,
                "{what}: {kind}/{name} after {limit:?}:\n{object:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The sum of the controller's metric samples named `name` whose labels contain `labels`.
    pub fn controller_metric(&self, name: &str, labels: &str) -> f64 {
        metric(&self.controller_get("/metrics").1, name, labels)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.agent.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn logs(variable: &str) -> Stdio {
    if std::env::var_os(variable).is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

pub fn terminate(child: &mut Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let _ = child.wait();
}

pub use edgefleet_testenv::http::get as http_get;

/// The sum of the samples of metric `name` whose labels contain `labels` (`""`: all).
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    edgefleet_testenv::http::metric(text, name, &[labels])
}

async fn drain(mut events: rumqttc::EventLoop, tx: mpsc::Sender<rumqttc::Publish>) {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if tx.send(p).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A HandlerModule of the thermostat from `file` in the objects folder (standalone mode).
pub fn module_object(name: &str, version: &str, file: &str) -> String {
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: HandlerModule\nmetadata:\n  name: {name}\n\
         spec:\n  module: thermostat\n  version: {version}\n  file: {file}\n"
    )
}

/// A thermostat reading.
pub fn reading(temp_c: f32) -> Vec<u8> {
    let mut buf = [0u8; 64];
    edgefleet_guest::cbor::to_slice(
        &edgefleet_thermostat::Reading {
            temp_c,
            setpoint_c: None,
        },
        &mut buf,
    )
    .unwrap()
    .to_vec()
}

/// Publishes `payload` every 300 ms until a message arrives on `rx` (bounded by `limit`).
pub async fn until_answered(
    client: &AsyncClient,
    topic: &str,
    payload: &[u8],
    rx: &mut mpsc::Receiver<rumqttc::Publish>,
    limit: Duration,
) -> rumqttc::Publish {
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < limit,
            "no answer on {topic} within {limit:?}"
        );
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .unwrap();
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
        {
            return message;
        }
    }
}
