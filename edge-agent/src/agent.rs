//! Wires the agent together and runs it until SIGTERM (or the given shutdown future).
//!
//! ```text
//! device broker ◄──► device link ──► Interactions (lanes) ──► Sandbox workers
//!                         ▲                 │
//!                         └── commands ◄────┤ commit: Store (state + outbox), flush
//! cloud broker  ◄──► uplink ──► Assignments (verify, fetch, compile, swap)
//!                      ▲  └───► publisher ◄── outbox
//!                      └────── status (retained, last will offline)
//! ```

use std::future::Future;
use std::sync::Arc;

use edgefleet_protocol::codec;
use edgefleet_protocol::id::NodeId;
use edgefleet_protocol::signing::TrustAnchor;
use edgefleet_protocol::status::NodeStatus;
use edgefleet_protocol::topic::{self, Topic};
use prometheus_client::registry::Registry;
use rumqttc::{LastWill, QoS};
use tokio::sync::{Notify, mpsc};

use crate::assignments::Assignments;
use crate::classes::ClassTable;
use crate::config::AgentConfig;
use crate::http::{self, Endpoints};
use crate::interactions::{DeviceActivity, EventThrottle, Interactions, Pipeline, now_ms};
use crate::link::{self, LinkEvent, LinkSettings, Subscriptions};
use crate::metrics::{AgentMetrics, LinkLabels};
use crate::publisher::{self, UplinkSignal};
use crate::status::StatusReporter;
use crate::store::{OutboxLimits, Store, StoreOptions, WhenFull};
use edgefleet_sandbox::{Sandbox, SandboxConfig, WorkerCommand};

/// Largest packet the device link reads (see where it is used).
const DEVICE_LINK_MAX_PACKET: usize = 16 << 20;

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
    let started_at_ms = now_ms();
    let tls = match &config.tls {
        Some(files) => {
            let read = |what, path: &std::path::Path| {
                std::fs::read(path).map_err(|e| AgentError::File {
                    what,
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })
            };
            let client = edgefleet_protocol::tls::client_config_from_pem(
                &read("the CA certificate", &files.ca)?,
                &read("the client certificate", &files.cert)?,
                &read("the client key", &files.key)?,
            )
            .map_err(|e| AgentError::File {
                what: "TLS material",
                path: files.cert.clone(),
                detail: e.to_string(),
            })?;
            Some(Arc::new(client))
        }
        None => None,
    };
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

    let metrics = Arc::new(AgentMetrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    sandbox.metrics().register(&mut registry);

    // Every device on the device broker is this node's (one agent per device broker): messages of
    // classes not assigned here are refused and reported rather than left unseen.
    let device_subscriptions = Subscriptions::default();
    device_subscriptions.add(topic::ALL_DEVICES_UP_FILTER.to_string());
    let (device_link, mut device_events) = link::start(
        LinkSettings {
            name: "device",
            broker: config.device_broker.clone(),
            client_id: format!("{}-devices", config.node),
            tls: tls.clone(),
            persistent_session: true,
            subscriptions: device_subscriptions.clone(),
            last_will: None,
            // Far above max_payload_bytes on purpose: rumqttc drops the connection on a packet over
            // its limit, and the broker would redeliver it forever. Oversized payloads are read,
            // refused and acked instead; the broker's max_packet_size is the hard limit.
            max_packet_bytes: DEVICE_LINK_MAX_PACKET,
            manual_acks: true,
        },
        1024,
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
    let (uplink, mut uplink_events) = link::start(
        LinkSettings {
            name: "uplink",
            broker: config.uplink_broker.clone(),
            client_id: format!("{}-uplink", config.node),
            tls,
            // The outbox, not the MQTT session, carries what must survive a cut (see publisher).
            persistent_session: false,
            subscriptions: uplink_subscriptions.clone(),
            last_will: Some(LastWill::new(
                status_topic(&config.node),
                codec::encode(&will),
                QoS::AtLeastOnce,
                true,
            )),
            max_packet_bytes: edgefleet_protocol::wire::MAX_UPLINK_PACKET_BYTES,
            manual_acks: false,
        },
        1024,
    );

    let outbox_ready = Arc::new(Notify::new());
    let pipeline = Arc::new(Pipeline {
        node: config.node.clone(),
        sandbox: sandbox.clone(),
        store: store.clone(),
        classes: ClassTable::default(),
        device_link: device_link.clone(),
        metrics: metrics.clone(),
        outbox_ready: outbox_ready.clone(),
        max_payload_bytes: config.max_payload_bytes,
        activity: DeviceActivity::default(),
        throttle: EventThrottle::new(std::time::Duration::from_secs(10)),
    });

    let mut assignments = Assignments::new(
        pipeline.clone(),
        trust,
        uplink.clone(),
        uplink_subscriptions,
    );
    assignments.restore().await;

    let (signals, signal_rx) = mpsc::channel(1024);
    tokio::spawn(publisher::run(
        store.clone(),
        uplink.clone(),
        signal_rx,
        outbox_ready.clone(),
        metrics.clone(),
    ));
    let uplink_metrics = metrics.clone();
    let uplink_task = tokio::spawn(async move {
        while let Some(event) = uplink_events.recv().await {
            let signal = match event {
                LinkEvent::Message(publish) => {
                    assignments.handle(&publish.topic, &publish.payload).await;
                    continue;
                }
                LinkEvent::Connected { .. } => UplinkSignal::Connected,
                LinkEvent::Disconnected { .. } => {
                    uplink_metrics
                        .reconnects
                        .get_or_create(&LinkLabels {
                            link: "uplink".into(),
                        })
                        .inc();
                    UplinkSignal::Disconnected
                }
                LinkEvent::Sent { pkid } => UplinkSignal::Sent { pkid },
                LinkEvent::Acked { pkid } => UplinkSignal::Acked { pkid },
            };
            if signals.send(signal).await.is_err() {
                return;
            }
        }
    });
    let status = StatusReporter::new(
        pipeline.clone(),
        uplink.clone(),
        started_at_ms,
        agent_version,
        wasmedge_version,
    );
    let status_task = tokio::spawn(status.run(config.status_interval));
    let endpoints = Arc::new(Endpoints {
        registry,
        device_link: device_link.clone(),
    });
    let listen = config.listen;
    let http_task = tokio::spawn(async move {
        if let Err(e) = http::serve(listen, endpoints).await {
            tracing::error!(%listen, "cannot serve health and metrics: {e}");
        }
    });

    let interactions = Interactions::start(pipeline.clone(), config.workers * 2);
    let device_metrics = metrics.clone();
    let device_task = tokio::spawn(async move {
        while let Some(event) = device_events.recv().await {
            match event {
                LinkEvent::Message(publish) => interactions.accept(publish).await,
                LinkEvent::Disconnected { .. } => {
                    device_metrics
                        .reconnects
                        .get_or_create(&LinkLabels {
                            link: "device".into(),
                        })
                        .inc();
                }
                _ => {}
            }
        }
    });
    tracing::info!(node = %config.node, "agent running");

    shutdown.await;
    tracing::info!("shutting down: draining in-flight interactions");
    // Stop taking device messages; what was taken finishes (or, unacked, comes again later).
    device_task.abort();
    let _ = device_link.client.disconnect().await;
    let drain_until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metrics.queue_depth.get() > 0 && std::time::Instant::now() < drain_until {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    store.flush_async().await?;
    // Give the publisher a moment to hand over what is queued, then say goodbye properly.
    let publish_until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while store.outbox_depth().map(|d| d.entries).unwrap_or(0) > 0
        && uplink.is_connected()
        && std::time::Instant::now() < publish_until
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = uplink
        .client
        .publish(
            status_topic(&config.node),
            QoS::AtLeastOnce,
            true,
            codec::encode(&will),
        )
        .await;
    let _ = uplink.client.disconnect().await;
    status_task.abort();
    http_task.abort();
    uplink_task.abort();
    tracing::info!("stopped");
    Ok(())
}

fn status_topic(node: &NodeId) -> String {
    Topic::Status { node: node.clone() }.to_string()
}
