use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgefleet_controller::config::{Config, RunArgs};

/// The edgefleet cloud controller: distributes signed handler modules to edge nodes and writes
/// the fleet's state back (EdgeNode, DeviceClass and HandlerModule status).
///
/// In a cluster it watches the Kubernetes API; with --objects it runs standalone on a folder of
/// the same YAML objects. Settings come from a TOML file (--config), then EDGEFLEET_* variables,
/// then flags.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions (what k3s/crds/ holds), or write them to a folder.
    Crds {
        /// Write one file per CRD into this folder instead of printing them.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let config = match Config::load(*args) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = runtime.block_on(edgefleet_controller::run::run(config)) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        Command::Crds { out_dir } => {
            for (file, crd) in edgefleet_controller::crds::all() {
                let yaml = edgefleet_controller::crds::to_yaml(&crd);
                match &out_dir {
                    Some(dir) => {
                        let path = dir.join(file);
                        if let Err(e) = std::fs::write(&path, yaml) {
                            eprintln!("error: cannot write {}: {e}", path.display());
                            return ExitCode::FAILURE;
                        }
                    }
                    None => print!("---\n{yaml}"),
                }
            }
        }
    }
    ExitCode::SUCCESS
}
