//! Admission of device-class handler modules: everything the agent checks in a module's bytes before
//! the module is compiled, and the one rewrite it applies to them (see docs/guest-abi.md).
//!
//! This runs in the long-lived supervisor, which never loads WasmEdge, so it is pure Rust
//! (wasmparser, wasm-encoder): an untrusted module is judged here before the AOT compiler or the
//! runtime sees a byte of it. The checks run from cheapest to dearest, and each refusal is its own
//! [`AdmissionError`] variant that tells the operator what is wrong and what to do about it:
//! size, validation, ABI version, imports, the handler export, memory, tables, functions.
//!
//! - Validation accepts exactly core WebAssembly 2.0 (mutable globals, sign extension, saturating
//!   float-to-int, multi-value, bulk memory, reference types, SIMD). WasmEdge 0.17.1's default
//!   configuration goes further (all of WebAssembly 3.0: tail calls, GC, exceptions, memory64,
//!   multi-memory, relaxed SIMD, ...), but the guest SDK only needs 2.0 (the feature set rustc's
//!   `wasm32-unknown-unknown` emits) and every extra proposal is more attack surface in the runtime.
//! - Memory is the point of the exercise. A fresh instance per interaction is cheap because the
//!   module imports its memory (`env.memory`) and the host hands it a zeroed one, instead of mapping
//!   a new multi-GiB reservation per instance. So a module that defines its memory is rewritten to
//!   import it, and the result is checked again from scratch so that a bug in the rewrite cannot
//!   reach the runtime. WasmEdge silently clamps a memory minimum above its page limit, so a module
//!   asking for more memory than its class allows would start with less than it expects: it is
//!   refused here instead. A module without memory is refused too: every host function passes data
//!   through pointers into `env.memory`, so such a handler could do nothing but return a code,
//!   which is far more likely a build mistake than a real handler.
//! - Tables and memory are the only places where a few bytes of module can ask for a large
//!   allocation at instantiation, so both minimums are bounded.
//! - Defined functions are bounded too (`MAX_FUNCTIONS`), because every fresh instance pays for
//!   each of them: WasmEdge creates a function instance per defined function at every
//!   instantiation (about 0.1 µs each through the sandbox here), so a 120 KB module of 20,000
//!   empty functions made every interaction cost 2 ms instead of 8 µs, and took 6 s to load.
//!   Globals, segments etc. are not bounded separately: they cost little per instance, each costs
//!   at least a byte of the module, which `max_module_bytes` bounds, and wasmparser enforces its
//!   engine-wide limits on top.

use std::ops::Range;

use edgefleet_protocol::ClassLimits;
use sha2::{Digest, Sha256};
use wasm_encoder::{EntityType, ImportSection, Module, RawSection, SectionId};
use wasmparser::{
    BinaryReaderError, Export, ExternalKind, FuncType, Import, MemoryType, Parser, TableType,
    TypeRef, ValType, Validator, WasmFeatures,
};

use edgefleet_guest_abi::{
    ABI_SECTION, ABI_VERSION, HANDLE_EXPORT, HOST_FUNCTIONS, HOST_MODULE, HOST_MODULE_PREFIX,
    MEMORY_MODULE, MEMORY_NAME,
};

/// Largest initial size of a table, in elements. Instantiation allocates a table's minimum up
/// front, so without this bound a module of a few bytes could make every instantiation allocate
/// gigabytes; toolchains emit one function table sized to the functions taken by address, far
/// below this.
pub const MAX_TABLE_ELEMENTS: u64 = 10_000;

/// Most functions a module may define (imported host functions not counted). Each one costs every
/// interaction a function instance (see the module documentation). The four handlers in
/// `device-modules/` define 28 (thermostat) to 54 (meter); at this bound an interaction costs about
/// 0.17 ms and loading 0.6 s (measured through the sandbox, release build, 2 vCPUs).
pub(crate) const MAX_FUNCTIONS: usize = 2_000;

/// Core WebAssembly 2.0; see the module documentation for why no more.
const FEATURES: WasmFeatures = WasmFeatures::WASM2;

/// A module that passed admission, ready to be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// SHA-256 of the module as received (before any rewrite).
    pub sha256: [u8; 32],
    /// What will be compiled: the module as received, or rewritten to import its memory.
    pub wasm: Vec<u8>,
    /// The memory the host must provide as `env.memory`.
    pub memory: MemoryLimits,
    /// Whether the module defined its memory and `wasm` was rewritten to import it.
    pub rewritten_memory: bool,
}

/// Limits of the memory the host provides to a module, in 64 KiB pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryLimits {
    /// The module's declared minimum.
    pub min_pages: u32,
    /// The smaller of the module's declared maximum (if any) and the class's `max_memory_pages`.
    pub max_pages: u32,
}

/// Why a module was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error(
        "module is {size} bytes, over this device class's limit of {limit} bytes \
         (max_module_bytes): build it smaller (release profile, no debug info, wasm-opt -Oz) \
         or raise the class limit"
    )]
    TooLarge { size: usize, limit: u32 },
    #[error(
        "not a valid WebAssembly module: {reason}; the agent accepts core WebAssembly 2.0 \
         (no threads, memory64, multi-memory, GC, exceptions or tail calls): check the build \
         target and its enabled features, and that the file was not truncated or corrupted"
    )]
    Invalid { reason: String },
    #[error(
        "module has no `{ABI_SECTION}` custom section declaring the guest ABI it was built for: \
         build it with the edgefleet guest SDK (this agent supports guest ABI v{ABI_VERSION})"
    )]
    MissingAbiVersion,
    #[error(
        "module has {count} `{ABI_SECTION}` custom sections, exactly one is allowed: check that \
         it links a single copy of the edgefleet guest SDK"
    )]
    DuplicateAbiVersion { count: usize },
    #[error(
        "the `{ABI_SECTION}` custom section holds {len} bytes, it must hold exactly 4 (the guest \
         ABI version as a little-endian u32): build the module with the edgefleet guest SDK"
    )]
    MalformedAbiVersion { len: usize },
    #[error(
        "module was built for guest ABI v{found}; this agent supports v{supported}: rebuild it \
         with a guest SDK for v{supported}, or run it on an agent that supports v{found}"
    )]
    WrongAbiVersion { found: u32, supported: u32 },
    #[error(
        "module imports `{module}.{name}`, which guest ABI v{ABI_VERSION} does not provide: \
         only `{MEMORY_MODULE}.{MEMORY_NAME}` and the `{HOST_MODULE}` functions of \
         docs/guest-abi.md can be imported (no WASI, no other host functions, tables or globals)"
    )]
    UnknownImport { module: String, name: String },
    #[error(
        "import `{module}.{name}` is declared as {found}, but guest ABI v{ABI_VERSION} defines \
         it as {expected}: rebuild the module against the v{ABI_VERSION} guest SDK"
    )]
    ImportTypeMismatch {
        module: String,
        name: String,
        expected: String,
        found: String,
    },
    #[error(
        "module does not export `{HANDLE_EXPORT}`: the handler entry point must be exported as \
         a function `() -> i32`"
    )]
    MissingHandleExport,
    #[error(
        "export `{HANDLE_EXPORT}` is {found}, but guest ABI v{ABI_VERSION} requires a function \
         `() -> i32`"
    )]
    WrongHandleExport { found: String },
    #[error(
        "module has no linear memory, but every host function of guest ABI v{ABI_VERSION} \
         passes data through `{MEMORY_MODULE}.{MEMORY_NAME}`: link the module with \
         --import-memory (the guest SDK's build settings do)"
    )]
    NoMemory,
    #[error(
        "module has {count} linear memories, guest ABI v{ABI_VERSION} allows exactly one \
         (`{MEMORY_MODULE}.{MEMORY_NAME}`): build without multi-memory"
    )]
    TooManyMemories { count: usize },
    #[error(
        "module's memory is 64-bit (memory64), guest ABI v{ABI_VERSION} requires a 32-bit \
         memory: build for wasm32"
    )]
    Memory64,
    #[error(
        "module's memory is shared, guest ABI v{ABI_VERSION} requires an unshared memory: build \
         without the atomics/threads features"
    )]
    SharedMemory,
    #[error(
        "module's memory starts at {declared_min} pages of 64 KiB, over this device class's \
         limit of {class_limit} pages (max_memory_pages): lower its initial memory (wasm-ld \
         --initial-memory) or raise the class limit"
    )]
    MemoryTooLarge { declared_min: u64, class_limit: u32 },
    #[error(
        "table {index} starts with {declared_min} elements, over the limit of {limit}: a handler \
         needs a table only for the functions it calls indirectly, so this module is broken or \
         hostile"
    )]
    TableTooLarge {
        index: usize,
        declared_min: u64,
        limit: u64,
    },
    #[error(
        "module defines {count} functions, over the limit of {limit}: every interaction creates \
         a fresh instance, which costs about 0.1 µs per defined function (a handler needs tens; \
         the edgefleet handlers define at most 54). Build it with optimisation for size and LTO \
         (the guest SDK's release profile), drop dependencies it does not need, or split it"
    )]
    TooManyFunctions { count: usize, limit: usize },
    #[error(
        "internal error: rewriting the module to import its memory produced a module that does \
         not pass admission ({reason}); this is an edgefleet bug, please report it with the \
         module. Linking the module with --import-memory avoids the rewrite"
    )]
    RewriteFailed { reason: String },
}

/// Checks `wasm` against guest ABI v1 and the class's `limits`, and returns what to compile.
pub fn admit(wasm: &[u8], limits: &ClassLimits) -> Result<Admitted, AdmissionError> {
    if wasm.len() > limits.max_module_bytes as usize {
        return Err(AdmissionError::TooLarge {
            size: wasm.len(),
            limit: limits.max_module_bytes,
        });
    }
    let module = inspect(wasm, limits)?;
    let sha256 = Sha256::digest(wasm).into();
    if !module.defines_memory {
        return Ok(Admitted {
            sha256,
            wasm: wasm.to_vec(),
            memory: module.memory,
            rewritten_memory: false,
        });
    }
    let rewritten = import_memory(wasm, &module.survey, module.memory_type);
    verify_rewrite(&rewritten, &module, limits)?;
    Ok(Admitted {
        sha256,
        wasm: rewritten,
        memory: module.memory,
        rewritten_memory: true,
    })
}

/// What the checks after the size limit learned of a module that passed them.
struct Inspected<'a> {
    survey: Survey<'a>,
    memory_type: MemoryType,
    defines_memory: bool,
    memory: MemoryLimits,
}

fn inspect<'a>(wasm: &'a [u8], limits: &ClassLimits) -> Result<Inspected<'a>, AdmissionError> {
    let validated = Validator::new_with_features(FEATURES).validate_all(wasm);
    let survey = Survey::parse(wasm);
    let survey = match (validated, survey) {
        (Ok(_), Ok(survey)) => survey,
        (Err(error), Ok(survey)) => {
            return Err(survey.explain_invalid().unwrap_or_else(|| invalid(&error)));
        }
        (Err(error), Err(_)) | (Ok(_), Err(error)) => return Err(invalid(&error)),
    };
    survey.check_abi_version()?;
    survey.check_imports()?;
    survey.check_handle_export()?;
    let (memory_type, defines_memory) = survey.memory()?.ok_or(AdmissionError::NoMemory)?;
    let memory = memory_limits(&memory_type, limits)?;
    survey.check_tables()?;
    survey.check_functions()?;
    Ok(Inspected {
        survey,
        memory_type,
        defines_memory,
        memory,
    })
}

fn invalid(error: &BinaryReaderError) -> AdmissionError {
    AdmissionError::Invalid {
        reason: error.to_string(),
    }
}

fn memory_limits(ty: &MemoryType, limits: &ClassLimits) -> Result<MemoryLimits, AdmissionError> {
    let class_limit = limits.max_memory_pages;
    let min_pages = u32::try_from(ty.initial)
        .ok()
        .filter(|&min| min <= class_limit)
        .ok_or(AdmissionError::MemoryTooLarge {
            declared_min: ty.initial,
            class_limit,
        })?;
    let max_pages = ty.maximum.map_or(class_limit, |max| {
        u32::try_from(max).map_or(class_limit, |max| max.min(class_limit))
    });
    Ok(MemoryLimits {
        min_pages,
        max_pages,
    })
}

/// `wasm` with its memory definition replaced by an `env.memory` import of the same type. Memory
/// index 0 stays the same memory, and no other index space changes, so every other section is
/// copied byte for byte.
fn import_memory(wasm: &[u8], survey: &Survey, memory: MemoryType) -> Vec<u8> {
    let mut imports = ImportSection::new();
    // The import checks admitted only host functions besides `env.memory`, and a module that
    // defines its memory imports none, so these are all of its imports (`verify_rewrite` checks).
    for import in &survey.imports {
        if let TypeRef::Func(type_index) = import.ty {
            imports.import(import.module, import.name, EntityType::Function(type_index));
        }
    }
    imports.import(
        MEMORY_MODULE,
        MEMORY_NAME,
        EntityType::Memory(wasm_encoder::MemoryType {
            minimum: memory.initial,
            maximum: memory.maximum,
            memory64: memory.memory64,
            shared: memory.shared,
            page_size_log2: memory.page_size_log2,
        }),
    );
    let mut imports = Some(imports);
    let mut module = Module::new();
    for (id, range) in &survey.sections {
        let id = *id;
        let is = |section: SectionId| id == section as u8;
        // The import section takes the place of the original one, or else comes right after the
        // type section (and the custom sections around it), as the binary format's order requires.
        if !is(SectionId::Custom)
            && !is(SectionId::Type)
            && let Some(imports) = imports.take()
        {
            module.section(&imports);
        }
        if !is(SectionId::Import) && !is(SectionId::Memory) {
            module.section(&RawSection {
                id,
                data: &wasm[range.clone()],
            });
        }
    }
    module.finish()
}

/// Admits the rewritten module from scratch and checks that it is the original with its memory
/// imported, so that a bug in [`import_memory`] cannot hand the runtime a broken module.
fn verify_rewrite(
    rewritten: &[u8],
    original: &Inspected,
    limits: &ClassLimits,
) -> Result<(), AdmissionError> {
    let rewrite_failed = |reason: String| AdmissionError::RewriteFailed { reason };
    let again = inspect(rewritten, limits).map_err(|error| rewrite_failed(error.to_string()))?;
    if again.defines_memory || again.memory_type != original.memory_type {
        return Err(rewrite_failed(format!(
            "the memory is {:?}, expected an import of {:?}",
            again.memory_type, original.memory_type
        )));
    }
    if again.survey.imports.len() != original.survey.imports.len() + 1 {
        return Err(rewrite_failed(format!(
            "{} imports, expected {}",
            again.survey.imports.len(),
            original.survey.imports.len() + 1
        )));
    }
    Ok(())
}

/// What admission needs to know of a module, read without validating it, so that it can also
/// explain why an invalid module is invalid.
#[derive(Default)]
struct Survey<'a> {
    /// Every section in order: its id and the range of its contents in the module.
    sections: Vec<(u8, Range<usize>)>,
    /// Contents of every `edgefleet_abi` custom section.
    abi_sections: Vec<&'a [u8]>,
    types: Vec<FuncType>,
    imports: Vec<Import<'a>>,
    /// Type index of every defined function.
    functions: Vec<u32>,
    /// Defined tables.
    tables: Vec<TableType>,
    /// Defined memories.
    memories: Vec<MemoryType>,
    exports: Vec<Export<'a>>,
}

impl<'a> Survey<'a> {
    fn parse(wasm: &'a [u8]) -> Result<Self, BinaryReaderError> {
        use wasmparser::Payload;

        let mut survey = Survey::default();
        for payload in Parser::new(0).parse_all(wasm) {
            let payload = payload?;
            if let Some((id, range)) = payload.as_section() {
                survey
                    .sections
                    .push((id, range.start as usize..range.end as usize));
            }
            match payload {
                Payload::TypeSection(reader) => {
                    for ty in reader.into_iter_err_on_gc_types() {
                        survey.types.push(ty?);
                    }
                }
                Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        survey.imports.push(import?);
                    }
                }
                Payload::FunctionSection(reader) => {
                    for type_index in reader {
                        survey.functions.push(type_index?);
                    }
                }
                Payload::TableSection(reader) => {
                    for table in reader {
                        survey.tables.push(table?.ty);
                    }
                }
                Payload::MemorySection(reader) => {
                    for memory in reader {
                        survey.memories.push(memory?);
                    }
                }
                Payload::ExportSection(reader) => {
                    for export in reader {
                        survey.exports.push(export?);
                    }
                }
                Payload::CustomSection(reader) if reader.name() == ABI_SECTION => {
                    survey.abi_sections.push(reader.data());
                }
                _ => {}
            }
        }
        Ok(survey)
    }

    /// A more useful refusal than the validator's for an invalid module: the validator names the
    /// first construct outside WebAssembly 2.0 it meets, which for a module built for another ABI
    /// version, or with a memory the ABI refuses, hides the actual problem.
    fn explain_invalid(&self) -> Option<AdmissionError> {
        match self.check_abi_version() {
            Err(error @ AdmissionError::WrongAbiVersion { .. }) => Some(error),
            _ => self.memory().err(),
        }
    }

    fn check_abi_version(&self) -> Result<(), AdmissionError> {
        let wrong_version = |found| AdmissionError::WrongAbiVersion {
            found,
            supported: ABI_VERSION,
        };
        // Before the section, and before the import checks: "built for v2" says more than
        // "unknown import `edgefleet_v2.message`" or "no ABI section".
        let mut imported_versions = self.imports.iter().filter_map(|import| {
            let version = import.module.strip_prefix(HOST_MODULE_PREFIX)?;
            version.parse::<u32>().ok()
        });
        if let Some(found) = imported_versions.find(|&version| version != ABI_VERSION) {
            return Err(wrong_version(found));
        }
        match self.abi_sections[..] {
            [] => Err(AdmissionError::MissingAbiVersion),
            [data] => {
                let bytes = <[u8; 4]>::try_from(data)
                    .map_err(|_| AdmissionError::MalformedAbiVersion { len: data.len() })?;
                match u32::from_le_bytes(bytes) {
                    ABI_VERSION => Ok(()),
                    found => Err(wrong_version(found)),
                }
            }
            _ => Err(AdmissionError::DuplicateAbiVersion {
                count: self.abi_sections.len(),
            }),
        }
    }

    fn check_imports(&self) -> Result<(), AdmissionError> {
        for import in &self.imports {
            let unknown = || AdmissionError::UnknownImport {
                module: import.module.to_string(),
                name: import.name.to_string(),
            };
            let (fits, expected) = match (import.module, import.name) {
                (MEMORY_MODULE, MEMORY_NAME) => (
                    matches!(import.ty, TypeRef::Memory(_)),
                    "a memory".to_string(),
                ),
                (HOST_MODULE, name) => {
                    let function = HOST_FUNCTIONS
                        .iter()
                        .find(|function| function.name == name)
                        .ok_or_else(unknown)?;
                    let fits = match import.ty {
                        TypeRef::Func(type_index) => {
                            self.types.get(type_index as usize).is_some_and(|ty| {
                                has_signature(
                                    ty,
                                    &wasm_types(function.params),
                                    &wasm_types(function.results),
                                )
                            })
                        }
                        _ => false,
                    };
                    (
                        fits,
                        describe_function(
                            &wasm_types(function.params),
                            &wasm_types(function.results),
                        ),
                    )
                }
                _ => return Err(unknown()),
            };
            if !fits {
                return Err(AdmissionError::ImportTypeMismatch {
                    module: import.module.to_string(),
                    name: import.name.to_string(),
                    expected,
                    found: self.describe_import(import.ty),
                });
            }
        }
        Ok(())
    }

    fn check_handle_export(&self) -> Result<(), AdmissionError> {
        let export = self
            .exports
            .iter()
            .find(|export| export.name == HANDLE_EXPORT)
            .ok_or(AdmissionError::MissingHandleExport)?;
        let fits = export.kind == ExternalKind::Func
            && self
                .function_type(export.index)
                .is_some_and(|ty| has_signature(ty, &[], &[ValType::I32]));
        if fits {
            Ok(())
        } else {
            Err(AdmissionError::WrongHandleExport {
                found: self.describe_export(export),
            })
        }
    }

    /// The module's one memory, if any, and whether the module defines it (rather than importing it).
    fn memory(&self) -> Result<Option<(MemoryType, bool)>, AdmissionError> {
        let imported = self.imports.iter().filter_map(|import| match import.ty {
            TypeRef::Memory(ty) => Some((ty, false)),
            _ => None,
        });
        let defined = self.memories.iter().map(|&ty| (ty, true));
        let memories: Vec<_> = imported.chain(defined).collect();
        match memories[..] {
            [] => Ok(None),
            [(ty, _)] if ty.memory64 => Err(AdmissionError::Memory64),
            [(ty, _)] if ty.shared => Err(AdmissionError::SharedMemory),
            [memory] => Ok(Some(memory)),
            _ => Err(AdmissionError::TooManyMemories {
                count: memories.len(),
            }),
        }
    }

    fn check_tables(&self) -> Result<(), AdmissionError> {
        // Only defined tables: the import checks refuse imported ones.
        match self
            .tables
            .iter()
            .enumerate()
            .find(|(_, table)| table.initial > MAX_TABLE_ELEMENTS)
        {
            Some((index, table)) => Err(AdmissionError::TableTooLarge {
                index,
                declared_min: table.initial,
                limit: MAX_TABLE_ELEMENTS,
            }),
            None => Ok(()),
        }
    }

    fn check_functions(&self) -> Result<(), AdmissionError> {
        if self.functions.len() > MAX_FUNCTIONS {
            return Err(AdmissionError::TooManyFunctions {
                count: self.functions.len(),
                limit: MAX_FUNCTIONS,
            });
        }
        Ok(())
    }

    /// The type of function `index` of the function index space (imported functions first).
    fn function_type(&self, index: u32) -> Option<&FuncType> {
        let imported = self.imports.iter().filter_map(|import| match import.ty {
            TypeRef::Func(type_index) | TypeRef::FuncExact(type_index) => Some(type_index),
            _ => None,
        });
        let type_index = imported
            .chain(self.functions.iter().copied())
            .nth(index as usize)?;
        self.types.get(type_index as usize)
    }

    fn describe_import(&self, ty: TypeRef) -> String {
        match ty {
            TypeRef::Func(type_index) | TypeRef::FuncExact(type_index) => {
                describe_function_type(self.types.get(type_index as usize))
            }
            TypeRef::Table(_) => "a table".to_string(),
            TypeRef::Memory(_) => "a memory".to_string(),
            TypeRef::Global(_) => "a global".to_string(),
            TypeRef::Tag(_) => "a tag".to_string(),
        }
    }

    fn describe_export(&self, export: &Export) -> String {
        match export.kind {
            ExternalKind::Func | ExternalKind::FuncExact => {
                describe_function_type(self.function_type(export.index))
            }
            ExternalKind::Table => "a table".to_string(),
            ExternalKind::Memory => "a memory".to_string(),
            ExternalKind::Global => "a global".to_string(),
            ExternalKind::Tag => "a tag".to_string(),
        }
    }
}

/// The wasmparser types of an ABI signature.
fn wasm_types(types: &[edgefleet_guest_abi::ValType]) -> Vec<ValType> {
    types
        .iter()
        .map(|t| match t {
            edgefleet_guest_abi::ValType::I32 => ValType::I32,
            edgefleet_guest_abi::ValType::I64 => ValType::I64,
        })
        .collect()
}

fn has_signature(ty: &FuncType, params: &[ValType], results: &[ValType]) -> bool {
    ty.params() == params && ty.results() == results
}

fn describe_function_type(ty: Option<&FuncType>) -> String {
    ty.map_or_else(
        || "a function".to_string(),
        |ty| describe_function(ty.params(), ty.results()),
    )
}

/// `a function (i32, i32) -> i32`, the notation of docs/guest-abi.md.
fn describe_function(params: &[ValType], results: &[ValType]) -> String {
    let list = |types: &[ValType]| {
        types
            .iter()
            .map(ValType::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match results {
        [result] => format!("a function ({}) -> {result}", list(params)),
        _ => format!("a function ({}) -> ({})", list(params), list(results)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABI_V1: &str = r#"(@custom "edgefleet_abi" "\01\00\00\00")"#;
    const HANDLE: &str = r#"(func (export "edgefleet_handle") (result i32) i32.const 0)"#;
    const MEMORY: &str = r#"(import "env" "memory" (memory 1 4))"#;

    fn wat(source: &str) -> Vec<u8> {
        wat::parse_str(source).unwrap_or_else(|e| panic!("bad test module: {e}\n{source}"))
    }

    /// A module with the v1 ABI section and `body`.
    fn module(body: &str) -> Vec<u8> {
        wat(&format!("(module {ABI_V1} {body})"))
    }

    fn admit_default(wasm: &[u8]) -> Result<Admitted, AdmissionError> {
        admit(wasm, &ClassLimits::default())
    }

    fn refusal(wasm: &[u8]) -> AdmissionError {
        match admit_default(wasm) {
            Ok(_) => panic!("module was admitted"),
            Err(error) => error,
        }
    }

    fn good_module() -> Vec<u8> {
        module(&format!(
            r#"(import "edgefleet_v1" "message" (func $message (param i32 i32) (result i32)))
               (import "edgefleet_v1" "log" (func $log (param i32 i32 i32)))
               {MEMORY}
               (func (export "edgefleet_handle") (result i32)
                 (drop (call $message (i32.const 0) (i32.const 64)))
                 (call $log (i32.const 2) (i32.const 0) (i32.const 5))
                 i32.const 0)"#
        ))
    }

    /// Sections of a binary as (id, contents), in order.
    fn sections(wasm: &[u8]) -> Vec<(u8, Vec<u8>)> {
        Parser::new(0)
            .parse_all(wasm)
            .filter_map(|payload| payload.unwrap().as_section())
            .map(|(id, range)| (id, wasm[range.start as usize..range.end as usize].to_vec()))
            .collect()
    }

    fn imports(wasm: &[u8]) -> Vec<(String, String, TypeRef)> {
        let survey = Survey::parse(wasm).unwrap();
        survey
            .imports
            .iter()
            .map(|i| (i.module.to_string(), i.name.to_string(), i.ty))
            .collect()
    }

    fn memory_import(minimum: u64, maximum: Option<u64>) -> TypeRef {
        TypeRef::Memory(MemoryType {
            memory64: false,
            shared: false,
            initial: minimum,
            maximum,
            page_size_log2: None,
        })
    }

    #[test]
    fn good_module_is_admitted_unchanged() {
        let wasm = good_module();
        let admitted = admit_default(&wasm).unwrap();
        assert_eq!(admitted.wasm, wasm);
        assert!(!admitted.rewritten_memory);
        assert_eq!(admitted.sha256, <[u8; 32]>::from(Sha256::digest(&wasm)));
        assert_eq!(
            admitted.memory,
            MemoryLimits {
                min_pages: 1,
                max_pages: 4
            }
        );
    }

    #[test]
    fn every_host_function_can_be_imported() {
        let imports: String = HOST_FUNCTIONS
            .iter()
            .map(|f| {
                let params: String = wasm_types(f.params)
                    .iter()
                    .map(|t| format!(" {t}"))
                    .collect();
                let results: String = wasm_types(f.results)
                    .iter()
                    .map(|t| format!(" {t}"))
                    .collect();
                format!(
                    r#"(import "edgefleet_v1" "{}" (func (param{params}) (result{results})))"#,
                    f.name
                )
            })
            .collect();
        admit_default(&module(&format!("{imports} {MEMORY} {HANDLE}"))).unwrap();
    }

    #[test]
    fn provided_memory_maximum_is_capped_by_the_class() {
        let limits = |body: &str| admit_default(&module(&format!("{body} {HANDLE}"))).unwrap();
        let capped = limits(r#"(import "env" "memory" (memory 2 100))"#).memory;
        assert_eq!((capped.min_pages, capped.max_pages), (2, 16));
        let unbounded = limits(r#"(import "env" "memory" (memory 2))"#).memory;
        assert_eq!((unbounded.min_pages, unbounded.max_pages), (2, 16));
        let at_limit = limits(r#"(import "env" "memory" (memory 16 16))"#).memory;
        assert_eq!((at_limit.min_pages, at_limit.max_pages), (16, 16));
    }

    #[test]
    fn oversized_module_is_refused() {
        let wasm = good_module();
        let limits = ClassLimits {
            max_module_bytes: 16,
            ..ClassLimits::default()
        };
        let error = admit(&wasm, &limits).unwrap_err();
        assert!(
            matches!(error, AdmissionError::TooLarge { size, limit: 16 } if size == wasm.len()),
            "{error:?}"
        );
    }

    #[test]
    fn invalid_bytes_are_refused() {
        let garbage = b"this is not a wasm module".to_vec();
        let truncated = good_module()[..40].to_vec();
        let ill_typed = module(&format!(
            r#"{MEMORY} (func (export "edgefleet_handle") (result i32) i64.const 0)"#
        ));
        let tail_call = module(&format!(
            r#"{MEMORY} (func $f (result i32) i32.const 0)
               (func (export "edgefleet_handle") (result i32) return_call $f)"#
        ));
        for wasm in [vec![], garbage, truncated, ill_typed, tail_call] {
            let error = refusal(&wasm);
            assert!(matches!(error, AdmissionError::Invalid { .. }), "{error:?}");
        }
    }

    #[test]
    fn abi_section_is_required_once_with_version_1() {
        let body = format!("{MEMORY} {HANDLE}");
        let missing = wat(&format!("(module {body})"));
        assert!(matches!(
            refusal(&missing),
            AdmissionError::MissingAbiVersion
        ));

        let duplicate = wat(&format!("(module {ABI_V1} {ABI_V1} {body})"));
        assert!(matches!(
            refusal(&duplicate),
            AdmissionError::DuplicateAbiVersion { count: 2 }
        ));

        for (data, len) in [(r"\01\00\00", 3), (r"\01\00\00\00\00", 5), ("", 0)] {
            let malformed = wat(&format!(
                r#"(module (@custom "edgefleet_abi" "{data}") {body})"#
            ));
            let error = refusal(&malformed);
            assert!(
                matches!(error, AdmissionError::MalformedAbiVersion { len: l } if l == len),
                "{error:?}"
            );
        }

        let v2 = wat(&format!(
            r#"(module (@custom "edgefleet_abi" "\02\00\00\00") {body})"#
        ));
        assert!(matches!(
            refusal(&v2),
            AdmissionError::WrongAbiVersion {
                found: 2,
                supported: 1
            }
        ));
    }

    #[test]
    fn importing_another_abi_version_is_a_version_error() {
        let import_v2 = r#"(import "edgefleet_v2" "message" (func (param i32 i32) (result i32)))"#;
        let with_v1_section = module(&format!("{import_v2} {MEMORY} {HANDLE}"));
        let without_section = wat(&format!("(module {import_v2} {MEMORY} {HANDLE})"));
        for wasm in [with_v1_section, without_section] {
            let error = refusal(&wasm);
            assert!(
                matches!(
                    error,
                    AdmissionError::WrongAbiVersion {
                        found: 2,
                        supported: 1
                    }
                ),
                "{error:?}"
            );
            assert!(error.to_string().contains("built for guest ABI v2"));
        }
    }

    #[test]
    fn version_error_wins_over_invalidity() {
        // A v2 module may well use what v1 does not accept; the version is the useful message.
        let wasm = wat(&format!(
            r#"(module (@custom "edgefleet_abi" "\02\00\00\00") {MEMORY}
                 (func $f (result i32) i32.const 0)
                 (func (export "edgefleet_handle") (result i32) return_call $f))"#
        ));
        assert!(matches!(
            refusal(&wasm),
            AdmissionError::WrongAbiVersion { found: 2, .. }
        ));
    }

    #[test]
    fn unknown_imports_are_refused() {
        for import in [
            r#"(import "env" "abort" (func))"#,
            r#"(import "edgefleet_v1" "sleep" (func (param i32)))"#,
            r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
            r#"(import "env" "table" (table 1 funcref))"#,
            r#"(import "env" "stack_pointer" (global (mut i32)))"#,
            r#"(import "edgefleet_vfoo" "message" (func))"#,
        ] {
            let error = refusal(&module(&format!("{import} {MEMORY} {HANDLE}")));
            assert!(
                matches!(error, AdmissionError::UnknownImport { .. }),
                "{import}: {error:?}"
            );
        }
        let error = refusal(&module(&format!(
            r#"(import "env" "abort" (func)) {MEMORY} {HANDLE}"#
        )));
        assert!(
            matches!(&error, AdmissionError::UnknownImport { module, name } if module == "env" && name == "abort"),
            "{error:?}"
        );
    }

    #[test]
    fn imports_with_the_wrong_type_are_refused() {
        let error = refusal(&module(&format!(
            r#"(import "edgefleet_v1" "message" (func (param i32) (result i32))) {MEMORY} {HANDLE}"#
        )));
        match error {
            AdmissionError::ImportTypeMismatch {
                module,
                name,
                expected,
                found,
            } => {
                assert_eq!(
                    (module.as_str(), name.as_str()),
                    ("edgefleet_v1", "message")
                );
                assert_eq!(expected, "a function (i32, i32) -> i32");
                assert_eq!(found, "a function (i32) -> i32");
            }
            other => panic!("{other:?}"),
        }
        for body in [
            format!(r#"(import "edgefleet_v1" "now_ms" (global i64)) {MEMORY} {HANDLE}"#),
            format!(
                r#"(import "edgefleet_v1" "state_set" (func (param i32 i32) (result i32))) {MEMORY} {HANDLE}"#
            ),
            format!(r#"(import "env" "memory" (func)) (memory 1) {HANDLE}"#),
        ] {
            let error = refusal(&module(&body));
            assert!(
                matches!(error, AdmissionError::ImportTypeMismatch { .. }),
                "{body}: {error:?}"
            );
        }
    }

    #[test]
    fn handle_export_is_required_with_its_type() {
        let missing = module(&format!(
            r#"{MEMORY} (func (export "handle") (result i32) i32.const 0)"#
        ));
        assert!(matches!(
            refusal(&missing),
            AdmissionError::MissingHandleExport
        ));

        let wrong_type = module(&format!(
            r#"{MEMORY} (func (export "edgefleet_handle") (param i32) (result i32) i32.const 0)"#
        ));
        match refusal(&wrong_type) {
            AdmissionError::WrongHandleExport { found } => {
                assert_eq!(found, "a function (i32) -> i32");
            }
            other => panic!("{other:?}"),
        }

        let no_result = module(&format!(r#"{MEMORY} (func (export "edgefleet_handle"))"#));
        assert!(matches!(
            refusal(&no_result),
            AdmissionError::WrongHandleExport { .. }
        ));

        let global = module(&format!(
            r#"{MEMORY} (global (export "edgefleet_handle") i32 (i32.const 0))"#
        ));
        match refusal(&global) {
            AdmissionError::WrongHandleExport { found } => assert_eq!(found, "a global"),
            other => panic!("{other:?}"),
        }

        // An imported host function re-exported under the handler's name has the wrong type too.
        let reexport = module(&format!(
            r#"(import "edgefleet_v1" "now_ms" (func $now (result i64)))
               (export "edgefleet_handle" (func $now)) {MEMORY}"#
        ));
        match refusal(&reexport) {
            AdmissionError::WrongHandleExport { found } => {
                assert_eq!(found, "a function () -> i64");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn at_most_one_32_bit_unshared_memory() {
        let imported_and_defined = module(&format!("{MEMORY} (memory 1) {HANDLE}"));
        let two_defined = module(&format!("(memory 1) (memory 1) {HANDLE}"));
        for wasm in [imported_and_defined, two_defined] {
            let error = refusal(&wasm);
            assert!(
                matches!(error, AdmissionError::TooManyMemories { count: 2 }),
                "{error:?}"
            );
        }
        let memory64 = module(&format!("(memory i64 1) {HANDLE}"));
        assert!(matches!(refusal(&memory64), AdmissionError::Memory64));
        let shared = module(&format!(
            r#"(import "env" "memory" (memory 1 1 shared)) {HANDLE}"#
        ));
        assert!(matches!(refusal(&shared), AdmissionError::SharedMemory));
    }

    #[test]
    fn module_without_memory_is_refused() {
        assert!(matches!(refusal(&module(HANDLE)), AdmissionError::NoMemory));
    }

    #[test]
    fn memory_minimum_over_the_class_limit_is_refused() {
        for memory in [
            r#"(import "env" "memory" (memory 17))"#,
            "(memory 17 20)",
            "(memory 65536)",
        ] {
            let error = refusal(&module(&format!("{memory} {HANDLE}")));
            assert!(
                matches!(
                    error,
                    AdmissionError::MemoryTooLarge {
                        declared_min: 17 | 65536,
                        class_limit: 16
                    }
                ),
                "{memory}: {error:?}"
            );
        }
    }

    #[test]
    fn huge_tables_are_refused() {
        admit_default(&module(&format!("{MEMORY} (table 10000 funcref) {HANDLE}"))).unwrap();
        let error = refusal(&module(&format!(
            "{MEMORY} (table 1 funcref) (table 10001 externref) {HANDLE}"
        )));
        assert!(
            matches!(
                error,
                AdmissionError::TableTooLarge {
                    index: 1,
                    declared_min: 10_001,
                    limit: MAX_TABLE_ELEMENTS
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn defined_functions_are_bounded() {
        // The handler export plus `n - 1` more functions: `n` defined functions.
        let with_functions = |n: usize| {
            let more = "(func (result i32) i32.const 1)".repeat(n - 1);
            module(&format!("{MEMORY} {HANDLE} {more}"))
        };
        admit_default(&with_functions(MAX_FUNCTIONS)).unwrap();
        let error = refusal(&with_functions(MAX_FUNCTIONS + 1));
        assert!(
            matches!(
                error,
                AdmissionError::TooManyFunctions {
                    count,
                    limit: MAX_FUNCTIONS
                } if count == MAX_FUNCTIONS + 1
            ),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("module defines 2001 functions, over the limit of 2000"),
            "{error}"
        );
        // Imported host functions do not count.
        let imports = r#"(import "edgefleet_v1" "now_ms" (func (result i64)))"#;
        let more = "(func (result i32) i32.const 1)".repeat(MAX_FUNCTIONS - 1);
        admit_default(&module(&format!("{imports} {MEMORY} {HANDLE} {more}"))).unwrap();
    }

    #[test]
    fn defined_memory_is_rewritten_to_an_import() {
        let wasm = module(
            r#"(import "edgefleet_v1" "message" (func $message (param i32 i32) (result i32)))
               (import "edgefleet_v1" "now_ms" (func (result i64)))
               (memory 2 8)
               (global $count (mut i32) (i32.const 0))
               (table 2 funcref)
               (elem (i32.const 0) $handle $handle)
               (func $handle (export "edgefleet_handle") (result i32)
                 (global.set $count (i32.load (i32.const 16)))
                 (call $message (i32.const 0) (i32.const 16)))
               (data (i32.const 16) "hello")"#,
        );
        let admitted = admit_default(&wasm).unwrap();
        assert!(admitted.rewritten_memory);
        assert_eq!(admitted.sha256, <[u8; 32]>::from(Sha256::digest(&wasm)));
        assert_eq!(
            admitted.memory,
            MemoryLimits {
                min_pages: 2,
                max_pages: 8
            }
        );
        let rewritten = &admitted.wasm;
        Validator::new_with_features(FEATURES)
            .validate_all(rewritten)
            .unwrap();

        // The function imports come first, in their order, so function indices are unchanged.
        let mut expected_imports = imports(&wasm);
        expected_imports.push(("env".into(), "memory".into(), memory_import(2, Some(8))));
        assert_eq!(imports(rewritten), expected_imports);

        // Every section but the import and memory sections is identical, in the same order.
        let unchanged = |wasm: &[u8]| {
            sections(wasm)
                .into_iter()
                .filter(|(id, _)| *id != SectionId::Import as u8 && *id != SectionId::Memory as u8)
                .collect::<Vec<_>>()
        };
        assert_eq!(unchanged(rewritten), unchanged(&wasm));
        assert!(
            sections(rewritten)
                .iter()
                .all(|(id, _)| *id != SectionId::Memory as u8)
        );
        for id in [SectionId::Code, SectionId::Data, SectionId::Export] {
            assert!(unchanged(&wasm).iter().any(|(i, _)| *i == id as u8));
        }

        // The rewritten module needs no further rewrite and is admitted as is.
        let again = admit_default(rewritten).unwrap();
        assert!(!again.rewritten_memory);
        assert_eq!(&again.wasm, rewritten);
        assert_eq!(again.memory, admitted.memory);
    }

    #[test]
    fn rewrite_creates_the_import_section_after_the_type_section() {
        let wasm = wat(&format!(
            r#"(module (memory 1) (@custom "before-types" (before type) "x") {ABI_V1} {HANDLE})"#
        ));
        assert!(
            sections(&wasm)
                .iter()
                .all(|(id, _)| *id != SectionId::Import as u8)
        );
        let admitted = admit_default(&wasm).unwrap();
        assert!(admitted.rewritten_memory);
        assert_eq!(
            imports(&admitted.wasm),
            vec![("env".into(), "memory".into(), memory_import(1, None))]
        );
        assert_eq!(
            admitted.memory,
            MemoryLimits {
                min_pages: 1,
                max_pages: 16
            }
        );
        let ids: Vec<u8> = sections(&admitted.wasm).iter().map(|(id, _)| *id).collect();
        let position = |section: SectionId| ids.iter().position(|&id| id == section as u8);
        assert_eq!(
            position(SectionId::Import),
            position(SectionId::Type).map(|type_section| type_section + 1)
        );
    }

    #[test]
    fn exported_memory_with_data_is_rewritten() {
        let wasm = module(
            r#"(memory (export "memory") 1 2)
               (data (i32.const 0) "\2a\00\00\00")
               (data (i32.const 1024) "state")
               (func (export "edgefleet_handle") (result i32) (i32.load (i32.const 0)))"#,
        );
        let admitted = admit_default(&wasm).unwrap();
        assert!(admitted.rewritten_memory);
        assert_eq!(
            imports(&admitted.wasm),
            vec![("env".into(), "memory".into(), memory_import(1, Some(2)))]
        );
        let survey = Survey::parse(&admitted.wasm).unwrap();
        let exported_memory = survey
            .exports
            .iter()
            .find(|export| export.name == "memory")
            .unwrap();
        assert_eq!(
            (exported_memory.kind, exported_memory.index),
            (ExternalKind::Memory, 0)
        );
        let data = |wasm: &[u8]| {
            sections(wasm)
                .into_iter()
                .find(|(id, _)| *id == SectionId::Data as u8)
                .unwrap()
        };
        assert_eq!(data(&admitted.wasm), data(&wasm));
    }

    #[test]
    fn messages_tell_what_to_do() {
        let error = refusal(&module(&format!(
            r#"(import "env" "memory" (memory 17)) {HANDLE}"#
        )));
        assert_eq!(
            error.to_string(),
            "module's memory starts at 17 pages of 64 KiB, over this device class's limit of 16 \
             pages (max_memory_pages): lower its initial memory (wasm-ld --initial-memory) or \
             raise the class limit"
        );
        let error = refusal(&module(&format!(
            r#"(import "env" "abort" (func)) {MEMORY} {HANDLE}"#
        )));
        assert!(error.to_string().starts_with(
            "module imports `env.abort`, which guest ABI v1 does not provide: only `env.memory` \
             and the `edgefleet_v1` functions"
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // xorshift64*: deterministic, so a failure reproduces.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let seeds = [
            good_module(),
            module(
                r#"(memory (export "memory") 1 2) (table 1 funcref)
                   (data (i32.const 0) "abc")
                   (func (export "edgefleet_handle") (result i32) (i32.load (i32.const 0)))"#,
            ),
        ];
        let mut admitted = 0;
        for round in 0..4000 {
            let mut wasm = seeds[round % seeds.len()].clone();
            match next() % 4 {
                0 => wasm.truncate((next() % wasm.len() as u64) as usize),
                1 => {
                    let at = (next() % wasm.len() as u64) as usize;
                    wasm.insert(at, next() as u8);
                }
                _ => {
                    for _ in 0..=next() % 3 {
                        let at = (next() % wasm.len() as u64) as usize;
                        wasm[at] ^= 1 << (next() % 8);
                    }
                }
            }
            match admit_default(&wasm) {
                Ok(_) => admitted += 1,
                Err(error @ AdmissionError::RewriteFailed { .. }) => panic!("{error}"),
                Err(_) => {}
            }
        }
        // Some mutations (in names, constants, custom sections) keep the module admissible, so
        // the rewrite path ran on mutated input too.
        assert!(admitted > 0);
    }
}
