//! `edgefleet module new`: a new handler crate from the template in `device-modules/template`
//! (embedded in the binary), with its name substituted and its `edgefleet-guest` dependency
//! pointing at the guest SDK.
//!
//! The template's crate is `edgefleet-handler-template` (library `edgefleet_handler_template`,
//! HandlerModule `edgefleet-handler-template-0.1.0`) and depends on the SDK as `path = "../guest"`;
//! those four spellings are replaced. The template compiles as it is, and the CLI's tests build and
//! run what this command writes.

use std::path::{Component, Path, PathBuf};

use clap::Args;

use super::object_name;
use crate::{Error, program};

pub(crate) const EXAMPLES: &str = "\
Examples:
  # A handler crate in ./tank-level, then its tests, its module and its test vectors in the sandbox
  edgefleet module new tank-level
  cd tank-level
  cargo test
  cargo build --release --target wasm32-unknown-unknown
  edgefleet module test handler.yaml

  # Somewhere else, against an SDK checked out elsewhere
  edgefleet module new door-bell --dir handlers/door-bell --sdk ~/src/edgefleet/device-modules/guest";

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The handler's name: its crate, its module (`NAME.wasm` with `-` as `_`) and its
    /// HandlerModule; 1-64 lower-case letters, digits, '-' and '_', starting with a letter.
    #[arg(value_name = "NAME")]
    name: String,
    /// The folder to create (default: ./NAME); it must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The guest SDK's folder (device-modules/guest of the edgefleet repository), which the crate
    /// depends on by path (default: the one this program was built from).
    #[arg(long, value_name = "DIR")]
    sdk: Option<PathBuf>,
}

/// The template's files, as (path in the crate, contents).
const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../device-modules/template/Cargo.toml"),
    ),
    (
        ".cargo/config.toml",
        include_str!("../../../device-modules/template/.cargo/config.toml"),
    ),
    (
        ".gitignore",
        include_str!("../../../device-modules/template/.gitignore"),
    ),
    (
        "handler.yaml",
        include_str!("../../../device-modules/template/handler.yaml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../device-modules/template/src/lib.rs"),
    ),
    (
        "src/guest.rs",
        include_str!("../../../device-modules/template/src/guest.rs"),
    ),
];

/// The template's crate name, library name, HandlerModule object name and SDK dependency.
const CRATE: &str = "edgefleet-handler-template";
const LIBRARY: &str = "edgefleet_handler_template";
const VERSION: &str = "0.1.0";
const SDK_DEPENDENCY: &str = "path = \"../guest\"";

/// Rust's keywords and the crates a handler links: no crate may be named so.
const RESERVED: &[&str] = &[
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "macro",
    "override",
    "priv",
    "try",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "core",
    "std",
    "alloc",
    "test",
    "proc_macro",
    "edgefleet_guest",
    "edgefleet_guest_abi",
    "minicbor",
];

/// Runs `edgefleet module new`.
pub(crate) fn run(args: NewArgs) -> Result<(), Error> {
    check_name(&args.name)?;
    let sdk = sdk_dir(args.sdk.as_deref())?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(Error::Refused(format!(
            "{} exists and is not empty: choose another folder with --dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
    let absolute = dir
        .canonicalize()
        .map_err(Error::io("cannot resolve", &dir))?;
    let dependency = sdk_dependency(&absolute, &sdk);
    for (path, contents) in FILES {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
        }
        std::fs::write(&file, render(contents, &args.name, &dependency))
            .map_err(Error::io("cannot write", &file))?;
    }
    let library = args.name.replace('-', "_");
    println!(
        "Created the handler crate {name} in {dir} (an alarm with hysteresis to start from; the \
         guest SDK's README walks through it):\n  {files}\n\nNext, in {dir}:\n  \
         cargo test                                        # the logic, natively\n  \
         cargo build --release --target wasm32-unknown-unknown\n  \
         {program} module test handler.yaml                # its test vectors, in the sandbox\n  \
         {program} module push target/wasm32-unknown-unknown/release/{library}.wasm \
         REGISTRY/{name}:{VERSION}",
        name = args.name,
        dir = dir.display(),
        files = FILES
            .iter()
            .map(|(path, _)| *path)
            .collect::<Vec<_>>()
            .join("  "),
        program = program(),
    );
    Ok(())
}

/// A name that is a valid crate name, library name and HandlerModule `spec.module`.
fn check_name(name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(Error::Refused(format!(
            "the handler name {name:?} is not valid: 1-64 lower-case letters, digits, '-' and '_', starting with a letter"
        )));
    }
    if RESERVED.contains(&name.replace('-', "_").as_str()) {
        return Err(Error::Refused(format!(
            "the handler name {name:?} is a Rust keyword or a crate the handler links: choose another"
        )));
    }
    Ok(())
}

/// The guest SDK's folder, checked to be one.
fn sdk_dir(given: Option<&Path>) -> Result<PathBuf, Error> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-modules/guest");
    let dir = given.unwrap_or(&built_from);
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    if !manifest.contains("name = \"edgefleet-guest\"") {
        return Err(Error::Refused(format!(
            "{} is not the guest SDK (no Cargo.toml of edgefleet-guest there): give its folder, device-modules/guest of the edgefleet repository, with --sdk",
            dir.display()
        )));
    }
    dir.canonicalize()
        .map_err(Error::io("cannot resolve", dir.to_path_buf()))
}

/// The crate's dependency on the SDK: a relative path when the crate is inside the SDK's repository
/// (both move together), else an absolute one.
fn sdk_dependency(crate_dir: &Path, sdk: &Path) -> String {
    let repository = sdk.parent().and_then(Path::parent);
    let path = match repository {
        Some(root) if crate_dir.starts_with(root) => relative(crate_dir, sdk),
        _ => sdk.to_path_buf(),
    };
    let text = path
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("path = \"{text}\"")
}

/// `to` relative to `from`; both absolute and without `.` or `..`.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component<'_>> = from.components().collect();
    let to: Vec<Component<'_>> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path: PathBuf = from[common..].iter().map(|_| "..").collect();
    path.extend(&to[common..]);
    path
}

/// A template file with the new handler's names and SDK dependency.
fn render(template: &str, name: &str, dependency: &str) -> String {
    template
        .replace(&format!("{CRATE}-{VERSION}"), &object_name(name, VERSION))
        .replace(CRATE, name)
        .replace(LIBRARY, &name.replace('-', "_"))
        .replace(SDK_DEPENDENCY, dependency)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> &'static str {
        FILES.iter().find(|(p, _)| *p == path).unwrap().1
    }

    #[test]
    fn every_template_file_is_written() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-modules/template");
        let mut found = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                // What building the template in place leaves behind.
                if name == "target" || name == "Cargo.lock" {
                    continue;
                }
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    found.push(name);
                }
            }
        }
        found.sort();
        let mut listed: Vec<&str> = FILES.iter().map(|(path, _)| *path).collect();
        listed.sort();
        assert_eq!(found, listed);
    }

    #[test]
    fn the_names_and_the_sdk_are_substituted() {
        assert!(file("Cargo.toml").contains(SDK_DEPENDENCY));
        let cargo = render(file("Cargo.toml"), "tank-level", "path = \"/sdk\"");
        assert!(cargo.contains("name = \"tank-level\"\n"), "{cargo}");
        assert!(
            cargo.contains("edgefleet-guest = { path = \"/sdk\" }"),
            "{cargo}"
        );
        let yaml = render(file("handler.yaml"), "tank_level", SDK_DEPENDENCY);
        for expected in [
            "  name: tank-level-0.1.0\n",
            "  module: tank_level\n",
            "  file: target/wasm32-unknown-unknown/release/tank_level.wasm\n",
        ] {
            assert!(yaml.contains(expected), "{expected:?} in {yaml}");
        }
        for (path, contents) in FILES {
            let rendered = render(contents, "tank-level", "path = \"/sdk\"");
            assert!(
                !rendered.contains("handler-template") && !rendered.contains("handler_template"),
                "{path} keeps a template name"
            );
        }
    }

    #[test]
    fn names_must_make_a_crate() {
        for good in ["tank-level", "t1", "door_bell"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Tank",
            "1tank",
            "-tank",
            "tank.level",
            "fn",
            "std",
            "edgefleet-guest",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&"t".repeat(65)).is_err());
    }

    #[test]
    fn the_sdk_is_relative_inside_its_repository() {
        let sdk = Path::new("/src/edgefleet/device-modules/guest");
        assert_eq!(
            sdk_dependency(Path::new("/src/edgefleet/device-modules/tank"), sdk),
            "path = \"../guest\""
        );
        assert_eq!(
            sdk_dependency(Path::new("/src/edgefleet/handlers/tank"), sdk),
            "path = \"../../device-modules/guest\""
        );
        assert_eq!(
            sdk_dependency(Path::new("/tmp/tank"), sdk),
            "path = \"/src/edgefleet/device-modules/guest\""
        );
    }
}
