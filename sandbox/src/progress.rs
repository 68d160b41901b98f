//! The progress slot: a page of memory shared by the supervisor and one worker process.
//!
//! The worker writes which item of the current batch it is running and since when; the supervisor's
//! watchdog reads it. That is how an interaction that overruns its budget is found (and its worker
//! killed) without instrumenting the module, and how the supervisor knows which interaction was
//! running when a worker died — so that one gets the error and the others are run again elsewhere.
//! It costs the worker two clock reads and two atomic stores per interaction, and no syscall.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};
use rustix::time::{ClockId, clock_gettime};

const SLOT_BYTES: usize = 4096;

/// A mapped progress slot.
pub struct Progress {
    words: NonNull<AtomicU64>,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Progress {}

/// What the worker is doing, as last written by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Running {
    /// Index of the item in the current batch.
    pub index: u32,
    /// How long it has been running.
    pub elapsed: Duration,
}

fn monotonic_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Progress {
    /// A new slot and the file descriptor to hand to the worker.
    pub(crate) fn create() -> io::Result<(Progress, OwnedFd)> {
        let fd = memfd_create("edgefleet-progress", MemfdFlags::CLOEXEC)?;
        ftruncate(&fd, SLOT_BYTES as u64)?;
        let progress = Progress::map(fd.as_fd())?;
        Ok((progress, fd))
    }

    /// Maps the slot handed over by the supervisor.
    pub fn open(fd: impl AsFd) -> io::Result<Progress> {
        Progress::map(fd.as_fd())
    }

    fn map(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Progress> {
        // SAFETY: a fresh shared mapping of a SLOT_BYTES file; unmapped in Drop.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                SLOT_BYTES,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let words =
            NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Progress { words })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: i < 2 and the mapping holds SLOT_BYTES, page-aligned.
        unsafe { &*self.words.as_ptr().add(i) }
    }

    /// Worker: item `index` of the current batch starts now.
    pub fn start(&self, index: u32) {
        self.word(0).store(u64::from(index), Ordering::Relaxed);
        self.word(1).store(monotonic_ns(), Ordering::Release);
    }

    /// Worker: nothing is running.
    pub fn idle(&self) {
        self.word(1).store(0, Ordering::Release);
    }

    /// Supervisor: what the worker is running, if anything.
    pub(crate) fn running(&self) -> Option<Running> {
        let started = self.word(1).load(Ordering::Acquire);
        if started == 0 {
            return None;
        }
        let index = self.word(0).load(Ordering::Relaxed) as u32;
        Some(Running {
            index,
            elapsed: Duration::from_nanos(monotonic_ns().saturating_sub(started)),
        })
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `map`, once.
        unsafe {
            let _ = munmap(self.words.as_ptr().cast(), SLOT_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_mapping_sees_what_the_first_writes() {
        let (worker_side, fd) = Progress::create().unwrap();
        let supervisor_side = Progress::open(&fd).unwrap();
        assert_eq!(supervisor_side.running(), None);
        worker_side.start(7);
        let running = supervisor_side.running().unwrap();
        assert_eq!(running.index, 7);
        assert!(running.elapsed < Duration::from_secs(5));
        worker_side.idle();
        assert_eq!(supervisor_side.running(), None);
    }
}
