//! `edgefleet module push|inspect` on files, without a registry: what admission refuses is refused
//! before any push, with the agents' own message; inspect says what a module is.

mod support;

use edgefleet_protocol::ClassLimits;
use edgefleet_protocol::manifest::MAX_MODULE_BYTES;
use serde_json::Value;
use support::{edgefleet, field};

/// A module the guest ABI refuses: it imports WASI.
const WASI: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "edgefleet_handle") (result i32) i32.const 0))"#;

fn widest() -> ClassLimits {
    ClassLimits {
        max_memory_pages: 4096,
        max_module_bytes: MAX_MODULE_BYTES as u32,
        ..ClassLimits::default()
    }
}

#[test]
fn push_refuses_what_no_agent_would_run_before_contacting_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wat::parse_str(WASI).unwrap();
    std::fs::write(dir.path().join("wasi.wasm"), &wasm).unwrap();
    let agents_say = edgefleet_sandbox::admission::admit(&wasm, &widest())
        .unwrap_err()
        .to_string();
    // Port 9 (discard) on loopback: nothing listens; a push attempt would say "cannot reach".
    let run = edgefleet(
        dir.path(),
        &[
            "module",
            "push",
            "wasi.wasm",
            "127.0.0.1:9/edgefleet/wasi:1.0.0",
        ],
    )
    .fails(1);
    assert!(
        run.stderr.contains(&format!(
            "wasi.wasm is refused by admission, as every agent would refuse it: {agents_say}. Nothing was pushed"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");

    // A module name or version that the HandlerModule schema would refuse, before anything else.
    let thermostat =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    std::fs::write(dir.path().join("thermostat.wasm"), &thermostat).unwrap();
    let run = edgefleet(
        dir.path(),
        &[
            "module",
            "push",
            "thermostat.wasm",
            "127.0.0.1:9/edgefleet/thermostat:latest",
        ],
    )
    .fails(1);
    assert!(
        run.stderr
            .contains("give the module's version with --version")
            && run.stderr.contains("\"latest\" is not a semantic version"),
        "{}",
        run.stderr
    );
    let run = edgefleet(
        dir.path(),
        &[
            "module",
            "push",
            "thermostat.wasm",
            "127.0.0.1:9/Edgefleet/Thermo:1.0.0",
        ],
    )
    .fails(1);
    assert!(
        run.stderr.contains("is not an OCI reference")
            && run.stderr.contains("registry/repository:tag"),
        "{}",
        run.stderr
    );
    // An admitted module to an unreachable registry: the registry is named.
    let run = edgefleet(
        dir.path(),
        &[
            "module",
            "push",
            "thermostat.wasm",
            "127.0.0.1:9/edgefleet/thermostat:1.0.0",
            "--plain-http",
        ],
    )
    .fails(1);
    assert!(
        run.stderr.contains("registry 127.0.0.1:9"),
        "{}",
        run.stderr
    );
}

#[test]
fn inspect_shows_what_a_module_is_and_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let thermostat =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    std::fs::write(dir.path().join("thermostat.wasm"), &thermostat).unwrap();
    let run = edgefleet(dir.path(), &["module", "inspect", "thermostat.wasm"]).ok();
    let sha256 = edgefleet_protocol::Sha256Digest::of(&thermostat).to_string();
    let size = format!("{} bytes (16.6 KiB)", thermostat.len());
    for (label, value) in [
        ("SHA-256", sha256.as_str()),
        ("Size", size.as_str()),
        ("Guest ABI", "v1"),
        (
            "Memory",
            "imported as env.memory, at least 1 pages of 64 KiB",
        ),
        ("Admitted", "guest ABI v1, memory at least 1 pages"),
    ] {
        assert_eq!(
            field(&run.stdout, label).as_deref(),
            Some(value),
            "{label} in:\n{}",
            run.stdout
        );
    }
    for expected in [
        "  edgefleet_handle (func)\n",
        "  edgefleet_v1.message (func)\n",
    ] {
        assert!(
            run.stdout.contains(expected),
            "{expected:?} in:\n{}",
            run.stdout
        );
    }

    let wasm = wat::parse_str(WASI).unwrap();
    std::fs::write(dir.path().join("wasi.wasm"), &wasm).unwrap();
    let run = edgefleet(
        dir.path(),
        &["module", "inspect", "wasi.wasm", "-o", "json"],
    )
    .ok();
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["admitted"], false);
    assert_eq!(json["guest_abi"], Value::Null);
    let agents_say = edgefleet_sandbox::admission::admit(&wasm, &widest())
        .unwrap_err()
        .to_string();
    assert_eq!(json["admission"], format!("refused: {agents_say}"));
    assert_eq!(json["imports"][0], "wasi_snapshot_preview1.fd_write (func)");
    assert_eq!(json["memory"][0], "defined, at least 1 pages of 64 KiB");

    let run = edgefleet(dir.path(), &["module", "inspect", "missing.wasm"]).fails(1);
    assert!(
        run.stderr.contains("missing.wasm: no such file"),
        "{}",
        run.stderr
    );
}
