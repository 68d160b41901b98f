//! Commands to devices, on a device-broker connection of their own, and the acknowledgements of
//! device messages that wait for them.
//!
//! **Why a second connection.** A command is a QoS 1 publish: the agent may only count it sent once
//! the broker's PUBACK comes back. On the device link that PUBACK would queue behind every device
//! message the broker has for the agent — and under overload the device link deliberately reads
//! slowly (backpressure, `crate::link`), so the answers to its own commands would arrive seconds
//! late and a bounded window of commands would stall the node. On a connection that only publishes,
//! PUBACKs come back at once, whatever the device link is behind on. Both connections use the node's
//! identity, so the broker's access rules are the same.
//!
//! **Acknowledgements wait for their commands.** A device message whose interaction made commands
//! is acknowledged on the device link only once the broker has acknowledged each of its commands,
//! so a crash in between leaves the message unacknowledged: the broker delivers it again (at least
//! once) instead of the device silently missing its answer. The queue is one FIFO of commands and
//! acks; an ack goes out when every command queued before it is acknowledged (the broker
//! acknowledges in order on one connection, so that is a prefix of the queue).
//!
//! **Order and reconnects.** Commands go out in queue order, [`COMMAND_WINDOW`] in flight at most,
//! through the connection's [`Outbound`] (packet ids mapped to queue entries). The connection has a
//! clean session: after a cut every command not yet acknowledged is sent again, in order (a device
//! may see one twice: at least once).
//!
//! **Bounds.** While more than [`MAX_WAITING`] entries wait (the connection is down or slow), the
//! device link is held ([`Hold::Commands`]): nothing new is read until the queue drains, so memory
//! stays bounded and the broker keeps the device messages.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use rumqttc::Publish;
use tokio::sync::{Notify, watch};

use crate::link::{Hold, Link, Outbound, Pressure, Tracked};

/// Commands in flight on the command connection at most.
pub const COMMAND_WINDOW: u16 = 1024;
/// Queue entries (commands and the acks behind them) beyond which the device link is held.
const MAX_WAITING: usize = 32_768;

/// The queue and the connection's outbound side, shared by the lanes and the task that drives it.
pub struct Commands {
    queue: Mutex<Queue>,
    outbound: Arc<Outbound>,
    /// Woken when something is queued.
    queued: Notify,
    pressure: Arc<Pressure>,
}

#[derive(Debug, Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// The tag the next command gets (tags increase along the queue).
    next_tag: u64,
    /// Commands from this tag on are not yet handed to the connection.
    cursor: u64,
    /// The connection the cursor belongs to.
    connection: u64,
}

#[derive(Debug)]
enum Entry {
    Command {
        tag: u64,
        topic: String,
        payload: Vec<u8>,
        acked: bool,
    },
    /// A device message to acknowledge once every command before it is.
    Ack(Publish),
}

/// What a turn of the queue gives the task to do.
#[derive(Debug, Default, PartialEq)]
struct Turn {
    /// Device messages whose commands are all acknowledged.
    acks: Vec<Publish>,
    /// Commands to hand to the connection now.
    publishes: Vec<(u64, String, Vec<u8>)>,
    /// The cursor once those are handed over.
    cursor: u64,
}

impl Queue {
    fn push(&mut self, commands: Vec<(String, Vec<u8>)>, ack: Publish) {
        for (topic, payload) in commands {
            let tag = self.next_tag;
            self.next_tag += 1;
            self.entries.push_back(Entry::Command {
                tag,
                topic,
                payload,
                acked: false,
            });
        }
        self.entries.push_back(Entry::Ack(ack));
    }

    /// Applies the connection's news: on a new connection everything unacknowledged goes out again;
    /// acknowledged tags are marked; the acks now free are released; up to `room` commands are
    /// picked to go out.
    fn turn(&mut self, connection: u64, acked: &[u64], room: usize) -> Turn {
        if connection != self.connection {
            self.connection = connection;
            self.cursor = self
                .entries
                .iter()
                .find_map(|e| match e {
                    Entry::Command {
                        tag, acked: false, ..
                    } => Some(*tag),
                    _ => None,
                })
                .unwrap_or(self.next_tag);
        }
        for tag in acked {
            // Tags are in queue order; acknowledged ones are near the front.
            if let Some(Entry::Command { acked, .. }) = self
                .entries
                .iter_mut()
                .find(|e| matches!(e, Entry::Command { tag: t, .. } if t == tag))
            {
                *acked = true;
            }
        }
        let mut turn = Turn::default();
        while let Some(front) = self.entries.front() {
            match front {
                Entry::Command { acked: true, .. } => {}
                Entry::Ack(_) => {}
                Entry::Command { acked: false, .. } => break,
            }
            if let Some(Entry::Ack(publish)) = self.entries.pop_front() {
                turn.acks.push(publish);
            }
        }
        turn.cursor = self.cursor;
        for entry in &self.entries {
            if turn.publishes.len() >= room {
                break;
            }
            if let Entry::Command {
                tag,
                topic,
                payload,
                acked: false,
            } = entry
                && *tag >= self.cursor
            {
                turn.publishes.push((*tag, topic.clone(), payload.clone()));
                turn.cursor = tag + 1;
            }
        }
        turn
    }

    fn commands_waiting(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e, Entry::Command { acked: false, .. }))
            .count()
    }
}

impl Commands {
    pub fn new(pressure: Arc<Pressure>) -> Arc<Commands> {
        Arc::new(Commands {
            queue: Mutex::new(Queue::default()),
            outbound: Arc::new(Outbound::with_window(COMMAND_WINDOW)),
            queued: Notify::new(),
            pressure,
        })
    }

    /// The outbound side the command connection is started with.
    pub fn outbound(&self) -> Arc<Outbound> {
        self.outbound.clone()
    }

    /// Queues `commands` and, behind them, the acknowledgement of `ack` (the message they answer).
    pub fn send(&self, commands: Vec<(String, Vec<u8>)>, ack: Publish) {
        let mut queue = self.lock();
        queue.push(commands, ack);
        if queue.entries.len() > MAX_WAITING {
            self.pressure.hold(Hold::Commands);
        }
        drop(queue);
        self.queued.notify_one();
    }

    /// Commands not yet acknowledged by the broker.
    pub fn waiting(&self) -> usize {
        self.lock().commands_waiting()
    }

    /// Drives the queue until `stop`: hands commands to `link` (the command connection), acks device
    /// messages on `device_link` as their commands are acknowledged.
    pub async fn run(
        self: Arc<Self>,
        link: Link,
        device_link: Link,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let news = self.outbound.take();
            let room = if news.connected {
                usize::from(self.outbound.window()).saturating_sub(news.outstanding)
            } else {
                0
            };
            let (turn, waiting) = {
                let mut queue = self.lock();
                let turn = queue.turn(news.connection, &news.acked, room);
                (turn, queue.entries.len())
            };
            if !turn.publishes.is_empty() {
                let publishes = turn
                    .publishes
                    .into_iter()
                    .map(|(tag, topic, payload)| Tracked {
                        tag,
                        topic,
                        payload,
                    });
                if self.outbound.queue(news.connection, publishes) {
                    self.lock().cursor = turn.cursor;
                    link.wake();
                }
            }
            for publish in &turn.acks {
                if let Err(e) = device_link.ack(publish) {
                    // Not acked: the broker delivers it again after the next reconnect.
                    tracing::debug!("cannot ack: {e}");
                    device_link.request_redelivery();
                }
            }
            if waiting <= MAX_WAITING / 2 {
                self.pressure.ease(Hold::Commands);
            }
            tokio::select! {
                _ = self.outbound.changed.notified() => {}
                _ = self.queued.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::QoS;

    fn message(pkid: u16) -> Publish {
        let mut publish = Publish::new("ef/v1/dev/c/d/up/x", QoS::AtLeastOnce, vec![]);
        publish.pkid = pkid;
        publish
    }

    fn command(n: u8) -> (String, Vec<u8>) {
        ("ef/v1/dev/c/d/down/cmd".into(), vec![n])
    }

    fn pkids(turn: &Turn) -> Vec<u16> {
        turn.acks.iter().map(|p| p.pkid).collect()
    }

    fn tags(turn: &Turn) -> Vec<u64> {
        turn.publishes.iter().map(|p| p.0).collect()
    }

    #[test]
    fn an_ack_waits_for_the_commands_before_it() {
        let mut queue = Queue::default();
        queue.push(vec![command(1), command(2)], message(10));
        queue.push(vec![], message(11));
        queue.push(vec![command(3)], message(12));
        let turn = queue.turn(1, &[], 10);
        assert_eq!(tags(&turn), [0, 1, 2]);
        assert!(turn.acks.is_empty(), "nothing acknowledged yet");
        queue.cursor = turn.cursor;
        // The first command alone frees nothing; both free the first message and the one behind it.
        assert!(queue.turn(1, &[0], 10).acks.is_empty());
        let turn = queue.turn(1, &[1], 10);
        assert_eq!(pkids(&turn), [10, 11]);
        assert!(tags(&turn).is_empty(), "nothing is sent twice");
        let turn = queue.turn(1, &[2], 10);
        assert_eq!(pkids(&turn), [12]);
        assert!(queue.entries.is_empty());
    }

    #[test]
    fn a_message_without_commands_is_acked_at_once_when_nothing_waits() {
        let mut queue = Queue::default();
        queue.push(vec![], message(5));
        assert_eq!(pkids(&queue.turn(0, &[], 0)), [5]);
    }

    #[test]
    fn commands_go_out_within_the_room_in_order() {
        let mut queue = Queue::default();
        for n in 0..5 {
            queue.push(vec![command(n)], message(u16::from(n)));
        }
        let turn = queue.turn(1, &[], 2);
        assert_eq!(tags(&turn), [0, 1]);
        queue.cursor = turn.cursor;
        let turn = queue.turn(1, &[0, 1], 2);
        assert_eq!(pkids(&turn), [0, 1]);
        assert_eq!(tags(&turn), [2, 3]);
    }

    #[test]
    fn a_new_connection_sends_every_unacknowledged_command_again_in_order() {
        let mut queue = Queue::default();
        for n in 0..4 {
            queue.push(vec![command(n)], message(u16::from(n)));
        }
        let turn = queue.turn(1, &[], 10);
        queue.cursor = turn.cursor;
        assert_eq!(pkids(&queue.turn(1, &[0], 10)), [0]);
        // The connection drops with 1, 2 and 3 in flight: all three again, in order.
        let turn = queue.turn(2, &[], 10);
        assert_eq!(tags(&turn), [1, 2, 3]);
        // Not handed over (the connection dropped again at once): the cursor stays, so the next
        // turn picks them again.
        assert_eq!(tags(&queue.turn(2, &[], 10)), [1, 2, 3]);
        assert_eq!(queue.commands_waiting(), 3);
    }
}
