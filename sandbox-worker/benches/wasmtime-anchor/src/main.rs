//! Benchmark anchor: one guest ABI v1 interaction (`docs/guest-abi.md`) on wasmtime, timed.
//!
//! Runs a device-handler module the way wasmtime is fastest at "a fresh instance per message": the
//! pooling allocator, an `InstancePre`, and a new `Store` per interaction. Our WasmEdge sandbox is
//! measured against this number as a ratio. Two more variants give context: the pooling allocator with
//! its default (madvise) memory reset, and one warm instance called again and again (no isolation).
//!
//! Every interaction's result is checked (status 0, exactly one command equal to
//! `--expect-command-hex`) and the run fails on the first mismatch. Progress goes to stderr, one JSON
//! line to stdout:
//! `{"engine":"wasmtime 48.0.8","variants":[{"name":..,"median_ns":..,"p99_ns":..,"mean_ns":..},..]}`.
//!
//! It lives in a crate and process of its own: see README.md next to Cargo.toml.

use std::ops::Range;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser as _;
use wasm_encoder::{
    EntityType, ExportKind, ExportSection, ImportSection, MemorySection, RawSection,
};
use wasmparser::{
    ExportSectionReader, ExternalKind, ImportSectionReader, Parser, Payload, TypeRef, Validator,
};
use wasmtime::error::Context as _;
use wasmtime::{
    Caller, Config, Engine, Extern, InstanceAllocationStrategy, InstancePre, Linker, Memory,
    Module, ModuleExport, OptLevel, PoolingAllocationConfig, Result, Store, Strategy, bail, ensure,
    format_err,
};

/// Keep in step with the `wasmtime` pin in Cargo.toml.
const ENGINE: &str = "wasmtime 48.0.8";
/// The import module of the guest ABI v1 host functions.
const ABI: &str = "edgefleet_v1";
const HANDLE: &str = "edgefleet_handle";
/// The export name the rewritten module gives its memory, for the host functions.
const MEMORY: &str = "memory";
/// Pool slots: far more than the one instance alive at a time, as a real agent would size it.
const POOL_SLOTS: u32 = 100;
/// The ABI's default class limit, 16 pages.
const MAX_MEMORY_BYTES: usize = 16 * 64 * 1024;
/// Reset by memset instead of madvise: one page covers the handler's whole memory.
const KEEP_RESIDENT_BYTES: usize = 64 * 1024;
/// The ABI keeps at most this many bytes of a log line.
const MAX_LOG_LINE_BYTES: i32 = 512;

#[derive(clap::Parser)]
#[command(about = "Times guest ABI v1 interactions on wasmtime (see README.md)")]
struct Args {
    /// The handler module, built for guest ABI v1 (it imports `env.memory`).
    #[arg(long)]
    module: PathBuf,
    /// The device message payload, in hex.
    #[arg(long, value_parser = parse_hex)]
    message_hex: Bytes,
    /// The class config, in hex ('' for an empty config, i.e. the defaults).
    #[arg(long, value_parser = parse_hex)]
    config_hex: Bytes,
    /// The device's state, in hex; without it the device has none.
    #[arg(long, value_parser = parse_hex)]
    state_hex: Option<Bytes>,
    /// The one command every interaction must send, in hex.
    #[arg(long, value_parser = parse_hex)]
    expect_command_hex: Bytes,
    #[arg(long, default_value = "thermostat-1")]
    device_id: String,
    #[arg(long, default_value = "telemetry")]
    channel: String,
    /// Timed interactions per variant.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Untimed interactions run first, per variant.
    #[arg(long)]
    warmup: u32,
}

/// Bytes given in hex on the command line (a newtype: clap would read `Vec<u8>` as a list).
#[derive(Clone)]
struct Bytes(Vec<u8>);

fn parse_hex(text: &str) -> Result<Bytes, String> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("expected an even number of hex digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()
        .map(Bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What every interaction is given.
struct Inputs {
    message: Vec<u8>,
    device_id: String,
    channel: String,
    config: Vec<u8>,
    state: Option<Vec<u8>>,
}

/// What an interaction sends; the ABI host would commit it.
#[derive(Default)]
struct Outputs {
    commands: Vec<Vec<u8>>,
    /// (topic, payload)
    upstream: Vec<(Vec<u8>, Vec<u8>)>,
    new_state: Option<Vec<u8>>,
}

/// A `Store`'s data: one interaction.
struct Interaction {
    /// `'static` (leaked once): a store per interaction then costs no copy and no refcount.
    inputs: &'static Inputs,
    now_ms: i64,
    /// Looked up by name on the first host call that needs it, then reused.
    memory: Option<Memory>,
    outputs: Outputs,
}

impl Interaction {
    fn new(inputs: &'static Inputs) -> Interaction {
        Interaction {
            inputs,
            now_ms: now_ms(),
            memory: None,
            outputs: Outputs::default(),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runs = Runs {
        warmup: args.warmup,
        iterations: args.iterations,
    };
    let wasm = std::fs::read(&args.module)
        .with_context(|| format!("reading {}", args.module.display()))?;
    let wasm = define_memory(&wasm).context("rewriting the module's memory import")?;
    let inputs: &'static Inputs = Box::leak(Box::new(Inputs {
        message: args.message_hex.0,
        device_id: args.device_id,
        channel: args.channel,
        config: args.config_hex.0,
        state: args.state_hex.map(|b| b.0),
    }));
    let expected = args.expect_command_hex.0;

    let keep_resident = Handler::compile(&pooling_engine(true)?, &wasm)?;
    let defaults = Handler::compile(&pooling_engine(false)?, &wasm)?;
    let first = keep_resident.interact(inputs)?;
    eprintln!("first interaction: {}", describe(&first));
    check(&first, &expected)?;

    let variants = [
        measure("fresh: pooling + keep_resident", runs, &expected, || {
            keep_resident.interact(inputs)
        })?,
        measure("fresh: pooling defaults", runs, &expected, || {
            defaults.interact(inputs)
        })?,
        measure(
            "warm instance reused",
            runs,
            &expected,
            keep_resident.warm(inputs)?,
        )?,
    ];
    // The names are fixed ASCII without quotes or backslashes: no escaping needed.
    let json: Vec<String> = variants
        .iter()
        .map(|v| {
            format!(
                r#"{{"name":"{}","median_ns":{},"p99_ns":{},"mean_ns":{}}}"#,
                v.name, v.median_ns, v.p99_ns, v.mean_ns
            )
        })
        .collect();
    println!(r#"{{"engine":"{ENGINE}","variants":[{}]}}"#, json.join(","));
    Ok(())
}

/// The handler's status and outputs.
type Outcome = (i32, Outputs);

fn describe((status, outputs): &Outcome) -> String {
    let mut text = format!("status {status}");
    for command in &outputs.commands {
        text += &format!(", command {}", hex(command));
    }
    if let Some(state) = &outputs.new_state {
        text += &format!(", state {}", hex(state));
    }
    for (topic, payload) in &outputs.upstream {
        let topic = String::from_utf8_lossy(topic);
        text += &format!(", publish on {topic:?} {}", hex(payload));
    }
    text
}

/// A benchmark of a wrong result is worthless: anything but the expected command stops the run.
fn check(outcome: &Outcome, expected: &[u8]) -> Result<()> {
    let (status, outputs) = outcome;
    ensure!(
        *status == 0 && matches!(outputs.commands.as_slice(), [only] if only == expected),
        "expected status 0 and one command {}, got {}",
        hex(expected),
        describe(outcome)
    );
    Ok(())
}

#[derive(Clone, Copy)]
struct Runs {
    warmup: u32,
    iterations: u32,
}

/// Runs `interaction` `warmup` times, then `iterations` times timing each, checking every result.
fn measure(
    name: &'static str,
    runs: Runs,
    expected: &[u8],
    mut interaction: impl FnMut() -> Result<Outcome>,
) -> Result<Variant> {
    eprintln!(
        "{name}: {} warmup + {} timed interactions",
        runs.warmup, runs.iterations
    );
    for _ in 0..runs.warmup {
        check(&interaction()?, expected)?;
    }
    let mut times = Vec::with_capacity(runs.iterations as usize);
    for _ in 0..runs.iterations {
        let start = Instant::now();
        let outcome = interaction()?;
        times.push(start.elapsed().as_nanos() as u64);
        check(&outcome, expected)?;
    }
    times.sort_unstable();
    let n = times.len();
    let variant = Variant {
        name,
        median_ns: times[n / 2],
        // Nearest rank: the smallest time at or above 99 % of the samples.
        p99_ns: times[(n * 99).div_ceil(100) - 1],
        mean_ns: times.iter().sum::<u64>() / n as u64,
    };
    eprintln!(
        "{name}: median {} ns, p99 {} ns, mean {} ns",
        variant.median_ns, variant.p99_ns, variant.mean_ns
    );
    Ok(variant)
}

/// One variant's timings of an interaction.
struct Variant {
    name: &'static str,
    median_ns: u64,
    p99_ns: u64,
    mean_ns: u64,
}

/// Cranelift at its default opt level (speed) and the pooling allocator, with or without keeping
/// freed memory resident.
fn pooling_engine(keep_resident: bool) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(POOL_SLOTS)
        .total_memories(POOL_SLOTS)
        .total_tables(POOL_SLOTS)
        .max_memory_size(MAX_MEMORY_BYTES);
    if keep_resident {
        pool.linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES);
    }
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// The module compiled for one engine, its imports resolved once.
struct Handler {
    pre: InstancePre<Interaction>,
    /// `edgefleet_handle`, resolved once instead of by name per interaction.
    handle: ModuleExport,
}

impl Handler {
    fn compile(engine: &Engine, wasm: &[u8]) -> Result<Handler> {
        let module = Module::new(engine, wasm)?;
        let handle = module
            .get_export_index(HANDLE)
            .ok_or_else(|| format_err!("the module does not export {HANDLE}"))?;
        let pre = linker(engine)?.instantiate_pre(&module)?;
        Ok(Handler { pre, handle })
    }

    /// One interaction as the agent runs it: a fresh instance in a fresh store, dropped after.
    fn interact(&self, inputs: &'static Inputs) -> Result<Outcome> {
        let mut store = Store::new(self.pre.module().engine(), Interaction::new(inputs));
        let instance = self.pre.instantiate(&mut store)?;
        let Some(Extern::Func(handle)) = instance.get_module_export(&mut store, &self.handle)
        else {
            bail!("{HANDLE} is not a function");
        };
        let status = handle.typed::<(), i32>(&store)?.call(&mut store, ())?;
        // Dropping the store (inside the timed call) hands the instance's slot back to the pool.
        Ok((status, store.into_data().outputs))
    }

    /// One instance kept for every call; only the outputs and the time are reset between calls.
    fn warm(&self, inputs: &'static Inputs) -> Result<impl FnMut() -> Result<Outcome>> {
        let mut store = Store::new(self.pre.module().engine(), Interaction::new(inputs));
        let instance = self.pre.instantiate(&mut store)?;
        let handle = instance.get_typed_func::<(), i32>(&mut store, HANDLE)?;
        Ok(move || {
            store.data_mut().now_ms = now_ms();
            let status = handle.call(&mut store, ())?;
            Ok((status, std::mem::take(&mut store.data_mut().outputs)))
        })
    }
}

/// The ten `edgefleet_v1` host functions. A host function's error traps the guest.
fn linker(engine: &Engine) -> Result<Linker<Interaction>> {
    type C<'a> = Caller<'a, Interaction>;
    let mut linker = Linker::new(engine);
    linker
        .func_wrap(ABI, "message", |c: C, ptr: i32, cap: i32| {
            copy_out(c, ptr, cap, |i| Some(&i.message))
        })?
        .func_wrap(ABI, "device_id", |c: C, ptr: i32, cap: i32| {
            copy_out(c, ptr, cap, |i| Some(i.device_id.as_bytes()))
        })?
        .func_wrap(ABI, "channel", |c: C, ptr: i32, cap: i32| {
            copy_out(c, ptr, cap, |i| Some(i.channel.as_bytes()))
        })?
        .func_wrap(ABI, "config", |c: C, ptr: i32, cap: i32| {
            copy_out(c, ptr, cap, |i| Some(&i.config))
        })?
        .func_wrap(ABI, "state_get", |c: C, ptr: i32, cap: i32| {
            copy_out(c, ptr, cap, |i| i.state.as_deref())
        })?
        .func_wrap(ABI, "state_set", |mut c: C, ptr: i32, len: i32| {
            c.data_mut().outputs.new_state = Some(guest_bytes(&mut c, ptr, len)?);
            Ok(())
        })?
        .func_wrap(ABI, "command", |mut c: C, ptr: i32, len: i32| {
            let payload = guest_bytes(&mut c, ptr, len)?;
            c.data_mut().outputs.commands.push(payload);
            Ok(())
        })?
        .func_wrap(
            ABI,
            "publish",
            |mut c: C, topic_ptr: i32, topic_len: i32, ptr: i32, len: i32| {
                let topic = guest_bytes(&mut c, topic_ptr, topic_len)?;
                let payload = guest_bytes(&mut c, ptr, len)?;
                c.data_mut().outputs.upstream.push((topic, payload));
                Ok(())
            },
        )?
        .func_wrap(ABI, "log", |mut c: C, _level: i32, ptr: i32, len: i32| {
            // The line must lie in memory; its text is not kept (nothing here reads it).
            let size = memory(&mut c)?.data_size(&c);
            guest_range(size, ptr, len.clamp(0, MAX_LOG_LINE_BYTES) as usize).map(drop)
        })?
        .func_wrap(ABI, "now_ms", |c: C| c.data().now_ms)?;
    Ok(linker)
}

/// The ABI's "copy" convention: returns the value's full length and copies it into `[ptr, ptr + len)`
/// only when it fits in `cap`; `-1` when there is no value (`state_get` without state).
fn copy_out(
    mut caller: Caller<'_, Interaction>,
    ptr: i32,
    cap: i32,
    value: fn(&'static Inputs) -> Option<&'static [u8]>,
) -> Result<i32> {
    let Some(value) = value(caller.data().inputs) else {
        return Ok(-1);
    };
    ensure!(cap >= 0, "host call with negative buffer capacity {cap}");
    if value.len() <= cap as usize {
        let memory = memory(&mut caller)?;
        let data = memory.data_mut(&mut caller);
        let range = guest_range(data.len(), ptr, value.len())?;
        data[range].copy_from_slice(value);
    }
    Ok(i32::try_from(value.len())?)
}

/// A copy of guest memory `[ptr, ptr + len)`.
fn guest_bytes(caller: &mut Caller<'_, Interaction>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let len =
        usize::try_from(len).map_err(|_| format_err!("host call with negative length {len}"))?;
    let memory = memory(caller)?;
    let data = memory.data(&*caller);
    Ok(data[guest_range(data.len(), ptr, len)?].to_vec())
}

/// `[ptr, ptr + len)` if it lies within a memory of `size` bytes (pointers are unsigned offsets).
fn guest_range(size: usize, ptr: i32, len: usize) -> Result<Range<usize>> {
    if len == 0 {
        return Ok(0..0);
    }
    let start = ptr as u32 as usize;
    match start.checked_add(len) {
        Some(end) if end <= size => Ok(start..end),
        _ => bail!("host call with out-of-bounds memory range {start}+{len}"),
    }
}

fn memory(caller: &mut Caller<'_, Interaction>) -> Result<Memory> {
    if let Some(memory) = caller.data().memory {
        return Ok(memory);
    }
    let Some(Extern::Memory(memory)) = caller.get_export(MEMORY) else {
        bail!("the module exports no memory named {MEMORY}");
    };
    caller.data_mut().memory = Some(memory);
    Ok(memory)
}

/// The module with its `env.memory` import replaced by a memory it defines, with the same type, and
/// exports as `memory`: the pooling allocator only manages memories a module defines.
///
/// Memory index 0 stays the same (the import was the only memory) and so do function indices (only
/// a memory import goes), so every other section is copied as is.
fn define_memory(wasm: &[u8]) -> Result<Vec<u8>> {
    let mut out = wasm_encoder::Module::new();
    let mut imported = None;
    let mut defined = false;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload?;
        let Some((id, range)) = payload.as_section() else {
            continue; // the header, the end, and code entries (the code section is copied whole)
        };
        if !defined && ordered_after_memory(id) {
            let ty =
                imported.ok_or_else(|| format_err!("the module does not import env.memory"))?;
            out.section(MemorySection::new().memory(ty));
            defined = true;
        }
        match payload {
            Payload::ImportSection(reader) => {
                out.section(&imports_without_memory(reader, &mut imported)?);
            }
            Payload::MemorySection(_) => bail!("the module defines a memory (ABI v1 imports it)"),
            Payload::ExportSection(reader) => {
                out.section(&exports_with_memory(reader)?);
            }
            _ => {
                out.section(&RawSection {
                    id,
                    data: &wasm[range],
                });
            }
        }
    }
    ensure!(defined, "the module has no section after its memory");
    let wasm = out.finish();
    Validator::new()
        .validate_all(&wasm)
        .context("the rewritten module is invalid")?;
    Ok(wasm)
}

/// Whether a section with this id comes after the memory section (section order is not id order).
fn ordered_after_memory(id: u8) -> bool {
    use wasm_encoder::SectionId::*;
    [Tag, Global, Export, Start, Element, DataCount, Code, Data]
        .into_iter()
        .any(|s| s as u8 == id)
}

/// The import section without `env.memory`, whose type goes to `memory`.
fn imports_without_memory(
    reader: ImportSectionReader<'_>,
    memory: &mut Option<wasm_encoder::MemoryType>,
) -> Result<ImportSection> {
    let mut imports = ImportSection::new();
    for import in reader.into_imports() {
        let import = import?;
        match import.ty {
            TypeRef::Memory(ty) if (import.module, import.name) == ("env", "memory") => {
                *memory = Some(wasm_encoder::MemoryType {
                    minimum: ty.initial,
                    maximum: ty.maximum,
                    memory64: ty.memory64,
                    shared: ty.shared,
                    page_size_log2: ty.page_size_log2,
                });
            }
            TypeRef::Func(ty) => {
                imports.import(import.module, import.name, EntityType::Function(ty));
            }
            _ => bail!(
                "import {}.{} is neither env.memory nor a function",
                import.module,
                import.name
            ),
        }
    }
    Ok(imports)
}

/// The export section plus `memory` (memory 0), unless the module already exports it by that name.
fn exports_with_memory(reader: ExportSectionReader<'_>) -> Result<ExportSection> {
    let mut exports = ExportSection::new();
    let mut has_memory = false;
    for export in reader {
        let export = export?;
        let kind = match export.kind {
            ExternalKind::Func => ExportKind::Func,
            ExternalKind::Table => ExportKind::Table,
            ExternalKind::Memory => ExportKind::Memory,
            ExternalKind::Global => ExportKind::Global,
            ExternalKind::Tag => ExportKind::Tag,
            ExternalKind::FuncExact => bail!("export {} has kind FuncExact", export.name),
        };
        if export.name == MEMORY {
            ensure!(
                kind == ExportKind::Memory,
                "export {MEMORY} is not a memory"
            );
            has_memory = true;
        }
        exports.export(export.name, kind, export.index);
    }
    if !has_memory {
        exports.export(MEMORY, ExportKind::Memory, 0);
    }
    Ok(exports)
}
