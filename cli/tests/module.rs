//! `edgefleet module new|push|inspect` on files, without a registry: `new` writes a handler crate
//! that passes its native tests, builds for wasm32, is admitted and passes its test vectors in the
//! sandbox; what admission refuses is refused before any push, with the agents' own message;
//! inspect says what a module is.

mod support;

use std::path::Path;

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

/// Runs cargo (the one running these tests) in `dir` with the crate's own configuration: none of
/// the flags cargo gave this process, the target directory `target/module-new` of this workspace
/// (kept between runs, so only the new crate is compiled again).
fn cargo(dir: &Path, args: &[&str]) -> std::process::Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(dir)
        .args(args)
        .arg("--target-dir")
        .arg(workspace().join("target").join("module-new"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "cargo {args:?} in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn new_writes_a_handler_crate_that_tests_builds_is_admitted_and_passes_its_vectors() {
    let worker =
        Path::new(env!("CARGO_BIN_EXE_edgefleet")).with_file_name("edgefleet-sandbox-worker");
    assert!(
        worker.exists(),
        "{} is not built: run `cargo build -p edgefleet-sandbox-worker` (or the whole `cargo test --workspace`)",
        worker.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let run = edgefleet(
        dir.path(),
        &["module", "new", "tank-level", "--dir", "handlers/tank"],
    )
    .ok();
    assert!(
        run.stdout
            .starts_with("Created the handler crate tank-level in handlers/tank"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "module push target/wasm32-unknown-unknown/release/tank_level.wasm REGISTRY/tank-level:0.1.0"
        ),
        "{}",
        run.stdout
    );
    let tank = dir.path().join("handlers/tank");
    for file in [
        "Cargo.toml",
        ".cargo/config.toml",
        "src/lib.rs",
        "src/guest.rs",
        "handler.yaml",
    ] {
        assert!(tank.join(file).is_file(), "{file}");
    }

    // What it refuses: a folder in use, a name that makes no crate, a folder that is no SDK.
    let run = edgefleet(
        dir.path(),
        &["module", "new", "tank-level", "--dir", "handlers/tank"],
    )
    .fails(1);
    assert!(
        run.stderr
            .contains("handlers/tank exists and is not empty: choose another folder with --dir"),
        "{}",
        run.stderr
    );
    let run = edgefleet(dir.path(), &["module", "new", "Tank"]).fails(1);
    assert!(
        run.stderr.contains("\"Tank\" is not valid"),
        "{}",
        run.stderr
    );
    let run = edgefleet(dir.path(), &["module", "new", "t2", "--sdk", "handlers"]).fails(1);
    assert!(
        run.stderr.contains("handlers is not the guest SDK"),
        "{}",
        run.stderr
    );
    assert!(!dir.path().join("t2").exists());

    // The workspace's lockfile: the crate builds offline with the versions the SDK is tested with.
    std::fs::copy(workspace().join("Cargo.lock"), tank.join("Cargo.lock")).unwrap();
    let tests = cargo(&tank, &["test", "--offline"]);
    let tests = String::from_utf8_lossy(&tests.stdout);
    assert!(
        tests.contains("test result: ok. 4 passed"),
        "the template's native tests:\n{tests}"
    );
    cargo(
        &tank,
        &[
            "build",
            "--offline",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
        ],
    );
    let built =
        workspace().join("target/module-new/wasm32-unknown-unknown/release/tank_level.wasm");
    let wasm = std::fs::read(&built).unwrap();
    let admitted = edgefleet_sandbox::admission::admit(&wasm, &ClassLimits::default())
        .expect("admitted under a class's default limits");
    assert_eq!(admitted.memory.min_pages, 1);
    assert!(!admitted.rewritten_memory, "the module imports its memory");

    // Where handler.yaml's spec.file says the module is (the build went to the shared folder).
    let release = tank.join("target/wasm32-unknown-unknown/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(&built, release.join("tank_level.wasm")).unwrap();
    let run = edgefleet(&tank, &["module", "test", "handler.yaml"]).ok();
    assert!(
        run.stdout.ends_with("\n3 of 3 test vectors passed\n"),
        "{}",
        run.stdout
    );
}
