//! What the controller benches read about processes: the wall clock, CPU time and memory from
//! /proc, the children of the bench by name, and the controller process they start (a standalone
//! one from [`Standalone`]'s folder). One copy for every bench (`mod process;`); not a bench target
//! itself (Cargo only discovers `benches/*.rs` and `benches/*/main.rs`). Each bench compiles this
//! module anew and uses part of it, hence `allow(dead_code)`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgefleet_protocol::{SigningKey, TrustAnchor};
use edgefleet_simulators::pki::{Authority, TlsFiles};

/// A bench's command line as (flag, value) pairs, from `--flag value` or `--flag=value`. Skips the
/// `--bench` that `cargo bench` passes to every bench binary, prints `usage` and exits on `--help`,
/// and exits 2 on a flag without a value.
pub fn flags(usage: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        if flag == "--bench" {
            continue;
        }
        if flag == "--help" || flag == "-h" {
            println!("{usage}");
            std::process::exit(0);
        }
        let value = inline
            .or_else(|| it.next())
            .unwrap_or_else(|| usage_error(usage, &format!("{flag} needs a value")));
        pairs.push((flag, value));
    }
    pairs
}

/// Says what is wrong with the command line, then `usage`, and exits 2.
pub fn usage_error(usage: &str, message: &str) -> ! {
    eprintln!("{message}\n{usage}");
    std::process::exit(2)
}

/// A flag's value as a number, or [`usage_error`].
pub fn number<T: std::str::FromStr>(usage: &str, flag: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| usage_error(usage, &format!("{flag}: not a number: {value}")))
}

/// Linux's USER_HZ: the unit of utime and stime in /proc/<pid>/stat.
const TICKS_PER_S: f64 = 100.0;

/// Now, in ms since the UNIX epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_S)
}

/// A `Vm*` line of /proc/<pid>/status, in MiB.
pub fn vm_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The proportional set size of `pid` (`Pss:` of /proc/<pid>/smaps_rollup: its private pages
/// plus its share of those it shares), in MiB.
pub fn pss_mib(pid: u32) -> Option<f64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Raises this process's soft `RLIMIT_NOFILE` to the hard limit, before anything that needs many
/// descriptors starts (children such as mosquitto inherit it); returns the limit now in force.
pub fn raise_open_files() -> Result<u64, String> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).map_err(|e| {
            format!(
                "cannot raise the open-files limit to {:?}: {e}",
                limit.maximum
            )
        })?;
    }
    Ok(limit.current.unwrap_or(u64::MAX))
}

/// This process's children named `comm` (mosquitto, etcd, kube-apiserver).
pub fn children_named(comm: &str) -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("", |(_, n)| n);
        let ppid = rest.split_whitespace().nth(1).unwrap_or("");
        if name == comm && ppid == me {
            pids.push(pid);
        }
    }
    pids
}

/// The controller process: SIGTERM on stop, killed if still running when dropped.
pub struct Controller(pub Child);

impl Controller {
    pub fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id())
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.0.wait();
    }

    /// Why the controller is gone, if it exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.0.try_wait() {
            Ok(Some(status)) => Some(format!(
                "the controller exited: {status} (EDGEFLEET_BENCH_LOGS=1 shows its log)"
            )),
            _ => None,
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A standalone controller's folder: its identity on the cloud broker (`edgefleet-controller`,
/// issued by the broker's authority), a signing key, and the objects folder it watches.
pub struct Standalone {
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
}

impl Standalone {
    pub fn new(authority: &Authority) -> Standalone {
        let dir = tempfile::tempdir().unwrap();
        TlsFiles::write(
            dir.path(),
            "controller",
            authority,
            &authority.client_cert("edgefleet-controller").unwrap(),
        )
        .unwrap();
        let key = SigningKey::generate().unwrap();
        key.save(&dir.path().join("signing-key.pem")).unwrap();
        std::fs::create_dir_all(dir.path().join("objects")).unwrap();
        Standalone { dir, key }
    }

    /// The objects folder.
    pub fn objects(&self) -> PathBuf {
        self.dir.path().join("objects")
    }

    /// The controller's data folder (its status store: `status/<kind>/<name>.json`).
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("controller-data")
    }

    /// The trust anchor of the signing key (the agents' `--trust-anchor`).
    pub fn trust(&self) -> TrustAnchor {
        [self.key.verifying_key()].into_iter().collect()
    }

    /// Writes an object file atomically (the controller polls the folder).
    pub fn write_object(&self, file: &str, yaml: &str) {
        let path = self.objects().join(file);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// Writes a HandlerModule's file `<name>.wasm` into the objects folder: a minimal handler (it
    /// echoes the message back as a command), told apart from other builds by a custom section
    /// naming `name`. Returns its bytes and the HandlerModule document (not yet written).
    pub fn handler_module(&self, name: &str, module: &str, version: &str) -> (Vec<u8>, String) {
        let wasm = wat::parse_str(format!(
            r#"(module
  (@custom "edgefleet_abi" "\01\00\00\00")
  (@custom "edgefleet_bench_build" "{name}")
  (import "edgefleet_v1" "message" (func $message (param i32 i32) (result i32)))
  (import "edgefleet_v1" "command" (func $command (param i32 i32)))
  (import "env" "memory" (memory 1))
  (func (export "edgefleet_handle") (result i32)
    (call $command (i32.const 0) (call $message (i32.const 0) (i32.const 65536)))
    (i32.const 0)))"#
        ))
        .expect("the bench's handler assembles");
        std::fs::write(self.objects().join(format!("{name}.wasm")), &wasm).unwrap();
        let object = format!(
            "apiVersion: edgefleet.dev/v1alpha1\nkind: HandlerModule\nmetadata:\n  name: {name}\n\
             spec:\n  module: {module}\n  version: {version}\n  file: {name}.wasm\n"
        );
        (wasm, object)
    }

    /// Starts the controller binary on this folder (`run --objects`, the cloud broker at
    /// `mqtts://127.0.0.1:<cloud_port>`, `extra` flags after the others) and waits up to 60 s
    /// for its readiness; returns it and its HTTP port. `EDGEFLEET_BENCH_LOGS=1` shows its log
    /// (warnings).
    pub fn start(&self, cloud_port: u16, extra: &[String]) -> Result<(Controller, u16), String> {
        let d = self.dir.path();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut controller = Controller(
            Command::new(env!("CARGO_BIN_EXE_edgefleet-controller"))
                .arg("run")
                .arg("--objects")
                .arg(self.objects())
                .arg("--data-dir")
                .arg(self.data())
                .args(["--cloud-broker", &format!("mqtts://127.0.0.1:{cloud_port}")])
                .arg("--tls-ca")
                .arg(d.join("controller-ca.crt"))
                .arg("--tls-cert")
                .arg(d.join("controller.crt"))
                .arg("--tls-key")
                .arg(d.join("controller.key"))
                .arg("--signing-key")
                .arg(d.join("signing-key.pem"))
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(if std::env::var_os("EDGEFLEET_BENCH_LOGS").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .spawn()
                .map_err(|e| format!("the controller does not start: {e}"))?,
        );
        let started = Instant::now();
        while edgefleet_testenv::http::get(port, "/readyz").0 != 200 {
            if let Some(exited) = controller.exited() {
                return Err(exited);
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err("the controller is not ready after 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok((controller, port))
    }
}
