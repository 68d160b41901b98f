//! End-to-end benchmark of the agent's device path through a real mosquitto: simulated thermostats
//! publish readings, the agent runs the handler (the Wasm module in fresh sandbox instances, or the
//! same logic compiled in natively, in one run), commits state and outbox to sled, and the devices
//! receive their commands. Prints interactions/s (closed loop) and round-trip p50/p99 (closed loop,
//! and open loop at a fixed rate).
//!
//! `cargo bench -p edge-agent --bench agent` (also run by scripts/bench.sh).
//! `EDGEFLEET_BENCH_SECONDS` sets the measuring time per row (default 5), `EDGEFLEET_BENCH_RATE` the
//! open-loop rate (default 5000/s). Plain TCP to the broker: TLS cost is the broker's and the
//! clients', the same for both handlers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_agent::activity::DeviceActivity;
use edge_agent::classes::{ActiveClass, ClassHandler, ClassTable};
use edge_agent::config::BrokerUrl;
use edge_agent::context::Context;
use edge_agent::events::EventThrottle;
use edge_agent::intake::IntakeLimits;
use edge_agent::interactions::Interactions;
use edge_agent::link::{Link, LinkSettings, Subscriptions};
use edge_agent::metrics::AgentMetrics;
use edge_agent::store::Store;
use edgefleet_device_modules::{Handler, handler_wasm};
use edgefleet_guest::cbor;
use edgefleet_protocol::ClassLimits;
use edgefleet_protocol::digest::Sha256Digest;
use edgefleet_protocol::id::{ClassId, NodeId};
use edgefleet_protocol::manifest::ModuleRef;
use edgefleet_protocol::topic;
use edgefleet_sandbox::{
    Interaction, InteractionError, ModuleSpec, Outcome, Sandbox, SandboxConfig, Upstream,
    WorkerCommand,
};
use edgefleet_simulators::broker::{self, Broker};
use rumqttc::{Event, Incoming, QoS};
use tokio::sync::Notify;

const DEVICES: usize = 200;
const CONNECTIONS: usize = 8;

/// The thermostat glue of `device-modules/thermostat/src/guest.rs`, natively.
fn native_thermostat(interaction: &Interaction) -> Result<Outcome, InteractionError> {
    let outcome = edgefleet_thermostat::handle(
        &interaction.payload,
        &[],
        interaction.state.as_deref().map(|s| s.as_slice()),
    )
    .map_err(|reject| InteractionError::Rejected {
        code: reject.code(),
    })?;
    let encode = |value: &dyn Fn(&mut [u8]) -> Vec<u8>| {
        let mut buf = [0u8; 64];
        value(&mut buf)
    };
    let mut result = Outcome {
        commands: vec![encode(&|b| cbor::to_slice(&outcome.command, b).unwrap().to_vec()).into()],
        ..Outcome::default()
    };
    if let Some(telemetry) = outcome.change {
        let state = edgefleet_thermostat::State {
            mode: telemetry.mode,
        };
        result.new_state = Some(encode(&|b| cbor::to_slice(&state, b).unwrap().to_vec()).into());
        result.upstream.push(Upstream {
            topic: edgefleet_thermostat::TELEMETRY_TOPIC.into(),
            payload: encode(&|b| cbor::to_slice(&telemetry, b).unwrap().to_vec()),
        });
    }
    Ok(result)
}

/// The default limits, with a per-device budget the benchmark's load stays within.
fn bench_limits() -> ClassLimits {
    ClassLimits {
        device_rate_per_s: 100_000,
        device_burst: 100_000,
        ..ClassLimits::default()
    }
}

fn reading(temp_c: f32) -> Vec<u8> {
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

/// Send times per device, and the round trips measured.
#[derive(Default)]
struct Probe {
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
    latencies_us: Mutex<Vec<f64>>,
    answered: AtomicU64,
}

impl Probe {
    fn sent(&self, device: &str) {
        self.sent
            .lock()
            .unwrap()
            .entry(device.to_string())
            .or_default()
            .push_back(Instant::now());
    }

    fn answered(&self, device: &str) {
        if let Some(t) = self
            .sent
            .lock()
            .unwrap()
            .get_mut(device)
            .and_then(|q| q.pop_front())
        {
            self.latencies_us
                .lock()
                .unwrap()
                .push(t.elapsed().as_secs_f64() * 1e6);
        }
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    fn reset(&self) -> Vec<f64> {
        self.answered.store(0, Ordering::Relaxed);
        std::mem::take(&mut *self.latencies_us.lock().unwrap())
    }
}

/// Starts the agent's device path against `broker` with `handler` for class `thermostat`.
async fn start_agent(
    broker: &Broker,
    handler: ClassHandler,
    sandbox: Arc<Sandbox>,
    dir: &std::path::Path,
) -> Arc<Interactions> {
    let store = Store::open(dir).unwrap();
    let classes = ClassTable::default();
    let class = ClassId::new("thermostat").unwrap();
    classes.swap(ActiveClass {
        class: class.clone(),
        version: "thermostat@bench".into(),
        sha256: Sha256Digest::of(b"bench"),
        reference: ModuleRef {
            name: "thermostat".into(),
            version: "bench".into(),
            sha256: Sha256Digest::of(b"bench"),
        },
        generation: 1,
        rollout: None,
        limits: bench_limits(),
        handler,
        counters: Default::default(),
        retired: Default::default(),
    });
    let subscriptions = Subscriptions::default();
    subscriptions.add(topic::ALL_DEVICES_UP_FILTER.to_string());
    let ctx = Arc::new(Context {
        node: NodeId::new("bench").unwrap(),
        sandbox,
        store,
        classes,
        metrics: Arc::new(AgentMetrics::default()),
        outbox_ready: Arc::new(Notify::new()),
        activity: DeviceActivity::new(Duration::from_secs(60)),
        throttle: EventThrottle::new(Duration::from_secs(10)),
    });
    let interactions = Interactions::new(ctx, IntakeLimits::default(), 64 * 1024);
    let sink = interactions.clone();
    let device_link = Link::start(
        LinkSettings {
            name: "device",
            broker: BrokerUrl {
                host: broker.host().into(),
                port: broker.port(),
                tls: false,
            },
            client_id: format!("agent-{}", dir.display()).replace('/', "_"),
            tls: None,
            persistent_session: true,
            subscriptions,
            last_will: None,
            max_incoming_bytes: 1 << 20,
            max_outgoing_bytes: 1 << 20,
            manual_acks: true,
            pressure: Some(interactions.pressure()),
        },
        Box::new(move |publish| sink.offer(publish)),
        None,
    );
    interactions.attach(device_link.clone());
    interactions.start_lanes(4);
    let mut condition = device_link.watch();
    tokio::time::timeout(
        Duration::from_secs(10),
        condition.wait_for(|c| c.connections > 0),
    )
    .await
    .expect("the device link connects")
    .unwrap();
    interactions
}

/// Simulated devices: `CONNECTIONS` clients, `DEVICES` thermostats. In closed loop each device
/// sends its next reading when its command arrives.
async fn start_devices(
    broker: &Broker,
    probe: Arc<Probe>,
    closed_loop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(rumqttc::AsyncClient, Vec<String>)> {
    let mut clients = Vec::new();
    for c in 0..CONNECTIONS {
        let devices: Vec<String> = (0..DEVICES)
            .filter(|d| d % CONNECTIONS == c)
            .map(|d| format!("t-{d}"))
            .collect();
        let (client, mut eventloop) =
            broker::client(broker.mqtt_options(&format!("sim-{c}")).unwrap(), 10_000);
        for device in &devices {
            client
                .subscribe(
                    format!("ef/v1/dev/thermostat/{device}/down/cmd"),
                    QoS::AtLeastOnce,
                )
                .await
                .unwrap();
        }
        let (probe, closed_loop, sender) = (probe.clone(), closed_loop.clone(), client.clone());
        tokio::spawn(async move {
            let payload = reading(19.0);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let device = p.topic.split('/').nth(4).unwrap_or_default().to_string();
                        probe.answered(&device);
                        if closed_loop.load(Ordering::Relaxed) {
                            probe.sent(&device);
                            let topic = format!("ef/v1/dev/thermostat/{device}/up/telemetry");
                            let _ =
                                sender.try_publish(topic, QoS::AtLeastOnce, false, payload.clone());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        clients.push((client, devices));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    clients
}

/// Sends readings at `rate` per second for `time`, round robin over the devices (QoS 1, without
/// waiting for answers); returns how many were sent.
async fn open_loop(
    clients: &[(rumqttc::AsyncClient, Vec<String>)],
    probe: &Probe,
    rate: u32,
    time: Duration,
) -> u64 {
    let all: Vec<(&rumqttc::AsyncClient, &String)> = clients
        .iter()
        .flat_map(|(c, ds)| ds.iter().map(move |d| (c, d)))
        .collect();
    let payload = reading(19.0);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while started.elapsed() < time {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while sent < due {
            let (client, device) = &all[sent as usize % all.len()];
            probe.sent(device);
            let _ = client.try_publish(
                format!("ef/v1/dev/thermostat/{device}/up/telemetry"),
                QoS::AtLeastOnce,
                false,
                payload.clone(),
            );
            sent += 1;
        }
    }
    sent
}

fn percentile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

struct Measured {
    throughput: f64,
    closed_p50: f64,
    closed_p99: f64,
    open_rate: f64,
    open_p50: f64,
    open_p99: f64,
}

impl Measured {
    fn mean(runs: &[Measured]) -> Measured {
        let avg = |f: fn(&Measured) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
        Measured {
            throughput: avg(|m| m.throughput),
            closed_p50: avg(|m| m.closed_p50),
            closed_p99: avg(|m| m.closed_p99),
            open_rate: avg(|m| m.open_rate),
            open_p50: avg(|m| m.open_p50),
            open_p99: avg(|m| m.open_p99),
        }
    }
}

async fn measure(broker: &Broker, time: Duration, rate: u32) -> Measured {
    let probe = Arc::new(Probe::default());
    let closed_loop = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let clients = start_devices(broker, probe.clone(), closed_loop.clone()).await;
    let payload = reading(19.0);
    // Closed loop: every device has one message in flight.
    for (client, devices) in &clients {
        for device in devices {
            probe.sent(device);
            client
                .publish(
                    format!("ef/v1/dev/thermostat/{device}/up/telemetry"),
                    QoS::AtLeastOnce,
                    false,
                    payload.clone(),
                )
                .await
                .unwrap();
        }
    }
    tokio::time::sleep(time / 5).await;
    probe.reset();
    let started = Instant::now();
    tokio::time::sleep(time).await;
    let answered = probe.answered.load(Ordering::Relaxed);
    let throughput = answered as f64 / started.elapsed().as_secs_f64();
    let mut closed = probe.reset();
    closed_loop.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    probe.sent.lock().unwrap().clear();
    probe.reset();

    // Open loop at `rate` per second, round robin over the devices.
    let sent = open_loop(&clients, &probe, rate, time).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open_rate = sent as f64 / time.as_secs_f64();
    let mut open = probe.reset();
    for (client, _) in clients {
        let _ = client.disconnect().await;
    }
    Measured {
        throughput,
        closed_p50: percentile(&mut closed, 0.5),
        closed_p99: percentile(&mut closed, 0.99),
        open_rate,
        open_p50: percentile(&mut open, 0.5),
        open_p99: percentile(&mut open, 0.99),
    }
}

/// The burst row: while one device publishes QoS 0 readings as fast as its connection takes them,
/// the other devices send at `rate` (open loop); what share of their messages is answered, and how
/// fast.
struct Burst {
    burst_rate: f64,
    share: f64,
    p50: f64,
    p99: f64,
}

async fn measure_burst(broker: &Broker, time: Duration, rate: u32) -> Burst {
    let probe = Arc::new(Probe::default());
    let closed_loop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = start_devices(broker, probe.clone(), closed_loop).await;
    let (loud, mut loud_events) = broker::client(broker.mqtt_options("loud").unwrap(), 100_000);
    let burst_sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burster = tokio::spawn({
        let (sent, stop) = (burst_sent.clone(), stop.clone());
        let payload = reading(30.0);
        async move {
            while !stop.load(Ordering::Relaxed) {
                if loud
                    .publish(
                        "ef/v1/dev/thermostat/loud/up/telemetry",
                        QoS::AtMostOnce,
                        false,
                        payload.clone(),
                    )
                    .await
                    .is_err()
                {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            let _ = loud.disconnect().await;
        }
    });
    tokio::spawn(async move { while loud_events.poll().await.is_ok() {} });
    let started = Instant::now();
    let sent = open_loop(&clients, &probe, rate, time).await;
    let burst_rate = burst_sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = burster.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answered = probe.answered.load(Ordering::Relaxed);
    let mut latencies = probe.reset();
    for (client, _) in clients {
        let _ = client.disconnect().await;
    }
    Burst {
        burst_rate,
        share: answered as f64 / sent.max(1) as f64,
        p50: percentile(&mut latencies, 0.5),
        p99: percentile(&mut latencies, 0.99),
    }
}

fn main() {
    let secs: f64 = std::env::var("EDGEFLEET_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let rate: u32 = std::env::var("EDGEFLEET_BENCH_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let time = Duration::from_secs_f64(secs);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wasm = handler_wasm(Handler::Thermostat).expect("thermostat builds");
    let rows = runtime.block_on(async {
        let worker = WorkerCommand::beside_current_exe();
        let sandbox = Arc::new(
            Sandbox::start(SandboxConfig::new(worker, dir.path().join("artefacts"))).unwrap(),
        );
        let module = sandbox
            .load(ModuleSpec {
                label: "thermostat".into(),
                wasm: &wasm,
                expected_sha256: None,
                limits: ClassLimits::default(),
                config: Vec::new(),
            })
            .unwrap();
        let variants = [
            (
                "native Rust handler (no isolation)",
                ClassHandler::Native(native_thermostat),
            ),
            (
                "thermostat Wasm, fresh sandbox instance per interaction",
                ClassHandler::Wasm(module.clone()),
            ),
        ];
        // A-B-B-A, each row the mean of its two runs: the machine is shared and drifts.
        let mut runs: Vec<Vec<Measured>> = vec![Vec::new(), Vec::new()];
        for (run, variant) in [0, 1, 1, 0].into_iter().enumerate() {
            let (name, handler) = &variants[variant];
            eprintln!("measuring: {name}");
            let broker = Broker::plain().unwrap();
            let _agent = start_agent(
                &broker,
                handler.clone(),
                sandbox.clone(),
                &dir.path().join(format!("store-{run}")),
            )
            .await;
            runs[variant].push(measure(&broker, time, rate).await);
        }
        eprintln!("measuring: one device bursting");
        let broker = Broker::plain().unwrap();
        let _agent = start_agent(
            &broker,
            ClassHandler::Wasm(module.clone()),
            sandbox.clone(),
            &dir.path().join("store-burst"),
        )
        .await;
        let burst = measure_burst(&broker, time, rate / 5).await;
        let rows = variants
            .iter()
            .zip(runs)
            .map(|((name, _), runs)| (*name, Measured::mean(&runs)))
            .collect::<Vec<_>>();
        (rows, burst)
    });
    let (rows, burst) = rows;
    let native = rows[0].1.throughput;
    println!(
        "\n### End to end through mosquitto ({DEVICES} devices, {CONNECTIONS} connections, QoS 1, state + outbox in sled, flushed before commands; each row the mean of 2 runs, A-B-B-A)\n"
    );
    println!(
        "| handler | interactions/s (closed loop) | × native | p50 | p99 | open loop rate | p50 | p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, m) in &rows {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} ms | {:.2} ms | {:.0}/s | {:.2} ms | {:.2} ms |",
            m.throughput,
            m.throughput / native,
            m.closed_p50 / 1000.0,
            m.closed_p99 / 1000.0,
            m.open_rate,
            m.open_p50 / 1000.0,
            m.open_p99 / 1000.0
        );
    }
    println!(
        "\n### One device bursting QoS 0 (thermostat Wasm; the other {DEVICES} devices in open loop at {}/s, QoS 1)\n",
        rate / 5
    );
    println!("| burst sent | others answered | others p50 | others p99 |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {:.0}/s | {:.1} % | {:.2} ms | {:.2} ms |",
        burst.burst_rate,
        burst.share * 100.0,
        burst.p50 / 1000.0,
        burst.p99 / 1000.0
    );
}
