//! Every message type through the codec, through its topic, and through hostile bytes; and the
//! controller → agent path of an assignment and its module, end to end.

use edgefleet_protocol::assignment::{AssignmentError, MAX_CONFIG_BYTES};
use edgefleet_protocol::codec::{self, CodecError};
use edgefleet_protocol::manifest::MIN_CHUNK_SIZE;
use edgefleet_protocol::signing::SignatureError;
use edgefleet_protocol::status::{
    Divergence, ErrorReport, LinkState, LinkStatus, ModuleStats, OutboxStatus, PendingModule,
    ShadowReport,
};
use edgefleet_protocol::wire::WireError;
use edgefleet_protocol::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn node() -> NodeId {
    NodeId::new("edge-7").unwrap()
}

fn class() -> ClassId {
    ClassId::new("thermostat").unwrap()
}

fn device() -> DeviceId {
    DeviceId::new("th-0001").unwrap()
}

fn blob() -> Vec<u8> {
    (0..(2 * MIN_CHUNK_SIZE as usize + 333))
        .map(|i| (i % 253) as u8)
        .collect()
}

fn manifest() -> ModuleManifest {
    let mut m = ModuleManifest::for_blob(
        "thermostat",
        "1.3.0",
        GUEST_ABI_VERSION,
        &blob(),
        MIN_CHUNK_SIZE,
    )
    .unwrap();
    m.built_at_ms = Some(1_750_000_000_000);
    m
}

fn assignment() -> Assignment {
    Assignment {
        node: node(),
        class: class(),
        generation: 1_750_000_000_123,
        issued_at_ms: 1_750_000_000_123,
        shadow: None,
        rollout: Some(Rollout {
            id: "thermostat-4".into(),
            stage: RolloutStage::Canary,
        }),
        handler: Some(HandlerSpec {
            module: manifest(),
            config: codec::encode(&std::collections::BTreeMap::from([("setpoint", 21)])),
            limits: ClassLimits::default(),
        }),
    }
}

fn status() -> NodeStatus {
    let module = manifest().reference();
    let previous = ModuleRef {
        name: "thermostat".into(),
        version: "1.2.9".into(),
        sha256: Sha256Digest::of(b"previous"),
    };
    NodeStatus {
        node: node(),
        state: NodeState::Online,
        protocol_version: PROTOCOL_VERSION,
        agent_version: "0.1.0".into(),
        wasmedge_version: "0.17.1".into(),
        guest_abi_version: GUEST_ABI_VERSION,
        started_at_ms: 1_750_000_000_000,
        updated_at_ms: 1_750_000_060_000,
        uplink: LinkStatus {
            state: LinkState::Connected,
            since_ms: 1_750_000_000_500,
            reconnects: 2,
            last_error: Some("connection reset".into()),
        },
        device_link: LinkStatus {
            state: LinkState::Connecting,
            since_ms: 1_750_000_050_000,
            reconnects: 0,
            last_error: None,
        },
        outbox: OutboxStatus {
            depth: 12,
            capacity: 100_000,
            dropped: 0,
            oldest_at_ms: Some(1_750_000_059_000),
        },
        active_devices: 950,
        seen_devices: 1000,
        interactions_per_sec: 812.5,
        classes: vec![ClassStatus {
            class: class(),
            generation: Some(1_750_000_000_123),
            shadow: Some(ShadowReport {
                module: previous.clone(),
                compared: 900,
                agreed: 899,
                skipped: 3,
                examples: vec![Divergence {
                    at_ms: 1_750_000_054_000,
                    device: "t-17".into(),
                    detail: "commands: active [{\"heat\":true}], shadow []".into(),
                }],
            }),
            rollout: Some(Rollout {
                id: "thermostat-4".into(),
                stage: RolloutStage::Wave(2),
            }),
            active: Some(module.clone()),
            previous: Some(previous.clone()),
            pending: Some(PendingModule {
                module: module.clone(),
                generation: 1_750_000_000_200,
                received_chunks: 1,
                total_chunks: 3,
            }),
            last_error: Some(ErrorReport {
                at_ms: 1_750_000_055_000,
                message: "trap: unreachable".into(),
            }),
            active_devices: 950,
            seen_devices: 1000,
            interactions_per_sec: 812.5,
            modules: vec![
                ModuleStats {
                    module,
                    interactions: 48_000,
                    errors: 12,
                    traps: 3,
                    timeouts: 1,
                    rejections: 8,
                    quarantined: false,
                },
                ModuleStats {
                    module: previous,
                    interactions: 10,
                    errors: 10,
                    traps: 10,
                    timeouts: 0,
                    rejections: 0,
                    quarantined: true,
                },
            ],
        }],
    }
}

fn event() -> AgentEvent {
    AgentEvent::new(
        1_750_000_001_000,
        node(),
        EventKind::ModuleQuarantined,
        "10 traps in 10 interactions",
    )
    .with_class(class())
    .with_device(device())
    .with_module(Sha256Digest::of(b"previous"))
    .with_generation(41)
}

fn upstream() -> UpstreamMessage {
    UpstreamMessage {
        node: node(),
        class: class(),
        device: device(),
        topic: ClassTopic::new("event/anomaly").unwrap(),
        module: manifest().sha256,
        payload: vec![0xa1, 0x61, 0x74, 0xf9, 0x4d, 0x00],
        at_ms: 1_750_000_002_000,
        epoch: 1_749_000_000_000,
        seq: 123_456,
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) -> Vec<u8> {
    let bytes = codec::encode(value);
    assert_eq!(&codec::decode::<T>(&bytes, bytes.len()).unwrap(), value);
    bytes
}

#[test]
fn every_message_round_trips() {
    round_trip(&status());
    round_trip(&NodeStatus::last_will(node(), "0.1.0", "0.17.1", 1, 1, 2));
    round_trip(&event());
    round_trip(&upstream());
    round_trip(&assignment());
    round_trip(&Assignment {
        rollout: None,
        handler: None,
        ..assignment()
    });
    round_trip(&manifest());
    round_trip(&ClassLimits::default());
    round_trip(&RolloutStage::Wave(3));
    round_trip(&EventKind::OutboxFull);
    let key = SigningKey::generate().unwrap();
    round_trip(&key.sign(&assignment()));
    round_trip(&key.sign(&manifest()));
}

#[test]
fn node_messages_must_agree_with_their_topic() {
    let other = NodeId::new("edge-8").unwrap();
    let bytes = codec::encode(&status());
    let own = Topic::Status { node: node() };
    assert_eq!(NodeStatus::decode_on(&own, &bytes), Ok(status()));
    assert_eq!(
        NodeStatus::decode_on(
            &Topic::Status {
                node: other.clone()
            },
            &bytes
        ),
        Err(WireError::TopicMismatch {
            arrived_on: "ef/v1/node/edge-8/status".into(),
            belongs_on: "ef/v1/node/edge-7/status".into(),
        })
    );
    assert!(matches!(
        NodeStatus::decode_on(&Topic::Event { node: node() }, &bytes),
        Err(WireError::TopicMismatch { .. })
    ));

    let bytes = codec::encode(&event());
    assert_eq!(AgentEvent::decode_on(&event().topic(), &bytes), Ok(event()));
    assert!(AgentEvent::decode_on(&Topic::Event { node: other }, &bytes).is_err());

    let bytes = codec::encode(&upstream());
    let topic = Topic::parse("ef/v1/node/edge-7/up/thermostat/th-0001/event/anomaly").unwrap();
    assert_eq!(UpstreamMessage::decode_on(&topic, &bytes), Ok(upstream()));
    let wrong_device =
        Topic::parse("ef/v1/node/edge-7/up/thermostat/th-0002/event/anomaly").unwrap();
    assert!(matches!(
        UpstreamMessage::decode_on(&wrong_device, &bytes),
        Err(WireError::TopicMismatch { .. })
    ));
    let wrong_topic = Topic::parse("ef/v1/node/edge-7/up/thermostat/th-0001/telemetry").unwrap();
    assert!(UpstreamMessage::decode_on(&wrong_topic, &bytes).is_err());

    let mut big = upstream();
    big.payload = vec![0; UpstreamMessage::MAX_LEN];
    assert!(matches!(
        UpstreamMessage::decode_on(&topic, &codec::encode(&big)),
        Err(WireError::Codec(CodecError::TooLarge { .. }))
    ));
}

#[test]
fn hostile_bytes_never_panic() {
    let key = SigningKey::generate().unwrap();
    let anchor: TrustAnchor = [key.verifying_key()].into_iter().collect();
    let samples = [
        codec::encode(&status()),
        codec::encode(&event()),
        codec::encode(&upstream()),
        key.sign(&assignment()).encode(),
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for sample in &samples {
        let mut mutants: Vec<Vec<u8>> = (0..sample.len())
            .map(|cut| sample[..cut].to_vec())
            .collect();
        // Few enough that the signature checks stay quick in debug builds.
        for _ in 0..400 {
            let mut m = sample.clone();
            for _ in 0..=(next() % 3) {
                let at = (next() as usize) % m.len();
                m[at] = next() as u8;
            }
            mutants.push(m);
        }
        for m in &mutants {
            let _ = codec::decode::<NodeStatus>(m, NodeStatus::MAX_LEN);
            let _ = codec::decode::<AgentEvent>(m, AgentEvent::MAX_LEN);
            let _ = codec::decode::<UpstreamMessage>(m, UpstreamMessage::MAX_LEN);
            let _ = Topic::parse(&String::from_utf8_lossy(m));
            if let Ok(signed) = Signed::<Assignment>::decode(m)
                && let Ok(verified) = signed.verify(&anchor)
            {
                // Only bytes outside the signed payload can have changed.
                assert_eq!(verified, assignment());
            }
        }
    }
}

#[test]
fn controller_to_agent_end_to_end() {
    // Controller: sign an assignment for the node and cut the module into chunk publishes.
    let controller_key = SigningKey::generate().unwrap();
    let assignment_topic = assignment().topic().to_string();
    let assignment_bytes = controller_key.sign(&assignment()).encode();
    let chunk_publishes: Vec<(String, Vec<u8>)> = blob()
        .chunks(MIN_CHUNK_SIZE as usize)
        .enumerate()
        .map(|(i, chunk)| {
            let topic = Topic::ModuleChunk {
                module: manifest().sha256,
                index: i as u32,
            };
            assert!(topic.retained());
            (topic.to_string(), chunk.to_vec())
        })
        .rev()
        .collect();

    // Agent: trusts the controller's public key as shipped in a PEM bundle.
    let anchor =
        TrustAnchor::from_pem_bundle(&controller_key.verifying_key().to_public_key_pem().unwrap())
            .unwrap();
    let Topic::Assignment { node: to, class } = Topic::parse(&assignment_topic).unwrap() else {
        panic!("not an assignment topic");
    };
    assert_eq!(to, node());
    let received = Signed::<Assignment>::decode(&assignment_bytes)
        .unwrap()
        .verify(&anchor)
        .unwrap();
    received.check_target(&node(), &class).unwrap();
    received.validate().unwrap();
    assert_eq!(received.freshness(Some(5)), Freshness::Newer);
    let handler = received.handler.unwrap();

    let mut assembly = ModuleAssembly::new(handler.module.clone()).unwrap();
    for (topic, bytes) in &chunk_publishes {
        let Topic::ModuleChunk { module, index } = Topic::parse(topic).unwrap() else {
            panic!("not a chunk topic");
        };
        assert_eq!(module, handler.module.sha256);
        assert!(assembly.accept(index, bytes).unwrap());
    }
    assert_eq!(assembly.finish().unwrap(), blob());
    assert!(handler.limits.allows_topic("event/anomaly"));
}

#[test]
fn agent_refuses_replayed_and_misdirected_assignments() {
    let key = SigningKey::generate().unwrap();
    let anchor: TrustAnchor = [key.verifying_key()].into_iter().collect();
    let signed = key.sign(&assignment());
    let a = Signed::<Assignment>::decode(&signed.encode())
        .unwrap()
        .verify(&anchor)
        .unwrap();
    assert_eq!(a.freshness(Some(a.generation)), Freshness::Current);
    assert_eq!(a.freshness(Some(a.generation + 1)), Freshness::Stale);
    assert!(matches!(
        a.check_target(&NodeId::new("edge-8").unwrap(), &class()),
        Err(AssignmentError::WrongNode { .. })
    ));

    // The same document signed as a module manifest is not an assignment.
    let manifest_signature = key.sign(&manifest());
    let confused = Signed::<Assignment>::decode(&manifest_signature.encode()).unwrap();
    assert_eq!(
        confused.verify(&anchor),
        Err(SignatureError::BadSignature(key.key_id()))
    );

    // A signed assignment whose content is invalid is caught by validate.
    let mut bad = assignment();
    bad.handler.as_mut().unwrap().config = vec![0; MAX_CONFIG_BYTES + 1];
    let bad = key.sign(&bad).verify(&anchor).unwrap();
    assert!(matches!(
        bad.validate(),
        Err(AssignmentError::ConfigTooLarge { .. })
    ));
}

#[test]
fn human_readable_forms_use_hex_and_names() {
    let m = manifest();
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["sha256"], serde_json::json!(m.sha256.to_string()));
    assert_eq!(
        json["chunks"][0],
        serde_json::json!(m.chunks[0].to_string())
    );
    let back: ModuleManifest = serde_json::from_value(json).unwrap();
    assert_eq!(back, m);

    let signed = SigningKey::generate().unwrap().sign(&m);
    let json = serde_json::to_value(&signed).unwrap();
    assert_eq!(
        json["key_id"],
        serde_json::json!(signed.key_id().to_string())
    );
    assert_eq!(json["signature"].as_str().map(str::len), Some(128));

    let status = serde_json::to_value(status()).unwrap();
    assert_eq!(status["state"], "online");
    assert_eq!(
        status["classes"][0]["rollout"]["stage"],
        serde_json::json!({"wave": 2})
    );
    assert_eq!(
        serde_json::to_value(event()).unwrap()["kind"],
        "ModuleQuarantined"
    );
    assert!(serde_json::from_value::<Sha256Digest>(serde_json::json!("ABC")).is_err());
}
