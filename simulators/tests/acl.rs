//! The shipped broker access rules (`brokers/`) against a real mosquitto with mutual TLS and
//! certificates made at test time: devices fenced to their own topics, nodes to theirs, only the
//! controller writing assignments and module chunks, no session takeover by client id, the packet
//! caps, and persistence across a restart.
//!
//! mosquitto grants every SUBSCRIBE and acknowledges every PUBLISH, denied or not; the rules act on
//! deliveries. So each negative is proved by a positive control: after the forbidden message, a
//! message on an allowed path is published that reaches the same subscriber after it (the same
//! connection, or another one after the forbidden publish was acknowledged: mosquitto queues the
//! deliveries of a publish before it acknowledges it). The control must arrive within [`STEP`] and
//! nothing forbidden before it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_protocol::digest::Sha256Digest;
use edgefleet_protocol::id::{ClassId, DeviceId, NodeId};
use edgefleet_protocol::topic::{
    self, ALL_DEVICES_UP_FILTER, ClassTopic, NODE_EVENT_FILTER, NODE_STATUS_FILTER,
    NODE_UPSTREAM_FILTER, Topic,
};
use edgefleet_protocol::wire::{MAX_DEVICE_PAYLOAD_BYTES, MAX_UPLINK_PACKET_BYTES};
use edgefleet_simulators::broker::{self, Broker, BrokerOptions, Shipped};
use edgefleet_simulators::pki::Authority;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS,
    SubscribeReasonCode,
};
use tokio::sync::mpsc;

/// Longest wait for any one expected event.
const STEP: Duration = Duration::from_secs(3);

/// The node whose agent the device broker serves.
const NODE: &str = "edge-1";
/// Another node on the cloud broker.
const OTHER_NODE: &str = "edge-2";
/// The controller's certificate name in `brokers/cloud/acl`.
const CONTROLLER: &str = "edgefleet-controller";

fn device_broker() -> Broker {
    let authority = Arc::new(Authority::new("device-broker").unwrap());
    let shipped = Shipped::Device {
        node: NodeId::new(NODE).unwrap(),
    };
    Broker::with_options(BrokerOptions::shipped(authority, shipped)).unwrap()
}

fn cloud_broker() -> Broker {
    let authority = Arc::new(Authority::new("cloud-broker").unwrap());
    Broker::with_options(BrokerOptions::shipped(authority, Shipped::Cloud)).unwrap()
}

/// A message as received: topic and payload.
type Message = (String, Vec<u8>);

/// A client whose event loop runs in its own task, which stops after the first connection error.
struct Conn {
    name: String,
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    /// Events passed over while waiting for another (mosquitto may deliver a message before it
    /// acknowledges another, so the order of acks and deliveries is not fixed).
    skipped: VecDeque<Event>,
}

impl Conn {
    /// Connects with a certificate named `name` (client id `name`) and waits for the CONNACK.
    async fn open(broker: &Broker, name: &str) -> Conn {
        Self::open_with(broker.mqtt_options(name).unwrap(), name).await
    }

    async fn open_with(options: MqttOptions, name: &str) -> Conn {
        let mut conn = Self::start(options, name);
        conn.expect("CONNACK", |event| match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                Some(())
            }
            _ => None,
        })
        .await;
        conn
    }

    fn start(options: MqttOptions, name: &str) -> Conn {
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
        Conn {
            name: name.to_owned(),
            client,
            events,
            skipped: VecDeque::new(),
        }
    }

    /// Waits for the first event that `pick` accepts (events skipped earlier first); panics on a
    /// connection error or after STEP.
    async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        if let Some(i) = self.skipped.iter().position(|event| pick(event).is_some()) {
            let event = self.skipped.remove(i).expect("index from position");
            return pick(&event).expect("picked before");
        }
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("{}: no {what} within {STEP:?}", self.name),
                Ok(None) => panic!("{}: event loop ended before {what}", self.name),
                Ok(Some(Err(e))) => panic!("{}: connection error before {what}: {e}", self.name),
                Ok(Some(Ok(event))) => match pick(&event) {
                    Some(found) => return found,
                    None => self.skipped.push_back(event),
                },
            }
        }
    }

    /// Subscribes and checks the grant (mosquitto grants every filter; see the module docs).
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

    /// Publishes at QoS 1 and waits for the PUBACK, which mosquitto sends for a denied publish too.
    async fn publish(&mut self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .unwrap();
        self.expect("PUBACK", |event| {
            matches!(event, Event::Incoming(Packet::PubAck(_))).then_some(())
        })
        .await
    }

    /// Waits for the control message `(topic, payload)` and returns every message delivered before
    /// it, in order.
    async fn before(&mut self, topic: &str, payload: &[u8]) -> Vec<Message> {
        let mut earlier = Vec::new();
        let what = format!("control {payload:?} on {topic}");
        loop {
            let message = self
                .expect(&what, |event| match event {
                    Event::Incoming(Packet::Publish(p)) => {
                        Some((p.topic.clone(), p.payload.to_vec()))
                    }
                    _ => None,
                })
                .await;
            if message.0 == topic && message.1 == payload {
                return earlier;
            }
            earlier.push(message);
        }
    }

    /// Waits for the connection to fail (events before the failure are ignored).
    async fn closed(&mut self) {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("{}: connection still open after {STEP:?}", self.name),
                Ok(None) => panic!("{}: event loop ended without an error", self.name),
                Ok(Some(Err(_))) => return,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Sends DISCONNECT and waits (bounded) for the event loop to end, so the broker has seen it.
    async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        let ended = async { while let Some(Ok(_)) = self.events.recv().await {} };
        tokio::time::timeout(STEP, ended)
            .await
            .unwrap_or_else(|_| panic!("{}: still connected after DISCONNECT", self.name));
    }
}

fn device_up(class: &str, device: &str, channel: &str) -> String {
    Topic::DeviceUp {
        class: ClassId::new(class).unwrap(),
        device: DeviceId::new(device).unwrap(),
        channel: ClassTopic::new(channel).unwrap(),
    }
    .to_string()
}

fn device_command(class: &str, device: &str) -> String {
    Topic::DeviceCommand {
        class: ClassId::new(class).unwrap(),
        device: DeviceId::new(device).unwrap(),
    }
    .to_string()
}

fn assignment(node: &str, class: &str) -> String {
    Topic::Assignment {
        node: NodeId::new(node).unwrap(),
        class: ClassId::new(class).unwrap(),
    }
    .to_string()
}

fn chunk(module: &Sha256Digest, index: u32) -> String {
    Topic::ModuleChunk {
        module: *module,
        index,
    }
    .to_string()
}

fn status(node: &str) -> String {
    Topic::Status {
        node: NodeId::new(node).unwrap(),
    }
    .to_string()
}

fn event(node: &str) -> String {
    Topic::Event {
        node: NodeId::new(node).unwrap(),
    }
    .to_string()
}

fn upstream(node: &str, class: &str, device: &str) -> String {
    Topic::Upstream {
        node: NodeId::new(node).unwrap(),
        class: ClassId::new(class).unwrap(),
        device: DeviceId::new(device).unwrap(),
        topic: ClassTopic::new("telemetry").unwrap(),
    }
    .to_string()
}

fn assignment_filter(node: &str) -> String {
    topic::node_assignment_filter(&NodeId::new(node).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_as_another_device() {
    let broker = device_broker();
    let mut agent = Conn::open(&broker, NODE).await;
    agent.subscribe(ALL_DEVICES_UP_FILTER).await;
    let cmd_b = device_command("thermostat", "dev-b");
    let mut dev_b = Conn::open(&broker, "dev-b").await;
    dev_b.subscribe(&cmd_b).await;
    let mut dev_a = Conn::open(&broker, "dev-a").await;

    // As device B: its telemetry, and a command to it.
    let up_b = device_up("thermostat", "dev-b", "telemetry");
    dev_a.publish(&up_b, b"spoof", false).await;
    dev_a.publish(&cmd_b, b"spoof-cmd", false).await;
    let own = device_up("thermostat", "dev-a", "telemetry");
    dev_a.publish(&own, b"control", false).await;
    assert_eq!(agent.before(&own, b"control").await, []);

    // Device A's forged command was acknowledged before the agent's real one was published.
    agent.publish(&cmd_b, b"real-cmd", false).await;
    assert_eq!(dev_b.before(&cmd_b, b"real-cmd").await, []);

    // The class level is not fenced (brokers/README.md): device A may use its id under any class.
    let other_class = device_up("lock", "dev-a", "event/door");
    dev_a.publish(&other_class, b"as-lock", false).await;
    assert_eq!(agent.before(&other_class, b"as-lock").await, []);
    dev_a.disconnect().await;
    dev_b.disconnect().await;
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_read_another_devices_traffic() {
    let broker = device_broker();
    let mut agent = Conn::open(&broker, NODE).await;
    let mut dev_a = Conn::open(&broker, "dev-a").await;
    // Everything, granted: the rules filter what is delivered through it.
    dev_a.subscribe("#").await;
    let mut dev_b = Conn::open(&broker, "dev-b").await;
    let cmd_b = device_command("thermostat", "dev-b");
    dev_b.subscribe(&cmd_b).await;

    // Device B's telemetry, acknowledged (its deliveries queued) before the agent publishes.
    dev_b
        .publish(&device_up("thermostat", "dev-b", "telemetry"), b"b", false)
        .await;
    agent.publish(&cmd_b, b"for-b", false).await;
    let cmd_a = device_command("thermostat", "dev-a");
    agent.publish(&cmd_a, b"for-a", false).await;

    assert_eq!(dev_a.before(&cmd_a, b"for-a").await, []);
    assert_eq!(dev_b.before(&cmd_b, b"for-b").await, []);
    // Nor its own telemetry: a device reads only its commands.
    let own = device_up("thermostat", "dev-a", "telemetry");
    dev_a.publish(&own, b"own", false).await;
    agent.publish(&cmd_a, b"again", false).await;
    assert_eq!(dev_a.before(&cmd_a, b"again").await, []);
    dev_a.disconnect().await;
    dev_b.disconnect().await;
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_takes_over_the_agents_session() {
    let broker = device_broker();
    // The agent's client id, as the agent makes it; the broker replaces it by the certificate name.
    let agent_client_id = format!("{NODE}-devices");
    let mut options = broker.mqtt_options(NODE).unwrap();
    options.set_client_id(agent_client_id.clone());
    let mut agent = Conn::open_with(options, NODE).await;
    agent.subscribe(ALL_DEVICES_UP_FILTER).await;

    // Device A connects with the agent's client ids (without use_username_as_clientid mosquitto
    // would disconnect the agent, and a clean session would wipe its queue).
    let identity = broker.authority().unwrap().client_cert("dev-a").unwrap();
    for client_id in [agent_client_id.as_str(), NODE] {
        let mut impostor = Conn::open_with(
            broker.mqtt_options_as(client_id, &identity).unwrap(),
            "dev-a as agent",
        )
        .await;
        let own = device_up("thermostat", "dev-a", "telemetry");
        impostor.publish(&own, client_id.as_bytes(), false).await;
        // `before` panics on a connection error: the agent was not disconnected.
        assert_eq!(agent.before(&own, client_id.as_bytes()).await, []);
        impostor.disconnect().await;
    }
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_only_its_own_assignments() {
    let broker = cloud_broker();
    let mut controller = Conn::open(&broker, CONTROLLER).await;
    // Retained, as assignments are.
    let theirs = assignment(OTHER_NODE, "thermostat");
    let mine = assignment(NODE, "thermostat");
    controller.publish(&theirs, b"theirs", true).await;
    controller.publish(&mine, b"mine", true).await;

    let mut node = Conn::open(&broker, NODE).await;
    // Every node's assignments, granted: retained ones are delivered (or not) on subscribing.
    node.subscribe("ef/v1/node/+/assign/+").await;
    let control = assignment(NODE, "control");
    controller.publish(&control, b"control", false).await;
    assert_eq!(
        node.before(&control, b"control").await,
        [(mine.clone(), b"mine".to_vec())]
    );
    // Live deliveries too.
    controller.publish(&theirs, b"theirs-2", false).await;
    controller.publish(&control, b"control-2", false).await;
    assert_eq!(node.before(&control, b"control-2").await, []);

    // The other node reads its own.
    let mut other = Conn::open(&broker, OTHER_NODE).await;
    other.subscribe(&assignment_filter(OTHER_NODE)).await;
    let control = assignment(OTHER_NODE, "control");
    controller.publish(&control, b"control", false).await;
    assert_eq!(
        other.before(&control, b"control").await,
        [(theirs, b"theirs".to_vec())]
    );
    node.disconnect().await;
    other.disconnect().await;
    controller.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_controller_writes_assignments_and_module_chunks() {
    let broker = cloud_broker();
    let module = Sha256Digest::of(b"module");
    let other_module = Sha256Digest::of(b"other module");
    let their_assignment = assignment(OTHER_NODE, "thermostat");
    let their_chunk = chunk(&module, 0);
    let mut controller = Conn::open(&broker, CONTROLLER).await;
    controller.publish(&their_assignment, b"signed", true).await;
    controller.publish(&their_chunk, b"chunk", true).await;

    let mut other = Conn::open(&broker, OTHER_NODE).await;
    let chunks = topic::module_chunk_filter(&module);
    other.subscribe(&assignment_filter(OTHER_NODE)).await;
    other.subscribe(&chunks).await;
    let control = assignment(OTHER_NODE, "control");
    controller.publish(&control, b"control-1", false).await;
    let mut published = vec![
        (their_assignment.clone(), b"signed".to_vec()),
        (their_chunk.clone(), b"chunk".to_vec()),
    ];
    published.sort();
    let mut received = other.before(&control, b"control-1").await;
    received.sort();
    assert_eq!(received, published);

    // A node overwriting the other's retained assignment and chunk, and writing its own assignment
    // and a new module.
    let mut node = Conn::open(&broker, NODE).await;
    let own_assignment = assignment(NODE, "thermostat");
    let forgeries = [
        their_assignment.clone(),
        their_chunk.clone(),
        own_assignment.clone(),
        chunk(&other_module, 0),
    ];
    for topic in &forgeries {
        node.publish(topic, b"forged", true).await;
    }
    // Not delivered live …
    controller.publish(&control, b"control-2", false).await;
    assert_eq!(other.before(&control, b"control-2").await, []);
    // … nor retained: subscribing again delivers the retained messages again, still the
    // controller's.
    other.subscribe(&assignment_filter(OTHER_NODE)).await;
    other.subscribe(&chunks).await;
    other
        .subscribe(&topic::module_chunk_filter(&other_module))
        .await;
    controller.publish(&control, b"control-3", false).await;
    let mut received = other.before(&control, b"control-3").await;
    received.sort();
    assert_eq!(received, published);
    // Nor on the node's own assignment topic, which it may read.
    node.subscribe(&assignment_filter(NODE)).await;
    let own_control = assignment(NODE, "control");
    controller.publish(&own_control, b"control", false).await;
    assert_eq!(node.before(&own_control, b"control").await, []);
    node.disconnect().await;
    other.disconnect().await;
    controller.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_writes_only_its_own_status_events_and_upstream() {
    let broker = cloud_broker();
    let mut controller = Conn::open(&broker, CONTROLLER).await;
    for filter in [NODE_STATUS_FILTER, NODE_EVENT_FILTER, NODE_UPSTREAM_FILTER] {
        controller.subscribe(filter).await;
    }
    let mut node = Conn::open(&broker, NODE).await;
    for topic in [
        status(OTHER_NODE),
        event(OTHER_NODE),
        upstream(OTHER_NODE, "thermostat", "t-1"),
    ] {
        node.publish(&topic, b"forged", false).await;
    }
    let own = [
        status(NODE),
        event(NODE),
        upstream(NODE, "thermostat", "t-1"),
    ];
    for topic in &own {
        node.publish(topic, b"own", false).await;
    }
    // Only the node's own, in order, the last one being the control.
    assert_eq!(
        controller.before(&own[2], b"own").await,
        [
            (own[0].clone(), b"own".to_vec()),
            (own[1].clone(), b"own".to_vec())
        ]
    );
    // A node does not read the other nodes' upstream messages.
    node.subscribe(NODE_UPSTREAM_FILTER).await;
    let mut other = Conn::open(&broker, OTHER_NODE).await;
    other
        .publish(&upstream(OTHER_NODE, "thermostat", "t-2"), b"theirs", false)
        .await;
    let control = assignment(NODE, "control");
    node.subscribe(&assignment_filter(NODE)).await;
    controller.publish(&control, b"control", false).await;
    assert_eq!(node.before(&control, b"control").await, []);
    other.disconnect().await;
    node.disconnect().await;
    controller.disconnect().await;
}

/// Publishes from `publisher` on `topic` the largest packet the broker accepts under `max`, which
/// `subscriber` receives, then one byte more, which closes the publisher's connection and is not
/// delivered: `subscriber` gets `control` (published by `controller` after the closure) first.
///
/// mosquitto 2.0 compares 1 + the remaining length with `max_packet_size`: the fixed header's first
/// byte counts, the 1–4 bytes encoding the length do not. So the largest whole packet accepted is a
/// few bytes over `max`, and any packet of at most `max` bytes is accepted.
async fn packet_cap_holds(
    broker: &Broker,
    max: usize,
    (name, topic): (&str, &str),
    subscriber: &mut Conn,
    (controller, control): (&mut Conn, &str),
) {
    let mut options = broker.mqtt_options(name).unwrap();
    // The client's own cap must not stop the over-cap packet before the broker sees it.
    options.set_max_packet_size(2 * max, 2 * max);
    let mut publisher = Conn::open_with(options, name).await;
    // A QoS 1 PUBLISH's remaining length: topic length (2 bytes), topic, packet id (2), payload.
    let payload_len = |remaining_length: usize| remaining_length - 2 - topic.len() - 2;
    let fits = vec![b'f'; payload_len(max - 1)];
    publisher.publish(topic, &fits, false).await;
    assert_eq!(subscriber.before(topic, &fits).await, []);

    let over = vec![b'o'; payload_len(max)];
    publisher
        .client
        .publish(topic, QoS::AtLeastOnce, false, over)
        .await
        .unwrap();
    publisher.closed().await;
    controller.publish(control, b"control", false).await;
    assert_eq!(subscriber.before(control, b"control").await, []);
    let log = broker.log_tail(20);
    let reason = format!("Client {name} disconnected due to oversize packet.");
    assert!(log.contains(&reason), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_broker_caps_packets() {
    let device = Shipped::Device {
        node: NodeId::new(NODE).unwrap(),
    };
    // The protocol's largest device payload with its topic and header.
    let max = device.max_packet_bytes().unwrap();
    assert_eq!(max, MAX_DEVICE_PAYLOAD_BYTES + 1024);
    let broker = device_broker();
    let mut agent = Conn::open(&broker, NODE).await;
    agent.subscribe(ALL_DEVICES_UP_FILTER).await;
    let mut dev_b = Conn::open(&broker, "dev-b").await;
    let control = device_up("thermostat", "dev-b", "telemetry");
    let topic = device_up("thermostat", "dev-a", "telemetry");
    packet_cap_holds(
        &broker,
        max,
        ("dev-a", &topic),
        &mut agent,
        (&mut dev_b, &control),
    )
    .await;
    dev_b.disconnect().await;
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_broker_caps_packets() {
    let max = Shipped::Cloud.max_packet_bytes().unwrap();
    assert_eq!(max, MAX_UPLINK_PACKET_BYTES);
    let broker = cloud_broker();
    let mut controller = Conn::open(&broker, CONTROLLER).await;
    controller.subscribe(NODE_UPSTREAM_FILTER).await;
    let mut other = Conn::open(&broker, OTHER_NODE).await;
    let control = upstream(OTHER_NODE, "thermostat", "t-2");
    let topic = upstream(NODE, "thermostat", "t-1");
    packet_cap_holds(
        &broker,
        max,
        (NODE, &topic),
        &mut controller,
        (&mut other, &control),
    )
    .await;
    other.disconnect().await;
    controller.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_queued_messages_survive_a_broker_restart() {
    let mut broker = device_broker();
    let mut options = broker.mqtt_options(NODE).unwrap();
    options.set_clean_session(false);
    let mut agent = Conn::open_with(options.clone(), NODE).await;
    agent.subscribe(ALL_DEVICES_UP_FILTER).await;
    agent.disconnect().await;

    let mut device = Conn::open(&broker, "dev-a").await;
    let topic = device_up("thermostat", "dev-a", "telemetry");
    device.publish(&topic, b"while-away", false).await;
    device.disconnect().await;
    broker.stop().unwrap();
    broker.start().unwrap();

    let mut agent = Conn::open_with(options, NODE).await;
    assert_eq!(agent.before(&topic, b"while-away").await, []);
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_assignments_survive_a_cloud_broker_restart() {
    let mut broker = cloud_broker();
    let mut controller = Conn::open(&broker, CONTROLLER).await;
    let topic = assignment(NODE, "thermostat");
    controller.publish(&topic, b"signed", true).await;
    controller.disconnect().await;
    broker.stop().unwrap();
    broker.start().unwrap();

    let mut node = Conn::open(&broker, NODE).await;
    node.subscribe(&assignment_filter(NODE)).await;
    assert_eq!(node.before(&topic, b"signed").await, []);
    node.disconnect().await;
}
