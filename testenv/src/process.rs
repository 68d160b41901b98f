//! Child processes that die with the test process, and their logs.
//!
//! Every child gets `PR_SET_PDEATHSIG(SIGKILL)`, so that a test process killed outright (SIGKILL, a
//! CI timeout) takes its etcd and kube-apiserver with it. That signal fires when the *thread* that
//! spawned the child exits, not the process: a plane started on a test thread and used by later
//! tests, or started from a runtime's blocking pool, would be killed under them. So all children
//! are spawned by one spawner thread that lives as long as the process.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender};

use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};

use crate::TestenvError;

type SpawnJob = (Command, Sender<io::Result<Child>>);

static SPAWNER: OnceLock<Option<Sender<SpawnJob>>> = OnceLock::new();

fn spawn_on_spawner_thread(command: Command) -> io::Result<Child> {
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .ok()
            .map(|_| tx)
    });
    let spawner = spawner
        .as_ref()
        .ok_or_else(|| io::Error::other("the testenv spawner thread could not be started"))?;
    let (reply, answer) = mpsc::channel();
    spawner
        .send((command, reply))
        .map_err(|_| io::Error::other("the testenv spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the testenv spawner thread is gone"))?
}

/// A running child: killed (SIGKILL) and reaped on drop.
pub(crate) struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program args…` with stdout and stderr appended to `log`.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self, TestenvError> {
        let io_error = |what: String| move |source| TestenvError::Io { what, source };
        let out = File::create(&log).map_err(io_error(format!("create {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_error(format!("duplicate {}", log.display())))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let parent = getpid();
        // SAFETY: only async-signal-safe system calls between fork and exec, no allocation.
        unsafe {
            command.pre_exec(move || {
                set_parent_process_death_signal(Some(Signal::KILL))?;
                // The parent may have died before the line above: then nothing would kill us.
                if getppid() != Some(parent) {
                    return Err(rustix::io::Errno::SRCH.into());
                }
                Ok(())
            });
        }
        let child = spawn_on_spawner_thread(command).map_err(|source| TestenvError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
        Ok(Process { name, child, log })
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// `Some(status)` once the process has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the process's log (stdout and stderr).
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    pub(crate) fn stop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a file, read from its last 64 KiB.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 64 * 1024;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn children_outlive_the_thread_that_asked_for_them_and_die_on_drop()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("sleep.log");
        let sh = Path::new("/bin/sh");
        let args = vec!["-c".to_owned(), "echo started; exec sleep 30".to_owned()];
        let mut process = std::thread::spawn(move || Process::spawn("sleep", sh, &args, log))
            .join()
            .map_err(|_| "spawning thread panicked")??;
        // The asking thread has ended; PR_SET_PDEATHSIG would have killed the child by now if
        // that thread had spawned it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while process.log_tail(5) != "started" {
            assert!(
                Instant::now() < deadline,
                "no output: {}",
                process.log_tail(5)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            process.exited(),
            None,
            "the child died with the asking thread"
        );
        let pid = process.child.id();
        drop(process);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the child outlived its Process"
        );
        Ok(())
    }

    #[test]
    fn log_tail_keeps_the_last_lines() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\nd\n")?;
        assert_eq!(log_tail(&path, 2), "c\nd");
        assert_eq!(log_tail(&path, 10), "a\nb\nc\nd");
        assert!(log_tail(&dir.path().join("missing"), 2).starts_with("(could not read"));
        Ok(())
    }
}
