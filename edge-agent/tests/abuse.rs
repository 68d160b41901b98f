//! The agent under abuse and faults, end to end (the fleet of `fleet/`: real mosquitto with mutual
//! TLS, real workers, real sled): one device cannot stall the node, a host-side fault never loses a
//! message, a module's fault does not come back, and readiness says when nothing moves.

mod fleet;

use std::path::{Path, PathBuf};

use edgefleet_protocol::wire::TopicPayload;
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
        if let Some(extra) = drain_answers(commands).await {
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

/// The pids of the agent's worker processes: the children of any of its threads (the sandbox's
/// driver threads spawn them).
fn worker_pids(agent: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{agent}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
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
    drain_answers(&mut commands).await;

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
    fleet
        .until_metric(
            "edgefleet_agent_host_faults_total",
            "unavailable",
            1.0,
            Duration::from_secs(30),
            "no host fault counted while the workers cannot start",
        )
        .await;
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
    fleet
        .until_metric(
            "edgefleet_agent_module_swaps_total",
            "",
            1.0,
            Duration::from_secs(60),
            "the class never became active",
        )
        .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_class_names_neither_grow_memory_nor_push_telemetry_out() {
    let mut fleet = Fleet::start_with(AgentOptions {
        // A small outbox: without the event throttle, events about the flood would push the
        // telemetry out (drop oldest) while the uplink is down.
        config: "outbox_max_entries = 200\n".into(),
        ..AgentOptions::default()
    })
    .await;
    let echo = fleet
        .publish_module("echo", "1.0.0", &probe_wasm("echo"))
        .await;
    fleet.assign("echo", 1, echo, ClassLimits::default()).await;
    // No message before the class runs: its refusal would use up the throttle's window.
    fleet
        .until_metric(
            "edgefleet_agent_module_swaps_total",
            "",
            1.0,
            Duration::from_secs(60),
            "the class never became active",
        )
        .await;
    let (device, mut commands) = fleet.device("e-1", "ef/v1/dev/echo/e-1/down/cmd").await;
    let up = "ef/v1/dev/echo/e-1/up/telemetry";
    until_answered(&device, up, b"warm", &mut commands, Duration::from_secs(60)).await;
    tokio::task::block_in_place(|| fleet.cloud.stop()).unwrap();
    let (flooder, _flooder_commands) = fleet.device("x-1", "ef/v1/dev/none/x-1/down/cmd").await;
    for i in 0..5_000 {
        flooder
            .publish(
                format!("ef/v1/dev/random-{i}/x-1/up/telemetry"),
                QoS::AtLeastOnce,
                false,
                b"x".to_vec(),
            )
            .await
            .unwrap();
    }
    for i in 0..20u8 {
        device
            .publish(up, QoS::AtLeastOnce, false, vec![b'm', i])
            .await
            .unwrap();
    }
    for _ in 0..20 {
        tokio::time::timeout(Duration::from_secs(30), commands.recv())
            .await
            .expect("the real device is answered during the flood")
            .unwrap();
    }
    fleet
        .until_metric(
            "edgefleet_agent_refused_messages_total",
            "unknown_class",
            5_000.0,
            Duration::from_secs(60),
            "the flood was not all refused",
        )
        .await;
    assert!(
        fleet.metric("edgefleet_agent_queue_devices", "") <= 1.0,
        "unknown classes never enter the intake (only the real device may be tracked)"
    );
    assert!(
        fleet.metric("edgefleet_agent_active_devices_tracked", "") <= 2.0,
        "only real devices are tracked"
    );
    assert!(fleet.metric("edgefleet_agent_events_suppressed_total", "") >= 4_000.0);

    // What the cloud gets once it is back: the agent stops (its outbox flushed to disk), the cloud
    // broker starts, observers subscribe (each sees a marker through its subscription before the
    // agent comes back), the agent starts and drains its outbox.
    tokio::task::block_in_place(|| fleet.stop_agent());
    tokio::task::block_in_place(|| fleet.cloud.start()).unwrap();
    let mut upstream = fleet
        .observe("pipeline", &format!("ef/v1/node/{NODE}/up/#"))
        .await;
    let mut events = fleet
        .observe("ops", &format!("ef/v1/node/{NODE}/event"))
        .await;
    for (topic, rx) in [
        (format!("ef/v1/node/{NODE}/up/marker/m/x"), &mut upstream),
        (format!("ef/v1/node/{NODE}/event"), &mut events),
    ] {
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{topic}: no marker"
            );
            fleet
                .controller
                .publish(topic.clone(), QoS::AtLeastOnce, false, b"marker".to_vec())
                .await
                .unwrap();
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
                && m.payload.as_ref() == b"marker"
            {
                break;
            }
        }
    }
    fleet.start_agent();
    // Every telemetry message arrives; the events about the flood are a handful.
    let mut telemetry = std::collections::BTreeSet::new();
    let started = Instant::now();
    while telemetry.len() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "telemetry lost: got {telemetry:?}"
        );
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), upstream.recv()).await
            && message.payload.as_ref() != b"marker"
        {
            let upstream =
                UpstreamMessage::decode_on(&message.topic.parse().unwrap(), &message.payload)
                    .unwrap();
            if upstream.payload.first() == Some(&b'm') {
                telemetry.insert(upstream.payload[1]);
            }
        }
    }
    let mut unknown_class_events = 0;
    let mut kinds = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await
    {
        if message.payload.as_ref() == b"marker" {
            continue;
        }
        let event: AgentEvent = codec::decode(&message.payload, 1 << 20).unwrap();
        if event.kind == EventKind::UnknownClass {
            unknown_class_events += 1;
        }
        kinds.push(event.kind);
    }
    assert!(
        (1..=2).contains(&unknown_class_events),
        "one event per window about the flood, got {unknown_class_events} ({kinds:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_heals_a_class_whose_blob_was_lost() {
    let mut fleet = Fleet::start().await;
    let echo = fleet
        .publish_module("echo", "1.0.0", &probe_wasm("echo"))
        .await;
    let sha = echo.sha256;
    fleet.assign("echo", 1, echo, ClassLimits::default()).await;
    let (device, mut commands) = fleet.device("e-1", "ef/v1/dev/echo/e-1/down/cmd").await;
    let up = "ef/v1/dev/echo/e-1/up/telemetry";
    until_answered(
        &device,
        up,
        b"before",
        &mut commands,
        Duration::from_secs(60),
    )
    .await;
    fleet.kill_agent();
    // The blob is gone from the store (a damaged disk, an operator's mistake).
    let store = edge_agent::store::Store::open(fleet.dir.path().join("data/db")).unwrap();
    assert!(store.remove_module(&sha).unwrap());
    store.flush().unwrap();
    drop(store);
    fleet.start_agent();
    // The restore fails, the blob is fetched again from the (retained) chunks, the class runs.
    let answer = until_answered(
        &device,
        up,
        b"after",
        &mut commands,
        Duration::from_secs(60),
    )
    .await;
    assert!(answer.payload.as_ref() == b"after" || answer.payload.as_ref() == b"before");
    assert!(
        fleet.metric("edgefleet_agent_refused_assignments_total", "missing_blob") >= 1.0,
        "the failed restore is counted"
    );
}

/// A tmpfs of `size` at a new directory under `dir` (the tests run as root: CI and the dev VM).
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        let path = dir.join("small-disk");
        std::fs::create_dir_all(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "cannot mount a tmpfs (this test needs root, as CI has): {status}"
        );
        SmallDisk { path }
    }

    /// Fills the disk up to the last byte.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0xA5u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let mut byte = [0u8; 1];
        while file.write_all(&byte).is_ok() {
            byte[0] = byte[0].wrapping_add(1);
        }
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_leaves_messages_unacked_and_unready_and_they_are_handled_after_recovery() {
    let scratch = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(scratch.path(), "64m");
    let mut fleet = Fleet::start_with(AgentOptions {
        data_dir: Some(disk.path.join("data")),
        stall_after_s: Some(2),
        ..AgentOptions::default()
    })
    .await;
    let counter = fleet
        .publish_module("counter", "1.0.0", &probe_wasm("state_counter"))
        .await;
    fleet
        .assign("counter", 1, counter, ClassLimits::default())
        .await;
    let (device, mut commands) = fleet.device("c-1", "ef/v1/dev/counter/c-1/down/cmd").await;
    let up = "ef/v1/dev/counter/c-1/up/telemetry";
    until_answered(&device, up, b"", &mut commands, Duration::from_secs(60)).await;
    let last = drain_answers(&mut commands)
        .await
        .map_or(1, |extra| count_of(&extra));
    fleet.until_readyz(200, Duration::from_secs(30)).await;

    let filler = disk.fill();
    // Enough messages that the store must write (and flush) past the full disk.
    for _ in 0..50 {
        device
            .publish(up, QoS::AtLeastOnce, false, vec![0u8; 2048])
            .await
            .unwrap();
    }
    let body = fleet.until_readyz(503, Duration::from_secs(60)).await;
    assert!(
        body.contains("flush_failing") || body.contains("host_fault"),
        "{body}"
    );
    assert!(
        fleet.metric("edgefleet_agent_host_faults_total", "") >= 1.0,
        "the failed writes are host faults"
    );
    // Whatever was answered before the disk filled up is consecutive; the rest was never acked.
    let mut answered = Vec::new();
    while let Ok(Some(command)) =
        tokio::time::timeout(Duration::from_millis(200), commands.recv()).await
    {
        answered.push(count_of(&command));
    }
    // Recovery: space again, and a restart (sled does not write again after an I/O error).
    std::fs::remove_file(filler).unwrap();
    fleet.kill_agent();
    fleet.start_agent();
    let started = Instant::now();
    let mut seen = answered.clone();
    while seen.len() < 50 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "only {} of 50 messages handled after recovery: {seen:?}",
            seen.len()
        );
        if let Ok(Some(command)) =
            tokio::time::timeout(Duration::from_millis(500), commands.recv()).await
        {
            seen.push(count_of(&command));
        }
    }
    // Every message was handled at least once, and the counter counted each handled one.
    let highest = *seen.iter().max().unwrap();
    assert!(
        highest >= last + 50,
        "counted up to {highest} from {last}: messages lost"
    );
    fleet.until_readyz(200, Duration::from_secs(30)).await;
}

/// Files and their total size under `dir`.
fn disk_use(dir: &Path) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                let (f, b) = disk_use(&path);
                files += f;
                bytes += b;
            } else if let Ok(meta) = entry.metadata() {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_use_stays_flat_over_twenty_module_versions() {
    let mut fleet = Fleet::start().await;
    let (device, mut commands) = fleet.device("c-1", "ef/v1/dev/counter/c-1/down/cmd").await;
    let up = "ef/v1/dev/counter/c-1/up/telemetry";
    let artefacts = fleet.dir.path().join("data/artefacts");
    let mut sizes = Vec::new();
    for version in 1..=20u64 {
        // The same counter, a different module each time (a custom section with the version).
        let mut wasm = probe_wasm("state_counter");
        let tag = format!("v{version:02}");
        wasm.extend_from_slice(&[0, 1 + tag.len() as u8, tag.len() as u8]);
        wasm.extend_from_slice(tag.as_bytes());
        let manifest = fleet
            .publish_module("counter", &format!("{version}.0.0"), &wasm)
            .await;
        fleet
            .assign("counter", version, manifest, ClassLimits::default())
            .await;
        fleet
            .until_metric(
                "edgefleet_agent_module_swaps_total",
                "",
                version as f64,
                Duration::from_secs(60),
                &format!("version {version} never became active"),
            )
            .await;
        until_answered(&device, up, b"", &mut commands, Duration::from_secs(30)).await;
        sizes.push(disk_use(&artefacts).0);
    }
    // Artefacts: the pin, the active and the previous version at most, whatever the number of
    // versions; blobs: the active and the previous one.
    assert!(
        sizes[4..].iter().all(|files| *files <= 3),
        "artefact files per version: {sizes:?}"
    );
    assert!(fleet.metric("edgefleet_agent_garbage_collected_total", "artefact") >= 17.0);
    assert!(fleet.metric("edgefleet_agent_garbage_collected_total", "blob") >= 18.0);
    tokio::task::block_in_place(|| fleet.stop_agent());
    let store = edge_agent::store::Store::open(fleet.dir.path().join("data/db")).unwrap();
    assert_eq!(
        store.module_digests().unwrap().len(),
        2,
        "active and previous blob only"
    );
}
