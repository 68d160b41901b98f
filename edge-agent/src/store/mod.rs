//! The agent's durable store: handler modules, class assignments, per-device state and the upstream
//! outbox, in one sled database per agent, so the agent keeps serving devices while the cloud link is
//! down and loses nothing it acknowledged across a crash or restart.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`Store`]: opening, options, flushing; this layout and the durability contract |
//! | `error.rs` | [`StoreError`] |
//! | `meta.rs` | the `meta` tree: format version, epoch, outbox counters |
//! | `modules.rs` | the `modules` and `manifests` trees |
//! | `classes.rs` | the `classes` tree: [`ClassRecord`], [`ClassVersion`], swap and rollback |
//! | `device_state.rs` | the `device_state` tree and the interaction commit |
//! | `outbox.rs` | the `outbox` tree: [`OutboxEntry`], [`OutboxLimits`], append, peek, remove |
//!
//! # On-disk layout
//!
//! One sled 0.34 database in the directory given to [`Store::open`] (sled's own files: `conf`, `db`,
//! `blobs/`, `snap.*`), locked by the process that opened it. Integers in keys and in `meta` are
//! big-endian, so sled's byte order is numeric order. CBOR is `edgefleet_protocol::codec`.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `modules` | SHA-256 of the blob (32 bytes) | the module blob as fetched; re-hashed on every read |
//! | `manifests` | SHA-256 of the module blob (32 bytes) | the signed manifest bytes as received |
//! | `classes` | class id (UTF-8) | CBOR [`ClassRecord`]: active and previous [`ClassVersion`] (each with the `Signed<Assignment>` bytes as received), last applied generation |
//! | `device_state` | `<class> 0x00 <device>` (UTF-8; ids never contain NUL) | the state bytes the handler last set |
//! | `outbox` | seq (u64, 8 bytes) | CBOR [`OutboxMessage`]: the MQTT topic and the payload to publish |
//! | `meta` | `format` | u64: the store's on-disk format ([`FORMAT`]) |
//! | `meta` | `epoch` | u64: random, made when the database is created; [`UpstreamMessage::epoch`](edgefleet_protocol::UpstreamMessage::epoch) |
//! | `meta` | `outbox` | 4 × u64: next seq, head (no entry below it), entries, bytes (sum of value lengths) |
//!
//! Upstream messages and agent events share one sequence: an outbox entry's key is its seq, and an
//! upstream message carries that seq and the epoch in its payload. Seqs are never reused within an
//! epoch (the next seq survives restarts, and entries being removed); an upstream consumer sees gaps
//! where events, dropped or refused entries were.
//!
//! # Durability contract
//!
//! Every write method is atomic: a crash leaves all of it or none of it. [`Store::commit_interaction`]
//! writes a device's new state and its outbox entries (and the outbox counters) in one sled
//! transaction across the trees.
//!
//! A write is **durable only once a flush that started after it has returned** ([`Store::flush`],
//! [`Store::flush_async`]: sled writes its log and fsyncs). sled also flushes in the background every
//! [`StoreOptions::flush_every_ms`] (500 ms by default), which bounds what an idle caller can lose but
//! gives no guarantee to rely on. Flushing per commit costs an fsync per device message, so the store
//! does not: the caller batches. A crash (SIGKILL, power loss) can lose any commit not covered by a
//! completed flush, each one whole. Hence the agent:
//!
//! 1. commits the interactions of a batch (state + outbox, one [`Store::commit_interaction`] each);
//! 2. calls [`Store::flush`] once;
//! 3. only then acks the device messages (MQTT QoS 1) and publishes the handlers' commands.
//!
//! A crash before step 3 leaves the messages unacked: the device broker redelivers them and they are
//! handled again against the state that was durable — nothing acked is lost. A crash after a commit
//! became durable (by a background flush) but before its ack makes the handler see that message again
//! against its new state; its upstream messages then go out twice under different seqs (at least once,
//! as MQTT QoS 1 itself).
//!
//! Removing an outbox entry on PUBACK needs no flush: a crash can only bring an entry back, which is
//! then published again and de-duplicated by consumers on (node, epoch, seq). After applying an
//! assignment (`put_module`, `swap_class`) the agent flushes before reporting it applied; on start it
//! treats an active class whose module is missing or fails its digest check as not yet fetched.
//!
//! The epoch is flushed when the database is created, before anything can carry it.
//!
//! # Concurrency
//!
//! sled 0.34 runs every transaction under one process-wide lock, so commits, swaps and outbox
//! appends and removals are serialized (each takes microseconds; the fsync of a flush is not under
//! that lock), and a read of one key never sees half a transaction.

mod classes;
mod device_state;
mod error;
mod meta;
mod modules;
mod outbox;

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

pub use classes::{ClassRecord, ClassVersion};
pub use error::StoreError;
pub use meta::FORMAT;
pub use outbox::{
    Appended, OutboxDepth, OutboxEntry, OutboxLimits, OutboxMessage, Peeked, WhenFull,
};

/// Tree names, as sled stores them and as [`StoreError::Corrupt`] names them.
mod tree {
    pub const MODULES: &str = "modules";
    pub const MANIFESTS: &str = "manifests";
    pub const CLASSES: &str = "classes";
    pub const DEVICE_STATE: &str = "device_state";
    pub const OUTBOX: &str = "outbox";
    pub const META: &str = "meta";
}

/// How often opening tries the database's lock again while [`StoreOptions::lock_wait`] lasts.
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// How a [`Store`] is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The outbox bound, applied on every append.
    pub outbox: OutboxLimits,
    /// Memory sled may use for its page cache, in bytes (sled's default, 1 GiB, is too much for an
    /// edge node). Default 64 MiB.
    pub cache_bytes: u64,
    /// Period of sled's background flush in ms; `None` turns it off, so only explicit flushes make
    /// writes durable. Default 500.
    pub flush_every_ms: Option<u64>,
    /// How long opening waits for the database's lock before failing with [`StoreError::Locked`].
    /// sled lets go of it only when its background writes finish, a few ms after the last handle
    /// of a store is dropped, and a previous agent process may still be exiting. Default 1 s.
    pub lock_wait: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            outbox: OutboxLimits::default(),
            cache_bytes: 64 * 1024 * 1024,
            flush_every_ms: Some(500),
            lock_wait: Duration::from_secs(1),
        }
    }
}

/// The agent's durable store (see the module documentation for layout and durability). Cloning is
/// cheap and clones share the database; every method can be called from any thread.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    modules: sled::Tree,
    manifests: sled::Tree,
    classes: sled::Tree,
    device_state: sled::Tree,
    outbox: sled::Tree,
    meta: sled::Tree,
    epoch: u64,
    limits: OutboxLimits,
}

impl Store {
    /// Opens the store at `path` (a directory, created if missing) with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open_with(path, StoreOptions::default())
    }

    /// Opens the store at `path` (a directory, created if missing). Fails with
    /// [`StoreError::Locked`] if another store has it open for longer than
    /// [`StoreOptions::lock_wait`].
    pub fn open_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store, StoreError> {
        let path = path.as_ref();
        let open_error = |source: sled::Error| match &source {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                StoreError::Locked {
                    path: path.to_path_buf(),
                }
            }
            _ => StoreError::Open {
                path: path.to_path_buf(),
                source,
            },
        };
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(options.flush_every_ms);
        let deadline = Instant::now() + options.lock_wait;
        let db = loop {
            match config.open().map_err(open_error) {
                Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(LOCK_RETRY_INTERVAL);
                }
                result => break result?,
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(open_error);
        let meta = tree(tree::META)?;
        let epoch = meta::init(&db, &meta, path)?;
        Ok(Store {
            modules: tree(tree::MODULES)?,
            manifests: tree(tree::MANIFESTS)?,
            classes: tree(tree::CLASSES)?,
            device_state: tree(tree::DEVICE_STATE)?,
            outbox: tree(tree::OUTBOX)?,
            meta,
            db,
            epoch,
            limits: options.outbox,
        })
    }

    /// The epoch: random, made when the database was created, the same ever after. Upstream messages
    /// carry it so that consumers tell a fresh outbox's seqs from a replay.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The outbox bound this store applies.
    pub fn outbox_limits(&self) -> OutboxLimits {
        self.limits
    }

    /// Makes every write that returned before this call durable (writes sled's log and fsyncs).
    /// Blocks for the fsync: milliseconds on flash storage.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// [`Store::flush`] without blocking the calling thread, for async callers.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("epoch", &self.epoch)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Turns a finished sled transaction into the store's result.
fn transaction_result<T>(
    result: sled::transaction::TransactionResult<T, StoreError>,
) -> Result<T, StoreError> {
    result.map_err(|e| match e {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(e) => StoreError::Storage(e),
    })
}

/// Aborts a sled transaction with a store error.
fn abort(e: StoreError) -> sled::transaction::ConflictableTransactionError<StoreError> {
    sled::transaction::ConflictableTransactionError::Abort(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let impatient = StoreOptions {
            lock_wait: Duration::from_millis(100),
            ..StoreOptions::default()
        };
        let started = Instant::now();
        match Store::open_with(dir.path(), impatient) {
            Err(StoreError::Locked { path }) => assert_eq!(path, dir.path()),
            other => panic!("expected Locked, got {other:?}"),
        }
        assert!(started.elapsed() >= impatient.lock_wait);
        let message = StoreError::Locked {
            path: dir.path().into(),
        }
        .to_string();
        assert!(message.contains("another agent"), "{message}");
        drop(store);
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn opening_waits_for_a_lock_that_is_let_go_of() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(store);
        });
        let started = Instant::now();
        Store::open(dir.path()).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
        holder.join().unwrap();
    }

    #[test]
    fn the_epoch_is_stable_across_reopen_and_differs_between_databases() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = Store::open(dir.path()).unwrap().epoch();
        assert_eq!(Store::open(dir.path()).unwrap().epoch(), epoch);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(Store::open(other.path()).unwrap().epoch(), epoch);
    }

    #[test]
    fn flush_async_completes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        block_on(store.flush_async()).unwrap();
    }

    /// Polls a future to completion on this thread.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        use std::sync::Arc;
        use std::task::{Context, Poll, Wake, Waker};

        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut context = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
                return output;
            }
            std::thread::park();
        }
    }
}
