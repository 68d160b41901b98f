//! Door-lock handler: an allow-list of credentials, failed-attempt counting and timed lockout.
//!
//! The lock reports every credential presented at it (a card, a tag, a keypad code). A credential on
//! the class's allow-list unlocks the door and clears the failure count; any other is denied and
//! counted in device state. The `max_failed_attempts`-th consecutive failure locks the keypad out until
//! `now + lockout_ms` and publishes `event/lockout`. While locked out, every attempt, allowed or not, is
//! answered with the lockout and not counted. Each attempt gets exactly one command.
//!
//! | payload | keys |
//! |---|---|
//! | attempt (device → handler) | `cred`: text, the credential id |
//! | config | `allow`: array of text (default empty: nothing unlocks), `max_failed_attempts`: ≥ 1 (default 5), `lockout_ms`: (default 300000) |
//! | state | `failed`: consecutive failures, `locked_until_ms`: end of the lockout (ms since the epoch, 0 = none) |
//! | command (handler → device) | `action`: `"unlock"` \| `"deny"` \| `"lockout"`; with `deny`, `remaining`: failures left before a lockout; with `lockout`, `until_ms` |
//! | `event/lockout` | `cred`: the credential that caused it, `failed`: the failures counted, `until_ms` |
#![no_std]
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

#[cfg(target_arch = "wasm32")]
mod guest;

use edgefleet_guest::Reject;
use edgefleet_guest::cbor::{self, Field};
use edgefleet_guest::minicbor::data::Type;
use edgefleet_guest::minicbor::decode::{self, Decode, Decoder};
use edgefleet_guest::minicbor::encode::{self, Encode, Encoder, Write};

/// The topic of [`LockoutEvent`]s.
pub const LOCKOUT_TOPIC: &str = "event/lockout";

/// A credential presented at the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt<'a> {
    pub credential: &'a str,
}

cbor::map! {
    Attempt<'a> { "cred" => credential }
}

/// The allow-list of credential ids.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// A CBOR array of text, as decoded from a config (validated, scanned on lookup: no allocator).
    Cbor(&'a [u8]),
    /// A list, to build configs with.
    List(&'a [&'a str]),
}

impl Credentials<'_> {
    pub fn contains(&self, credential: &str) -> bool {
        match self {
            Credentials::List(ids) => ids.contains(&credential),
            // Validated when the config was decoded; a decoding error here would not unlock anything.
            Credentials::Cbor(array) => {
                let mut found = false;
                let scanned = for_each_text(&mut Decoder::new(array), |id| {
                    found |= id == credential;
                });
                scanned.is_ok() && found
            }
        }
    }
}

impl Default for Credentials<'_> {
    fn default() -> Self {
        Credentials::List(&[])
    }
}

/// Calls `f` with each element of an array of text (definite or indefinite length).
fn for_each_text<'b>(d: &mut Decoder<'b>, mut f: impl FnMut(&'b str)) -> Result<(), decode::Error> {
    let len = d.array()?;
    let mut seen = 0u64;
    loop {
        match len {
            Some(n) if seen == n => return Ok(()),
            None if d.datatype()? == Type::Break => {
                d.set_position(d.position() + 1);
                return Ok(());
            }
            _ => {}
        }
        f(d.str()?);
        seen += 1;
    }
}

/// The class config.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    pub allow: Credentials<'a>,
    /// Consecutive failures that trigger a lockout, ≥ 1.
    pub max_failed_attempts: u32,
    pub lockout_ms: u64,
}

cbor::map! {
    Config<'a> {
        "allow" => allow = Credentials::default(),
        "max_failed_attempts" => max_failed_attempts = 5,
        "lockout_ms" => lockout_ms = 300_000,
    }
    check Config::check
}

impl Config<'_> {
    fn check(&self) -> Result<(), &'static str> {
        if self.max_failed_attempts == 0 {
            return Err("max_failed_attempts must be ≥ 1");
        }
        Ok(())
    }
}

/// The device state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Consecutive failed attempts since the last unlock or lockout.
    pub failed_attempts: u32,
    /// End of the current lockout in ms since the epoch; 0 = none.
    pub locked_until_ms: i64,
}

cbor::map! {
    State {
        "failed" => failed_attempts = 0,
        "locked_until_ms" => locked_until_ms = 0,
    }
}

/// The command answering an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Unlock,
    Deny { remaining_attempts: u32 },
    Lockout { until_ms: i64 },
}

/// Published on [`LOCKOUT_TOPIC`] when a lockout starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutEvent<'a> {
    pub credential: &'a str,
    pub failed_attempts: u32,
    pub until_ms: i64,
}

cbor::map! {
    LockoutEvent<'a> {
        "cred" => credential,
        "failed" => failed_attempts,
        "until_ms" => until_ms,
    }
}

/// The outputs of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<'a> {
    pub command: Command,
    pub lockout: Option<LockoutEvent<'a>>,
    /// `Some` when the state changed and must be persisted.
    pub state: Option<State>,
}

/// Decides an attempt at time `now_ms`, updating `state` (see the crate docs).
pub fn decide<'a>(
    state: &mut State,
    attempt: Attempt<'a>,
    config: &Config<'_>,
    now_ms: i64,
) -> (Command, Option<LockoutEvent<'a>>) {
    if now_ms < state.locked_until_ms {
        return (
            Command::Lockout {
                until_ms: state.locked_until_ms,
            },
            None,
        );
    }
    state.locked_until_ms = 0;
    if config.allow.contains(attempt.credential) {
        state.failed_attempts = 0;
        return (Command::Unlock, None);
    }
    let failed_attempts = state.failed_attempts.saturating_add(1);
    if failed_attempts < config.max_failed_attempts {
        state.failed_attempts = failed_attempts;
        return (
            Command::Deny {
                remaining_attempts: config.max_failed_attempts - failed_attempts,
            },
            None,
        );
    }
    let lockout_ms = i64::try_from(config.lockout_ms).unwrap_or(i64::MAX);
    let until_ms = now_ms.saturating_add(lockout_ms);
    *state = State {
        failed_attempts: 0,
        locked_until_ms: until_ms,
    };
    (
        Command::Lockout { until_ms },
        Some(LockoutEvent {
            credential: attempt.credential,
            failed_attempts,
            until_ms,
        }),
    )
}

/// One interaction on the CBOR inputs at time `now_ms`.
pub fn handle<'m>(
    message: &'m [u8],
    config: &[u8],
    state: Option<&[u8]>,
    now_ms: i64,
) -> Result<Outcome<'m>, Reject> {
    let attempt: Attempt<'m> = cbor::from_slice(message).map_err(|_| Reject::Message)?;
    let config: Config<'_> = cbor::config_or_default(config).map_err(|_| Reject::Config)?;
    let before: State = match state {
        Some(bytes) => cbor::from_slice(bytes).map_err(|_| Reject::State)?,
        None => State::default(),
    };
    let mut after = before;
    let (command, lockout) = decide(&mut after, attempt, &config, now_ms);
    Ok(Outcome {
        command,
        lockout,
        state: (after != before).then_some(after),
    })
}

/// An array of text, kept as its CBOR bytes (checked when decoded).
impl<'b: 'a, 'a> Field<'b> for Credentials<'a> {
    fn decode_field(d: &mut Decoder<'b>) -> Result<Self, decode::Error> {
        let start = d.position();
        for_each_text(d, |_| {})?;
        let array = d
            .input()
            .get(start..d.position())
            .ok_or_else(decode::Error::end_of_input)?;
        Ok(Credentials::Cbor(array))
    }

    fn encode_field<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), encode::Error<W::Error>> {
        match self {
            Credentials::Cbor(array) => e
                .writer_mut()
                .write_all(array)
                .map_err(encode::Error::write),
            Credentials::List(ids) => {
                e.array(ids.len() as u64)?;
                for id in *ids {
                    e.str(id)?;
                }
                Ok(())
            }
        }
    }
}

cbor::minicbor_impls!(Credentials<'a>);

impl<C> Encode<C> for Command {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        _: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        match *self {
            Command::Unlock => e.map(1)?.str("action")?.str("unlock")?,
            Command::Deny { remaining_attempts } => e
                .map(2)?
                .str("action")?
                .str("deny")?
                .str("remaining")?
                .u32(remaining_attempts)?,
            Command::Lockout { until_ms } => e
                .map(2)?
                .str("action")?
                .str("lockout")?
                .str("until_ms")?
                .i64(until_ms)?,
        };
        Ok(())
    }
}

impl<'b, C> Decode<'b, C> for Command {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, decode::Error> {
        let at = d.position();
        let (mut action, mut remaining, mut until_ms) = (None, None, None);
        cbor::map_entries(d, |key, d| {
            match key {
                "action" => action = Some(d.str()?),
                "remaining" => remaining = Some(d.u32()?),
                "until_ms" => until_ms = Some(d.i64()?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        match action {
            Some("unlock") => Ok(Command::Unlock),
            Some("deny") => Ok(Command::Deny {
                remaining_attempts: remaining
                    .ok_or_else(|| cbor::missing("missing remaining", at))?,
            }),
            Some("lockout") => Ok(Command::Lockout {
                until_ms: until_ms.ok_or_else(|| cbor::missing("missing until_ms", at))?,
            }),
            Some(_) => Err(decode::Error::message("unknown action").at(at)),
            None => Err(cbor::missing("missing action", at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn encoded<T: Encode<()>>(value: &T) -> Vec<u8> {
        let mut buf = [0u8; 256];
        cbor::to_slice(value, &mut buf).unwrap().to_vec()
    }

    const STAFF: &[&str] = &["card-0001", "card-0002"];

    fn config(max_failed_attempts: u32, lockout_ms: u64) -> Vec<u8> {
        encoded(&Config {
            allow: Credentials::List(STAFF),
            max_failed_attempts,
            lockout_ms,
        })
    }

    /// Presents `credential` at `now_ms` through `handle`, persisting the state as the agent would.
    fn present(
        state: &mut Option<Vec<u8>>,
        config: &[u8],
        credential: &str,
        now_ms: i64,
    ) -> Command {
        let message = encoded(&Attempt { credential });
        let outcome = handle(&message, config, state.as_deref(), now_ms).unwrap();
        if let Some(new) = outcome.state {
            *state = Some(encoded(&new));
        }
        if outcome.lockout.is_some() {
            assert!(matches!(outcome.command, Command::Lockout { .. }));
        }
        outcome.command
    }

    #[test]
    fn an_allowed_credential_unlocks_and_an_unknown_one_is_denied() {
        let config = config(3, 60_000);
        let mut state = None;
        assert_eq!(
            present(&mut state, &config, "card-0002", 1_000),
            Command::Unlock
        );
        assert_eq!(state, None, "nothing to remember");
        assert_eq!(
            present(&mut state, &config, "card-9999", 2_000),
            Command::Deny {
                remaining_attempts: 2
            }
        );
        assert_eq!(
            cbor::from_slice::<State>(state.as_deref().unwrap()).unwrap(),
            State {
                failed_attempts: 1,
                locked_until_ms: 0
            }
        );
    }

    #[test]
    fn the_nth_failure_locks_out_until_the_lockout_ends() {
        let config = config(3, 60_000);
        let mut state = None;
        present(&mut state, &config, "x", 1_000);
        present(&mut state, &config, "y", 2_000);
        let message = encoded(&Attempt { credential: "z" });
        let outcome = handle(&message, &config, state.as_deref(), 3_000).unwrap();
        assert_eq!(outcome.command, Command::Lockout { until_ms: 63_000 });
        assert_eq!(
            outcome.lockout,
            Some(LockoutEvent {
                credential: "z",
                failed_attempts: 3,
                until_ms: 63_000
            })
        );
        assert_eq!(
            outcome.state,
            Some(State {
                failed_attempts: 0,
                locked_until_ms: 63_000
            })
        );
        state = Some(encoded(&outcome.state.unwrap()));

        // Locked out: even an allowed credential gets the lockout, and nothing is counted.
        let allowed = encoded(&Attempt {
            credential: "card-0001",
        });
        let during = handle(&allowed, &config, state.as_deref(), 62_999).unwrap();
        assert_eq!(during.command, Command::Lockout { until_ms: 63_000 });
        assert_eq!((during.lockout, during.state), (None, None));

        // At the end of the lockout the allowed credential unlocks and the lockout is cleared.
        let after = handle(&allowed, &config, state.as_deref(), 63_000).unwrap();
        assert_eq!(after.command, Command::Unlock);
        assert_eq!(after.state, Some(State::default()));
    }

    #[test]
    fn an_unlock_resets_the_failure_count() {
        let config = config(2, 1_000);
        let mut state = None;
        present(&mut state, &config, "x", 0);
        assert_eq!(
            present(&mut state, &config, "card-0001", 1),
            Command::Unlock
        );
        assert_eq!(
            present(&mut state, &config, "x", 2),
            Command::Deny {
                remaining_attempts: 1
            }
        );
        assert_eq!(
            present(&mut state, &config, "x", 3),
            Command::Lockout { until_ms: 1_003 }
        );
    }

    #[test]
    fn a_single_failure_locks_out_with_max_one() {
        let config = config(1, 10);
        let mut state = None;
        assert_eq!(
            present(&mut state, &config, "x", 5),
            Command::Lockout { until_ms: 15 }
        );
    }

    #[test]
    fn an_empty_config_denies_everything_with_the_defaults() {
        let message = encoded(&Attempt {
            credential: "card-0001",
        });
        let outcome = handle(&message, &[], None, 0).unwrap();
        assert_eq!(
            outcome.command,
            Command::Deny {
                remaining_attempts: 4
            }
        );
    }

    #[test]
    fn decoded_allow_lists_are_scanned_including_indefinite_arrays() {
        let bytes = config(3, 1);
        let config: Config<'_> = cbor::from_slice(&bytes).unwrap();
        assert!(config.allow.contains("card-0001"));
        assert!(config.allow.contains("card-0002"));
        assert!(!config.allow.contains("card-0003"));
        assert!(!config.allow.contains(""));
        // ["a", "bc"] of indefinite length.
        let indefinite = [0x9f, 0x61, b'a', 0x62, b'b', b'c', 0xff];
        let allow: Credentials<'_> = cbor::from_slice(&indefinite).unwrap();
        assert!(allow.contains("bc") && allow.contains("a") && !allow.contains("b"));
    }

    #[test]
    fn a_lockout_far_in_the_future_saturates() {
        let mut state = State::default();
        let config = Config {
            max_failed_attempts: 1,
            lockout_ms: u64::MAX,
            ..Config::default()
        };
        let (command, _) = decide(&mut state, Attempt { credential: "x" }, &config, 1);
        assert_eq!(command, Command::Lockout { until_ms: i64::MAX });
    }

    #[test]
    fn malformed_inputs_are_rejected() {
        let message = encoded(&Attempt { credential: "x" });
        // {"code": "1234"}: not a credential.
        assert_eq!(
            handle(b"\xa1\x64code\x641234", &[], None, 0),
            Err(Reject::Message)
        );
        // {"cred": 1234}
        assert_eq!(
            handle(b"\xa1\x64cred\x19\x04\xd2", &[], None, 0),
            Err(Reject::Message)
        );
        // {"allow": ["a", 1]}
        assert_eq!(
            handle(&message, b"\xa1\x65allow\x82\x61a\x01", None, 0),
            Err(Reject::Config)
        );
        assert_eq!(
            handle(&message, &config(0, 1), None, 0),
            Err(Reject::Config)
        );
        // {"failed": -1}
        assert_eq!(
            handle(&message, &[], Some(b"\xa1\x66failed\x20"), 0),
            Err(Reject::State)
        );
    }

    #[test]
    fn payloads_round_trip() {
        for command in [
            Command::Unlock,
            Command::Deny {
                remaining_attempts: 2,
            },
            Command::Lockout {
                until_ms: 1_700_000_000_000,
            },
        ] {
            assert_eq!(
                cbor::from_slice::<Command>(&encoded(&command)).unwrap(),
                command
            );
        }
        assert_eq!(
            encoded(&Command::Unlock),
            b"\xa1\x66action\x66unlock".to_vec()
        );
        let event = LockoutEvent {
            credential: "card-7",
            failed_attempts: 5,
            until_ms: 42,
        };
        let bytes = encoded(&event);
        assert_eq!(cbor::from_slice::<LockoutEvent<'_>>(&bytes).unwrap(), event);
        let config_bytes = config(4, 9);
        let config: Config<'_> = cbor::from_slice(&config_bytes).unwrap();
        assert_eq!(
            encoded(&config),
            config_bytes,
            "a decoded config re-encodes identically"
        );
    }
}
