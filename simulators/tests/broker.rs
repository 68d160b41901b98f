//! The broker harness against a real mosquitto with real TLS: mutual TLS round trip (and its
//! latency, which catches a missing TCP_NODELAY), refused client certificates, plain TCP, ACLs,
//! persistent sessions across an offline period and a broker restart, a broker on the PEM files of
//! a fleet PKI, and the errors for a broker that cannot start. Every MQTT wait is bounded by [`STEP`], the broker's own waits by its timeouts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_simulators::broker::{self, Broker, BrokerOptions};
use edgefleet_simulators::pki::{self, Authority};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS,
    SubscribeReasonCode, Transport,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest wait for any one expected event.
const STEP: Duration = Duration::from_secs(3);

/// A connected (or connecting) client whose event loop runs in its own task. The task stops after
/// the first connection error, so a refused client is not retried forever.
struct Conn {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    /// Events passed over while waiting for another: mosquitto may deliver a client's own publish
    /// before acknowledging it, so the order of PUBACK and PUBLISH is not fixed.
    skipped: Vec<Event>,
    poller: JoinHandle<()>,
}

fn start(options: MqttOptions) -> Conn {
    let (client, mut eventloop) = broker::client(options, 16);
    let (tx, events) = mpsc::unbounded_channel();
    let poller = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            if tx.send(event).is_err() || failed {
                return;
            }
        }
    });
    Conn {
        client,
        events,
        skipped: Vec::new(),
        poller,
    }
}

impl Conn {
    /// Waits for the first event that `pick` accepts (including events skipped earlier); panics on a
    /// connection error or after STEP.
    async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        for i in 0..self.skipped.len() {
            if let Some(found) = pick(&self.skipped[i]) {
                self.skipped.remove(i);
                return found;
            }
        }
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("no {what} within {STEP:?}"),
                Ok(None) => panic!("event loop ended before {what}"),
                Ok(Some(Err(e))) => panic!("connection error before {what}: {e}"),
                Ok(Some(Ok(event))) => match pick(&event) {
                    Some(found) => return found,
                    None => self.skipped.push(event),
                },
            }
        }
    }

    /// Waits for the CONNACK and returns its session-present flag.
    async fn connected(&mut self) -> bool {
        self.expect("CONNACK", |event| match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                Some(ack.session_present)
            }
            _ => None,
        })
        .await
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        let codes = self
            .expect("SUBACK", |event| match event {
                Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
                _ => None,
            })
            .await;
        assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    }

    async fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .unwrap();
        self.expect("PUBACK", |event| {
            matches!(event, Event::Incoming(Packet::PubAck(_))).then_some(())
        })
        .await
    }

    async fn received(&mut self, topic: &str, payload: &[u8]) {
        let what = format!("PUBLISH {payload:?} on {topic}");
        self.expect(&what, |event| match event {
            Event::Incoming(Packet::Publish(p)) if p.topic == topic && p.payload == payload => {
                Some(())
            }
            _ => None,
        })
        .await
    }

    /// Sends DISCONNECT and waits (bounded) for the event loop to end.
    async fn disconnect(self) {
        self.client.disconnect().await.unwrap();
        tokio::time::timeout(STEP, self.poller)
            .await
            .expect("event loop did not end after DISCONNECT")
            .unwrap();
    }

    /// Waits for the first event; it must be a connection error, which is returned.
    async fn refused(mut self) -> ConnectionError {
        match tokio::time::timeout(STEP, self.events.recv()).await {
            Err(_) => panic!("neither connected nor refused within {STEP:?}"),
            Ok(Some(Err(e))) => e,
            Ok(other) => panic!("expected a connection error, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_round_trip_with_identity_as_username() {
    let broker = Broker::mutual_tls().unwrap();
    let mut node = start(broker.mqtt_options("node-1").unwrap());
    assert!(!node.connected().await);
    node.subscribe("t/node-1").await;
    node.publish("t/node-1", b"hello").await;
    node.received("t/node-1", b"hello").await;

    // TCP_NODELAY on both ends: publish (QoS 1) → PUBACK to the publisher and delivery (QoS 1) to
    // another subscriber, then the next, takes well under a millisecond here; with Nagle's algorithm
    // on either side, delayed ACKs stretch some steps to 40 ms or more.
    let mut device = start(broker.mqtt_options("device-1").unwrap());
    device.connected().await;
    let rounds = 20;
    let started = Instant::now();
    for i in 0..rounds {
        let payload = format!("ping-{i}");
        device.publish("t/node-1", payload.as_bytes()).await;
        node.received("t/node-1", payload.as_bytes()).await;
        node.publish("t/node-1/reply", payload.as_bytes()).await;
    }
    let per_round = started.elapsed() / rounds;
    eprintln!("two QoS 1 publishes and one delivery over mutual TLS: {per_round:?}");
    assert!(per_round < Duration::from_millis(20), "{per_round:?}");
    device.disconnect().await;

    // The certificate's common name became the MQTT username.
    let log = broker.log_tail(100);
    assert!(log.contains("u'node-1'"), "{log}");
    node.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_valid_certificate_are_refused() {
    let broker = Broker::mutual_tls().unwrap();

    let rogue = Authority::new("rogue").unwrap();
    let impostor = rogue.client_cert("node-1").unwrap();
    let error = start(broker.mqtt_options_as("node-1", &impostor).unwrap())
        .refused()
        .await;
    // rustls reports the broker's TLS alert (the handshake itself completes under TLS 1.3, the
    // broker's verdict arrives with the first read).
    assert!(error.to_string().contains("UnknownCA"), "{error}");

    // No client certificate at all.
    pki::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let ca = broker.authority().unwrap().ca_pem();
    roots.add_parsable_certificates(
        rustls::pki_types::pem::PemObject::pem_slice_iter(ca.as_bytes()).map(Result::unwrap),
    );
    let anonymous = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut options = broker.mqtt_options("anonymous").unwrap();
    options.set_transport(Transport::tls_with_config(anonymous.into()));
    let error = start(options).refused().await;
    assert!(error.to_string().contains("CertificateRequired"), "{error}");

    // The broker still serves a valid client afterwards.
    let mut node = start(broker.mqtt_options("node-1").unwrap());
    node.connected().await;
    node.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_round_trip() {
    let broker = Broker::plain().unwrap();
    assert!(broker.authority().is_none());
    let mut client = start(broker.mqtt_options("plain-1").unwrap());
    client.connected().await;
    client.subscribe("plain/#").await;
    client.publish("plain/a", b"x").await;
    client.received("plain/a", b"x").await;
    client.disconnect().await;
    let rogue = Authority::new("rogue").unwrap();
    let identity = rogue.client_cert("x").unwrap();
    assert!(matches!(
        broker.mqtt_options_as("x", &identity),
        Err(edgefleet_simulators::BrokerError::NotTls)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_fences_clients_by_certificate_name() {
    let authority = Arc::new(Authority::new("acl").unwrap());
    let broker = Broker::with_options(
        BrokerOptions::mutual_tls(authority).acl("pattern readwrite ef/v1/node/%u/#\n"),
    )
    .unwrap();
    let mut node1 = start(broker.mqtt_options("node-1").unwrap());
    node1.connected().await;
    // mosquitto's acl_file does not check SUBSCRIBE: the wide filter is granted, and the ACL is
    // applied to each delivery (read) and each publish (write) instead.
    node1.subscribe("ef/v1/node/#").await;

    let mut node2 = start(broker.mqtt_options("node-2").unwrap());
    node2.connected().await;
    // Denied write (node-2 posing as node-1): acknowledged and dropped.
    node2.publish("ef/v1/node/node-1/spoof", b"spoof").await;
    // Allowed write, but node-1 may not read it.
    node2.publish("ef/v1/node/node-2/status", b"other").await;
    node2.disconnect().await;

    node1.publish("ef/v1/node/node-1/status", b"own").await;
    // Deliveries come in broker order: anything of node-2's would have arrived first.
    let first = node1
        .expect("first PUBLISH", |event| match event {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (first.topic.as_str(), first.payload.as_ref()),
        ("ef/v1/node/node-1/status", &b"own"[..])
    );
    node1.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_survives_offline_period_and_broker_restart() {
    let mut broker = Broker::plain().unwrap();
    let topic = "fleet/keeper/cmd";
    let mut keeper_options = broker.mqtt_options("keeper").unwrap();
    keeper_options.set_clean_session(false);

    let mut keeper = start(keeper_options.clone());
    assert!(!keeper.connected().await);
    keeper.subscribe(topic).await;
    keeper.disconnect().await;

    // Published while the keeper is offline: queued in its session.
    let mut sender = start(broker.mqtt_options("sender").unwrap());
    sender.connected().await;
    sender.publish(topic, b"while-offline").await;
    sender.disconnect().await;

    let mut keeper = start(keeper_options.clone());
    assert!(keeper.connected().await, "session not present");
    keeper.received(topic, b"while-offline").await;
    keeper.disconnect().await;

    // The session (its subscription) survives a broker restart on the same port.
    let port = broker.port();
    let stopped = Instant::now();
    broker.stop().unwrap();
    assert!(!broker.is_running());
    broker.start().unwrap();
    eprintln!("broker stop + start: {:?}", stopped.elapsed());
    assert_eq!(broker.port(), port);
    assert!(broker.is_running());

    let mut sender = start(broker.mqtt_options("sender").unwrap());
    sender.connected().await;
    sender.publish(topic, b"after-restart").await;
    sender.disconnect().await;

    let mut keeper = start(keeper_options);
    assert!(keeper.connected().await, "session lost in restart");
    keeper.received(topic, b"after-restart").await;
    keeper.disconnect().await;
}

#[test]
fn startup_failure_reports_the_log() {
    let error = Broker::with_options(BrokerOptions::plain().acl("not an acl line\n")).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, edgefleet_simulators::BrokerError::Exited { .. }),
        "{message}"
    );
    assert!(
        message.contains("mosquitto exited during startup"),
        "{message}"
    );
    assert!(message.contains("Invalid line in acl_file"), "{message}");
}

#[test]
fn restart_reports_a_port_taken_meanwhile_and_recovers() {
    let mut broker = Broker::plain().unwrap();
    broker.stop().unwrap();
    let squatter = std::net::TcpListener::bind((broker.host(), broker.port())).unwrap();
    let error = broker.start().unwrap_err();
    assert!(
        matches!(error, edgefleet_simulators::BrokerError::PortInUse { .. }),
        "{error}"
    );
    drop(squatter);
    broker.start().unwrap();
    assert!(broker.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_from_files_of_a_fleet_pki() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, _) = pki::FleetPki::init(dir.path(), pki::Validity::ca()).unwrap();
    let leaf = pki::Validity::leaf();
    let server = fleet
        .issue_broker(&["127.0.0.1"], None, leaf, false)
        .unwrap();
    let node = fleet
        .issue_node(&"node-1".parse().unwrap(), leaf, false)
        .unwrap();
    let device = fleet
        .issue_device(&"t-1".parse().unwrap(), leaf, false)
        .unwrap();
    let broker = Broker::with_options(BrokerOptions::mutual_tls_files(
        fleet.broker_tls_files(&server, pki::BrokerKind::Cloud),
    ))
    .unwrap();
    assert!(broker.authority().is_none());
    assert!(matches!(
        broker.mqtt_options("x"),
        Err(edgefleet_simulators::BrokerError::NoAuthority)
    ));

    let options = |id: &str, files: pki::TlsFiles| {
        let mut options = MqttOptions::new(id, broker.host(), broker.port());
        options.set_transport(Transport::tls_with_config(
            files.client_config().unwrap().into(),
        ));
        options
    };
    let mut client = start(options("node-1", fleet.client_tls_files(&node)));
    client.connected().await;
    client.disconnect().await;
    // Its cafile is the node CA: a device certificate is refused.
    let error = start(options("t-1", fleet.client_tls_files(&device)))
        .refused()
        .await;
    assert!(error.to_string().contains("UnknownCA"), "{error}");
}
