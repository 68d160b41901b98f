//! Writes the seed corpus under `fuzz/corpus/<target>/` from real encoded messages and modules, so
//! that every target starts from inputs that reach deep into its decoder. The seeds are committed;
//! run this again after a message type changes:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds
//! ```
//!
//! The admission seeds include the thermostat handler module when the workspace tests have built it
//! (`target/device-modules/`); the other module seeds are written here in WAT.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use edgefleet_fuzz::signing_key;
use edgefleet_protocol::codec;
use edgefleet_protocol::manifest::{DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE};
use edgefleet_protocol::status::{ClassStatus, ErrorReport, LinkState, ModuleStats, PendingModule};
use edgefleet_protocol::{
    AgentEvent, Assignment, ClassId, ClassLimits, ClassTopic, DeviceId, EventKind, HandlerSpec,
    ModuleManifest, NodeId, NodeState, NodeStatus, Rollout, RolloutStage, Sha256Digest, Topic,
    UpstreamMessage,
};
use edgefleet_sandbox::interaction::{LogLevel, LogLine, Upstream};
use edgefleet_sandbox::wire::{Request, Response, frame};
use edgefleet_sandbox::{Interaction, InteractionError, MemoryLimits, Outcome};

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let seeds = [
        ("cbor_messages", cbor_messages()),
        ("topic", topics()),
        ("ids", ids()),
        ("signed_assignment", signed_assignments()),
        ("manifest", manifests()),
        ("module_assembly", module_assemblies()),
        ("limits", limits()),
        ("worker_frames", worker_frames()),
        ("admission", admission()),
    ];
    for (target, files) in seeds {
        let dir = corpus.join(target);
        fs::create_dir_all(&dir).expect("create the corpus directory");
        for (name, bytes) in files {
            fs::write(dir.join(name), bytes).expect("write a seed");
        }
        println!("{}", dir.display());
    }
}

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn node() -> NodeId {
    NodeId::new("edge-1").unwrap()
}

fn class() -> ClassId {
    ClassId::new("thermostat").unwrap()
}

fn device() -> DeviceId {
    DeviceId::new("t-17").unwrap()
}

/// A module blob of two and a half default chunks.
fn blob() -> Vec<u8> {
    (0..DEFAULT_CHUNK_SIZE * 5 / 2)
        .map(|i| (i % 251) as u8)
        .collect()
}

fn manifest(chunk_size: u32) -> ModuleManifest {
    let mut manifest =
        ModuleManifest::for_blob("thermostat", "1.4.0-rc.1+b7", 1, &blob(), chunk_size).unwrap();
    manifest.built_at_ms = Some(1_767_000_000_000);
    manifest
}

fn assignment() -> Assignment {
    Assignment {
        node: node(),
        class: class(),
        generation: 7,
        issued_at_ms: 1_767_000_000_000,
        shadow: None,
        rollout: Some(Rollout {
            id: "thermostat-7".into(),
            stage: RolloutStage::Wave(2),
        }),
        handler: Some(HandlerSpec {
            module: manifest(DEFAULT_CHUNK_SIZE),
            config: codec::encode(&BTreeMap::from([("target_c", 21.5)])),
            limits: ClassLimits::default(),
        }),
    }
}

fn cbor_messages() -> Seeds {
    let module = manifest(DEFAULT_CHUNK_SIZE).reference();
    let mut status = NodeStatus::last_will(node(), "0.1.0", "0.17.1", 1, 1_000, 2_000);
    status.state = NodeState::Online;
    status.uplink.state = LinkState::Connected;
    status.uplink.last_error = Some("connection reset".into());
    status.outbox.oldest_at_ms = Some(1_500);
    status.interactions_per_sec = 1234.5;
    status.classes.push(ClassStatus {
        class: class(),
        generation: Some(7),
        shadow: None,
        rollout: assignment().rollout,
        active: Some(module.clone()),
        previous: None,
        pending: Some(PendingModule {
            module: module.clone(),
            generation: 8,
            received_chunks: 1,
            total_chunks: 3,
        }),
        last_error: Some(ErrorReport {
            at_ms: 1_900,
            message: "trap: unreachable".into(),
        }),
        active_devices: 3,
        seen_devices: 5,
        interactions_per_sec: 0.25,
        modules: vec![ModuleStats {
            module,
            interactions: 10,
            errors: 2,
            traps: 1,
            timeouts: 1,
            rejections: 0,
            quarantined: false,
        }],
    });
    let will = NodeStatus::last_will(node(), "0.1.0", "0.17.1", 1, 1_000, 1_000);
    let event = AgentEvent::new(2_000, node(), EventKind::ModuleRefused, "digest mismatch")
        .with_class(class())
        .with_device(device())
        .with_module(Sha256Digest::of(b"module"))
        .with_generation(7);
    let upstream = UpstreamMessage {
        node: node(),
        class: class(),
        device: device(),
        topic: ClassTopic::new("event/door").unwrap(),
        module: Sha256Digest::of(b"module"),
        payload: codec::encode(&BTreeMap::from([("temp_c", 17.5)])),
        at_ms: 2_000,
        epoch: 42,
        seq: 9,
    };
    vec![
        ("status-online", codec::encode(&status)),
        ("status-last-will", codec::encode(&will)),
        ("event", codec::encode(&event)),
        ("upstream", codec::encode(&upstream)),
    ]
}

fn topics() -> Seeds {
    let module = Sha256Digest::of(&blob());
    let all = [
        Topic::DeviceUp {
            class: class(),
            device: device(),
            channel: ClassTopic::new("event/door").unwrap(),
        },
        Topic::DeviceCommand {
            class: class(),
            device: device(),
        },
        Topic::Status { node: node() },
        Topic::Event { node: node() },
        Topic::Assignment {
            node: node(),
            class: class(),
        },
        Topic::Upstream {
            node: node(),
            class: class(),
            device: device(),
            topic: ClassTopic::new("telemetry").unwrap(),
        },
        Topic::ModuleChunk { module, index: 17 },
    ];
    let names = [
        "device-up",
        "device-command",
        "status",
        "event",
        "assignment",
        "upstream",
        "module-chunk",
    ];
    let mut seeds: Seeds = names
        .into_iter()
        .zip(all)
        .map(|(name, topic)| (name, topic.to_string().into_bytes()))
        .collect();
    seeds.push(("filter-hash", b"event/#\nevent/door".to_vec()));
    seeds.push(("filter-plus", b"+/door/+\nevent/door/open".to_vec()));
    seeds
}

fn ids() -> Seeds {
    vec![
        ("node", b"edge-1".to_vec()),
        ("k8s-name", b"thermostat.v2_beta-1".to_vec()),
        ("digest", Sha256Digest::of(b"m").to_string().into_bytes()),
        ("key-id", signing_key().key_id().to_string().into_bytes()),
        ("digest-cbor", codec::encode(&Sha256Digest::of(b"m"))),
        ("node-cbor", codec::encode(&node())),
    ]
}

fn signed_assignments() -> Seeds {
    let withdrawal = Assignment {
        handler: None,
        rollout: None,
        ..assignment()
    };
    let envelope = |a: &Assignment| {
        let mut bytes = vec![0];
        bytes.extend(signing_key().sign(a).encode());
        bytes
    };
    let mut payload = vec![1, 0x01, 0x23];
    payload.extend(codec::encode(&assignment()));
    vec![
        ("envelope", envelope(&assignment())),
        ("envelope-withdrawal", envelope(&withdrawal)),
        ("payload", payload),
    ]
}

fn manifests() -> Seeds {
    vec![
        (
            "default-chunks",
            codec::encode(&manifest(DEFAULT_CHUNK_SIZE)),
        ),
        ("small-chunks", codec::encode(&manifest(MIN_CHUNK_SIZE))),
    ]
}

/// The input is unstructured bytes read by `arbitrary`: any bytes are a valid input.
fn module_assemblies() -> Seeds {
    vec![
        ("ramp", (0..=255).collect()),
        ("repeating", [0x40, 0x9c, 0x01, 0x00].repeat(40)),
    ]
}

fn limits() -> Seeds {
    let tight = ClassLimits {
        max_memory_pages: 1,
        time_budget_ms: 60_000,
        max_outputs: 0,
        allowed_topics: vec!["+/door".into(), "a/b/c/#".into(), "#".into()],
        ..ClassLimits::default()
    };
    let prefixed = |limits: &ClassLimits| {
        let mut bytes = vec![0];
        bytes.extend(codec::encode(limits));
        bytes
    };
    vec![
        ("default", prefixed(&ClassLimits::default())),
        ("tight", prefixed(&tight)),
        ("only-defaults", vec![0, 0xa0]),
        ("built", [1, 0x10, 0x00, 0x00, 0x00, 0x32].repeat(12)),
    ]
}

fn worker_frames() -> Seeds {
    let interaction = Interaction {
        device: device().to_string(),
        channel: "telemetry".into(),
        payload: codec::encode(&BTreeMap::from([("temp_c", 17.5)])),
        state: Some(serde_bytes::ByteBuf::from(vec![1, 2, 3])),
        now_ms: 1_767_000_000_000,
    };
    let first_seen = Interaction {
        state: None,
        ..interaction.clone()
    };
    let load = Request::Load {
        module: 3,
        artefact: "/var/lib/edgefleet/artefacts/thermostat.so".into(),
        memory: MemoryLimits {
            min_pages: 1,
            max_pages: 16,
        },
        limits: ClassLimits::default(),
        config: codec::encode(&BTreeMap::from([("target_c", 21.5)])),
    };
    let run = Request::Run {
        module: 3,
        items: Cow::Owned(vec![interaction, first_seen]),
    };
    let outcome = Outcome {
        commands: vec![serde_bytes::ByteBuf::from(b"heat".to_vec())],
        upstream: vec![Upstream {
            topic: "telemetry".into(),
            payload: vec![0xa0],
        }],
        new_state: Some(serde_bytes::ByteBuf::from(vec![4])),
        logs: vec![LogLine {
            level: LogLevel::Info,
            text: "mode heat".into(),
        }],
        dropped_logs: 1,
    };
    let ran = Response::Ran {
        results: vec![
            Ok(outcome),
            Err(InteractionError::Trap {
                message: "unreachable".into(),
            }),
            Err(InteractionError::StateLimit {
                size: 20_000,
                limit: 16_384,
            }),
        ],
    };
    let mut session = frame(&load);
    session.extend(frame(&run));
    session.extend(frame(&Request::Unload { module: 3 }));
    let mut answers = frame(&Response::Loaded);
    answers.extend(frame(&ran));
    answers.extend(frame(&Response::UnknownModule { module: 4 }));
    vec![
        ("request-load", frame(&load)),
        ("request-run", frame(&run)),
        ("response-ran", frame(&ran)),
        (
            "response-load-failed",
            frame(&Response::LoadFailed {
                error: "artefact missing".into(),
            }),
        ),
        ("requests", session),
        ("responses", answers),
    ]
}

/// The mode byte of a raw module under the default class limit of 16 pages (see the target).
const RAW_MODULE: u8 = 45;

fn admission() -> Seeds {
    let abi = r#"(@custom "edgefleet_abi" "\01\00\00\00")"#;
    let imports_memory = format!(
        r#"(module
          (import "edgefleet_v1" "message" (func $message (param i32 i32) (result i32)))
          (import "edgefleet_v1" "command" (func $command (param i32 i32)))
          (import "env" "memory" (memory 1 16))
          (func (export "edgefleet_handle") (result i32)
            (drop (call $message (i32.const 0) (i32.const 1024)))
            (call $command (i32.const 0) (i32.const 4))
            (i32.const 0))
          {abi})"#
    );
    let defines_memory = format!(
        r#"(module
          (import "edgefleet_v1" "now_ms" (func $now (result i64)))
          (memory 2 8)
          (data (i32.const 16) "state")
          (func (export "edgefleet_handle") (result i32)
            (i32.wrap_i64 (call $now)))
          {abi})"#
    );
    let table = format!(
        r#"(module
          (import "env" "memory" (memory 1))
          (type $t (func (result i32)))
          (table 2 funcref)
          (elem (i32.const 0) $zero $one)
          (func $zero (result i32) (i32.const 0))
          (func $one (result i32) (i32.const 1))
          (func (export "edgefleet_handle") (result i32)
            (call_indirect (type $t) (i32.const 1)))
          {abi})"#
    );
    let other_abi = r#"(module
          (import "edgefleet_v2" "message" (func (param i32 i32) (result i32)))
          (import "env" "memory" (memory 1))
          (func (export "edgefleet_handle") (result i32) (i32.const 0))
          (@custom "edgefleet_abi" "\02\00\00\00"))"#;
    let raw = |wat: &str| {
        let mut bytes = vec![RAW_MODULE];
        bytes.extend(wat::parse_str(wat).expect("the seed WAT parses"));
        bytes
    };
    let mut seeds = vec![
        ("imports-memory", raw(&imports_memory)),
        ("defines-memory", raw(&defines_memory)),
        ("table", raw(&table)),
        ("other-abi", raw(other_abi)),
        ("abi-shaped", [1].into_iter().chain(0..=255).collect()),
        ("free", [2].into_iter().chain((0..=255).rev()).collect()),
    ];
    let thermostat = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/device-modules/wasm32-unknown-unknown/release/edgefleet_thermostat.wasm");
    match fs::read(&thermostat) {
        Ok(wasm) => seeds.push(("thermostat", [RAW_MODULE].into_iter().chain(wasm).collect())),
        Err(e) => eprintln!("no thermostat seed ({}: {e})", thermostat.display()),
    }
    seeds
}
