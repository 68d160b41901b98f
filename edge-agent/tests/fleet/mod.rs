//! The test fleet shared by the agent's end-to-end tests: real mosquitto brokers (a device broker and
//! a cloud broker) with mutual TLS from a test-time CA, a controller played by the test (a real
//! ed25519 key signing real assignments, module blobs published as chunks), sensors played by plain
//! MQTT clients, and the `edge-agent` binary with real sandbox workers and its sled store on disk.
//!
//! Each test file uses part of it.
#![allow(dead_code)]

pub use std::process::{Child, Command, Stdio};
pub use std::sync::Arc;
pub use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use edgefleet_device_modules::{Handler, handler_wasm, hostile_wasm, probe_wasm};
pub use edgefleet_guest::cbor;
pub use edgefleet_protocol::ClassLimits;
pub use edgefleet_protocol::assignment::{Assignment, HandlerSpec};
pub use edgefleet_protocol::codec;
#[allow(unused_imports)]
pub use edgefleet_protocol::event::{AgentEvent, EventKind};
pub use edgefleet_protocol::id::{ClassId, NodeId};
pub use edgefleet_protocol::manifest::{DEFAULT_CHUNK_SIZE, ModuleManifest};
pub use edgefleet_protocol::signing::{SigningKey, TrustAnchor};
#[allow(unused_imports)]
pub use edgefleet_protocol::status::{ClassStatus, NodeStatus};
pub use edgefleet_protocol::topic::Topic;
#[allow(unused_imports)]
pub use edgefleet_protocol::upstream::UpstreamMessage;
pub use edgefleet_simulators::broker::{self, Broker, BrokerOptions};
pub use edgefleet_simulators::pki::{Authority, TlsFiles};
pub use rumqttc::{AsyncClient, Event, Incoming, QoS};
pub use tokio::sync::mpsc;

pub const NODE: &str = "edge-1";

/// How the agent of a [`Fleet`] runs, besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// `--stall-after-s` (readiness bound).
    pub stall_after_s: Option<u64>,
    /// `worker_binary` in the config file, started without a loader.
    pub worker_binary: Option<std::path::PathBuf>,
    /// `--data-dir` (default: `data` in the fleet's directory).
    pub data_dir: Option<std::path::PathBuf>,
    /// More lines of the config file (TOML).
    pub config: String,
}

/// Two brokers, a controller key, the node's files, and the running agent.
pub struct Fleet {
    pub options: AgentOptions,
    pub devices: Broker,
    pub cloud: Broker,
    pub key: SigningKey,
    pub dir: tempfile::TempDir,
    pub agent: Option<Child>,
    /// Port of the agent's /healthz, /readyz and /metrics.
    pub http_port: u16,
    pub controller: AsyncClient,
    pub _controller_task: tokio::task::JoinHandle<()>,
}

impl Fleet {
    pub async fn start() -> Fleet {
        Fleet::start_with(AgentOptions::default()).await
    }

    pub async fn start_with(options: AgentOptions) -> Fleet {
        edgefleet_protocol::tls::install_crypto_provider();
        let authority = Arc::new(Authority::new("fleet").unwrap());
        let devices = Broker::with_options(BrokerOptions::mutual_tls(authority.clone())).unwrap();
        let cloud = Broker::with_options(BrokerOptions::mutual_tls(authority.clone())).unwrap();
        let key = SigningKey::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut trust = TrustAnchor::new();
        trust.insert(key.verifying_key());
        std::fs::write(dir.path().join("trust.pem"), trust.to_pem_bundle().unwrap()).unwrap();
        TlsFiles::write(
            dir.path(),
            "node",
            &authority,
            &authority.client_cert(NODE).unwrap(),
        )
        .unwrap();
        let (controller, events) = broker::client(cloud.mqtt_options("controller").unwrap(), 1000);
        let controller_task = tokio::spawn(drain(events, None, None));
        let mut fleet = Fleet {
            options,
            devices,
            cloud,
            key,
            dir,
            agent: None,
            http_port: free_port(),
            controller,
            _controller_task: controller_task,
        };
        fleet.start_agent();
        fleet
    }

    pub fn start_agent(&mut self) {
        let d = self.dir.path();
        let mut command = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
        let mut config = self.options.config.clone();
        if let Some(worker) = &self.options.worker_binary {
            config.push_str(&format!("\nworker_binary = {worker:?}\n"));
            // The wrapper runs the real worker through the loader itself.
            command.env("EDGEFLEET_SANDBOX_LOADER", "");
        }
        let config_file = d.join("agent.toml");
        std::fs::write(&config_file, config).unwrap();
        command.arg("--config").arg(config_file);
        if let Some(seconds) = self.options.stall_after_s {
            command.args(["--stall-after-s", &seconds.to_string()]);
        }
        let data_dir = self
            .options
            .data_dir
            .clone()
            .unwrap_or_else(|| d.join("data"));
        let child = command
            .args(["--node-name", NODE])
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--device-broker",
                &format!("mqtts://127.0.0.1:{}", self.devices.port()),
            ])
            .args([
                "--uplink-broker",
                &format!("mqtts://127.0.0.1:{}", self.cloud.port()),
            ])
            .arg("--tls-ca")
            .arg(d.join("node-ca.crt"))
            .arg("--tls-cert")
            .arg(d.join("node.crt"))
            .arg("--tls-key")
            .arg(d.join("node.key"))
            .arg("--trust-anchor")
            .arg(d.join("trust.pem"))
            .args(["--listen", &format!("127.0.0.1:{}", self.http_port)])
            .args(["--status-interval-s", "1"])
            .env("RUST_LOG", "info")
            // The agent logs to stdout; EDGEFLEET_TEST_AGENT_LOGS=1 shows them.
            .stdout(if std::env::var_os("EDGEFLEET_TEST_AGENT_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the agent starts");
        self.agent = Some(child);
    }

    /// Stops the agent with SIGTERM (it drains, flushes and says goodbye) and waits for it.
    pub fn stop_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = child.wait();
        }
    }

    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Publishes a module's chunks (retained) and returns its manifest.
    pub async fn publish_module(&self, name: &str, version: &str, wasm: &[u8]) -> ModuleManifest {
        let manifest =
            ModuleManifest::for_blob(name, version, 1, wasm, DEFAULT_CHUNK_SIZE).unwrap();
        for (index, chunk) in wasm.chunks(DEFAULT_CHUNK_SIZE as usize).enumerate() {
            let topic = Topic::ModuleChunk {
                module: manifest.sha256,
                index: index as u32,
            };
            self.controller
                .publish(topic.to_string(), QoS::AtLeastOnce, true, chunk.to_vec())
                .await
                .unwrap();
        }
        manifest
    }

    /// Signs and publishes (retained) an assignment of `class` to the node.
    pub async fn assign(
        &self,
        class: &str,
        generation: u64,
        manifest: ModuleManifest,
        limits: ClassLimits,
    ) {
        self.publish_assignment(&assignment(class, generation, manifest, limits))
            .await;
    }

    /// Signs and publishes (retained) `assignment`.
    pub async fn publish_assignment(&self, assignment: &Assignment) {
        let signed = self.key.sign(assignment).encode();
        self.controller
            .publish(
                assignment.topic().to_string(),
                QoS::AtLeastOnce,
                true,
                signed,
            )
            .await
            .unwrap();
    }

    /// A device client (certificate CN = `id`) and the messages it receives.
    pub async fn device(
        &self,
        id: &str,
        subscribe: &str,
    ) -> (AsyncClient, mpsc::Receiver<rumqttc::Publish>) {
        let (client, events) = broker::client(self.devices.mqtt_options(id).unwrap(), 1000);
        let (tx, rx) = mpsc::channel(10_000);
        tokio::spawn(drain(events, Some(tx), None));
        client.subscribe(subscribe, QoS::AtLeastOnce).await.unwrap();
        (client, rx)
    }

    /// A cloud-side observer of `filter`.
    pub async fn observe(&self, id: &str, filter: &str) -> mpsc::Receiver<rumqttc::Publish> {
        let (client, events) = broker::client(self.cloud.mqtt_options(id).unwrap(), 1000);
        let (tx, rx) = mpsc::channel(100_000);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        tokio::spawn(drain(events, Some(tx), Some(client)));
        rx
    }
}

/// An assignment of `class` to the node running `manifest` with an empty config, no rollout and
/// no shadow.
pub fn assignment(
    class: &str,
    generation: u64,
    manifest: ModuleManifest,
    limits: ClassLimits,
) -> Assignment {
    Assignment {
        node: NodeId::new(NODE).unwrap(),
        class: ClassId::new(class).unwrap(),
        generation,
        issued_at_ms: 0,
        shadow: None,
        rollout: None,
        handler: Some(HandlerSpec {
            module: manifest,
            config: Vec::new(),
            limits,
        }),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Fleet {
    /// GET `path` from the agent's HTTP endpoints: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        // 0 while the agent does not serve HTTP (yet).
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.http_port)) else {
            return (0, String::new());
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        (code, body)
    }
}

impl Fleet {
    /// Waits (up to `limit`) until `/readyz` answers `code`; returns its body.
    pub async fn until_readyz(&self, code: u16, limit: Duration) -> String {
        let started = Instant::now();
        loop {
            let (got, body) = self.http_get("/readyz");
            if got == code {
                return body;
            }
            assert!(
                started.elapsed() < limit,
                "/readyz stayed {got} ({body}) for {limit:?}, expected {code}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to `limit`) until metric `name` (samples with `labels`) reaches `at_least`; `what`
    /// says what the wait is for when it fails.
    pub async fn until_metric(
        &self,
        name: &str,
        labels: &str,
        at_least: f64,
        limit: Duration,
        what: &str,
    ) {
        let started = Instant::now();
        while self.metric(name, labels) < at_least {
            assert!(
                started.elapsed() < limit,
                "{what} ({name}{{{labels}}} < {at_least} after {limit:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The sum of the samples of metric `name` whose labels contain `labels` (e.g. `reason="full"`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let (_, text) = self.http_get("/metrics");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| line.split(['{', ' ']).next() == Some(name) && line.contains(labels))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

/// Polls an event loop for up to two minutes, forwarding publishes; `_client` keeps the client (and
/// so the connection) alive as long as the loop runs.
pub async fn drain(
    mut events: rumqttc::EventLoop,
    tx: Option<mpsc::Sender<rumqttc::Publish>>,
    _client: Option<AsyncClient>,
) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        match events.poll().await {
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if let Some(tx) = &tx {
                    let _ = tx.send(p).await;
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub fn reading(temp_c: f32) -> Vec<u8> {
    let mut buf = [0u8; 64];
    cbor::to_slice(
        &edgefleet_thermostat::Reading {
            temp_c,
            setpoint_c: None,
        },
        &mut buf,
    )
    .unwrap()
    .to_vec()
}

/// Receives what is already on its way (until 500 ms pass without a message); the last one, if any.
pub async fn drain_answers(rx: &mut mpsc::Receiver<rumqttc::Publish>) -> Option<rumqttc::Publish> {
    let mut last = None;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
    {
        last = Some(message);
    }
    last
}

/// Publishes `payload` every 200 ms until a message arrives on `rx` (bounded by `limit`).
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
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
        {
            return message;
        }
    }
}

/// Waits (up to `limit`) for a status on `statuses` that passes `test`; returns it. `what` says what
/// the wait is for when it fails.
pub async fn until_status(
    statuses: &mut mpsc::Receiver<rumqttc::Publish>,
    limit: Duration,
    what: &str,
    test: impl Fn(&NodeStatus) -> bool,
) -> NodeStatus {
    let started = Instant::now();
    let mut last = None;
    loop {
        assert!(
            started.elapsed() < limit,
            "{what}: not seen within {limit:?}; last status: {last:#?}"
        );
        let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), statuses.recv()).await
        else {
            continue;
        };
        let status: NodeStatus = codec::decode(&message.payload, 1 << 20).unwrap();
        if test(&status) {
            return status;
        }
        last = Some(status);
    }
}

/// The status of class `class` in `status`, if it lists it.
pub fn class_status<'a>(status: &'a NodeStatus, class: &str) -> Option<&'a ClassStatus> {
    status.classes.iter().find(|c| c.class.as_str() == class)
}

/// Waits (up to `limit`) for an agent event on `events` that passes `test`; returns it.
pub async fn until_event(
    events: &mut mpsc::Receiver<rumqttc::Publish>,
    limit: Duration,
    what: &str,
    test: impl Fn(&AgentEvent) -> bool,
) -> AgentEvent {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        assert!(
            started.elapsed() < limit,
            "{what}: no such event within {limit:?}; seen: {seen:?}"
        );
        let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), events.recv()).await
        else {
            continue;
        };
        let event: AgentEvent = codec::decode(&message.payload, 1 << 20).unwrap();
        if test(&event) {
            return event;
        }
        seen.push((event.kind, event.detail));
    }
}
