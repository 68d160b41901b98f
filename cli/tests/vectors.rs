//! `edgefleet module test`: a HandlerModule's test vectors run locally in the real sandbox (the
//! worker beside the `edgefleet` binary), a readable table, exit 1 on a failing case.

mod support;

use std::path::Path;

use support::{cell, edgefleet, table_rows};

const EXAMPLE: &str = include_str!("../../examples/thermostat.yaml");

/// A folder with the example HandlerModule and the module its spec.file names.
fn example() -> tempfile::TempDir {
    let worker =
        Path::new(env!("CARGO_BIN_EXE_edgefleet")).with_file_name("edgefleet-sandbox-worker");
    assert!(
        worker.exists(),
        "{} is not built: run `cargo build -p edgefleet-sandbox-worker` (or the whole `cargo test --workspace`)",
        worker.display()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("thermostat.yaml"), EXAMPLE).unwrap();
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    std::fs::write(dir.path().join("thermostat.wasm"), wasm).unwrap();
    dir
}

#[test]
fn the_thermostat_passes_its_vectors() {
    let dir = example();
    let run = edgefleet(dir.path(), &["module", "test", "thermostat.yaml"]).ok();
    let rows = table_rows(&run.stdout);
    assert_eq!(rows[0], ["CASE", "RESULT", "DIFFERENCE"], "{}", run.stdout);
    for case in [
        "heats below the dead band",
        "keeps heating inside the dead band",
        "stops heating at the setpoint",
        "the device's setpoint overrides the default config",
    ] {
        assert_eq!(
            cell(&run.stdout, case, "RESULT").as_deref(),
            Some("passed"),
            "{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.ends_with("\n4 of 4 test vectors passed\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_failing_case_is_shown_with_its_difference_and_fails_the_command() {
    let dir = example();
    // Extra cases from a file; the module given with --wasm, from another folder.
    std::fs::create_dir(dir.path().join("build")).unwrap();
    std::fs::rename(
        dir.path().join("thermostat.wasm"),
        dir.path().join("build/new.wasm"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cases.yaml"),
        "- name: cools when warm\n  channel: telemetry\n  message: {temp_c: 19}\n  \
         expect:\n    commands: [{mode: cool, setpoint_c: 21}]\n    state: {mode: heat}\n",
    )
    .unwrap();
    let run = edgefleet(
        dir.path(),
        &[
            "module",
            "test",
            "thermostat.yaml",
            "--wasm",
            "build/new.wasm",
            "--vectors",
            "cases.yaml",
        ],
    )
    .fails(1);
    assert_eq!(
        cell(&run.stdout, "heats below the dead band", "RESULT").as_deref(),
        Some("passed"),
        "{}",
        run.stdout
    );
    assert_eq!(
        cell(&run.stdout, "cools when warm", "RESULT").as_deref(),
        Some("FAILED")
    );
    // The difference: the command, and the telemetry the case did not expect.
    assert_eq!(
        cell(&run.stdout, "cools when warm", "DIFFERENCE").as_deref(),
        Some(
            r#"commands: expected [{"mode":"cool","setpoint_c":21}], got [{"mode":"heat","setpoint_c":21.0}]; upstream: expected [], got [{"topic":"telemetry","payload":{"mode":"heat","setpoint_c":21.0,"temp_c":19.0}}]"#
        ),
        "{}",
        run.stdout
    );
    assert_eq!(run.stderr, "edgefleet: error: 1 of 5 test vectors failed\n");
}

#[test]
fn without_a_worker_or_cases_it_says_what_to_give() {
    let dir = example();
    let run = edgefleet(
        dir.path(),
        &[
            "module",
            "test",
            "thermostat.yaml",
            "--worker-binary",
            "/nonexistent/edgefleet-sandbox-worker",
        ],
    )
    .fails(1);
    assert!(
        run.stderr.contains("cannot run the test vectors")
            && run.stderr.contains("/nonexistent/edgefleet-sandbox-worker")
            && run.stderr.contains("--worker-binary"),
        "{}",
        run.stderr
    );
    let run = edgefleet(dir.path(), &["module", "test", "--wasm", "thermostat.wasm"]).fails(1);
    assert!(
        run.stderr.contains("no test vectors to run"),
        "{}",
        run.stderr
    );
    let run = edgefleet(dir.path(), &["module", "test"]).fails(1);
    assert!(
        run.stderr.contains("give a HandlerModule (MODULE.yaml)"),
        "{}",
        run.stderr
    );
}

#[test]
fn help_teaches_with_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let help = edgefleet(dir.path(), &["module", "test", "--help"]).ok();
    for text in [
        "Usage: edgefleet module test [OPTIONS] [MODULE.yaml]",
        "spec.testVectors",
        "edgefleet module test thermostat-1.0.0.yaml --wasm",
        "message: {temp_c: 19}",
        "--worker-binary <PATH>",
        "exits 1 if any case failed",
    ] {
        assert!(help.stdout.contains(text), "{text:?} in:\n{}", help.stdout);
    }
}
