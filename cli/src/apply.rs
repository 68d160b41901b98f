//! `edgefleet apply`: HandlerModules, DeviceClasses and EdgeNodes from YAML, into a cluster
//! (server-side apply, field manager `edgefleet-cli`) or a standalone controller (its
//! `POST /api/v1alpha1/apply`, which writes one file per object into its objects folder).
//!
//! Every object is checked here first, with the rules the standalone controller reads its folder
//! with (`edgefleet_controller::objects::add_documents`): a file with one bad object applies
//! nothing. The API server or the standalone controller then checks again (the CRD schema; the
//! folder's conflicts).

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::Error;
use crate::target::{Applied, Target, TargetArgs};

pub(crate) const EXAMPLES: &str = "\
Examples:
  # A module version and a class that runs it, on a standalone controller
  edgefleet apply -f fleet.yaml --server http://127.0.0.1:8080

  # Every *.yaml, *.yml and *.json of a folder, into the cluster of the current kubeconfig context
  edgefleet apply -f objects/

  # Push a module and apply the HandlerModule it prints
  edgefleet module push thermostat.wasm registry.example.com/edgefleet/thermostat:1.0.0 | edgefleet apply -f -";

/// Arguments of `edgefleet apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A YAML (or JSON) file of one or more `---` documents, a folder (its *.yaml, *.yml and *.json
    /// files, not recursive), or `-` for standard input. May be given several times.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    files: Vec<PathBuf>,
    /// In a cluster: take over fields that another field manager (kubectl, a GitOps tool) set.
    #[arg(long)]
    force_conflicts: bool,
    #[command(flatten)]
    target: TargetArgs,
}

/// Runs `edgefleet apply`.
pub fn run(args: ApplyArgs) -> Result<(), Error> {
    let sources = read_sources(&args.files)?;
    for (source, text) in &sources {
        check(source, text)?;
    }
    crate::block_on(async {
        let target = Target::connect(&args.target).await?;
        let applied = target.apply(&sources, args.force_conflicts).await?;
        print_applied(&applied);
        Ok(())
    })
}

/// One line per object, as kubectl prints them: `kind/name result`.
pub fn print_applied(applied: &[Applied]) {
    for object in applied {
        println!(
            "{}/{} {}",
            object.kind.to_lowercase(),
            object.name,
            object.result
        );
    }
}

/// Checks `text` as the standalone controller reads a file of its folder.
pub fn check(source: &str, text: &str) -> Result<(), Error> {
    let mut objects = edgefleet_controller::objects::Objects::default();
    edgefleet_controller::objects::add_documents(&mut objects, text)
        .map_err(|e| Error::Refused(format!("{source}: {e}; nothing was applied")))?;
    if objects.modules.is_empty() && objects.classes.is_empty() && objects.edge_nodes.is_empty() {
        return Err(Error::Refused(format!(
            "{source}: no object in it (expected HandlerModule, DeviceClass or EdgeNode documents)"
        )));
    }
    Ok(())
}

/// `(where from, text)` of every file `paths` name, in order.
fn read_sources(paths: &[PathBuf]) -> Result<Vec<(String, String)>, Error> {
    let mut sources = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(Error::io("cannot read", "standard input"))?;
            sources.push(("standard input".to_owned(), text));
        } else if path.is_dir() {
            let files = edgefleet_controller::objects::object_files(path)
                .map_err(Error::io("cannot list", path))?;
            if files.is_empty() {
                return Err(Error::Refused(format!(
                    "{} has no *.yaml, *.yml or *.json file",
                    path.display()
                )));
            }
            for file in files {
                let text =
                    std::fs::read_to_string(&file).map_err(Error::io("cannot read", &file))?;
                sources.push((file.display().to_string(), text));
            }
        } else {
            let text = std::fs::read_to_string(path).map_err(Error::io("cannot read", path))?;
            sources.push((path.display().to_string(), text));
        }
    }
    Ok(sources)
}
