//! `edgefleet`, the operator CLI of an edgefleet fleet (also the kubectl plugin
//! `kubectl-edgefleet`).
//!
//! This file only parses the command line, dispatches to the command group's module and turns
//! errors into a message and an exit status. Each command group is one module with its arguments
//! and its `run`: [`keys`] (the controller's signing keys and the agents' trust bundle), [`certs`]
//! (the development PKI of the brokers' mutual TLS). A new group is a new module and a new
//! variant of [`Command`].

// The doc comments of the argument types are the --help text, written for a terminal: `<stem>`
// there is a placeholder, not HTML.
#![allow(rustdoc::invalid_html_tags)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod certs;
mod error;
mod keys;
mod output;

pub(crate) use error::Error;

/// The file name under which kubectl runs the binary as a plugin (`kubectl edgefleet …`).
const KUBECTL_PLUGIN: &str = "kubectl-edgefleet";

/// Operate an edgefleet fleet: signing keys, certificates, and more to come.
///
/// edgefleet runs device-handling WebAssembly modules on edge nodes. A cloud controller signs
/// each node's handler assignments with an ed25519 key; the agents on the nodes run only what a
/// key in their trust bundle signed. Every MQTT link is mutual TLS, and the brokers decide who may
/// publish and read what by the common name of the client's certificate.
///
/// This tool makes the files that setup needs: `keys` for the controller's signing key and the
/// agents' trust bundle (and rotating that key without downtime), `certs` for a development PKI
/// with the broker, node, controller and device certificates.
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
                .replace("  edgefleet ", "  kubectl edgefleet ");
            command.after_long_help(help)
        }
        None => command,
    };
    command.mut_subcommands(as_kubectl_plugin)
}
