//! The `edge-agent` binary end to end: real mosquitto brokers (a device broker and a cloud broker)
//! with mutual TLS from a test-time CA, a controller played by the test (a real ed25519 key signing
//! real assignments, module blobs published as chunks), sensors played by plain MQTT clients, real
//! sandbox workers, and the agent's sled store on disk.

mod fleet;

use fleet::*;

fn thermostat_limits() -> ClassLimits {
    ClassLimits::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_gets_thermostat_commands_over_mutual_tls() {
    let fleet = Fleet::start().await;
    let manifest = fleet
        .publish_module(
            "thermostat",
            "1.0.0",
            &handler_wasm(Handler::Thermostat).unwrap(),
        )
        .await;
    fleet
        .assign("thermostat", 1, manifest, thermostat_limits())
        .await;
    let (sensor, mut commands) = fleet
        .device("t-1", "ef/v1/dev/thermostat/t-1/down/cmd")
        .await;
    let up = "ef/v1/dev/thermostat/t-1/up/telemetry";
    let command = until_answered(
        &sensor,
        up,
        &reading(17.5),
        &mut commands,
        Duration::from_secs(60),
    )
    .await;
    let command: edgefleet_thermostat::Command = cbor::from_slice(&command.payload).unwrap();
    assert_eq!(command.mode, edgefleet_thermostat::Mode::Heat);
    // Hysteresis: 21.2 °C is inside the band, the heater stays on until the setpoint (21.0) is passed.
    sensor
        .publish(up, QoS::AtLeastOnce, false, reading(21.2))
        .await
        .unwrap();
    // until_answered may have sent 17.5 °C more than once: those still answer Heat, then Idle.
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), commands.recv())
            .await
            .expect("the 21.2 °C reading is answered")
            .unwrap();
        let next: edgefleet_thermostat::Command = cbor::from_slice(&next.payload).unwrap();
        if next.mode == edgefleet_thermostat::Mode::Idle {
            break;
        }
        assert_eq!(next.mode, edgefleet_thermostat::Mode::Heat, "{next:?}");
    }

    // A client whose certificate the brokers' CA did not sign is refused.
    let rogue = Authority::new("rogue").unwrap();
    let options = fleet
        .devices
        .mqtt_options_as("t-rogue", &rogue.client_cert("t-rogue").unwrap())
        .unwrap();
    let (_client, mut events) = broker::client(options, 10);
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => return false,
                Ok(_) => {}
                Err(_) => return true,
            }
        }
    })
    .await
    .unwrap();
    assert!(
        refused,
        "a client with a rogue certificate must not connect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_an_event_and_the_agent_stays_healthy() {
    let fleet = Fleet::start().await;
    let mut events = fleet
        .observe("ops", &format!("ef/v1/node/{NODE}/event"))
        .await;
    let mut statuses = fleet
        .observe("ops-status", &format!("ef/v1/node/{NODE}/status"))
        .await;
    let manifest = fleet
        .publish_module("echo", "1.0.0", &probe_wasm("echo"))
        .await;
    fleet
        .assign("echo", 1, manifest, ClassLimits::default())
        .await;
    let (device, mut commands) = fleet.device("e-1", "ef/v1/dev/echo/e-1/down/cmd").await;
    until_answered(
        &device,
        "ef/v1/dev/echo/e-1/up/telemetry",
        b"hi",
        &mut commands,
        Duration::from_secs(60),
    )
    .await;

    // A tampered module: its bytes do not match the signed manifest.
    let wasm = handler_wasm(Handler::Thermostat).unwrap();
    let manifest =
        ModuleManifest::for_blob("thermostat", "6.6.6", 1, &wasm, DEFAULT_CHUNK_SIZE).unwrap();
    let mut tampered = wasm.clone();
    tampered[100] ^= 0xff;
    for (index, chunk) in tampered.chunks(DEFAULT_CHUNK_SIZE as usize).enumerate() {
        let topic = Topic::ModuleChunk {
            module: manifest.sha256,
            index: index as u32,
        };
        fleet
            .controller
            .publish(topic.to_string(), QoS::AtLeastOnce, true, chunk.to_vec())
            .await
            .unwrap();
    }
    fleet
        .assign("thermostat", 1, manifest.clone(), ClassLimits::default())
        .await;
    // An assignment signed by a key the node does not trust.
    let stranger = SigningKey::generate().unwrap();
    let forged = Assignment {
        node: NodeId::new(NODE).unwrap(),
        class: ClassId::new("lock").unwrap(),
        generation: 1,
        issued_at_ms: 0,
        shadow: None,
        rollout: None,
        handler: Some(HandlerSpec {
            module: manifest,
            config: Vec::new(),
            limits: ClassLimits::default(),
        }),
    };
    fleet
        .controller
        .publish(
            forged.topic().to_string(),
            QoS::AtLeastOnce,
            true,
            stranger.sign(&forged).encode(),
        )
        .await
        .unwrap();
    // A handler that parses CBOR, for a malformed payload.
    let meter = fleet
        .publish_module("meter", "1.0.0", &handler_wasm(Handler::Meter).unwrap())
        .await;
    fleet
        .assign("meter", 1, meter, ClassLimits::default())
        .await;
    let (meter_device, _meter_commands) = fleet.device("m-1", "ef/v1/dev/meter/m-1/down/cmd").await;
    // An unknown class, a malformed payload, an oversized payload.
    device
        .publish(
            "ef/v1/dev/nosuchclass/e-1/up/telemetry",
            QoS::AtLeastOnce,
            false,
            b"x".to_vec(),
        )
        .await
        .unwrap();
    device
        .publish(
            "ef/v1/dev/echo/e-1/up/telemetry",
            QoS::AtLeastOnce,
            false,
            vec![0u8; 100_000],
        )
        .await
        .unwrap();

    let mut kinds = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let wanted = [
            EventKind::AssignmentRejected,
            EventKind::UnknownClass,
            EventKind::OversizedPayload,
            EventKind::MalformedPayload,
        ];
        if wanted.iter().all(|k| kinds.contains(k))
            && kinds.iter().any(|k| matches!(k, EventKind::ModuleRefused))
        {
            break;
        }
        if !kinds.contains(&EventKind::MalformedPayload) {
            // Garbage for the meter, again until it is active and refuses it.
            meter_device
                .publish(
                    "ef/v1/dev/meter/m-1/up/telemetry",
                    QoS::AtLeastOnce,
                    false,
                    b"\xff\x00garbage".to_vec(),
                )
                .await
                .unwrap();
        }
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), events.recv()).await
        {
            let event: AgentEvent = codec::decode(&message.payload, 1 << 20).unwrap();
            kinds.push(event.kind);
        }
    }
    for kind in [
        EventKind::AssignmentRejected,
        EventKind::UnknownClass,
        EventKind::OversizedPayload,
        EventKind::MalformedPayload,
    ] {
        assert!(kinds.contains(&kind), "missing {kind:?} in {kinds:?}");
    }
    assert!(
        kinds.iter().any(|k| matches!(k, EventKind::ModuleRefused)),
        "the tampered module is refused: {kinds:?}"
    );
    // Still serving.
    let answer = until_answered(
        &device,
        "ef/v1/dev/echo/e-1/up/telemetry",
        b"still",
        &mut commands,
        Duration::from_secs(20),
    )
    .await;
    assert!(answer.payload.as_ref() == b"still" || answer.payload.as_ref() == b"hi");
    // The status names the refused classes and why.
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no status with the refusals"
        );
        let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), statuses.recv()).await
        else {
            continue;
        };
        let status: NodeStatus = codec::decode(&message.payload, 1 << 20).unwrap();
        let error_of = |class: &str| {
            status
                .classes
                .iter()
                .find(|c| c.class.as_str() == class)
                .and_then(|c| c.last_error.clone())
        };
        if let (Some(tampered), Some(forged)) = (error_of("thermostat"), error_of("lock")) {
            assert!(tampered.message.contains("chunk"), "{}", tampered.message);
            assert!(forged.message.contains("signature"), "{}", forged.message);
            break;
        }
    }
    // Healthy, ready, and every refusal counted.
    assert_eq!(fleet.http_get("/healthz").0, 200);
    assert_eq!(fleet.http_get("/readyz").0, 200);
    let (code, metrics) = fleet.http_get("/metrics");
    assert_eq!(code, 200);
    for counted in [
        "edgefleet_agent_refused_messages_total{reason=\"oversized\"}",
        "edgefleet_agent_refused_messages_total{reason=\"unknown_class\"}",
        "edgefleet_agent_refused_assignments_total{reason=\"signature\"}",
        "edgefleet_agent_refused_assignments_total{reason=\"chunk\"}",
        "outcome=\"rejected\"",
        "sandbox_interactions_total",
    ] {
        assert!(
            metrics.contains(counted),
            "{counted} missing from /metrics:\n{metrics}"
        );
    }
    // Every documented metric is served, counted or not.
    for name in edge_agent::metrics::METRIC_NAMES {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{name} is not registered:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_survives_an_uplink_cut_and_an_agent_sigkill() {
    let mut fleet = Fleet::start().await;
    let upstream = fleet
        .observe("pipeline", &format!("ef/v1/node/{NODE}/up/#"))
        .await;
    let echo = fleet
        .publish_module("echo", "1.0.0", &probe_wasm("echo"))
        .await;
    fleet
        .assign("echo", 1, echo.clone(), ClassLimits::default())
        .await;
    let counter = fleet
        .publish_module("counter", "1.0.0", &probe_wasm("state_counter"))
        .await;
    fleet
        .assign("counter", 1, counter.clone(), ClassLimits::default())
        .await;
    let (counting, mut counts) = fleet.device("c-1", "ef/v1/dev/counter/c-1/down/cmd").await;
    let count_up = "ef/v1/dev/counter/c-1/up/telemetry";
    let first = until_answered(
        &counting,
        count_up,
        b"",
        &mut counts,
        Duration::from_secs(60),
    )
    .await;
    let mut count = u32::from_le_bytes(first.payload[..4].try_into().unwrap());
    let (device, mut commands) = fleet.device("e-1", "ef/v1/dev/echo/e-1/down/cmd").await;
    let up = "ef/v1/dev/echo/e-1/up/telemetry";
    until_answered(
        &device,
        up,
        b"warm-up",
        &mut commands,
        Duration::from_secs(60),
    )
    .await;

    // The cloud broker goes away; devices are still served.
    fleet.cloud.stop().unwrap();
    let mut sent = Vec::new();
    for i in 0..50u32 {
        let payload = format!("m{i:03}").into_bytes();
        device
            .publish(up, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
        sent.push(payload);
    }
    let mut answered = 0;
    while answered < 50 {
        let command = tokio::time::timeout(Duration::from_secs(20), commands.recv())
            .await
            .expect("commands keep coming while the uplink is down")
            .unwrap();
        if command.payload.starts_with(b"m") {
            answered += 1;
        }
    }
    // The agent is killed outright; its outbox is on disk.
    fleet.kill_agent();
    fleet.cloud.start().unwrap();
    // The controller no longer offers the modules' chunks: a restarted agent must not need them.
    for manifest in [&echo, &counter] {
        for index in 0..manifest.chunk_count() {
            let topic = Topic::ModuleChunk {
                module: manifest.sha256,
                index,
            };
            fleet
                .controller
                .publish(topic.to_string(), QoS::AtLeastOnce, true, Vec::<u8>::new())
                .await
                .unwrap();
        }
    }
    drop(upstream);
    let mut upstream = fleet
        .observe("pipeline-2", &format!("ef/v1/node/{NODE}/up/#"))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.start_agent();

    let mut seen: Vec<(u64, u64, Vec<u8>)> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let delivered: std::collections::BTreeSet<&Vec<u8>> = seen
            .iter()
            .map(|(_, _, p)| p)
            .filter(|p| p.starts_with(b"m"))
            .collect();
        if delivered.len() == sent.len() {
            break;
        }
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), upstream.recv()).await
        {
            let m: UpstreamMessage = codec::decode(&message.payload, 1 << 20).unwrap();
            seen.push((m.epoch, m.seq, m.payload));
        }
    }
    // De-duplicated by (epoch, seq), in seq order, every message is there exactly once.
    let mut unique: Vec<_> = seen.clone();
    unique.sort_by_key(|(e, s, _)| (*e, *s));
    unique.dedup_by_key(|(e, s, _)| (*e, *s));
    let payloads: Vec<Vec<u8>> = unique
        .into_iter()
        .map(|(_, _, p)| p)
        .filter(|p| p.starts_with(b"m"))
        .collect();
    assert_eq!(payloads, sent, "every upstream message once, in order");
    let firsts: Vec<u64> = seen.iter().map(|(_, s, _)| *s).collect();
    let mut sorted = firsts.clone();
    sorted.sort();
    sorted.dedup();
    let mut first_seen = Vec::new();
    for s in &firsts {
        if !first_seen.contains(s) {
            first_seen.push(*s);
        }
    }
    assert_eq!(first_seen, sorted, "delivered in order");

    // After the restart the modules came from the store (no chunks to fetch) and the device state
    // from disk: the counter goes on where it stopped.
    until_answered(
        &device,
        up,
        b"after",
        &mut commands,
        Duration::from_secs(30),
    )
    .await;
    // (until_answered may have sent more than one message before its first answer)
    while let Ok(Some(extra)) =
        tokio::time::timeout(Duration::from_millis(500), counts.recv()).await
    {
        count = u32::from_le_bytes(extra.payload[..4].try_into().unwrap());
    }
    let next = until_answered(
        &counting,
        count_up,
        b"",
        &mut counts,
        Duration::from_secs(30),
    )
    .await;
    count += 1;
    assert_eq!(
        u32::from_le_bytes(next.payload[..4].try_into().unwrap()),
        count
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_a_steady_stream_loses_nothing_and_repeats_nothing() {
    let fleet = Fleet::start().await;
    let mut statuses = fleet
        .observe("ops", &format!("ef/v1/node/{NODE}/status"))
        .await;
    let v1 = fleet
        .publish_module("counter", "1.0.0", &probe_wasm("state_counter"))
        .await;
    // The stream below sends 200 messages/s: above the default per-device budget.
    let limits = ClassLimits {
        device_rate_per_s: 1000,
        device_burst: 1000,
        ..ClassLimits::default()
    };
    fleet.assign("counter", 1, v1, limits.clone()).await;
    let (device, mut commands) = fleet.device("c-1", "ef/v1/dev/counter/c-1/down/cmd").await;
    let up = "ef/v1/dev/counter/c-1/up/telemetry";
    let first = until_answered(&device, up, b"", &mut commands, Duration::from_secs(60)).await;
    let mut expected = u32::from_le_bytes(first.payload[..4].try_into().unwrap());
    // Version 2: the same counting logic with different bytes (an extra custom section `v2!`), so a
    // different module with its own sha256 and compiled artefact.
    let mut v2_wasm = probe_wasm("state_counter");
    v2_wasm.extend_from_slice(&[0, 4, 3, b'v', b'2', b'!']);
    let v2 = fleet.publish_module("counter", "2.0.0", &v2_wasm).await;
    let stream = tokio::spawn({
        let device = device.clone();
        async move {
            for _ in 0..300 {
                device
                    .publish(up, QoS::AtLeastOnce, false, Vec::<u8>::new())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    fleet.assign("counter", 2, v2, limits).await;
    stream.await.unwrap();
    // The device state counts every handled message: 300 more, each seen once, in order.
    for _ in 0..300 {
        let command = tokio::time::timeout(Duration::from_secs(20), commands.recv())
            .await
            .expect("no command lost")
            .unwrap();
        let count = u32::from_le_bytes(command.payload[..4].try_into().unwrap());
        expected += 1;
        assert_eq!(
            count, expected,
            "handled once each, in order, across the swap"
        );
    }
    // The new version shows in the status.
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "status never showed 2.0.0"
        );
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), statuses.recv()).await
        {
            let status: NodeStatus = codec::decode(&message.payload, 1 << 20).unwrap();
            let active = status
                .classes
                .iter()
                .find(|c| c.class.as_str() == "counter")
                .and_then(|c| c.active.clone());
            if active.is_some_and(|m| m.version == "2.0.0") {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_flushes_and_reports_offline() {
    let mut fleet = Fleet::start().await;
    let mut statuses = fleet
        .observe("ops", &format!("ef/v1/node/{NODE}/status"))
        .await;
    let manifest = fleet
        .publish_module("echo", "1.0.0", &probe_wasm("echo"))
        .await;
    fleet
        .assign("echo", 1, manifest, ClassLimits::default())
        .await;
    let (device, mut commands) = fleet.device("e-1", "ef/v1/dev/echo/e-1/down/cmd").await;
    until_answered(
        &device,
        "ef/v1/dev/echo/e-1/up/telemetry",
        b"hello",
        &mut commands,
        Duration::from_secs(60),
    )
    .await;
    let mut agent = fleet.agent.take().expect("running");
    let pid = rustix::process::Pid::from_raw(agent.id() as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let started = Instant::now();
    let status = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the agent did not stop on SIGTERM"
        );
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean exit: {status}");
    // The last status it left is "offline".
    let mut last = None;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), statuses.recv()).await
    {
        last = Some(codec::decode::<NodeStatus>(&message.payload, 1 << 20).unwrap());
    }
    let last = last.expect("statuses were published");
    assert_eq!(last.state, edgefleet_protocol::status::NodeState::Offline);
}
