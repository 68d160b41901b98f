use clap::{Parser, Subcommand};

/// The edgefleet cloud controller.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (what k3s/crds/ holds), or write them to a folder.
    Crds {
        /// Write one file per CRD into this folder instead of printing them.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out_dir } => {
            for (file, crd) in edgefleet_controller::crds::all() {
                let yaml = edgefleet_controller::crds::to_yaml(&crd);
                match &out_dir {
                    Some(dir) => {
                        let path = dir.join(file);
                        if let Err(e) = std::fs::write(&path, yaml) {
                            eprintln!("error: cannot write {}: {e}", path.display());
                            return std::process::ExitCode::FAILURE;
                        }
                    }
                    None => print!("---\n{yaml}"),
                }
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
