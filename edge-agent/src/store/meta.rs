//! The `meta` tree: the on-disk format version, the epoch, and the outbox counters (next seq, head,
//! entries, bytes), all big-endian u64s. Created in one transaction and flushed when the database is
//! new; checked on every open.

use std::path::Path;

use sled::transaction::{ConflictableTransactionResult, TransactionalTree};

use super::tree::META;
use super::{StoreError, abort, transaction_result};

/// The on-disk format this agent reads and writes (the `format` key of `meta`). A change to any key
/// or value layout of the store is a new format.
pub const FORMAT: u64 = 1;

const FORMAT_KEY: &str = "format";
const EPOCH_KEY: &str = "epoch";
const OUTBOX_KEY: &str = "outbox";

/// What to do about a damaged `meta` entry.
const META_REMEDY: &str =
    "the store's bookkeeping is damaged; move the store directory aside so the agent starts afresh";

/// Prepares `meta` on open: creates the format, epoch and counters of a new database (and flushes
/// them), or checks an existing one's. Returns the epoch.
pub(super) fn init(db: &sled::Db, meta: &sled::Tree, path: &Path) -> Result<u64, StoreError> {
    if let Some(format) = meta.get(FORMAT_KEY)? {
        let found = decode_u64(FORMAT_KEY, &format)?;
        if found != FORMAT {
            return Err(StoreError::Format {
                path: path.to_path_buf(),
                found,
                expected: FORMAT,
            });
        }
        OutboxCounters::load(meta)?;
        let epoch = meta
            .get(EPOCH_KEY)?
            .ok_or_else(|| corrupt(EPOCH_KEY, "missing"))?;
        return decode_u64(EPOCH_KEY, &epoch);
    }
    let epoch = getrandom::u64().map_err(|source| StoreError::Entropy {
        path: path.to_path_buf(),
        source,
    })?;
    transaction_result(meta.transaction(|tx| {
        tx.insert(EPOCH_KEY, &epoch.to_be_bytes())?;
        OutboxCounters::default().save_tx(tx)?;
        tx.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
        Ok(())
    }))?;
    db.flush()?;
    Ok(epoch)
}

/// The outbox's bookkeeping, kept in one `meta` value so that it is read and written as a whole.
///
/// Invariants: no outbox entry has a seq below `head` or at or above `next_seq`; `entries` and
/// `bytes` count the entries and the sum of their value lengths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct OutboxCounters {
    /// The seq the next appended entry gets.
    pub next_seq: u64,
    /// No entry has a lower seq; entries from here up may have been removed out of order.
    pub head: u64,
    /// Entries in the outbox.
    pub entries: u64,
    /// Sum of the entries' value lengths.
    pub bytes: u64,
}

impl OutboxCounters {
    /// The counters as stored, outside a transaction.
    pub fn load(meta: &sled::Tree) -> Result<OutboxCounters, StoreError> {
        let bytes = meta
            .get(OUTBOX_KEY)?
            .ok_or_else(|| corrupt(OUTBOX_KEY, "missing"))?;
        OutboxCounters::decode(&bytes)
    }

    /// The counters as stored, inside a transaction.
    pub fn load_tx(meta: &TransactionalTree) -> ConflictableTransactionResult<Self, StoreError> {
        let bytes = meta
            .get(OUTBOX_KEY)?
            .ok_or_else(|| abort(corrupt(OUTBOX_KEY, "missing")))?;
        OutboxCounters::decode(&bytes).map_err(abort)
    }

    /// Stores the counters inside a transaction.
    pub fn save_tx(
        self,
        meta: &TransactionalTree,
    ) -> ConflictableTransactionResult<(), StoreError> {
        let mut bytes = [0u8; 32];
        for (slot, value) in
            bytes
                .chunks_exact_mut(8)
                .zip([self.next_seq, self.head, self.entries, self.bytes])
        {
            slot.copy_from_slice(&value.to_be_bytes());
        }
        meta.insert(OUTBOX_KEY, &bytes)?;
        Ok(())
    }

    fn decode(value: &[u8]) -> Result<OutboxCounters, StoreError> {
        let all = <[u8; 32]>::try_from(value)
            .map_err(|_| corrupt(OUTBOX_KEY, format!("{} bytes, not 32", value.len())))?;
        let word = |i: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&all[i * 8..i * 8 + 8]);
            u64::from_be_bytes(word)
        };
        let (next_seq, head, entries, bytes) = (word(0), word(1), word(2), word(3));
        if head > next_seq || entries > next_seq - head {
            return Err(corrupt(
                OUTBOX_KEY,
                format!("head {head}, next seq {next_seq} and {entries} entries contradict"),
            ));
        }
        Ok(OutboxCounters {
            next_seq,
            head,
            entries,
            bytes,
        })
    }
}

fn decode_u64(key: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(key, format!("{} bytes, not 8", bytes.len())))
}

/// Damaged outbox counters.
pub(super) fn corrupt_counters(what: impl std::fmt::Display) -> StoreError {
    corrupt(OUTBOX_KEY, what)
}

/// A damaged `meta` entry.
fn corrupt(key: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree: META,
        key: key.to_owned(),
        detail: format!("{what}: {META_REMEDY}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn counters_round_trip_and_contradictions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let counters = OutboxCounters {
            next_seq: 10,
            head: 4,
            entries: 6,
            bytes: 600,
        };
        transaction_result(store.meta.transaction(|tx| counters.save_tx(tx))).unwrap();
        assert_eq!(OutboxCounters::load(&store.meta).unwrap(), counters);

        let too_many = OutboxCounters {
            entries: 7,
            ..counters
        };
        transaction_result(store.meta.transaction(|tx| too_many.save_tx(tx))).unwrap();
        assert!(matches!(
            OutboxCounters::load(&store.meta),
            Err(StoreError::Corrupt { tree: "meta", key, .. }) if key == "outbox"
        ));
    }

    #[test]
    fn a_database_of_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .meta
            .insert(FORMAT_KEY, &(FORMAT + 1).to_be_bytes())
            .unwrap();
        drop(store);
        match Store::open(dir.path()) {
            Err(StoreError::Format {
                found, expected, ..
            }) => assert_eq!((found, expected), (FORMAT + 1, FORMAT)),
            other => panic!("expected Format, got {other:?}"),
        }
    }

    #[test]
    fn a_damaged_epoch_is_reported_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.meta.insert(EPOCH_KEY, b"short".as_slice()).unwrap();
        drop(store);
        let error = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt { tree: "meta", key, .. } if key == "epoch"),
            "{error:?}"
        );
        assert!(error.to_string().contains("move the store directory aside"));
    }
}
