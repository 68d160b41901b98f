//! The container images (images/Containerfile, built by scripts/images.sh) serving a device, with
//! real parts: the controller, the node's device broker and the agent each run from their image
//! under podman — read-only root filesystem (no tmpfs either, as Kubernetes'
//! `readOnlyRootFilesystem`), uid 65532, no capabilities, writable state only in volumes — against
//! the shipped cloud broker (the harness's mosquitto) and a device on the host. The module declares
//! the example's pre-flight test vectors, so the controller image's sandbox worker runs too.
//!
//! Ignored by `cargo test --workspace`: building the images takes a release build (see
//! images/README.md). `scripts/images.sh check` builds them and runs this test; asked to run while
//! an image (or podman) is missing, it fails and says how to build them.

mod fleet;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use edgefleet_simulators::broker;
use edgefleet_simulators::pki::{self, Authority};
use fleet::*;
use rumqttc::{MqttOptions, QoS, Transport};

const LIMIT: Duration = Duration::from_secs(60);
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The uid every image runs as (images/Containerfile).
const UID: u32 = 65532;
const NODE: &str = "edge-image";

fn image(name: &str) -> String {
    format!("localhost/edgefleet-{name}:{VERSION}")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// podman with the settings containers need here (images/containers.conf), unless the caller
/// set its own.
fn podman() -> Command {
    let mut command = Command::new("podman");
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        command.env("CONTAINERS_CONF", repo().join("images/containers.conf"));
    }
    command
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e} (run scripts/setup.sh)"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The confinement every container of this test gets, as a Kubernetes pod with
/// `readOnlyRootFilesystem`, no capabilities and no privilege escalation would; with [`AS_USER`]
/// (all but the init step that prepares the agent's host path), `runAsUser: 65532`.
const CONFINED: [&str; 8] = [
    "--runtime",
    "runc",
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop",
    "all",
    "--security-opt",
    "no-new-privileges",
];
const AS_USER: [&str; 2] = ["--user", "65532:65532"];

/// A one-off confined container without network running `entrypoint` (the image and its arguments
/// follow).
fn one_off(entrypoint: &str) -> Command {
    let mut command = podman();
    command
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            entrypoint,
        ])
        .args(CONFINED);
    command
}

/// A detached container, removed (killed first) when dropped.
struct Container {
    name: String,
}

impl Container {
    /// `podman run -d` of `image` on the host's network, confined, with `volumes` (host path,
    /// container path, read-only) and `args` after the image.
    fn start(
        role: &str,
        image: &str,
        volumes: &[(&Path, &str, bool)],
        env: &[(&str, &str)],
        args: &[String],
    ) -> Container {
        let name = format!("edgefleet-image-test-{}-{role}", std::process::id());
        let mut command = podman();
        command.args(["run", "-d", "--name", &name, "--network", "host"]);
        command.args(["--label", "edgefleet-test=image"]);
        command.args(CONFINED).args(AS_USER);
        for (host, path, read_only) in volumes {
            let ro = if *read_only { ":ro" } else { "" };
            command
                .arg("-v")
                .arg(format!("{}:{path}{ro}", host.display()));
        }
        for (key, value) in env {
            command.arg("-e").arg(format!("{key}={value}"));
        }
        command.arg(image).args(args);
        run(&mut command);
        Container { name }
    }

    fn logs(&self) -> String {
        let output = podman()
            .args(["logs", &self.name])
            .output()
            .expect("podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// `{{.State.Running}} {{.State.ExitCode}}`.
    fn state(&self) -> (bool, i32) {
        let output = run(podman().args([
            "inspect",
            "--format",
            "{{.State.Running}} {{.State.ExitCode}}",
            &self.name,
        ]));
        let text = String::from_utf8_lossy(&output.stdout);
        let mut words = text.split_whitespace();
        let running = words.next() == Some("true");
        let code = words.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
        (running, code)
    }

    /// Fails with the container's log when it has exited.
    fn assert_running(&self, what: &str) {
        let (running, code) = self.state();
        assert!(
            running,
            "{what}: {} exited ({code}):\n{}",
            self.name,
            self.logs()
        );
    }

    /// SIGTERM, as the kubelet stops a pod; returns the exit code.
    fn stop(&self) -> i32 {
        run(podman().args(["stop", "--time", "20", &self.name]));
        self.state().1
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "0", &self.name])
            .output();
    }
}

/// A folder the containers' user owns (a volume, or read-only input whose keys only it may read).
fn owned_dir(path: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

fn owned_file(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap();
    std::os::unix::fs::chown(path, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400)).unwrap();
}

/// ca.crt, tls.crt, tls.key (the names of a Kubernetes TLS secret) for `identity`, trusting
/// `authority`.
fn tls_dir(dir: &Path, authority: &Authority, identity: &pki::Identity) -> PathBuf {
    let dir = owned_dir(dir, 0o500);
    owned_file(&dir.join("ca.crt"), authority.ca_pem().as_bytes());
    owned_file(&dir.join("tls.crt"), identity.cert_pem().as_bytes());
    owned_file(&dir.join("tls.key"), identity.key_pem().as_bytes());
    dir
}

/// Polls `check` (which may fail the test itself) until it holds; fails with `context()` after
/// `limit`.
async fn until(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "{what} within {limit:?}:\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn class_object() -> String {
    "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata:\n  name: thermo\n\
     spec:\n  module: thermostat-1.0.0\n  config: {setpoint_c: 21.0, hysteresis_c: 0.5}\n\
     \x20 nodeSelector:\n    matchLabels: {site: image}\n"
        .into()
}

fn edge_node_object() -> String {
    format!(
        "apiVersion: edgefleet.dev/v1alpha1\nkind: EdgeNode\nmetadata:\n  name: {NODE}\n  labels: {{site: image}}\n"
    )
}

fn thermostat_command(message: &rumqttc::Publish) -> edgefleet_thermostat::Command {
    edgefleet_guest::cbor::from_slice(&message.payload).expect("a thermostat command")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs the container images: `scripts/images.sh check` builds them and runs this test"]
async fn the_images_serve_a_device_read_only_as_an_unprivileged_user() {
    for name in ["controller", "agent", "mosquitto"] {
        let exists = podman()
            .args(["image", "exists", &image(name)])
            .status()
            .unwrap_or_else(|e| panic!("podman: {e} (run scripts/setup.sh)"));
        assert!(
            exists.success(),
            "{} is not built: run scripts/images.sh (or scripts/images.sh check, which builds \
             the images and runs this test)",
            image(name)
        );
    }

    let fleet = Fleet::new();
    let authority = fleet.authority.clone();
    let base = fleet.dir.path().join("containers");
    std::fs::create_dir_all(&base).unwrap();

    // The objects: the example module with its four test vectors, a class, the node.
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    std::fs::write(fleet.objects_dir().join("thermostat.wasm"), &wasm).unwrap();
    fleet.write_object(
        "module.yaml",
        include_str!("../../examples/thermostat.yaml"),
    );
    fleet.write_object("class.yaml", &class_object());
    fleet.write_object("node.yaml", &edge_node_object());

    // The device broker: the image's own device configuration, byte for byte the shipped one, with
    // only its listener moved to a free loopback port (the containers share the host's network,
    // where 8883 may be taken).
    let shipped = include_str!("../../brokers/device/mosquitto.conf");
    let in_image = run(one_off("/usr/bin/sed")
        .args(AS_USER)
        .arg(image("mosquitto"))
        .args(["-n", "p", "/etc/edgefleet/brokers/device/mosquitto.conf"]));
    assert_eq!(String::from_utf8_lossy(&in_image.stdout), shipped);
    let device_port = free_port();
    assert_eq!(shipped.matches("\nlistener 8883\n").count(), 1);
    let config = shipped.replace(
        "\nlistener 8883\n",
        &format!("\nlistener {device_port} 127.0.0.1\n"),
    );
    let broker_etc = owned_dir(&base.join("device-broker"), 0o700);
    tls_dir(
        &broker_etc.join("tls"),
        &authority,
        &authority.server_cert(&["localhost", "127.0.0.1"]).unwrap(),
    );
    owned_file(&broker_etc.join("mosquitto.conf"), config.as_bytes());
    // The ACL template rendered for the node as the K3s init container does it: with the image's
    // own sh and sed.
    run(one_off("/bin/sh")
        .args(AS_USER)
        .args(["-e", &format!("NODE_NAME={NODE}")])
        .arg("-v")
        .arg(format!("{}:/rendered", broker_etc.display()))
        .arg(image("mosquitto"))
        .args([
            "-c",
            "sed \"s/@NODE_NAME@/$NODE_NAME/g\" /etc/edgefleet/brokers/device/acl >/rendered/acl",
        ]));
    let acl = std::fs::read_to_string(broker_etc.join("acl")).unwrap();
    assert!(acl.contains(&format!("\nuser {NODE}\n")), "{acl}");
    let broker_data = owned_dir(&base.join("device-broker-data"), 0o700);
    let device_broker = Container::start(
        "device-broker",
        &image("mosquitto"),
        &[
            (&broker_etc, "/etc/edgefleet/device-broker", true),
            (&broker_data, "/var/lib/mosquitto", false),
        ],
        &[],
        &[
            "-c".into(),
            "/etc/edgefleet/device-broker/mosquitto.conf".into(),
        ],
    );
    until(
        "the device broker listens",
        LIMIT,
        || {
            device_broker.assert_running("device broker");
            std::net::TcpStream::connect(("127.0.0.1", device_port)).is_ok()
        },
        || device_broker.logs(),
    )
    .await;

    // The controller, standalone on the objects folder (mounted read-only).
    let d = fleet.dir.path();
    let controller_tls = tls_dir(
        &base.join("controller-tls"),
        &authority,
        &authority.client_cert("edgefleet-controller").unwrap(),
    );
    owned_file(
        &controller_tls.join("signing-key.pem"),
        &std::fs::read(d.join("signing-key.pem")).unwrap(),
    );
    let controller_data = owned_dir(&base.join("controller-data"), 0o700);
    let objects = fleet.objects_dir();
    let controller = Container::start(
        "controller",
        &image("controller"),
        &[
            (&objects, "/etc/edgefleet/objects", true),
            (&controller_tls, "/etc/edgefleet/controller", true),
            (&controller_data, "/var/lib/edgefleet-controller", false),
        ],
        &[("RUST_LOG", "info")],
        &[
            "run".into(),
            "--objects=/etc/edgefleet/objects".into(),
            format!("--cloud-broker=mqtts://127.0.0.1:{}", fleet.cloud.port()),
            "--tls-ca=/etc/edgefleet/controller/ca.crt".into(),
            "--tls-cert=/etc/edgefleet/controller/tls.crt".into(),
            "--tls-key=/etc/edgefleet/controller/tls.key".into(),
            "--signing-key=/etc/edgefleet/controller/signing-key.pem".into(),
            format!("--listen=127.0.0.1:{}", fleet.controller_port),
        ],
    );
    until(
        "the controller is ready",
        LIMIT,
        || {
            controller.assert_running("controller");
            fleet.controller_get("/readyz").0 == 200
        },
        || controller.logs(),
    )
    .await;
    // Its sandbox worker (WasmEdge in the image) ran the module's test vectors.
    let module = fleet
        .until_object(
            "handlermodules",
            "thermostat-1.0.0",
            LIMIT,
            "the module admitted",
            |m| m["status"]["admission"].as_str().is_some(),
        )
        .await;
    let admission = module["status"]["admission"].as_str().unwrap_or_default();
    assert!(
        admission.ends_with("; 4 test vectors passed"),
        "{module:#}\n{}",
        controller.logs()
    );

    // The agent: state in a volume, certificates and the trust anchor read-only.
    let agent_tls = tls_dir(
        &base.join("agent-tls"),
        &authority,
        &authority.client_cert(NODE).unwrap(),
    );
    owned_file(
        &agent_tls.join("trust.pem"),
        &std::fs::read(d.join("trust.pem")).unwrap(),
    );
    // Its store is a host path the kubelet creates root-owned; the DaemonSet's init step hands it
    // to 65532 with the broker image's chown and chmod, as root with only CHOWN and FOWNER.
    let agent_data = base.join("agent-data");
    std::fs::create_dir(&agent_data).unwrap();
    run(one_off("/bin/sh")
        .args(["--user", "0:0", "--cap-add", "CHOWN", "--cap-add", "FOWNER"])
        .arg("-v")
        .arg(format!("{}:/store", agent_data.display()))
        .arg(image("mosquitto"))
        .args(["-c", "chown 65532:65532 /store && chmod 0700 /store"]));
    let prepared = std::fs::metadata(&agent_data).unwrap();
    assert_eq!(
        (prepared.uid(), prepared.gid(), prepared.mode() & 0o777),
        (UID, UID, 0o700)
    );
    let agent_port = free_port();
    let agent = Container::start(
        "agent",
        &image("agent"),
        &[
            (&agent_data, "/var/lib/edgefleet", false),
            (&agent_tls, "/etc/edgefleet/agent", true),
        ],
        &[("NODE_NAME", NODE), ("RUST_LOG", "info")],
        &[
            format!("--device-broker=mqtts://127.0.0.1:{device_port}"),
            format!("--uplink-broker=mqtts://127.0.0.1:{}", fleet.cloud.port()),
            "--tls-ca=/etc/edgefleet/agent/ca.crt".into(),
            "--tls-cert=/etc/edgefleet/agent/tls.crt".into(),
            "--tls-key=/etc/edgefleet/agent/tls.key".into(),
            "--trust-anchor=/etc/edgefleet/agent/trust.pem".into(),
            format!("--listen=127.0.0.1:{agent_port}"),
            "--status-interval-s=1".into(),
        ],
    );
    let node = fleet
        .until_object("edgenodes", NODE, LIMIT, "the node runs thermo", |n| {
            n["status"]["state"] == "Online"
                && n["status"]["classes"][0]["active"] == "thermostat 1.0.0"
        })
        .await;
    agent.assert_running("agent");
    assert_eq!(node["status"]["summary"], "thermo=1.0.0", "{node:#}");
    until(
        "the agent is ready",
        LIMIT,
        || {
            agent.assert_running("agent");
            http_get(agent_port, "/readyz").0 == 200
        },
        || agent.logs(),
    )
    .await;

    // A device on the containerised broker: its commands are the handler's answers, with the
    // device's state (the mode) carried between readings by the agent.
    let identity = authority.client_cert("t-1").unwrap();
    let mut options = MqttOptions::new("t-1", "127.0.0.1", device_port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_transport(Transport::tls_with_config(
        pki::client_config(&authority, &identity).unwrap().into(),
    ));
    let (device, mut events) = broker::client(options, 1000);
    let (tx, mut commands) = tokio::sync::mpsc::channel(100);
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p))) => {
                    if tx.send(p).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // Reconnects on the next poll; the device keeps publishing until answered.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    device
        .subscribe("ef/v1/dev/thermo/t-1/down/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();
    let topic = "ef/v1/dev/thermo/t-1/up/telemetry";
    let cold = until_answered(&device, topic, &reading(18.0), &mut commands, LIMIT).await;
    let cold = thermostat_command(&cold);
    assert_eq!(cold.mode, edgefleet_thermostat::Mode::Heat, "{cold:?}");
    assert_eq!(cold.setpoint_c, 21.0);
    // A warm reading turns the heating unit to cooling. Answers to repeats of the cold reading
    // (published until answered) may still come first: one device's messages are handled in order.
    let started = Instant::now();
    let warm = reading(25.0);
    'warm: loop {
        assert!(
            started.elapsed() < LIMIT,
            "no cooling command within {LIMIT:?}"
        );
        device
            .publish(topic, QoS::AtLeastOnce, false, warm.clone())
            .await
            .unwrap();
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(1), commands.recv()).await
        {
            match thermostat_command(&message).mode {
                edgefleet_thermostat::Mode::Cool => break 'warm,
                edgefleet_thermostat::Mode::Heat => {}
                other => panic!("a {other:?} command for 25 °C after heating"),
            }
        }
    }
    fleet
        .until_object(
            "edgenodes",
            NODE,
            LIMIT,
            "the node counts the device",
            |n| n["status"]["activeDevices"] == 1,
        )
        .await;

    // Stopped as the kubelet stops pods (SIGTERM to the entrypoint, PID 1), the agent drains,
    // says it is offline and exits 0; its store is in the volume, written as uid 65532.
    assert_eq!(agent.stop(), 0, "the agent's exit code:\n{}", agent.logs());
    fleet
        .until_object("edgenodes", NODE, LIMIT, "the node offline", |n| {
            n["status"]["state"] == "Offline"
        })
        .await;
    let stored: Vec<_> = std::fs::read_dir(&agent_data)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert!(!stored.is_empty(), "nothing in the agent's state volume");
    for entry in &stored {
        assert_eq!(entry.metadata().unwrap().uid(), UID, "{:?}", entry.path());
    }
    // mosquitto writes its persistence file into its volume on SIGTERM.
    assert_eq!(device_broker.stop(), 0, "{}", device_broker.logs());
    assert!(
        broker_data.join("mosquitto.db").exists(),
        "no mosquitto.db in the broker's volume:\n{}",
        device_broker.logs()
    );
    assert_eq!(controller.stop(), 0, "{}", controller.logs());
}
