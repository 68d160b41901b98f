//! The fleet's interaction and fault rates over the last 15 minutes, for the fleet page
//! (`page`): a fixed ring of [`BUCKETS`] buckets of [`BUCKET_MS`], filled from the counters that
//! node statuses carry (`ModuleStats`, cumulative since the agent started), so that the chart has
//! history when the page is opened. Pure: every call is given `now_ms`, the controller's clock.
//!
//! **Differences, not counters.** Each node's counters are kept per (class, module version) and
//! each status adds what grew since the node's previous one. The difference is spread evenly over
//! the time between the two statuses, so a node that reports every 10 s does not put all of them
//! in one bucket and nothing in the next (the agent keeps serving devices while the cloud is away:
//! a status after a gap covers the gap).
//!
//! **Counters that start again.** A status of a new agent run (`started_at_ms` changed) counts
//! from zero: its counters are what happened since that start. A counter smaller than before
//! within a run is taken as having started again too. The first status of a node this controller
//! sees only sets the node's baseline: a controller that restarts must not count every node's
//! lifetime as one burst. And what one node can add is capped at [`MAX_NODE_RATE`] per second of
//! the time it covers, so a broken or hostile counter cannot flatten the chart for everyone else.
//!
//! **Faults** are the interactions that committed nothing for a reason other than the handler
//! rejecting the message (`errors - rejections`): traps, timeouts, limit violations, worker
//! crashes — the module's or the node's fault rather than the device's, as the rollout gate
//! counts them.
//!
//! A bucket is shown once it is [`SETTLE_MS`] past its end: by then a node that reports every
//! 10 s has reported the part it covers.

use std::collections::{BTreeMap, HashMap};

use edgefleet_protocol::{ClassId, NodeId, NodeStatus, Sha256Digest};

/// One bucket's length, in ms.
pub const BUCKET_MS: u64 = 10_000;

/// Buckets kept: 15 minutes, enough to see a rollout step's effect; 90 × 16 bytes.
pub const BUCKETS: usize = 90;

/// How long after its end a bucket is shown, in ms (an agent's default status interval).
pub const SETTLE_MS: u64 = 10_000;

/// The most interactions per second one node is believed to run (a sandbox worker does some
/// 100,000 at best); a larger difference between two statuses is capped to this.
pub const MAX_NODE_RATE: f64 = 1_000_000.0;

/// Module versions whose counters are kept per node, the vanished ones included (a class that
/// comes back to a version within a run must not count its old interactions again).
const MAX_MODULES_PER_NODE: usize = 64;

/// One bucket of the series, as the page reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// The bucket's start, ms since the UNIX epoch.
    pub at_ms: u64,
    /// Interactions per second over the fleet, averaged over the bucket.
    pub interactions_per_s: f64,
    /// Faults per second over the fleet (see the module documentation).
    pub faults_per_s: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bucket {
    interactions: f64,
    faults: f64,
}

/// Counters of one module version on one node: (interactions, faults).
type Counters = BTreeMap<(ClassId, Sha256Digest), (u64, u64)>;

#[derive(Debug)]
struct Seen {
    /// The agent run (`started_at_ms`).
    run: u64,
    /// The status's own time, to tell a restart after it from a confused clock.
    updated_at_ms: u64,
    /// When it arrived, on the controller's clock.
    received_ms: u64,
    counters: Counters,
}

/// The ring and every node's last counters (one entry per node heard from).
#[derive(Debug)]
pub struct History {
    /// The index (`ms / BUCKET_MS`) of the first bucket: when this controller started.
    first: u64,
    /// The index of the newest bucket.
    head: u64,
    /// Bucket `i` is at `ring[i % BUCKETS]`.
    ring: [Bucket; BUCKETS],
    nodes: HashMap<NodeId, Seen>,
}

impl History {
    /// An empty series starting at `now_ms`.
    pub fn new(now_ms: u64) -> History {
        let first = now_ms / BUCKET_MS;
        History {
            first,
            head: first,
            ring: [Bucket::default(); BUCKETS],
            nodes: HashMap::new(),
        }
    }

    /// Adds what `report` (a node's status as the node table took it) says happened since the
    /// node's previous one.
    pub fn observe(&mut self, report: &NodeStatus, now_ms: u64) {
        self.advance(now_ms);
        let counters = counters(report);
        let Some(seen) = self.nodes.get_mut(&report.node) else {
            self.nodes.insert(
                report.node.clone(),
                Seen {
                    run: report.started_at_ms,
                    updated_at_ms: report.updated_at_ms,
                    received_ms: now_ms,
                    counters,
                },
            );
            return;
        };
        let (from_ms, grown) = if seen.run == report.started_at_ms {
            (seen.received_ms, growth(&seen.counters, &counters))
        } else if report.started_at_ms >= seen.updated_at_ms {
            // Restarted after the status held: everything it counts is new, and happened within
            // its run (at most since the previous status arrived).
            let run_ms = report.updated_at_ms.saturating_sub(report.started_at_ms);
            let from = now_ms.saturating_sub(run_ms).max(seen.received_ms);
            (from, growth(&Counters::new(), &counters))
        } else {
            // A run older than the held one after it: nothing to compare with.
            (now_ms, (0, 0))
        };
        let merged = if seen.run == report.started_at_ms {
            let mut merged = std::mem::take(&mut seen.counters);
            if merged.len() + counters.len() > MAX_MODULES_PER_NODE {
                merged.clear();
            }
            merged.extend(counters);
            merged
        } else {
            counters
        };
        *seen = Seen {
            run: report.started_at_ms,
            updated_at_ms: report.updated_at_ms,
            received_ms: now_ms,
            counters: merged,
        };
        let span_s = (now_ms.saturating_sub(from_ms) as f64 / 1000.0).max(1.0);
        let interactions = (grown.0 as f64).min(MAX_NODE_RATE * span_s);
        let faults = (grown.1 as f64).min(interactions);
        self.spread(from_ms, now_ms, interactions, faults);
    }

    /// The buckets shown at `now_ms`, oldest first: every settled bucket since this controller
    /// started, at most [`BUCKETS`].
    pub fn samples(&mut self, now_ms: u64) -> Vec<Sample> {
        self.advance(now_ms);
        // Bucket i ends at (i + 1) * BUCKET_MS; shown once that is SETTLE_MS ago.
        let Some(last) = (now_ms.saturating_sub(SETTLE_MS) / BUCKET_MS).checked_sub(1) else {
            return Vec::new();
        };
        let oldest = self.oldest();
        if last < oldest {
            return Vec::new();
        }
        let per_s = |count: f64| (count * 1000.0 / BUCKET_MS as f64 * 100.0).round() / 100.0;
        (oldest..=last.min(self.head))
            .map(|index| {
                let bucket = self.ring[index as usize % BUCKETS];
                Sample {
                    at_ms: index * BUCKET_MS,
                    interactions_per_s: per_s(bucket.interactions),
                    faults_per_s: per_s(bucket.faults),
                }
            })
            .collect()
    }

    /// The oldest bucket still in the ring.
    fn oldest(&self) -> u64 {
        self.first
            .max((self.head + 1).saturating_sub(BUCKETS as u64))
    }

    /// Moves the head to `now_ms`'s bucket, emptying the buckets it passes (at most the ring).
    fn advance(&mut self, now_ms: u64) {
        let index = now_ms / BUCKET_MS;
        if index <= self.head {
            return;
        }
        let start = (self.head + 1).max(index.saturating_sub(BUCKETS as u64 - 1));
        for i in start..=index {
            self.ring[i as usize % BUCKETS] = Bucket::default();
        }
        self.head = index;
    }

    /// Adds counts that happened evenly over `[from_ms, to_ms]` to the buckets that time
    /// overlaps; what falls before the ring or this controller's start is dropped.
    fn spread(&mut self, from_ms: u64, to_ms: u64, interactions: f64, faults: f64) {
        if interactions == 0.0 {
            return;
        }
        let oldest_ms = self.oldest() * BUCKET_MS;
        let to_ms = to_ms.min((self.head + 1) * BUCKET_MS - 1);
        if from_ms >= to_ms {
            if to_ms >= oldest_ms {
                let bucket = &mut self.ring[(to_ms / BUCKET_MS) as usize % BUCKETS];
                bucket.interactions += interactions;
                bucket.faults += faults;
            }
            return;
        }
        let span = (to_ms - from_ms) as f64;
        let mut at = from_ms.max(oldest_ms);
        while at < to_ms {
            let index = at / BUCKET_MS;
            let end = ((index + 1) * BUCKET_MS).min(to_ms);
            let share = (end - at) as f64 / span;
            let bucket = &mut self.ring[index as usize % BUCKETS];
            bucket.interactions += interactions * share;
            bucket.faults += faults * share;
            at = end;
        }
    }
}

fn counters(report: &NodeStatus) -> Counters {
    report
        .classes
        .iter()
        .flat_map(|class| {
            class.modules.iter().map(|m| {
                let faults = m.errors.saturating_sub(m.rejections);
                (
                    (class.class.clone(), m.module.sha256),
                    (m.interactions, faults),
                )
            })
        })
        .take(MAX_MODULES_PER_NODE)
        .collect()
}

/// What grew from `before` to `now`, summed; a counter that went down counts from zero.
fn growth(before: &Counters, now: &Counters) -> (u64, u64) {
    let grew = |now: u64, before: Option<u64>| match before {
        Some(before) if now >= before => now - before,
        _ => now,
    };
    now.iter()
        .map(|(key, &(interactions, faults))| {
            let previous = before.get(key);
            let interactions = grew(interactions, previous.map(|p| p.0));
            // Faults are part of the interactions.
            let faults = grew(faults, previous.map(|p| p.1)).min(interactions);
            (interactions, faults)
        })
        .fold((0, 0), |(i, f), (di, df)| {
            (i.saturating_add(di), f.saturating_add(df))
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use edgefleet_protocol::manifest::ModuleRef;
    use edgefleet_protocol::status::{ClassStatus, ModuleStats};

    /// Minute 0 of the tests' clock, on a bucket boundary.
    const T0: u64 = 1_800_000_000_000;

    fn status(node: &str, run: u64, at: u64, modules: &[(&str, u64, u64, u64)]) -> NodeStatus {
        let mut status =
            NodeStatus::last_will(NodeId::new(node).unwrap(), "0.1.0", "0.17.1", 1, run, at);
        status.state = edgefleet_protocol::NodeState::Online;
        let mut class = class_status("thermo");
        class.modules = modules
            .iter()
            .map(|&(name, interactions, errors, rejections)| ModuleStats {
                module: ModuleRef {
                    name: name.into(),
                    version: "1.0.0".into(),
                    sha256: Sha256Digest::of(name.as_bytes()),
                },
                interactions,
                errors,
                traps: 0,
                timeouts: 0,
                rejections,
                quarantined: false,
            })
            .collect();
        status.classes = vec![class];
        status
    }

    /// A class on a node with nothing active, no counters and no error (for the crate's tests).
    pub(crate) fn class_status(class: &str) -> ClassStatus {
        ClassStatus {
            class: ClassId::new(class).unwrap(),
            generation: Some(1),
            rollout: None,
            active: None,
            previous: None,
            pending: None,
            last_error: None,
            active_devices: 0,
            seen_devices: 0,
            interactions_per_sec: 0.0,
            modules: Vec::new(),
            shadow: None,
        }
    }

    /// Interactions and faults per bucket over the shown samples.
    fn counts(history: &mut History, now: u64) -> Vec<(f64, f64)> {
        history
            .samples(now)
            .iter()
            .map(|s| (s.interactions_per_s * 10.0, s.faults_per_s * 10.0))
            .collect()
    }

    #[test]
    fn a_first_status_is_a_baseline_and_later_ones_add_what_grew() {
        let mut history = History::new(T0);
        // The node has run for a long time before this controller started: not a burst.
        history.observe(&status("a", 1, T0, &[("v1", 1_000_000, 500, 100)]), T0);
        history.observe(
            &status("a", 1, T0 + 5_000, &[("v1", 1_000_050, 510, 105)]),
            T0 + 5_000,
        );
        let now = T0 + BUCKET_MS + SETTLE_MS;
        // 50 interactions; 10 errors of which 5 rejections: 5 faults.
        assert_eq!(counts(&mut history, now), vec![(50.0, 5.0)]);
    }

    #[test]
    fn a_difference_is_spread_over_the_time_it_covers() {
        let mut history = History::new(T0);
        history.observe(&status("a", 1, T0 + 5_000, &[("v1", 0, 0, 0)]), T0 + 5_000);
        // 200 interactions over 20 s: 5 s in bucket 0, 10 s in bucket 1, 5 s in bucket 2.
        history.observe(
            &status("a", 1, T0 + 25_000, &[("v1", 200, 20, 0)]),
            T0 + 25_000,
        );
        let now = T0 + 3 * BUCKET_MS + SETTLE_MS;
        assert_eq!(
            counts(&mut history, now),
            vec![(50.0, 5.0), (100.0, 10.0), (50.0, 5.0)]
        );
    }

    #[test]
    fn an_agent_restart_counts_from_zero_without_a_negative_or_huge_step() {
        let mut history = History::new(T0);
        history.observe(&status("a", 1, T0, &[("v1", 9_000, 0, 0)]), T0);
        history.observe(
            &status("a", 1, T0 + 5_000, &[("v1", 9_100, 0, 0)]),
            T0 + 5_000,
        );
        // Restarted at T0 + 12 s; by T0 + 14 s it ran 30 interactions.
        history.observe(
            &status("a", T0 + 12_000, T0 + 14_000, &[("v1", 30, 0, 0)]),
            T0 + 14_000,
        );
        // A counter that goes down within a run started again too.
        history.observe(
            &status("a", T0 + 12_000, T0 + 24_000, &[("v1", 7, 0, 0)]),
            T0 + 24_000,
        );
        let now = T0 + 3 * BUCKET_MS + SETTLE_MS;
        let counts = counts(&mut history, now);
        assert_eq!(counts.len(), 3, "{counts:?}");
        let total: f64 = counts.iter().map(|c| c.0).sum();
        assert!((total - 137.0).abs() < 1e-6, "{counts:?}");
        assert!(
            counts.iter().all(|c| c.0 >= 0.0 && c.0 <= 100.0),
            "{counts:?}"
        );
    }

    #[test]
    fn an_older_run_after_a_newer_one_adds_nothing() {
        let mut history = History::new(T0);
        history.observe(&status("a", 500, T0, &[("v1", 10, 0, 0)]), T0);
        history.observe(
            &status("a", 100, T0 + 1_000, &[("v1", 5_000, 0, 0)]),
            T0 + 1_000,
        );
        history.observe(
            &status("a", 100, T0 + 2_000, &[("v1", 5_010, 0, 0)]),
            T0 + 2_000,
        );
        assert_eq!(
            counts(&mut history, T0 + BUCKET_MS + SETTLE_MS),
            vec![(10.0, 0.0)]
        );
    }

    #[test]
    fn a_version_that_vanishes_and_comes_back_is_not_counted_twice() {
        let mut history = History::new(T0);
        history.observe(&status("a", 1, T0, &[("v1", 100, 0, 0)]), T0);
        history.observe(&status("a", 1, T0 + 1_000, &[("v2", 10, 0, 0)]), T0 + 1_000);
        history.observe(
            &status("a", 1, T0 + 2_000, &[("v1", 105, 0, 0), ("v2", 10, 0, 0)]),
            T0 + 2_000,
        );
        // v2 appeared within the run (10), v1 grew by 5.
        assert_eq!(
            counts(&mut history, T0 + BUCKET_MS + SETTLE_MS),
            vec![(15.0, 0.0)]
        );
    }

    #[test]
    fn a_hostile_counter_is_capped_and_faults_never_exceed_interactions() {
        let mut history = History::new(T0);
        history.observe(&status("evil", 1, T0, &[("v1", 0, 0, 0)]), T0);
        history.observe(
            &status("evil", 1, T0 + 2_000, &[("v1", u64::MAX, u64::MAX, 0)]),
            T0 + 2_000,
        );
        history.observe(&status("a", 1, T0, &[("v1", 0, 0, 0)]), T0);
        history.observe(&status("a", 1, T0 + 2_000, &[("v1", 0, 9, 0)]), T0 + 2_000);
        let counts = counts(&mut history, T0 + BUCKET_MS + SETTLE_MS);
        assert_eq!(counts, vec![(2.0 * MAX_NODE_RATE, 2.0 * MAX_NODE_RATE)]);
    }

    #[test]
    fn gaps_are_empty_buckets_and_the_ring_keeps_fifteen_minutes() {
        let mut history = History::new(T0);
        history.observe(&status("a", 1, T0, &[("v1", 0, 0, 0)]), T0);
        history.observe(&status("a", 1, T0 + 1_000, &[("v1", 10, 0, 0)]), T0 + 1_000);
        // Nothing for 5 minutes: 30 buckets, the first one with the 10.
        let now = T0 + 30 * BUCKET_MS + SETTLE_MS;
        let shown = counts(&mut history, now);
        assert_eq!(shown.len(), 30);
        assert_eq!(shown[0], (10.0, 0.0));
        assert!(shown[1..].iter().all(|&c| c == (0.0, 0.0)), "{shown:?}");
        // An hour later only the last 15 minutes remain, and nothing of the first bucket.
        let later = T0 + 3_600_000;
        history.observe(&status("a", 1, later, &[("v1", 10, 0, 0)]), later);
        let samples = history.samples(later + BUCKET_MS + SETTLE_MS);
        // The newest two buckets are not shown yet (the current one and the one settling).
        assert_eq!(samples.len(), BUCKETS - 2);
        assert!(
            samples.iter().all(|s| s.interactions_per_s == 0.0),
            "{samples:?}"
        );
        assert_eq!(samples.last().unwrap().at_ms, later);
        // The controller's own start bounds the series: nothing shown before it settles.
        assert!(History::new(T0).samples(T0 + 15_000).is_empty());
    }

    #[test]
    fn a_status_after_a_long_silence_adds_only_what_fits_in_the_ring() {
        let mut history = History::new(T0);
        history.observe(&status("a", 1, T0, &[("v1", 0, 0, 0)]), T0);
        // An hour away (the agent kept serving), then one status: 3,600 interactions over the
        // hour, of which only the share of the buckets shown is kept: 87 buckets of 10 s before it
        // (the status's own bucket starts at its arrival).
        let back = T0 + 3_600_000;
        history.observe(&status("a", 1, back, &[("v1", 3_600, 0, 0)]), back);
        let samples = history.samples(back + BUCKET_MS + SETTLE_MS);
        let total: f64 = samples.iter().map(|s| s.interactions_per_s * 10.0).sum();
        assert!((total - 870.0).abs() < 1.0, "{total}");
    }
}
