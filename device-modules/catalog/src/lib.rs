//! The device modules, for tests, benchmarks and simulators on the host.
//!
//! - [`handler_wasm`]: the four handler modules, built from their crates (`device-modules/<handler>`)
//!   for `wasm32-unknown-unknown` on first use, once per process, by running cargo.
//! - [`c_handler_wasm`]: the handlers written in C over the C SDK (`device-modules/c`), built with
//!   clang and wasm-ld for `wasm32` on first use, once per process.
//! - [`hostile_wasm`] and [`probe_wasm`]: hand-written modules in WebAssembly text
//!   (`device-modules/hostile/*.wat`, `device-modules/probes/*.wat`, embedded in this crate), parsed on
//!   use; [`HOSTILE`] and [`PROBES`] list them. The hostile modules each break one rule of guest ABI v1 or one class limit; the probes
//!   observe what the agent gives an interaction (fresh memory and globals, state, the memory rewrite,
//!   timing). Each file's header comment says what it does and what the agent should answer.
//! - [`rebuilt`]: a module with a custom section naming a build — another binary and digest, the
//!   same behaviour: another version to roll out.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, OnceLock};

/// A device-class handler module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handler {
    Thermostat,
    Meter,
    Lock,
    AirQuality,
}

impl Handler {
    /// The handler's short name, as its directory under `device-modules/` is named.
    pub const fn name(self) -> &'static str {
        match self {
            Handler::Thermostat => "thermostat",
            Handler::Meter => "meter",
            Handler::Lock => "lock",
            Handler::AirQuality => "air-quality",
        }
    }

    /// All handlers.
    pub const fn all() -> [Handler; 4] {
        [
            Handler::Thermostat,
            Handler::Meter,
            Handler::Lock,
            Handler::AirQuality,
        ]
    }

    /// The cargo package that builds the handler.
    pub const fn package(self) -> &'static str {
        match self {
            Handler::Thermostat => "edgefleet-thermostat",
            Handler::Meter => "edgefleet-meter",
            Handler::Lock => "edgefleet-lock",
            Handler::AirQuality => "edgefleet-air-quality",
        }
    }

    fn artifact(self) -> &'static str {
        match self {
            Handler::Thermostat => "edgefleet_thermostat.wasm",
            Handler::Meter => "edgefleet_meter.wasm",
            Handler::Lock => "edgefleet_lock.wasm",
            Handler::AirQuality => "edgefleet_air_quality.wasm",
        }
    }
}

/// A device-class handler module written in C (`device-modules/c/<name>/<name>.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CHandler {
    /// A pressure sensor with a threshold alarm (`device-modules/c/pressure/pressure.c`).
    Pressure,
}

impl CHandler {
    /// The handler's short name, as its directory under `device-modules/c/` is named.
    pub const fn name(self) -> &'static str {
        match self {
            CHandler::Pressure => "pressure",
        }
    }

    /// All C handlers.
    pub const fn all() -> [CHandler; 1] {
        [CHandler::Pressure]
    }

    /// The handler's C source.
    pub fn source(self) -> PathBuf {
        c_sdk_dir()
            .join(self.name())
            .join(format!("{}.c", self.name()))
    }
}

/// Building the handler modules failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    #[error(
        "the wasm32-unknown-unknown Rust target is not installed: run scripts/setup.sh\n{stderr}"
    )]
    MissingTarget { stderr: String },
    #[error("could not run {cargo}: {source}")]
    Spawn {
        cargo: String,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("cargo failed to build the handler modules ({status}):\n{stderr}")]
    Cargo { status: ExitStatus, stderr: String },
    #[error(
        "could not run {clang} ({source}): the C handlers build with clang and lld; run \
         scripts/setup.sh (Debian packages clang and lld), or set CLANG to a clang that targets wasm32"
    )]
    MissingClang {
        clang: String,
        #[source]
        source: Arc<io::Error>,
    },
    #[error(
        "clang found no wasm-ld to link the C handler: install lld (scripts/setup.sh does)\n{stderr}"
    )]
    MissingWasmLd { stderr: String },
    #[error("clang failed to build {} ({status}):\n{stderr}", file.display())]
    Clang {
        file: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
    #[error("could not create {}: {source}", path.display())]
    OutputDir {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("could not read the built module {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
}

/// The bytes of `handler`'s module, as `cargo build --release --target wasm32-unknown-unknown` makes it
/// with the workspace's `.cargo/config.toml` (imported memory, 16 KiB stack, one-page initial memory),
/// minus DWARF.
///
/// The first call builds all four handlers in one cargo run; later calls in the process reuse that
/// build (or its error) and only read the file. cargo is `$CARGO` (set by cargo for the tests and
/// build scripts it runs), else `cargo` on the `PATH`. The build uses its own target directory,
/// `<workspace>/target/device-modules`: a caller inside `cargo test` or `cargo bench` holds the lock of
/// the workspace's target directory until it exits.
pub fn handler_wasm(handler: Handler) -> Result<Vec<u8>, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(build_handlers)
        .as_ref()
        .map_err(Clone::clone)?;
    let path = dir.join(handler.artifact());
    std::fs::read(&path).map_err(|source| BuildError::Read {
        path,
        source: Arc::new(source),
    })
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the catalog crate lives in <workspace>/device-modules/catalog")
}

/// Runs cargo once for all handlers and returns the directory holding their modules.
fn build_handlers() -> Result<PathBuf, BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = workspace_root().join("target").join("device-modules");
    let mut command = Command::new(&cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
        // The agent has no use for DWARF, which would be nearly all of a module's bytes.
        .args(["--config", "profile.release.strip=\"debuginfo\""])
        .arg("--target-dir")
        .arg(&target_dir)
        // Either would replace the [target.wasm32-unknown-unknown] rustflags of .cargo/config.toml,
        // which make the module import its memory.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for handler in Handler::all() {
        command.args(["-p", handler.package()]);
    }
    let output = command.output().map_err(|source| BuildError::Spawn {
        cargo: cargo.to_string_lossy().into_owned(),
        source: Arc::new(source),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        return Err(build_failure(output.status, stderr));
    }
    Ok(target_dir.join("wasm32-unknown-unknown").join("release"))
}

/// Tells a missing `wasm32-unknown-unknown` target (rustc finds no `core` for it) from other failures.
fn build_failure(status: ExitStatus, stderr: String) -> BuildError {
    if stderr.contains("target may not be installed")
        || stderr.contains("can't find crate for `core`")
    {
        BuildError::MissingTarget { stderr }
    } else {
        BuildError::Cargo { status, stderr }
    }
}

/// How the C handlers are compiled and linked (device-modules/c/README.md shows the same command):
/// core wasm32 without libc, importing `env.memory` (guest ABI v1), a 16 KiB stack placed first so
/// that an overflow traps, a one-page initial memory, and no name or producers sections.
const C_FLAGS: &[&str] = &[
    "--target=wasm32",
    "-std=c11",
    "-Os",
    "-nostdlib",
    "-ffreestanding",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wl,--no-entry",
    "-Wl,--import-memory",
    "-Wl,--stack-first",
    "-Wl,-z,stack-size=16384",
    "-Wl,--initial-memory=65536",
    "-Wl,--strip-all",
];

/// The bytes of the C handler's module, as clang builds it from [`CHandler::source`] with
/// the flags of `C_FLAGS` and the C SDK's headers (`device-modules/c/include`).
///
/// The first call for a handler builds it into `<workspace>/target/device-modules/c/<name>.wasm`;
/// later calls in the process reuse that build (or its error). clang is `$CLANG`, else `clang` on
/// the `PATH`; it needs wasm-ld (Debian's `lld`) beside it. [`BuildError::MissingClang`] and
/// [`BuildError::MissingWasmLd`] say what to install; any other failure carries clang's stderr.
pub fn c_handler_wasm(handler: CHandler) -> Result<Vec<u8>, BuildError> {
    const COUNT: usize = CHandler::all().len();
    static BUILT: [OnceLock<Result<Vec<u8>, BuildError>>; COUNT] =
        [const { OnceLock::new() }; COUNT];
    BUILT[handler as usize]
        .get_or_init(|| build_c(&clang(), handler))
        .clone()
}

/// The clang to build C with: `$CLANG`, else `clang`.
fn clang() -> OsString {
    std::env::var_os("CLANG").unwrap_or_else(|| "clang".into())
}

/// The C SDK: its headers under `include/`, a directory per handler.
fn c_sdk_dir() -> PathBuf {
    workspace_root().join("device-modules").join("c")
}

/// Where built C programs go (modules and the native CBOR tests).
fn c_out_dir() -> Result<PathBuf, BuildError> {
    let path = workspace_root()
        .join("target")
        .join("device-modules")
        .join("c");
    std::fs::create_dir_all(&path).map_err(|source| BuildError::OutputDir {
        path: path.clone(),
        source: Arc::new(source),
    })?;
    Ok(path)
}

/// Runs `clang` on `source` with `flags` and the SDK's include directory, writing `out`.
fn run_clang(clang: &OsStr, flags: &[&str], source: &Path, out: &Path) -> Result<(), BuildError> {
    let output = Command::new(clang)
        .args(flags)
        .arg("-I")
        .arg(c_sdk_dir().join("include"))
        .arg("-o")
        .arg(out)
        .arg(source)
        .output()
        .map_err(|source| BuildError::MissingClang {
            clang: clang.to_string_lossy().into_owned(),
            source: Arc::new(source),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        Err(clang_failure(source, output.status, stderr))
    }
}

/// Tells a missing wasm-ld (clang: `Executable "wasm-ld" doesn't exist!`) from other failures.
fn clang_failure(source: &Path, status: ExitStatus, stderr: String) -> BuildError {
    if stderr.contains("wasm-ld") && stderr.contains("doesn't exist") {
        BuildError::MissingWasmLd { stderr }
    } else {
        BuildError::Clang {
            file: source.to_path_buf(),
            status,
            stderr,
        }
    }
}

/// Builds one C handler and returns its module. Each process links to its own file and renames it
/// into place, so concurrent test processes never read a half-written module.
fn build_c(clang: &OsStr, handler: CHandler) -> Result<Vec<u8>, BuildError> {
    let dir = c_out_dir()?;
    let partial = dir.join(format!("{}.{}.wasm", handler.name(), std::process::id()));
    run_clang(clang, C_FLAGS, &handler.source(), &partial)?;
    let wasm = std::fs::read(&partial).map_err(|source| BuildError::Read {
        path: partial.clone(),
        source: Arc::new(source),
    })?;
    let path = dir.join(format!("{}.wasm", handler.name()));
    std::fs::rename(&partial, &path).map_err(|source| BuildError::OutputDir {
        path,
        source: Arc::new(source),
    })?;
    Ok(wasm)
}

/// Declares a set of WAT modules under `device-modules/<dir>/`: the public list of names and their
/// sources, embedded at compile time.
macro_rules! wat_set {
    ($(#[$doc:meta])* $names:ident, $sources:ident, $dir:literal: [$($name:literal),+ $(,)?]) => {
        $(#[$doc])*
        pub const $names: &[&str] = &[$($name),+];
        const $sources: &[&str] = &[$(
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../", $dir, "/", $name, ".wat"))
        ),+];
    };
}

wat_set!(
    /// The hostile modules, by name (`device-modules/hostile/<name>.wat`).
    HOSTILE, HOSTILE_SOURCES, "hostile": [
        "infinite_loop",
        "start_loop",
        "memory_bomb",
        "deep_recursion",
        "trap",
        "oversized_output",
        "too_many_outputs",
        "forbidden_topic",
        "unknown_import",
        "wrong_abi",
        "no_abi_section",
        "big_memory",
        "huge_table",
        "state_bomb",
        "out_of_bounds_host_calls",
    ]
);

wat_set!(
    /// The probe modules, by name (`device-modules/probes/<name>.wat`).
    PROBES, PROBE_SOURCES, "probes": [
        "leak_probe",
        "state_counter",
        "own_memory",
        "echo",
        "slow",
        "publish_ok",
        "crash_on_marker",
        "bulk_output",
    ]
);

/// The binary of the hostile module `name`.
///
/// # Panics
///
/// If `name` is not one of [`HOSTILE`]. (Every listed module parses: the crate's tests check it.)
pub fn hostile_wasm(name: &str) -> Vec<u8> {
    parse("hostile", HOSTILE, HOSTILE_SOURCES, name)
}

/// The binary of the probe module `name`.
///
/// # Panics
///
/// If `name` is not one of [`PROBES`]. (Every listed module parses: the crate's tests check it.)
pub fn probe_wasm(name: &str) -> Vec<u8> {
    parse("probes", PROBES, PROBE_SOURCES, name)
}

/// `wasm` with a custom section `edgefleet_build` holding `build` appended: another binary (another
/// digest, what a rebuild or a toolchain update produces) with the same behaviour.
pub fn rebuilt(wasm: &[u8], build: &str) -> Vec<u8> {
    let name = b"edgefleet_build";
    let mut payload = Vec::new();
    leb128(&mut payload, name.len());
    payload.extend_from_slice(name);
    payload.extend_from_slice(build.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    leb128(&mut out, payload.len());
    out.extend(payload);
    out
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn parse(set: &str, names: &[&str], sources: &[&str], name: &str) -> Vec<u8> {
    let Some(index) = names.iter().position(|&known| known == name) else {
        panic!("no module named {name:?} in device-modules/{set}, which has {names:?}");
    };
    wat::parse_str(sources[index])
        .unwrap_or_else(|e| panic!("device-modules/{set}/{name}.wat does not parse: {e}"))
}

#[cfg(test)]
mod tests;
