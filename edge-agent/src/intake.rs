//! The intake: where device messages wait for a lane, fairly and within bounds. A pure state machine
//! (no I/O, no clock of its own), so every rule below is unit-tested apart from MQTT.
//!
//! * **Never waits.** [`Intake::offer`] decides at once: queued, a duplicate of one held, or shed
//!   with a reason. The device link's polling task calls it, so reading from the broker never waits
//!   on a lane.
//! * **Per-device fairness.** Each device has its own queue; lanes take rounds of at most one message
//!   per device from a round-robin list of devices with work ([`Intake::take_round`]), and a device
//!   whose message finished goes to the back of that list. A device with a backlog of thousands
//!   gets one message per round, like every other device.
//! * **Per-device order.** A device has at most one message in a lane at a time; its next message
//!   waits until [`Intake::finish`].
//! * **Per-device rate budget** (per class: `device_rate_per_s`, `device_burst` in the class limits):
//!   a token bucket; a message beyond it is shed as [`Shed::OverBudget`] — the device is at fault,
//!   so a QoS 1 message is acknowledged and dropped, and counted.
//! * **Bounds.** Messages and bytes in the intake, messages per device, tracked devices: all capped.
//!   A device may have its whole burst waiting (at least [`IntakeLimits::max_per_device`], at most a
//!   quarter of the intake); a QoS 1 message beyond that is shed as [`Shed::Backlog`] — the device
//!   sends faster than its share of the node serves it, so like [`Shed::OverBudget`] it is
//!   acknowledged, dropped and counted, and no other device pays for it.
//!   **QoS 0 is best effort and shed first**: a QoS 0 message is taken only while the device has
//!   fewer than [`IntakeLimits::qos0_per_device`] waiting and the intake is less than half full.
//!   At half full the intake is [pressed](Intake::is_pressed): the device link stops reading until
//!   it is [eased](Intake::is_eased) (under a quarter), and the broker keeps the rest. A QoS 1 message
//!   that still does not fit is shed as [`Shed::Full`]: it is *not* acknowledged (it is not the
//!   device's fault), and the caller has the broker deliver it again later.
//! * **Order across host faults.** When a host-side fault leaves a device's message unacknowledged,
//!   [`Intake::hold`] drops that device's waiting QoS 1 messages (also unacknowledged) and sheds its
//!   new ones as [`Shed::Held`] until [`Intake::resume`] (called on the reconnect that makes the
//!   broker deliver them all again, in their order).
//! * **Duplicates.** A QoS 1 message delivered again (after a reconnect) while its first copy is
//!   still held here has the same packet id: it is dropped as [`Offered::Duplicate`]; the first
//!   copy's acknowledgement covers both. A redelivered copy (MQTT's DUP flag) of a message
//!   already done and acknowledged — same packet id, same device, same payload digest — is
//!   [`Offered::AlreadyDone`]: its effects are durable and its commands sent, so it is acknowledged
//!   again and not run twice. This is what makes a reconnect harmless to the devices that did
//!   nothing: the broker resends what it had not seen acknowledged when the connection dropped.
//!   The intake remembers the last [`ACKED_REMEMBERED`] acknowledged packet ids; a new message
//!   (no DUP flag) with one of them proves the broker had the ack, and the id is forgotten.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Instant;

/// Acknowledged packet ids remembered, to recognise redelivered copies. The acks a connection can
/// lose when it drops are those of its last moments, far fewer than this.
pub const ACKED_REMEMBERED: usize = 4096;

/// The intake's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeLimits {
    /// Messages waiting or in a lane, at most.
    pub max_messages: usize,
    /// Their payload bytes, at most.
    pub max_bytes: usize,
    /// Messages of one device waiting, at most (QoS 1), unless its class's burst is larger.
    pub max_per_device: usize,
    /// QoS 0 messages of one device waiting, at most.
    pub qos0_per_device: usize,
    /// Devices tracked (queues and rate buckets), at most; idle ones are forgotten first.
    pub max_devices: usize,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        IntakeLimits {
            max_messages: 16_384,
            max_bytes: 64 << 20,
            max_per_device: 64,
            qos0_per_device: 4,
            max_devices: 65_536,
        }
    }
}

/// A device's rate budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub rate_per_s: f64,
    pub burst: f64,
}

/// What a message is, as far as the intake cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// QoS 1 (at least once) rather than QoS 0.
    pub acknowledged: bool,
    /// The broker's packet id (QoS 1).
    pub pkid: u16,
    pub bytes: usize,
    /// Sent again by the broker (MQTT's DUP flag).
    pub redelivered: bool,
    /// A digest of the payload, to tell a redelivered copy from a new message that reuses the id.
    pub digest: u64,
}

/// What [`Intake::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    Queued,
    /// A QoS 1 message whose first copy is still here (same packet id): drop it, do not ack it.
    Duplicate,
    /// A redelivered copy of a message of this device already done and acknowledged: ack it again,
    /// do not run it.
    AlreadyDone,
    Shed(Shed),
}

/// Why a message was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shed {
    /// The device sent more than its rate budget: its fault; a QoS 1 message is acked and dropped.
    OverBudget,
    /// QoS 0 and the device already has some waiting, or the intake is half full: best effort.
    BestEffort,
    /// QoS 1 and the device has more waiting than its share: its fault; acked and dropped.
    Backlog,
    /// QoS 1 and the intake is full: not acked, delivered again later.
    Full,
    /// The device is held after a host-side fault: not acked, delivered again after the reconnect.
    Held,
    /// QoS 1 while the node's commands wait for the broker (the device link is a full command
    /// window behind): acked and dropped, so that reading catches up and the node recovers. Decided
    /// by the caller, not the intake.
    Overload,
}

impl Shed {
    /// A short stable name for metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            Shed::OverBudget => "over_budget",
            Shed::Backlog => "backlog",
            Shed::BestEffort => "best_effort",
            Shed::Full => "full",
            Shed::Held => "held",
            Shed::Overload => "overload",
        }
    }

    /// Whether a QoS 1 message shed so is acknowledged (dropped for good) rather than left to be
    /// delivered again.
    pub fn acks(self) -> bool {
        matches!(self, Shed::OverBudget | Shed::Backlog | Shed::Overload)
    }
}

/// A message in a round, with the device it belongs to.
#[derive(Debug)]
pub struct Taken<K, M> {
    pub device: K,
    pub message: M,
    pub envelope: Envelope,
    /// When the message was offered.
    pub arrived: Instant,
}

struct Waiting<M> {
    message: M,
    envelope: Envelope,
    arrived: Instant,
}

struct Device<M> {
    queue: VecDeque<Waiting<M>>,
    /// Since when a message of this device is in a lane.
    in_lane: Option<Instant>,
    held: bool,
    tokens: f64,
    refilled: Instant,
    budget: Budget,
}

impl<M> Device<M> {
    fn idle(&self) -> bool {
        self.queue.is_empty() && self.in_lane.is_none() && !self.held
    }

    /// Whether forgetting the device would change nothing: idle, with a full bucket by `now`.
    fn forgettable(&self, now: Instant) -> bool {
        self.idle() && self.tokens_at(now) >= self.budget.burst
    }

    fn tokens_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        (self.tokens + elapsed * self.budget.rate_per_s).min(self.budget.burst)
    }
}

/// The intake. See the module documentation.
pub struct Intake<K, M> {
    limits: IntakeLimits,
    devices: HashMap<K, Device<M>>,
    /// Devices with a message waiting and none in a lane, in round-robin order.
    ready: VecDeque<K>,
    /// Packet ids of the QoS 1 messages here (waiting or in a lane).
    pkids: HashSet<u16>,
    /// Recently acknowledged packet ids: the device and payload digest, and a sequence number that
    /// ties the entry to its place in `acked_order`.
    acked: HashMap<u16, (K, u64, u64)>,
    /// `acked`'s ids, oldest first, with their sequence numbers (stale ones are skipped).
    acked_order: VecDeque<(u16, u64)>,
    acked_seq: u64,
    messages: usize,
    bytes: usize,
}

/// Counts for gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntakeDepth {
    /// Messages waiting or in a lane.
    pub messages: usize,
    pub bytes: usize,
    /// Devices tracked.
    pub devices: usize,
}

impl<K: Clone + Eq + Hash, M> Intake<K, M> {
    pub fn new(limits: IntakeLimits) -> Intake<K, M> {
        Intake {
            limits,
            devices: HashMap::new(),
            ready: VecDeque::new(),
            pkids: HashSet::new(),
            acked: HashMap::new(),
            acked_order: VecDeque::new(),
            acked_seq: 0,
            messages: 0,
            bytes: 0,
        }
    }

    /// Takes a message of `device` arriving at `now`, or says why not. Never waits.
    pub fn offer(
        &mut self,
        device: K,
        envelope: Envelope,
        message: M,
        budget: Budget,
        now: Instant,
    ) -> Offered {
        if envelope.acknowledged && self.pkids.contains(&envelope.pkid) {
            return Offered::Duplicate;
        }
        if envelope.acknowledged {
            if envelope.redelivered {
                if self
                    .acked
                    .get(&envelope.pkid)
                    .is_some_and(|(d, digest, _)| *d == device && *digest == envelope.digest)
                {
                    return Offered::AlreadyDone;
                }
            } else {
                // The broker reuses an id only once it had the ack.
                self.acked.remove(&envelope.pkid);
            }
        }
        if !self.devices.contains_key(&device) && self.devices.len() >= self.limits.max_devices {
            self.forget_idle(now);
            if self.devices.len() >= self.limits.max_devices {
                return Offered::Shed(if envelope.acknowledged {
                    Shed::Full
                } else {
                    Shed::BestEffort
                });
            }
        }
        let limits = self.limits;
        let half_full = self.is_pressed();
        let full =
            self.messages >= limits.max_messages || self.bytes + envelope.bytes > limits.max_bytes;
        let entry = self
            .devices
            .entry(device.clone())
            .or_insert_with(|| Device {
                queue: VecDeque::new(),
                in_lane: None,
                held: false,
                tokens: budget.burst,
                refilled: now,
                budget,
            });
        // The class's budget may have changed with a new module version.
        entry.budget = budget;
        if entry.held && envelope.acknowledged {
            return Offered::Shed(Shed::Held);
        }
        entry.tokens = entry.tokens_at(now);
        entry.refilled = now;
        if entry.tokens < 1.0 {
            return Offered::Shed(Shed::OverBudget);
        }
        entry.tokens -= 1.0;
        if envelope.acknowledged {
            if full {
                return Offered::Shed(Shed::Full);
            }
            // The whole burst may wait, but no device may take more than a quarter of the intake.
            let share = limits
                .max_per_device
                .max(budget.burst as usize)
                .min(limits.max_messages / 4)
                .max(1);
            if entry.queue.len() >= share {
                return Offered::Shed(Shed::Backlog);
            }
        } else {
            let waiting_qos0 = entry
                .queue
                .iter()
                .filter(|w| !w.envelope.acknowledged)
                .count();
            if full || half_full || waiting_qos0 >= limits.qos0_per_device {
                return Offered::Shed(Shed::BestEffort);
            }
        }
        let was_ready = !entry.queue.is_empty() || entry.in_lane.is_some();
        entry.queue.push_back(Waiting {
            message,
            envelope,
            arrived: now,
        });
        self.messages += 1;
        self.bytes += envelope.bytes;
        if envelope.acknowledged {
            self.pkids.insert(envelope.pkid);
        }
        if !was_ready {
            self.ready.push_back(device);
        }
        Offered::Queued
    }

    /// The next message of up to `max` devices, one each, in round-robin order; each device stays in
    /// its lane until [`Intake::finish`].
    pub fn take_round(&mut self, max: usize, now: Instant) -> Vec<Taken<K, M>> {
        let mut round = Vec::new();
        while round.len() < max {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(device) = self.devices.get_mut(&key) else {
                continue;
            };
            let Some(waiting) = device.queue.pop_front() else {
                continue;
            };
            device.in_lane = Some(now);
            round.push(Taken {
                device: key,
                message: waiting.message,
                envelope: waiting.envelope,
                arrived: waiting.arrived,
            });
        }
        round
    }

    /// Whether some device has a message waiting for a lane.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The device's message in a lane is done, `acked` or left for redelivery: its next one may go.
    pub fn finish(&mut self, device: &K, envelope: Envelope, acked: bool) {
        self.forget_message(envelope);
        if acked && envelope.acknowledged {
            self.remember_acked(device, envelope);
        }
        let Some(entry) = self.devices.get_mut(device) else {
            return;
        };
        entry.in_lane = None;
        if !entry.queue.is_empty() {
            self.ready.push_back(device.clone());
        }
    }

    /// A host-side fault left a message of `device` unacknowledged: drops its waiting QoS 1 messages
    /// (returned, so the caller can count them; they are not acked) and sheds its new ones until
    /// [`Intake::resume`]. Waiting QoS 0 messages stay: the broker would not send them again.
    pub fn hold(&mut self, device: &K) -> Vec<M> {
        let Some(entry) = self.devices.get_mut(device) else {
            return Vec::new();
        };
        entry.held = true;
        let mut dropped = Vec::new();
        let mut kept = VecDeque::new();
        for waiting in entry.queue.drain(..) {
            if waiting.envelope.acknowledged {
                dropped.push(waiting);
            } else {
                kept.push_back(waiting);
            }
        }
        entry.queue = kept;
        let dropped: Vec<M> = dropped
            .into_iter()
            .map(|w| {
                self.forget_message(w.envelope);
                w.message
            })
            .collect();
        dropped
    }

    /// The broker is about to deliver every unacknowledged message again: held devices take
    /// messages again.
    pub fn resume(&mut self) {
        for device in self.devices.values_mut() {
            device.held = false;
        }
    }

    /// Whether some device is held.
    pub fn any_held(&self) -> bool {
        self.devices.values().any(|d| d.held)
    }

    /// When the oldest message still here (waiting or in a lane) arrived, and the longest a message
    /// has been in a lane.
    pub fn oldest(&self) -> (Option<Instant>, Option<Instant>) {
        let mut waiting: Option<Instant> = None;
        let mut in_lane: Option<Instant> = None;
        for device in self.devices.values() {
            if let Some(front) = device.queue.front() {
                waiting = Some(waiting.map_or(front.arrived, |w| w.min(front.arrived)));
            }
            if let Some(since) = device.in_lane {
                in_lane = Some(in_lane.map_or(since, |w| w.min(since)));
            }
        }
        (waiting, in_lane)
    }

    /// Forgets devices that are idle and whose bucket is full again: they would start afresh anyway.
    pub fn forget_idle(&mut self, now: Instant) {
        self.devices.retain(|_, d| !d.forgettable(now));
        if self.devices.len() >= self.limits.max_devices {
            // Still full of idle devices with spent buckets (many ids, each sending once): forget
            // those too — a device that comes back gets a fresh budget, which is the lesser harm.
            self.devices.retain(|_, d| !d.idle());
        }
    }

    /// Whether the device link should stop reading: half of the messages or bytes allowed are
    /// here. The other half takes what is read before the link stops, so [`Shed::Full`] stays a last
    /// resort.
    pub fn is_pressed(&self) -> bool {
        self.messages * 2 >= self.limits.max_messages || self.bytes * 2 >= self.limits.max_bytes
    }

    /// Whether it may read again: under a quarter of both (the gap keeps it from toggling on every
    /// message).
    pub fn is_eased(&self) -> bool {
        self.messages * 4 < self.limits.max_messages && self.bytes * 4 < self.limits.max_bytes
    }

    pub fn depth(&self) -> IntakeDepth {
        IntakeDepth {
            messages: self.messages,
            bytes: self.bytes,
            devices: self.devices.len(),
        }
    }

    fn remember_acked(&mut self, device: &K, envelope: Envelope) {
        self.acked_seq += 1;
        let seq = self.acked_seq;
        self.acked
            .insert(envelope.pkid, (device.clone(), envelope.digest, seq));
        self.acked_order.push_back((envelope.pkid, seq));
        while self.acked_order.len() > ACKED_REMEMBERED {
            if let Some((pkid, seq)) = self.acked_order.pop_front()
                && self.acked.get(&pkid).is_some_and(|entry| entry.2 == seq)
            {
                self.acked.remove(&pkid);
            }
        }
    }

    fn forget_message(&mut self, envelope: Envelope) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(envelope.bytes);
        if envelope.acknowledged {
            self.pkids.remove(&envelope.pkid);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const GENEROUS: Budget = Budget {
        rate_per_s: 1e9,
        burst: 1e9,
    };

    fn qos1(pkid: u16) -> Envelope {
        Envelope {
            acknowledged: true,
            pkid,
            bytes: 10,
            redelivered: false,
            digest: 1,
        }
    }

    fn qos0() -> Envelope {
        Envelope {
            acknowledged: false,
            pkid: 0,
            bytes: 10,
            redelivered: false,
            digest: 1,
        }
    }

    fn devices(round: &[Taken<&'static str, u32>]) -> Vec<(&'static str, u32)> {
        round.iter().map(|t| (t.device, t.message)).collect()
    }

    #[test]
    fn a_device_with_a_backlog_gets_one_message_per_round_like_the_others() {
        let now = Instant::now();
        let mut intake = Intake::new(IntakeLimits::default());
        for i in 0..50u16 {
            intake.offer("flood", qos1(i + 1), u32::from(i), GENEROUS, now);
        }
        intake.offer("quiet-a", qos1(100), 100, GENEROUS, now);
        intake.offer("quiet-b", qos1(101), 101, GENEROUS, now);
        let round = intake.take_round(64, now);
        assert_eq!(
            devices(&round),
            [("flood", 0), ("quiet-a", 100), ("quiet-b", 101)]
        );
        // Nothing more until the devices finish: per-device order.
        assert!(intake.take_round(64, now).is_empty());
        for taken in &round {
            intake.finish(&taken.device, taken.envelope, true);
        }
        intake.offer("quiet-a", qos1(102), 102, GENEROUS, now);
        let round = intake.take_round(64, now);
        assert_eq!(devices(&round), [("flood", 1), ("quiet-a", 102)]);
    }

    #[test]
    fn the_rate_budget_sheds_what_a_device_sends_beyond_it_and_refills_with_time() {
        let start = Instant::now();
        let budget = Budget {
            rate_per_s: 10.0,
            burst: 5.0,
        };
        let mut intake = Intake::new(IntakeLimits {
            max_per_device: 1000,
            ..IntakeLimits::default()
        });
        let offered: Vec<Offered> = (0..8u16)
            .map(|i| intake.offer("d", qos1(i + 1), 0, budget, start))
            .collect();
        assert_eq!(offered[..5], [Offered::Queued; 5]);
        assert_eq!(offered[5..], [Offered::Shed(Shed::OverBudget); 3]);
        assert!(Shed::OverBudget.acks());
        // 300 ms later three tokens are back.
        let later = start + Duration::from_millis(300);
        let offered: Vec<Offered> = (0..4u16)
            .map(|i| intake.offer("d", qos1(i + 20), 0, budget, later))
            .collect();
        assert_eq!(
            offered,
            [
                Offered::Queued,
                Offered::Queued,
                Offered::Queued,
                Offered::Shed(Shed::OverBudget)
            ]
        );
        // Another device has its own budget.
        assert_eq!(
            intake.offer("e", qos1(99), 0, budget, later),
            Offered::Queued
        );
    }

    #[test]
    fn qos0_is_shed_first_and_qos1_is_never_acked_when_full() {
        let now = Instant::now();
        let mut intake = Intake::new(IntakeLimits {
            max_messages: 8,
            max_per_device: 100,
            qos0_per_device: 2,
            ..IntakeLimits::default()
        });
        assert_eq!(intake.offer("a", qos0(), 0, GENEROUS, now), Offered::Queued);
        assert_eq!(intake.offer("a", qos0(), 1, GENEROUS, now), Offered::Queued);
        assert_eq!(
            intake.offer("a", qos0(), 2, GENEROUS, now),
            Offered::Shed(Shed::BestEffort),
            "the device's QoS 0 share is spent"
        );
        for i in 0..2u16 {
            assert_eq!(
                intake.offer("b", qos1(i + 1), 0, GENEROUS, now),
                Offered::Queued
            );
        }
        // Half full: QoS 0 of anyone is shed, QoS 1 still taken.
        assert_eq!(
            intake.offer("c", qos0(), 0, GENEROUS, now),
            Offered::Shed(Shed::BestEffort)
        );
        // Two each: a device's share is at most a quarter of the intake.
        for (i, device) in ["c", "c", "d", "d"].into_iter().enumerate() {
            assert_eq!(
                intake.offer(device, qos1(i as u16 + 10), 0, GENEROUS, now),
                Offered::Queued
            );
        }
        let full = intake.offer("e", qos1(50), 0, GENEROUS, now);
        assert_eq!(full, Offered::Shed(Shed::Full));
        assert!(!Shed::Full.acks());
        assert_eq!(intake.depth().messages, 8);
    }

    #[test]
    fn the_intake_presses_at_half_full_and_eases_under_a_quarter() {
        let now = Instant::now();
        let mut intake = Intake::new(IntakeLimits {
            max_messages: 16,
            max_per_device: 100,
            ..IntakeLimits::default()
        });
        let mut pressed_at = None;
        for i in 0..8u16 {
            assert!(!intake.is_pressed(), "pressed at {i} messages");
            let device = ["a", "b", "c", "d"][usize::from(i % 4)];
            intake.offer(device, qos1(i + 1), u32::from(i), GENEROUS, now);
            if intake.is_pressed() {
                pressed_at = Some(intake.depth().messages);
            }
        }
        assert_eq!(pressed_at, Some(8));
        assert!(!intake.is_eased());
        // Draining: still not eased at a quarter, eased under it.
        let mut eased_at = None;
        while eased_at.is_none() {
            let round = intake.take_round(1, now);
            let Some(taken) = round.first() else { break };
            intake.finish(&taken.device, taken.envelope, true);
            if intake.is_eased() {
                eased_at = Some(intake.depth().messages);
            }
        }
        assert_eq!(eased_at, Some(3));
        assert!(!intake.is_pressed());

        // Bytes count too.
        let mut by_bytes = Intake::new(IntakeLimits {
            max_bytes: 100,
            ..IntakeLimits::default()
        });
        let big = Envelope {
            bytes: 50,
            ..qos1(1)
        };
        by_bytes.offer("a", big, 0u32, GENEROUS, now);
        assert!(by_bytes.is_pressed());
    }

    #[test]
    fn a_redelivered_copy_of_a_message_still_here_is_a_duplicate() {
        let now = Instant::now();
        let mut intake = Intake::new(IntakeLimits::default());
        assert_eq!(
            intake.offer("a", qos1(7), 1, GENEROUS, now),
            Offered::Queued
        );
        assert_eq!(
            intake.offer("a", qos1(7), 1, GENEROUS, now),
            Offered::Duplicate
        );
        let round = intake.take_round(1, now);
        assert_eq!(
            intake.offer("a", qos1(7), 1, GENEROUS, now),
            Offered::Duplicate
        );
        intake.finish(&round[0].device, round[0].envelope, true);
        // Acked and gone: the same packet id is a new message now.
        assert_eq!(
            intake.offer("a", qos1(7), 2, GENEROUS, now),
            Offered::Queued
        );
    }

    #[test]
    fn a_device_may_have_its_burst_waiting_and_beyond_that_only_it_loses() {
        let now = Instant::now();
        let limits = IntakeLimits {
            max_per_device: 4,
            ..IntakeLimits::default()
        };
        let mut intake = Intake::new(limits);
        let budget = Budget {
            rate_per_s: 1.0,
            burst: 10.0,
        };
        // Within its budget (1000/s), but faster than the node serves it: nothing leaves a lane.
        let fast = Budget {
            rate_per_s: 1000.0,
            burst: 2.0,
        };
        let offered: Vec<Offered> = (0..10u16)
            .map(|i| {
                let at = now + Duration::from_millis(u64::from(i) * 10);
                intake.offer("flood", qos1(i + 1), 0, fast, at)
            })
            .collect();
        assert_eq!(offered[..4], [Offered::Queued; 4]);
        assert_eq!(offered[4..], [Offered::Shed(Shed::Backlog); 6]);
        assert!(
            Shed::Backlog.acks(),
            "the device's fault: acked and dropped"
        );
        // A larger burst may wait whole.
        let offered: Vec<Offered> = (0..10u16)
            .map(|i| intake.offer("burst", qos1(i + 100), 0, budget, now))
            .collect();
        assert_eq!(offered, [Offered::Queued; 10]);
        assert!(!intake.any_held(), "nobody is held, so no reconnect");
        assert_eq!(
            intake.offer("quiet", qos1(200), 0, GENEROUS, now),
            Offered::Queued
        );
    }

    #[test]
    fn a_redelivered_copy_of_an_acked_message_is_already_done() {
        let now = Instant::now();
        let mut intake = Intake::new(IntakeLimits::default());
        let sent = Envelope {
            digest: 42,
            ..qos1(7)
        };
        assert_eq!(intake.offer("a", sent, 1, GENEROUS, now), Offered::Queued);
        let round = intake.take_round(1, now);
        intake.finish(&"a", round[0].envelope, true);
        let again = Envelope {
            redelivered: true,
            ..sent
        };
        assert_eq!(
            intake.offer("a", again, 1, GENEROUS, now),
            Offered::AlreadyDone
        );
        // Another device's message with the same id and payload is its own.
        assert_eq!(intake.offer("b", again, 1, GENEROUS, now), Offered::Queued);
        // A new message reusing the id (no DUP flag, or another payload) runs.
        let round = intake.take_round(1, now);
        intake.finish(&"b", round[0].envelope, true);
        assert_eq!(intake.offer("a", sent, 2, GENEROUS, now), Offered::Queued);
        let round = intake.take_round(1, now);
        // The id came back without the DUP flag: the broker had the ack, and this new message,
        // left for redelivery (a host fault), runs when its copy comes back, same payload or not.
        intake.finish(&"a", round[0].envelope, false);
        assert_eq!(intake.offer("a", again, 3, GENEROUS, now), Offered::Queued);
    }

    #[test]
    fn acknowledged_ids_remembered_stay_bounded() {
        let now = Instant::now();
        let mut intake = Intake::new(IntakeLimits::default());
        for round in 0..3u32 {
            for i in 0..u16::MAX {
                let envelope = Envelope {
                    digest: u64::from(round),
                    ..qos1(i)
                };
                intake.offer("a", envelope, 0, GENEROUS, now);
                let taken = intake.take_round(1, now);
                intake.finish(&"a", taken[0].envelope, true);
            }
        }
        assert!(intake.acked.len() <= ACKED_REMEMBERED);
        assert!(intake.acked_order.len() <= ACKED_REMEMBERED);
    }

    #[test]
    fn a_held_device_drops_its_waiting_qos1_messages_until_resumed() {
        let now = Instant::now();
        let mut intake = Intake::new(IntakeLimits::default());
        for i in 0..3u16 {
            intake.offer("a", qos1(i + 1), u32::from(i), GENEROUS, now);
        }
        intake.offer("a", qos0(), 9, GENEROUS, now);
        intake.offer("b", qos1(10), 10, GENEROUS, now);
        let round = intake.take_round(64, now);
        assert_eq!(devices(&round), [("a", 0), ("b", 10)]);
        // Message 0 of "a" hit a host fault: left unacked, the device held.
        assert_eq!(intake.hold(&"a"), [1, 2]);
        intake.finish(&"a", round[0].envelope, false);
        intake.finish(&"b", round[1].envelope, true);
        assert_eq!(
            intake.offer("a", qos1(4), 3, GENEROUS, now),
            Offered::Shed(Shed::Held)
        );
        assert!(intake.any_held());
        // The packet ids dropped are free: their redelivered copies are taken after the resume.
        intake.resume();
        assert_eq!(
            intake.offer("a", qos1(1), 0, GENEROUS, now),
            Offered::Queued
        );
        let round = intake.take_round(64, now);
        assert_eq!(
            devices(&round),
            [("a", 9)],
            "the QoS 0 message stayed, in order"
        );
    }

    #[test]
    fn tracked_devices_stay_bounded_whatever_ids_arrive() {
        let start = Instant::now();
        let budget = Budget {
            rate_per_s: 1.0,
            burst: 2.0,
        };
        let mut intake: Intake<u32, ()> = Intake::new(IntakeLimits {
            max_devices: 100,
            ..IntakeLimits::default()
        });
        for id in 0..10_000u32 {
            let offered = intake.offer(id, qos0(), (), budget, start);
            if let Some(taken) = intake.take_round(1, start).pop() {
                intake.finish(&taken.device, taken.envelope, true);
            }
            assert_ne!(offered, Offered::Duplicate);
            assert!(intake.depth().devices <= 100);
        }
        intake.forget_idle(start + Duration::from_secs(10));
        assert_eq!(intake.depth().devices, 0);
        assert_eq!(intake.depth().messages, 0);
    }

    #[test]
    fn oldest_reports_the_longest_wait_and_the_longest_lane() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut intake = Intake::new(IntakeLimits::default());
        assert_eq!(intake.oldest(), (None, None));
        intake.offer("a", qos1(1), 0, GENEROUS, t0);
        intake.offer("a", qos1(2), 0, GENEROUS, t1);
        let _ = intake.take_round(1, t1);
        assert_eq!(intake.oldest(), (Some(t1), Some(t1)));
    }
}
