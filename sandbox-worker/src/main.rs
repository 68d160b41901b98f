//! The sandbox worker process. Started by the sandbox supervisor (`edgefleet_sandbox::Sandbox`), not
//! by hand.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgefleet_sandbox::progress::Progress;
use edgefleet_sandbox_worker::{engine, worker};

/// Runs device-class handler modules in fresh WasmEdge instances for an edgefleet sandbox.
///
/// The sandbox (in the agent, or a controller or CLI running test vectors) starts and supervises
/// these processes itself; running one by hand is only useful for
/// `version` and `compile`.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve interactions: framed CBOR requests on stdin, responses on stdout.
    Serve {
        /// File descriptor of the progress slot shared with the supervisor.
        #[arg(long, default_value_t = 3)]
        progress_fd: i32,
        /// Compiled fault-handler pin module: keeps WasmEdge's signal handlers installed so that
        /// calls into AOT code make no syscalls.
        #[arg(long)]
        pin: Option<PathBuf>,
    },
    /// AOT-compile one (admitted) wasm module to a native shared object.
    Compile {
        /// The wasm module to compile.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the native artefact.
        #[arg(long)]
        output: PathBuf,
    },
    /// Print the WasmEdge version this worker runs.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { progress_fd, pin } => {
            if let Some(pin) = pin
                && let Err(e) = engine::pin_fault_handlers(&pin)
            {
                eprintln!("edgefleet-sandbox-worker: running unpinned (slower): {e}");
            }
            // SAFETY: the supervisor passes the progress slot's descriptor, open, at this number,
            // and nothing else in this process owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(progress_fd) };
            let result = Progress::open(&fd).and_then(worker::serve);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("edgefleet-sandbox-worker: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Compile { input, output } => match worker::compile(&input, &output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edgefleet-sandbox-worker: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Version => {
            println!("{}", engine::wasmedge_version());
            ExitCode::SUCCESS
        }
    }
}
