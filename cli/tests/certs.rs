//! `edgefleet certs` through the real binary, and its certificates on real mosquitto brokers
//! running the shipped configurations and ACLs: nodes, the controller and devices connect where
//! the PKI's README says and nowhere else.

mod support;

use std::path::Path;
use std::time::Duration;

use edgefleet_protocol::NodeId;
use edgefleet_simulators::broker::{self, Broker, BrokerOptions, Shipped};
use edgefleet_simulators::pki::TlsFiles;
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};
use support::edgefleet;
use tokio::sync::mpsc;

/// Longest wait for any one expected event.
const STEP: Duration = Duration::from_secs(5);

/// A client whose event loop runs in its own task, stopping at the first connection error.
struct Conn {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
}

impl Conn {
    fn start(broker: &Broker, client_id: &str, files: &TlsFiles) -> Conn {
        let mut options = MqttOptions::new(client_id, broker.host(), broker.port());
        options.set_keep_alive(Duration::from_secs(5));
        options.set_transport(rumqttc::Transport::tls_with_config(
            files.client_config().unwrap().into(),
        ));
        let (client, mut eventloop) = broker::client(options, 16);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    return;
                }
            }
        });
        Conn { client, events }
    }

    async fn next(&mut self, what: &str) -> Result<Event, ConnectionError> {
        match tokio::time::timeout(STEP, self.events.recv()).await {
            Err(_) => panic!("nothing within {STEP:?} while waiting for {what}"),
            Ok(None) => panic!("event loop ended while waiting for {what}"),
            Ok(Some(event)) => event,
        }
    }

    /// Waits for a successful CONNACK.
    async fn connected(&mut self) {
        loop {
            match self.next("CONNACK").await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    assert_eq!(ack.code, ConnectReturnCode::Success);
                    return;
                }
                Ok(_) => {}
                Err(e) => panic!("connection error before CONNACK: {e}"),
            }
        }
    }

    /// Waits for the connection to fail before any CONNACK, and returns the error.
    async fn refused(&mut self) -> ConnectionError {
        loop {
            match self.next("the refusal").await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => panic!("connected: {ack:?}"),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = self.next("SUBACK").await.unwrap() {
                return;
            }
        }
    }

    async fn publish(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .unwrap();
    }

    async fn received(&mut self, topic: &str, payload: &[u8]) {
        loop {
            if let Event::Incoming(Packet::Publish(publish)) =
                self.next(&format!("a message on {topic}")).await.unwrap()
            {
                assert_eq!(publish.topic, topic);
                assert_eq!(&publish.payload[..], payload);
                return;
            }
        }
    }
}

/// The client files of `stem` in the PKI folder: its certificate and key, and the fleet CA to
/// verify brokers with.
fn client(pki: &Path, stem: &str) -> TlsFiles {
    TlsFiles {
        ca_file: pki.join("fleet-ca.crt"),
        cert_file: pki.join(format!("{stem}.crt")),
        key_file: pki.join(format!("{stem}.key")),
    }
}

/// The files a broker runs on: `cafile`, and the certificate and key of `broker-<name>`.
fn broker_files(pki: &Path, cafile: &str, name: &str) -> TlsFiles {
    TlsFiles {
        ca_file: pki.join(cafile),
        cert_file: pki.join(format!("broker-{name}.crt")),
        key_file: pki.join(format!("broker-{name}.key")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_the_dev_pki_connect_where_they_should() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    // The first issue makes the CAs.
    let run = edgefleet(
        cwd,
        &[
            "certs",
            "issue",
            "broker",
            "--host",
            "127.0.0.1",
            "--host",
            "localhost",
            "--name",
            "cloud",
        ],
    )
    .ok();
    assert!(
        run.stdout.starts_with("Made the CAs in pki"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("pki/node-ca.crt           cafile, as the cloud broker"),
        "{}",
        run.stdout
    );
    edgefleet(
        cwd,
        &[
            "certs",
            "issue",
            "broker",
            "--host",
            "127.0.0.1",
            "--name",
            "devices",
        ],
    )
    .ok();
    let run = edgefleet(cwd, &["certs", "issue", "node", "edge-1"]).ok();
    assert!(!run.stdout.contains("Made the CAs"), "{}", run.stdout);
    edgefleet(cwd, &["certs", "issue", "controller"]).ok();
    edgefleet(cwd, &["certs", "issue", "device", "t-17"]).ok();
    let pki = cwd.join("pki");

    // The cloud broker trusts the node CA only.
    let cloud = Broker::with_options(BrokerOptions::shipped_with_files(
        broker_files(&pki, "node-ca.crt", "cloud"),
        Shipped::Cloud,
    ))
    .unwrap();
    let mut controller = Conn::start(&cloud, "controller", &client(&pki, "controller"));
    controller.connected().await;
    controller.subscribe("ef/v1/node/+/status").await;
    let mut node = Conn::start(&cloud, "edge-1", &client(&pki, "node-edge-1"));
    node.connected().await;
    // The ACL knows both by their certificates' names: the node may write its status, the
    // controller may read it.
    node.publish("ef/v1/node/edge-1/status", b"online").await;
    controller
        .received("ef/v1/node/edge-1/status", b"online")
        .await;
    // A device certificate does not get through the TLS handshake, whatever its name.
    let error = Conn::start(&cloud, "t-17", &client(&pki, "device-t-17"))
        .refused()
        .await;
    assert!(error.to_string().contains("UnknownCA"), "{error}");
    let log = cloud.log_tail(200);
    assert!(log.contains("u'edge-1'"), "{log}");
    assert!(log.contains("u'edgefleet-controller'"), "{log}");
    assert!(!log.contains("u't-17'"), "{log}");

    // A node's device broker trusts the node CA and the device CA: the device and the node's agent
    // connect, and the device's readings reach the agent.
    let devices = Broker::with_options(BrokerOptions::shipped_with_files(
        broker_files(&pki, "device-broker-ca.crt", "devices"),
        Shipped::Device {
            node: NodeId::new("edge-1").unwrap(),
        },
    ))
    .unwrap();
    let mut agent = Conn::start(&devices, "edge-1", &client(&pki, "node-edge-1"));
    agent.connected().await;
    agent.subscribe("ef/v1/dev/+/+/up/#").await;
    let mut device = Conn::start(&devices, "t-17", &client(&pki, "device-t-17"));
    device.connected().await;
    device
        .publish("ef/v1/dev/thermostat/t-17/up/reading", b"21.5")
        .await;
    agent
        .received("ef/v1/dev/thermostat/t-17/up/reading", b"21.5")
        .await;

    // A certificate of another PKI is refused by both.
    edgefleet(cwd, &["certs", "issue", "node", "edge-1", "--dir", "other"]).ok();
    let rogue = TlsFiles {
        ca_file: pki.join("fleet-ca.crt"),
        ..client(&cwd.join("other"), "node-edge-1")
    };
    for broker in [&cloud, &devices] {
        let error = Conn::start(broker, "edge-1", &rogue).refused().await;
        assert!(error.to_string().contains("UnknownCA"), "{error}");
    }
}

#[test]
fn refuses_names_that_would_borrow_another_identitys_rights() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let run = edgefleet(cwd, &["certs", "issue", "device", "edgefleet-controller"]).fails(1);
    assert!(
        run.stderr.contains(
            "a device cannot be named \"edgefleet-controller\": that is the cloud controller's certificate name"
        ),
        "{}",
        run.stderr
    );
    assert!(!cwd.join("pki/device-edgefleet-controller.crt").exists());
    assert!(!cwd.join("pki/device-edgefleet-controller.key").exists());
    let run = edgefleet(cwd, &["certs", "issue", "node", "edgefleet-controller"]).fails(1);
    assert!(
        run.stderr.contains("a node cannot be named"),
        "{}",
        run.stderr
    );

    edgefleet(cwd, &["certs", "issue", "node", "edge-1"]).ok();
    let run = edgefleet(cwd, &["certs", "issue", "device", "edge-1"]).fails(1);
    assert!(
        run.stderr.contains("this PKI has a node of that name"),
        "{}",
        run.stderr
    );
    // Names follow the id rules; a bad one is a usage error.
    let run = edgefleet(cwd, &["certs", "issue", "device", "../t-17"]).fails(2);
    assert!(
        run.stderr.contains("identifier starts with '.'"),
        "{}",
        run.stderr
    );
    let run = edgefleet(cwd, &["certs", "issue", "node", "edge 1"]).fails(2);
    assert!(run.stderr.contains("identifier has ' '"), "{}", run.stderr);
    let run = edgefleet(cwd, &["certs", "issue", "broker", "--host", "bad host"]).fails(1);
    assert!(run.stderr.contains("not a host name"), "{}", run.stderr);

    // An existing certificate is replaced only with --force.
    let key = std::fs::read(cwd.join("pki/node-edge-1.key")).unwrap();
    let run = edgefleet(cwd, &["certs", "issue", "node", "edge-1"]).fails(1);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(std::fs::read(cwd.join("pki/node-edge-1.key")).unwrap(), key);
    edgefleet(cwd, &["certs", "issue", "node", "edge-1", "--force"]).ok();
    assert_ne!(std::fs::read(cwd.join("pki/node-edge-1.key")).unwrap(), key);
}

#[test]
fn init_and_list() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let run = edgefleet(cwd, &["certs", "list"]).fails(1);
    assert!(
        run.stderr.contains("edgefleet certs init"),
        "{}",
        run.stderr
    );

    let run = edgefleet(cwd, &["certs", "init", "--dir", "fleet", "--days", "30"]).ok();
    for line in [
        "cloud broker                 cafile fleet/node-ca.crt",
        "device brokers               cafile fleet/device-broker-ca.crt",
        "agents, controller, devices  --tls-ca fleet/fleet-ca.crt",
    ] {
        assert!(run.stdout.contains(line), "{line:?} in\n{}", run.stdout);
    }
    let run = edgefleet(cwd, &["certs", "init", "--dir", "fleet"]).ok();
    assert!(
        run.stdout.contains("exist already; nothing changed"),
        "{}",
        run.stdout
    );
    // Certificates cannot outlive their CA.
    let run = edgefleet(cwd, &["certs", "issue", "controller", "--dir", "fleet"]).fails(1);
    assert!(run.stderr.contains("ask for fewer days"), "{}", run.stderr);
    edgefleet(
        cwd,
        &[
            "certs",
            "issue",
            "controller",
            "--dir",
            "fleet",
            "--days",
            "7",
        ],
    )
    .ok();

    let run = edgefleet(cwd, &["certs", "list", "--dir", "fleet", "-o", "json"]).ok();
    let rows: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let summary: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            format!(
                "{} {} {} {}",
                row["file"].as_str().unwrap(),
                row["subject"].as_str().unwrap(),
                row["kind"].as_str().unwrap(),
                row["issuer"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "fleet/controller.crt edgefleet-controller client edgefleet node CA",
            "fleet/device-ca.crt edgefleet device CA ca edgefleet device CA",
            "fleet/fleet-ca.crt edgefleet fleet CA ca edgefleet fleet CA",
            "fleet/node-ca.crt edgefleet node CA ca edgefleet node CA",
        ]
    );
    let run = edgefleet(cwd, &["certs", "list", "--dir", "fleet"]).ok();
    assert!(
        run.stdout
            .starts_with("FILE                  SUBJECT               KIND    ISSUER"),
        "{}",
        run.stdout
    );
    let run = edgefleet(cwd, &["certs", "list", "--dir", "fleet", "-o", "yaml"]).ok();
    assert!(
        run.stdout.contains("subject: edgefleet-controller"),
        "{}",
        run.stdout
    );
}
