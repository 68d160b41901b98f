//! What the controller benches read about processes: the wall clock, CPU time and memory from
//! /proc, the children of the bench by name, and the controller process they start. One copy for
//! every bench (`mod process;`); not a bench target itself (Cargo only discovers `benches/*.rs`
//! and `benches/*/main.rs`).

use std::process::Child;
use std::time::{SystemTime, UNIX_EPOCH};

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
    #[allow(dead_code)] // Used by the rollout bench only; each bench compiles this module anew.
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
