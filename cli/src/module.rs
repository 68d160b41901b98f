//! `edgefleet module new|push|inspect|test`: a new handler crate from the template (`new`, in
//! [`new`]), handler modules as Wasm OCI artifacts, and their test vectors (`test`, in [`vectors`]).
//!
//! `push` refuses locally what no agent would run: the module goes through the sandbox's own
//! admission (`edgefleet_sandbox::admission::admit`, the check every agent and the controller run,
//! under the widest limits a class can set), so the operator sees the agent's message before
//! anything is pushed. It pushes with the controller's own OCI code
//! (`edgefleet_controller::oci::Registry::push`, the CNCF Wasm layout), and prints the reference
//! pinned by digest and the HandlerModule that names it (or applies it, `--apply`).
//!
//! `inspect` reads a file or pulls a pinned reference (verified as the controller verifies it)
//! and says what the module is: size, SHA-256, guest ABI, imports, exports, and the verdict of
//! admission.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use edgefleet_controller::oci::{Registry, RegistryAuth, RegistryOptions};
use edgefleet_controller::resources::{HandlerModule, HandlerModuleSpec};
use edgefleet_guest_abi::ABI_SECTION;
use edgefleet_protocol::manifest::MAX_MODULE_BYTES;
use edgefleet_protocol::{ClassLimits, GUEST_ABI_VERSION, Sha256Digest};
use serde::Serialize;

mod new;
mod vectors;

use crate::output::{Format, indent, table, to_yaml};
use crate::target::{Target, TargetArgs};
use crate::{Error, program};

pub(crate) const EXAMPLES: &str = "\
Examples:
  # A new handler crate in ./tank-level, from the SDK's template
  edgefleet module new tank-level

  # Push a module; prints the pinned reference and a HandlerModule to apply
  edgefleet module push thermostat.wasm registry.example.com/edgefleet/thermostat:1.0.0 > thermostat.yaml

  # Push and apply the HandlerModule in one go (to the cluster of the kubeconfig)
  edgefleet module push thermostat.wasm registry.example.com/edgefleet/thermostat:1.0.0 --apply

  # What is in a module, and would agents run it?
  edgefleet module inspect thermostat.wasm
  edgefleet module inspect registry.example.com/edgefleet/thermostat@sha256:9f86d0…

  # Run a HandlerModule's test vectors locally, as the controller runs them before distributing it
  edgefleet module test thermostat-1.0.0.yaml --wasm thermostat.wasm";

/// The variable holding the registry password for --registry-user.
const PASSWORD_VARIABLE: &str = "EDGEFLEET_REGISTRY_PASSWORD";

/// Arguments of `edgefleet module`.
#[derive(Debug, Args)]
pub struct ModuleArgs {
    #[command(subcommand)]
    command: ModuleCommand,
}

#[derive(Debug, Subcommand)]
enum ModuleCommand {
    /// Create a handler crate to start from: a device class's logic and payloads in Rust, its
    /// wasm32 glue, native tests and a HandlerModule with test vectors.
    ///
    /// The crate (in --dir, default ./NAME) is the SDK's template (device-modules/template): an
    /// alarm with hysteresis on one reading, with its payloads declared with the guest SDK's
    /// `cbor::map!`. It depends on the guest SDK by path (--sdk, default the one this program was
    /// built from) and is a workspace of its own, so it builds wherever it is: `cargo test` runs
    /// its logic natively, `cargo build --release --target wasm32-unknown-unknown` makes the
    /// module, and `module test handler.yaml` runs its test vectors in the sandbox. The guest
    /// SDK's README (device-modules/guest/README.md) walks through it.
    #[command(after_long_help = new::EXAMPLES)]
    New(new::NewArgs),
    /// Check a module as agents do, push it to an OCI registry, print the HandlerModule for it.
    ///
    /// The module is refused here, with the agents' own message, if admission refuses it (not
    /// WebAssembly 2.0, no or another guest ABI, imports the ABI does not provide, no handler
    /// export, too much memory …): nothing is pushed then. Otherwise it is pushed as a Wasm OCI
    /// artifact (CNCF layout: one application/wasm layer) to REGISTRY/REPOSITORY:TAG, and what is
    /// printed is the reference pinned by digest (HandlerModules must pin, since a tag can move)
    /// and a HandlerModule naming it, ready for `edgefleet apply -f -` (or pass --apply). The
    /// module's name and version default to the repository's last part and the tag.
    #[command(after_long_help = "\
Examples:
  edgefleet module push target/wasm32-unknown-unknown/release/thermostat.wasm \\
      registry.example.com/edgefleet/thermostat:1.4.0 | edgefleet apply -f -
  # A development registry with its own CA, module name and version given
  edgefleet module push meter.wasm localhost:5000/meter:latest --name meter --version 0.3.0 \\
      --registry-ca registry-ca.pem
  # Push and apply to a standalone controller
  edgefleet module push lock.wasm registry.local:5000/lock:2.0.0 --apply --server http://127.0.0.1:8080")]
    Push(PushArgs),
    /// Show what a module is: size, SHA-256, guest ABI, imports, exports, admission verdict.
    ///
    /// SOURCE is a .wasm file or an OCI reference pinned by digest
    /// (registry/repository@sha256:…), which is pulled and verified as the controller pulls it
    /// (manifest and layer re-hashed, exactly one application/wasm layer). The verdict is that of
    /// the agents' admission under the widest limits a class can set, plus a note when the
    /// default class limits would refuse it. Exits 0 either way: the verdict is the answer.
    #[command(after_long_help = "\
Examples:
  edgefleet module inspect thermostat.wasm
  edgefleet module inspect registry.example.com/edgefleet/thermostat@sha256:9f86d0… -o json")]
    Inspect(InspectArgs),
    /// Run a module's test vectors locally in the sandbox, as the controller runs them before
    /// any node receives the module.
    ///
    /// A HandlerModule may declare cases (spec.testVectors): given a class config, a device state
    /// and a message, the handler must send these commands and upstream messages (in order) and
    /// leave this state. Payloads are JSON, handed to the handler as CBOR (as a class config is)
    /// and compared as values: 21 equals 21.0, and a float the handler wrote in single precision
    /// equals the decimal written in the case. The controller refuses a module whose cases fail
    /// (reason TestVectorFailed, with the difference), so no node ever receives it; this command
    /// runs the same code on the same sandbox (edgefleet-sandbox-worker, WasmEdge) first.
    ///
    /// Prints one row per case (CASE, RESULT, DIFFERENCE) and exits 1 if any case failed.
    #[command(after_long_help = vectors::EXAMPLES)]
    Test(vectors::TestArgs),
}

/// How to reach the registry.
#[derive(Debug, Default, Args)]
pub(crate) struct RegistryFlags {
    /// A CA certificate (PEM) to trust for the registry, besides the system's roots.
    #[arg(long, value_name = "PEM")]
    registry_ca: Option<PathBuf>,
    /// Talk to the registry over plain HTTP (a development registry only).
    #[arg(long)]
    plain_http: bool,
    /// The registry user (basic auth); the password comes from $EDGEFLEET_REGISTRY_PASSWORD.
    #[arg(long, value_name = "USER")]
    registry_user: Option<String>,
}

impl RegistryFlags {
    /// Anonymous, over TLS, trusting the CA in `ca` besides the system's roots.
    pub(crate) fn trusting(ca: PathBuf) -> RegistryFlags {
        RegistryFlags {
            registry_ca: Some(ca),
            ..RegistryFlags::default()
        }
    }
}

/// `-o` of `module push`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
enum ObjectFormat {
    /// The HandlerModule as YAML, after `#` comment lines with the pinned reference.
    #[default]
    Yaml,
    /// The HandlerModule as JSON (the pinned reference is its spec.image).
    Json,
}

#[derive(Debug, Args)]
struct PushArgs {
    /// The module (.wasm), as built for the guest ABI (the edgefleet guest SDK).
    #[arg(value_name = "FILE.wasm")]
    file: PathBuf,
    /// Where to push it, by tag: registry/repository:tag.
    #[arg(value_name = "REGISTRY/REPO:TAG")]
    reference: String,
    /// The module's name, as agents report it (default: the repository's last part).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Its semantic version (default: the tag, when it is one).
    #[arg(long, value_name = "VERSION")]
    version: Option<String>,
    /// The HandlerModule's metadata.name (default: NAME-VERSION).
    #[arg(long, value_name = "NAME")]
    object_name: Option<String>,
    #[command(flatten)]
    registry: RegistryFlags,
    /// How to print the HandlerModule.
    #[arg(short, long, value_enum, default_value_t)]
    output: ObjectFormat,
    /// Apply the HandlerModule to the fleet (--server, or the kubeconfig) instead of printing it.
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// A .wasm file, or registry/repository@sha256:<digest>.
    #[arg(value_name = "FILE.wasm|REF@sha256:…")]
    source: String,
    #[command(flatten)]
    registry: RegistryFlags,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

/// Runs `edgefleet module …`.
pub fn run(args: ModuleArgs) -> Result<(), Error> {
    match args.command {
        ModuleCommand::New(args) => new::run(args),
        ModuleCommand::Push(args) => push(args),
        ModuleCommand::Inspect(args) => inspect(args),
        ModuleCommand::Test(args) => vectors::run(args),
    }
}

/// The widest limits a class can set: what the controller admits modules under. A module refused
/// under these is refused by every agent, whatever its class.
fn widest_limits() -> ClassLimits {
    ClassLimits {
        max_memory_pages: 4096,
        max_module_bytes: MAX_MODULE_BYTES as u32,
        ..ClassLimits::default()
    }
}

fn push(args: PushArgs) -> Result<(), Error> {
    let wasm = read_module(&args.file)?;
    let Pushed { module, summary } = crate::block_on(push_module(
        &Push {
            wasm: &wasm,
            source: &args.file.display().to_string(),
            reference: &args.reference,
            name: args.name.as_deref(),
            version: args.version.as_deref(),
            object_name: args.object_name.as_deref(),
        },
        &args.registry,
    ))?;
    if args.apply {
        println!("{summary}");
        let yaml = to_yaml(&module)?;
        return crate::block_on(async {
            let target = Target::connect(&args.target).await?;
            let applied = target
                .apply(&[("the pushed module's HandlerModule".into(), yaml)], false)
                .await?;
            crate::apply::print_applied(&applied);
            Ok(())
        });
    }
    match args.output {
        ObjectFormat::Yaml => {
            let yaml = to_yaml(&module)?;
            let comments: String = summary.lines().map(|l| format!("# {l}\n")).collect();
            print!("{comments}---\n{yaml}");
        }
        ObjectFormat::Json => {
            eprintln!("{summary}");
            let json = serde_json::to_string_pretty(&module).map_err(|e| Error::Output {
                format: "json",
                reason: e.to_string(),
            })?;
            println!("{json}");
        }
    }
    Ok(())
}

/// A module to check and push: what `module push` does with its file, and `edgefleet demo --kube`
/// with the demo's modules.
pub(crate) struct Push<'a> {
    /// The module.
    pub wasm: &'a [u8],
    /// Where it comes from, for messages (the file).
    pub source: &'a str,
    /// registry/repository:tag.
    pub reference: &'a str,
    /// The module's name (default: the repository's last part).
    pub name: Option<&'a str>,
    /// Its version (default: the tag).
    pub version: Option<&'a str>,
    /// The HandlerModule's name (default: NAME-VERSION).
    pub object_name: Option<&'a str>,
}

/// What [`push_module`] pushed: the HandlerModule naming it by digest, and a summary for the
/// operator.
pub(crate) struct Pushed {
    pub module: HandlerModule,
    pub summary: String,
}

/// Checks the module as agents do (admission), pushes it, and makes the HandlerModule for it.
pub(crate) async fn push_module(
    push: &Push<'_>,
    registry: &RegistryFlags,
) -> Result<Pushed, Error> {
    let reference = oci_client::Reference::try_from(push.reference).map_err(|e| {
        Error::Refused(format!(
            "{:?} is not an OCI reference: {e} (expected registry/repository:tag, e.g. registry.example.com/edgefleet/thermostat:1.0.0)",
            push.reference
        ))
    })?;
    let name = match push.name {
        Some(name) => name.to_owned(),
        None => reference
            .repository()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    check_module_name(&name, push.name.is_none())?;
    let version = match (push.version, reference.tag()) {
        (Some(version), _) => version.to_owned(),
        (None, Some(tag)) if is_semver(tag) => tag.to_owned(),
        (None, tag) => {
            return Err(Error::Refused(format!(
                "give the module's version with --version (the tag {} is not a semantic version like 1.4.0)",
                tag.map_or("(none)".to_owned(), |t| format!("{t:?}"))
            )));
        }
    };
    if !is_semver(&version) {
        return Err(Error::Refused(format!(
            "--version {version:?} is not a semantic version (1.4.0, 2.0.0-rc.1+build.7)"
        )));
    }
    let object_name = match push.object_name {
        Some(n) => n.to_owned(),
        None => object_name(&name, &version),
    };
    check_object_name(&object_name)?;

    let admitted = edgefleet_sandbox::admission::admit(push.wasm, &widest_limits()).map_err(|e| {
        Error::Refused(format!(
            "{} is refused by admission, as every agent would refuse it: {e}. Nothing was pushed",
            push.source
        ))
    })?;
    if let Err(e) = edgefleet_sandbox::admission::admit(push.wasm, &ClassLimits::default()) {
        eprintln!(
            "note: with the default class limits agents refuse it: {e} (set the DeviceClass's limits accordingly)"
        );
    }

    let client = registry_client(registry, reference.registry())?;
    let annotations = BTreeMap::from([
        ("org.opencontainers.image.title".to_owned(), name.clone()),
        (
            "org.opencontainers.image.version".to_owned(),
            version.clone(),
        ),
    ]);
    let pushed = client.push(push.reference, push.wasm, &annotations).await?;
    let module = HandlerModule::new(
        &object_name,
        HandlerModuleSpec {
            module: name,
            version,
            image: Some(pushed.pinned.clone()),
            file: None,
            sha256: Some(pushed.sha256.to_string()),
            abi_version: GUEST_ABI_VERSION,
            test_vectors: Vec::new(),
        },
    );
    let summary = format!(
        "Pushed {} ({} bytes, sha256 {}, {}) as\n  {}",
        push.source,
        pushed.size,
        pushed.sha256,
        admitted_summary(&admitted),
        pushed.pinned
    );
    Ok(Pushed { module, summary })
}

/// What the controller's status says of an admitted module.
fn admitted_summary(admitted: &edgefleet_sandbox::admission::Admitted) -> String {
    format!(
        "admitted: guest ABI v{GUEST_ABI_VERSION}, memory at least {} pages{}",
        admitted.memory.min_pages,
        if admitted.rewritten_memory {
            ", own memory rewritten to an import"
        } else {
            ""
        }
    )
}

fn read_module(path: &Path) -> Result<Vec<u8>, Error> {
    let len = std::fs::metadata(path)
        .map_err(Error::io("cannot read", path))?
        .len();
    if len > MAX_MODULE_BYTES {
        return Err(Error::Refused(format!(
            "{} is {len} bytes, over the {MAX_MODULE_BYTES} bytes any module may have",
            path.display()
        )));
    }
    std::fs::read(path).map_err(Error::io("cannot read", path))
}

fn registry_client(flags: &RegistryFlags, registry: &str) -> Result<Registry, Error> {
    let extra_ca_pem = flags
        .registry_ca
        .as_ref()
        .map(|path| std::fs::read(path).map_err(Error::io("cannot read the registry CA", path)))
        .transpose()?;
    let auth = match &flags.registry_user {
        None => RegistryAuth::Anonymous,
        Some(user) => {
            let password = std::env::var(PASSWORD_VARIABLE).map_err(|_| {
                Error::Refused(format!(
                    "--registry-user {user}: set the password in ${PASSWORD_VARIABLE}"
                ))
            })?;
            RegistryAuth::Basic(user.clone(), password)
        }
    };
    Ok(Registry::with_options(RegistryOptions {
        extra_ca_pem,
        plain_http: if flags.plain_http {
            vec![registry.to_owned()]
        } else {
            Vec::new()
        },
        auth,
        ..RegistryOptions::default()
    })?)
}

/// The HandlerModule schema's rule for `spec.module`: 1–64 of `a-z 0-9 - _`, starting with a
/// letter or digit.
fn check_module_name(name: &str, defaulted: bool) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "the module name {name:?}{} is not valid: 1-64 lower-case letters, digits, '-' and '_', starting with a letter or digit{}",
            if defaulted {
                " (the repository's last part)"
            } else {
                ""
            },
            if defaulted {
                "; give one with --name"
            } else {
                ""
            }
        )))
    }
}

/// Semantic versioning 2.0.0 (the HandlerModule schema's pattern for `spec.version`).
fn is_semver(version: &str) -> bool {
    if version.is_empty() || version.len() > 64 {
        return false;
    }
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let number = |n: &str| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'))
    };
    let parts: Vec<&str> = core.split('.').collect();
    let tail = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    parts.len() == 3
        && parts.iter().all(|p| number(p))
        && pre.is_none_or(tail)
        && build.is_none_or(tail)
}

/// `name-version` as an object name: lower case, anything but `a-z 0-9 . -` as `-`.
fn object_name(name: &str, version: &str) -> String {
    let raw: String = format!("{name}-{version}")
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    raw.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// Kubernetes' rule for the names of these kinds (a DNS subdomain).
fn check_object_name(name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "--object-name {name:?} is not a valid object name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        )))
    }
}

/// What `module inspect` reports.
#[derive(Debug, Serialize)]
struct Inspection {
    source: String,
    size: u64,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest_digest: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    guest_abi: Option<u32>,
    memory: Vec<String>,
    defined_functions: usize,
    imports: Vec<String>,
    exports: Vec<String>,
    admitted: bool,
    admission: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_limits: Option<String>,
}

fn inspect(args: InspectArgs) -> Result<(), Error> {
    let path = Path::new(&args.source);
    let (wasm, manifest_digest, annotations) = if path.exists() {
        (read_module(path)?, None, BTreeMap::new())
    } else if args.source.ends_with(".wasm") || !args.source.contains('/') {
        return Err(Error::Refused(format!(
            "{}: no such file (give a .wasm file, or a reference pinned by digest: registry/repository@sha256:…)",
            args.source
        )));
    } else {
        let pinned = edgefleet_controller::oci::PinnedReference::parse(&args.source)?;
        let registry = registry_client(&args.registry, pinned.registry())?;
        let pulled =
            crate::block_on(async { Ok(registry.pull(&args.source, MAX_MODULE_BYTES).await?) })?;
        (
            pulled.wasm,
            Some(format!("sha256:{}", pulled.manifest_digest)),
            pulled.annotations,
        )
    };
    let survey = survey(&wasm);
    let (admitted, admission, default_limits) =
        match edgefleet_sandbox::admission::admit(&wasm, &widest_limits()) {
            Ok(admitted) => (
                true,
                admitted_summary(&admitted),
                edgefleet_sandbox::admission::admit(&wasm, &ClassLimits::default())
                    .err()
                    .map(|e| format!("refused with the default class limits: {e}")),
            ),
            Err(e) => (false, format!("refused: {e}"), None),
        };
    let inspection = Inspection {
        source: args.source.clone(),
        size: wasm.len() as u64,
        sha256: Sha256Digest::of(&wasm).to_string(),
        manifest_digest,
        annotations,
        guest_abi: survey.abi,
        memory: survey.memories,
        defined_functions: survey.functions,
        imports: survey.imports,
        exports: survey.exports,
        admitted,
        admission,
        default_limits,
    };
    match args.output {
        Format::Table => print!("{}", inspection_text(&inspection)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&inspection).map_err(|e| Error::Output {
                format: "json",
                reason: e.to_string(),
            })?
        ),
        Format::Yaml => print!("{}", to_yaml(&inspection)?),
    }
    Ok(())
}

fn inspection_text(i: &Inspection) -> String {
    let mut rows = vec![
        vec!["Source:".to_owned(), i.source.clone()],
        vec![
            "Size:".to_owned(),
            format!("{} bytes ({})", i.size, crate::get::human_bytes(i.size)),
        ],
        vec!["SHA-256:".to_owned(), i.sha256.clone()],
    ];
    if let Some(digest) = &i.manifest_digest {
        rows.push(vec!["Manifest:".to_owned(), digest.clone()]);
    }
    for (key, value) in &i.annotations {
        rows.push(vec!["Annotation:".to_owned(), format!("{key}={value}")]);
    }
    rows.push(vec![
        "Guest ABI:".to_owned(),
        i.guest_abi.map_or_else(
            || format!("none (no {ABI_SECTION} section)"),
            |v| format!("v{v}"),
        ),
    ]);
    rows.push(vec![
        "Memory:".to_owned(),
        if i.memory.is_empty() {
            "none".to_owned()
        } else {
            i.memory.join("; ")
        },
    ]);
    rows.push(vec![
        "Functions:".to_owned(),
        format!("{} defined", i.defined_functions),
    ]);
    let verdict = if i.admitted { "Admitted:" } else { "Refused:" };
    let mut text = table(&["", ""], rows.into_iter());
    // The table's header line is empty: drop it.
    text = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let list = |items: &[String]| {
        if items.is_empty() {
            "  <none>\n".to_owned()
        } else {
            indent(&items.join("\n"))
        }
    };
    text.push_str(&format!(
        "Imports ({}):\n{}",
        i.imports.len(),
        list(&i.imports)
    ));
    text.push_str(&format!(
        "Exports ({}):\n{}",
        i.exports.len(),
        list(&i.exports)
    ));
    text.push_str(&format!(
        "Admission:\n  {verdict} {}\n",
        i.admission
            .strip_prefix("admitted: ")
            .or_else(|| i.admission.strip_prefix("refused: "))
            .unwrap_or(&i.admission)
    ));
    if let Some(note) = &i.default_limits {
        text.push_str(&format!("  Note: {note}\n"));
    }
    if i.admitted {
        text.push_str(&format!("  (push it with `{} module push`)\n", program()));
    }
    text
}

/// What a module's sections declare, read without validating (admission says whether it is valid).
struct Survey {
    abi: Option<u32>,
    functions: usize,
    memories: Vec<String>,
    imports: Vec<String>,
    exports: Vec<String>,
}

fn survey(wasm: &[u8]) -> Survey {
    use wasmparser::{Payload, TypeRef};
    let mut survey = Survey {
        abi: None,
        functions: 0,
        memories: Vec::new(),
        imports: Vec::new(),
        exports: Vec::new(),
    };
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else { break };
        match payload {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports().flatten() {
                    let kind = match import.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => "func".to_owned(),
                        TypeRef::Memory(m) => {
                            survey.memories.push(format!(
                                "imported as {}.{}, {}",
                                import.module,
                                import.name,
                                pages(&m)
                            ));
                            "memory".to_owned()
                        }
                        TypeRef::Table(_) => "table".to_owned(),
                        TypeRef::Global(_) => "global".to_owned(),
                        TypeRef::Tag(_) => "tag".to_owned(),
                    };
                    survey
                        .imports
                        .push(format!("{}.{} ({kind})", import.module, import.name));
                }
            }
            Payload::FunctionSection(reader) => survey.functions = reader.count() as usize,
            Payload::ExportSection(reader) => {
                for export in reader.into_iter().flatten() {
                    let kind = format!("{:?}", export.kind).to_lowercase();
                    survey.exports.push(format!("{} ({kind})", export.name));
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader.into_iter().flatten() {
                    survey.memories.push(format!("defined, {}", pages(&memory)));
                }
            }
            Payload::CustomSection(reader) if reader.name() == ABI_SECTION => {
                survey.abi = <[u8; 4]>::try_from(reader.data())
                    .ok()
                    .map(u32::from_le_bytes);
            }
            _ => {}
        }
    }
    survey
}

/// `at least 17 pages of 64 KiB, at most 32`.
fn pages(memory: &wasmparser::MemoryType) -> String {
    format!(
        "at least {} pages of 64 KiB{}",
        memory.initial,
        memory
            .maximum
            .map(|max| format!(", at most {max}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_names() {
        for good in ["1.0.0", "0.3.10", "2.0.0-rc.1+build.7", "1.2.3+x"] {
            assert!(is_semver(good), "{good}");
        }
        for bad in ["latest", "1.0", "01.0.0", "1.0.0-", "1.0.0+", "v1.0.0", ""] {
            assert!(!is_semver(bad), "{bad}");
        }
        assert_eq!(object_name("thermostat", "1.0.0"), "thermostat-1.0.0");
        assert_eq!(
            object_name("air_quality", "2.0.0+b.7"),
            "air-quality-2.0.0-b.7"
        );
        assert!(check_module_name("air_quality", false).is_ok());
        assert!(check_module_name("Thermostat", true).is_err());
    }
}
