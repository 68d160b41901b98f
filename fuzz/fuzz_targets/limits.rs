//! Fuzzes per-class limits as an agent receives them in an assignment: the CBOR decoder for
//! `ClassLimits` (missing fields take their defaults), `ClassLimits::validate` and
//! `ClassLimits::allows_topic`. The first input byte picks a mode. Even: the rest is CBOR. Odd: the
//! rest builds the limits field by field (`arbitrary`), so the validator sees values near and across
//! every boundary, not only what survives CBOR mutation.
//!
//! Properties: nothing panics; decoded limits round-trip through CBOR; `validate` accepts exactly
//! the limits a model accepts (every field in its range, looked up in `LIMIT_RANGES` by the field's
//! name, at most `MAX_ALLOWED_TOPICS` filters, each one valid) and, when it refuses for a number,
//! names an offending field with its value and range; `allows_topic` holds exactly for valid class topics
//! that one of the filters matches.

#![no_main]

use edgefleet_protocol::codec;
use edgefleet_protocol::limits::{LIMIT_RANGES, LimitsError, MAX_ALLOWED_TOPICS};
use edgefleet_protocol::topic::{check_filter, filter_matches, is_class_topic};
use edgefleet_protocol::{Assignment, ClassLimits, SignedKind};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (limits, topics) = if mode % 2 == 0 {
        let Ok(limits) = codec::decode::<ClassLimits>(rest, Assignment::MAX_PAYLOAD_LEN) else {
            return;
        };
        let again: ClassLimits =
            codec::decode(&codec::encode(&limits), usize::MAX).expect("round trip");
        assert_eq!(again, limits);
        let topics = ["telemetry", "event/door", "a/b/c"]
            .map(String::from)
            .to_vec();
        (limits, topics)
    } else {
        let Ok(built) = build(Unstructured::new(rest)) else {
            return;
        };
        built
    };
    check_validate(&limits);
    for topic in topics.iter().chain(&limits.allowed_topics) {
        let expected = is_class_topic(topic)
            && limits
                .allowed_topics
                .iter()
                .any(|filter| filter_matches(filter, topic));
        assert_eq!(limits.allows_topic(topic), expected, "{topic:?}");
    }
});

/// Limits and topics to ask about, from unstructured bytes.
fn build(mut u: Unstructured) -> arbitrary::Result<(ClassLimits, Vec<String>)> {
    let limits = ClassLimits {
        max_memory_pages: u.arbitrary()?,
        time_budget_ms: u.arbitrary()?,
        max_outputs: u.arbitrary()?,
        max_output_bytes: u.arbitrary()?,
        max_state_bytes: u.arbitrary()?,
        max_module_bytes: u.arbitrary()?,
        allowed_topics: u.arbitrary()?,
        device_rate_per_s: u.arbitrary()?,
        device_burst: u.arbitrary()?,
    };
    Ok((limits, Vec::<String>::arbitrary_take_rest(u)?))
}

fn check_validate(limits: &ClassLimits) {
    let fields = [
        ("max_memory_pages", limits.max_memory_pages),
        ("time_budget_ms", limits.time_budget_ms),
        ("max_outputs", limits.max_outputs),
        ("max_output_bytes", limits.max_output_bytes),
        ("max_state_bytes", limits.max_state_bytes),
        ("max_module_bytes", limits.max_module_bytes),
        ("device_rate_per_s", limits.device_rate_per_s),
        ("device_burst", limits.device_burst),
    ];
    assert_eq!(fields.len(), LIMIT_RANGES.len(), "a limit without a range");
    let range_of = |name: &str| {
        let (_, min, max) = LIMIT_RANGES
            .iter()
            .find(|(field, _, _)| *field == name)
            .unwrap_or_else(|| panic!("no range for {name}"));
        (*min, *max)
    };
    let out_of_range = fields.iter().find(|(name, value)| {
        let (min, max) = range_of(name);
        !(min..=max).contains(&u64::from(*value))
    });
    let bad_filter = limits
        .allowed_topics
        .iter()
        .find(|filter| check_filter(filter).is_err());
    let result = limits.validate();
    match (&result, out_of_range) {
        (
            Err(LimitsError::OutOfRange {
                field,
                value,
                min,
                max,
            }),
            Some(_),
        ) => {
            let offending = fields.iter().find(|(name, _)| name == field);
            let (_, actual) = offending.unwrap_or_else(|| panic!("unknown field {field}"));
            assert_eq!(u64::from(*actual), *value, "{field}");
            assert_eq!((*min, *max), range_of(field), "{field}");
            assert!(
                !(*min..=*max).contains(value),
                "{field} = {value} is in range"
            );
        }
        (_, Some((name, value))) => panic!("{name} = {value} is out of range, yet {result:?}"),
        (Err(LimitsError::TooManyTopics { count }), None) => {
            assert_eq!(*count, limits.allowed_topics.len());
            assert!(*count > MAX_ALLOWED_TOPICS);
        }
        (Err(LimitsError::BadTopicFilter { source, .. }), None) => {
            assert!(limits.allowed_topics.len() <= MAX_ALLOWED_TOPICS);
            let filter = bad_filter.expect("a refused filter is invalid");
            assert_eq!(check_filter(filter).as_ref(), Err(source));
        }
        (Err(e), None) => panic!("unexpected refusal: {e}"),
        (Ok(()), None) => {
            assert!(limits.allowed_topics.len() <= MAX_ALLOWED_TOPICS);
            assert_eq!(bad_filter, None);
        }
    }
}
