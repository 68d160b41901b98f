//! Fuzzes topic parsing (`Topic::parse`), class-relative topics (`ClassTopic::new`,
//! `is_class_topic`), topic filters (`TopicFilter::new`, `check_filter`) and MQTT filter matching
//! (`filter_matches`). The input is `<first>` or `<first>\n<second>`: `first` is tried as a topic,
//! a class topic and a filter, `second` as the topic matched against `first`.
//!
//! Properties: nothing panics; a parsed topic renders back to exactly the input (one canonical
//! spelling) and parses again to itself; each of the namespace's subscription filters matches a
//! parsed topic exactly when it is of the filter's kind; a valid class topic renders to the input,
//! has 1 to 3 identifier levels and matches itself and `#`; `TopicFilter::new` agrees with
//! `check_filter`; on a valid filter and class topic, `filter_matches` agrees with a level-by-level
//! model of MQTT matching.

#![no_main]

use edgefleet_protocol::id::check_id;
use edgefleet_protocol::topic::{
    self, ALL_DEVICES_UP_FILTER, MAX_CLASS_TOPIC_LEVELS, NODE_EVENT_FILTER, NODE_STATUS_FILTER,
    NODE_UPSTREAM_FILTER, check_filter, filter_matches, is_class_topic,
};
use edgefleet_protocol::{ClassTopic, Topic, TopicFilter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, second) = text.split_once('\n').unwrap_or((text, text));
    check_topic(first);
    check_class_topic(first);
    check_filter_against(first, second);
});

fn check_topic(text: &str) {
    let Ok(parsed) = Topic::parse(text) else {
        return;
    };
    assert_eq!(parsed.to_string(), text, "not the canonical spelling");
    assert_eq!(text.parse::<Topic>().as_ref(), Ok(&parsed));
    let expected = [
        (
            ALL_DEVICES_UP_FILTER,
            matches!(parsed, Topic::DeviceUp { .. }),
        ),
        (NODE_STATUS_FILTER, matches!(parsed, Topic::Status { .. })),
        (NODE_EVENT_FILTER, matches!(parsed, Topic::Event { .. })),
        (
            NODE_UPSTREAM_FILTER,
            matches!(parsed, Topic::Upstream { .. }),
        ),
    ];
    for (filter, matches) in expected {
        assert_eq!(filter_matches(filter, text), matches, "{filter} vs {text}");
    }
    let own_filter = match &parsed {
        Topic::DeviceUp { class, .. } => Some(topic::device_up_filter(class)),
        Topic::DeviceCommand { class, .. } => Some(topic::device_command_filter(class)),
        Topic::Assignment { node, .. } => Some(topic::node_assignment_filter(node)),
        Topic::ModuleChunk { module, .. } => Some(topic::module_chunk_filter(module)),
        _ => None,
    };
    if let Some(filter) = own_filter {
        assert!(filter_matches(&filter, text), "{filter} misses {text}");
    }
}

fn check_class_topic(text: &str) {
    let result = ClassTopic::new(text);
    assert_eq!(is_class_topic(text), result.is_ok());
    let Ok(class_topic) = result else {
        return;
    };
    assert_eq!(class_topic.as_str(), text);
    assert_eq!(class_topic.to_string(), text);
    let levels: Vec<&str> = class_topic.levels().collect();
    assert!((1..=MAX_CLASS_TOPIC_LEVELS).contains(&levels.len()));
    assert!(levels.iter().all(|level| check_id(level).is_ok()));
    assert_eq!(levels.join("/"), text);
    // A class topic is a filter of literal levels that matches only itself.
    let literal = TopicFilter::new(text).expect("a class topic is a valid filter");
    assert!(literal.matches(&class_topic));
    assert!(TopicFilter::new("#").unwrap().matches(&class_topic));
}

fn check_filter_against(filter: &str, topic: &str) {
    let valid = check_filter(filter).is_ok();
    assert_eq!(TopicFilter::new(filter).is_ok(), valid);
    let matched = filter_matches(filter, topic);
    if valid && is_class_topic(topic) {
        let filter_levels: Vec<&str> = filter.split('/').collect();
        let topic_levels: Vec<&str> = topic.split('/').collect();
        assert_eq!(
            matched,
            model_matches(&filter_levels, &topic_levels),
            "{filter:?} vs {topic:?}"
        );
        let typed = TopicFilter::new(filter).unwrap();
        assert_eq!(typed.matches(&ClassTopic::new(topic).unwrap()), matched);
    }
}

/// MQTT matching, one level at a time: `+` takes one level, a final `#` takes the rest (also none).
fn model_matches(filter: &[&str], topic: &[&str]) -> bool {
    match (filter.split_first(), topic.split_first()) {
        (Some((&"#", rest)), _) => rest.is_empty(),
        (Some((&"+", filter_rest)), Some((_, topic_rest))) => {
            model_matches(filter_rest, topic_rest)
        }
        (Some((f, filter_rest)), Some((t, topic_rest))) => {
            f == t && model_matches(filter_rest, topic_rest)
        }
        (None, None) => true,
        _ => false,
    }
}
