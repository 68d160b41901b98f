//! The correctness oracle: what each command a device receives should have been, from the
//! handler's own native Rust logic given the same class config, device state and message.
//!
//! A handler is a pure function of (config, state, message) — and, for the lock, the time — so
//! the oracle replays every message a device sends through the same crate the Wasm module is
//! built from, keeping the device state exactly as the agent persists it (the CBOR the guest
//! writes). The agent keeps each device's messages in order and answers at least once, so a
//! device's commands must arrive in the order of the messages that cause them:
//!
//! * the next command is compared with the answer of the oldest unanswered message; messages
//!   whose handler sends no command (an air-quality reading that changes nothing, every meter
//!   reading, a message the handler rejects) are passed over on the way;
//! * a command equal to the one received just before is a **duplicate** (a message handled
//!   twice, or a command delivered twice);
//! * a command that matches a message further on means the ones before it were **lost** (never
//!   handled, or their commands never delivered); if one of those answers turns up later after
//!   all, it is counted **out of order** instead;
//! * anything else is **wrong**;
//! * after the run, a message still waiting for its command is **lost**.
//!
//! Time: the lock decides with the agent's clock, which the device does not see. The agent read
//! it between the message's send and the command's arrival (same host), so the oracle accepts
//! the answer for any time in that interval, plus [`CLOCK_SLACK_MS`].

use std::collections::VecDeque;
use std::fmt;

use edgefleet_guest::cbor;

use super::Kind;

/// Clock skew tolerated between the device's and the agent's reading of the same clock.
const CLOCK_SLACK_MS: i64 = 5;

/// How many waiting messages a command may skip when it matches a later one.
const LOOKAHEAD: usize = 16;

/// Lost answers remembered, in case they arrive late (out of order).
const LATE_WINDOW: usize = 16;

/// A command, decoded: what the oracle compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    Thermostat(edgefleet_thermostat::Command),
    Lock(edgefleet_lock::Command),
    Ventilation(edgefleet_air_quality::Ventilation),
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Thermostat(c) => write!(f, "{} at {:.1} °C", c.mode.as_str(), c.setpoint_c),
            Answer::Lock(edgefleet_lock::Command::Unlock) => f.write_str("unlock"),
            Answer::Lock(edgefleet_lock::Command::Deny { remaining_attempts }) => {
                write!(f, "deny ({remaining_attempts} left)")
            }
            Answer::Lock(edgefleet_lock::Command::Lockout { until_ms }) => {
                write!(f, "lockout until {until_ms}")
            }
            Answer::Ventilation(v) => write!(f, "vent {v:?}"),
        }
    }
}

/// Decodes a command a device of `kind` received.
pub fn decode(kind: Kind, payload: &[u8]) -> Result<Answer, String> {
    let error = |e: edgefleet_guest::minicbor::decode::Error| format!("undecodable command: {e}");
    match kind {
        Kind::Thermostat => cbor::from_slice(payload)
            .map(Answer::Thermostat)
            .map_err(error),
        Kind::Lock => cbor::from_slice(payload).map(Answer::Lock).map_err(error),
        Kind::AirQuality => cbor::from_slice(payload)
            .map(Answer::Ventilation)
            .map_err(error),
        Kind::Meter => Err("a meter is never sent commands".into()),
    }
}

/// What one interaction does, as far as the device and the next interaction can tell.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    answer: Option<Answer>,
    /// The state persisted afterwards (`None`: unchanged).
    state: Option<Vec<u8>>,
}

/// Runs the handler's native logic on one message at `now_ms`. A rejected message changes
/// nothing and answers nothing, as in the sandbox.
fn step(kind: Kind, config: &[u8], state: Option<&[u8]>, message: &[u8], now_ms: i64) -> Step {
    const NOTHING: Step = Step {
        answer: None,
        state: None,
    };
    match kind {
        Kind::Thermostat => {
            let Ok(outcome) = edgefleet_thermostat::handle(message, config, state) else {
                return NOTHING;
            };
            let state = outcome
                .change
                .map(|t| encode(&edgefleet_thermostat::State { mode: t.mode }, 32));
            Step {
                answer: Some(Answer::Thermostat(outcome.command)),
                state,
            }
        }
        Kind::Lock => {
            let Ok(outcome) = edgefleet_lock::handle(message, config, state, now_ms) else {
                return NOTHING;
            };
            Step {
                answer: Some(Answer::Lock(outcome.command)),
                state: outcome.state.map(|s| encode(&s, 64)),
            }
        }
        Kind::AirQuality => {
            let Ok((state, outcome)) = edgefleet_air_quality::handle(message, config, state) else {
                return NOTHING;
            };
            Step {
                answer: outcome.ventilation.map(Answer::Ventilation),
                state: Some(encode(&state, edgefleet_air_quality::STATE_BYTES)),
            }
        }
        Kind::Meter => {
            let mut meter = edgefleet_meter::State::default();
            if meter.load(state).is_err()
                || edgefleet_meter::handle(message, config, &mut meter).is_err()
            {
                return NOTHING;
            }
            Step {
                answer: None,
                state: Some(encode(&meter, edgefleet_meter::STATE_BYTES)),
            }
        }
    }
}

fn encode<T: edgefleet_guest::minicbor::Encode<()>>(value: &T, capacity: usize) -> Vec<u8> {
    let mut buf = vec![0u8; capacity];
    // The guests encode into buffers of these sizes; a state that did not fit would have failed
    // the interaction there (Reject::Output), which the handlers' own tests rule out.
    cbor::to_slice(value, &mut buf)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// A message sent and not yet accounted for.
#[derive(Debug, Clone)]
struct Sent {
    seq: u64,
    payload: Vec<u8>,
    /// When it was sent, µs since the UNIX epoch.
    at_us: i64,
}

impl Sent {
    fn at_ms(&self) -> i64 {
        self.at_us / 1000
    }
}

/// What one event meant, for the counters and examples.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The expected command, `latency_us` after its message was sent.
    Answered {
        latency_us: u64,
    },
    /// A message whose handler answers nothing.
    Silent,
    Duplicated {
        detail: String,
    },
    Lost {
        detail: String,
    },
    /// A command that matched a message counted lost before.
    OutOfOrder {
        detail: String,
    },
    Wrong {
        detail: String,
    },
}

/// One device's oracle.
#[derive(Debug)]
pub struct Oracle {
    kind: Kind,
    config: std::sync::Arc<[u8]>,
    state: Option<Vec<u8>>,
    pending: VecDeque<Sent>,
    last: Option<Answer>,
    /// Answers counted lost, newest last, with the message they belonged to.
    late: VecDeque<(u64, Answer)>,
}

impl Oracle {
    pub fn new(kind: Kind, config: std::sync::Arc<[u8]>) -> Self {
        Oracle {
            kind,
            config,
            state: None,
            pending: VecDeque::new(),
            last: None,
            late: VecDeque::new(),
        }
    }

    /// A message the device published at `at_us` (µs since the UNIX epoch).
    pub fn sent(&mut self, seq: u64, payload: Vec<u8>, at_us: i64) {
        self.pending.push_back(Sent {
            seq,
            payload,
            at_us,
        });
    }

    /// The message's step at the time the agent handled it, given the answer it got: the time
    /// interval's two ends, and for a lockout the exact time its end implies.
    fn step_for(&self, sent: &Sent, received: Option<&Answer>, at_us: i64) -> Step {
        let at_ms = at_us / 1000;
        let run = |now| {
            step(
                self.kind,
                &self.config,
                self.state.as_deref(),
                &sent.payload,
                now,
            )
        };
        let first = run(sent.at_ms());
        if self.kind != Kind::Lock {
            return first;
        }
        let Some(received) = received else {
            return first;
        };
        let mut candidates = vec![sent.at_ms() - CLOCK_SLACK_MS, at_ms, at_ms + CLOCK_SLACK_MS];
        if let Answer::Lock(edgefleet_lock::Command::Lockout { until_ms }) = received {
            let lockout_ms = lock_config_lockout_ms(&self.config);
            candidates.push(until_ms.saturating_sub(lockout_ms));
        }
        let window = sent.at_ms() - CLOCK_SLACK_MS..=at_ms + CLOCK_SLACK_MS;
        std::iter::once(sent.at_ms())
            .chain(candidates.into_iter().filter(|now| window.contains(now)))
            .map(run)
            .find(|s| s.answer.as_ref() == Some(received))
            .unwrap_or(first)
    }

    fn apply(&mut self, step: Step) {
        if let Some(state) = step.state {
            self.state = Some(state);
        }
    }

    /// A command the device received at `at_us` (`Err`: it could not be decoded).
    pub fn received(&mut self, answer: Result<Answer, String>, at_us: i64) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let answer = match answer {
            Ok(answer) => answer,
            Err(detail) => {
                verdicts.push(Verdict::Wrong { detail });
                return verdicts;
            }
        };
        // Pass over the messages that answer nothing, up to the first that answers.
        while let Some(head) = self.pending.front() {
            let step = self.step_for(head, Some(&answer), at_us);
            let Some(expected) = step.answer else {
                self.pending.pop_front();
                self.apply(step);
                verdicts.push(Verdict::Silent);
                continue;
            };
            if expected == answer {
                let head = self.pending.pop_front().expect("front exists");
                self.apply(step);
                self.last = Some(answer);
                verdicts.push(Verdict::Answered {
                    latency_us: u64::try_from(at_us - head.at_us).unwrap_or(0),
                });
                return verdicts;
            }
            break;
        }
        if self.last == Some(answer) {
            verdicts.push(Verdict::Duplicated {
                detail: format!("{answer} again"),
            });
            return verdicts;
        }
        if let Some(at) = self.late.iter().position(|(_, a)| *a == answer) {
            let (seq, _) = self.late.remove(at).expect("position exists");
            verdicts.push(Verdict::OutOfOrder {
                detail: format!("{answer} for message #{seq} came after later messages' answers"),
            });
            return verdicts;
        }
        // A later message's answer: the ones before it were lost.
        let skip = (1..self.pending.len().min(LOOKAHEAD + 1)).find(|&j| {
            self.step_for(&self.pending[j], Some(&answer), at_us).answer == Some(answer)
        });
        if let Some(skip) = skip {
            for _ in 0..skip {
                let lost = self.pending.pop_front().expect("skip < len");
                let expected = self.step_for(&lost, None, at_us).answer;
                if let Some(expected) = expected {
                    self.late.push_back((lost.seq, expected));
                    if self.late.len() > LATE_WINDOW {
                        self.late.pop_front();
                    }
                    verdicts.push(Verdict::Lost {
                        detail: format!(
                            "message #{} (expected {expected}) got no answer",
                            lost.seq
                        ),
                    });
                } else {
                    verdicts.push(Verdict::Silent);
                }
            }
            let head = self.pending.pop_front().expect("skip < len");
            let step = self.step_for(&head, Some(&answer), at_us);
            self.apply(step);
            self.last = Some(answer);
            verdicts.push(Verdict::Answered {
                latency_us: u64::try_from(at_us - head.at_us).unwrap_or(0),
            });
            return verdicts;
        }
        // Wrong: count it against the oldest waiting message and go on from what it should
        // have done, so that one wrong answer is not counted again at every later message.
        let detail = match self.pending.pop_front() {
            Some(head) => {
                let step = self.step_for(&head, None, at_us);
                let expected = step.answer.expect("a silent head was passed over");
                self.apply(step);
                format!("message #{}: expected {expected}, got {answer}", head.seq)
            }
            None => format!("{answer} with no message waiting for an answer"),
        };
        self.last = Some(answer);
        verdicts.push(Verdict::Wrong { detail });
        verdicts
    }

    /// How many of the waiting messages expect a command (evaluated at `now_ms`).
    pub fn awaiting(&self, now_ms: i64) -> usize {
        let mut state = self.state.clone();
        let mut count = 0;
        for sent in &self.pending {
            let s = step(
                self.kind,
                &self.config,
                state.as_deref(),
                &sent.payload,
                now_ms.max(sent.at_ms()),
            );
            count += usize::from(s.answer.is_some());
            if let Some(next) = s.state {
                state = Some(next);
            }
        }
        count
    }

    /// The run is over: every waiting message that expects a command is lost.
    pub fn finish(&mut self, now_ms: i64) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        while let Some(sent) = self.pending.pop_front() {
            let step = step(
                self.kind,
                &self.config,
                self.state.as_deref(),
                &sent.payload,
                now_ms.max(sent.at_ms()),
            );
            match step.answer {
                Some(expected) => verdicts.push(Verdict::Lost {
                    detail: format!("message #{} (expected {expected}) never answered", sent.seq),
                }),
                None => verdicts.push(Verdict::Silent),
            }
            self.apply(step);
        }
        verdicts
    }
}

/// The lock class config's lockout, as the handler reads it.
fn lock_config_lockout_ms(config: &[u8]) -> i64 {
    let config: edgefleet_lock::Config<'_> = cbor::config_or_default(config).unwrap_or_default();
    i64::try_from(config.lockout_ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_air_quality as air_quality;
    use edgefleet_lock as lock;
    use edgefleet_thermostat as thermostat;
    use std::sync::Arc;

    const T0: i64 = 1_800_000_000_000_000;

    fn reading(temp_c: f32) -> Vec<u8> {
        let mut buf = [0u8; 64];
        cbor::to_slice(
            &thermostat::Reading {
                temp_c,
                setpoint_c: None,
            },
            &mut buf,
        )
        .unwrap()
        .to_vec()
    }

    fn mode(mode: thermostat::Mode) -> Result<Answer, String> {
        Ok(Answer::Thermostat(thermostat::Command {
            mode,
            setpoint_c: 21.0,
        }))
    }

    fn thermostat_oracle(temps: &[f32]) -> Oracle {
        let mut oracle = Oracle::new(Kind::Thermostat, Arc::from(Vec::new()));
        for (i, temp) in temps.iter().enumerate() {
            oracle.sent(i as u64 + 1, reading(*temp), T0 + i as i64 * 1000);
        }
        oracle
    }

    fn kinds(verdicts: &[Verdict]) -> Vec<&'static str> {
        verdicts
            .iter()
            .map(|v| match v {
                Verdict::Answered { .. } => "answered",
                Verdict::Silent => "silent",
                Verdict::Duplicated { .. } => "duplicated",
                Verdict::Lost { .. } => "lost",
                Verdict::OutOfOrder { .. } => "out of order",
                Verdict::Wrong { .. } => "wrong",
            })
            .collect()
    }

    use thermostat::Mode::{Cool, Heat, Idle};

    #[test]
    fn answers_in_order_are_answered_with_their_latency() {
        // Cold → heat; at the setpoint → idle (hysteresis); hot → cool.
        let mut oracle = thermostat_oracle(&[15.0, 21.0, 30.0]);
        let first = oracle.received(mode(Heat), T0 + 2500);
        assert_eq!(first, [Verdict::Answered { latency_us: 2500 }]);
        assert_eq!(kinds(&oracle.received(mode(Idle), T0 + 4000)), ["answered"]);
        assert_eq!(oracle.awaiting(0), 1);
        assert_eq!(kinds(&oracle.received(mode(Cool), T0 + 5000)), ["answered"]);
        assert!(oracle.finish(0).is_empty());
    }

    #[test]
    fn the_answer_depends_on_the_state_the_earlier_messages_left() {
        // 20.8 is inside the dead band: heating goes on only because the room was cold before.
        let mut oracle = thermostat_oracle(&[15.0, 20.8]);
        oracle.received(mode(Heat), T0 + 100);
        let verdicts = oracle.received(mode(Idle), T0 + 1100);
        assert_eq!(kinds(&verdicts), ["wrong"]);
        let Verdict::Wrong { detail } = &verdicts[0] else {
            unreachable!()
        };
        assert!(detail.contains("expected heat"), "{detail}");
    }

    #[test]
    fn a_command_again_is_a_duplicate() {
        let mut oracle = thermostat_oracle(&[15.0, 30.0]);
        oracle.received(mode(Heat), T0 + 100);
        assert_eq!(
            kinds(&oracle.received(mode(Heat), T0 + 200)),
            ["duplicated"]
        );
        assert_eq!(kinds(&oracle.received(mode(Cool), T0 + 1200)), ["answered"]);
    }

    #[test]
    fn a_skipped_answer_is_lost_and_out_of_order_if_it_comes_later() {
        let mut oracle = thermostat_oracle(&[15.0, 30.0, 30.0]);
        // The answer to #2 (cool, from idle as #1 never ran) arrives first.
        assert_eq!(
            kinds(&oracle.received(mode(Cool), T0 + 1500)),
            ["lost", "answered"]
        );
        assert_eq!(
            kinds(&oracle.received(mode(Heat), T0 + 1600)),
            ["out of order"]
        );
        assert_eq!(kinds(&oracle.finish(0)), ["lost"]);
    }

    #[test]
    fn one_wrong_answer_is_counted_once() {
        let mut oracle = thermostat_oracle(&[15.0, 15.0, 15.0]);
        assert_eq!(kinds(&oracle.received(mode(Cool), T0 + 100)), ["wrong"]);
        assert_eq!(kinds(&oracle.received(mode(Heat), T0 + 1100)), ["answered"]);
        assert_eq!(kinds(&oracle.received(mode(Heat), T0 + 2100)), ["answered"]);
        let undecodable = oracle.received(decode(Kind::Thermostat, b"\xff"), T0 + 2200);
        assert_eq!(kinds(&undecodable), ["wrong"]);
    }

    #[test]
    fn garbage_and_quiet_readings_are_passed_over() {
        let config = Arc::from(edgefleet_protocol::codec::encode(&serde_json::json!({
            "window": 1, "co2_limit": 1000.0
        })));
        let mut oracle = Oracle::new(Kind::AirQuality, config);
        let aq = |co2: f32| {
            let mut buf = [0u8; 64];
            cbor::to_slice(
                &air_quality::Reading {
                    pm25: None,
                    co2: Some(co2),
                },
                &mut buf,
            )
            .unwrap()
            .to_vec()
        };
        oracle.sent(1, aq(500.0), T0);
        oracle.sent(2, vec![0xff, 0x00], T0 + 1);
        oracle.sent(3, aq(1500.0), T0 + 2);
        oracle.sent(4, aq(1600.0), T0 + 3);
        assert_eq!(oracle.awaiting(0), 1);
        let on = Ok(Answer::Ventilation(air_quality::Ventilation::On));
        assert_eq!(
            kinds(&oracle.received(on, T0 + 10)),
            ["silent", "silent", "answered"]
        );
        assert_eq!(oracle.awaiting(0), 0);
        assert_eq!(kinds(&oracle.finish(0)), ["silent"]);
    }

    #[test]
    fn a_lockout_is_accepted_for_any_time_the_agent_may_have_read() {
        let config = Arc::from(edgefleet_protocol::codec::encode(&serde_json::json!({
            "allow": ["card-1"], "max_failed_attempts": 1, "lockout_ms": 10_000
        })));
        let mut oracle = Oracle::new(Kind::Lock, config);
        let attempt = |credential: &str| {
            let mut buf = [0u8; 64];
            cbor::to_slice(&lock::Attempt { credential }, &mut buf)
                .unwrap()
                .to_vec()
        };
        let sent_ms = T0 / 1000;
        oracle.sent(1, attempt("guess"), T0);
        oracle.sent(2, attempt("card-1"), T0 + 1000);
        // The agent read the clock 3 ms after the send.
        let until_ms = sent_ms + 3 + 10_000;
        let lockout = Ok(Answer::Lock(lock::Command::Lockout { until_ms }));
        assert_eq!(
            kinds(&oracle.received(lockout.clone(), T0 + 4000)),
            ["answered"]
        );
        // Still locked out: the allowed card gets the same lockout.
        assert_eq!(kinds(&oracle.received(lockout, T0 + 5000)), ["answered"]);
        // A lockout ending outside the interval is wrong.
        oracle.sent(3, attempt("card-1"), T0 + 20_000_000);
        oracle.sent(4, attempt("x"), T0 + 20_001_000);
        assert_eq!(
            kinds(&oracle.received(Ok(Answer::Lock(lock::Command::Unlock)), T0 + 20_000_500)),
            ["answered"]
        );
        let late = Ok(Answer::Lock(lock::Command::Lockout {
            until_ms: sent_ms + 20_001 + 10_000 + 500,
        }));
        assert_eq!(kinds(&oracle.received(late, T0 + 20_001_100)), ["wrong"]);
    }
}
