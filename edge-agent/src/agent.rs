//! Wires the agent together, runs it until SIGTERM (or the given shutdown future), and stops it in
//! order.
//!
//! ```text
//! device broker ◄──► device link ──offer──► Interactions (intake, lanes) ──► Sandbox workers
//!                         ▲                        │
//!                         └─ commands, acks ◄──────┤ commit: Store (state + outbox), flush
//! cloud broker  ◄──► uplink ──try_send──► assignment task (verify, fetch, compile, swap)
//!                      ▲  ▲
//!                      │  └── Outbound ◄── publisher ◄── outbox
//!                      └───── status (retained, last will offline)
//! watchdog (1 s): intake and faults ─► Health (/readyz) and metrics
//! ```
//!
//! **Shutdown**: stop taking device messages (new ones stay unacknowledged for the next run), let the
//! lanes finish what the intake holds (bounded), flush, give the publisher a moment, publish the
//! "offline" status, disconnect; every task is stopped through one `watch` and awaited.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use edgefleet_protocol::codec;
use edgefleet_protocol::id::NodeId;
use edgefleet_protocol::signing::TrustAnchor;
use edgefleet_protocol::status::NodeStatus;
use edgefleet_protocol::topic::{self, Topic};
use edgefleet_protocol::wire::{MAX_DEVICE_PAYLOAD_BYTES, MAX_UPLINK_PACKET_BYTES};
use edgefleet_sandbox::{Sandbox, SandboxConfig, WorkerCommand};
use prometheus_client::registry::Registry;
use rumqttc::{LastWill, QoS};
use tokio::sync::{Notify, mpsc, watch};

use crate::activity::DeviceActivity;
use crate::assignments::Assignments;
use crate::classes::ClassTable;
use crate::clock::now_ms;
use crate::config::{AgentConfig, ClientIdentity};
use crate::context::Context;
use crate::events::EventThrottle;
use crate::health::{self, Health};
use crate::http::{self, Endpoints};
use crate::identity::NodeIdentity;
use crate::intake::IntakeLimits;
use crate::interactions::Interactions;
use crate::link::{Link, LinkSettings, Outbound, Subscriptions};
use crate::metrics::{AgentMetrics, LinkLabels};
use crate::publisher;
use crate::status::StatusReporter;
use crate::store::{OutboxLimits, Store, StoreOptions, WhenFull};

/// Room for the topic and the MQTT header on top of a payload, in bytes.
const TOPIC_ROOM: usize = 1024;
/// Uplink messages (assignments, module chunks) waiting for the assignment task, at most.
const ASSIGNMENT_QUEUE: usize = 256;
/// How long shutdown waits for the lanes to finish what the intake holds.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the outbox to drain.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Devices heard from within this window count as active.
const ACTIVE_WINDOW: Duration = Duration::from_secs(60);
/// The window of the event throttle.
const EVENT_WINDOW: Duration = Duration::from_secs(10);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read {what} from {path}: {detail}")]
    File {
        what: &'static str,
        path: std::path::PathBuf,
        detail: String,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Sandbox(#[from] edgefleet_sandbox::StartError),
}

/// Runs the agent until `shutdown` completes, then drains and stops.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    edgefleet_protocol::tls::install_crypto_provider();
    let metrics = Arc::new(AgentMetrics::default());
    let mut shutdown = std::pin::pin!(shutdown);
    // A certificate from the controller (--bootstrap-url) may take a while: a shutdown meanwhile
    // ends the run before anything started.
    let (tls, identity) = tokio::select! {
        tls = tls_config(&config, &metrics) => tls?,
        () = &mut shutdown => return Ok(()),
    };
    let started_at_ms = now_ms();
    let trust = TrustAnchor::load(&config.trust_anchor).map_err(|e| AgentError::File {
        what: "the controller's public keys",
        path: config.trust_anchor.clone(),
        detail: e.to_string(),
    })?;
    let store = Store::open_with(
        config.data_dir.join("db"),
        StoreOptions {
            outbox: OutboxLimits {
                max_entries: config.outbox_max_entries,
                max_bytes: config.outbox_max_bytes,
                when_full: WhenFull::DropOldest,
            },
            ..StoreOptions::default()
        },
    )?;
    let mut sandbox_config = SandboxConfig::new(
        WorkerCommand::new(&config.worker_binary),
        config.data_dir.join("artefacts"),
    );
    sandbox_config.workers = config.workers;
    let sandbox = Arc::new(Sandbox::start(sandbox_config)?);
    let wasmedge_version = sandbox.wasmedge_version().to_string();
    let agent_version = env!("CARGO_PKG_VERSION").to_string();

    let mut registry = Registry::default();
    metrics.register(&mut registry);
    sandbox.metrics().register(&mut registry);

    let ctx = Arc::new(Context {
        node: config.node.clone(),
        sandbox,
        store: store.clone(),
        classes: ClassTable::default(),
        metrics: metrics.clone(),
        outbox_ready: Arc::new(Notify::new()),
        activity: DeviceActivity::new(ACTIVE_WINDOW),
        throttle: EventThrottle::new(EVENT_WINDOW),
    });
    let (stop_tx, stop) = watch::channel(false);
    let identity_task = identity.map(|identity| tokio::spawn(identity.run(stop.clone())));

    // Every device on the device broker is this node's (one agent per device broker): messages of
    // classes not assigned here are refused and reported rather than left unseen.
    let device_subscriptions = Subscriptions::default();
    device_subscriptions.add(topic::ALL_DEVICES_UP_FILTER.to_string());
    let interactions = Interactions::new(
        ctx.clone(),
        IntakeLimits {
            max_messages: config.intake_max_messages,
            ..IntakeLimits::default()
        },
        config.max_payload_bytes,
    );

    let uplink_subscriptions = Subscriptions::default();
    uplink_subscriptions.add(topic::node_assignment_filter(&config.node));
    let will = NodeStatus::last_will(
        config.node.clone(),
        agent_version.clone(),
        wasmedge_version.clone(),
        edgefleet_guest_abi::ABI_VERSION,
        started_at_ms,
        started_at_ms,
    );
    let (assignment_tx, assignment_rx) = mpsc::channel(ASSIGNMENT_QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    let sink_overflowed = overflowed.clone();
    let outbound = Arc::new(Outbound::default());
    let uplink = Link::start(
        LinkSettings {
            name: "uplink",
            broker: config.uplink_broker.clone(),
            client_id: format!("{}-uplink", config.node),
            tls: tls.clone(),
            // The outbox, not the MQTT session, carries what must survive a cut (see publisher).
            persistent_session: false,
            subscriptions: uplink_subscriptions.clone(),
            last_will: Some(LastWill::new(
                status_topic(&config.node),
                codec::encode(&will),
                QoS::AtLeastOnce,
                true,
            )),
            max_incoming_bytes: MAX_UPLINK_PACKET_BYTES,
            max_outgoing_bytes: MAX_UPLINK_PACKET_BYTES,
            manual_acks: false,
            pressure: None,
        },
        // Assignments and module chunks are retained: one dropped here comes again after the
        // reconnect that the assignment task asks for when it sees the overflow.
        Box::new(move |publish| {
            if assignment_tx.try_send(publish).is_err() {
                sink_overflowed.store(true, Ordering::Release);
            }
        }),
        Some(outbound.clone()),
    );

    let mut assignments =
        Assignments::new(ctx.clone(), trust, uplink.clone(), uplink_subscriptions);
    assignments.restore().await;
    // Devices are read only once the stored classes run (or are known to be restoring): a message
    // redelivered at start must not find its class missing.
    let sink = interactions.clone();
    let device_link = Link::start(
        LinkSettings {
            name: "device",
            broker: config.device_broker.clone(),
            client_id: format!("{}-devices", config.node),
            tls,
            persistent_session: true,
            subscriptions: device_subscriptions,
            last_will: None,
            // The protocol's cap, which the shipped device broker enforces (brokers/device,
            // max_packet_size): a payload over max_payload_bytes but within it is read, refused and
            // acked. A larger packet would drop this connection (and, at QoS 1, come again), so
            // the broker's cap must not exceed this one.
            max_incoming_bytes: MAX_DEVICE_PAYLOAD_BYTES + TOPIC_ROOM,
            max_outgoing_bytes: MAX_DEVICE_PAYLOAD_BYTES + TOPIC_ROOM,
            manual_acks: true,
            pressure: Some(interactions.pressure()),
        },
        Box::new(move |publish| sink.offer(publish)),
        None,
    );
    interactions.attach(device_link.clone());
    let assignment_task = tokio::spawn(assignments.run(assignment_rx, overflowed, stop.clone()));
    let publisher_task = tokio::spawn(publisher::run(
        ctx.clone(),
        uplink.clone(),
        outbound,
        stop.clone(),
    ));
    let status = StatusReporter::new(
        ctx.clone(),
        uplink.clone(),
        device_link.clone(),
        started_at_ms,
        agent_version,
        wasmedge_version,
    );
    let status_task = tokio::spawn(status.run(config.status_interval, stop.clone()));
    let health = Arc::new(Health::default());
    let watchdog_task = tokio::spawn(watchdog(
        interactions.clone(),
        health.clone(),
        metrics.clone(),
        [device_link.clone(), uplink.clone()],
        config.stall_after,
        stop.clone(),
    ));
    let endpoints = Arc::new(Endpoints { registry, health });
    let listen = config.listen;
    let http_task = tokio::spawn(async move {
        if let Err(e) = http::serve(listen, endpoints).await {
            tracing::error!(%listen, "cannot serve health and metrics: {e}");
        }
    });
    let lanes = interactions.start_lanes(config.workers * 2);
    tracing::info!(node = %config.node, "agent running");

    shutdown.await;
    tracing::info!("shutting down: draining the intake");
    interactions.close();
    let left = interactions.drain(Instant::now() + DRAIN_TIMEOUT).await;
    if left > 0 {
        tracing::warn!(
            left,
            "messages not handled before the drain timeout; the broker delivers QoS 1 ones again"
        );
    }
    for lane in lanes {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, lane).await;
    }
    store.flush_async().await?;
    let publish_until = Instant::now() + PUBLISH_TIMEOUT;
    while store.outbox_depth().map(|d| d.entries).unwrap_or(0) > 0
        && uplink.is_connected()
        && Instant::now() < publish_until
    {
        ctx.outbox_ready.notify_one();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    for task in [assignment_task, publisher_task, status_task, watchdog_task]
        .into_iter()
        .chain(identity_task)
    {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let _ = uplink
        .publish_status(status_topic(&config.node), codec::encode(&will))
        .await;
    uplink.disconnect().await;
    device_link.disconnect().await;
    http_task.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Looks at the agent once per [`health::WATCH_INTERVAL`]: readiness, and the link counters.
async fn watchdog(
    interactions: Arc<Interactions>,
    health: Arc<Health>,
    metrics: Arc<AgentMetrics>,
    links: [Link; 2],
    stall_after: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let [device_link, uplink] = links;
    loop {
        let seen = interactions.observe(device_link.is_connected());
        health.record(health::assess(&seen, stall_after), &metrics);
        for (name, link) in [("device", &device_link), ("uplink", &uplink)] {
            let counter = metrics
                .reconnects
                .get_or_create(&LinkLabels { link: name.into() });
            counter.inc_by(link.reconnects().saturating_sub(counter.get()));
        }
        let redeliveries = device_link.redeliveries();
        metrics
            .redeliveries
            .inc_by(redeliveries.saturating_sub(metrics.redeliveries.get()));
        tokio::select! {
            _ = tokio::time::sleep(health::WATCH_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The links' TLS configuration, and with `--bootstrap-url` the node identity that renews its
/// certificate (established first: from the store, or else from the controller).
async fn tls_config(
    config: &AgentConfig,
    metrics: &Arc<AgentMetrics>,
) -> Result<(Option<Arc<rustls::ClientConfig>>, Option<NodeIdentity>), AgentError> {
    let Some(files) = &config.tls else {
        return Ok((None, None));
    };
    let read = |what, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| AgentError::File {
            what,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    };
    let ca = read("the CA certificate", &files.ca)?;
    match &files.identity {
        ClientIdentity::Files { cert, key } => {
            let client = edgefleet_protocol::tls::client_config_from_pem(
                &ca,
                &read("the client certificate", cert)?,
                &read("the client key", key)?,
            )
            .map_err(|e| AgentError::File {
                what: "TLS material",
                path: cert.clone(),
                detail: e.to_string(),
            })?;
            Ok((Some(Arc::new(client)), None))
        }
        ClientIdentity::Bootstrap(bootstrap) => {
            let identity =
                NodeIdentity::establish(&config.node, bootstrap, &config.data_dir, metrics.clone())
                    .await?;
            let client = identity
                .client_config(&ca)
                .map_err(|detail| AgentError::File {
                    what: "the CA certificate",
                    path: files.ca.clone(),
                    detail,
                })?;
            Ok((Some(Arc::new(client)), Some(identity)))
        }
    }
}

fn status_topic(node: &NodeId) -> String {
    Topic::Status { node: node.clone() }.to_string()
}
