//! The `outbox` tree: what the agent has to publish on the cloud broker, in order, until the broker
//! acknowledges it.
//!
//! An entry is an upstream message or an agent event ([`OutboxEntry`]). The store turns it into the
//! [`OutboxMessage`] it keeps: the MQTT topic and the CBOR payload, an upstream message carrying the
//! store's epoch and the entry's seq, so the publisher needs nothing else. Keys are seqs, so sled's
//! order is the outbox's order. The publisher reads with [`Store::outbox_peek`] and removes an entry
//! on its PUBACK with [`Store::outbox_remove`], in any order.
//!
//! # The bound
//!
//! [`OutboxLimits`] caps entries and bytes (the sum of stored value lengths) and is applied inside the
//! appending transaction, entry by entry. When an entry does not fit:
//!
//! - [`WhenFull::DropOldest`] (the default) removes the oldest entries until it fits. While the cloud
//!   is away, fresh telemetry is worth more than old, and the device keeps being served.
//! - [`WhenFull::RefuseNew`] does not store the entry and keeps the backlog as it is.
//!
//! Either way the rest of the append — the device state of an interaction, the other entries — is
//! committed: failing the interaction instead would stop serving devices while the cloud is away,
//! which is what the outbox exists to avoid. An entry larger than `max_bytes` on its own is refused
//! under both policies (dropping everything would not make room for it). [`Appended`] counts what was
//! dropped and refused, for a metric and an [`EventKind::OutboxDropped`] or
//! [`EventKind::OutboxFull`] event.
//!
//! Finding the oldest entry inside a transaction (sled transactions cannot iterate) uses the `head`
//! counter of `meta`: no entry lies below it. Dropping probes upward from `head`, skipping seqs the
//! publisher already removed out of order; `head` only moves up, so each seq is probed once.
//!
//! [`EventKind::OutboxDropped`]: edgefleet_protocol::EventKind::OutboxDropped
//! [`EventKind::OutboxFull`]: edgefleet_protocol::EventKind::OutboxFull

use edgefleet_protocol::wire::MAX_UPLINK_PACKET_BYTES;
use edgefleet_protocol::{AgentEvent, TopicPayload, UpstreamMessage, codec};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionResult, TransactionalTree};

use super::meta::{self, OutboxCounters};
use super::tree::OUTBOX;
use super::{Store, StoreError, abort, transaction_result};

/// Largest stored outbox value: what fits one uplink packet (no larger message could be published).
const MAX_OUTBOX_RECORD_BYTES: usize = MAX_UPLINK_PACKET_BYTES;

/// Something to publish on the cloud broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxEntry {
    /// A handler's upstream message; its `epoch` and `seq` are set by the store when appended.
    Upstream(UpstreamMessage),
    /// An agent event.
    Event(AgentEvent),
}

impl OutboxEntry {
    /// What to publish for this entry at `seq` of outbox `epoch`.
    fn message(&self, epoch: u64, seq: u64) -> OutboxMessage {
        match self {
            OutboxEntry::Upstream(message) => {
                let message = UpstreamMessage {
                    epoch,
                    seq,
                    ..message.clone()
                };
                OutboxMessage {
                    topic: message.topic().to_string(),
                    payload: codec::encode(&message),
                }
            }
            OutboxEntry::Event(event) => OutboxMessage {
                topic: event.topic().to_string(),
                payload: codec::encode(event),
            },
        }
    }
}

/// A stored outbox entry: publish `payload` on `topic` (QoS 1, not retained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// The MQTT topic.
    pub topic: String,
    /// The CBOR payload.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// What to do with an entry that does not fit the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Drop the oldest entries until it fits.
    DropOldest,
    /// Refuse the entry.
    RefuseNew,
}

/// The outbox bound (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most entries. Default 500,000.
    pub max_entries: u64,
    /// Most bytes (sum of stored value lengths). Default 256 MiB.
    pub max_bytes: u64,
    /// What happens to an entry that does not fit. Default [`WhenFull::DropOldest`].
    pub when_full: WhenFull,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_entries: 500_000,
            max_bytes: 256 * 1024 * 1024,
            when_full: WhenFull::DropOldest,
        }
    }
}

/// The result of appending entries to the outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// Per entry appended, in order: its seq, or `None` if it was refused. An entry dropped by a later
    /// entry of the same append still has its seq here (and counts in `dropped`).
    pub seqs: Vec<Option<u64>>,
    /// Older entries dropped to make room ([`WhenFull::DropOldest`]).
    pub dropped: u64,
    /// Entries not stored: too large for the bound, or the outbox full under
    /// [`WhenFull::RefuseNew`].
    pub refused: u64,
}

/// What [`Store::outbox_peek`] read.
#[derive(Debug, Default)]
pub struct Peeked {
    /// Entries in seq order.
    pub messages: Vec<(u64, OutboxMessage)>,
    /// Seqs of entries that do not decode, with why.
    pub corrupt: Vec<(u64, String)>,
}

/// How full the outbox is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    /// Entries waiting.
    pub entries: u64,
    /// Sum of their stored lengths, in bytes.
    pub bytes: u64,
}

impl Store {
    /// Appends entries to the outbox in one transaction, applying the bound.
    pub fn outbox_append(&self, entries: &[OutboxEntry]) -> Result<Appended, StoreError> {
        transaction_result(
            (&self.outbox, &self.meta)
                .transaction(|(outbox, meta)| self.append_tx(outbox, meta, entries)),
        )
    }

    /// Up to `limit` entries from seq `from_seq` on, in seq order. An entry that does not decode
    /// (damaged on disk) is returned apart, in [`Peeked::corrupt`], so that one bad record never
    /// blocks the ones after it: the publisher removes and counts it. A key that is not a seq fails
    /// the call (the tree was not written by an agent).
    pub fn outbox_peek(&self, from_seq: u64, limit: usize) -> Result<Peeked, StoreError> {
        let mut peeked = Peeked::default();
        for entry in self.outbox.range(from_seq.to_be_bytes()..).take(limit) {
            let (key, value) = entry?;
            let seq = <[u8; 8]>::try_from(key.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    tree: OUTBOX,
                    key: hex::encode(&key),
                    detail: format!(
                        "a {}-byte key where an 8-byte seq belongs: not written by an agent; move the store directory aside to start afresh",
                        key.len()
                    ),
                })?;
            match codec::decode(&value, MAX_OUTBOX_RECORD_BYTES) {
                Ok(message) => peeked.messages.push((seq, message)),
                Err(e) => peeked.corrupt.push((seq, e.to_string())),
            }
        }
        Ok(peeked)
    }

    /// Removes the entry `seq` (on the broker's PUBACK); returns whether it was there.
    pub fn outbox_remove(&self, seq: u64) -> Result<bool, StoreError> {
        transaction_result((&self.outbox, &self.meta).transaction(|(outbox, meta)| {
            let Some(value) = outbox.remove(&seq.to_be_bytes())? else {
                return Ok(false);
            };
            let mut counters = OutboxCounters::load_tx(meta)?;
            counters.forget(seq, value.len())?;
            counters.save_tx(meta)?;
            Ok(true)
        }))
    }

    /// How many entries and bytes the outbox holds.
    pub fn outbox_depth(&self) -> Result<OutboxDepth, StoreError> {
        let counters = OutboxCounters::load(&self.meta)?;
        Ok(OutboxDepth {
            entries: counters.entries,
            bytes: counters.bytes,
        })
    }

    /// Appends `entries` inside a transaction over the `outbox` and `meta` trees, applying the bound.
    pub(super) fn append_tx(
        &self,
        outbox: &TransactionalTree,
        meta: &TransactionalTree,
        entries: &[OutboxEntry],
    ) -> ConflictableTransactionResult<Appended, StoreError> {
        let limits = self.limits;
        let mut counters = OutboxCounters::load_tx(meta)?;
        let mut appended = Appended::default();
        for entry in entries {
            let seq = counters.next_seq;
            let message = entry.message(self.epoch, seq);
            let value = codec::encode(&message);
            if value.len() > MAX_OUTBOX_RECORD_BYTES {
                return Err(abort(StoreError::TooLarge {
                    what: format!("the outbox entry for {}", message.topic),
                    len: value.len(),
                    max: MAX_OUTBOX_RECORD_BYTES,
                }));
            }
            let len = value.len() as u64;
            let fits = |c: &OutboxCounters| {
                c.entries < limits.max_entries && c.bytes + len <= limits.max_bytes
            };
            let refuse = limits.max_entries == 0
                || len > limits.max_bytes
                || (!fits(&counters) && limits.when_full == WhenFull::RefuseNew);
            if refuse {
                appended.refused += 1;
                appended.seqs.push(None);
                continue;
            }
            while !fits(&counters) {
                counters.drop_oldest(outbox)?;
                appended.dropped += 1;
            }
            outbox.insert(&seq.to_be_bytes(), value)?;
            counters.next_seq += 1;
            counters.entries += 1;
            counters.bytes += len;
            appended.seqs.push(Some(seq));
        }
        counters.save_tx(meta)?;
        Ok(appended)
    }
}

impl OutboxCounters {
    /// Accounts for entry `seq` of `len` bytes having been removed.
    fn forget(&mut self, seq: u64, len: usize) -> ConflictableTransactionResult<(), StoreError> {
        self.entries = self.entries.checked_sub(1).ok_or_else(|| {
            abort(meta::corrupt_counters(
                "the entry count is 0 but an entry was stored",
            ))
        })?;
        self.bytes = self.bytes.saturating_sub(len as u64);
        if seq == self.head {
            self.head += 1;
        }
        Ok(())
    }

    /// Removes the oldest entry, inside a transaction.
    fn drop_oldest(
        &mut self,
        outbox: &TransactionalTree,
    ) -> ConflictableTransactionResult<(), StoreError> {
        while self.entries > 0 && self.head < self.next_seq {
            let (seq, key) = (self.head, self.head.to_be_bytes());
            if let Some(value) = outbox.get(key)? {
                outbox.remove(&key)?;
                return self.forget(seq, value.len());
            }
            self.head += 1;
        }
        Err(abort(meta::corrupt_counters(format!(
            "{} entries counted but none found below seq {}",
            self.entries, self.next_seq
        ))))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use edgefleet_protocol::{ClassId, ClassTopic, DeviceId, EventKind, NodeId, Sha256Digest};

    use super::*;
    use crate::store::StoreOptions;

    /// An upstream message of device `device` of class `thermo` with `payload`.
    pub(crate) fn upstream(device: &str, payload: &[u8]) -> OutboxEntry {
        OutboxEntry::Upstream(UpstreamMessage {
            node: NodeId::new("edge-1").unwrap(),
            class: ClassId::new("thermo").unwrap(),
            device: DeviceId::new(device).unwrap(),
            topic: ClassTopic::new("telemetry").unwrap(),
            module: Sha256Digest::of(b"thermo 1.0.0"),
            payload: payload.to_vec(),
            at_ms: 1_700_000_000_000,
            epoch: 0,
            seq: 0,
        })
    }

    fn event(detail: &str) -> OutboxEntry {
        OutboxEntry::Event(AgentEvent::new(
            1_700_000_000_000,
            NodeId::new("edge-1").unwrap(),
            EventKind::RolledBack,
            detail,
        ))
    }

    /// The payloads of upstream messages and the details of events in the outbox, in order.
    pub(crate) fn contents(store: &Store) -> Vec<(u64, String)> {
        store
            .outbox_peek(0, usize::MAX)
            .unwrap()
            .messages
            .into_iter()
            .map(|(seq, message)| {
                let text = match message.topic.ends_with("/event") {
                    true => {
                        codec::decode::<AgentEvent>(&message.payload, usize::MAX)
                            .unwrap()
                            .detail
                    }
                    false => {
                        let upstream: UpstreamMessage =
                            codec::decode(&message.payload, usize::MAX).unwrap();
                        assert_eq!((upstream.epoch, upstream.seq), (store.epoch(), seq));
                        String::from_utf8(upstream.payload).unwrap()
                    }
                };
                (seq, text)
            })
            .collect()
    }

    fn open_with_limits(path: &std::path::Path, outbox: OutboxLimits) -> Store {
        Store::open_with(
            path,
            StoreOptions {
                outbox,
                ..StoreOptions::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn entries_carry_their_topic_epoch_and_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let appended = store
            .outbox_append(&[upstream("t-1", b"a"), event("rolled back")])
            .unwrap();
        assert_eq!(
            appended,
            Appended {
                seqs: vec![Some(0), Some(1)],
                dropped: 0,
                refused: 0
            }
        );
        let peeked = store.outbox_peek(0, 10).unwrap().messages;
        assert_eq!(
            peeked[0].1.topic,
            "ef/v1/node/edge-1/up/thermo/t-1/telemetry"
        );
        assert_eq!(peeked[1].1.topic, "ef/v1/node/edge-1/event");
        let message: UpstreamMessage =
            UpstreamMessage::decode_on(&peeked[0].1.topic.parse().unwrap(), &peeked[0].1.payload)
                .unwrap();
        assert_eq!((message.epoch, message.seq), (store.epoch(), 0));
        assert_eq!(message.payload, b"a");
        assert_eq!(
            AgentEvent::decode_on(&peeked[1].1.topic.parse().unwrap(), &peeked[1].1.payload)
                .unwrap()
                .detail,
            "rolled back"
        );
        let bytes: usize = peeked.iter().map(|(_, m)| codec::encode(m).len()).sum();
        assert_eq!(
            store.outbox_depth().unwrap(),
            OutboxDepth {
                entries: 2,
                bytes: bytes as u64
            }
        );
    }

    #[test]
    fn order_survives_reopen_and_seqs_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..50 {
            store
                .outbox_append(&[upstream("t-1", format!("m{i}").as_bytes())])
                .unwrap();
        }
        store.flush().unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let expected: Vec<_> = (0..50).map(|i| (i, format!("m{i}"))).collect();
        assert_eq!(contents(&store), expected);
        assert_eq!(
            store.outbox_peek(48, 10).unwrap().messages.len(),
            2,
            "peek starts at from_seq"
        );
        assert_eq!(
            store
                .outbox_peek(10, 3)
                .unwrap()
                .messages
                .into_iter()
                .map(|(seq, _)| seq)
                .collect::<Vec<_>>(),
            [10, 11, 12]
        );
        for seq in 0..50 {
            assert!(store.outbox_remove(seq).unwrap());
        }
        assert!(!store.outbox_remove(0).unwrap(), "already removed");
        assert_eq!(store.outbox_depth().unwrap(), OutboxDepth::default());
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store
                .outbox_append(&[upstream("t-1", b"after")])
                .unwrap()
                .seqs,
            [Some(50)]
        );
        assert_eq!(contents(&store), [(50, "after".to_owned())]);
    }

    #[test]
    fn removal_in_any_order_keeps_the_counters_right() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entries: Vec<_> = (0..6).map(|i| upstream("t-1", &[b'a' + i])).collect();
        store.outbox_append(&entries).unwrap();
        let one = store.outbox_depth().unwrap().bytes / 6;
        for seq in [3, 0, 5] {
            assert!(store.outbox_remove(seq).unwrap());
        }
        assert_eq!(
            contents(&store),
            [(1, "b".into()), (2, "c".into()), (4, "e".into())]
        );
        assert_eq!(
            store.outbox_depth().unwrap(),
            OutboxDepth {
                entries: 3,
                bytes: 3 * one
            }
        );
    }

    #[test]
    fn drop_oldest_makes_room_and_counts_what_it_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let limits = OutboxLimits {
            max_entries: 3,
            max_bytes: u64::MAX,
            when_full: WhenFull::DropOldest,
        };
        let store = open_with_limits(dir.path(), limits);
        let mut dropped = Vec::new();
        for i in 0..5 {
            let appended = store
                .outbox_append(&[upstream("t-1", format!("m{i}").as_bytes())])
                .unwrap();
            assert_eq!(appended.seqs, [Some(i)]);
            dropped.push(appended.dropped);
        }
        assert_eq!(dropped, [0, 0, 0, 1, 1]);
        assert_eq!(
            contents(&store),
            [(2, "m2".into()), (3, "m3".into()), (4, "m4".into())]
        );

        // Holes left by out-of-order removal are skipped when dropping.
        assert!(store.outbox_remove(3).unwrap());
        let appended = store
            .outbox_append(&[upstream("t-1", b"m5"), upstream("t-1", b"m6")])
            .unwrap();
        assert_eq!(
            (appended.seqs, appended.dropped),
            (vec![Some(5), Some(6)], 1)
        );
        assert_eq!(
            contents(&store),
            [(4, "m4".into()), (5, "m5".into()), (6, "m6".into())]
        );

        // More entries in one append than the bound: the earliest of them go too.
        let burst: Vec<_> = (7..12)
            .map(|i| upstream("t-1", format!("m{i}").as_bytes()))
            .collect();
        let appended = store.outbox_append(&burst).unwrap();
        assert_eq!((appended.dropped, appended.refused), (5, 0));
        assert_eq!(
            contents(&store),
            [(9, "m9".into()), (10, "m10".into()), (11, "m11".into())]
        );
        assert_eq!(store.outbox_depth().unwrap().entries, 3);
    }

    #[test]
    fn drop_oldest_applies_the_byte_bound() {
        let dir = tempfile::tempdir().unwrap();
        let probe = tempfile::tempdir().unwrap();
        let one = {
            let store = Store::open(probe.path()).unwrap();
            store.outbox_append(&[upstream("t-1", &[7; 100])]).unwrap();
            store.outbox_depth().unwrap().bytes
        };
        let limits = OutboxLimits {
            max_entries: u64::MAX,
            max_bytes: 3 * one,
            when_full: WhenFull::DropOldest,
        };
        let store = open_with_limits(dir.path(), limits);
        for _ in 0..3 {
            assert_eq!(
                store
                    .outbox_append(&[upstream("t-1", &[7; 100])])
                    .unwrap()
                    .dropped,
                0
            );
        }
        // Nearly twice the size: two old entries must go.
        let appended = store
            .outbox_append(&[upstream("t-1", &vec![7; one as usize])])
            .unwrap();
        assert_eq!((appended.seqs, appended.dropped), (vec![Some(3)], 2));
        let depth = store.outbox_depth().unwrap();
        assert_eq!(depth.entries, 2);
        assert!(depth.bytes <= 3 * one, "{depth:?}");

        // Larger than the whole bound: refused, nothing dropped for it.
        let appended = store
            .outbox_append(&[upstream("t-1", &vec![7; 3 * one as usize])])
            .unwrap();
        assert_eq!(
            appended,
            Appended {
                seqs: vec![None],
                dropped: 0,
                refused: 1
            }
        );
        assert_eq!(store.outbox_depth().unwrap(), depth);
    }

    #[test]
    fn refuse_new_keeps_the_backlog_and_counts_what_it_refused() {
        let dir = tempfile::tempdir().unwrap();
        let limits = OutboxLimits {
            max_entries: 3,
            max_bytes: u64::MAX,
            when_full: WhenFull::RefuseNew,
        };
        let store = open_with_limits(dir.path(), limits);
        let entries: Vec<_> = (0..5)
            .map(|i| upstream("t-1", format!("m{i}").as_bytes()))
            .collect();
        let appended = store.outbox_append(&entries).unwrap();
        assert_eq!(
            appended,
            Appended {
                seqs: vec![Some(0), Some(1), Some(2), None, None],
                dropped: 0,
                refused: 2
            }
        );
        assert_eq!(
            contents(&store),
            [(0, "m0".into()), (1, "m1".into()), (2, "m2".into())]
        );
        // Refused entries took no seq.
        assert!(store.outbox_remove(1).unwrap());
        assert_eq!(
            store.outbox_append(&[upstream("t-1", b"m5")]).unwrap().seqs,
            [Some(3)]
        );
        assert_eq!(store.outbox_append(&[event("full")]).unwrap().refused, 1);
        assert_eq!(store.outbox_depth().unwrap().entries, 3);
    }

    #[test]
    fn an_entry_no_packet_could_carry_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let result = store.outbox_append(&[
            upstream("t-1", b"fine"),
            upstream("t-1", &vec![0; MAX_OUTBOX_RECORD_BYTES]),
        ]);
        assert!(
            matches!(result, Err(StoreError::TooLarge { .. })),
            "{result:?}"
        );
        assert_eq!(contents(&store), []);
        assert_eq!(store.outbox_depth().unwrap(), OutboxDepth::default());
    }

    #[test]
    fn a_damaged_entry_is_set_apart_naming_its_seq_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .outbox_append(&[
                upstream("t-1", b"a"),
                upstream("t-1", b"b"),
                upstream("t-1", b"c"),
            ])
            .unwrap();
        store
            .outbox
            .insert(1u64.to_be_bytes(), b"\xff\x00".as_slice())
            .unwrap();
        let peeked = store.outbox_peek(0, 10).unwrap();
        assert_eq!(peeked.corrupt.len(), 1);
        assert_eq!(
            peeked.corrupt[0].0, 1,
            "the damaged entry is named by its seq"
        );
        let seqs: Vec<u64> = peeked.messages.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [0, 2], "the entries around it are read");
        assert!(store.outbox_remove(1).unwrap());
        assert_eq!(contents(&store), [(0, "a".into()), (2, "c".into())]);
    }
}
