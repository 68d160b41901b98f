//! `edgefleet demo`, the README's main command, as a newcomer runs it (smaller and shorter): it
//! must show the fleet, roll thermostat 1.1.0 out, end with a clean oracle and exit 0 having
//! stopped everything it started; and SIGTERM in the middle must stop everything too. With
//! `--kube` the same against the test control plane (scripts/setup.sh builds it), showing the real
//! `kubectl get edgenodes`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(400);

/// The demo's sibling binaries must be built (`cargo test --workspace` builds them all).
fn check_siblings() {
    let dir = Path::new(env!("CARGO_BIN_EXE_edgefleet"))
        .parent()
        .expect("target/<profile>");
    for name in [
        "edgefleet-controller",
        "edge-agent",
        "edgefleet-sandbox-worker",
    ] {
        assert!(
            dir.join(name).exists(),
            "{name} is not built: run `cargo build -p edgefleet-controller -p edge-agent \
             -p edgefleet-sandbox-worker` (or the whole `cargo test --workspace`)"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A small demo in `dir` (with `extra` arguments); its stdout lines come through the receiver.
fn start(dir: &Path, extra: &[&str]) -> (Child, mpsc::Receiver<String>) {
    check_siblings();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgefleet"))
        .args(["demo", "--devices", "60", "--rate", "2"])
        .args(extra)
        .args(["--before-rollout-s", "4", "--after-rollout-s", "2"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edgefleet runs");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Every line until the demo closes its output, or panics after `LIMIT`.
fn lines_until_end(rx: &mpsc::Receiver<String>, until: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + LIMIT;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let stop = until(&line);
                lines.push(line);
                if stop {
                    return lines;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return lines,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "the demo did not finish in {LIMIT:?}:\n{}",
                    lines.join("\n")
                )
            }
        }
    }
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the demo did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    text
}

/// Processes whose command line names `dir` (brokers' configs, the controller, the agents and
/// their workers all do).
fn processes_in(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let path: PathBuf = entry.path().join("cmdline");
        if let Ok(bytes) = std::fs::read(&path) {
            let cmdline = String::from_utf8_lossy(&bytes).replace('\0', " ");
            if cmdline.contains(&needle) && !cmdline.contains("edgefleet demo") {
                found.push(cmdline);
            }
        }
    }
    found
}

/// The broker addresses the demo printed (`cloud broker 127.0.0.1:PORT`, `edge-1 devices …`)
/// that still accept connections.
fn brokers_listening(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.contains("broker") || l.contains("devices  127."))
        .filter_map(|l| l.split_whitespace().last())
        .filter(|addr| addr.starts_with("127.0.0.1:"))
        .filter(|addr| std::net::TcpStream::connect(addr).is_ok())
        .map(str::to_owned)
        .collect()
}

/// Runs the demo in `dir` to its end: it must exit 0, having shown `first`, the rollout
/// progressing, a clean oracle and the verdict. Its output, as lines and as one text.
fn run_to_the_end(dir: &Path, extra: &[&str], first: &str) -> (Vec<String>, String) {
    let (mut child, rx) = start(dir, extra);
    let lines = lines_until_end(&rx, |_| false);
    let status = wait(&mut child);
    let out = lines.join("\n");
    let err = stderr(&mut child);
    assert!(status.success(), "exit {status}:\n{out}\n{err}");
    for expected in [
        first,
        "rollout of thermostat 1.1.0: Progressing",
        "oracle: clean",
        "verdict: thermostat 1.1.0 rolled out to every node",
    ] {
        assert!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
    (lines, out)
}

#[test]
fn the_demo_rolls_out_thermostat_1_1_with_a_clean_oracle_and_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, out) = run_to_the_end(dir.path(), &[], "[7/7]");
    // Before the devices start, the table shows every class ready on every node.
    let first: Vec<&String> = lines
        .iter()
        .skip_while(|l| !l.starts_with("[5/7]"))
        .take_while(|l| !l.starts_with("[6/7]"))
        .filter(|l| l.contains("-1.0.0 "))
        .collect();
    assert!(
        first.len() == 4 && first.iter().all(|l| l.contains(" True ")),
        "{out}"
    );
    // The final fleet table: three nodes online on 1.1.0, the class's rollout complete.
    let nodes: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("edge-") && l.contains("thermostat=1.1.0"))
        .collect();
    assert!(
        nodes.len() >= 3 && nodes.iter().rev().take(3).all(|l| l.contains("Online")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("thermostat ") && l.contains("Completed")),
        "{out}"
    );
    let left = processes_in(dir.path());
    assert!(left.is_empty(), "still running after the demo: {left:#?}");
    assert!(lines.iter().any(|l| l.contains("cloud broker")), "{out}");
    let listening = brokers_listening(&lines);
    assert!(listening.is_empty(), "brokers still up: {listening:?}");
}

/// The address printed after `label` (`      OCI registry     127.0.0.1:PORT`, `https://` dropped).
fn printed<'a>(lines: &'a [String], label: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("      ")?.strip_prefix(label))
        .map(|rest| rest.trim().trim_start_matches("https://"))
}

#[test]
fn the_demo_on_a_real_kube_apiserver_shows_kubectl_get_edgenodes_and_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, out) = run_to_the_end(
        dir.path(),
        &["--kube"],
        "[3/7] the controller in cluster mode",
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("thermostat ") && l.contains("Completed")),
        "{out}"
    );
    // The real kubectl's table (the CRD's printer columns), every node online on 1.1.0.
    let at = lines
        .iter()
        .position(|l| l == "$ kubectl get edgenodes")
        .unwrap_or_else(|| panic!("no kubectl table in:\n{out}"));
    let table: Vec<&String> = lines[at + 1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(
        table.first().is_some_and(|h| h.starts_with("NAME ")),
        "{out}"
    );
    for node in ["edge-1", "edge-2", "edge-3"] {
        assert!(
            table.iter().any(|l| l.starts_with(&format!("{node} "))
                && l.contains("Online")
                && l.contains("thermostat=1.1.0")),
            "{node} is not Online on thermostat 1.1.0 in:\n{out}"
        );
    }
    let at = lines
        .iter()
        .position(|l| l == "$ kubectl get deviceclasses.edgefleet.dev")
        .unwrap_or_else(|| panic!("no kubectl table of the classes in:\n{out}"));
    for class in ["thermostat", "meter", "door-lock", "air-quality"] {
        assert!(
            lines[at + 1..]
                .iter()
                .take_while(|l| !l.is_empty())
                .any(|l| l.starts_with(&format!("{class} "))),
            "no {class} in kubectl's classes:\n{out}"
        );
    }

    // Nothing left: the fleet, the brokers, kube-apiserver and etcd (their command lines name the
    // control plane's folder), the API server's and the registry's ports.
    let left = processes_in(dir.path());
    assert!(left.is_empty(), "still running after the demo: {left:#?}");
    let listening = brokers_listening(&lines);
    assert!(listening.is_empty(), "brokers still up: {listening:?}");
    let plane = printed(&lines, "control plane").unwrap_or_else(|| panic!("{out}"));
    assert!(plane.contains("edgefleet-controlplane-"), "{out}");
    let left = processes_in(Path::new(plane));
    assert!(left.is_empty(), "the control plane still runs: {left:#?}");
    for label in ["kube-apiserver", "OCI registry"] {
        let addr = printed(&lines, label).unwrap_or_else(|| panic!("no {label} in:\n{out}"));
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "{label} still listens on {addr}"
        );
    }
}

#[test]
fn sigterm_in_the_middle_stops_everything_the_demo_started() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, rx) = start(dir.path(), &[]);
    let lines = lines_until_end(&rx, |l| l.starts_with("[6/7]"));
    assert!(
        lines.last().is_some_and(|l| l.starts_with("[6/7]")),
        "the devices never started:\n{}\n{}",
        lines.join("\n"),
        stderr(&mut child)
    );
    assert!(
        !processes_in(dir.path()).is_empty(),
        "the fleet runs while the devices talk"
    );
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal");
    let status = wait(&mut child);
    let err = stderr(&mut child);
    assert!(!status.success(), "an interrupted demo is not a success");
    assert!(err.contains("stopping (SIGTERM)"), "{err}");
    let left = processes_in(dir.path());
    assert!(left.is_empty(), "still running after SIGTERM: {left:#?}");
    let listening = brokers_listening(&lines);
    assert!(listening.is_empty(), "brokers still up: {listening:?}");
}
