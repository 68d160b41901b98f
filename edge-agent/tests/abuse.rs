//! The agent under abuse and faults, end to end (the fleet of `fleet/`: real mosquitto with mutual
//! TLS, real workers, real sled): one device cannot stall the node, a host-side fault never loses a
//! message, a module's fault does not come back, and readiness says when nothing moves.

mod fleet;

use std::path::{Path, PathBuf};

use edgefleet_sandbox::WorkerCommand;
use fleet::*;

/// Limits with a per-device budget that lets the burster through, so that the intake's fairness,
/// not the budget, is what protects the other devices.
fn generous_limits() -> ClassLimits {
    ClassLimits {
        device_rate_per_s: 100_000,
        device_burst: 100_000,
        ..ClassLimits::default()
    }
}

fn count_of(command: &rumqttc::Publish) -> u32 {
    u32::from_le_bytes(command.payload[..4].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_bursting_qos0_does_not_delay_the_others() {
    let fleet = Fleet::start().await;
    let counter = fleet
        .publish_module("counter", "1.0.0", &probe_wasm("state_counter"))
        .await;
    fleet.assign("counter", 1, counter, generous_limits()).await;
    let mut good = Vec::new();
    for i in 0..3 {
        let id = format!("good-{i}");
        let (client, mut commands) = fleet
            .device(&id, &format!("ef/v1/dev/counter/{id}/down/cmd"))
            .await;
        let up = format!("ef/v1/dev/counter/{id}/up/telemetry");
        let first = until_answered(&client, &up, b"", &mut commands, Duration::from_secs(60)).await;
        good.push((client, commands, up, count_of(&first)));
    }
    // Drain answers to until_answered's extra sends, so that each device's next count is known.
    for (_, commands, _, last) in &mut good {
        while let Ok(Some(extra)) =
            tokio::time::timeout(Duration::from_millis(500), commands.recv()).await
        {
            *last = count_of(&extra);
        }
    }

    let (burster, _burster_commands) = fleet
        .device("loud-1", "ef/v1/dev/counter/loud-1/down/cmd")
        .await;
    let burst = tokio::spawn(async move {
        for _ in 0..20_000 {
            burster
                .publish(
                    "ef/v1/dev/counter/loud-1/up/telemetry",
                    QoS::AtMostOnce,
                    false,
                    Vec::<u8>::new(),
                )
                .await
                .unwrap();
        }
        burster
    });
    // During the burst each well-behaved device sends 20 messages (QoS 1) and gets every answer, in
    // order.
    const MESSAGES: u32 = 20;
    for round in 0..MESSAGES {
        for (client, _, up, _) in &good {
            client
                .publish(up.as_str(), QoS::AtLeastOnce, false, vec![round as u8])
                .await
                .unwrap();
        }
    }
    for (_, commands, up, last) in &mut good {
        for _ in 0..MESSAGES {
            let command = tokio::time::timeout(Duration::from_secs(30), commands.recv())
                .await
                .unwrap_or_else(|_| panic!("{up}: a message went unanswered during the burst"))
                .unwrap();
            *last += 1;
            assert_eq!(
                count_of(&command),
                *last,
                "{up}: answered once each, in order"
            );
        }
    }
    let _burster = burst.await.unwrap();
    assert!(
        fleet.metric("edgefleet_agent_shed_messages_total", "best_effort") > 0.0,
        "the burst was more than the node takes: the intake shed some of it"
    );
    // Right after the burst the node serves normally.
    fleet.until_readyz(200, Duration::from_secs(30)).await;
    let (client, commands, up, last) = &mut good[0];
    client
        .publish(up.as_str(), QoS::AtLeastOnce, false, Vec::<u8>::new())
        .await
        .unwrap();
    let after = tokio::time::timeout(Duration::from_secs(10), commands.recv())
        .await
        .expect("answered after the burst")
        .unwrap();
    assert_eq!(count_of(&after), *last + 1);
}

/// A worker binary that fails to start while `marker` exists, and otherwise is the real worker
/// (run through the WasmEdge sysroot's loader when there is one).
fn breakable_worker(dir: &Path, marker: &Path) -> PathBuf {
    let real = WorkerCommand::beside_current_exe();
    let loader = std::env::var("EDGEFLEET_SANDBOX_LOADER").unwrap_or_default();
    let script = dir.join("breakable-worker");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then echo 'worker broken on purpose' >&2; exit 1; fi\nexec {} '{}' \"$@\"\n",
            marker.display(),
            loader,
            real.program.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// The pids of the agent's worker processes (its children running the worker).
fn worker_pids(agent: u32) -> Vec<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{agent}/task/{agent}/children")).unwrap_or_default();
    let mut pids = Vec::new();
    for pid in children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        pids.push(pid);
    }
    // Other threads of the agent may be the parents (the supervisor's driver threads).
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{agent}/task")) {
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for pid in children
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_fault_leaves_the_message_for_redelivery_and_a_module_fault_is_acked() {
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("broken");
    let worker = breakable_worker(scratch.path(), &marker);
    let fleet = Fleet::start_with(AgentOptions {
        worker_binary: Some(worker),
        stall_after_s: Some(3),
        ..AgentOptions::default()
    })
    .await;
    let mut events = fleet
        .observe("ops", &format!("ef/v1/node/{NODE}/event"))
        .await;
    let crasher = fleet
        .publish_module("crasher", "1.0.0", &probe_wasm("crash_on_marker"))
        .await;
    fleet
        .assign("crasher", 1, crasher, ClassLimits::default())
        .await;
    let (device, mut commands) = fleet.device("d-1", "ef/v1/dev/crasher/d-1/down/cmd").await;
    let up = "ef/v1/dev/crasher/d-1/up/telemetry";
    until_answered(&device, up, b"warm", &mut commands, Duration::from_secs(60)).await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), commands.recv()).await
    {
    }

    // A module fault: the marker kills the worker running it. Acked (it does not come back into a
    // crash loop) and reported.
    device
        .publish(up, QoS::AtLeastOnce, false, vec![0xFF])
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no event for the module fault"
        );
        let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), events.recv()).await
        else {
            continue;
        };
        let event: AgentEvent = codec::decode(&message.payload, 1 << 20).unwrap();
        if event.kind == EventKind::InteractionFailed {
            break;
        }
    }
    // The next message is answered right away: the crashing one was not redelivered before it.
    device
        .publish(up, QoS::AtLeastOnce, false, b"after-crash".to_vec())
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), commands.recv())
        .await
        .expect("served after a module fault")
        .unwrap();
    assert_eq!(answer.payload.as_ref(), b"after-crash");

    // A host fault: workers that cannot start. Break the binary, kill the running workers.
    std::fs::write(&marker, b"").unwrap();
    let agent_pid = fleet.agent.as_ref().unwrap().id();
    for pid in worker_pids(agent_pid) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    device
        .publish(up, QoS::AtLeastOnce, false, b"during-fault".to_vec())
        .await
        .unwrap();
    let started = Instant::now();
    while fleet.metric("edgefleet_agent_host_faults_total", "unavailable") == 0.0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no host fault counted while the workers cannot start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), commands.recv())
            .await
            .is_err(),
        "nothing is answered while the workers are down"
    );
    let body = fleet.until_readyz(503, Duration::from_secs(20)).await;
    assert!(body.contains("host_fault"), "{body}");
    // Recovery: the same message comes again (it was never acked) and is handled.
    std::fs::remove_file(&marker).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(60), commands.recv())
        .await
        .expect("the message left for redelivery is handled after recovery")
        .unwrap();
    assert_eq!(answer.payload.as_ref(), b"during-fault");
    fleet.until_readyz(200, Duration::from_secs(30)).await;
    assert!(fleet.metric("edgefleet_agent_redeliveries_total", "") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stuck_in_a_lane_turns_the_node_unready() {
    let fleet = Fleet::start_with(AgentOptions {
        stall_after_s: Some(1),
        ..AgentOptions::default()
    })
    .await;
    let spinner = fleet
        .publish_module("spin", "1.0.0", &hostile_wasm("infinite_loop"))
        .await;
    // The handler spins until its (long) time budget kills it: a lane busy for 5 s.
    let limits = ClassLimits {
        time_budget_ms: 5_000,
        ..ClassLimits::default()
    };
    fleet.assign("spin", 1, spinner, limits).await;
    let started = Instant::now();
    while fleet.metric("edgefleet_agent_module_swaps_total", "") < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the class never became active"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.until_readyz(200, Duration::from_secs(30)).await;
    let (device, _commands) = fleet.device("s-1", "ef/v1/dev/spin/s-1/down/cmd").await;
    device
        .publish(
            "ef/v1/dev/spin/s-1/up/telemetry",
            QoS::AtLeastOnce,
            false,
            vec![1],
        )
        .await
        .unwrap();
    let body = fleet.until_readyz(503, Duration::from_secs(30)).await;
    assert!(body.contains("lane_stuck"), "{body}");
    assert_eq!(
        fleet.metric("edgefleet_agent_unready", "reason=\"lane_stuck\""),
        1.0
    );
    // When the budget ends it (a module fault, acked), the node is ready again.
    fleet.until_readyz(200, Duration::from_secs(60)).await;
    assert!(fleet.metric("edgefleet_agent_interactions_total", "outcome=\"timeout\"") >= 1.0);
}
