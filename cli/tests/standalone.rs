//! The fleet commands against a real standalone controller (`edgefleet-controller run --objects`)
//! on the shipped cloud broker, with a real agent on its shipped device broker: `apply` writes the
//! objects into the controller's folder, `get` and `describe` read them back with their status.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_protocol::NodeId;
use edgefleet_protocol::signing::{SigningKey, TrustAnchor};
use edgefleet_simulators::broker::{Broker, BrokerOptions, Shipped};
use edgefleet_simulators::pki::{Authority, TlsFiles};
use support::{Run, cell, edgefleet_with, field, table_rows};

const LIMIT: Duration = Duration::from_secs(90);

/// A binary of another workspace package, beside this package's own binary (`cargo test
/// --workspace` builds them all; `cargo test -p edgefleet-cli` does not).
fn workspace_binary(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_edgefleet"))
        .parent()
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p edgefleet-controller -p edge-agent -p edgefleet-sandbox-worker` \
         (or the whole `cargo test --workspace`)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn logs(variable: &str) -> Stdio {
    if std::env::var_os(variable).is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The cloud broker, the controller's TLS files and signing key, the controller on `objects/`.
struct Standalone {
    authority: Arc<Authority>,
    cloud: Broker,
    dir: tempfile::TempDir,
    server: String,
    processes: Vec<Killed>,
    devices: Vec<Broker>,
}

impl Standalone {
    fn start() -> Standalone {
        edgefleet_protocol::tls::install_crypto_provider();
        let authority = Arc::new(Authority::new("fleet").unwrap());
        let cloud = Broker::with_options(BrokerOptions::shipped(authority.clone(), Shipped::Cloud))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = SigningKey::generate().unwrap();
        key.save(&d.join("signing-key.pem")).unwrap();
        let mut trust = TrustAnchor::new();
        trust.insert(key.verifying_key());
        std::fs::write(d.join("trust.pem"), trust.to_pem_bundle().unwrap()).unwrap();
        TlsFiles::write(
            d,
            "controller",
            &authority,
            &authority.client_cert("edgefleet-controller").unwrap(),
        )
        .unwrap();
        std::fs::create_dir_all(d.join("objects")).unwrap();
        let port = free_port();
        let controller = Command::new(workspace_binary("edgefleet-controller"))
            .arg("run")
            .arg("--objects")
            .arg(d.join("objects"))
            .arg("--data-dir")
            .arg(d.join("controller-data"))
            .args([
                "--cloud-broker",
                &format!("mqtts://127.0.0.1:{}", cloud.port()),
            ])
            .arg("--tls-ca")
            .arg(d.join("controller-ca.crt"))
            .arg("--tls-cert")
            .arg(d.join("controller.crt"))
            .arg("--tls-key")
            .arg(d.join("controller.key"))
            .arg("--signing-key")
            .arg(d.join("signing-key.pem"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info")
            .stderr(logs("EDGEFLEET_TEST_CONTROLLER_LOGS"))
            .spawn()
            .expect("the controller starts");
        Standalone {
            authority,
            cloud,
            dir,
            server: format!("http://127.0.0.1:{port}"),
            processes: vec![Killed(controller)],
            devices: Vec::new(),
        }
    }

    fn objects(&self) -> PathBuf {
        self.dir.path().join("objects")
    }

    /// Starts a node: its device broker and its agent, reporting every second.
    fn add_node(&mut self, name: &str) {
        let d = self.dir.path().to_path_buf();
        let devices = Broker::with_options(BrokerOptions::shipped(
            self.authority.clone(),
            Shipped::Device {
                node: NodeId::new(name).unwrap(),
            },
        ))
        .unwrap();
        TlsFiles::write(
            &d,
            name,
            &self.authority,
            &self.authority.client_cert(name).unwrap(),
        )
        .unwrap();
        let agent = Command::new(workspace_binary("edge-agent"))
            .args(["--node-name", name])
            .arg("--data-dir")
            .arg(d.join(format!("{name}-data")))
            .args([
                "--device-broker",
                &format!("mqtts://127.0.0.1:{}", devices.port()),
            ])
            .args([
                "--uplink-broker",
                &format!("mqtts://127.0.0.1:{}", self.cloud.port()),
            ])
            .arg("--tls-ca")
            .arg(d.join(format!("{name}-ca.crt")))
            .arg("--tls-cert")
            .arg(d.join(format!("{name}.crt")))
            .arg("--tls-key")
            .arg(d.join(format!("{name}.key")))
            .arg("--trust-anchor")
            .arg(d.join("trust.pem"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--status-interval-s", "1"])
            .env("RUST_LOG", "info")
            .stdout(logs("EDGEFLEET_TEST_AGENT_LOGS"))
            .stderr(logs("EDGEFLEET_TEST_AGENT_LOGS"))
            .spawn()
            .expect("the agent starts");
        self.processes.push(Killed(agent));
        self.devices.push(devices);
    }

    /// `edgefleet args… --server <the controller>`.
    fn cli(&self, args: &[&str]) -> Run {
        self.cli_in(args, None)
    }

    fn cli_in(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", &self.server]);
        edgefleet_with(self.dir.path(), &all, &[], stdin)
    }

    /// Runs `args` until `check` holds for its output; fails with the last output after LIMIT.
    fn until(&self, args: &[&str], what: &str, check: impl Fn(&Run) -> bool) -> Run {
        let started = Instant::now();
        loop {
            let run = self.cli(args);
            if run.code == 0 && check(&run) {
                return run;
            }
            assert!(
                started.elapsed() < LIMIT,
                "{what}: `edgefleet {}` after {LIMIT:?}: exit {}\n{}\n{}",
                args.join(" "),
                run.code,
                run.stdout,
                run.stderr
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The object files in the folder.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.objects())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

const FLEET: &str = "\
apiVersion: edgefleet.dev/v1alpha1
kind: HandlerModule
metadata:
  name: thermostat-1.0.0
spec:
  module: thermostat
  version: 1.0.0
  file: thermostat.wasm
---
apiVersion: edgefleet.dev/v1alpha1
kind: DeviceClass
metadata:
  name: thermo
spec:
  module: thermostat-1.0.0
  config: {setpoint_c: 21.0, hysteresis_c: 0.5}
  limits: {timeBudgetMs: 40}
  nodeSelector:
    matchLabels: {site: a}
---
apiVersion: edgefleet.dev/v1alpha1
kind: EdgeNode
metadata:
  name: edge-1
  labels: {site: a}
";

#[test]
fn apply_get_and_describe_on_a_standalone_controller() {
    let mut fleet = Standalone::start();
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    std::fs::write(fleet.objects().join("thermostat.wasm"), &wasm).unwrap();
    let sha256 = edgefleet_protocol::Sha256Digest::of(&wasm).to_string();

    // Nothing declared yet: empty lists, said so on stderr.
    let empty = fleet.until(&["get", "modules"], "the controller answers", |_| true);
    assert_eq!(empty.stdout, "");
    assert!(
        empty
            .stderr
            .contains("No handlermodules on the standalone controller at"),
        "{}",
        empty.stderr
    );

    std::fs::write(fleet.dir.path().join("fleet.yaml"), FLEET).unwrap();
    let applied = fleet.cli(&["apply", "-f", "fleet.yaml"]).ok();
    assert_eq!(
        applied.stdout,
        "handlermodule/thermostat-1.0.0 created\ndeviceclass/thermo created\nedgenode/edge-1 created\n"
    );
    assert_eq!(
        fleet.files(),
        [
            "deviceclass-thermo.yaml",
            "edgenode-edge-1.yaml",
            "handlermodule-thermostat-1.0.0.yaml",
            "thermostat.wasm"
        ]
    );
    // The apply answers once the controller has read the files: they are there at once.
    let modules = fleet.cli(&["get", "modules"]).ok();
    assert_eq!(
        table_rows(&modules.stdout)[0],
        ["NAME", "MODULE", "VERSION", "READY", "REASON", "SIZE"],
        "{}",
        modules.stdout
    );
    assert_eq!(
        cell(&modules.stdout, "thermostat-1.0.0", "MODULE").as_deref(),
        Some("thermostat")
    );

    // The controller admits the module: Ready.
    let modules = fleet.until(&["get", "modules"], "the module is admitted", |run| {
        cell(&run.stdout, "thermostat-1.0.0", "REASON").as_deref() == Some("Admitted")
    });
    assert_eq!(
        cell(&modules.stdout, "thermostat-1.0.0", "READY").as_deref(),
        Some("True")
    );
    let size = cell(&modules.stdout, "thermostat-1.0.0", "SIZE").unwrap();
    assert!(size.ends_with("KiB"), "{}", modules.stdout);
    let wide = fleet
        .cli(&["get", "module", "thermostat-1.0.0", "-o", "wide"])
        .ok();
    assert_eq!(
        cell(&wide.stdout, "thermostat-1.0.0", "SHA256"),
        Some(sha256.clone())
    );
    assert_eq!(
        cell(&wide.stdout, "thermostat-1.0.0", "SOURCE").as_deref(),
        Some("file thermostat.wasm")
    );
    let json = fleet.cli(&["get", "modules", "-o", "json"]).ok();
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"][0]["status"]["sha256"], sha256.as_str());
    assert_eq!(json["items"][0]["status"]["size"], wasm.len() as u64);

    // An agent on a selected node: the class rolls out to it.
    fleet.add_node("edge-1");
    let nodes = fleet.until(&["get", "nodes"], "edge-1 runs thermo", |run| {
        cell(&run.stdout, "edge-1", "STATUS").as_deref() == Some("Online")
            && cell(&run.stdout, "edge-1", "CLASSES").as_deref() == Some("thermo=1.0.0")
    });
    assert_eq!(
        table_rows(&nodes.stdout)[0],
        [
            "NAME",
            "STATUS",
            "CLASSES",
            "DEVICES",
            "RATE",
            "ERRORS",
            "OUTBOX",
            "LAST-SEEN"
        ],
        "{}",
        nodes.stdout
    );
    let last_seen = cell(&nodes.stdout, "edge-1", "LAST-SEEN").unwrap();
    assert!(last_seen.ends_with('s'), "{}", nodes.stdout);
    let classes = fleet.until(&["get", "classes"], "thermo is rolled out", |run| {
        cell(&run.stdout, "thermo", "READY").as_deref() == Some("True")
    });
    assert_eq!(
        table_rows(&classes.stdout)[0],
        [
            "NAME", "MODULE", "VERSION", "NODES", "UPDATED", "FAILING", "READY", "ROLLOUT", "STEP"
        ],
        "{}",
        classes.stdout
    );
    assert_eq!(
        table_rows(&classes.stdout)[1],
        [
            "thermo",
            "thermostat-1.0.0",
            "thermostat 1.0.0",
            "1",
            "1",
            "0",
            "True",
            "Completed",
            "1/1 complete"
        ],
        "{}",
        classes.stdout
    );

    // describe: spec, status, conditions.
    let class = fleet.cli(&["describe", "class", "thermo"]).ok().stdout;
    for (label, value) in [
        ("Name", "thermo"),
        ("Kind", "DeviceClass (edgefleet.dev/v1alpha1)"),
        ("Module", "thermostat-1.0.0"),
        ("Limits", "timeBudgetMs=40"),
        ("Node selector", "site=a"),
        ("Target version", "thermostat 1.0.0"),
        ("Nodes", "1 selected, 1 assigned, 1 updated, 0 failing"),
    ] {
        assert_eq!(
            field(&class, label).as_deref(),
            Some(value),
            "{label} in:\n{class}"
        );
    }
    assert!(class.contains("Conditions:\n  TYPE  "), "{class}");
    assert!(class.contains("LAST TRANSITION"), "{class}");
    let ready = class
        .lines()
        .find(|l| l.trim_start().starts_with("Ready "))
        .unwrap_or_else(|| panic!("a Ready condition in:\n{class}"));
    assert!(ready.contains("True"), "{class}");
    assert!(!class.contains("Events:"), "no Events standalone:\n{class}");
    assert_eq!(
        field(&class, "Phase").as_deref(),
        Some("Completed"),
        "{class}"
    );
    let module = fleet
        .cli(&["describe", "module", "thermostat-1.0.0"])
        .ok()
        .stdout;
    for (label, value) in [
        (
            "File",
            "thermostat.wasm (read by the standalone controller)",
        ),
        ("SHA-256", sha256.as_str()),
        ("Used by classes", "thermo"),
    ] {
        assert_eq!(
            field(&module, label).as_deref(),
            Some(value),
            "{label} in:\n{module}"
        );
    }
    let admission = field(&module, "Admission").unwrap_or_default();
    assert!(admission.starts_with("admitted: guest ABI v1"), "{module}");
    let node = fleet.cli(&["describe", "node", "edge-1"]).ok().stdout;
    assert_eq!(field(&node, "Labels").as_deref(), Some("site=a"), "{node}");
    assert_eq!(field(&node, "State").as_deref(), Some("Online"), "{node}");
    assert!(node.contains("thermo  thermostat 1.0.0"), "{node}");

    // Applying the same again changes nothing; a changed class is configured (from stdin).
    let again = fleet.cli(&["apply", "-f", "fleet.yaml"]).ok();
    assert_eq!(
        again.stdout,
        "handlermodule/thermostat-1.0.0 unchanged\ndeviceclass/thermo unchanged\nedgenode/edge-1 unchanged\n"
    );
    let class_text = FLEET.split("---\n").nth(1).unwrap();
    let changed = fleet
        .cli_in(
            &["apply", "-f", "-"],
            Some(&class_text.replace("timeBudgetMs: 40", "timeBudgetMs: 30")),
        )
        .ok();
    assert_eq!(changed.stdout, "deviceclass/thermo configured\n");
    let class = fleet.cli(&["describe", "class", "thermo"]).ok().stdout;
    assert!(class.contains("timeBudgetMs=30"), "{class}");

    // rollout: its status, and an action carried out (nothing to pause once completed).
    let status = fleet.cli(&["rollout", "status", "thermo"]).ok().stdout;
    assert!(
        status.contains("Completed at step 1/1 complete"),
        "{status}"
    );
    let paused = fleet.cli(&["rollout", "pause", "thermo"]).ok().stdout;
    assert!(
        paused.contains("Completed at step 1/1 complete"),
        "{paused}"
    );
    let class = fleet.cli(&["describe", "class", "thermo"]).ok().stdout;
    assert!(
        field(&class, "Last action").is_some_and(|a| a.starts_with("pause:")),
        "{class}"
    );

    // Refused, with what is wrong, and nothing written: ...
    let files = fleet.files();
    let refused = |args: &[&str], stdin: &str, expect: &[&str]| {
        let run = fleet.cli_in(args, Some(stdin)).fails(1);
        for expected in expect {
            assert!(
                run.stderr.contains(expected),
                "{expected:?} in:\n{}",
                run.stderr
            );
        }
        assert_eq!(run.stdout, "");
        assert_eq!(fleet.files(), files);
    };
    // ... an invalid object among valid ones (checked by the CLI before sending anything),
    refused(
        &["apply", "-f", "-"],
        &format!(
            "{class_text}---\napiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata: {{name: meters}}\nspec: {{limits: {{}}}}\n"
        ),
        &[
            "standard input: DeviceClass meters: bad spec: missing field `module`",
            "nothing was applied",
        ],
    );
    // ... a new version of an immutable module version (refused by the controller),
    refused(
        &["apply", "-f", "-"],
        &FLEET
            .split("---\n")
            .next()
            .unwrap()
            .replace("thermostat.wasm", "other.wasm"),
        &[
            "the controller refused it",
            "a HandlerModule is one immutable module version: create a new object for a new version",
        ],
    );
    // ... an object another file of the folder declares.
    std::fs::write(
        fleet.objects().join("site-b.yaml"),
        "apiVersion: edgefleet.dev/v1alpha1\nkind: EdgeNode\nmetadata: {name: edge-2}\n",
    )
    .unwrap();
    let files = fleet.files();
    let run = fleet
        .cli_in(
            &["apply", "-f", "-"],
            Some("apiVersion: edgefleet.dev/v1alpha1\nkind: EdgeNode\nmetadata: {name: edge-2, labels: {site: b}}\n"),
        )
        .fails(1);
    assert!(
        run.stderr.contains(
            "EdgeNode edge-2 is declared in site-b.yaml in the objects folder: edit that file"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(fleet.files(), files);

    // The endpoint refuses invalid objects itself too (here without the CLI's check).
    let (code, body) = post(
        &fleet.server,
        "/api/v1alpha1/apply",
        "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata: {name: Bad_Name}\nspec: {module: x}\n",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("is not a valid name"), "{body}");
    assert_eq!(fleet.files(), files);

    // Names the fleet does not have.
    let run = fleet.cli(&["describe", "class", "nope"]).fails(1);
    assert!(
        run.stderr
            .contains("no device class named \"nope\" on the standalone controller at")
            && run.stderr.contains("get classes"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_controller_that_is_not_there_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = format!("http://127.0.0.1:{}", free_port());
    for args in [
        vec!["get", "nodes", "--server", &server],
        vec!["describe", "node", "edge-1", "--server", &server],
    ] {
        let run = edgefleet_with(dir.path(), &args, &[], None).fails(1);
        assert!(
            run.stderr.contains(&format!(
                "cannot reach the standalone controller at {server}"
            )),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("edgefleet-controller run --objects"),
            "{}",
            run.stderr
        );
    }
    // EDGEFLEET_SERVER names it too.
    let run = edgefleet_with(
        dir.path(),
        &["get", "classes"],
        &[("EDGEFLEET_SERVER", &server)],
        None,
    )
    .fails(1);
    assert!(run.stderr.contains(&server), "{}", run.stderr);
    // Neither a server nor a kubeconfig: say how to name one.
    let run = edgefleet_with(dir.path(), &["get", "classes"], &[], None).fails(1);
    assert!(
        run.stderr.contains("no fleet to talk to")
            && run.stderr.contains("--kubeconfig")
            && run.stderr.contains("--server"),
        "{}",
        run.stderr
    );
    // An invalid file is refused before anything is contacted.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    )
    .unwrap();
    let run = edgefleet_with(
        dir.path(),
        &["apply", "-f", "bad.yaml", "--server", &server],
        &[],
        None,
    )
    .fails(1);
    assert!(
        run.stderr
            .contains("bad.yaml: apiVersion \"v1\" is not edgefleet.dev/v1alpha1"),
        "{}",
        run.stderr
    );
    // Help that teaches: what it is for, and examples.
    for command in ["apply", "get", "describe", "module"] {
        let help = edgefleet_with(dir.path(), &[command, "--help"], &[], None).ok();
        assert!(
            help.stdout.contains("Examples:\n")
                && help.stdout.contains(&format!("  edgefleet {command} ")),
            "{command}:\n{}",
            help.stdout
        );
    }
    // Usage errors exit with 2.
    edgefleet_with(dir.path(), &["get", "pods"], &[], None).fails(2);
}

/// POSTs `body` to `server` + `path`; the status code and the body.
fn post(server: &str, path: &str, body: &str) -> (u16, String) {
    let port = server
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    edgefleet_testenv::http::request(port, "POST", path, body)
}
