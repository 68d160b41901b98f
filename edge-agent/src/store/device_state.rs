//! The `device_state` tree — each device's state as its class's handler last set it, under
//! `<class> 0x00 <device>` — and the interaction commit, which writes a device's new state and the
//! interaction's outbox entries in one transaction.

use edgefleet_protocol::{ClassId, DeviceId};
use sled::Transactional;

use super::outbox::{Appended, OutboxEntry};
use super::{Store, StoreError, transaction_result};

impl Store {
    /// The state of `device` of `class`; `None` for a device never given one.
    pub fn device_state(
        &self,
        class: &ClassId,
        device: &DeviceId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .device_state
            .get(state_key(class, device))?
            .map(|state| state.to_vec()))
    }

    /// How many devices of `class` have state (a scan of the class's keys; for status reports).
    pub fn device_count(&self, class: &ClassId) -> Result<u64, StoreError> {
        let mut count = 0;
        for key in self.device_state.scan_prefix(class_prefix(class)).keys() {
            key?;
            count += 1;
        }
        Ok(count)
    }

    /// Commits one interaction of `device` of `class` in one transaction: its new state (`None`
    /// leaves the state as it is) and its outbox entries, under the outbox bound. A crash leaves all
    /// of it or none of it; it is durable after the next [`Store::flush`] (see the module
    /// documentation of [`crate::store`] for when to ack the device's message).
    pub fn commit_interaction(
        &self,
        class: &ClassId,
        device: &DeviceId,
        new_state: Option<&[u8]>,
        entries: &[OutboxEntry],
    ) -> Result<Appended, StoreError> {
        if new_state.is_none() && entries.is_empty() {
            return Ok(Appended::default());
        }
        let key = state_key(class, device);
        transaction_result((&self.device_state, &self.outbox, &self.meta).transaction(
            |(states, outbox, meta)| {
                if let Some(state) = new_state {
                    states.insert(key.as_slice(), state)?;
                }
                self.append_tx(outbox, meta, entries)
            },
        ))
    }
}

fn class_prefix(class: &ClassId) -> Vec<u8> {
    let mut prefix = class.as_str().as_bytes().to_vec();
    prefix.push(0);
    prefix
}

fn state_key(class: &ClassId, device: &DeviceId) -> Vec<u8> {
    let mut key = class_prefix(class);
    key.extend_from_slice(device.as_str().as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    use edgefleet_protocol::{UpstreamMessage, codec};

    use edgefleet_sandbox::WorkerCommand;

    use super::*;
    use crate::store::outbox::tests::{contents, upstream};
    use crate::store::{OutboxLimits, StoreOptions, WhenFull};

    fn class(id: &str) -> ClassId {
        ClassId::new(id).unwrap()
    }

    fn device(id: &str) -> DeviceId {
        DeviceId::new(id).unwrap()
    }

    #[test]
    fn state_is_kept_per_class_and_device() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (thermo, thermo2) = (class("thermo"), class("thermo2"));
        assert_eq!(store.device_state(&thermo, &device("t-1")).unwrap(), None);
        for (class, device, state) in [
            (&thermo, "t-1", "a"),
            (&thermo, "t-2", "b"),
            (&thermo2, "t-1", "c"),
            (&thermo, "t-1", "d"),
        ] {
            store
                .commit_interaction(
                    class,
                    &DeviceId::new(device).unwrap(),
                    Some(state.as_bytes()),
                    &[],
                )
                .unwrap();
        }
        // No new state: the old one stays.
        store
            .commit_interaction(&thermo, &device("t-2"), None, &[upstream("t-2", b"x")])
            .unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let state = |class: &ClassId, id: &str| store.device_state(class, &device(id)).unwrap();
        assert_eq!(state(&thermo, "t-1").as_deref(), Some(b"d".as_slice()));
        assert_eq!(state(&thermo, "t-2").as_deref(), Some(b"b".as_slice()));
        assert_eq!(state(&thermo2, "t-1").as_deref(), Some(b"c".as_slice()));
        assert_eq!(state(&thermo2, "t-2"), None);
        assert_eq!(store.device_count(&thermo).unwrap(), 2);
        assert_eq!(store.device_count(&thermo2).unwrap(), 1);
        assert_eq!(store.device_count(&class("therm")).unwrap(), 0);
    }

    #[test]
    fn a_commit_writes_state_and_outbox_together_or_neither() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (thermo, t1) = (class("thermo"), device("t-1"));
        let appended = store
            .commit_interaction(
                &thermo,
                &t1,
                Some(b"heating"),
                &[upstream("t-1", b"mode heat"), upstream("t-1", b"temp 17.5")],
            )
            .unwrap();
        assert_eq!(appended.seqs, [Some(0), Some(1)]);
        assert_eq!(
            store.device_state(&thermo, &t1).unwrap().as_deref(),
            Some(b"heating".as_slice())
        );
        assert_eq!(
            contents(&store),
            [(0, "mode heat".into()), (1, "temp 17.5".into())]
        );

        // An entry the store refuses to hold fails the commit: the state is not written either.
        let result = store.commit_interaction(
            &thermo,
            &t1,
            Some(b"idle"),
            &[
                upstream("t-1", b"mode idle"),
                upstream("t-1", &vec![0; 300 * 1024]),
            ],
        );
        assert!(
            matches!(result, Err(StoreError::TooLarge { .. })),
            "{result:?}"
        );
        assert_eq!(
            store.device_state(&thermo, &t1).unwrap().as_deref(),
            Some(b"heating".as_slice())
        );
        assert_eq!(contents(&store).len(), 2);
        assert_eq!(store.outbox_depth().unwrap().entries, 2);
    }

    #[test]
    fn a_full_outbox_does_not_stop_the_state_commit() {
        for when_full in [WhenFull::DropOldest, WhenFull::RefuseNew] {
            let dir = tempfile::tempdir().unwrap();
            let options = StoreOptions {
                outbox: OutboxLimits {
                    max_entries: 1,
                    max_bytes: u64::MAX,
                    when_full,
                },
                ..StoreOptions::default()
            };
            let store = Store::open_with(dir.path(), options).unwrap();
            let (thermo, t1) = (class("thermo"), device("t-1"));
            store
                .commit_interaction(&thermo, &t1, Some(b"1"), &[upstream("t-1", b"first")])
                .unwrap();
            let appended = store
                .commit_interaction(&thermo, &t1, Some(b"2"), &[upstream("t-1", b"second")])
                .unwrap();
            let (expected_counts, expected_outbox) = match when_full {
                WhenFull::DropOldest => ((1, 0), (1, "second")),
                WhenFull::RefuseNew => ((0, 1), (0, "first")),
            };
            assert_eq!((appended.dropped, appended.refused), expected_counts);
            assert_eq!(
                contents(&store),
                [(expected_outbox.0, expected_outbox.1.to_owned())]
            );
            assert_eq!(
                store.device_state(&thermo, &t1).unwrap().as_deref(),
                Some(b"2".as_slice()),
                "{when_full:?}"
            );
        }
    }

    /// Where the writer of [`commits_survive_sigkill_whole`] keeps its store.
    const CRASH_DIR_ENV: &str = "EDGEFLEET_STORE_CRASH_TEST_DIR";

    /// Commits interactions of one device forever — state `i` and an upstream message `i` for
    /// commit `i` — flushing every 8th and reporting it on stdout, while another thread flushes
    /// without pause so that flushes land in the middle of commits.
    #[test]
    #[ignore = "the writer half of commits_survive_sigkill_whole, run by it in a child process"]
    fn crash_writer() {
        let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
            return;
        };
        let store = Store::open(dir).unwrap();
        let flusher = store.clone();
        std::thread::spawn(move || {
            loop {
                flusher.flush().unwrap();
            }
        });
        let (thermo, t1) = (class("thermo"), device("t-1"));
        for i in 1u64.. {
            let bytes = i.to_be_bytes();
            store
                .commit_interaction(&thermo, &t1, Some(&bytes), &[upstream("t-1", &bytes)])
                .unwrap();
            if i % 8 == 0 {
                store.flush().unwrap();
                println!("flushed {i}");
            }
        }
    }

    #[test]
    fn commits_survive_sigkill_whole() {
        // Kill at different points of the writer's commit and flush cycle.
        for kill_after_ms in [0, 3, 7, 20] {
            let dir = tempfile::tempdir().unwrap();
            let last_flushed =
                run_writer_and_kill(dir.path(), Duration::from_millis(kill_after_ms));
            check_commits_are_whole(dir.path(), last_flushed);
        }
    }

    /// Runs [`crash_writer`] on `dir` until it reported 400 flushed commits, SIGKILLs it `delay` later
    /// and returns the last commit it reported flushed.
    fn run_writer_and_kill(dir: &std::path::Path, delay: Duration) -> u64 {
        // argv[0] is this test binary even when it runs through the sysroot's loader.
        let program = std::env::args_os().next().unwrap();
        // Through the same loader as sandbox workers (a private glibc's ld.so, when one is set).
        let worker = WorkerCommand::new(program);
        let mut writer = match worker.loader.split_first() {
            Some((loader, args)) => {
                let mut command = std::process::Command::new(loader);
                command.args(args).arg(&worker.program);
                command
            }
            None => std::process::Command::new(&worker.program),
        };
        let mut writer = writer
            .args([
                "store::device_state::tests::crash_writer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = writer.stdout.take().unwrap();
        let (flushes, flushed) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("flushed ") {
                    let _ = flushes.send(n.parse::<u64>().unwrap());
                }
            }
        });
        let mut last_flushed = 0;
        while last_flushed < 400 {
            last_flushed = flushed
                .recv_timeout(Duration::from_secs(60))
                .expect("the writer stopped reporting flushes");
        }
        std::thread::sleep(delay);
        writer.kill().unwrap();
        writer.wait().unwrap();
        flushed.iter().last().unwrap_or(last_flushed)
    }

    /// Checks that the store `crash_writer` left in `dir` holds every commit up to `last_flushed` and
    /// that state and outbox agree: commit `i` left both or neither.
    fn check_commits_are_whole(dir: &std::path::Path, last_flushed: u64) {
        let store = Store::open(dir).unwrap();
        let state = store
            .device_state(&class("thermo"), &device("t-1"))
            .unwrap()
            .unwrap();
        let commits = u64::from_be_bytes(state.try_into().unwrap());
        assert!(
            commits >= last_flushed,
            "flushed commit {last_flushed} was lost: state is {commits}"
        );
        let outbox = store.outbox_peek(0, usize::MAX).unwrap().messages;
        assert_eq!(
            outbox.len() as u64,
            commits,
            "the outbox must hold exactly one entry per surviving commit"
        );
        let mut bytes = 0;
        for (i, (seq, message)) in outbox.iter().enumerate() {
            let upstream: UpstreamMessage = codec::decode(&message.payload, usize::MAX).unwrap();
            assert_eq!((*seq, upstream.seq), (i as u64, i as u64));
            assert_eq!(upstream.payload, (i as u64 + 1).to_be_bytes());
            bytes += codec::encode(message).len() as u64;
        }
        let depth = store.outbox_depth().unwrap();
        assert_eq!((depth.entries, depth.bytes), (commits, bytes));
        assert_eq!(
            store
                .outbox_append(&[upstream("t-1", b"next")])
                .unwrap()
                .seqs,
            [Some(commits)]
        );
    }
}
