//! `edgefleet module test`: a module's test vectors, run locally in the real sandbox with the
//! controller's own code (`edgefleet_controller::vectors`), so a case that passes here passes
//! when the controller runs it before distributing the module, and one that fails here would
//! have the module refused.
//!
//! The cases come from a HandlerModule (its `spec.testVectors`, the module its `spec.file`) and/or
//! a file of extra cases (`--vectors`); `--wasm` tests another build against them. The module is
//! admitted first, as the controller admits it.

use std::path::{Path, PathBuf};

use clap::Args;
use edgefleet_controller::objects::{Objects, add_documents};
use edgefleet_controller::resources::{HandlerModuleSpec, TestVector};
use edgefleet_controller::vectors::{Report, Runner};
use edgefleet_protocol::Sha256Digest;
use edgefleet_sandbox::WorkerCommand;

use super::{read_module, widest_limits};
use crate::Error;
use crate::output::table;

pub(crate) const EXAMPLES: &str = "\
Examples:
  # The cases a HandlerModule declares, against the module its spec.file names
  edgefleet module test thermostat-1.0.0.yaml

  # The same cases against a new build, before pushing it
  edgefleet module test thermostat-1.0.0.yaml --wasm build/thermostat.wasm

  # Cases kept apart from the HandlerModule: a YAML list of test vectors
  edgefleet module test --wasm thermostat.wasm --vectors cases.yaml

A test vector (in spec.testVectors, or as an item of the --vectors list):

  - name: heats below the dead band
    config: {setpoint_c: 21, hysteresis_c: 0.5}   # the class config (optional)
    state: {mode: idle}                            # the device state before (optional)
    channel: telemetry
    message: {temp_c: 19}
    expect:
      commands: [{mode: heat, setpoint_c: 21}]     # in order (absent: none)
      upstream:                                    # in order (absent: none)
        - {topic: telemetry, payload: {temp_c: 19, setpoint_c: 21, mode: heat}}
      state: {mode: heat}                          # the state after (optional: unchecked)

Output:
  CASE                       RESULT  DIFFERENCE
  heats below the dead band  passed
  stops heating at setpoint  FAILED  state: expected {\"mode\":\"idle\"}, got {\"mode\":\"heat\"}
  edgefleet: error: 1 of 2 test vectors failed     (on stderr; exit status 1)";

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// A HandlerModule (YAML): its spec.testVectors are run against its spec.file (relative to
    /// the YAML), unless --wasm names another module.
    #[arg(value_name = "MODULE.yaml")]
    module: Option<PathBuf>,
    /// The module to test (.wasm), instead of the HandlerModule's spec.file.
    #[arg(long, value_name = "FILE.wasm")]
    wasm: Option<PathBuf>,
    /// More cases: a YAML list of test vectors (or a HandlerModule, whose spec.testVectors are
    /// taken), run after the HandlerModule's.
    #[arg(long, value_name = "VECTORS.yaml")]
    vectors: Option<PathBuf>,
    /// The sandbox worker binary (edgefleet-sandbox-worker); default: beside this program.
    #[arg(long, env = "EDGEFLEET_WORKER_BINARY", value_name = "PATH")]
    worker_binary: Option<PathBuf>,
}

/// Runs `edgefleet module test`.
pub(crate) fn run(args: TestArgs) -> Result<(), Error> {
    let module = args
        .module
        .as_deref()
        .map(read_handler_module)
        .transpose()?;
    let mut vectors = module
        .as_ref()
        .map(|(_, spec)| spec.test_vectors.clone())
        .unwrap_or_default();
    if let Some(path) = &args.vectors {
        vectors.extend(read_vectors(path)?);
    }
    let wasm_path = match (&args.wasm, &module) {
        (Some(path), _) => path.clone(),
        (None, Some((yaml, spec))) => module_file(yaml, spec)?,
        (None, None) => {
            return Err(Error::Refused(
                "give a HandlerModule (MODULE.yaml), or the module with --wasm and its cases with --vectors".into(),
            ));
        }
    };
    if vectors.is_empty() {
        return Err(Error::Refused(
            "no test vectors to run: the HandlerModule declares none (spec.testVectors) and no --vectors file was given".into(),
        ));
    }
    let wasm = read_module(&wasm_path)?;
    if let (None, Some((_, spec))) = (&args.wasm, &module)
        && let Some(expected) = &spec.sha256
        && *expected != Sha256Digest::of(&wasm).to_string()
    {
        eprintln!(
            "note: {} does not have the spec's sha256 {expected}: the controller would refuse it (DigestMismatch)",
            wasm_path.display()
        );
    }
    edgefleet_sandbox::admission::admit(&wasm, &widest_limits()).map_err(|e| {
        Error::Refused(format!(
            "{} is refused by admission, as the controller and every agent would refuse it: {e}",
            wasm_path.display()
        ))
    })?;
    let label = match &module {
        Some((_, spec)) => format!("{}@{}", spec.module, spec.version),
        None => wasm_path.display().to_string(),
    };
    let artefacts = tempfile::tempdir().map_err(Error::io(
        "cannot create a temporary folder in",
        std::env::temp_dir(),
    ))?;
    let worker = match &args.worker_binary {
        Some(path) => WorkerCommand::new(path),
        None => WorkerCommand::beside_current_exe(),
    };
    let runner = Runner::new(worker, artefacts.path());
    let report = runner.run(&label, &wasm, &vectors).map_err(|e| {
        Error::Refused(format!(
            "cannot run the test vectors: {e} (or give the worker's path with --worker-binary)"
        ))
    })?;
    print!("{}", report_table(&report));
    match report.failure() {
        None => {
            println!(
                "{} of {} test vectors passed",
                report.passed(),
                vectors.len()
            );
            Ok(())
        }
        Some(_) => Err(Error::Refused(format!(
            "{} of {} test vectors failed",
            vectors.len() - report.passed(),
            vectors.len()
        ))),
    }
}

fn report_table(report: &Report) -> String {
    table(
        &["CASE", "RESULT", "DIFFERENCE"],
        report.cases.iter().map(|case| {
            vec![
                case.name.clone(),
                if case.difference.is_some() {
                    "FAILED"
                } else {
                    "passed"
                }
                .to_owned(),
                case.difference.clone().unwrap_or_default(),
            ]
        }),
    )
}

/// The one HandlerModule in `path`, read by the rules the controller reads objects with.
fn read_handler_module(path: &Path) -> Result<(PathBuf, HandlerModuleSpec), Error> {
    let objects = read_objects(path)?;
    let mut modules = objects.modules.into_values();
    match (modules.next(), modules.next()) {
        (Some(module), None) => Ok((path.to_path_buf(), module.spec)),
        (None, _) => Err(Error::Refused(format!(
            "{} declares no HandlerModule",
            path.display()
        ))),
        (Some(_), Some(_)) => Err(Error::Refused(format!(
            "{} declares several HandlerModules: give a file with one",
            path.display()
        ))),
    }
}

fn read_objects(path: &Path) -> Result<Objects, Error> {
    let text = std::fs::read_to_string(path).map_err(Error::io("cannot read", path))?;
    let mut objects = Objects::default();
    add_documents(&mut objects, &text)
        .map_err(|e| Error::Refused(format!("{}: {e}", path.display())))?;
    Ok(objects)
}

/// The cases in `path`: a YAML list of test vectors, or a HandlerModule's.
fn read_vectors(path: &Path) -> Result<Vec<TestVector>, Error> {
    let text = std::fs::read_to_string(path).map_err(Error::io("cannot read", path))?;
    let value: serde_json::Value = serde_saphyr::from_str(&text)
        .map_err(|e| Error::Refused(format!("{}: not YAML: {e}", path.display())))?;
    if value.is_array() {
        return serde_json::from_value(value).map_err(|e| {
            Error::Refused(format!(
                "{}: not a list of test vectors (name, channel, message, expect): {e}",
                path.display()
            ))
        });
    }
    read_handler_module(path).map(|(_, spec)| spec.test_vectors)
}

/// The module file a HandlerModule names, relative to its YAML.
fn module_file(yaml: &Path, spec: &HandlerModuleSpec) -> Result<PathBuf, Error> {
    match &spec.file {
        Some(file) => Ok(yaml.parent().unwrap_or(Path::new(".")).join(file)),
        None => Err(Error::Refused(format!(
            "the HandlerModule in {} names no spec.file{}: give the module with --wasm",
            yaml.display(),
            spec.image
                .as_ref()
                .map(|i| format!(" (its image is {i})"))
                .unwrap_or_default()
        ))),
    }
}
