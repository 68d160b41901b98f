//! Counting what the devices saw, and the tables and JSON a run ends with.
//!
//! Counters are atomics shared by every device task (no lock per message); answer latencies go
//! into a log-bucketed histogram (1/16 of an octave per bucket, so a percentile is within about
//! 4.5 % of the true value) with the exact maximum beside it. Examples of every kind of failure
//! are kept, a few per class, so that a failed run shows what went wrong and on which device.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use edgefleet_protocol::id::ClassId;
use serde::Serialize;

use super::Kind;
use super::oracle::Verdict;

/// Examples kept per class and kind of failure.
const EXAMPLES: usize = 5;

/// Buckets per octave of latency.
const PER_OCTAVE: f64 = 16.0;
/// Up to 2^32 µs (71 minutes).
const BUCKETS: usize = 32 * PER_OCTAVE as usize + 1;

/// Answer latencies, µs.
pub(super) struct Histogram {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }

    fn bucket(us: u64) -> usize {
        (((us as f64 + 1.0).log2() * PER_OCTAVE).floor() as usize).min(BUCKETS - 1)
    }

    /// The upper bound of a bucket, µs.
    fn upper(bucket: usize) -> f64 {
        (2f64.powf((bucket + 1) as f64 / PER_OCTAVE) - 1.0).max(0.0)
    }

    fn record(&self, us: u64) {
        self.buckets[Self::bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The `q` quantile (0..=1) in ms, `None` without samples.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let max = self.max_us.load(Ordering::Relaxed) as f64;
                return Some(Self::upper(bucket).min(max) / 1000.0);
            }
        }
        None
    }

    /// Forgets every sample (a benchmark's measuring window starts).
    fn reset(&self) {
        for bucket in &self.buckets {
            bucket.store(0, Ordering::Relaxed);
        }
        self.max_us.store(0, Ordering::Relaxed);
    }

    fn max_ms(&self) -> Option<f64> {
        let count: u64 = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        (count > 0).then(|| self.max_us.load(Ordering::Relaxed) as f64 / 1000.0)
    }
}

/// One failure, to show.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Example {
    pub kind: &'static str,
    pub device: String,
    pub detail: String,
}

/// One class's counters.
pub(super) struct ClassStats {
    kind: Kind,
    class: ClassId,
    pub(super) devices: AtomicUsize,
    pub(super) sent: AtomicU64,
    answered: AtomicU64,
    silent: AtomicU64,
    wrong: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    out_of_order: AtomicU64,
    latency: Histogram,
    examples: Mutex<Vec<Example>>,
}

impl ClassStats {
    pub(super) fn new(kind: Kind, class: ClassId) -> Self {
        ClassStats {
            kind,
            class,
            devices: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            silent: AtomicU64::new(0),
            wrong: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            latency: Histogram::new(),
            examples: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn count(&self, device: &str, verdict: Verdict) {
        let (counter, kind, detail) = match verdict {
            Verdict::Answered { latency_us } => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                self.latency.record(latency_us);
                return;
            }
            Verdict::Silent => {
                self.silent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Verdict::Wrong { detail } => (&self.wrong, "wrong", detail),
            Verdict::Lost { detail } => (&self.lost, "lost", detail),
            Verdict::Duplicated { detail } => (&self.duplicated, "duplicated", detail),
            Verdict::OutOfOrder { detail } => (&self.out_of_order, "out of order", detail),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.examples.lock().unwrap_or_else(|e| e.into_inner());
        if examples.iter().filter(|e| e.kind == kind).count() < EXAMPLES {
            examples.push(Example {
                kind,
                device: device.to_string(),
                detail,
            });
        }
    }

    /// Latencies from now on only (the counters are kept: compare snapshots for those).
    pub(super) fn reset_latency(&self) {
        self.latency.reset();
    }

    fn row(&self) -> ClassRow {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClassRow {
            class: self.class.to_string(),
            kind: self.kind.name(),
            devices: self.devices.load(Ordering::Relaxed),
            sent: load(&self.sent),
            answered: load(&self.answered),
            silent: load(&self.silent),
            wrong: load(&self.wrong),
            lost: load(&self.lost),
            duplicated: load(&self.duplicated),
            out_of_order: load(&self.out_of_order),
            p50_ms: self.latency.quantile_ms(0.50),
            p99_ms: self.latency.quantile_ms(0.99),
            max_ms: self.latency.max_ms(),
            examples: self
                .examples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Counters not tied to a class.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) connected: AtomicUsize,
    pub(super) connect_failures: AtomicU64,
    pub(super) disconnects: AtomicU64,
    /// Commands the broker sent again (DUP) that the device had already received: ignored.
    pub(super) resent: AtomicU64,
    /// Messages not sent because the client's queue was full (the broker is slower than the plan).
    pub(super) deferred: AtomicU64,
    pub(super) flood_sent: AtomicU64,
    pub(super) flood_answered: AtomicU64,
    pub(super) garbage_sent: AtomicU64,
    pub(super) impostor_sent: AtomicU64,
    pub(super) impostor_received: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(super) fn set_last_error(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }
}

/// One class's line of the final table.
#[derive(Debug, Clone, Serialize)]
pub struct ClassRow {
    pub class: String,
    pub kind: &'static str,
    pub devices: usize,
    pub sent: u64,
    /// Commands that were the expected answer.
    pub answered: u64,
    /// Messages whose handler answers nothing (checked only through later answers).
    pub silent: u64,
    pub wrong: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub examples: Vec<Example>,
}

impl ClassRow {
    fn failures(&self) -> u64 {
        self.wrong + self.lost + self.duplicated + self.out_of_order
    }
}

/// What the misbehaving devices did.
#[derive(Debug, Clone, Serialize)]
pub struct MisbehaviourRow {
    pub flood_sent: u64,
    /// Commands flooders got (the agent answers what fits their rate budget).
    pub flood_answered: u64,
    pub garbage_sent: u64,
    pub impostor_sent: u64,
    /// Commands that reached an impostor: the broker's ACL let another device's commands
    /// through. Must be 0.
    pub impostor_received: u64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub elapsed_s: f64,
    pub devices: usize,
    pub connected: usize,
    pub connect_failures: u64,
    pub disconnects: u64,
    /// Commands the broker sent again after a reconnect (it had not seen the device's ack),
    /// recognised by the device and not counted as answers.
    pub resent: u64,
    pub deferred: u64,
    /// The last connection error, to say why devices do not connect.
    pub last_error: Option<String>,
    pub classes: Vec<ClassRow>,
    pub misbehaviour: MisbehaviourRow,
}

impl Snapshot {
    pub fn sent(&self) -> u64 {
        self.classes.iter().map(|c| c.sent).sum()
    }

    pub fn answered(&self) -> u64 {
        self.classes.iter().map(|c| c.answered).sum()
    }

    /// Wrong, lost, duplicated and out-of-order answers, all classes.
    pub fn failures(&self) -> u64 {
        self.classes.iter().map(ClassRow::failures).sum()
    }

    /// One line of live progress.
    pub fn progress_line(&self, previous: Option<&Snapshot>) -> String {
        let rate = |now: u64, before: Option<u64>, then: f64| match before {
            Some(before) if self.elapsed_s > then => {
                format!("{:.0}/s", (now - before) as f64 / (self.elapsed_s - then))
            }
            _ => "-".into(),
        };
        let then = previous.map_or(0.0, |p| p.elapsed_s);
        let p99 = self
            .classes
            .iter()
            .filter_map(|c| c.p99_ms)
            .fold(None::<f64>, |a, b| Some(a.map_or(b, |a| a.max(b))));
        format!(
            "{:>5.0}s  connected {}/{}  sent {} ({})  answered {} ({})  wrong {}  lost {}  dup {}  p99 {}",
            self.elapsed_s,
            self.connected,
            self.devices,
            self.sent(),
            rate(self.sent(), previous.map(Snapshot::sent), then),
            self.answered(),
            rate(self.answered(), previous.map(Snapshot::answered), then),
            self.classes.iter().map(|c| c.wrong).sum::<u64>(),
            self.classes.iter().map(|c| c.lost).sum::<u64>(),
            self.classes.iter().map(|c| c.duplicated).sum::<u64>(),
            p99.map_or("-".into(), |ms| format!("{ms:.1} ms")),
        )
    }
}

/// The final result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How long the devices sent.
    pub sent_for_s: f64,
    /// How long the answers still due were waited for.
    pub drained_for_s: f64,
    #[serde(flatten)]
    pub at_end: Snapshot,
}

impl Report {
    /// No wrong, lost, duplicated or out-of-order answer, and nothing leaked to an impostor.
    pub fn clean(&self) -> bool {
        self.at_end.failures() == 0 && self.at_end.misbehaviour.impostor_received == 0
    }

    /// The final table, the misbehaving devices and the examples, for a person.
    pub fn table(&self) -> String {
        let s = &self.at_end;
        let mut out = String::new();
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        let _ = writeln!(
            out,
            "{:<16} {:<12} {:>7} {:>9} {:>9} {:>8} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8}",
            "CLASS",
            "KIND",
            "DEVICES",
            "SENT",
            "ANSWERED",
            "SILENT",
            "WRONG",
            "LOST",
            "DUP",
            "ORDER",
            "P50 MS",
            "P99 MS",
            "MAX MS"
        );
        for c in &s.classes {
            let _ = writeln!(
                out,
                "{:<16} {:<12} {:>7} {:>9} {:>9} {:>8} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8}",
                c.class,
                c.kind,
                c.devices,
                c.sent,
                c.answered,
                c.silent,
                c.wrong,
                c.lost,
                c.duplicated,
                c.out_of_order,
                ms(c.p50_ms),
                ms(c.p99_ms),
                ms(c.max_ms)
            );
        }
        let m = &s.misbehaviour;
        if m.flood_sent + m.garbage_sent + m.impostor_sent > 0 {
            let _ = writeln!(
                out,
                "misbehaving: flooders sent {} (answered {}), garbage sent {}, impostors sent {} \
                 (received {})",
                m.flood_sent,
                m.flood_answered,
                m.garbage_sent,
                m.impostor_sent,
                m.impostor_received
            );
        }
        let _ = writeln!(
            out,
            "sent for {:.1} s, then waited {:.1} s for answers; {} connection failures, {} \
             disconnects, {} commands resent by the broker (ignored), {} messages deferred \
             (client queue full)",
            self.sent_for_s,
            self.drained_for_s,
            s.connect_failures,
            s.disconnects,
            s.resent,
            s.deferred
        );
        if let Some(error) = &s.last_error {
            let _ = writeln!(out, "last connection error: {error}");
        }
        for c in &s.classes {
            for e in &c.examples {
                let _ = writeln!(out, "  {} {} {}: {}", c.class, e.kind, e.device, e.detail);
            }
        }
        let _ = writeln!(
            out,
            "oracle: {}",
            if self.clean() {
                "clean — every command was the handler's answer, once, in order".to_string()
            } else {
                format!(
                    "{} wrong, lost, duplicated or out-of-order answers; {} commands leaked to \
                     impostors",
                    s.failures(),
                    m.impostor_received
                )
            }
        );
        out
    }
}

pub(super) fn snapshot(
    classes: &[ClassStats],
    counters: &Counters,
    devices: usize,
    elapsed: Duration,
) -> Snapshot {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Snapshot {
        elapsed_s: elapsed.as_secs_f64(),
        devices,
        connected: counters.connected.load(Ordering::Relaxed),
        connect_failures: load(&counters.connect_failures),
        disconnects: load(&counters.disconnects),
        resent: load(&counters.resent),
        deferred: load(&counters.deferred),
        last_error: counters
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        classes: classes.iter().map(ClassStats::row).collect(),
        misbehaviour: MisbehaviourRow {
            flood_sent: load(&counters.flood_sent),
            flood_answered: load(&counters.flood_answered),
            garbage_sent: load(&counters.garbage_sent),
            impostor_sent: load(&counters.impostor_sent),
            impostor_received: load(&counters.impostor_received),
        },
    }
}

pub(super) fn report(
    classes: &[ClassStats],
    counters: &Counters,
    devices: usize,
    sent_for: Duration,
    drained_for: Duration,
) -> Report {
    Report {
        sent_for_s: sent_for.as_secs_f64(),
        drained_for_s: drained_for.as_secs_f64(),
        at_end: snapshot(classes, counters, devices, sent_for + drained_for),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(us * 100);
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 - 500.0).abs() / 500.0 < 0.05, "p50 {p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.05, "p99 {p99}");
        assert_eq!(h.max_ms(), Some(1000.0));
        assert_eq!(Histogram::new().quantile_ms(0.5), None);
    }

    #[test]
    fn a_reset_keeps_only_later_latencies() {
        let stats = ClassStats::new(Kind::Thermostat, ClassId::new("thermo").unwrap());
        for _ in 0..100 {
            stats.count(
                "d",
                Verdict::Answered {
                    latency_us: 900_000,
                },
            );
        }
        stats.reset_latency();
        assert_eq!((stats.row().p50_ms, stats.row().max_ms), (None, None));
        stats.count("d", Verdict::Answered { latency_us: 2000 });
        let row = stats.row();
        assert_eq!(row.answered, 101, "the counters are kept");
        assert_eq!(row.p99_ms.map(|v| v.round()), Some(2.0));
        assert_eq!(row.max_ms, Some(2.0));
    }

    #[test]
    fn failures_keep_a_few_examples_each() {
        let stats = ClassStats::new(Kind::Thermostat, ClassId::new("thermo").unwrap());
        for i in 0..20 {
            stats.count(
                "d",
                Verdict::Lost {
                    detail: format!("#{i}"),
                },
            );
        }
        stats.count("d", Verdict::Wrong { detail: "w".into() });
        stats.count("d", Verdict::Answered { latency_us: 2000 });
        let row = stats.row();
        assert_eq!((row.lost, row.wrong, row.answered), (20, 1, 1));
        assert_eq!(row.examples.len(), EXAMPLES + 1);
        assert_eq!(row.p50_ms.map(|v| v.round()), Some(2.0));
    }
}
