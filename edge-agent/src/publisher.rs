//! Drains the outbox to the cloud: publishes entries in sequence order with QoS 1 and removes each
//! from disk when the broker acknowledges *that* entry.
//!
//! Entries stay on disk until their PUBACK, so nothing is lost while the uplink is down or the agent
//! restarts. Acknowledgements are matched to entries by packet id, explicitly: the uplink's
//! [`Outbound`] queue gives each entry its packet id and reports PUBACKs by the entry's seq, so a
//! reconnect or another request in between cannot shift the mapping. On every new connection
//! publishing starts again from the oldest entry still on disk: entries sent but not acknowledged
//! before a cut are sent again (at least once; the cloud de-duplicates by `(node, epoch, seq)`), in
//! order. The uplink uses a clean session for that reason — rumqttc then forgets its own
//! unacknowledged publishes instead of replaying them next to ours. A record that no longer decodes
//! (damaged on disk) is removed and counted (`edgefleet_agent_outbox_corrupt_total`) instead of
//! blocking everything behind it. Sled reads and removals run off the async threads.

use std::sync::Arc;

use tokio::sync::watch;

use crate::context::Context;
use crate::link::{Link, OUTBOUND_WINDOW, Outbound, Tracked};

/// Runs until `stop` turns true.
pub async fn run(
    ctx: Arc<Context>,
    uplink: Link,
    outbound: Arc<Outbound>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connection = 0;
    let mut cursor = 0u64;
    loop {
        let news = outbound.take();
        if news.connection != connection {
            connection = news.connection;
            cursor = 0;
        }
        let room = if news.connected {
            usize::from(OUTBOUND_WINDOW).saturating_sub(news.outstanding)
        } else {
            0
        };
        let store = ctx.store.clone();
        let acked = news.acked;
        let read = tokio::task::spawn_blocking(move || {
            for seq in acked {
                if let Err(e) = store.outbox_remove(seq) {
                    tracing::error!("cannot remove outbox entry {seq}: {e}");
                }
            }
            let peeked = if room > 0 {
                store.outbox_peek(cursor, room).map(Some)
            } else {
                Ok(None)
            };
            let depth = store.outbox_depth().map(|d| d.entries).unwrap_or(0);
            (peeked, depth)
        })
        .await;
        let Ok((peeked, depth)) = read else { return };
        ctx.metrics.outbox_depth.set(depth as i64);
        match peeked {
            Ok(Some(peeked)) => {
                if !peeked.corrupt.is_empty() {
                    remove_corrupt(&ctx, peeked.corrupt).await;
                }
                let next = peeked.messages.last().map(|(seq, _)| seq + 1);
                let publishes = peeked.messages.into_iter().map(|(seq, message)| Tracked {
                    tag: seq,
                    topic: message.topic,
                    payload: message.payload,
                });
                if let Some(next) = next
                    && outbound.queue(connection, publishes)
                {
                    cursor = next;
                    uplink.wake();
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!("cannot read the outbox: {e}"),
        }
        tokio::select! {
            _ = outbound.changed.notified() => {}
            _ = ctx.outbox_ready.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

async fn remove_corrupt(ctx: &Arc<Context>, corrupt: Vec<(u64, String)>) {
    let store = ctx.store.clone();
    let count = corrupt.len() as u64;
    for (seq, why) in &corrupt {
        tracing::error!("outbox entry {seq} is damaged and is removed: {why}");
    }
    let _ = tokio::task::spawn_blocking(move || {
        for (seq, _) in corrupt {
            if let Err(e) = store.outbox_remove(seq) {
                tracing::error!("cannot remove damaged outbox entry {seq}: {e}");
            }
        }
    })
    .await;
    ctx.metrics.outbox_corrupt.inc_by(count);
}
