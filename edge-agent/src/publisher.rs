//! Drains the outbox to the cloud broker: publishes entries in sequence order with QoS 1 and removes
//! each from disk when the broker acknowledges it.
//!
//! The entries stay on disk until their PUBACK, so nothing is lost while the uplink is down or the
//! agent restarts. On every (re)connection publishing starts again from the oldest entry still on
//! disk: entries sent but not acknowledged before a cut are sent again (at least once; the cloud
//! de-duplicates by `(node, epoch, seq)`), and the order is kept. The uplink uses a clean session
//! for that reason — rumqttc then forgets its own unacknowledged publishes instead of replaying them
//! next to ours. At most [`WINDOW`] entries are in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rumqttc::QoS;
use tokio::sync::{Notify, mpsc};

use crate::link::LinkHandle;
use crate::metrics::AgentMetrics;
use crate::store::Store;

/// Entries published and not yet acknowledged, at most.
pub const WINDOW: usize = 64;

/// What the publisher hears from the uplink.
#[derive(Debug)]
pub enum UplinkSignal {
    Connected,
    Disconnected,
    Sent { pkid: u16 },
    Acked { pkid: u16 },
}

/// Runs until the signal channel closes.
pub async fn run(
    store: Store,
    uplink: LinkHandle,
    mut signals: mpsc::Receiver<UplinkSignal>,
    ready: Arc<Notify>,
    metrics: Arc<AgentMetrics>,
) {
    let mut connected = false;
    let mut cursor = 0u64;
    // Published, waiting to learn their packet id (rumqttc reports ids in request order).
    let mut awaiting_id: VecDeque<u64> = VecDeque::new();
    let mut in_flight: HashMap<u16, u64> = HashMap::new();
    loop {
        tokio::select! {
            signal = signals.recv() => match signal {
                None => return,
                Some(UplinkSignal::Connected) => {
                    connected = true;
                    cursor = 0;
                    awaiting_id.clear();
                    in_flight.clear();
                }
                Some(UplinkSignal::Disconnected) => connected = false,
                Some(UplinkSignal::Sent { pkid }) => {
                    if let Some(seq) = awaiting_id.pop_front() {
                        in_flight.insert(pkid, seq);
                    }
                }
                Some(UplinkSignal::Acked { pkid }) => {
                    if let Some(seq) = in_flight.remove(&pkid)
                        && let Err(e) = store.outbox_remove(seq)
                    {
                        tracing::error!("cannot remove outbox entry {seq}: {e}");
                    }
                }
            },
            _ = ready.notified() => {}
        }
        if let Ok(depth) = store.outbox_depth() {
            metrics.outbox_depth.set(depth.entries as i64);
        }
        if !connected {
            continue;
        }
        let room = WINDOW.saturating_sub(awaiting_id.len() + in_flight.len());
        if room == 0 {
            continue;
        }
        let entries = match store.outbox_peek(cursor, room) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!("cannot read the outbox: {e}");
                continue;
            }
        };
        for (seq, message) in entries {
            if let Err(e) = uplink
                .client
                .publish(message.topic, QoS::AtLeastOnce, false, message.payload)
                .await
            {
                tracing::warn!("cannot queue outbox entry {seq}: {e}");
                break;
            }
            awaiting_id.push_back(seq);
            cursor = seq + 1;
        }
    }
}
