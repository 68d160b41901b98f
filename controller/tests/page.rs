//! The fleet page in a real browser: a standalone controller with a real agent, a device that gets
//! answered, a rollout under way and a hostile node, and headless Chromium (Debian's `chromium`)
//! loading `/fleet`, running its script and rendering what the controller serves. The rendered
//! DOM is checked, and a screenshot is kept as an artefact (`target/artefacts/fleet-page.png`).

mod fleet;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgefleet_device_modules::rebuilt;
use edgefleet_protocol::status::{ClassStatus, ErrorReport, LinkState};
use edgefleet_protocol::{ClassId, NodeId, NodeState, NodeStatus, TopicPayload};
use fleet::*;
use rumqttc::QoS;

const LIMIT: Duration = Duration::from_secs(90);
const CHROMIUM: &str = "/usr/bin/chromium";

/// Strings a hostile node reports: markup that runs script if it is ever inserted as HTML.
/// (Node, class and device names cannot carry markup: identifiers are `[A-Za-z0-9._-]`.)
const HOSTILE_AGENT: &str = r#"<img src=x id=injected-agent onerror="document.title='pwned'">"#;
const HOSTILE_ERROR: &str = r#"<script id=injected-error>document.title='pwned'</script>"#;

/// The class on nodes of site `a`, running `module`, with `rollout` (YAML lines of its spec).
fn class_object(module: &str, rollout: &str) -> String {
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata: {{name: thermo}}\n\
         spec:\n  module: {module}\n  config: {{setpoint_c: 21.0, hysteresis_c: 0.5}}\n\
         \x20 nodeSelector: {{matchLabels: {{site: a}}}}\n{rollout}"
    )
}

/// A canary that bakes for ten minutes: the rollout stays in progress for the whole test.
const BAKING_CANARY: &str = "  rollout:\n    canary: {nodes: 1}\n    \
    gate: {minInteractions: 5, bakeSeconds: 600}\n    progressDeadlineSeconds: 900\n";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A node that is not an agent: it holds a certificate of its own and reports, every second, a
/// status whose free-form strings are markup.
fn hostile_node(fleet: &Fleet) -> tokio::task::JoinHandle<()> {
    let options = fleet.cloud.mqtt_options("edge-evil").unwrap();
    let (client, mut events) = edgefleet_simulators::broker::client(options, 100);
    tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let started = now_ms();
    tokio::spawn(async move {
        loop {
            let now = now_ms();
            let mut status = NodeStatus::last_will(
                NodeId::new("edge-evil").unwrap(),
                HOSTILE_AGENT,
                "0.17.1",
                1,
                started,
                now,
            );
            status.state = NodeState::Online;
            status.device_link.state = LinkState::Connected;
            status.uplink.state = LinkState::Connected;
            status.classes = vec![ClassStatus {
                class: ClassId::new("thermo").unwrap(),
                generation: None,
                rollout: None,
                active: None,
                previous: None,
                pending: None,
                last_error: Some(ErrorReport {
                    at_ms: now,
                    message: HOSTILE_ERROR.into(),
                }),
                active_devices: 0,
                seen_devices: 0,
                interactions_per_sec: 0.0,
                modules: Vec::new(),
                shadow: None,
            }];
            let payload = edgefleet_protocol::codec::encode(&status);
            let _ = client
                .publish(status.topic().to_string(), QoS::AtLeastOnce, true, payload)
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// The page's JSON.
fn fleet_view(fleet: &Fleet) -> serde_json::Value {
    let (code, body) = fleet.controller_get("/api/v1alpha1/fleet");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("the fleet view is JSON")
}

async fn until_view(
    fleet: &Fleet,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let view = fleet_view(fleet);
        if check(&view) {
            return view;
        }
        assert!(
            started.elapsed() < LIMIT,
            "{what} after {LIMIT:?}:\n{view:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn node<'a>(view: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    view["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

/// Where the test keeps what it shows: `target/artefacts`.
fn artefacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_edgefleet-controller"))
        .ancestors()
        .nth(2)
        .expect("target/<profile>/<binary>")
        .join("artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Fails, saying what to do, where Chromium is missing: this test never passes without it.
fn require_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is not installed: run scripts/setup.sh (it installs Debian's chromium for this test)"
    );
}

/// Runs headless Chromium on `url` with `args`, in a fresh profile, and returns its stdout; fails
/// with its stderr if it fails or takes more than a minute.
fn chromium(url: &str, args: &[&str]) -> String {
    require_chromium();
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Virtual time: the page's first fetch, render and a few polls, without waiting.
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("chromium did not finish within 60 s: {url} {args:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "chromium failed ({}) on {url} {args:?}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the DOM is UTF-8")
}

/// The coordinate pairs of the chart's interactions line.
fn line_points(dom: &str) -> usize {
    let Some(at) = dom.find("<polyline class=\"line interactions\" points=\"") else {
        return 0;
    };
    let rest = &dom[at..];
    let start = rest.find("points=\"").unwrap() + "points=\"".len();
    let end = start + rest[start..].find('"').unwrap();
    rest[start..end].split_whitespace().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_page_renders_nodes_classes_the_rollout_and_the_chart_in_a_browser() {
    // Before the fleet starts: a machine without Chromium fails at once.
    require_chromium();
    let mut fleet = Fleet::new();
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    let dir = fleet.objects_dir();
    std::fs::write(dir.join("thermostat-1.wasm"), &wasm).unwrap();
    std::fs::write(dir.join("thermostat-2.wasm"), rebuilt(&wasm, "2")).unwrap();
    fleet.write_object(
        "modules.yaml",
        &[
            module_object("thermostat-1", "1.0.0", "thermostat-1.wasm"),
            module_object("thermostat-2", "2.0.0", "thermostat-2.wasm"),
        ]
        .join("---\n"),
    );
    fleet.write_object(
        "nodes.yaml",
        "apiVersion: edgefleet.dev/v1alpha1\nkind: EdgeNode\nmetadata:\n  name: edge-a\n  labels: {site: a}\n",
    );
    fleet.write_object("class.yaml", &class_object("thermostat-1", ""));
    fleet.start_standalone_controller();
    fleet.add_node("edge-a");
    let _hostile = hostile_node(&fleet);

    // A device on edge-a is answered, then keeps sending: the chart has something to show.
    let (device, mut commands) = fleet.device("edge-a", "thermo", "t-1").await;
    let topic = "ef/v1/dev/thermo/t-1/up/telemetry";
    until_answered(&device, topic, &reading(18.0), &mut commands, LIMIT).await;
    let traffic = tokio::spawn(async move {
        for i in 0u64.. {
            let payload = reading(17.0 + (i % 8) as f32);
            let _ = device
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::spawn(async move { while commands.recv().await.is_some() {} });

    let view = until_view(&fleet, "edge-a healthy on 1.0.0, edge-evil failing", |v| {
        node(v, "edge-a")["health"] == "Healthy"
            && node(v, "edge-a")["classes"][0]["active"] == "thermostat 1.0.0"
            && node(v, "edge-evil")["health"] == "NotReady"
    })
    .await;
    assert_eq!(view["leading"], true, "{view:#}");
    assert_eq!(node(&view, "edge-evil")["agentVersion"], HOSTILE_AGENT);
    assert!(
        node(&view, "edge-evil")["reason"]
            .as_str()
            .unwrap()
            .contains(HOSTILE_ERROR),
        "{view:#}"
    );
    // The unhealthy first.
    assert_eq!(view["nodes"][0]["name"], "edge-evil", "{view:#}");

    // v2 goes out as a canary that bakes: the rollout is in progress while the page is open.
    fleet.write_object("class.yaml", &class_object("thermostat-2", BAKING_CANARY));
    until_view(&fleet, "a rollout of 2.0.0 in progress", |v| {
        let rollout = &v["classes"][0]["rollout"];
        rollout["targetVersion"] == "thermostat 2.0.0" && rollout["phase"] == "Progressing"
    })
    .await;
    // Two settled buckets at least, with interactions in them.
    let view = until_view(&fleet, "a history with interactions", |v| {
        let samples = v["history"]["samples"].as_array().unwrap();
        samples.len() >= 2
            && samples
                .iter()
                .any(|s| s["interactionsPerS"].as_f64().unwrap() > 0.0)
    })
    .await;
    let samples = view["history"]["samples"].as_array().unwrap().len();

    let url = format!("http://127.0.0.1:{}/fleet", fleet.controller_port);
    let dom = chromium(&url, &["--dump-dom"]);
    let artefacts = artefacts_dir();
    std::fs::write(artefacts.join("fleet-page.html"), &dom).unwrap();
    // Rendered by the script (the served page has empty tables): the nodes, the class and its
    // versions, the rollout.
    for expected in [
        // The status line: this replica leads, its loop goes round, the broker link replayed.
        "Updated ",
        " · 2 nodes, 1 class</p>",
        "<strong>edge-a</strong>",
        "<strong>edge-evil</strong>",
        "<strong>thermo</strong>",
        "thermostat 1.0.0",
        "thermostat 2.0.0",
        "Progressing · step 1/",
        "Not ready",
        "Healthy",
    ] {
        assert!(
            dom.contains(expected),
            "the rendered page lacks {expected:?}:\n{dom}"
        );
    }
    // The chart: as many samples as the API had at least, drawn as a line.
    let drawn: usize = dom
        .split("data-samples=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        drawn >= samples,
        "{drawn} samples drawn, {samples} served:\n{dom}"
    );
    assert!(line_points(&dom) >= 2, "no line in the chart:\n{dom}");
    // The hostile strings are text: escaped in the DOM, no element made of them, no script run.
    for hostile in [HOSTILE_AGENT, HOSTILE_ERROR] {
        let escaped = hostile
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(
            dom.contains(&escaped),
            "{hostile} not shown as text:\n{dom}"
        );
    }
    assert!(
        !dom.contains("id=\"injected") && !dom.contains("pwned</title>"),
        "a hostile string became markup:\n{dom}"
    );
    assert!(dom.contains("<title>edgefleet · fleet</title>"), "{dom}");

    // A screenshot for people to look at, kept as an artefact.
    let png = artefacts.join("fleet-page.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,900",
        ],
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000,
        "not a real screenshot: {} bytes",
        bytes.len()
    );
    println!("fleet page screenshot: {}", png.display());
    println!(
        "fleet page DOM: {}",
        artefacts.join("fleet-page.html").display()
    );

    // `/` leads to the page.
    assert_eq!(fleet.controller_get("/").0, 307);
    traffic.abort();
}
