//! Staged rollouts at the edge, end to end (real brokers with mutual TLS, the `edge-agent` binary,
//! real WasmEdge workers): the status reports the rollout step of the assignment a class runs, a
//! quarantined version falls back to the previous one at once, and a shadow version runs beside the
//! active one without acting, its agreement reported.

mod fleet;

use edgefleet_protocol::assignment::{Rollout, RolloutStage};
use fleet::*;

fn rollout(stage: RolloutStage) -> Option<Rollout> {
    Some(Rollout {
        id: "thermostat-7".into(),
        stage,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_reports_the_rollout_step_of_the_running_assignment_across_a_restart() {
    let mut fleet = Fleet::start().await;
    let mut statuses = fleet
        .observe("ops", &format!("ef/v1/node/{NODE}/status"))
        .await;
    let manifest = fleet
        .publish_module(
            "thermostat",
            "1.0.0",
            &handler_wasm(Handler::Thermostat).unwrap(),
        )
        .await;
    let mut canary = assignment("thermostat", 1, manifest, ClassLimits::default());
    canary.rollout = rollout(RolloutStage::Canary);
    fleet.publish_assignment(&canary).await;
    let limit = Duration::from_secs(60);
    until_status(&mut statuses, limit, "the canary step reported", |s| {
        class_status(s, "thermostat")
            .is_some_and(|c| c.active.is_some() && c.rollout == canary.rollout)
    })
    .await;

    // The rollout's next step for this node: a new generation.
    let mut wave = canary.clone();
    wave.generation = 2;
    wave.rollout = rollout(RolloutStage::Wave(1));
    fleet.publish_assignment(&wave).await;
    let before = until_status(&mut statuses, limit, "wave 1 reported", |s| {
        class_status(s, "thermostat")
            .is_some_and(|c| c.generation == Some(2) && c.rollout == wave.rollout)
    })
    .await;

    // A restart (SIGKILL) restores the step from the stored assignment.
    fleet.kill_agent();
    fleet.start_agent();
    let after = until_status(&mut statuses, limit, "the restarted agent's status", |s| {
        s.started_at_ms > before.started_at_ms && class_status(s, "thermostat").is_some()
    })
    .await;
    let class = class_status(&after, "thermostat").unwrap();
    assert_eq!(class.rollout, wave.rollout, "{class:#?}");
    assert_eq!(class.generation, Some(2));
}

/// The echo probe's answer: the message's payload.
fn echoed(answer: &rumqttc::Publish) -> u32 {
    u32::from_le_bytes(answer.payload[..4].try_into().expect("a 4-byte echo"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_version_falls_back_to_the_previous_one_at_once_and_loses_no_message() {
    let mut fleet = Fleet::start().await;
    let mut statuses = fleet
        .observe("ops", &format!("ef/v1/node/{NODE}/status"))
        .await;
    let mut events = fleet
        .observe("ops-events", &format!("ef/v1/node/{NODE}/event"))
        .await;
    let limit = Duration::from_secs(60);
    let is_version = |m: &Option<edgefleet_protocol::manifest::ModuleRef>, v: &str| {
        m.as_ref().is_some_and(|m| m.version == v)
    };
    // v1 echoes every message; v2 traps on every one.
    let v1 = fleet
        .publish_module("echo", "1.0.0", &probe_wasm("echo"))
        .await;
    let v2 = fleet
        .publish_module("echo", "2.0.0", &hostile_wasm("trap"))
        .await;
    fleet
        .assign("echo", 1, v1.clone(), ClassLimits::default())
        .await;
    until_status(&mut statuses, limit, "v1 active", |s| {
        class_status(s, "echo").is_some_and(|c| is_version(&c.active, "1.0.0"))
    })
    .await;
    fleet.assign("echo", 2, v2, ClassLimits::default()).await;
    let before = until_status(&mut statuses, limit, "v2 active", |s| {
        class_status(s, "echo").is_some_and(|c| is_version(&c.active, "2.0.0"))
    })
    .await;
    // After a restart the previous version comes from the store.
    fleet.kill_agent();
    fleet.start_agent();
    until_status(&mut statuses, limit, "v2 restored with v1 kept", |s| {
        s.started_at_ms > before.started_at_ms
            && class_status(s, "echo")
                .is_some_and(|c| is_version(&c.active, "2.0.0") && is_version(&c.previous, "1.0.0"))
    })
    .await;

    let (device, mut answers) = fleet.device("e-1", "ef/v1/dev/echo/e-1/down/cmd").await;
    let up = "ef/v1/dev/echo/e-1/up/telemetry";
    const SENT: u32 = 60;
    for n in 0..SENT {
        device
            .publish(up, QoS::AtLeastOnce, false, n.to_le_bytes().to_vec())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let event = until_event(&mut events, limit, "the RolledBack event", |e| {
        e.kind == EventKind::RolledBack
    })
    .await;
    assert!(
        event.detail.contains("echo@2.0.0") && event.detail.contains("echo@1.0.0"),
        "the event names both versions: {event:?}"
    );
    assert_eq!(event.module, Some(v1.sha256));
    // Every message is either answered by v1 or was one of the traps that quarantined v2: the
    // messages the quarantine refused ran on v1.
    let mut answered = std::collections::BTreeSet::new();
    let started = Instant::now();
    let status = loop {
        assert!(started.elapsed() < limit, "answered {answered:?}");
        while let Ok(answer) = answers.try_recv() {
            answered.insert(echoed(&answer));
        }
        let status = until_status(&mut statuses, limit, "a status", |_| true).await;
        let class = class_status(&status, "echo").cloned().expect("echo listed");
        let traps: u64 = class
            .modules
            .iter()
            .filter(|m| m.module.version == "2.0.0")
            .map(|m| m.traps)
            .sum();
        if answered.len() as u64 + traps == u64::from(SENT) {
            break class;
        }
    };
    let v2_stats = status
        .modules
        .iter()
        .find(|m| m.module.version == "2.0.0")
        .expect("the quarantined version is listed");
    assert!(v2_stats.quarantined, "{status:#?}");
    assert!(
        v2_stats.traps >= 5,
        "the breaker trips after 5: {status:#?}"
    );
    assert!(is_version(&status.active, "1.0.0"), "{status:#?}");
    assert!(is_version(&status.previous, "2.0.0"), "{status:#?}");
    assert!(
        answered.contains(&(SENT - 1)),
        "the device keeps being answered"
    );
    assert!(
        answered.iter().all(|&n| n < SENT) && answered.len() as u32 >= SENT / 2,
        "{answered:?}"
    );
    assert_eq!(fleet.metric("edgefleet_agent_fallbacks_total", ""), 1.0);

    // A restart keeps the fallback: the redelivered (retained) assignment of v2 is not newer.
    fleet.kill_agent();
    fleet.start_agent();
    let restarted = until_status(&mut statuses, limit, "restarted on v1", |s| {
        s.started_at_ms > before.started_at_ms + 1
            && s.uplink.state == edgefleet_protocol::status::LinkState::Connected
            && class_status(s, "echo").is_some_and(|c| c.active.is_some())
    })
    .await;
    let class = class_status(&restarted, "echo").unwrap();
    assert!(is_version(&class.active, "1.0.0"), "{class:#?}");
    assert!(
        class
            .modules
            .iter()
            .any(|m| m.module.version == "2.0.0" && m.quarantined),
        "the version fallen back from stays reported quarantined: {class:#?}"
    );
    // An answer at all is v1's: v2 traps on every message.
    until_answered(&device, up, &SENT.to_le_bytes(), &mut answers, limit).await;
    // The controller's rollback (a newer generation of v1) is applied as usual.
    fleet.assign("echo", 3, v1, ClassLimits::default()).await;
    until_status(&mut statuses, limit, "generation 3 applied", |s| {
        class_status(s, "echo")
            .is_some_and(|c| c.generation == Some(3) && is_version(&c.active, "1.0.0"))
    })
    .await;
}

/// Sends thermostat readings from `temps` in turn, each once its previous one was answered
/// (checking each answer with `check`), until a status shows the class's shadow report passing
/// `done`; returns that report.
async fn feed_until(
    device: &AsyncClient,
    answers: &mut mpsc::Receiver<rumqttc::Publish>,
    statuses: &mut mpsc::Receiver<rumqttc::Publish>,
    temps: &[f32],
    check: impl Fn(&edgefleet_thermostat::Command),
    done: impl Fn(&edgefleet_protocol::status::ShadowReport) -> bool,
) -> edgefleet_protocol::status::ShadowReport {
    let up = "ef/v1/dev/thermostat/t-1/up/telemetry";
    let started = Instant::now();
    let mut last = None;
    for temp in temps.iter().cycle() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "shadow report never as expected; last: {last:#?}"
        );
        let answer = until_answered(
            device,
            up,
            &reading(*temp),
            answers,
            Duration::from_secs(30),
        )
        .await;
        check(&cbor::from_slice(&answer.payload).unwrap());
        while let Ok(message) = statuses.try_recv() {
            let status: NodeStatus = codec::decode(&message.payload, 1 << 20).unwrap();
            last = class_status(&status, "thermostat").and_then(|c| c.shadow.clone());
        }
        if let Some(report) = last.as_ref().filter(|r| done(r)) {
            return report.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!("the readings cycle forever")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_agrees_when_it_behaves_alike_diverges_when_not_and_is_never_acted_upon() {
    let fleet = Fleet::start().await;
    let mut statuses = fleet
        .observe("ops", &format!("ef/v1/node/{NODE}/status"))
        .await;
    let wasm = handler_wasm(Handler::Thermostat).unwrap();
    let handler = fleet.publish_module("thermostat", "1.0.0", &wasm).await;
    // The same handler as another blob (an extra custom section): its own sha256, download,
    // compiled artefact and sandbox module.
    let mut twin_wasm = wasm.clone();
    twin_wasm.extend_from_slice(&[0, 4, 3, b't', b'w', b'o']);
    let twin = fleet
        .publish_module("thermostat", "1.0.1", &twin_wasm)
        .await;
    let mut shadowed = assignment("thermostat", 1, handler.clone(), ClassLimits::default());
    shadowed.rollout = rollout(RolloutStage::Shadow);
    shadowed.shadow = Some(HandlerSpec {
        module: twin,
        config: Vec::new(),
        limits: ClassLimits::default(),
    });
    fleet.publish_assignment(&shadowed).await;
    let (device, mut answers) = fleet
        .device("t-1", "ef/v1/dev/thermostat/t-1/down/cmd")
        .await;
    let temps = [17.5, 25.0, 21.0, 19.0, 23.0, 20.8];
    let active_setpoint = |c: &edgefleet_thermostat::Command| {
        assert_eq!(
            c.setpoint_c, 21.0,
            "only the active version's commands: {c:?}"
        )
    };
    let alike = feed_until(
        &device,
        &mut answers,
        &mut statuses,
        &temps,
        active_setpoint,
        |r| r.compared >= 12,
    )
    .await;
    assert_eq!(alike.module.version, "1.0.1");
    assert_eq!(alike.agreed, alike.compared, "{alike:#?}");
    assert!(alike.examples.is_empty(), "{alike:#?}");

    // A shadow that behaves differently: the same module (the handler's own blob) with a higher
    // setpoint. Its commands, telemetry and state differ, and none of them reaches the device.
    let mut hotter = [0u8; 64];
    let hotter = cbor::to_slice(
        &edgefleet_thermostat::Config {
            setpoint_c: 30.0,
            hysteresis_c: 0.5,
        },
        &mut hotter,
    )
    .unwrap()
    .to_vec();
    let mut differing = shadowed.clone();
    differing.generation = 2;
    differing.shadow = Some(HandlerSpec {
        module: handler.clone(),
        config: hotter,
        limits: ClassLimits::default(),
    });
    fleet.publish_assignment(&differing).await;
    until_status(
        &mut statuses,
        Duration::from_secs(60),
        "generation 2",
        |s| {
            class_status(s, "thermostat").is_some_and(|c| {
                c.generation == Some(2)
                    && c.shadow
                        .as_ref()
                        .is_some_and(|r| r.module.version == "1.0.0")
            })
        },
    )
    .await;
    let diverging = feed_until(
        &device,
        &mut answers,
        &mut statuses,
        &temps,
        active_setpoint,
        |r| r.compared >= 6 && r.examples.len() == 3,
    )
    .await;
    assert!(diverging.agreed < diverging.compared, "{diverging:#?}");
    for example in &diverging.examples {
        assert_eq!(example.device, "t-1");
        assert!(
            example.detail.starts_with("commands: active [{\"mode\": ")
                && example.detail.contains("\"setpoint_c\": 30"),
            "a readable detail: {example:?}"
        );
        assert!(example.detail.len() <= edgefleet_protocol::status::MAX_DIVERGENCE_DETAIL_BYTES);
    }
    assert!(
        fleet.metric(
            "edgefleet_agent_shadow_interactions_total",
            "outcome=\"diverged\""
        ) >= 1.0
    );
    assert!(
        fleet.metric(
            "edgefleet_agent_shadow_interactions_total",
            "outcome=\"agreed\""
        ) >= 12.0
    );

    // A shadow that traps is its own fault: it diverges, is quarantined (its own breaker entry) and
    // then skipped, while the active version keeps answering and is neither quarantined nor left.
    let trap = fleet
        .publish_module("trap", "6.6.6", &hostile_wasm("trap"))
        .await;
    let mut trapping = differing.clone();
    trapping.generation = 3;
    trapping.shadow = Some(HandlerSpec {
        module: trap,
        config: Vec::new(),
        limits: ClassLimits::default(),
    });
    fleet.publish_assignment(&trapping).await;
    until_status(
        &mut statuses,
        Duration::from_secs(60),
        "generation 3",
        |s| {
            class_status(s, "thermostat").is_some_and(|c| {
                c.generation == Some(3)
                    && c.shadow.as_ref().is_some_and(|r| r.module.name == "trap")
            })
        },
    )
    .await;
    let faulty = feed_until(
        &device,
        &mut answers,
        &mut statuses,
        &temps,
        active_setpoint,
        |r| r.compared >= 5 && r.skipped >= 3,
    )
    .await;
    assert_eq!(faulty.agreed, 0, "{faulty:#?}");
    assert!(
        faulty.examples[0]
            .detail
            .starts_with("active succeeded, shadow failed: the module trapped"),
        "{faulty:#?}"
    );
    let status = until_status(&mut statuses, Duration::from_secs(10), "a status", |_| true).await;
    let class = class_status(&status, "thermostat").unwrap();
    assert!(
        class.active.as_ref().is_some_and(|m| m.version == "1.0.0")
            && class
                .modules
                .iter()
                .all(|m| !m.quarantined && m.errors == 0),
        "{class:#?}"
    );
    assert_eq!(fleet.metric("edgefleet_agent_fallbacks_total", ""), 0.0);

    // An assignment without a shadow drops it.
    let mut plain = differing.clone();
    plain.generation = 4;
    plain.shadow = None;
    fleet.publish_assignment(&plain).await;
    until_status(
        &mut statuses,
        Duration::from_secs(60),
        "the shadow dropped",
        |s| {
            class_status(s, "thermostat")
                .is_some_and(|c| c.generation == Some(4) && c.shadow.is_none())
        },
    )
    .await;
    // The blobs of the shadows dropped (the twin, then the trap) go by garbage collection.
    fleet
        .until_metric(
            "edgefleet_agent_garbage_collected_total",
            "reason=\"blob\"",
            2.0,
            Duration::from_secs(30),
            "the dropped shadows' blobs collected",
        )
        .await;
}
