//! Shadow runs: a second module version that runs beside a class's active one on the same
//! interactions, whose outputs are compared and never acted upon (`Assignment::shadow`).
//!
//! * [`ShadowRun`] is one class's shadow: its module once loaded (`assignments` fetches and loads
//!   it like a handler, after the handler is active — the handler never waits for it), its
//!   counters and its newest divergences, reported as the class's `ShadowReport`.
//! * [`run_beside`] is called by a lane with the batch it just ran: the same interactions (same
//!   message, same device state before, the interaction's time) on the shadow module, which has its
//!   own config and limits and its own breaker entry in the sandbox (a shadow fault is never the
//!   active version's). It runs in a task of its own *after* the active batch returned, so the
//!   lane commits, sends commands and acks without waiting for it; its outcomes are only compared
//!   ([`compare`]) and dropped — no state, outbox entry, command or log line of a shadow is ever
//!   committed or sent.
//! * **The active path comes first**: a batch is skipped (counted `skipped`) when the shadow is not
//!   loaded yet or is quarantined, when no sandbox worker is idle, or while another shadow batch is
//!   in flight. At most one shadow batch runs at a time, so device traffic waits behind at most
//!   one.
//! * Agreement: the same commands, the same upstream messages (topic and payload) and the same new
//!   state, or both failed. A quarantine or an unavailable sandbox on either side is not behaviour:
//!   skipped. Details are short and readable: CBOR payloads as JSON-like text, other bytes in hex,
//!   cut to `MAX_DIVERGENCE_DETAIL_BYTES`.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use edgefleet_protocol::ClassLimits;
use edgefleet_protocol::assignment::HandlerSpec;
use edgefleet_protocol::digest::Sha256Digest;
use edgefleet_protocol::manifest::ModuleRef;
use edgefleet_protocol::status::{
    Divergence, MAX_DIVERGENCE_DETAIL_BYTES, MAX_DIVERGENCE_EXAMPLES, ShadowReport,
};
use edgefleet_sandbox::{Interaction, InteractionError, ModuleHandle, Outcome};

use crate::clock::now_ms;
use crate::context::Context;
use crate::metrics::OutcomeLabels;

/// Payloads longer than this are shown as the hex of their first bytes.
const MAX_SHOWN_PAYLOAD: usize = 256;

/// One class's shadow version (see the module documentation).
#[derive(Debug)]
pub struct ShadowRun {
    pub reference: ModuleRef,
    config: Vec<u8>,
    limits: ClassLimits,
    module: RwLock<Option<ModuleHandle>>,
    compared: AtomicU64,
    agreed: AtomicU64,
    skipped: AtomicU64,
    examples: Mutex<VecDeque<Divergence>>,
}

impl ShadowRun {
    /// A shadow of `spec`, not loaded yet.
    pub fn new(spec: &HandlerSpec) -> ShadowRun {
        ShadowRun {
            reference: spec.module.reference(),
            config: spec.config.clone(),
            limits: spec.limits.clone(),
            module: RwLock::new(None),
            compared: AtomicU64::new(0),
            agreed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            examples: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether `spec` is this shadow (same module, config and limits): a new assignment naming it
    /// keeps its module and counters.
    pub fn is(&self, spec: &HandlerSpec) -> bool {
        self.reference.sha256 == spec.module.sha256
            && self.config == spec.config
            && self.limits == spec.limits
    }

    pub fn sha256(&self) -> Sha256Digest {
        self.reference.sha256
    }

    /// Its module, once loaded.
    pub fn module(&self) -> Option<ModuleHandle> {
        self.module
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_module(&self, module: ModuleHandle) {
        *self.module.write().unwrap_or_else(|p| p.into_inner()) = Some(module);
    }

    /// What the status reports of it.
    pub fn report(&self) -> ShadowReport {
        let examples = self.examples.lock().unwrap_or_else(|p| p.into_inner());
        ShadowReport {
            module: self.reference.clone(),
            compared: self.compared.load(Ordering::Relaxed),
            agreed: self.agreed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            examples: examples.iter().cloned().collect(),
        }
    }

    fn skip(&self, ctx: &Context, n: u64) {
        self.skipped.fetch_add(n, Ordering::Relaxed);
        ctx.metrics
            .shadow_interactions
            .get_or_create(&OutcomeLabels::new("skipped"))
            .inc_by(n);
    }

    fn record(&self, ctx: &Context, device: &str, comparison: Comparison) {
        let outcome = match comparison {
            Comparison::Skipped => return self.skip(ctx, 1),
            Comparison::Agreed => {
                self.agreed.fetch_add(1, Ordering::Relaxed);
                "agreed"
            }
            Comparison::Diverged(detail) => {
                let mut examples = self.examples.lock().unwrap_or_else(|p| p.into_inner());
                if examples.len() == MAX_DIVERGENCE_EXAMPLES {
                    examples.pop_front();
                }
                examples.push_back(Divergence {
                    at_ms: now_ms(),
                    device: device.to_string(),
                    detail,
                });
                "diverged"
            }
        };
        self.compared.fetch_add(1, Ordering::Relaxed);
        ctx.metrics
            .shadow_interactions
            .get_or_create(&OutcomeLabels::new(outcome))
            .inc();
    }
}

/// Runs `run`'s shadow on `items` (the batch the active version just ran, whose results are
/// `active`, in the same order) in a task of its own, or counts them skipped; never waits.
/// `busy` is the lanes' shared "a shadow batch is in flight" flag.
pub fn run_beside(
    ctx: &Arc<Context>,
    busy: &Arc<AtomicBool>,
    run: Arc<ShadowRun>,
    items: Vec<Interaction>,
    active: Vec<Result<Outcome, InteractionError>>,
) {
    let n = items.len() as u64;
    if n == 0 {
        return;
    }
    let Some(module) = run.module() else {
        return run.skip(ctx, n);
    };
    if ctx.sandbox.is_quarantined(&module)
        || !ctx.sandbox.has_idle_worker()
        || busy.swap(true, Ordering::AcqRel)
    {
        return run.skip(ctx, n);
    }
    let (ctx, busy) = (ctx.clone(), busy.clone());
    // Not awaited by anyone: it only counts, and it ends within the shadow's time budget.
    tokio::spawn(async move {
        let devices: Vec<String> = items.iter().map(|i| i.device.clone()).collect();
        let sandbox = ctx.sandbox.clone();
        let shadow = tokio::task::spawn_blocking(move || sandbox.run_batch(&module, items)).await;
        busy.store(false, Ordering::Release);
        let Ok(shadow) = shadow else {
            return run.skip(&ctx, n);
        };
        for ((device, active), shadow) in devices.iter().zip(&active).zip(&shadow) {
            run.record(&ctx, device, compare(active, shadow));
        }
    });
}

/// How a shadow's result compared with the active version's.
#[derive(Debug, PartialEq, Eq)]
enum Comparison {
    Agreed,
    Diverged(String),
    /// One side did not run (quarantined, sandbox unavailable): nothing to compare.
    Skipped,
}

fn compare(
    active: &Result<Outcome, InteractionError>,
    shadow: &Result<Outcome, InteractionError>,
) -> Comparison {
    let not_run = |r: &Result<Outcome, InteractionError>| {
        matches!(
            r,
            Err(InteractionError::Quarantined { .. } | InteractionError::Unavailable { .. })
        )
    };
    if not_run(active) || not_run(shadow) {
        return Comparison::Skipped;
    }
    let detail = match (active, shadow) {
        (Err(_), Err(_)) => return Comparison::Agreed,
        (Ok(_), Err(e)) => format!("active succeeded, shadow failed: {e}"),
        (Err(e), Ok(_)) => format!("active failed ({e}), shadow succeeded"),
        (Ok(a), Ok(s)) => {
            let mut parts = Vec::new();
            if a.commands != s.commands {
                parts.push(format!(
                    "commands: active {} shadow {}",
                    payloads(a.commands.iter().map(|c| c.as_slice())),
                    payloads(s.commands.iter().map(|c| c.as_slice()))
                ));
            }
            if a.upstream != s.upstream {
                let upstream = |o: &Outcome| {
                    let shown: Vec<String> = o
                        .upstream
                        .iter()
                        .map(|u| format!("{} {}", u.topic, payload(&u.payload)))
                        .collect();
                    format!("[{}]", shown.join(", "))
                };
                parts.push(format!(
                    "upstream: active {} shadow {}",
                    upstream(a),
                    upstream(s)
                ));
            }
            if a.new_state != s.new_state {
                let state = |o: &Outcome| match &o.new_state {
                    Some(state) => payload(state),
                    None => "unchanged".to_string(),
                };
                parts.push(format!("state: active {} shadow {}", state(a), state(s)));
            }
            if parts.is_empty() {
                return Comparison::Agreed;
            }
            parts.join("; ")
        }
    };
    Comparison::Diverged(truncate(detail, MAX_DIVERGENCE_DETAIL_BYTES))
}

fn payloads<'a>(items: impl Iterator<Item = &'a [u8]>) -> String {
    let shown: Vec<String> = items.map(payload).collect();
    format!("[{}]", shown.join(", "))
}

/// A payload for humans: CBOR as JSON-like text, anything else (or anything long) as hex.
fn payload(bytes: &[u8]) -> String {
    if bytes.len() > MAX_SHOWN_PAYLOAD {
        return format!("0x{}… ({} bytes)", hex::encode(&bytes[..32]), bytes.len());
    }
    cbor_text(bytes).unwrap_or_else(|| format!("0x{}", hex::encode(bytes)))
}

/// `text` cut to at most `max` bytes, on a character boundary, marked with `…` when cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// One CBOR item filling `bytes`, as JSON-like text; `None` if `bytes` is not exactly that
/// (indefinite lengths are not shown: the handlers' SDK never writes them).
fn cbor_text(bytes: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut pos = 0;
    cbor_item(bytes, &mut pos, &mut out, 0)?;
    (pos == bytes.len()).then_some(out)
}

fn cbor_item(b: &[u8], pos: &mut usize, out: &mut String, depth: u32) -> Option<()> {
    if depth > 16 {
        return None;
    }
    let initial = *b.get(*pos)?;
    *pos += 1;
    let (major, info) = (initial >> 5, initial & 0x1f);
    if major == 7 {
        // Floats as their own precision prints them: a single 20.8 is "20.8", not its double.
        let float = match info {
            20..=22 => {
                out.push_str(["false", "true", "null"][usize::from(info - 20)]);
                return Some(());
            }
            25 => half(u16::from_be_bytes(take(b, pos, 2)?.try_into().ok()?)).to_string(),
            26 => f32::from_be_bytes(take(b, pos, 4)?.try_into().ok()?).to_string(),
            27 => f64::from_be_bytes(take(b, pos, 8)?.try_into().ok()?).to_string(),
            _ => return None,
        };
        out.push_str(&float);
        return Some(());
    }
    let arg = match info {
        0..=23 => u64::from(info),
        24 => u64::from(take(b, pos, 1)?[0]),
        25 => u64::from(u16::from_be_bytes(take(b, pos, 2)?.try_into().ok()?)),
        26 => u64::from(u32::from_be_bytes(take(b, pos, 4)?.try_into().ok()?)),
        27 => u64::from_be_bytes(take(b, pos, 8)?.try_into().ok()?),
        _ => return None,
    };
    match major {
        0 => {
            let _ = write!(out, "{arg}");
        }
        1 => {
            let _ = write!(out, "{}", -1 - i128::from(arg));
        }
        2 => {
            let bytes = take(b, pos, usize::try_from(arg).ok()?)?;
            let _ = write!(out, "h'{}'", hex::encode(bytes));
        }
        3 => {
            let text = std::str::from_utf8(take(b, pos, usize::try_from(arg).ok()?)?).ok()?;
            let _ = write!(out, "{text:?}");
        }
        4 | 5 => {
            // Each item takes a byte at least: a count beyond what is left is not CBOR.
            let count = usize::try_from(arg).ok()?;
            if count > b.len() - *pos {
                return None;
            }
            out.push(if major == 4 { '[' } else { '{' });
            for i in 0..count {
                if i > 0 {
                    out.push_str(", ");
                }
                cbor_item(b, pos, out, depth + 1)?;
                if major == 5 {
                    out.push_str(": ");
                    cbor_item(b, pos, out, depth + 1)?;
                }
            }
            out.push(if major == 4 { ']' } else { '}' });
        }
        // A tag: its content is what matters to a reader.
        _ => cbor_item(b, pos, out, depth + 1)?,
    }
    Some(())
}

fn take<'a>(b: &'a [u8], pos: &mut usize, len: usize) -> Option<&'a [u8]> {
    let end = pos.checked_add(len)?;
    let bytes = b.get(*pos..end)?;
    *pos = end;
    Some(bytes)
}

/// An IEEE 754 half-precision float (exact as an `f32`).
fn half(bits: u16) -> f32 {
    let (exponent, mantissa) = (i32::from((bits >> 10) & 0x1f), f32::from(bits & 0x3ff));
    let magnitude = match exponent {
        0 => mantissa * 2f32.powi(-24),
        31 if mantissa == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        _ => (mantissa + 1024.0) * 2f32.powi(exponent - 25),
    };
    if bits & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_sandbox::interaction::Upstream;
    use serde_bytes::ByteBuf;

    fn outcome(command: &[u8], state: Option<&[u8]>) -> Outcome {
        Outcome {
            commands: vec![ByteBuf::from(command.to_vec())],
            upstream: vec![Upstream {
                topic: "telemetry".into(),
                payload: vec![1],
            }],
            new_state: state.map(|s| ByteBuf::from(s.to_vec())),
            ..Outcome::default()
        }
    }

    #[test]
    fn cbor_is_shown_as_json_like_text() {
        // {"mode": "heat", "setpoint_c": 21.5 (half), "n": -3, "ok": true, "b": h'01ff', "a": [1, 300]}
        let bytes = [
            0xa6, 0x64, b'm', b'o', b'd', b'e', 0x64, b'h', b'e', b'a', b't', 0x6a, b's', b'e',
            b't', b'p', b'o', b'i', b'n', b't', b'_', b'c', 0xf9, 0x4d, 0x60, 0x61, b'n', 0x22,
            0x62, b'o', b'k', 0xf5, 0x61, b'b', 0x42, 0x01, 0xff, 0x61, b'a', 0x82, 0x01, 0x19,
            0x01, 0x2c,
        ];
        assert_eq!(
            cbor_text(&bytes).unwrap(),
            r#"{"mode": "heat", "setpoint_c": 21.5, "n": -3, "ok": true, "b": h'01ff', "a": [1, 300]}"#
        );
        assert_eq!(cbor_text(&[0xfa, 0x41, 0xa6, 0x66, 0x66]).unwrap(), "20.8");
        assert_eq!(cbor_text(&[0xf9, 0xc4, 0x00]).unwrap(), "-4");
        // Not one CBOR item: hex.
        assert_eq!(payload(&[0x01, 0x02]), "0x0102");
        assert_eq!(
            payload(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            "0x9bffffffffffffffff"
        );
        assert_eq!(payload(&[0x62, 0xff, 0xfe]), "0x62fffe", "not UTF-8");
        assert!(payload(&[0; 300]).ends_with("… (300 bytes)"));
        let deep = [0x81; 40];
        assert!(cbor_text(&deep).is_none(), "nesting is bounded");
    }

    #[test]
    fn same_outputs_or_both_failing_agree_and_anything_else_diverges() {
        let trap = || {
            Err(InteractionError::Trap {
                message: "unreachable".into(),
            })
        };
        let ok = |c: &[u8], s: Option<&[u8]>| Ok(outcome(c, s));
        assert_eq!(
            compare(&ok(b"\x01", None), &ok(b"\x01", None)),
            Comparison::Agreed
        );
        assert_eq!(compare(&trap(), &trap()), Comparison::Agreed);
        let quarantined = Err(InteractionError::Quarantined {
            module: "m".into(),
            retry_in_ms: 1,
        });
        assert_eq!(
            compare(&ok(b"\x01", None), &quarantined),
            Comparison::Skipped
        );
        let Comparison::Diverged(detail) = compare(&ok(b"\x01", Some(b"\x02")), &ok(b"\x03", None))
        else {
            panic!("different commands and state diverge");
        };
        assert_eq!(
            detail,
            "commands: active [1] shadow [3]; state: active 2 shadow unchanged"
        );
        let Comparison::Diverged(detail) = compare(&ok(b"\x01", None), &trap()) else {
            panic!("a failing shadow diverges");
        };
        assert!(
            detail.starts_with("active succeeded, shadow failed"),
            "{detail}"
        );
        let long = "é".repeat(MAX_DIVERGENCE_DETAIL_BYTES);
        let cut = truncate(long, MAX_DIVERGENCE_DETAIL_BYTES);
        assert!(cut.len() <= MAX_DIVERGENCE_DETAIL_BYTES && cut.ends_with('…'));
    }
}
