//! `edgefleet`, the operator CLI of an edgefleet fleet (also the kubectl plugin
//! `kubectl-edgefleet`).
//!
//! This file only parses the command line, dispatches to the command group's module and turns
//! errors into a message and an exit status. Each command group is one module with its arguments
//! and its `run`: [`keys`] (the controller's signing keys and the agents' trust bundle), [`certs`]
//! (the development PKI of the brokers' mutual TLS), [`module`] (create handler crates, push
//! and inspect handler modules, run their test vectors), [`apply`], [`get`] and [`describe`]
//! (the fleet's objects, in a cluster or on a standalone controller: [`target`] decides which). A
//! new group is a new module and a new variant of [`Command`].

// The doc comments of the argument types are the --help text, written for a terminal: `<stem>`
// there is a placeholder, not HTML.
#![allow(rustdoc::invalid_html_tags)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod apply;
mod certs;
mod demo;
mod describe;
mod error;
mod get;
mod keys;
mod module;
mod output;
mod rollout;
mod target;

pub(crate) use error::Error;

/// The file name under which kubectl runs the binary as a plugin (`kubectl edgefleet …`).
const KUBECTL_PLUGIN: &str = "kubectl-edgefleet";

/// Operate an edgefleet fleet: modules, device classes, edge nodes, signing keys, certificates.
///
/// edgefleet runs device-handling WebAssembly modules on edge nodes. A cloud controller signs
/// each node's handler assignments with an ed25519 key; the agents on the nodes run only what a
/// key in their trust bundle signed. Every MQTT link is mutual TLS, and the brokers decide who may
/// publish and read what by the common name of the client's certificate.
///
/// The fleet is declared with three kinds of objects: HandlerModules (one immutable module
/// version), DeviceClasses (which module a kind of device runs, with its config and limits, on
/// which nodes) and EdgeNodes (one per node, with what its agent reports). `module push` puts a
/// module into an OCI registry, `apply` declares objects, `get` and `describe` show them with
/// their status. They work against a cluster (the kubeconfig: --kubeconfig, $KUBECONFIG,
/// ~/.kube/config; --context) or a standalone controller (`edgefleet-controller run --objects
/// DIR`: --server URL or $EDGEFLEET_SERVER).
///
/// Setup needs files too: `keys` for the controller's signing key and the agents' trust bundle
/// (and rotating that key without downtime), `certs` for a development PKI with the broker, node,
/// controller and device certificates.
///
/// Also a kubectl plugin: a symlink or copy of this binary named `kubectl-edgefleet` anywhere on
/// PATH makes `kubectl edgefleet …` run it (`kubectl plugin list` shows it).
///
/// Exit status: 0 when the command did what it says, 1 when it failed or refused (the reason is
/// printed on stderr), 2 when the command line is wrong.
#[derive(Debug, Parser)]
#[command(name = "edgefleet", version, after_long_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  # Push a module, declare it and a class that runs it, watch the rollout
  edgefleet module push thermostat.wasm registry.example.com/edgefleet/thermostat:1.0.0 | edgefleet apply -f -
  edgefleet apply -f thermo-class.yaml
  edgefleet get classes
  edgefleet describe class thermo

  # The same on a standalone controller
  edgefleet get nodes --server http://127.0.0.1:8080

  # The controller's signing key and the agents' trust bundle
  edgefleet keys generate --out ./keys

  # A development PKI with certificates for the cloud broker, a node, the controller and a device
  edgefleet certs issue broker --host mqtt.example.com
  edgefleet certs issue node edge-1
  edgefleet certs issue controller
  edgefleet certs issue device t-17

  # Every command explains itself
  edgefleet keys rotate --help";

/// The command groups, one module each.
#[derive(Debug, Subcommand)]
enum Command {
    /// The controller's signing key and the agents' trust bundle: generate, rotate, retire, list.
    ///
    /// The controller signs every assignment it publishes with its ed25519 signing key
    /// (`signing-key.pem`, its --signing-key); every agent verifies them against a trust bundle of
    /// public keys (`trust.pem`, its --trust-anchor) and runs nothing else. A bundle may hold
    /// several keys, which is how the signing key is rotated without a moment in which agents
    /// refuse the controller: `rotate`, roll out, `retire`.
    #[command(after_long_help = keys::EXAMPLES)]
    Keys(keys::KeysArgs),
    /// A development PKI for the brokers' mutual TLS: CAs, broker, node, controller and device
    /// certificates.
    ///
    /// The brokers fence every client by its certificate's common name: a device by its id, a
    /// node's agent by the node name, the controller as `edgefleet-controller`. Which CA issued a
    /// certificate decides where it may connect at all: the fleet CA issues broker certificates
    /// (every client trusts it), the node CA issues node and controller certificates (the cloud
    /// broker trusts only it), the device CA issues device certificates (only device brokers trust
    /// it, with the node CA). So no device certificate connects to the cloud broker, whatever its
    /// name.
    ///
    /// Everything lives in one folder (--dir, default ./pki), made on first use. For development
    /// and tests; in production issue from your own CAs with the same split.
    #[command(after_long_help = certs::EXAMPLES)]
    Certs(certs::CertsArgs),
    /// Handler modules: create a handler crate; check a module as agents do and push it to an OCI
    /// registry; inspect one; run its test vectors.
    ///
    /// A handler module is a WebAssembly module built for the guest ABI (the edgefleet guest SDK);
    /// `new` writes a Rust crate to start one from.
    /// In a cluster the controller pulls it from an OCI registry by digest; `push` writes it there
    /// and prints the HandlerModule that pins it. `test` runs the cases a HandlerModule declares in
    /// the sandbox, as the controller does before any node receives the module.
    #[command(after_long_help = module::EXAMPLES)]
    Module(module::ModuleArgs),
    /// Create or update HandlerModules, DeviceClasses and EdgeNodes from YAML.
    ///
    /// Each object is checked first, by the rules the controller reads objects with; if one is
    /// invalid, nothing is applied. In a cluster: server-side apply (field manager edgefleet-cli;
    /// the CRDs' schema checks again). On a standalone controller (--server): its apply endpoint
    /// writes each object into its objects folder as <kind>-<name>.yaml, refusing an object
    /// another file of the folder declares, and answers once the controller has read it. A
    /// HandlerModule is one immutable module version: apply a new object for a new version.
    /// Prints one line per object: `handlermodule/thermostat-1.0.0 created` (or configured,
    /// unchanged).
    #[command(after_long_help = apply::EXAMPLES)]
    Apply(apply::ApplyArgs),
    /// List edge nodes, device classes or handler modules, with their status.
    ///
    /// The columns are those of `kubectl get` for the edgefleet kinds. nodes: STATUS (Online,
    /// Offline; Cordoned), CLASSES (class=version it runs), DEVICES (heard from in the last
    /// minute), RATE (interactions per second), ERRORS (interactions that committed nothing), OUTBOX
    /// (messages waiting for the uplink), LAST-SEEN. classes: MODULE, the VERSION being rolled
    /// out, NODES selected, UPDATED (running it), FAILING, READY, the ROLLOUT's phase and STEP.
    /// modules: MODULE, VERSION, READY
    /// and its REASON (Admitted, or why not: DigestMismatch, AdmissionRefused, ImageNotFound …),
    /// SIZE. AGE in a cluster. -o wide adds columns; -o json and -o yaml give the objects.
    #[command(after_long_help = get::EXAMPLES)]
    Get(get::GetArgs),
    /// Show one edge node, device class or handler module in detail: spec, status, conditions,
    /// Events.
    ///
    /// Conditions say what the controller concluded and why (type, status, reason, message, when
    /// it last changed): a module's Ready (admitted or why not), a class's Ready and Degraded, a
    /// node's Ready. In a cluster the object's Events (events.k8s.io) follow, if any.
    #[command(after_long_help = describe::EXAMPLES)]
    Describe(describe::DescribeArgs),
    /// Follow and steer a device class's staged rollout: status, pause, resume, promote, abort,
    /// undo, retry.
    ///
    /// A class with spec.rollout gets a new version in steps: optionally a shadow step (the
    /// canary nodes run it beside the stable version, acting on the stable one's outputs only),
    /// a canary, then growing waves. Each step waits for its gate (enough interactions on the new
    /// version, a fault rate no worse than the stable version's by more than allowed, a bake
    /// time); a failed gate, a quarantine or a missed deadline gives every node the stable
    /// version back. These commands act through the class's edgefleet.dev/rollout-action
    /// annotation, which plain kubectl can set as well.
    #[command(after_long_help = rollout::EXAMPLES)]
    Rollout(rollout::RolloutArgs),
    /// The local fleet, one command: PKI, brokers, the controller, three agents, a thousand
    /// simulated devices and a rollout, with a live table and the correctness oracle's verdict.
    ///
    /// Everything runs on this machine and is stopped at the end (or on Ctrl-C): mosquitto with
    /// mutual TLS and the shipped ACLs (one cloud broker, one device broker per node), the
    /// controller in standalone mode, three edge agents with their WasmEdge sandboxes, and
    /// simulated thermostats, meters, locks and air-quality sensors, each with its own
    /// certificate. The four classes start on 1.0.0; thermostat 1.1.0 then rolls out through a
    /// canary node and two waves while the devices keep talking. Every command a device receives
    /// is checked against the handler's own logic. Exit status 0 when the rollout completed and
    /// the oracle found nothing wrong.
    #[command(after_long_help = demo::EXAMPLES)]
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let plugin = std::env::args_os()
        .next()
        .and_then(|argv0| {
            Path::new(&argv0)
                .file_name()
                .map(|name| name == OsStr::new(KUBECTL_PLUGIN))
        })
        .unwrap_or(false);
    let program = PROGRAM.get_or_init(|| {
        if plugin {
            "kubectl edgefleet"
        } else {
            "edgefleet"
        }
    });
    let mut command = Cli::command();
    if plugin {
        command = as_kubectl_plugin(command.bin_name(*program).display_name(*program));
    }
    // Usage errors print clap's message and exit with 2; --help and --version exit with 0.
    let matches = command.get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Keys(args) => keys::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Module(args) => module::run(args),
        Command::Apply(args) => apply::run(args),
        Command::Get(args) => get::run(args),
        Command::Describe(args) => describe::run(args),
        Command::Rollout(args) => rollout::run(args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{program}: error: {error}");
            ExitCode::FAILURE
        }
    }
}

static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// Runs `future` to completion on a runtime of its own (the fleet commands talk HTTP).
pub(crate) fn block_on<T>(future: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Fleet(format!("cannot start the async runtime: {e}")))?
        .block_on(future)
}

/// How to invoke this program in commands printed for the operator: `edgefleet` or, run as the
/// kubectl plugin, `kubectl edgefleet`.
pub(crate) fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("edgefleet")
}

/// The help texts of `command` and its subcommands with their examples as kubectl plugin commands
/// (`  kubectl edgefleet keys …`).
fn as_kubectl_plugin(command: clap::Command) -> clap::Command {
    let command = match command.get_after_long_help() {
        Some(help) => {
            let help = help
                .to_string()
                .replace("  edgefleet ", "  kubectl edgefleet ")
                .replace("| edgefleet ", "| kubectl edgefleet ");
            command.after_long_help(help)
        }
        None => command,
    };
    command.mut_subcommands(as_kubectl_plugin)
}
